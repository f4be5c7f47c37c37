"""A process that dies, hangs or is stopped ends the run with a message naming it; nothing is left.

Faults are injected with a :class:`Fault` option (process, action index, kill|hang|mark, and
optionally the all-to-all it fires at); SIGSTOP and SIGKILL also come from outside, as a user
or the OOM killer would send them. Bad sizes and options are refused before any process starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
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
from dualsim.runtime.options import Fault, RunOptions  # noqa: E402
from dualsim.runtime.supervisor import launch_local  # noqa: E402

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


def _fail(options: RunOptions, on_start=None, family: str = "1f1b", m: int = 4
          ) -> tuple[str, list[int], float]:
    plan = lower(generate(family, 2, m))
    pids: list[int] = []

    def started(p: list[int]) -> None:
        pids.extend(p)
        if on_start is not None:
            on_start(p)

    t0 = time.monotonic()
    with pytest.raises(RuntimeRunError) as err:
        launch_local([plan], options, on_start=started)
    return str(err.value), pids, time.monotonic() - t0


def test_killed_rank_is_named_with_its_action() -> None:
    plan = lower(generate("1f1b", 2, 4))
    index = 4
    message, pids, _ = _fail(RunOptions(steps=1, timeout=30, fault=Fault(1, index, "kill")))
    assert message.startswith("rank 1 died (killed by SIGKILL)"), message
    assert f"action {index} ({plan.actions[1][index]}) of step 0" in message
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


def test_hung_rank_is_named_and_stopped() -> None:
    plan = lower(generate("1f1b", 2, 4))
    index = 3
    message, pids, _ = _fail(RunOptions(steps=1, timeout=3, fault=Fault(1, index, "hang")))
    assert message.startswith(f"rank 1 on action {index} ({plan.actions[1][index]}) of step 0 "
                              "hung for 3 s (--timeout)"), message
    assert "rank 0 was waiting for it" in message
    assert not any(_alive(p) for p in pids)


def test_rank_killed_from_outside_mid_run_ends_the_run(tmp_path: Path) -> None:
    # rank 1 stops at its action 3 and writes the mark; then the test kills rank 0 (blocked on
    # a receive from rank 1) with SIGKILL, as a user or the OOM killer would
    mark = tmp_path / "mark"
    pids: list[int] = []

    def kill_rank0_mid_run() -> None:
        while not mark.exists():
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)

    def on_start(started: list[int]) -> None:
        pids.extend(started)
        threading.Thread(target=kill_rank0_mid_run, daemon=True).start()

    message, _, _ = _fail(RunOptions(steps=1, timeout=60,
                                     fault=Fault(1, 3, "hang", mark=str(mark))), on_start)
    assert message.startswith("rank 0 died (killed by SIGKILL) on action"), message
    assert "of step 0" in message
    assert not any(_alive(p) for p in pids)


def test_rank_stopped_mid_run_is_named_first(tmp_path: Path, capfd: pytest.CaptureFixture
                                             ) -> None:
    # rank 1 writes the mark at its action 2 and goes on; the test then stops it (SIGSTOP)
    mark = tmp_path / "mark"

    def stop_rank1(pids: list[int]) -> None:
        def run() -> None:
            while not mark.exists():
                time.sleep(0.01)
            os.kill(pids[1], signal.SIGSTOP)
        threading.Thread(target=run, daemon=True).start()

    timeout = 4.0
    message, pids, _ = _fail(RunOptions(steps=2, timeout=timeout,
                                        fault=Fault(1, 2, "mark", mark=str(mark))),
                             stop_rank1, m=8)
    assert message.startswith("rank 1 was stopped (SIGSTOP) on "), message
    assert f"for {timeout:g} s (--timeout)" in message and "rank 0 was waiting for it" in message
    assert not any(_alive(p) for p in pids)
    assert capfd.readouterr().err == ""  # no torch/c10d warning lines from the processes


def test_rank_stopped_while_starting_up_is_named_first(capfd: pytest.CaptureFixture) -> None:
    def stop_rank1(pids: list[int]) -> None:
        os.kill(pids[1], signal.SIGSTOP)

    timeout = 4.0
    message, pids, _ = _fail(RunOptions(steps=1, timeout=timeout), stop_rank1)
    assert message.startswith("rank 1 was stopped (SIGSTOP) while starting up"), message
    assert not any(_alive(p) for p in pids)
    assert capfd.readouterr().err == ""


def test_expert_parallel_rank_killed_inside_an_all_to_all_is_named() -> None:
    # process 1 = pipeline rank 0, ep 1: killed as its first F posts its dispatch; its group
    # peer (process 0) is left inside that all-to-all
    opts = RunOptions(steps=1, timeout=30, ep=2, fault=Fault(1, 0, "kill", piece="dispatch(F)"))
    message, pids, _ = _fail(opts)
    assert message.startswith("rank 1 (pipeline rank 0, ep 1) died (killed by SIGKILL) on "
                              "action 0 (0F0) of step 0"), message
    assert len(pids) == 4 and not any(_alive(p) for p in pids)


def test_expert_parallel_rank_hung_inside_an_all_to_all_is_named() -> None:
    plan = lower(generate("1f1b", 2, 4))
    # process 2 = pipeline rank 1, ep 0, hangs posting the combine of its first F
    index = next(i for i, a in enumerate(plan.actions[1]) if a.op.value == "F")
    opts = RunOptions(steps=1, timeout=3, ep=2,
                      fault=Fault(2, index, "hang", piece="combine(F)"))
    message, pids, _ = _fail(opts)
    assert message.startswith(f"rank 2 (pipeline rank 1, ep 0) on action {index} "
                              f"({plan.actions[1][index]}) of step 0 hung for 3 s"), message
    # its group peer waits inside the all-to-all
    assert "waiting for it" in message
    assert not any(_alive(p) for p in pids)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def test_cli_reports_a_rank_killed_from_outside_in_one_line(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("zb-h1", 2, 2)), str(plan_path))
    proc = subprocess.Popen([sys.executable, "-m", "dualsim.cli", "run", str(plan_path),
                             "--timeout", "60", "--steps", "50", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ranks: list[int] = []
    deadline = time.monotonic() + 120
    while len(ranks) < 2 and time.monotonic() < deadline and proc.poll() is None:
        ranks = [c for c in _children(proc.pid)
                 if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        time.sleep(0.1)
    assert len(ranks) == 2
    time.sleep(1.0)
    os.kill(sorted(ranks)[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 1 died (killed by SIGKILL)")
    assert "Traceback" not in err and "c10d" not in err


def test_plan_that_does_not_fit_the_model_is_refused_before_start(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("zb-v", 2, 3)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), "--layers", "6"])
    assert r.exit_code == 1
    assert "4 layer slices" in r.output and "multiple of 4" in r.output


def test_experts_that_do_not_split_over_ep_are_refused(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), "--ep", "3"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "error: 4 experts cannot be split evenly over --ep 3 processes: use --experts as a "
        "multiple of --ep"]


@pytest.mark.parametrize("flag", ["--layers", "--hidden", "--experts", "--vocab", "--seq",
                                  "--microbatch-size"])
def test_huge_sizes_are_refused_in_one_line_before_any_process(
        tmp_path: Path, flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    # a launch's folder would appear in this test's own temp folder (other jobs' runs on the
    # machine make theirs in the shared one)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    r = CliRunner().invoke(app, ["run", str(plan_path), flag, "1000000000"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the run needs about "), r.output
    assert "GiB of memory" in lines[0] and "make the model smaller" in lines[0]
    assert not list(temp.glob("dualsim-run-*"))  # no launch left its folder


@pytest.mark.parametrize("value", ["inf", "1e308", "nan"])
def test_timeout_that_is_not_a_finite_duration_is_refused(tmp_path: Path, value: str) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), "--timeout", value])
    assert r.exit_code in (1, 2)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "--timeout" in lines[0] and "Traceback" not in r.output


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


@pytest.mark.parametrize("flags", [["--backend", "nccl"], ["--device", "cuda"]])
def test_gpu_options_without_gpus_are_refused(tmp_path: Path, flags: list[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), *flags])
    assert r.exit_code == 1 and "use --device cpu" in r.output
    assert "running" not in r.output  # refused before the banner: one error line


def test_unknown_backend_is_refused_in_one_line(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), "--backend", "mpi"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "error: unknown backend 'mpi': use gloo (CPU) or nccl (GPU)"]


@pytest.mark.parametrize("flag,name", [("--trace", "t.txt"), ("--gantt", "g.pdf"),
                                       ("--profile-trace", "p.csv")])
def test_output_with_a_wrong_suffix_is_refused_before_start(tmp_path: Path, flag: str,
                                                           name: str) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), flag, str(tmp_path / name)])
    assert r.exit_code == 1 and "error:" in r.output and flag in r.output
    assert "running" not in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("flag,name", [("--trace", "t.json"), ("--gantt", "g.png"),
                                       ("--profile-trace", "p.json")])
def test_unwritable_output_is_refused_before_start(tmp_path: Path, flag: str, name: str) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    for bad in (plan_path / name, Path("/proc/dualsim-test") / name):  # under a file; in /proc
        r = CliRunner().invoke(app, ["run", str(plan_path), flag, str(bad)])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), r.output
        assert "running" not in r.output


def test_calibration_without_compare_sim_is_refused(tmp_path: Path) -> None:
    plan_path = tmp_path / "p.json"
    write_plan(lower(generate("1f1b", 2, 2)), str(plan_path))
    r = CliRunner().invoke(app, ["run", str(plan_path), "--calibration", str(plan_path)])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "error: --calibration is read by --compare-sim: add --compare-sim"]
    r = CliRunner().invoke(app, ["run", str(plan_path), "--compare-sim", "--calibration",
                                 str(plan_path)])  # a plan file is no calibration
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "neither the --json output" in r.output
