"""Benchmark (not a test): generate + abstract-simulate ZB-V and DualPipeV at R=32, M=512.

Issue #2 asks for under 0.5 s each on the project's machine. Prints, per family, the median of
a few runs: seconds for generate + simulate, the split between them, actions per second (of
generate + simulate; an FB counts once) and the ratio to the 0.5 s target; then the time to
build the Timeline DataFrame, which ``simulate`` defers to the first access of
``result.timeline``. The machine is shared, so the fastest run and the CPU time (less sensitive
to other processes) are printed too. Run: ``python bench/bench_core.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from dualsim.generators import generate
from dualsim.sim.abstract import simulate

TARGET_S = 0.5
RANKS, MICROBATCHES = 32, 512
FAMILIES = ("zb-v", "dualpipev")


def time_once(family: str) -> tuple[float, float, float, int, float]:
    """(generate, simulate, timeline wall seconds, compute actions, generate + simulate CPU
    seconds) of one run."""
    c0, t0 = time.process_time(), time.perf_counter()
    schedule = generate(family, RANKS, MICROBATCHES)
    t1 = time.perf_counter()
    result = simulate(schedule, {"F": 1, "I": 1, "W": 1})
    t2, c2 = time.perf_counter(), time.process_time()
    rows = len(result.timeline)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, rows, c2 - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per family (median taken)")
    args = parser.parse_args()
    print(f"R={RANKS} M={MICROBATCHES}, median of {args.repeat} runs, target {TARGET_S} s")
    for family in FAMILIES:
        runs = [time_once(family) for _ in range(args.repeat)]
        gen = statistics.median(r[0] for r in runs)
        sim = statistics.median(r[1] for r in runs)
        total = statistics.median(r[0] + r[1] for r in runs)
        fastest = min(r[0] + r[1] for r in runs)
        timeline = statistics.median(r[2] for r in runs)
        actions = runs[0][3]
        cpu = statistics.median(r[4] for r in runs)
        print(f"{family:10s} {total:.3f} s (generate {gen:.3f}, simulate {sim:.3f}; fastest "
              f"{fastest:.3f}; CPU {cpu:.3f})  {actions} actions  "
              f"{actions / total:,.0f} actions/s  {total / TARGET_S:.2f}x of target;  "
              f"timeline on access {timeline:.3f} s")


if __name__ == "__main__":
    main()
