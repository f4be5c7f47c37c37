"""Memory-over-time plot: produced for every rank, deterministic, components stacked in order."""

from __future__ import annotations

import pandas as pd
import pytest

from dualsim.render.memory import components, render_memory


def memory_table(ranks=4):
    rows = []
    for r in range(ranks):
        for k, t in enumerate([0.0, 0.1, 0.2, 0.3]):
            act = [0.0, 2.0 * (r + 1), 3.0 * (r + 1), 0.0][k]
            rows.append({"rank": r, "time": t, "params_gb": 10.0, "grads_gb": 5.0,
                         "optimizer_gb": 7.5, "activations_gb": act,
                         "total_gb": 22.5 + act})
    return pd.DataFrame(rows)


def test_components_exclude_total_and_keep_order():
    assert components(memory_table()) == ["params", "grads", "optimizer", "activations"]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_memory_plot_written_and_deterministic(tmp_path, suffix):
    a, b = tmp_path / f"m1{suffix}", tmp_path / f"m2{suffix}"
    render_memory(memory_table(), a, hbm_gb=80.0)
    render_memory(memory_table(), b, hbm_gb=80.0)
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size > 5000


def test_memory_plot_titles_each_rank_with_its_peak(tmp_path):
    out = tmp_path / "m.svg"
    render_memory(memory_table(), out, hbm_gb=80.0)
    text = out.read_text()
    assert "<!-- rank 3  (peak 34.5 GB) -->" in text
    assert "<!-- rank 0  (peak 25.5 GB) -->" in text
    assert "<!-- HBM 80 GB -->" in text


def test_empty_memory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="hardware mode"):
        render_memory(memory_table().iloc[0:0], tmp_path / "m.png")


def test_one_figure_saved_as_png_and_svg_matches_single_renders(tmp_path):
    from dualsim.render.memory import render_memory_files

    both = [tmp_path / "m.png", tmp_path / "m.svg"]
    render_memory_files(memory_table(), both, hbm_gb=80.0, title="memory per rank: x")
    for p in both:
        single = tmp_path / f"single{p.suffix}"
        render_memory(memory_table(), single, hbm_gb=80.0, title="memory per rank: x")
        assert p.read_bytes() == single.read_bytes()
    assert "<!-- memory per rank: x -->" in both[1].read_text()


def test_every_component_of_the_hardware_memory_table_has_its_own_colour() -> None:
    from dualsim.render.memory import COMPONENT_COLORS, colors
    from dualsim.sim.memory import COMPONENTS

    got = colors(list(COMPONENTS))
    assert len(set(got)) == len(COMPONENTS)  # a2a_buffers and workspace were both brown
    assert got[0] == COMPONENT_COLORS["params"] and got[COMPONENTS.index("activations")] == "#DD8452"
