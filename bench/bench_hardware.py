"""Benchmark: one full DeepSeek-V3 step in hardware mode (16 ranks, 120 micro-batches).

Prints the wall time of each simulation, the SimPy events per second, the pieces simulated and
the headline figures. Not a test: run it by hand, e.g. ``python bench/bench_hardware.py``;
``--profile`` adds a cProfile of the DualPipe run (top 15 functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import simpy

from dualsim.generators import generate
from dualsim.sim.hardware import simulate_hardware

_steps = 0
_orig_step = simpy.Environment.step


def _counting_step(self: simpy.Environment) -> None:
    global _steps
    _steps += 1
    _orig_step(self)


def run(name: str, ranks: int, mbs: int) -> None:
    global _steps
    sched = generate(name, ranks, mbs)
    _steps = 0
    t0 = time.perf_counter()
    res = simulate_hardware(sched)
    wall = time.perf_counter() - t0
    x = res.extra
    print(f"{name:10s} R={ranks} M={mbs}: {wall:5.2f} s wall, {_steps:>8d} events, "
          f"{_steps / wall:>9,.0f} events/s, {len(res.timeline):>6d} pieces | step "
          f"{x['step_time_s']:.3f} s, {x['tokens_per_s_per_gpu']:.0f} tok/s/GPU, "
          f"MFU {x['mfu']:.1%}, peak {x['peak_memory_gb']:.1f} GB, "
          f"comm hidden {x['comm_hidden_fraction']:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="store_true", help="cProfile the DualPipe run")
    ap.add_argument("--schedules", default="dualpipe,dualpipev,zb-v,1f1b")
    args = ap.parse_args()
    simpy.Environment.step = _counting_step  # type: ignore[method-assign]
    for name in args.schedules.split(","):
        run(name, 16, 120)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        simulate_hardware(generate("dualpipe", 16, 120))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
