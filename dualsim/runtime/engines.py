"""Which engine runs a plan on one process: dualsim's interpreter, or torch.distributed.pipelining.

The only place that knows both engines; the launcher and the torch baseline depend on the
shared types (:mod:`options`, :mod:`records`) and not on each other.
"""

from __future__ import annotations

from dualsim.ir import Schedule
from dualsim.runtime import profiling
from dualsim.runtime.interpreter import Placement, RankRunner
from dualsim.runtime.options import RunOptions
from dualsim.runtime.p2p import ProcessGroups
from dualsim.runtime.progress import Progress
from dualsim.runtime.records import RankReport
from dualsim.runtime.torch_baseline import run_rank_torch


def run_rank(plan: Schedule, process: int, options: RunOptions, where: Placement,
             groups: ProcessGroups, progress: Progress | None = None) -> RankReport:
    """Run ``options.steps`` steps of ``plan`` as ``process`` (the process group is up)."""
    world = options.world(plan.ranks)
    if options.engine == "torch":
        return run_rank_torch(plan, process, options, where.device, progress, groups)
    runner = RankRunner(plan, process, world, options.model, where, groups, progress,
                        options.fault, options.direction_groups)
    steps = [runner.step(s) for s in range(options.steps - 1)]
    last = options.steps - 1
    with profiling.recording(options.profile_trace, where.device, last) as trace:
        steps.append(runner.step(last))
    report = RankReport(world.rank_of(process), steps, runner.named_tensors(grads=True),
                        runner.named_tensors(grads=False), process, world.ep_index(process))
    if trace:
        report.extra["trace"] = trace[0]
    return report
