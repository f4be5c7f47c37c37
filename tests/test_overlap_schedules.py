"""The batch-level overlap families (1f1b-overlap, interleaved-overlap) through the rest of dualsim.

Their orders and closed forms are in tests/test_generators.py and tests/test_closed_forms.py;
here: the README-style formula of a report, the Gantt cells, hardware mode hiding the
all-to-all, and the CLI from `emit` to `run`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualsim.cli.app import app
from dualsim.generators import generate
from dualsim.planfile import read_plan
from dualsim.render.gantt import gantt_layout
from dualsim.render.table import readme_formula
from dualsim.sim.abstract import simulate
from dualsim.validate import validate

runner = CliRunner()


@pytest.mark.parametrize("name, chunks", [("1f1b-overlap", None), ("interleaved-overlap", 2),
                                          ("interleaved-overlap", 3)])
@pytest.mark.parametrize("ranks, mbs", [(2, 6), (4, 8), (4, 10), (6, 12)])
@pytest.mark.parametrize("fb", [2, Fraction(5, 2), 3])  # max(F, B) <= FB <= F + B
def test_readme_bubble_is_the_largest_idle(name: str, chunks: int | None, ranks: int, mbs: int,
                                           fb) -> None:
    costs = {"F": 1, "I": 1, "W": 1, "FB": fb}
    s = generate(name, ranks, mbs, chunks)
    result = simulate(s, costs)
    assert readme_formula(s, costs)["value"] == max(p.idle for p in result.per_rank)
    assert result.per_rank[-1].idle == Fraction(3 * (ranks - 1), chunks or 1)


def test_gantt_draws_fb_units_as_split_cells() -> None:
    tl = simulate(generate("1f1b-overlap", 4, 8), {"F": 1, "I": 1, "W": 1, "FB": 2}).timeline
    lay = gantt_layout(tl)
    last = [(b.kind, b.label, b.y0, b.y1) for b in lay.boxes_of(3)]
    # 3F0 alone, then (3F1;3B0): forward 1 on top, backward 0 below, ...
    assert last[:5] == [("F", "0", 0.0, 1.0), ("F", "1", 0.0, 0.5), ("B", "0", 0.5, 1.0),
                        ("F", "2", 0.0, 0.5), ("B", "1", 0.5, 1.0)]
    assert sum(1 for k, *_ in last if k == "F") == 8 and last[-1] == ("B", "7", 0.0, 1.0)
    assert "FB" in lay.legend


def test_hardware_mode_hides_the_all_to_all_in_fb_units() -> None:
    """Mechanism, not a winner: an FB unit runs one half's all-to-all under the other half's
    compute; plain 1F1B has no second half to hide it under."""
    from dualsim.sim.hardware_mode import simulate_hardware

    hidden = {n: simulate_hardware(generate(n, 4, 16), gpus=256).extra["comm_hidden_fraction"]
              for n in ("1f1b", "1f1b-overlap", "interleaved", "interleaved-overlap")}
    assert hidden["1f1b-overlap"] > 0.5 > hidden["1f1b"]
    assert hidden["interleaved-overlap"] > 0.5 > hidden["interleaved"]


def test_emit_writes_a_validated_lowered_plan(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    res = runner.invoke(app, ["emit", "interleaved-overlap", "-r", "4", "-m", "6", "--chunks",
                              "3", "-o", str(out)])
    assert res.exit_code == 0, res.stderr
    plan = read_plan(str(out))
    validate(plan)
    assert plan.is_lowered and (plan.name, plan.chunks, plan.num_stages) == (
        "interleaved-overlap", 3, 12)
    assert plan.compute_only().actions == generate("interleaved-overlap", 4, 6, 3).actions


def test_compare_passes_chunks_to_interleaved_overlap(tmp_path: Path) -> None:
    res = runner.invoke(app, ["compare", "1f1b", "interleaved-overlap", "-r", "4", "-m", "8",
                              "--chunks", "4", "--costs", "F=1,I=1,W=1,FB=2", "--out",
                              str(tmp_path), "--json"])
    assert res.exit_code == 0, res.stderr
    by = {r["schedule"]: r for r in json.loads(res.stdout)["results"]}
    # R(F+B) + (vM - (v-1)R - 1) FB / v with v = 4: 12 + 19 * 2 / 4
    assert by["interleaved-overlap"]["makespan"] == 21.5
    assert by["1f1b"]["makespan"] == 33


@pytest.mark.runtime
def test_emit_then_run_matches_the_reference_gradients(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    plan = tmp_path / "p.json"
    subprocess.run([sys.executable, "-m", "dualsim.cli", "emit", "1f1b-overlap", "-r", "4",
                    "-m", "8", "-o", str(plan)], check=True)
    proc = subprocess.run([sys.executable, "-m", "dualsim.cli", "run", str(plan), "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["matches_reference"] is True and r["max_abs_grad_diff"] <= 1e-12
    assert abs(r["loss"] - r["reference_loss"]) <= 1e-12
