"""A rank that dies or hangs ends the run with a message naming it; nothing is left running.

Faults are injected with DUALSIM_TEST_FAULT="rank:action index:kill|hang" (read by the
interpreter; used only by tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from dualsim.cli import app  # noqa: E402
from dualsim.errors import RuntimeRunError  # noqa: E402
from dualsim.generators import generate  # noqa: E402
from dualsim.lower import lower  # noqa: E402
from dualsim.planfile import write_plan  # noqa: E402
from dualsim.runtime.launcher import RunOptions, launch_local  # noqa: E402

pytestmark = pytest.mark.runtime


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is not running
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _run_with_fault(monkeypatch: pytest.MonkeyPatch, fault: str, timeout: float) -> tuple[str, list[int]]:
    plan = lower(generate("1f1b", 2, 4))
    monkeypatch.setenv("DUALSIM_TEST_FAULT", fault)
    pids: list[int] = []
    with pytest.raises(RuntimeRunError) as err:
        launch_local([plan], RunOptions(steps=1, timeout=timeout), on_start=pids.extend)
    return str(err.value), pids


def test_killed_rank_is_named_with_its_action(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = lower(generate("1f1b", 2, 4))
    index = 4
    message, pids = _run_with_fault(monkeypatch, f"1:{index}:kill", timeout=30)
    assert message.startswith("rank 1 died (killed by SIGKILL)"), message
    assert f"action {index} ({plan.actions[1][index]}) of step 0" in message
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


def test_hung_rank_is_named_and_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = lower(generate("1f1b", 2, 4))
    index = 3
    message, pids = _run_with_fault(monkeypatch, f"1:{index}:hang", timeout=3)
    assert "no progress for 3 s" in message
    assert f"rank 1 on action {index} ({plan.actions[1][index]}) of step 0 hung" in message
    assert "rank 0 was waiting for it" in message
    assert not any(_alive(p) for p in pids)


def test_rank_killed_from_outside_mid_run_ends_the_run(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    # rank 1 stops at its action 3 and writes the mark; then the test kills rank 0 (blocked on
    # a receive from rank 1) with SIGKILL, as a user or the OOM killer would
    mark = tmp_path / "mark"
    monkeypatch.setenv("DUALSIM_TEST_FAULT", "1:3:hang")
    monkeypatch.setenv("DUALSIM_TEST_FAULT_MARK", str(mark))
    pids: list[int] = []

    def kill_rank0_mid_run() -> None:
        while not mark.exists():
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)

    def on_start(started: list[int]) -> None:
        pids.extend(started)
        threading.Thread(target=kill_rank0_mid_run, daemon=True).start()

    with pytest.raises(RuntimeRunError) as err:
        launch_local([lower(generate("1f1b", 2, 4))], RunOptions(steps=1, timeout=60),
                     on_start=on_start)
    assert str(err.value).startswith("rank 0 died (killed by SIGKILL) on action"), err.value
    assert "of step 0" in str(err.value)
    assert not any(_alive(p) for p in pids)


def test_cli_reports_a_dead_rank_in_one_line(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("zb-h1", 2, 2)), str(plan_path))
    env = dict(os.environ, DUALSIM_TEST_FAULT="0:2:kill")
    proc = subprocess.run([sys.executable, "-m", "dualsim.cli", "run", str(plan_path),
                           "--timeout", "20", "--steps", "1", "--json"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 0 died" in errors[0] and "Traceback" not in proc.stderr


def test_plan_that_does_not_fit_the_model_is_refused_before_start(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("zb-v", 2, 3)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), "--layers", "6"])
    assert r.exit_code == 1
    assert "4 layer slices" in r.output and "multiple of 4" in r.output


def test_plan_of_another_version_is_refused(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    d = json.loads(plan_path.read_text())
    d["version"] = 2
    plan_path.write_text(json.dumps(d))
    r = CliRunner().invoke(app, ["run", str(plan_path)])
    assert r.exit_code == 1 and "version" in r.output


def test_invalid_plan_is_refused(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    d = json.loads(plan_path.read_text())
    d["actions"][1] = d["actions"][1][::-1]  # rank 1 backward before forward
    plan_path.write_text(json.dumps(d))
    r = CliRunner().invoke(app, ["run", str(plan_path)])
    assert r.exit_code == 1 and "error:" in r.output


def test_nccl_without_gpus_is_refused(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), "--backend", "nccl"])
    assert r.exit_code == 1 and "use --backend gloo" in r.output
    assert "running" not in r.output  # refused before the banner: one error line


def test_unknown_backend_is_refused_in_one_line(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), "--backend", "mpi"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "error: unknown backend 'mpi': use gloo (CPU) or nccl (GPU)"]


@pytest.mark.parametrize("flag,name", [("--trace", "t.txt"), ("--gantt", "g.pdf")])
def test_output_with_a_wrong_suffix_is_refused_before_start(tmp_path: Path, flag: str,
                                                           name: str) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), flag, str(tmp_path / name)])
    assert r.exit_code == 1 and "error:" in r.output and flag in r.output
    assert "running" not in r.output and "Traceback" not in r.output
