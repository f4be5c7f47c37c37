"""Benchmark: the planner's default sweep for DeepSeek-V3 on 2048 H800s (issue #5 target:
at least 100 configurations within 2 minutes on this machine, using all cores).

Not a test: run it by hand, ``python bench/bench_planner.py [--workers N] [--out DIR]``. Prints
the number of configurations evaluated and simulated, the wall time, configurations per second,
the best configuration and the drop reasons, and exits 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from dualsim import planner

TARGET_CONFIGS = 100
TARGET_SECONDS = 120.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=None, help="default: all cores")
    ap.add_argument("--out", default=None, help="also write plan.csv and the Pareto chart here")
    args = ap.parse_args()
    setting = planner.Setting("h800", "deepseek-v3", 2048, 80.0)
    cands = planner.candidates(planner.DEFAULT_SCHEDULES, planner.DEFAULT_RANKS, None,
                               planner.DEFAULT_COMM_SMS)
    t0 = time.perf_counter()
    result = planner.sweep(cands, setting, workers=args.workers)
    wall = time.perf_counter() - t0
    print(f"workers: {args.workers or os.cpu_count()}  configurations: {result.evaluated} "
          f"(simulated {result.simulated}, kept {len(result.ranked)})")
    print(f"wall time: {wall:.1f} s  ({result.evaluated / wall:.2f} configurations/s)")
    if result.best is not None:
        b = result.best
        print(f"best: {b.candidate}  {b.figures['tokens_per_s_per_gpu']:.0f} tokens/s/GPU, "
              f"{b.figures['peak_memory_gb']:.1f} GB")
    print("dropped:", result.dropped_by_kind())
    if args.out:
        planner.write_outputs(result, args.out)
    ok = result.evaluated >= TARGET_CONFIGS and wall <= TARGET_SECONDS
    print(f"target ({TARGET_CONFIGS}+ configurations in {TARGET_SECONDS:.0f} s): "
          f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
