"""Local runs: spawn one process per rank, watch them, stop them all on the first failure.

Each child publishes where it is (:mod:`dualsim.runtime.progress`) from its first instant: the
child's entry point lives here, in a module that does not import torch, and reports "starting"
before it imports torch and unpacks the plans. Its stdout and stderr go to a log file in the
run's temporary folder, so torch's and c10d's own warnings never reach the user's terminal.
The parent's watchdog ends the run when

- a process exits non-zero (killed, crashed): the message names the one that failed first and
  where it was (processes that only failed because a peer vanished are not blamed);
- a process is stopped (SIGSTOP, Ctrl-Z of that process alone: state ``T`` in /proc) for
  ``timeout`` seconds: it is named first;
- nothing moves on any process for ``timeout`` seconds (a hang): stopped processes are named
  first, then those computing rather than waiting (receive, all-to-all, barrier, gradient
  exchange). While starting up (importing torch, meeting the peers) a process whose CPU time
  grows counts as moving, so a slow start on a loaded machine is not a hang; the start-up has
  the same ``timeout`` as the rest.

On any failure every process is killed and reaped, then the temporary folder is removed; each
child also asks the kernel to kill it if the parent dies (Linux), so nothing is left behind.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from dualsim.errors import RuntimeRunError
from dualsim.ir import Schedule
from dualsim.runtime.progress import (CONNECTING, DONE, FIELDS, PIECES, STARTING, SYNCING,
                                      WAITING, SharedProgress, World)

TICK_S = 0.05


# ---- the child ----------------------------------------------------------------------------
def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_main(process: int, world: int, port: int, payload: bytes, status: Any,
               result_dir: str) -> None:
    """A spawned process: report, silence, import torch, run (see ``worker.run_process``)."""
    _die_with_parent()
    SharedProgress(status, process).update(0, -1, STARTING)
    log = os.open(Path(result_dir, f"rank{process}.log"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        from dualsim.runtime.worker import run_process

        plans, options = pickle.loads(payload)
        run_process(process, world, port, plans, options, status, result_dir)
    except BaseException:  # noqa: BLE001 - reported to the parent, then a non-zero exit
        Path(result_dir, f"rank{process}.err").write_text(
            f"{time.time()}\n{traceback.format_exc()}")
        os._exit(1)
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the parent ---------------------------------------------------------------------------
def launch_local(plans: Sequence[Schedule], options: Any,
                 on_start: Callable[[list[int]], None] | None = None) -> list[Any]:
    """Spawn ranks x ``options.ep`` processes running every plan in turn; one report list
    (one per process) per plan. ``on_start(pids)`` is called once the processes exist (tests
    check they are gone later).
    """
    world: World = options.world(plans[0].ranks)
    if any(p.ranks != world.ranks for p in plans):
        raise RuntimeRunError("plans launched together must have the same number of ranks")
    ctx = mp.get_context("spawn")
    status = ctx.Array("d", [0.0] * (world.size * FIELDS), lock=False)
    payload = pickle.dumps((list(plans), options))  # validated Plans, not re-parsed dicts
    with tempfile.TemporaryDirectory(prefix="dualsim-run-", ignore_cleanup_errors=True) as tmp:
        port = _free_port()
        procs = [ctx.Process(target=child_main, name=f"dualsim-rank{g}",
                             args=(g, world.size, port, payload, status, tmp))
                 for g in range(world.size)]
        try:
            for p in procs:
                p.start()
            if on_start is not None:
                on_start([p.pid for p in procs if p.pid is not None])
            Watchdog(procs, status, plans, world, options.timeout, tmp).watch()
        finally:
            _stop(procs)
        import torch  # the reports hold tensors

        return [torch.load(Path(tmp) / f"plan{k}.pt", weights_only=False)
                for k in range(len(plans))]


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.pid is not None and p.exitcode is None:
            p.kill()
    for p in procs:
        if p.pid is not None:
            p.join(timeout=10)


def proc_stat(pid: int | None) -> tuple[str, int]:
    """(state letter, CPU ticks) of a process from /proc ("?" where unknown)."""
    if pid is None:
        return "?", 0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?", 0
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[11]) + int(rest[12])


class Watchdog:
    """Polls the children and the shared status; raises RuntimeRunError on a failure."""

    def __init__(self, procs: list[Any], status: Any, plans: Sequence[Schedule], world: World,
                 timeout: float, result_dir: str) -> None:
        self.procs, self.status, self.plans, self.world = procs, status, plans, world
        self.timeout, self.result_dir = timeout, result_dir

    def snapshot(self) -> list[list[float]]:
        return [list(self.status[g * FIELDS:(g + 1) * FIELDS]) for g in range(len(self.procs))]

    def watch(self) -> None:
        """Return when every process exited 0; raise on a death, a stop or a hang."""
        last_move = time.monotonic()
        last_snap = self.snapshot()
        cpu = [0] * len(self.procs)
        stopped_since: dict[int, float] = {}
        while True:
            codes = [p.exitcode for p in self.procs]
            if all(c == 0 for c in codes):
                return
            if any(c not in (None, 0) for c in codes):
                time.sleep(0.2)  # let processes that fail because of it write their reports
                raise self.death_error()
            now = time.monotonic()
            snap = self.snapshot()
            if snap != last_snap:
                last_snap, last_move = snap, now
            for g, p in enumerate(self.procs):
                state, ticks = proc_stat(p.pid)
                if state in ("T", "t"):
                    stopped_since.setdefault(g, now)
                else:
                    stopped_since.pop(g, None)
                    starting = int(snap[g][3]) in (0, STARTING, CONNECTING)
                    if starting and ticks > cpu[g]:  # a slow start-up still moves
                        last_move = now
                    cpu[g] = ticks
            long_stopped = [g for g, t in sorted(stopped_since.items()) if now - t > self.timeout]
            if long_stopped or now - last_move > self.timeout:
                raise self.hang_error(snap, sorted(stopped_since))
            time.sleep(TICK_S)

    # ---- messages -------------------------------------------------------------------------
    def where(self, g: int, s: list[float]) -> str:
        plan_i, step, index, state = int(s[0]), int(s[1]), int(s[2]), int(s[3])
        if s[4] == 0 or state == STARTING:
            return "while starting up (before its first step)"
        if state == CONNECTING:
            return "while connecting to the other processes (before its first step)"
        actions = self.plans[plan_i].actions[self.world.rank_of(g)]
        if index < 0:
            what = "the start-of-step barrier"
        elif index >= len(actions):
            what = "the end of the step (gradient sums, optimizer)"
        else:
            what = f"action {index} ({actions[index]})"
            code = int(s[5])
            if code:
                what += f", in {PIECES[code - 1]}"
        return f"on {what} of step {step}"

    def death_error(self) -> RuntimeRunError:
        errs: dict[int, tuple[float, str]] = {}
        for g in range(len(self.procs)):
            f = Path(self.result_dir, f"rank{g}.err")
            if f.exists():
                when, _, text = f.read_text().partition("\n")
                errs[g] = (float(when), text.strip().splitlines()[-1] if text.strip() else "")
        dead = [g for g, p in enumerate(self.procs) if p.exitcode not in (None, 0)]
        silent = [g for g in dead if g not in errs]  # killed, or exited without a report
        g = silent[0] if silent else min(errs, key=lambda r: errs[r][0])
        where = self.where(g, self.snapshot()[g])
        code = self.procs[g].exitcode
        if g in errs:
            how = f"failed: {errs[g][1]}"
        elif code is not None and code < 0:
            how = f"died (killed by {signal.Signals(-code).name})"
        else:
            how = f"died (exit code {code})"
        return RuntimeRunError(f"{self.world.describe(g)} {how} {where}; the run was stopped")

    def hang_error(self, snap: list[list[float]], stopped: list[int]) -> RuntimeRunError:
        waiting_states = (WAITING, SYNCING, DONE, CONNECTING)
        busy = [g for g, s in enumerate(snap)
                if g not in stopped and int(s[3]) not in waiting_states]
        waiting = [g for g, s in enumerate(snap)
                   if g not in stopped and int(s[3]) in (WAITING, SYNCING, CONNECTING)]
        d = self.world.describe
        parts = [f"{d(g)} was stopped (SIGSTOP) {self.where(g, snap[g])}" for g in stopped]
        blamed = busy or ([] if stopped else waiting)
        if blamed:
            hung = "; ".join(f"{d(g)} {self.where(g, snap[g])}" for g in blamed)
            parts.append(f"{hung} made no progress" if stopped else f"{hung} hung")
        others = [g for g in waiting if g not in blamed]
        head = "; ".join(parts)
        tail = ""
        if others:
            who = f"{d(others[0])} was" if len(others) == 1 else \
                f"ranks {', '.join(map(str, others))} were"
            tail = f"; {who} waiting for it"
        return RuntimeRunError(f"{head} for {self.timeout:g} s (--timeout){tail}; "
                               "the run was stopped")
