"""One ``dualsim run``: check the plan fits, launch, verify, measure, and build the result.

Everything that can be refused is refused here, before any process starts: a plan whose rank
count differs from the torchrun world, a model that cannot be cut into the plan's layer slices,
a backend the machine lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from dualsim.errors import RuntimeRunError
from dualsim.ir import Schedule
from dualsim.runtime.launcher import RankReport, RunOptions, launch_local, run_torchrun, \
    under_torchrun
from dualsim.runtime.measure import compare_sim, step_time_s, step_timeline
from dualsim.runtime.net import NetConfig
from dualsim.runtime.verify import check_against_reference, passed


@dataclass
class RunOutcome:
    """What ``dualsim run`` prints and writes (None on the non-zero ranks of a torchrun job)."""

    result: dict[str, Any]
    timeline: pd.DataFrame  # the last step, seconds
    ok: bool


def model_config(plan: Schedule, layers: int | None, **sizes: Any) -> NetConfig:
    """The model for ``plan``: ``layers`` (default one per layer slice) cut evenly."""
    slices = plan.chain_length
    layers = slices if layers is None else layers
    if layers < slices or layers % slices:
        raise RuntimeRunError(
            f"the plan cuts the model into {slices} layer slices (stages per chain) but the "
            f"model has {layers} layers: use --layers as a multiple of {slices}")
    try:
        return NetConfig(layers_per_slice=layers // slices, **sizes)
    except ValueError as e:
        raise RuntimeRunError(f"bad model options: {e}") from None


def check_fits(plan: Schedule, options: RunOptions) -> None:
    import torch

    if options.backend not in ("gloo", "nccl"):
        raise RuntimeRunError(f"unknown backend {options.backend!r}: use gloo (CPU) or nccl (GPU)")
    if options.backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeRunError("--backend nccl needs CUDA GPUs and this machine has none: "
                              "use --backend gloo")
    if options.backend == "nccl" and not under_torchrun() and \
            torch.cuda.device_count() < plan.ranks:
        raise RuntimeRunError(f"the plan needs {plan.ranks} GPUs and this machine has "
                              f"{torch.cuda.device_count()}: run it under torchrun on more nodes")
    if options.model.dtype == "bfloat16" and options.backend == "gloo":
        raise RuntimeRunError("bfloat16 is for GPUs (nccl); use --dtype float32 or float64 on gloo")
    if options.steps < 1:
        raise RuntimeRunError("--steps must be at least 1")
    positions = {}
    for s in plan.stages:
        if (s.rank, s.position) in positions:
            raise RuntimeRunError(f"stages {positions[(s.rank, s.position)]} and {s.stage} hold "
                                  f"the same layer slice on rank {s.rank}; the runtime keeps one "
                                  "copy of a slice per rank")
        positions[(s.rank, s.position)] = s.stage


def run_plan(plan: Schedule, options: RunOptions, with_sim: bool = False,
             on_start: Callable[[], None] | None = None) -> RunOutcome | None:
    """Execute ``plan`` (local spawn, or this process's rank under torchrun).

    ``on_start()`` is called once the plan and options were accepted, before any rank starts.
    """
    check_fits(plan, options)
    if on_start is not None:
        on_start()
    if under_torchrun():
        gathered = run_torchrun(plan, options)
        if gathered is None:
            return None
        reports = gathered
    else:
        reports = launch_local([plan], options)[0]
    return summarize(plan, options, reports, with_sim)


def summarize(plan: Schedule, options: RunOptions, reports: list[RankReport],
              with_sim: bool = False) -> RunOutcome:
    result: dict[str, Any] = {
        "schedule": plan.name, "ranks": plan.ranks, "stages": plan.num_stages,
        "microbatches": plan.microbatches, "backend": options.backend,
        "dtype": options.model.dtype, "steps": options.steps,
    }
    result.update(check_against_reference(plan, options, reports))
    result["step_time_s"] = step_time_s(reports)
    ok = passed(result, options.model.dtype)
    result["matches_reference"] = ok
    if with_sim:
        result.update(compare_sim(plan, reports))
    result["model"] = options.model.to_dict()
    return RunOutcome(result, step_timeline(reports, options.steps - 1), ok)

