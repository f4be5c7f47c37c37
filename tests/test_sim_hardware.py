"""The SimPy engine: exact agreement with the abstract engine, and hardware-mode mechanics."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from dualsim.errors import ProfileError, ScheduleError, ValidationError
from dualsim.generators import check, generate
from dualsim.sim.abstract import simulate
from dualsim.sim.hardware_mode import simulate_hardware, simulate_simpy

FAMILIES = ["gpipe", "1f1b", "1f1b-overlap", "interleaved", "interleaved-overlap", "zb-h1",
            "zb-h2", "zb-v", "dualpipe", "dualpipev"]
COSTS = [
    ({"F": 1, "I": 1, "W": 1}, 0),
    ({"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3}, 0),
    ({"F": Fraction(3, 2), "I": 2, "W": Fraction(1, 2)}, Fraction(1, 3)),
    ({"F": 1.0, "I": 1.5, "W": 0.5, "B": 1.75}, 0.25),
]


def _figures(res):
    return (res.makespan, res.span, res.ideal,
            [(r.busy, r.idle, r.first_start, r.last_end, r.peak_activations)
             for r in res.per_rank])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ranks,mbs", [(4, 8), (6, 12)])
def test_simpy_equals_abstract_exactly(family: str, ranks: int, mbs: int) -> None:
    sched = generate(family, ranks, mbs)
    for costs, comm in COSTS:
        a, b = simulate(sched, costs, comm), simulate_simpy(sched, costs, comm)
        assert _figures(a) == _figures(b), (family, costs, comm)
        assert list(a.timeline["start"]) == list(b.timeline["start"])


def test_simpy_worked_examples() -> None:
    assert simulate_simpy(generate("1f1b", 4, 8)).makespan == 33
    dp = simulate_simpy(generate("dualpipe", 4, 8), {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3})
    assert dp.makespan == 26 and [r.idle for r in dp.per_rank] == [2, 2, 2, 2]
    assert simulate_simpy(generate("zb-v", 4, 8)).makespan == Fraction(51, 2)


@pytest.fixture(scope="module")
def small():
    kw = dict(gpus=256)
    return {n: simulate_hardware(generate(n, 4, 16), **kw) for n in ("dualpipe", "1f1b", "zb-v")}


def test_hardware_result_shape(small) -> None:
    res = small["dualpipe"]
    assert res.time_unit == "s"
    x = res.extra
    assert x["step_time_s"] == res.makespan > 0
    assert x["tokens_per_s_per_gpu"] == pytest.approx(16 * 4096 * 64 / res.makespan / 256)
    assert 0.2 < x["mfu"] < 0.7
    assert set(res.timeline["stream"]) == {"compute", "comm"}
    comm_ops = set(res.timeline.loc[res.timeline["stream"] == "comm", "op"])
    assert {"dispatch", "combine", "combine_bwd", "dispatch_bwd", "pp_send", "dp_sync"} <= comm_ops
    pieces = set(res.timeline["piece"])
    assert {"attn", "mlp", "attn_bwd", "mlp_bwd", "attn_w", "mlp_w", "head"} <= pieces
    for r in res.per_rank:
        assert set(r.memory_breakdown_gb) == {
            "params", "grads", "optimizer", "a2a_buffers", "logits_grad", "activations",
            "attention_output", "logits", "workspace"}
        assert r.peak_memory_gb == pytest.approx(sum(r.memory_breakdown_gb.values()), abs=1e-4)
    assert list(res.memory.columns) == [
        "rank", "time", "params_gb", "grads_gb", "optimizer_gb", "a2a_buffers_gb",
        "logits_grad_gb", "activations_gb", "attention_output_gb", "logits_gb", "workspace_gb",
        "total_gb"]
    assert x["peak_memory_gb"] == max(r.peak_memory_gb for r in res.per_rank)


def _overlaps(rows, s: float, e: float) -> bool:
    return bool(((rows["start"] < e) & (rows["end"] > s)).any())


def test_fb_hides_all_to_all_plain_ops_expose_it(small) -> None:
    assert small["dualpipe"].extra["comm_hidden_fraction"] > 0.6  # warm-up and cool-down expose some
    # ZB-V's F and I run their chains in sequence and its W sends nothing: all exposed but
    # the PP transfers and the gradient sync
    assert small["zb-v"].extra["comm_hidden_fraction"] < 0.1
    # inside an FB, some dispatch overlaps a compute piece on the same rank
    tl = small["dualpipe"].timeline
    r0 = tl[tl["rank"] == 1]
    comp = r0[(r0["stream"] == "compute") & (r0["op"] == "FB")]
    disp = r0[(r0["stream"] == "comm") & (r0["op"] == "dispatch") & (r0["microbatch2"] >= 0)]
    s, e = disp.iloc[0]["start"], disp.iloc[0]["end"]
    assert _overlaps(comp, s, e)


def test_backward_all_to_all_waits_for_the_input_gradient_only(small) -> None:
    # In 1F1B's plain B, each backward all-to-all starts when the I piece before it ends and
    # flies while that piece's W runs (Megatron's --delay-wgrad-compute order)
    tl = small["1f1b"].timeline
    first_b = tl.loc[(tl["rank"] == 1) & (tl["op"] == "B"), "action"].iloc[0]
    r1 = tl[(tl["rank"] == 1) & (tl["action"] == first_b)]
    comp = r1[r1["stream"] == "compute"]
    for kind, i_piece, w_piece in (("dispatch_bwd", "mlp_bwd", "mlp_w"),
                                   ("combine_bwd", "attn_bwd", "attn_w")):
        a2a = r1[(r1["stream"] == "comm") & (r1["op"] == kind)].iloc[1]
        i_ends = comp.loc[comp["piece"] == i_piece, "end"]
        assert (i_ends == a2a["start"]).any()
        assert _overlaps(comp[comp["piece"] == w_piece], a2a["start"], a2a["end"])
    assert 0.2 < small["1f1b"].extra["comm_hidden_fraction"] < 0.6


def test_dualpipe_has_twice_the_parameters(small) -> None:
    dp = small["dualpipe"].per_rank[1].memory_breakdown_gb["params"]
    one = small["1f1b"].per_rank[1].memory_breakdown_gb["params"]
    assert dp / one == pytest.approx(2.0, rel=0.15)


def test_activation_memory_follows_in_flight_count(small) -> None:
    r = small["1f1b"].per_rank
    # 1F1B rank r holds min(R - r, M) micro-batches: rank 1 three, rank 2 two
    assert r[1].peak_activations == 3 and r[2].peak_activations == 2
    a1, a2 = (r[k].memory_breakdown_gb["activations"] for k in (1, 2))
    assert a1 / a2 == pytest.approx(1.5, rel=0.01)


def test_bad_layouts_give_one_line() -> None:
    sched = generate("1f1b", 4, 8)
    with pytest.raises(ProfileError, match="not divisible"):
        simulate_hardware(sched, gpus=258)
    with pytest.raises(ProfileError, match="--ep 8 is larger than the 4 GPUs"):
        simulate_hardware(sched, gpus=4, ep=8)


def test_incomplete_schedule_is_refused_before_simulating() -> None:
    sched = generate("1f1b", 4, 8)
    rows = [list(row) for row in sched.actions]
    rows[0].pop()  # rank 0's last backward
    with pytest.raises(ValidationError, match="never gets a backward"):
        simulate_hardware(sched.with_actions(rows), gpus=256)


def test_hbm_warning_and_a100_fp8_fallback() -> None:
    res = simulate_hardware(generate("gpipe", 4, 16), "a100", gpus=256)
    w = " ".join(res.extra["warnings"])
    assert "no FP8" in w and "runs in BF16" in w and "more than the 80 GB" in w
    assert res.extra["precision"] == "bf16"


@settings(max_examples=40, deadline=None)
@given(family=st.sampled_from(FAMILIES), ranks=st.integers(1, 6), mbs=st.integers(1, 14),
       f=st.integers(1, 4), i=st.integers(1, 4), w=st.integers(1, 4), comm=st.integers(0, 3))
def test_simpy_equals_abstract_property(family, ranks, mbs, f, i, w, comm) -> None:
    try:
        check(family, ranks, mbs, None)
    except ScheduleError:
        return
    sched = generate(family, ranks, mbs)
    costs = {"F": f, "I": i, "W": w}
    assert _figures(simulate(sched, costs, comm)) == _figures(simulate_simpy(sched, costs, comm))


def test_lowered_plan_simulates_like_its_schedule() -> None:
    from dualsim.lower import lower

    sched = generate("dualpipe", 4, 8)
    a, b = simulate_hardware(sched, gpus=256), simulate_hardware(lower(sched), gpus=256)
    assert a.makespan == b.makespan
    assert a.memory["total_gb"].max() == pytest.approx(a.extra["peak_memory_gb"], abs=1e-4)


def test_gradient_sync_overlaps_the_trailing_weight_gradients(small) -> None:
    tl = small["dualpipe"].timeline
    overlapped = 0
    for r in range(4):
        rows = tl[tl["rank"] == r]
        last_compute = rows.loc[rows["stream"] == "compute", "end"].max()
        syncs = rows[rows["op"] == "dp_sync"]
        assert len(syncs) == 2  # one per stage the rank holds
        overlapped += int((syncs["start"] < last_compute).sum())
    assert overlapped >= 2  # a slice finished early syncs while the other still computes
    assert small["dualpipe"].makespan == pytest.approx(tl["end"].max())


def test_more_slices_than_layers_is_warned() -> None:
    # small-moe has 27 layers; 1F1B on 32 ranks leaves 5 slices without a layer, the last of
    # which still holds the head
    r = simulate_hardware(generate("1f1b", 32, 32), "h800", "small-moe", gpus=256, ep=8)
    assert r.extra["layers_per_stage"].count(0) == 5
    assert any(w.startswith("4 of 32 layer slices hold nothing (27 layers over 32 slices)")
               for w in r.extra["warnings"])
    ok = simulate_hardware(generate("1f1b", 4, 8), "h800", "small-moe")
    assert not any("hold nothing" in w for w in ok.extra["warnings"])


def test_a_slice_with_only_the_head_is_not_warned() -> None:
    # DeepSeek-V3 on ZB-V: the last of 32 slices holds the head and MTP but no layer
    r = simulate_hardware(generate("zb-v", 16, 32), "h800", "deepseek-v3")
    assert r.extra["layers_per_stage"][-1] == 0
    assert not any("hold nothing" in w for w in r.extra["warnings"])


def test_a_step_too_large_to_simulate_is_refused_before_running(tmp_path) -> None:
    # found by the fuzzer: small-moe with global_batch = 10^6 (in range) means 62,500
    # micro-batches per step, minutes of simulation; refused up front instead
    from typer.testing import CliRunner

    from dualsim.cli import app
    from dualsim.datafiles import data_dir

    text = (data_dir("models") / "small-moe.toml").read_text()
    f = tmp_path / "big.toml"
    f.write_text(re.sub(r"global_batch = \d+", "global_batch = 1000000", text))
    res = CliRunner().invoke(app, ["simulate", "1f1b", "--model", str(f), "--json"])
    assert res.exit_code == 1 and res.stdout == ""
    assert re.fullmatch(r"error: this step would take about [\d,]+ pieces to simulate \(4 ranks, "
                        r"62,500 micro-batches, 27 layers\), more than dualsim simulates "
                        r"\(3,000,000\); use fewer --microbatches or a smaller --global-batch\n",
                        res.stderr), res.stderr


def test_the_work_estimate_follows_the_timeline() -> None:
    from dualsim.sim.hardware_mode import MAX_PIECES, check_work, hardware_setup

    s = generate("1f1b", 4, 64)
    _, layout, _ = hardware_setup(s, "h800", "small-moe")
    check_work(s, layout)  # far below the cap
    rows = len(simulate_hardware(s, "h800", "small-moe").timeline)
    per_slice = [2 * sum(len(u.pieces) for u in sl.units) + 1 for sl in layout.slices]
    estimate = sum(per_slice[s.placement(a.stage).position] for row in s.actions for a in row)
    assert 0.7 * rows <= estimate <= 1.3 * rows  # a fair estimate of the pieces simulated
    assert MAX_PIECES == 3_000_000
