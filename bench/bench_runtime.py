"""Benchmark (not a test): dualsim's runtime against torch.distributed.pipelining, and I + W vs B.

1. The I/W split: on one stage slice, the median time of a full backward B (plain autograd, as
   the runtime runs it) against an input backward I followed by the deferred weight backward W
   (same forward before each). I + W should cost about what B costs: W only runs the weight
   GEMMs that B would have run.
2. Runtime vs torch: the same plan (1F1B, ZB-V and DualPipeV, 2 ranks, gloo), the same model
   and data, run by dualsim's interpreter and by torch's ``_PipelineScheduleRuntime`` loading
   the plan's CSV export. Prints the median step times and their ratio (dualsim / torch; <= 1.0
   means dualsim is at least as fast), and the CPU time a step costs summed over the processes
   (every thread; unlike the step time it hardly moves with the machine's load). Also with 2
   expert-parallel processes per rank (4 processes): torch's stage modules then do the
   all-to-alls inside their forward (dualsim.runtime.torch_baseline, as TorchTitan runs PP
   with EP), with no overlap of one micro-batch's all-to-all with another's compute; dualsim
   overlaps them in FB units.
3. Expert parallelism: the same plans (1F1B, DualPipe) with 2 expert-parallel processes per
   rank (4 processes) against 1: the step-time ratio, all-to-all bytes and time per step, and
   the measured hidden fraction of the all-to-all (DualPipe's FB units overlap it; 1F1B's plain
   units cannot). On a machine with fewer cores than processes the processes time-share the
   cores, which the figures include.
4. Cross-run prediction (``dualsim run --compare-sim --calibration OTHER``): abstract costs
   calibrated on one 1F1B launch predict other launches (1F1B with another seed, ZB-H1, GPipe,
   ZB-V, DualPipeV; the same 4-layer model cut per plan, 2 ranks) that the calibration never
   saw; printed: measured and predicted step, the error, and the same launch predicted from
   its own calibration for comparison. docs/runtime.md reports the figures.

    python bench/bench_runtime.py [--hidden 128] [--steps 12] [--microbatches 8] [--rounds 2]
                                  [--only split,torch,ep,cross]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from dualsim.generators import generate
from dualsim.lower import lower
from dualsim.runtime import wgrad
from dualsim.runtime.measure import a2a_figures, compare_sim, measured_steps
from dualsim.runtime.options import RunOptions
from dualsim.runtime.supervisor import launch_local
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
                with s.ops.recording(st):
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


def step_cpu(reports: list) -> list[float]:
    """CPU seconds of each measured step, summed over the processes."""
    return [sum(r.steps[k].cpu_s for r in reports) for k in measured_steps(reports)]


def cross_run(cfg: NetConfig, microbatches: int, steps: int, layers: int = 4) -> None:
    """Section 4: one launch's calibration predicts the others."""
    def launch(family: str, seed: int) -> tuple[object, list, RunOptions]:
        plan = lower(generate(family, 2, microbatches))
        model = replace(cfg, seed=seed, layers_per_slice=layers // plan.chain_length)
        opts = RunOptions(model, steps=steps)
        return plan, launch_local([plan], opts)[0], opts

    plan, reports, opts = launch("1f1b", 0)
    own = compare_sim(plan, reports, opts.model.layers_per_slice)
    source = (own["calibrated_costs_s"], own["calibrated_latency_s"], "1f1b seed 0")
    print(f"cross-run prediction, 2 ranks, M={microbatches}, {layers} layers, costs from one "
          f"1F1B launch (seed 0; its own error {own['prediction_error'] * 100:+.1f}%), "
          f"median of {steps - 1} steps:")
    for family, seed in (("1f1b", 1), ("zb-h1", 0), ("gpipe", 0), ("zb-v", 0),
                         ("dualpipev", 0)):
        plan, reports, opts = launch(family, seed)
        layers_per_slice = opts.model.layers_per_slice
        other = compare_sim(plan, reports, layers_per_slice, calibration=source)
        same = compare_sim(plan, reports, layers_per_slice)
        print(f"  {family:10s} seed {seed}  measured {other['measured_step_time_s'] * 1e3:8.2f} "
              f"ms   predicted {other['predicted_step_time_s'] * 1e3:8.2f} ms   error "
              f"{other['prediction_error'] * 100:+6.1f}%   (from its own calibration "
              f"{same['prediction_error'] * 100:+6.1f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--microbatches", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="alternating launches per engine")
    ap.add_argument("--only", default="split,torch,ep,cross",
                    help="sections to run, comma-separated")
    args = ap.parse_args()
    only = set(args.only.split(","))
    cfg = NetConfig(hidden=args.hidden, expert_hidden=args.hidden, heads=4, seq=args.seq,
                      microbatch_size=4, vocab=128, dtype="float32")

    if "split" in only:
        t = bench_split(cfg)
        print(f"I/W split, one stage slice (hidden {cfg.hidden}, {cfg.microbatch_size}x"
              f"{cfg.seq} tokens):")
        print(f"  B {t['B'] * 1e3:.3f} ms   I {t['I'] * 1e3:.3f} ms   W {t['W'] * 1e3:.3f} ms   "
              f"(I + W) / B = {(t['I'] + t['W']) / t['B']:.3f}")
    if "torch" in only:
        against_torch(cfg, args.microbatches, args.steps, args.rounds)
    if "ep" in only:
        expert_parallel(cfg, args.microbatches, args.steps, args.rounds)
    if "cross" in only:
        cross_run(cfg, args.microbatches, args.steps)


def against_torch(cfg: NetConfig, microbatches: int, steps: int, rounds: int) -> None:
    """Section 2: dualsim's interpreter against torch's runtime on the same plan."""
    print(f"runtime vs torch.distributed.pipelining, 2 ranks, gloo, M={microbatches}, "
          f"median of {rounds} x {steps - 1} steps:")
    for ep in (1, 2):
        for family in ("1f1b", "zb-v", "dualpipev"):
            plan = lower(generate(family, 2, microbatches))
            times: dict[str, list[float]] = {"dualsim": [], "torch": []}
            cpu: dict[str, list[float]] = {"dualsim": [], "torch": []}
            for _ in range(rounds):  # alternate, so that changing load hits both alike
                for engine in times:
                    opts = RunOptions(cfg, steps=steps, engine=engine, ep=ep)
                    reports = launch_local([plan], opts)[0]
                    times[engine] += step_times(reports)
                    cpu[engine] += step_cpu(reports)
            ours, theirs = (statistics.median(times[e]) for e in ("dualsim", "torch"))
            cpu_ours, cpu_theirs = (statistics.median(cpu[e]) for e in ("dualsim", "torch"))
            print(f"  {family:10s} ep {ep}  dualsim {ours * 1e3:8.2f} ms   torch "
                  f"{theirs * 1e3:8.2f} ms   ratio {ours / theirs:.3f}   CPU per step "
                  f"{cpu_ours * 1e3:7.1f} / {cpu_theirs * 1e3:7.1f} ms "
                  f"(ratio {cpu_ours / cpu_theirs:.3f})")


def expert_parallel(cfg: NetConfig, microbatches: int, steps: int, rounds: int) -> None:
    """Section 3: --ep 2 against --ep 1, and the all-to-all figures."""
    print(f"expert parallelism: 2 ranks x ep 2 (4 processes) vs ep 1, gloo, "
          f"M={microbatches}, median of {rounds} x {steps - 1} steps:")
    for family in ("1f1b", "dualpipe"):
        plan = lower(generate(family, 2, microbatches))
        runs: dict[int, list] = {1: [], 2: []}
        for _ in range(rounds):
            for ep in runs:
                runs[ep].append(launch_local([plan], RunOptions(cfg, steps=steps, ep=ep))[0])
        t1, t2 = (statistics.median(t for reps in runs[ep] for t in step_times(reps))
                  for ep in (1, 2))
        figs = [a2a_figures(reps) for reps in runs[2]]
        hidden = statistics.median(f["a2a_hidden_fraction"] for f in figs)
        a2a_ms = statistics.median(f["a2a_time_s"] for f in figs) * 1e3
        mb = statistics.median(f["a2a_bytes_per_step"] for f in figs) / 1e6
        print(f"  {family:10s} ep 2 {t2 * 1e3:8.2f} ms   ep 1 {t1 * 1e3:8.2f} ms   "
              f"ratio {t2 / t1:.3f}   all-to-all {mb:.2f} MB, {a2a_ms:.2f} ms in flight per "
              f"process, {hidden * 100:.0f}% hidden")

if __name__ == "__main__":
    main()
