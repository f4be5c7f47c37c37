"""Gantt layout and files: rows per rank, colours, split FB cells, comm lanes, determinism."""

from __future__ import annotations

import hashlib

import pytest

from dualsim.generators import generate
from dualsim.render.gantt import (COMM_COLORS, COMPUTE_COLORS, EXPOSED_BAR, EXPOSED_RED,
                                  REVERSE_HATCH, SM_BAND, SM_SHARED_COLOR, comm_color, darken,
                                  gantt_layout, lighten, render_gantt, render_gantt_grid,
                                  split_hidden)
from dualsim.timeline import from_rows
from test_render_helpers import row, serial_timeline


def small_timeline():
    return from_rows([
        row(0, "F", 0, 0, 0, 1),
        row(0, "FB", 0, 1, 1, 4, stage2=3, mb2=2, chain2=1),
        row(1, "F", 1, 0, 1, 2),
        row(1, "B", 2, 2, 2, 4, chain=1),
        row(1, "W", 1, 0, 4, 5),
        row(1, "I", 1, 0, 5, 6),
    ])


def test_layout_has_one_row_per_rank_rank0_on_top():
    lay = gantt_layout(small_timeline())
    assert lay.rows == ((0, "compute"), (1, "compute"))
    assert lay.end == 6.0
    assert not lay.has_comm and lay.two_directions


def test_fb_is_a_split_cell_forward_over_backward():
    lay = gantt_layout(small_timeline())
    fb = [b for b in lay.boxes_of(0) if b.x0 == 1.0]
    top, bottom = sorted(fb, key=lambda b: b.y0)
    assert (top.y0, top.y1, bottom.y0, bottom.y1) == (0.0, 0.5, 0.5, 1.0)
    assert (top.x0, top.x1) == (bottom.x0, bottom.x1) == (1.0, 4.0)
    assert top.color == COMPUTE_COLORS["F"][0] and top.label == "1" and top.hatch == ""
    # the backward half belongs to the reverse direction: darker shade and hatched
    assert bottom.color == COMPUTE_COLORS["B"][1] and bottom.label == "2"
    assert bottom.hatch == REVERSE_HATCH


def test_ops_get_distinct_colours_and_microbatch_labels():
    lay = gantt_layout(small_timeline())
    by_x = {b.x0: b for b in lay.boxes_of(1)}
    assert by_x[1.0].color == COMPUTE_COLORS["F"][0] and by_x[1.0].label == "0"
    assert by_x[2.0].color == COMPUTE_COLORS["B"][1] and by_x[2.0].hatch == REVERSE_HATCH
    assert by_x[4.0].color == COMPUTE_COLORS["W"][0]
    assert by_x[5.0].color == COMPUTE_COLORS["I"][0]
    colours = {COMPUTE_COLORS[k][c] for k in "FBIW" for c in (0, 1)}
    assert len(colours) == 8
    assert lay.legend == ("F", "B", "I", "W", "FB", "reverse")


@pytest.mark.parametrize("name, chunks", [("1f1b", None), ("interleaved", 2), ("zb-h1", None)])
def test_one_direction_has_no_reverse_legend_entry(name, chunks):
    lay = gantt_layout(serial_timeline(generate(name, 4, 8, chunks)))
    assert "reverse" not in lay.legend and not lay.two_directions
    assert all(b.chain == 0 and b.hatch == "" for b in lay.boxes)


@pytest.mark.parametrize("name", ["zb-v", "dualpipev"])
def test_a_v_draws_its_way_back_like_the_reverse_direction(name):
    from dualsim.render.gantt import way_back

    s = generate(name, 4, 8)
    tl = serial_timeline(s)
    assert way_back(tl) == {4, 5, 6, 7}  # stages R..2R-1: ranks 3, 2, 1, 0 on the way back
    lay = gantt_layout(tl)
    assert len(lay.rows) == 4 and "reverse" in lay.legend and lay.two_directions
    for b in lay.boxes:
        stage = int(b.action.strip("()").split(";")[0 if b.y0 == 0.0 else -1].split(b.kind)[0])
        assert b.chain == (stage >= 4), b
        assert b.hatch == (REVERSE_HATCH if stage >= 4 else "")
        assert b.color == COMPUTE_COLORS[b.kind][b.chain]


def test_way_back_needs_a_turn():
    from dualsim.render.gantt import way_back

    assert way_back(serial_timeline(generate("interleaved", 4, 8, 2))) == frozenset()
    assert way_back(serial_timeline(generate("zb-v", 1, 2))) == frozenset()  # one rank: no V
    # DualPipe's chains only fall or only rise (its second chain is the reverse one by itself)
    assert way_back(serial_timeline(generate("dualpipe", 4, 8))) == frozenset()


@pytest.mark.parametrize("label, width, height, size", [
    ("12", 12.0, 11.5, 6.75),  # a ZB-V cell: the old rule (12.24 pt needed) hid it
    ("7", 12.0, 11.5, 6.75),  # the height rule alone: 60% of 11.5
    ("119", 9.0, 11.5, 4.0),  # three digits shrink to fit: (9 - 1) / (3 x 0.636) = 4.19
    ("119", 8.0, 11.5, None),  # below 4 pt: no label
    ("3", 40.0, 30.0, 8.0),  # never above 8 pt
])
def test_labels_shrink_to_fit_narrow_cells(label, width, height, size):
    from dualsim.render.gantt import label_size

    assert label_size(label, width, height) == size


