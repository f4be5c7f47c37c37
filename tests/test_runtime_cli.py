"""`dualsim run PLAN --json` end to end, and the calibration behind --compare-sim.

One CLI run without expert parallelism (trace, Gantt, --compare-sim) and one with it
(--ep 2: all-to-all figures, their lane in the Gantt and the trace, the simulated vs measured
all-to-all, and a torch.profiler trace); the rest works on hand-made timelines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from dualsim.generators import generate  # noqa: E402
from dualsim.ir import Schedule  # noqa: E402
from dualsim.lower import lower  # noqa: E402
from dualsim.overlap_order import backward_chain, fb_order, forward_chain, plain_order  # noqa: E402
from dualsim.errors import DualsimError  # noqa: E402
from dualsim.runtime.gpu_check import format_problems  # noqa: E402
from dualsim.runtime.measure import (a2a_exposure, calibrate, compare_sim,  # noqa: E402
                                     effective_durations, replay)
from dualsim.timeline import from_rows  # noqa: E402


@pytest.mark.runtime
def test_run_json_trace_gantt_and_compare_sim(tmp_path: Path) -> None:
    plan = tmp_path / "p.json"
    subprocess.run([sys.executable, "-m", "dualsim.cli", "emit", "dualpipev", "--ranks", "2",
                    "--microbatches", "4", "-o", str(plan)], check=True)
    trace, gantt = tmp_path / "t.json", tmp_path / "g.png"
    proc = subprocess.run([sys.executable, "-m", "dualsim.cli", "run", str(plan), "--json",
                           "--steps", "3", "--compare-sim", "--trace", str(trace),
                           "--gantt", str(gantt)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)  # stdout holds the JSON document alone
    assert r["max_abs_grad_diff"] <= 1e-12 and r["matches_reference"] is True
    assert abs(r["loss"] - r["reference_loss"]) <= 1e-12
    assert r["step_time_s"] > 0 and r["measured_step_time_s"] > 0
    assert r["predicted_step_time_s"] > 0
    assert r["prediction_error"] == pytest.approx(
        r["predicted_step_time_s"] / r["measured_step_time_s"] - 1)
    # one measured step time: the one the run reports is the one the prediction is held to
    assert r["measured_step_time_s"] == r["step_time_s"]
    assert r["predicted_step_time_s"] == pytest.approx(
        r["predicted_makespan_s"] + r["measured_end_of_step_s"])
    assert ("caveat" in r) == (r["processes"] > len(os.sched_getaffinity(0)))
    assert [p["rank"] for p in r["per_rank_idle"]] == [0, 1]
    events = json.loads(trace.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {e.get("name") for e in events if e.get("ph") == "X"}
    assert "0F0" in names and "(0F3;3B1)" in names
    assert gantt.read_bytes()[:4] == b"\x89PNG"


def _toy_plan() -> Schedule:
    return lower(generate("1f1b", 2, 2))


def _toy_rows() -> list[tuple]:
    # rank 0: F0 [0,2) F1 [2,4) then waits for B0 and B1; rank 1: F/B per micro-batch.
    # F = 2 s on both stages, B = 3 s; message latency 0.5 s, sends take 0.1 s to post.
    rows = []

    def row(rank: int, stream: str, op: str, stage: int, mb: int, start: float, end: float,
            text: str) -> None:
        rows.append((rank, stream, op, stage, mb, 0, -1, -1, -1, "", start, end, text))

    row(0, "compute", "F", 0, 0, 0.0, 2.0, "0F0")
    row(0, "comm", "pp_send", 0, 0, 2.0, 2.1, "0SEND_F0")
    row(0, "compute", "F", 0, 1, 2.1, 4.1, "0F1")
    row(0, "comm", "pp_send", 0, 1, 4.1, 4.2, "0SEND_F1")
    row(1, "comm", "pp_recv", 1, 0, 0.0, 2.5, "1RECV_F0")
    row(1, "compute", "F", 1, 0, 2.5, 4.5, "1F0")
    row(1, "compute", "B", 1, 0, 4.5, 7.5, "1B0")
    row(1, "comm", "pp_send", 1, 0, 7.5, 7.6, "1SEND_B0")
    row(1, "comm", "pp_recv", 1, 1, 7.6, 7.6, "1RECV_F1")
    row(1, "compute", "F", 1, 1, 7.6, 9.6, "1F1")
    row(1, "compute", "B", 1, 1, 9.6, 12.6, "1B1")
    row(1, "comm", "pp_send", 1, 1, 12.6, 12.7, "1SEND_B1")
    row(0, "comm", "pp_recv", 0, 0, 4.2, 8.0, "0RECV_B0")
    row(0, "compute", "B", 0, 0, 8.0, 11.0, "0B0")
    row(0, "comm", "pp_recv", 0, 1, 11.0, 13.1, "0RECV_B1")
    row(0, "compute", "B", 0, 1, 13.1, 16.1, "0B1")
    return rows


def test_calibration_reads_costs_and_latency_from_a_timeline() -> None:
    tl = from_rows(_toy_rows())
    eff = effective_durations(tl)
    f0 = eff[(eff["rank"] == 0) & (eff["action"] == "0F0")]["dur"].item()
    assert f0 == pytest.approx(2.1)  # F plus posting its send
    costs, latency = calibrate(_toy_plan(), [tl])
    # per stage: F 2.1 (stage 0, with its sends) and 2.0; B 3.0 and (3.1 + 3.0) / 2; the
    # slowest rank sets each cost
    assert costs["F"] == pytest.approx(2.1)
    assert costs["B"] == pytest.approx(3.05)
    assert costs["I"] == pytest.approx(costs["B"] / 2)
    assert costs["FB"] == pytest.approx(costs["F"] + costs["B"])
    # receivers already waiting: 1RECV_F0 (0.5 after 0SEND_F0), 0RECV_B0 (0.5), 0RECV_B1 (0.5)
    assert latency == pytest.approx(0.5)


@pytest.mark.runtime
def test_expert_parallel_run_reports_and_draws_the_all_to_all(tmp_path: Path) -> None:
    plan = tmp_path / "p.json"
    subprocess.run([sys.executable, "-m", "dualsim.cli", "emit", "dualpipe", "--ranks", "2",
                    "--microbatches", "4", "-o", str(plan)], check=True)
    trace, gantt, prof = tmp_path / "t.json", tmp_path / "g.png", tmp_path / "prof.json"
    proc = subprocess.run([sys.executable, "-m", "dualsim.cli", "run", str(plan), "--ep", "2",
                           "--json", "--steps", "2", "--dtype", "float32", "--compare-sim",
                           "--trace", str(trace), "--gantt", str(gantt),
                           "--profile-trace", str(prof)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["ep"] == 2 and r["processes"] == 4 and r["matches_reference"] is True
    assert r["max_rel_grad_diff"] <= 1e-5
    assert r["a2a_bytes_per_step"] > 0 and r["a2a_time_s"] > 0
    assert 0 <= r["a2a_exposed_s"] <= r["a2a_time_s"] and 0 <= r["a2a_hidden_fraction"] <= 1
    assert r["measured_a2a_hidden_fraction"] == r["a2a_hidden_fraction"]
    assert 0 <= r["predicted_a2a_hidden_fraction"] <= 1
    assert {"attn", "mlp", "attn_bwd", "mlp_w", "dispatch", "combine_bwd"} <= \
        set(r["calibrated_piece_s"])
    # the Perfetto trace: the all-to-all on its own thread, inside FB units too
    events = json.loads(trace.read_text())["traceEvents"]
    threads = {(e["pid"], e["args"]["name"]) for e in events if e.get("name") == "thread_name"}
    assert {(0, "all-to-all"), (1, "all-to-all")} <= threads
    a2a = [e for e in events if e.get("ph") == "X" and e["tid"] >= 101]
    assert {e["args"]["op"] for e in a2a} == {"dispatch", "combine", "combine_bwd",
                                               "dispatch_bwd"}
    assert any(e["name"].startswith("dispatch (") for e in a2a)  # posted inside an FB
    assert gantt.read_bytes()[:4] == b"\x89PNG"
    # the profiler trace: valid Chrome trace JSON, every process, action and piece ranges
    p = json.loads(prof.read_text())
    assert p["dualsimEp"] == 2 and p["dualsimPlan"]["schedule"] == "dualpipe"
    evs = p["traceEvents"]
    # integer pids/tids, numeric ts/dur, no flow id shared by two processes (Perfetto joins
    # flows by id across the file; every process's profiler numbers its own from 1)
    assert format_problems(p) == []
    assert len({e["pid"] for e in evs if e["ph"] == "s" and e.get("cat") == "fwdbwd"}) == 4
    assert {e["pid"] for e in evs} == {0, 1, 2, 3}
    names = {e["name"] for e in evs if e["ph"] == "X"}
    assert {"step 1", "0F0", "attn(F)", "dispatch(F)", "mlp(B)", "attn(W)",
            "combine(B)"} <= names
    assert any(n.startswith("(") and ";" in n for n in names)  # an FB range


def test_replay_of_an_fb_unit_hides_all_but_the_waits() -> None:
    # one MoE layer and a post piece per half; compute pieces take 1, all-to-alls 2
    units = [[("attn", "dispatch"), ("mlp", "combine")], [("post", None)]]
    fwd, bwd = forward_chain(units), backward_chain(units)
    durations = {"dispatch": 2.0, "combine": 2.0, "combine_bwd": 2.0, "dispatch_bwd": 2.0}
    durations.update({n.name: 1.0 for n in fwd + bwd if n.stream == "compute"})
    comp, comm = replay(plain_order(fwd), [fwd], durations)
    assert comp == [(0, 1), (3, 4), (6, 7)] and comm == [(1, 3), (4, 6)]  # all exposed
    # FB: attn(F) | post_bwd, post_w | mlp(F) | mlp_bwd, mlp_w | post(F) | attn_bwd, attn_w
    comp, comm = replay(fb_order(fwd, bwd), [fwd, bwd], durations)
    assert comp == [(0, 1), (1, 2), (2, 3), (3, 4), (5, 6), (6, 7), (7, 8), (9, 10), (10, 11)]
    assert comm == [(1, 3), (3, 5), (5, 7), (7, 9)]
    rows = [(0, "compute", "FB", 0, 0, 0, 1, 0, 0, "x", s, e, "u") for s, e in comp] + \
        [(0, "a2a", "dispatch", 0, 0, 0, 1, 0, 0, "dispatch", s, e, "u") for s, e in comm]
    total, out = a2a_exposure(rows)
    assert (total, out) == (8, 2)  # exposed: [4, 5] and [8, 9]


def test_compare_sim_predicts_a_run_from_another_runs_costs(tmp_path: Path) -> None:
    from dualsim.runtime.records import RankReport, StepRecord
    from dualsim.runtime.session import read_calibration
    from dualsim.sim.abstract import simulate

    plan = _toy_plan()
    rows = _toy_rows()
    reports = [RankReport(r, [StepRecord([x for x in rows if x[0] == r], 0.0, 16.1, 16.5)],
                          {}, {}, process=r) for r in (0, 1)]
    other = tmp_path / "other.json"  # what `dualsim run --compare-sim --json` wrote elsewhere
    other.write_text(json.dumps({"ranks": 2, "ep": 1, "calibrated_latency_s": 0.25,
                                 "calibrated_costs_s": {"F": 1.0, "I": 1.5, "W": 1.5,
                                                        "B": 3.0, "FB": 4.0}}))
    costs, latency, source = read_calibration(str(other), plan, ep=1)
    r = compare_sim(plan, reports, calibration=(costs, latency, source))
    want = simulate(plan, costs, comm=0.25).makespan
    assert r["calibrated_from"] == str(other) and r["calibrated_costs_s"] == costs
    assert r["predicted_makespan_s"] == pytest.approx(float(want))
    assert r["predicted_step_time_s"] == pytest.approx(float(want) + 16.5 - 16.1)
    assert r["measured_step_time_s"] == 16.5
    own = compare_sim(plan, reports)  # the run's own calibration: F 2.1, B 3.05, latency 0.5
    assert own["calibrated_from"] == "this run" and own["calibrated_costs_s"]["F"] == \
        pytest.approx(2.1)
    with pytest.raises(DualsimError, match="comes from 2 ranks x --ep 1 and this run has 2 x 2"):
        read_calibration(str(other), plan, ep=2)
    for costs_s, latency_s in (({"F": "x", "B": 3.0}, 0.25), ({"F": 1.0, "B": 3.0}, None),
                               ({"F": 1.0, "B": -1.0}, 0.25)):
        other.write_text(json.dumps({"ranks": 2, "ep": 1, "calibrated_latency_s": latency_s,
                                     "calibrated_costs_s": costs_s}))
        with pytest.raises(DualsimError, match=r"is .*, not a number of seconds >= 0"):
            read_calibration(str(other), plan, ep=1)


def test_a_truncated_calibration_file_names_the_command_that_writes_one(tmp_path: Path) -> None:
    """Not `dualsim emit` (the plan's fix), which cannot write a calibration."""
    from dualsim.runtime.session import read_calibration

    other = tmp_path / "other.json"
    other.write_text('{"ranks": 2, "calibrated_costs_s": {"F": 1.0')
    with pytest.raises(DualsimError) as e:
        read_calibration(str(other), _toy_plan(), ep=1)
    assert e.value.cli == (
        f"calibration file {str(other)!r} is not valid JSON (line 1, column 45: Expecting ',' "
        "delimiter); it may be truncated: write it again with `dualsim run --compare-sim "
        "--json` or --profile-trace")
