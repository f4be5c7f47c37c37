"""Benchmark (not a test): dualsim's runtime against torch.distributed.pipelining, and I + W vs B.

1. The I/W split: on one stage slice, the median time of a full backward B (plain autograd, as
   the runtime runs it) against an input backward I followed by the deferred weight backward W
   (same forward before each). I + W should cost about what B costs: W only runs the weight
   GEMMs that B would have run.
2. Runtime vs torch: the same plan (1F1B and DualPipeV, 2 ranks, gloo), the same model and
   data, run by dualsim's interpreter and by torch's ``_PipelineScheduleRuntime`` loading the
   plan's CSV export. Prints the median step times and their ratio (dualsim / torch; <= 1.0
   means dualsim is at least as fast).

    python bench/bench_runtime.py [--hidden 128] [--steps 12] [--microbatches 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dualsim.generators import generate
from dualsim.lower import lower
from dualsim.runtime import wgrad
from dualsim.runtime.launcher import RunOptions, launch_local
from dualsim.runtime.measure import measured_steps
from dualsim.runtime.net import NetConfig, StageNet


def bench_split(cfg: NetConfig, repeats: int = 30) -> dict[str, float]:
    """Median seconds of B, I and W on one middle slice."""
    torch.set_num_threads(1)
    s = StageNet(cfg, 1, 3)
    x0 = torch.randn(cfg.microbatch_size, cfg.seq, cfg.hidden, dtype=cfg.torch_dtype)
    grad = torch.randn_like(x0)
    times: dict[str, list[float]] = {"B": [], "I": [], "W": []}
    for k in range(repeats):
        for mode in ("B", "IW"):
            x = x0.clone().requires_grad_()
            st = wgrad.WeightGradStash()
            if mode == "IW":  # recorded: I defers the weight gradients to W
                st.defer = True
                with wgrad.recording(st):
                    y = s(x)
            else:  # the runtime's B: plain autograd
                y = s(x)
            t0 = time.perf_counter()
            torch.autograd.backward(y, grad)
            t1 = time.perf_counter()
            st.flush()
            t2 = time.perf_counter()
            if k:  # the first round warms up
                if mode == "B":
                    times["B"].append(t1 - t0)
                else:
                    times["I"].append(t1 - t0)
                    times["W"].append(t2 - t1)
            s.zero_grad(set_to_none=True)
    return {op: statistics.median(v) for op, v in times.items()}


def step_times(reports: list) -> list[float]:
    return [max(r.steps[k].step_end for r in reports) for k in measured_steps(reports)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--microbatches", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="alternating launches per engine")
    args = ap.parse_args()
    cfg = NetConfig(hidden=args.hidden, expert_hidden=args.hidden, heads=4, seq=args.seq,
                      microbatch_size=4, vocab=128, dtype="float32")

    t = bench_split(cfg)
    print(f"I/W split, one stage slice (hidden {cfg.hidden}, {cfg.microbatch_size}x{cfg.seq} tokens):")
    print(f"  B {t['B'] * 1e3:.3f} ms   I {t['I'] * 1e3:.3f} ms   W {t['W'] * 1e3:.3f} ms   "
          f"(I + W) / B = {(t['I'] + t['W']) / t['B']:.3f}")

    print(f"runtime vs torch.distributed.pipelining, 2 ranks, gloo, M={args.microbatches}, "
          f"median of {args.rounds} x {args.steps - 1} steps:")
    for family in ("1f1b", "dualpipev"):
        plan = lower(generate(family, 2, args.microbatches))
        times: dict[str, list[float]] = {"dualsim": [], "torch": []}
        for _ in range(args.rounds):  # alternate, so that changing load hits both alike
            for engine in times:
                opts = RunOptions(cfg, steps=args.steps, engine=engine)
                times[engine] += step_times(launch_local([plan], opts)[0])
        ours, theirs = (statistics.median(times[e]) for e in ("dualsim", "torch"))
        print(f"  {family:10s} dualsim {ours * 1e3:8.2f} ms   torch {theirs * 1e3:8.2f} ms   "
              f"ratio {ours / theirs:.3f}")


if __name__ == "__main__":
    main()
