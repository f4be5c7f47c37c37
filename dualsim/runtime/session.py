"""One ``dualsim run``: check the plan fits, launch, verify, measure, and build the result.

Everything that can be refused is refused here, before any process starts: a model that cannot
be cut into the plan's layer slices or whose experts do not split over ``--ep``, a device or
backend the machine lacks, a model too large for the machine's memory (an estimate:
:mod:`budget`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from dualsim.errors import RuntimeRunError
from dualsim.ir import Schedule
from dualsim.runtime import budget, profiling
from dualsim.runtime.measure import a2a_figures, compare_sim, step_time_s, step_timeline
from dualsim.runtime.net import NetConfig
from dualsim.runtime.options import RunOptions
from dualsim.runtime.records import RankReport
from dualsim.runtime.supervisor import launch_local
from dualsim.runtime.verify import check_against_reference, passed
from dualsim.runtime.worker import run_torchrun, under_torchrun


@dataclass
class RunOutcome:
    """What ``dualsim run`` prints and writes (None on the non-zero ranks of a torchrun job)."""

    result: dict[str, Any]
    timeline: pd.DataFrame  # the last step, seconds
    ok: bool
    trace: dict[str, Any] | None = None  # --profile-trace: every process's profiler trace


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


def choose_backend(device: str, backend: str | None, processes: int) -> tuple[str, str]:
    """(device, backend): gloo on the CPU; on GPUs NCCL with one GPU per process, else gloo
    through host memory (processes share GPUs round-robin). ``backend`` forces one."""
    import torch

    if backend not in (None, "gloo", "nccl"):
        raise RuntimeRunError(f"unknown backend {backend!r}: use gloo (CPU) or nccl (GPU)")
    if device not in ("cpu", "cuda"):
        raise RuntimeRunError(f"unknown device {device!r}: use cpu or cuda")
    if backend == "nccl":
        device = "cuda"
    if device == "cpu":
        return device, "gloo"
    if not torch.cuda.is_available():
        what = "--backend nccl" if backend == "nccl" else "--device cuda"
        raise RuntimeRunError(f"{what} needs CUDA GPUs and this machine has none: use "
                              "--device cpu (gloo)")
    gpus = torch.cuda.device_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", processes)) if under_torchrun() else processes
    if backend == "nccl" and gpus < local:
        raise RuntimeRunError(f"NCCL needs one GPU per process: {local} processes on this node "
                              f"and {gpus} GPUs; drop --backend nccl (processes then share GPUs "
                              "over gloo) or run under torchrun on more nodes")
    return device, backend or ("nccl" if gpus >= local else "gloo")


def check_fits(plan: Schedule, options: RunOptions) -> None:
    """Refuse, in one line, what cannot run: before any process starts."""
    cfg = options.model
    if cfg.dtype == "bfloat16" and options.device != "cuda":
        raise RuntimeRunError("bfloat16 is for GPUs; use --dtype float32 or float64 on the CPU")
    if options.steps < 1:
        raise RuntimeRunError("--steps must be at least 1")
    if options.ep < 1:
        raise RuntimeRunError(f"--ep must be at least 1, got {options.ep}")
    if cfg.experts % options.ep:
        raise RuntimeRunError(f"{cfg.experts} experts cannot be split evenly over --ep "
                              f"{options.ep} processes: use --experts as a multiple of --ep")
    positions = {}
    for s in plan.stages:
        if (s.rank, s.position) in positions:
            raise RuntimeRunError(f"stages {positions[(s.rank, s.position)]} and {s.stage} hold "
                                  f"the same layer slice on rank {s.rank}; the runtime keeps one "
                                  "copy of a slice per rank")
        positions[(s.rank, s.position)] = s.stage
    need = budget.estimate(plan, cfg, options.ep)
    have = budget.available_bytes()
    if have is not None and need.total > have:
        raise RuntimeRunError(
            f"the run needs about {need.total / 2**30:.3g} GiB of memory ({plan.ranks * options.ep}"
            f" processes and the single-process reference: parameters, gradients, optimizer "
            f"state, activations) and this machine has {have / 2**30:.3g} GiB available: make "
            "the model smaller (--layers, --hidden, --experts, --expert-hidden, --vocab, --seq, "
            "--microbatch-size)")


def read_calibration(path: str, plan: Schedule, ep: int) -> tuple[dict[str, float], float, str]:
    """(costs, latency, path) of another run, to predict this one from: its ``dualsim run
    --compare-sim --json`` output (``calibrated_costs_s``), or its ``--profile-trace`` (read
    as ``dualsim calibrate`` reads it; the profiler slows the recorded step down)."""
    from dualsim.io import read_json

    doc = read_json(path, what="calibration",
                    fix="write it again with `dualsim run --compare-sim --json` or --profile-trace")
    if isinstance(doc, dict) and "calibrated_costs_s" in doc:
        shape = (doc.get("ranks"), doc.get("ep", 1))
        costs, latency = doc["calibrated_costs_s"], doc.get("calibrated_latency_s", 0.0)
    else:
        from dualsim.calibrate.runtime_trace import calibrate_costs, is_runtime_trace
        from dualsim.calibrate.trace import trace_from_doc

        trace = trace_from_doc(doc, path) if isinstance(doc, dict) and "traceEvents" in doc \
            else None
        if trace is None or not is_runtime_trace(trace):
            raise RuntimeRunError(f"--calibration {path!r} is neither the --json output of "
                                  "`dualsim run --compare-sim` nor a `dualsim run "
                                  "--profile-trace` trace")
        sc = calibrate_costs(trace)
        shape, costs, latency = (sc.plan.ranks, sc.ep), dict(sc.costs), sc.latency
    if shape != (plan.ranks, ep):
        raise RuntimeRunError(f"--calibration {path!r} comes from {shape[0]} ranks x --ep "
                              f"{shape[1]} and this run has {plan.ranks} x {ep}: calibrate "
                              "from a run of the same shape")
    if not isinstance(costs, dict) or not {"F", "B"} <= set(costs):
        raise RuntimeRunError(f"--calibration {path!r} has no F and B costs")
    for name, v in (*costs.items(), ("latency", latency)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise RuntimeRunError(f"--calibration {path!r}: cost {name} is {v!r}, not a "
                                  "number of seconds >= 0; write it again with `dualsim run "
                                  "--compare-sim --json`")
    return {k: float(v) for k, v in costs.items()}, float(latency), path


def run_plan(plan: Schedule, options: RunOptions, with_sim: bool = False,
             on_start: Callable[[], None] | None = None,
             calibration: tuple[dict[str, float], float, str] | None = None
             ) -> RunOutcome | None:
    """Execute ``plan`` (local spawn, or this process's rank under torchrun).

    ``on_start()`` is called once the plan and options were accepted, before any rank starts;
    ``calibration``: another run's costs for ``with_sim`` (see :func:`read_calibration`).
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
    return summarize(plan, options, reports, with_sim, calibration)


def summarize(plan: Schedule, options: RunOptions, reports: list[RankReport],
              with_sim: bool = False,
              calibration: tuple[dict[str, float], float, str] | None = None) -> RunOutcome:
    result: dict[str, Any] = {
        "schedule": plan.name, "ranks": plan.ranks, "ep": options.ep,
        "processes": plan.ranks * options.ep, "stages": plan.num_stages,
        "microbatches": plan.microbatches, "device": options.device,
        "backend": options.backend, "dtype": options.model.dtype, "steps": options.steps,
    }
    result.update(check_against_reference(plan, options, reports))
    result["step_time_s"] = step_time_s(reports)
    result.update(a2a_figures(reports))
    ok = passed(result, options.model.dtype)
    result["matches_reference"] = ok
    if with_sim:
        result.update(compare_sim(plan, reports, options.model.layers_per_slice, options.ep,
                                  calibration))
    result["model"] = options.model.to_dict()
    trace = None
    if options.profile_trace:
        trace = profiling.merge([r.extra["trace"] for r in reports], plan,
                                options.world(plan.ranks))
    return RunOutcome(result, step_timeline(reports, options.steps - 1), ok, trace)
