"""Benchmark: one full DeepSeek-V3 step in hardware mode (16 ranks, 120 micro-batches).

Prints the wall time of each simulation, the SimPy events per second, the pieces simulated and
the headline figures. Not a test: run it by hand, e.g. ``python bench/bench_hardware.py``;
``--profile`` adds a cProfile of the DualPipe run (top 15 functions by own time);
``--chart PATH`` draws the what-if figure of docs/hardware-mode.md (about 70 full-size runs).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import simpy

from dualsim.generators import generate
from dualsim.sim.hardware_mode import simulate_hardware

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


CHART_SCHEDULES = ["dualpipe", "dualpipev", "zb-v", "1f1b", "1f1b-overlap", "interleaved-overlap"]


def chart(path: str) -> None:
    """Three panels: step breakdown per schedule, link bandwidth sweep, comm-SM sweeps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = CHART_SCHEDULES
    scheds = {n: generate(n, 16, 120) for n in names}
    fig, ax = plt.subplots(1, 3, figsize=(18, 5.2))
    parts = (("compute on all SMs", "tab:blue"), ("SM sharing slowdown", "#3B1F5C"),
             ("exposed communication", "tab:red"), ("bubble, imbalance, DP sync", "lightgray"))
    for i, n in enumerate(names):
        res = simulate_hardware(scheds[n])
        x = res.extra
        work, busy, exposed = res.ideal, x["compute_stream_s"], x["comm_exposed_s"]
        values = (work, busy - work, exposed, res.makespan - busy - exposed)
        bottom = 0.0
        for (label, color), v in zip(parts, values):
            ax[0].bar(i, v, bottom=bottom, color=color, label=label if i == 0 else None)
            bottom += v
        print(f"{n}: step {res.makespan:.2f} s = compute {work:.2f} + SM sharing "
              f"{busy - work:.2f} + exposed comm {exposed:.2f} + rest "
              f"{res.makespan - busy - exposed:.2f}")
    ax[0].set_xticks(range(len(names)), names, rotation=20)
    ax[0].set_ylabel("step time (s)")
    ax[0].set_title("deepseek-v3 on h800, defaults")
    ax[0].legend(loc="lower right", fontsize=7)
    scales = [0.5, 1, 2, 4, 8, 1000]
    for n in names:
        t = [simulate_hardware(scheds[n], ib_gbps=50 * k, nvlink_gbps=160 * k).makespan
             for k in scales]
        print(n, "link sweep", [round(v, 2) for v in t])
        ax[1].plot(range(len(scales)), t, marker="o", label=n)
    ax[1].set_xticks(range(len(scales)), ["0.5x", "1x", "2x", "4x", "8x", "free"])
    ax[1].set_xlabel("IB and NVLink bandwidth (1x = 50 / 160 GB/s)")
    ax[1].set_ylabel("step time (s)")
    ax[1].set_title("faster links (the comm SMs still bound the all-to-all)")
    ax[1].legend(fontsize=8)
    sms = [8, 12, 16, 20, 24, 32, 40, 48, 64, 96]
    for ib in (25, 50, 100, 200):
        t = [simulate_hardware(scheds["dualpipe"], comm_sms=k, ib_gbps=ib).makespan for k in sms]
        best = sms[min(range(len(sms)), key=t.__getitem__)]
        print(f"dualpipe comm-SM sweep at IB {ib} GB/s (best {best})",
              dict(zip(sms, [round(v, 2) for v in t])))
        ax[2].plot(sms, t, marker="o", label=f"IB {ib} GB/s (best {best} SMs)")
    ax[2].axvline(20, color="gray", ls=":", label="DeepSeek's 20 SMs")
    ax[2].set_xlabel("all-to-all SMs (--comm-sms, of 132)")
    ax[2].set_ylabel("DualPipe step time (s)")
    ax[2].set_title("faster IB needs more all-to-all SMs")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("chart written to", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="store_true", help="cProfile the DualPipe run")
    ap.add_argument("--schedules", default=",".join(CHART_SCHEDULES))
    ap.add_argument("--chart", metavar="PATH", help="write the what-if chart (PNG)")
    args = ap.parse_args()
    if args.chart:
        chart(args.chart)
        return
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
