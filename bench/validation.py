"""Every prediction dualsim makes against an independent measurement (docs/validation.md).

    python bench/validation.py [--trace PATH]

Prints, each with what was fitted and what was not:
1. the rows of DeepSeek's H800 trace held out of `dualsim calibrate`'s fit (default split);
2. the rows of DeepGEMM's H800 FP8 table held out of the GEMM model's fit (cluster/gemm_fit.py);
3. published training throughput: DeepSeek-V3 (180K H800 GPU-hours per trillion tokens) and
   DeepSeek-V2 (172.8K), neither of which any parameter was fitted to.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIMMED = ROOT / "tests" / "data" / "traces" / "deepseek-v3-train-trace.trimmed.json.gz"
V2_CONFIG = ROOT / "dualsim" / "data" / "hf_configs" / "deepseek-v2.json"


def trace_rows(trace: Path) -> None:
    from dualsim.calibrate.hardware_fit import calibrate_profile

    cal = calibrate_profile(trace, "h800", "deepseek-v3")
    print("1. DeepSeek trace, rows held out of the fit (per MoE layer, one micro-batch)")
    print("   fitted:", ", ".join(f"{p.key} <- {'+'.join(p.rows)}" for p in cal.result.params))
    print(f"   {'row':16s} {'measured ms':>12s} {'model ms':>9s} {'error':>8s}")
    for r in cal.result.predicted:
        print(f"   {r.name:16s} {r.measured_ms:12.3f} {r.model_ms:9.3f} {r.error:+8.1%}")
    errs = [abs(r.error) for r in cal.result.predicted]
    print(f"   mean |error| {sum(errs) / len(errs):.1%}, max {max(errs):.1%}")


def gemm_rows() -> None:
    from dualsim.cluster.gemm_fit import fit_report

    rep = fit_report(loo=False)
    print("2. DeepGEMM H800 FP8 table, rows held out of the GEMM model's fit")
    print(f"   {'shape':28s} {'measured TFLOPS':>16s} {'model':>8s} {'error':>8s}")
    for r in rep.rows:
        if r.row.held_out:
            print(f"   {r.row.label():28s} {r.row.tflops:16.0f} {r.model_tflops:8.0f} "
                  f"{r.error:+8.1%}")
    print(f"   held-out rms {rep.rms(True):.1%}, max {rep.max_abs(True):.1%}")


def throughput() -> None:
    from dualsim.generators import generate
    from dualsim.sim.hardware_mode import simulate_hardware
    from dualsim.workload.hf_config import load_hf_config
    from dualsim.workload.model import default_layout, load_model

    print("3. Published training throughput (tokens/s/GPU)")
    v3 = load_model("deepseek-v3")
    d = default_layout(v3)
    r = simulate_hardware(generate(d["schedule"], d["ranks"], d["microbatches"]), "h800", v3)
    published = 1e12 / (180e3 * 3600)
    got = r.extra["tokens_per_s_per_gpu"]
    print(f"   DeepSeek-V3, DualPipe PP16 EP64 2048 GPUs FP8, M={d['microbatches']}: model "
          f"{got:.0f} vs published {published:.0f} ({got / published - 1:+.1%})")
    v2 = load_hf_config(V2_CONFIG, precision="bf16",
                        recompute=["rmsnorm", "mla_up_proj", "swiglu_output"])
    gpus, batch = 1024, 9216
    m = batch * 4096 // (4096 * (gpus // 16))
    r = simulate_hardware(generate("zb-h1", 16, m), "h800", v2, ep=8, gpus=gpus)
    published = 1e12 / (172.8e3 * 3600)
    got = r.extra["tokens_per_s_per_gpu"]
    print(f"   DeepSeek-V2, ZB-H1 PP16 EP8 {gpus} GPUs BF16, {batch} sequences (M={m}): model "
          f"{got:.0f} vs published {published:.0f} ({got / published - 1:+.1%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=TRIMMED)
    args = ap.parse_args()
    trace_rows(args.trace)
    gemm_rows()
    throughput()


if __name__ == "__main__":
    main()
