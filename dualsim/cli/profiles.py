"""`dualsim profiles`: the built-in hardware profiles and workload presets, as tables on stdout."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from dualsim.cli.common import out_console, print_json, user_errors
from dualsim.cluster.profile import Profile, load_profile
from dualsim.datafiles import builtin_files
from dualsim.workload.model import Model, default_layout, load_model


def profiles_command(as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object on stdout instead of tables.")] = False,
        gemm_fit: Annotated[bool, typer.Option(
            "--gemm-fit", help="Fit the GEMM model to DeepGEMM's H800 FP8 table and print "
            "every row's error (held-out rows marked).")] = False) -> None:
    """List hardware profiles and workload presets (a file path works wherever a name does)."""
    with user_errors():
        if gemm_fit:
            _print_gemm_fit(as_json)
            return
        if as_json:
            print_json(_as_json())
            return
        hw = Table(title="hardware profiles (--profile NAME|FILE)")
        for col in ("name", "SMs", "HBM GB", "BF16 TFLOPS", "FP8 TFLOPS", "NVLink GB/s",
                    "IB GB/s", "comm SMs", "description"):
            hw.add_column(col)
        profiles, presets = _builtins()
        for name, p in profiles:
            fp8 = f"{p.fp8_flops / 1e12:.0f}" if p.fp8_flops else "-"
            hw.add_row(name, str(p.sms), f"{p.hbm_bytes / 1e9:.0f}", f"{p.bf16_flops / 1e12:.0f}",
                       fp8, f"{p.nvlink_bandwidth / 1e9:.0f}", f"{p.ib_bandwidth / 1e9:.0f}",
                       str(p.comm_sms), p.description)
        models = Table(title="workload presets (--model NAME|FILE)")
        for col in ("name", "layers", "hidden", "experts", "default layout", "description"):
            models.add_column(col)
        for name, m in presets:
            d = default_layout(m)
            experts = (f"{m.routed_experts}+{m.shared_experts} top-{m.experts_per_token}"
                       if m.is_moe else "dense")
            layout = (f"{d['schedule']} PP{d['ranks']} EP{d['ep']} {d['gpus']} GPUs, "
                      f"M={d['microbatches']} x {d['microbatch_tokens']} tokens")
            models.add_row(name, str(m.layers), str(m.hidden), experts, layout, m.description)
        console = out_console()
        console.print(hw)
        console.print(models)


def _builtins() -> tuple[list[tuple[str, Profile]], list[tuple[str, Model]]]:
    """The built-in profiles and model presets by name, each file read once."""
    return ([(n, load_profile(n)) for n in builtin_files("profiles")],
            [(n, load_model(n)) for n in builtin_files("models")])


def _as_json() -> dict[str, Any]:
    """Profiles and presets with their main numbers, in the units of the table (GB, TFLOPS, GB/s)."""
    loaded_profiles, presets = _builtins()
    profiles = []
    for name, p in loaded_profiles:
        profiles.append({"name": name, "description": p.description, "sms": p.sms,
                         "hbm_gb": p.hbm_bytes / 1e9, "bf16_tflops": p.bf16_flops / 1e12,
                         "fp8_tflops": p.fp8_flops / 1e12 if p.fp8_flops else None,
                         "nvlink_gbps": p.nvlink_bandwidth / 1e9,
                         "ib_gbps": p.ib_bandwidth / 1e9, "comm_sms": p.comm_sms})
    models = []
    for name, m in presets:
        models.append({"name": name, "description": m.description, "layers": m.layers,
                       "hidden": m.hidden, "moe": m.is_moe, "default_layout": default_layout(m)})
    return {"profiles": profiles, "models": models}


def _print_gemm_fit(as_json: bool) -> None:
    """The GEMM model's fit (dualsim/cluster/gemm_fit.py): parameters and per-row errors."""
    from dualsim.cluster.gemm_fit import fit_report

    rep = fit_report()
    p = rep.params
    params = {"fp8_mainloop": p.mainloop_fraction["fp8"], "hbm_fraction": p.hbm_fraction,
              "sm_load_bandwidth_gbps": p.sm_load_bandwidth / 1e9, "launch_us": p.launch * 1e6}
    rows = [{"layout": r.row.layout, "groups": r.row.shape.groups, "m": r.row.shape.m,
             "n": r.row.shape.n, "k": r.row.shape.k, "held_out": r.row.held_out,
             "measured_tflops": r.row.tflops, "model_tflops": round(r.model_tflops, 1),
             "error": round(r.error, 4), "leave_one_out_error": round(r.loo_error or 0.0, 4)}
            for r in rep.rows]
    summary = {"fitted_rms": rep.rms(False), "fitted_max": rep.max_abs(False),
               "held_out_rms": rep.rms(True), "held_out_max": rep.max_abs(True)}
    if as_json:
        print_json({"params": params, "rows": rows, "summary": summary})
        return
    t = Table(title="GEMM model vs DeepGEMM H800 FP8 (fitted on the rows not held out)")
    for col in ("GEMM (groups x) M x N x K", "held out", "measured TFLOPS", "model TFLOPS",
                "error", "left-out error"):
        t.add_column(col, justify="left" if col.startswith("GEMM") else "right")
    for r in rep.rows:
        t.add_row(r.row.label(), "yes" if r.row.held_out else "", f"{r.row.tflops:.0f}",
                  f"{r.model_tflops:.0f}", f"{r.error:+.1%}", f"{r.loo_error or 0.0:+.1%}")
    console = out_console()
    console.print(t)
    console.print(f"fit: fp8_mainloop {params['fp8_mainloop']:.3f}, hbm_fraction "
                  f"{params['hbm_fraction']:.3f}, sm_load_bandwidth "
                  f"{params['sm_load_bandwidth_gbps']:.1f} GB/s, launch {params['launch_us']:.2f} us; "
                  f"error rms {summary['fitted_rms']:.1%} fitted, {summary['held_out_rms']:.1%} "
                  f"held out (max {summary['held_out_max']:.1%})", markup=False)
