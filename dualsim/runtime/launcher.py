"""Starting ranks and stopping them: local spawn with a watchdog, or one rank under torchrun.

Local runs spawn one process per rank. Each rank writes where it is (plan, step, action index,
state) into a shared array; the parent's watchdog reads it and ends the run when

- a rank exits non-zero (killed, crashed): the message names the rank that failed first and
  the action it was on (ranks that only failed because a peer vanished are not blamed);
- nothing moves on any rank for ``timeout`` seconds (a hang): the message names the ranks
  that were computing rather than waiting (receive, barrier, gradient exchange), and their
  actions.

On any failure every rank is killed and reaped before the error is raised, and each child
also asks the kernel to kill it if the parent dies (Linux), so no process is left behind.
Under torchrun the process is one rank; the collective timeout plays the watchdog's part.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from dualsim.errors import RuntimeRunError
from dualsim.ir import Schedule
from dualsim.runtime.interpreter import DONE, SYNCING, WAITING, Fault, Progress, RankRunner, StepRecord
from dualsim.runtime.net import NetConfig

STARTUP_GRACE_S = 120.0  # importing torch and meeting the other ranks, on a loaded machine
_FIELDS = 5  # plan, step, action index, state, last update (monotonic seconds)


@dataclass(frozen=True)
class RunOptions:
    model: NetConfig = field(default_factory=NetConfig)
    steps: int = 3
    backend: str = "gloo"
    timeout: float = 60.0
    engine: str = "dualsim"  # or "torch": torch.distributed.pipelining on the CSV export
    # one process group per direction of each pair of ranks also on gloo (always on NCCL);
    # not a CLI option: the tests use it to run the NCCL transfer path on CPU
    direction_groups: bool = False


@dataclass
class RankReport:
    """Everything one rank measured and ends with, for one plan."""

    rank: int
    steps: list[StepRecord]
    grads: dict[tuple[int, int, str], torch.Tensor]
    weights: dict[tuple[int, int, str], torch.Tensor]


def run_rank(plan: Schedule, rank: int, options: RunOptions, device: torch.device,
             progress: Progress | None = None) -> RankReport:
    """Run ``options.steps`` steps of ``plan`` as ``rank`` (the process group is up)."""
    if options.engine == "torch":
        from dualsim.runtime.torch_baseline import run_rank_torch

        return run_rank_torch(plan, rank, options, device, progress)
    runner = RankRunner(plan, rank, options.model, device, options.backend, progress,
                        Fault.from_env(), options.direction_groups)
    steps = [runner.step(s) for s in range(options.steps)]
    return RankReport(rank, steps, runner.named_tensors(grads=True),
                      runner.named_tensors(grads=False))


def _gather(report: RankReport, world: int) -> list[RankReport] | None:
    out: list[Any] = [None] * world if dist.get_rank() == 0 else []
    dist.gather_object(report, out if dist.get_rank() == 0 else None, dst=0)
    return out if dist.get_rank() == 0 else None


# ---- under torchrun ---------------------------------------------------------------------
def under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def run_torchrun(plan: Schedule, options: RunOptions) -> list[RankReport] | None:
    """Run as one rank of a torchrun job; rank 0 gets every rank's report, the others None."""
    world = int(os.environ["WORLD_SIZE"])
    if world != plan.ranks:
        raise RuntimeRunError(f"the plan needs {plan.ranks} ranks but torchrun started {world}: "
                              f"use --nproc-per-node/--nnodes for {plan.ranks} processes")
    device = torch.device("cpu")
    if options.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group(options.backend, timeout=timedelta(seconds=options.timeout))
    rank, progress = dist.get_rank(), LastPosition()
    try:
        return _gather(run_rank(plan, rank, options, device, progress), world)
    except Exception as e:  # a peer died or the collective timed out: say where we were
        where = _where([plan], rank, [0, progress.step, progress.index, 0, 1.0])
        raise RuntimeRunError(f"rank {rank} stopped {where}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        dist.destroy_process_group()


class LastPosition(Progress):
    """Under torchrun: remembers the last position, for the error message."""

    step, index = 0, -1

    def update(self, step: int, index: int, state: int) -> None:
        self.step, self.index = step, index


# ---- local spawn ------------------------------------------------------------------------
class SharedProgress(Progress):
    def __init__(self, status: Any, rank: int, plan: int = 0) -> None:
        self.status, self.base, self.plan = status, rank * _FIELDS, plan

    def update(self, step: int, index: int, state: int) -> None:
        self.status[self.base:self.base + _FIELDS] = [self.plan, step, index, state,
                                                      time.monotonic()]


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(rank: int, world: int, port: int, plans: list[dict[str, Any]], options: RunOptions,
            status: Any, result_dir: str) -> None:
    _die_with_parent()
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cpu")
    try:
        if options.backend == "nccl":
            device = torch.device("cuda", rank % max(torch.cuda.device_count(), 1))
            torch.cuda.set_device(device)
        dist.init_process_group(options.backend, rank=rank, world_size=world,
                                timeout=timedelta(seconds=options.timeout + 30))
        for k, plan_dict in enumerate(plans):
            report = run_rank(Schedule.from_dict(plan_dict), rank, options, device,
                              SharedProgress(status, rank, k))
            gathered = _gather(report, world)
            if gathered is not None:
                torch.save(gathered, Path(result_dir) / f"plan{k}.pt")
        SharedProgress(status, rank, len(plans) - 1).update(options.steps, 0, DONE)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported to the parent, then a non-zero exit
        Path(result_dir, f"rank{rank}.err").write_text(f"{time.time()}\n{traceback.format_exc()}")
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_local(plans: list[Schedule], options: RunOptions,
                 on_start: Callable[[list[int]], None] | None = None) -> list[list[RankReport]]:
    """Spawn ``ranks`` processes that run every plan in turn; one report list per plan.

    ``on_start(pids)`` is called once the processes exist (tests check they are gone later).
    """
    world = plans[0].ranks
    if any(p.ranks != world for p in plans):
        raise RuntimeRunError("plans launched together must have the same number of ranks")
    ctx = mp.get_context("spawn")
    status = ctx.Array("d", [0.0] * (world * _FIELDS), lock=False)
    with tempfile.TemporaryDirectory(prefix="dualsim-run-") as result_dir:
        port = _free_port()
        procs = [ctx.Process(target=_worker, name=f"dualsim-rank{r}",
                             args=(r, world, port, [p.to_dict() for p in plans], options,
                                   status, result_dir))
                 for r in range(world)]
        for p in procs:
            p.start()
        if on_start is not None:
            on_start([p.pid for p in procs])
        try:
            _watch(procs, status, plans, options, result_dir)
        finally:
            _stop(procs)
        return [torch.load(Path(result_dir) / f"plan{k}.pt", weights_only=False)
                for k in range(len(plans))]


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(timeout=10)


def _watch(procs: list[Any], status: Any, plans: list[Schedule], options: RunOptions,
           result_dir: str) -> None:
    """Return when every rank exited 0; raise RuntimeRunError on a death or a hang."""
    world = len(procs)
    started = time.monotonic()
    while True:
        codes = [p.exitcode for p in procs]
        if all(c == 0 for c in codes):
            return
        if any(c not in (None, 0) for c in codes):
            time.sleep(0.2)  # let ranks that fail because of it write their own reports
            raise _death_error(procs, status, plans, result_dir)
        snap = [status[r * _FIELDS:(r + 1) * _FIELDS] for r in range(world)]
        if any(s[4] == 0 for s in snap):
            quiet, limit = time.monotonic() - started, max(options.timeout, STARTUP_GRACE_S)
        else:
            quiet, limit = time.monotonic() - max(s[4] for s in snap), options.timeout
        if quiet > limit:
            raise _hang_error(snap, plans, limit)
        time.sleep(0.05)


def _where(plans: list[Schedule], rank: int, s: list[float]) -> str:
    plan_i, step, index = int(s[0]), int(s[1]), int(s[2])
    if s[4] == 0:
        return "while starting up (before its first step)"
    actions = plans[plan_i].actions[rank]
    if index < 0:
        what = "the start-of-step barrier"
    elif index >= len(actions):
        what = "the end of the step (gradient sum of copies, optimizer)"
    else:
        what = f"action {index} ({actions[index]})"
    return f"on {what} of step {step}"


def _death_error(procs: list[Any], status: Any, plans: list[Schedule],
                 result_dir: str) -> RuntimeRunError:
    errs: dict[int, tuple[float, str]] = {}
    for r in range(len(procs)):
        f = Path(result_dir, f"rank{r}.err")
        if f.exists():
            when, _, text = f.read_text().partition("\n")
            errs[r] = (float(when), text.strip().splitlines()[-1] if text.strip() else "")
    dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
    silent = [r for r in dead if r not in errs]  # killed or exited without a report
    rank = silent[0] if silent else min(errs, key=lambda r: errs[r][0])
    where = _where(plans, rank, list(status[rank * _FIELDS:(rank + 1) * _FIELDS]))
    code = procs[rank].exitcode
    if rank in errs:
        how = f"failed: {errs[rank][1]}"
    elif code is not None and code < 0:
        how = f"died (killed by {signal.Signals(-code).name})"
    else:
        how = f"died (exit code {code})"
    return RuntimeRunError(f"rank {rank} {how} {where}; the run was stopped")


def _hang_error(snap: list[list[float]], plans: list[Schedule], limit: float) -> RuntimeRunError:
    # a rank in a receive, a barrier or the gradient exchange waits for others: not to blame
    busy = [r for r, s in enumerate(snap) if int(s[3]) not in (WAITING, SYNCING, DONE)]
    waiting = [r for r, s in enumerate(snap) if int(s[3]) in (WAITING, SYNCING)]
    blamed = busy or waiting
    parts = [f"rank {r} {_where(plans, r, snap[r])}" for r in blamed]
    others = [r for r in waiting if r not in blamed]
    tail = ""
    if others:
        who = f"rank {others[0]} was" if len(others) == 1 else \
            f"ranks {', '.join(map(str, others))} were"
        tail = f"; {who} waiting for it"
    return RuntimeRunError(f"no progress for {limit:g} s (--timeout): {'; '.join(parts)} "
                           f"hung{tail}; the run was stopped")
