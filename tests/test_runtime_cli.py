"""`dualsim run PLAN --json` end to end, and the calibration behind --compare-sim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from dualsim.generators import generate  # noqa: E402
from dualsim.ir import Schedule  # noqa: E402
from dualsim.lower import lower  # noqa: E402
from dualsim.runtime.measure import calibrate, effective_durations  # noqa: E402
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
    assert [p["rank"] for p in r["per_rank_idle"]] == [0, 1]
    events = json.loads(trace.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {e.get("name") for e in events if e.get("ph") == "X"}
    assert "0F0" in names and "(0F3;3B1)" in names
    assert gantt.read_bytes()[:4] == b"\x89PNG"


def _toy_plan() -> Schedule:
    return lower(generate("1f1b", 2, 2))


def test_calibration_reads_costs_and_latency_from_a_timeline() -> None:
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
    tl = from_rows(rows)
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
