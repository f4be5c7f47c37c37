"""Benchmark: the planner's default search for DeepSeek-V3 on 2048 H800s, and one large step.

Issue #10 targets: at least 1000 configurations evaluated within 60 s on this machine (all
cores), and a DualPipe DeepSeek-V3 step at PP32 with 512 micro-batches (``dualsim simulate
dualpipe --ranks 32 --microbatches 512``) within 10 s.

Not a test: run it by hand, ``python bench/bench_planner.py [--workers N] [--out DIR]``. The
space is the CLI's default one (every family, ranks, EP, micro-batch sizes at the preset's
global batch, precisions, comm SMs). Prints the configurations evaluated (dropped with a
reason, pruned by their throughput bound, simulated), the wall time and configurations per
second, the best configuration and how it compares with the published layout, then the large
step's wall time (generation + hardware-mode simulation), and exits 1 if a target is missed.
Timings are wall-clock: other load on the machine counts against them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from dualsim import planner
from dualsim.cluster.compute import precision_for
from dualsim.cluster.profile import load_profile
from dualsim.workload.model import default_layout, load_model

TARGET_CONFIGS = 1000
TARGET_SECONDS = 60.0
BIG_STEP = ("dualpipe", 32, 512)  # family, ranks, micro-batches
BIG_STEP_SECONDS = 10.0


def big_step() -> bool:
    """Time one hardware-mode step of BIG_STEP (DeepSeek-V3 on h800); whether it met its target."""
    from dualsim.generators import generate
    from dualsim.sim.hardware_mode import simulate_hardware

    name, ranks, mbs = BIG_STEP
    t0 = time.perf_counter()
    res = simulate_hardware(generate(name, ranks, mbs), "h800", "deepseek-v3")
    wall = time.perf_counter() - t0
    ok = wall <= BIG_STEP_SECONDS
    print(f"{name} R={ranks} M={mbs} step: {wall:.1f} s wall ({len(res.timeline)} pieces, step "
          f"{res.extra['step_time_s']:.3f} s, {res.extra['tokens_per_s_per_gpu']:.0f} "
          f"tokens/s/GPU); target ({BIG_STEP_SECONDS:.0f} s): {'met' if ok else 'MISSED'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=None, help="default: all cores")
    ap.add_argument("--out", default=None, help="also write plan.csv and the Pareto chart here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    prof, mdl = load_profile("h800"), load_model("deepseek-v3")
    layout = default_layout(mdl)
    axes = planner.default_axes(mdl, prof)
    setting = planner.Setting("h800", "deepseek-v3", 2048, prof.hbm_bytes / 1e9,
                              global_batch=layout["global_batch"])
    cands = planner.candidates(axes["schedules"], axes["ranks"], None, axes["comm_sms"],
                               eps=axes["eps"], microbatch_tokens=axes["microbatch_tokens"],
                               precisions=axes["precisions"])
    ref = planner.reference(layout, prof.comm_sms, precision_for(mdl, prof)[0].gemm_dtype)
    result = planner.sweep(cands, setting, workers=args.workers, reference=ref)
    wall = time.perf_counter() - t0
    print(f"workers: {args.workers or os.cpu_count()}  configurations: {result.evaluated} "
          f"(dropped {len(result.dropped)}, pruned {len(result.pruned)}, simulated "
          f"{result.simulated})")
    print(f"wall time: {wall:.1f} s  ({result.evaluated / wall:.1f} configurations/s)")
    if result.best is not None:
        b = result.best
        print(f"best: {b.candidate.describe()}  {b.figures['tokens_per_s_per_gpu']:.0f} "
              f"tokens/s/GPU, {b.figures['peak_memory_gb']:.1f} GB")
    ratio = result.best_vs_reference()
    if ratio is not None:
        print(f"published layout: rank {result.rank_of(result.reference)}, best is "
              f"{ratio - 1:+.1%} over it")
    print("dropped:", result.dropped_by_kind())
    if args.out:
        planner.write_outputs(result, args.out)
    ok = result.evaluated >= TARGET_CONFIGS and wall <= TARGET_SECONDS
    print(f"target ({TARGET_CONFIGS}+ configurations in {TARGET_SECONDS:.0f} s): "
          f"{'met' if ok else 'MISSED'}")
    ok = big_step() and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
