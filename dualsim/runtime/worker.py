"""One process of a run: join the process group, run the plans, hand the reports to process 0.

``run_process`` is what a locally spawned child runs (after :mod:`supervisor` set it up);
``run_torchrun`` is the same for a process started by torchrun, where torchrun supervises and
the collective timeout plays the watchdog's part.

Devices: on the CPU every process uses gloo. With ``--device cuda`` process g uses GPU
g mod (GPUs on its node) (from LOCAL_RANK under torchrun): with at least one GPU per process
the backend is NCCL; with fewer, processes share GPUs round-robin and talk over gloo through
host memory (``staging``), so a one-GPU machine can run a 2 x 2 job.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from dualsim.errors import RuntimeRunError
from dualsim.ir import Schedule
from dualsim.runtime.engines import run_rank
from dualsim.runtime.interpreter import Placement
from dualsim.runtime.options import RunOptions
from dualsim.runtime.p2p import ProcessGroups
from dualsim.runtime.progress import CONNECTING, DONE, LastPosition, SharedProgress
from dualsim.runtime.records import RankReport
from dualsim.validate import Plan


def placement(options: RunOptions, local_rank: int) -> Placement:
    """This process's device, and whether its GPU tensors go through the host (gloo)."""
    if options.device != "cuda":
        return Placement(torch.device("cpu"), options.backend)
    device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    torch.cuda.set_device(device)
    return Placement(device, options.backend, staging=options.backend != "nccl")


def _gather(report: RankReport, size: int) -> list[RankReport] | None:
    root = dist.get_rank() == 0
    out: list[Any] = [None] * size if root else []
    dist.gather_object(report, out if root else None, dst=0)
    return out if root else None


def run_process(process: int, size: int, port: int, plans: list[Plan],
                options: RunOptions, status: Any, result_dir: str) -> None:
    """A locally spawned process: every plan in turn, reports saved by process 0."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    schedules = list(plans)
    where = placement(options, process)
    SharedProgress(status, process).update(0, -1, CONNECTING)
    dist.init_process_group(where.backend, rank=process, world_size=size,
                            timeout=timedelta(seconds=options.timeout + 30))
    groups = ProcessGroups(options.world(schedules[0].ranks), where.device,
                           nccl=where.backend == "nccl",
                           timeout=timedelta(seconds=options.timeout + 30))
    for k, plan in enumerate(schedules):
        report = run_rank(plan, process, options, where, groups,
                          SharedProgress(status, process, k))
        gathered = _gather(report, size)
        if gathered is not None:
            torch.save(gathered, Path(result_dir) / f"plan{k}.pt")
    SharedProgress(status, process, len(schedules) - 1).update(options.steps, 0, DONE)
    dist.barrier()
    del groups
    dist.destroy_process_group()


def under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def run_torchrun(plan: Schedule, options: RunOptions) -> list[RankReport] | None:
    """Run as one process of a torchrun job; process 0 gets every report, the others None."""
    world = options.world(plan.ranks)
    size = int(os.environ["WORLD_SIZE"])
    if size != world.size:
        raise RuntimeRunError(
            f"the plan needs {world.size} processes ({plan.ranks} ranks x --ep {world.ep}) but "
            f"torchrun started {size}: use --nproc-per-node/--nnodes for {world.size} processes")
    where = placement(options, int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(where.backend, timeout=timedelta(seconds=options.timeout))
    process, progress = dist.get_rank(), LastPosition()
    try:
        groups = ProcessGroups(world, where.device, nccl=where.backend == "nccl",
                               timeout=timedelta(seconds=options.timeout))
        return _gather(run_rank(plan, process, options, where, groups, progress), size)
    except Exception as e:  # a peer died or the collective timed out: say where we were
        actions, i = plan.actions[world.rank_of(process)], progress.index
        what = f"action {i} ({actions[i]})" if 0 <= i < len(actions) else \
            ("the start-of-step barrier" if i < 0 else "the end of the step")
        raise RuntimeRunError(f"{world.describe(process)} stopped on {what} of step "
                              f"{progress.step}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        dist.destroy_process_group()

