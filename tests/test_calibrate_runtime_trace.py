"""`dualsim calibrate` on a runtime trace: per-stage abstract costs that reproduce the run.

The trace here is written in the format `dualsim run --profile-trace` writes (docs/calibration.md)
from an abstract simulation with known costs, so calibration must recover them exactly: F, B,
the transfer latency, the slowest EP process, and the warm-up step dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualsim.calibrate.runtime_trace import calibrate_costs
from dualsim.calibrate.trace import read_trace
from dualsim.cli import app
from dualsim.generators import generate
from dualsim.ir import Action, Op
from dualsim.sim.abstract import simulate

runner = CliRunner()
COSTS = {"F": 2, "I": 2, "W": 2, "B": 4}  # ms; 1F1B runs F and B
LATENCY = 0.5


def _range(name: str, pid: int, start_ms: float, end_ms: float) -> dict:
    return {"ph": "X", "cat": "user_annotation", "name": name, "pid": pid, "tid": 1,
            "ts": round(start_ms * 1000, 3), "dur": round((end_ms - start_ms) * 1000, 3)}


def _peers(schedule, a: Action, inputs: bool) -> list[tuple[str, int, int]]:
    """(kind, stage, microbatch) of the cross-rank receives (or sends) of a compute action."""
    out = []
    for part in a.parts:
        if part.op is Op.W:
            continue
        fwd = part.op is Op.F
        peer = (schedule.prev_stage(part.stage) if fwd == inputs
                else schedule.next_stage(part.stage))
        if peer is not None and schedule.rank_of(peer) != schedule.rank_of(part.stage):
            kind = ("RECV_" if inputs else "SEND_") + ("F" if fwd else "B")
            out.append((kind, part.stage, part.microbatch))
    return out


def runtime_trace(schedule, costs=None, ep: int = 1, steps: int = 1,
                  slow: dict | None = None) -> dict:
    """A trace in the runtime's format, from the abstract timeline of ``schedule``: each
    action's range, a receive range over the wait before it, a zero-length send after it."""
    res = simulate(schedule, costs or COSTS, comm=LATENCY)
    tl = res.timeline[res.timeline["stream"] == "compute"]
    period = float(res.makespan) * 2 + 10
    events = []
    for k in range(steps):
        t0 = k * period
        for g in range(schedule.ranks * ep):
            events.append(_range(f"step {k}", g, t0, t0 + period - 5))
        for rank, rows in tl.groupby("rank"):
            for e in range(ep):
                g = rank * ep + e
                f = (slow or {}).get(g, 1.0)  # this process runs every action f times longer
                prev = 0.0
                for row in rows.sort_values("start").itertuples():
                    a = Action.parse(row.action)
                    start = max(prev, t0 + row.start * f)
                    end = start + (row.end - row.start) * f
                    for kind, st, mb in _peers(schedule, a, inputs=True):
                        events.append(_range(f"{st}{kind}{mb}", g, prev, start))
                    events.append(_range(row.action, g, start, end))
                    sends = [f"{st}{kind}{mb}" for kind, st, mb in _peers(schedule, a, False)]
                    if sends:  # one posting range for the batch, as the runtime names it
                        events.append(_range(" ".join(sends), g, end, end))
                    prev = end
    return {"traceEvents": events, "dualsimPlan": schedule.to_dict(), "dualsimEp": ep}