def test_sub_pixel_gaps_close_only_within_one_action():
    from dualsim.render.gantt import close_gaps

    tl = from_rows([
        row(0, "F", 0, 5, 0.0, 1.0, piece="attn"),
        row(0, "F", 0, 5, 1.05, 2.0, piece="mlp"),  # a gap of 0.05: closed at gap=0.1
        row(0, "F", 0, 6, 2.05, 3.0),  # another action: its gap stays
        row(0, "F", 0, 6, 3.5, 4.0, piece="mlp"),  # a gap of 0.5: stays
    ])
    boxes = gantt_layout(tl).boxes_of(0)
    assert [(b.x0, b.x1) for b in close_gaps(boxes, 0.1)] == [(0.0, 2.0), (2.05, 3.0),
                                                              (3.5, 4.0)]
    assert close_gaps(boxes, 0.0) == boxes


def test_backward_comm_is_a_darker_shade_of_its_kind():
    assert comm_color("combine") == COMM_COLORS["combine"]
    assert comm_color("combine_bwd") == darken(COMM_COLORS["combine"], 0.25) != comm_color("combine")
    assert darken("#ffffff", 0.5) == "#80" + "8080"


def test_split_hidden_cuts_comm_at_compute_edges():
    assert split_hidden(0.0, 10.0, [(2.0, 4.0), (6.0, 12.0)]) == [
        (0.0, 2.0, False), (2.0, 4.0, True), (4.0, 6.0, False), (6.0, 10.0, True)]
    assert split_hidden(1.0, 2.0, []) == [(1.0, 2.0, False)]


def test_comm_lane_below_compute_with_hidden_and_exposed_parts():
    tl = from_rows([
        row(0, "F", 0, 0, 0.0, 2.0, piece="attn"),
        row(0, "F", 0, 0, 2.0, 3.0, piece="mlp"),
        row(0, "dispatch", 0, 0, 1.0, 4.0, stream="comm", action="0F0"),
        row(1, "F", 1, 0, 4.0, 5.0),
    ])
    lay = gantt_layout(tl)
    assert lay.rows == ((0, "compute"), (0, "comm"), (1, "compute"), (1, "comm"))
    comp = lay.boxes_of(0, "compute")
    assert [(b.x0, b.x1) for b in comp] == [(0.0, 3.0)]  # touching pieces merge into one box
    comm = lay.boxes_of(0, "comm")
    assert [(b.x0, b.x1, b.kind) for b in comm] == [
        (1.0, 3.0, "hidden"), (3.0, 4.0, "exposed"), (3.0, 4.0, "exposed")]
    assert comm[0].color == lighten(COMM_COLORS["dispatch"], 0.55) and comm[0].hatch == ""
    # exposed: the op's full colour above a red bar
    assert (comm[1].color, comm[1].y0, comm[1].y1) == (COMM_COLORS["dispatch"], 0.0, EXPOSED_BAR)
    assert (comm[2].color, comm[2].y0, comm[2].y1) == (EXPOSED_RED, EXPOSED_BAR, 1.0)
    assert all(b.row == 1 for b in comm)
    assert lay.legend[-3:] == ("comm:dispatch", "hidden", "exposed")


def test_shared_sms_are_a_band_on_top_of_the_compute_lane():
    # a comm kernel holding 20 SMs in [1, 4) beside compute in [0, 3): shared in [1, 3)
    tl = from_rows([
        row(0, "F", 0, 0, 0.0, 3.0, piece="attn"),
        (*row(0, "dispatch", 0, 0, 1.0, 4.0, stream="comm", action="0F0"), 20),
        (*row(0, "pp_send", 0, 0, 3.5, 3.8, stream="comm", action="0F0"), 2),
    ])
    lay = gantt_layout(tl)
    band = [b for b in lay.boxes if b.lane == "sm"]
    assert [(b.row, b.x0, b.x1, b.y0, b.y1, b.color) for b in band] == [
        (0, 1.0, 3.0, 0.0, SM_BAND, SM_SHARED_COLOR)]
    assert lay.legend[-1] == "sm_shared"


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_files_are_written_and_byte_identical(tmp_path, suffix):
    tl = serial_timeline(generate("dualpipe", 4, 8))
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    render_gantt(tl, a, title="DualPipe R=4 M=8")
    render_gantt(tl, b, title="DualPipe R=4 M=8")
    data = a.read_bytes()
    assert len(data) > 5000
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:400]
    assert hashlib.sha256(data).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])  # no temp files


def test_grid_renders_all_panels(tmp_path):
    panels = [(n, serial_timeline(generate(n, 4, 8))) for n in ("1f1b", "zb-v")]
    out = tmp_path / "grid.svg"
    render_gantt_grid(panels, out)
    text = out.read_text()
    # matplotlib keeps each text as an SVG comment next to its glyph paths
    assert text.count("<!-- rank 3 -->") == 2  # one bottom row per panel
    assert "<!-- 1f1b -->" in text and "<!-- zb-v -->" in text
    assert out.stat().st_size > 10000


def test_rejects_other_extensions(tmp_path):
    with pytest.raises(ValueError, match=".png or .svg"):
        render_gantt(small_timeline(), tmp_path / "x.pdf")


def test_pieces_of_one_action_share_one_label():
    from dualsim.render.gantt import label_spans

    tl = from_rows([
        row(0, "F", 0, 5, 0.0, 1.0, piece="attn"),
        row(0, "F", 0, 5, 1.5, 2.5, piece="mlp"),  # a gap: exposed communication
        row(0, "F", 0, 6, 3.0, 4.0),
    ])
    lay = gantt_layout(tl)
    assert len(lay.boxes_of(0)) == 3
    spans = [(b.label, x0, x1) for b, x0, x1 in label_spans(lay)]
    assert spans == [("5", 0.0, 2.5), ("6", 3.0, 4.0)]