def _write(tmp_path: Path, doc: dict, name: str = "t.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def test_costs_and_latency_are_recovered(tmp_path: Path) -> None:
    s = generate("1f1b", 2, 4)
    sc = calibrate_costs(read_trace(_write(tmp_path, runtime_trace(s))))
    assert sc.costs["F"] == pytest.approx(2e-3) and sc.costs["B"] == pytest.approx(4e-3)
    assert sc.costs["I"] == sc.costs["W"] == pytest.approx(2e-3)  # B / 2, as --compare-sim does
    assert sc.costs["FB"] == pytest.approx(6e-3)
    assert sc.latency == pytest.approx(0.5e-3)
    assert [(r["stage"], r["rank"]) for r in sc.per_stage] == [(0, 0), (1, 1)]
    assert sc.per_stage[1]["B"] == pytest.approx(4e-3)


def test_the_printed_costs_reproduce_the_run(tmp_path: Path) -> None:
    s = generate("1f1b", 2, 4)
    res = runner.invoke(app, ["calibrate", str(_write(tmp_path, runtime_trace(s))), "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["mode"] == "runtime" and doc["unit"] == "ms"
    args = doc["simulate_args"].split()
    assert args[0] == "--costs" and args[2] == "--comm"
    again = runner.invoke(app, ["simulate", "1f1b", "-r", "2", "-m", "4", *args, "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["makespan"] == pytest.approx(
        float(simulate(s, COSTS, comm=LATENCY).makespan))


def test_slowest_ep_process_and_warm_up_step(tmp_path: Path) -> None:
    s = generate("1f1b", 2, 4)
    doc = runtime_trace(s, ep=2, steps=2, slow={3: 1.5})  # pipeline rank 1, EP index 1
    sc = calibrate_costs(read_trace(_write(tmp_path, doc)))
    assert sc.ep == 2 and sc.steps == 1
    assert sc.costs["F"] == pytest.approx(3e-3) and sc.costs["B"] == pytest.approx(6e-3)


def test_dualpipev_fb_costs_per_rank_worth(tmp_path: Path) -> None:
    """DualPipeV stages hold half a rank's layers: per rank-worth costs are twice a stage's."""
    s = generate("dualpipev", 4, 8)
    costs = {"F": 2, "I": 2, "W": 2, "B": 4, "FB": 5}
    sc = calibrate_costs(read_trace(_write(tmp_path, runtime_trace(s, costs))))
    assert sc.costs["FB"] == pytest.approx(5e-3)
    assert sc.costs["F"] == pytest.approx(2e-3) and sc.costs["B"] == pytest.approx(4e-3)
    assert sc.latency == pytest.approx(0.5e-3)
    assert sc.per_stage[0]["FB"] == pytest.approx(2.5e-3)  # a stage op costs half


def test_runtime_trace_errors(tmp_path: Path) -> None:
    s = generate("1f1b", 2, 4)
    doc = runtime_trace(s)
    short = dict(doc, traceEvents=[e for e in doc["traceEvents"] if e["pid"] == 0])
    res = runner.invoke(app, ["calibrate", str(_write(tmp_path, short, "a.json"))])
    assert res.exit_code == 1 and "no ranges of process 1" in res.stderr
    bad = dict(doc, dualsimPlan={"format": "x"})
    res = runner.invoke(app, ["calibrate", str(_write(tmp_path, bad, "b.json"))])
    assert res.exit_code == 1 and "not a valid plan" in res.stderr
    res = runner.invoke(app, ["calibrate", str(_write(tmp_path, doc, "c.json")), "--profile",
                              "h800"])
    assert res.exit_code == 1 and "--profile is for GPU traces" in res.stderr
    assert res.stderr.count("\n") == 1


@pytest.mark.runtime
def test_a_trace_written_by_dualsim_run(tmp_path: Path) -> None:
    """`dualsim run --profile-trace` then `dualsim calibrate`: the real format, end to end."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    plan, prof = tmp_path / "p.json", tmp_path / "t.json"
    emitted = runner.invoke(app, ["emit", "1f1b", "-r", "2", "-m", "4", "-o", str(plan)])
    assert emitted.exit_code == 0
    run = subprocess.run([sys.executable, "-m", "dualsim.cli", "run", str(plan), "--json",
                          "--profile-trace", str(prof)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    res = runner.invoke(app, ["calibrate", str(prof), "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schedule"] == "1f1b" and doc["ranks"] == 2 and doc["ep"] == 1
    assert [r["stage"] for r in doc["per_stage"]] == [0, 1]
    assert all(doc["costs"][k] > 0 for k in ("F", "B"))
    # the slowest rank paces the pipeline; 1F1B has no I, W or FB action: I = W = B/2, FB = F + B
    costs = doc["costs"]
    for op in ("F", "B"):
        assert costs[op] == pytest.approx(max(row[op] for row in doc["per_stage"]), abs=2e-6)
    assert costs["I"] == costs["W"] == pytest.approx(costs["B"] / 2, abs=2e-6)
    assert costs["FB"] == pytest.approx(costs["F"] + costs["B"], abs=2e-6)
    again = runner.invoke(app, ["simulate", "1f1b", "-r", "2", "-m", "4",
                                *doc["simulate_args"].split(), "--json"])
    assert again.exit_code == 0, again.stderr
