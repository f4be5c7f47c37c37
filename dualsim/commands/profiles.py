"""`dualsim profiles`: the built-in hardware profiles and workload presets, as tables on stdout."""

from __future__ import annotations

from rich.table import Table

from dualsim.commands.common import out_console, user_errors
from dualsim.hardware import list_profiles, load_profile
from dualsim.workload import default_layout, list_models, load_model


def profiles_command() -> None:
    """List hardware profiles and workload presets (a file path works wherever a name does)."""
    with user_errors():
        hw = Table(title="hardware profiles (--profile NAME|FILE)")
        for col in ("name", "SMs", "HBM GB", "BF16 TFLOPS", "FP8 TFLOPS", "NVLink GB/s",
                    "IB GB/s", "comm SMs", "description"):
            hw.add_column(col)
        for name, desc in list_profiles():
            p = load_profile(name)
            fp8 = f"{p.fp8_flops / 1e12:.0f}" if p.fp8_flops else "-"
            hw.add_row(name, str(p.sms), f"{p.hbm_bytes / 1e9:.0f}", f"{p.bf16_flops / 1e12:.0f}",
                       fp8, f"{p.nvlink_bandwidth / 1e9:.0f}", f"{p.ib_bandwidth / 1e9:.0f}",
                       str(p.comm_sms), desc)
        models = Table(title="workload presets (--model NAME|FILE)")
        for col in ("name", "layers", "hidden", "experts", "default layout", "description"):
            models.add_column(col)
        for name, desc in list_models():
            m = load_model(name)
            d = default_layout(m)
            experts = (f"{m.routed_experts}+{m.shared_experts} top-{m.experts_per_token}"
                       if m.is_moe else "dense")
            layout = (f"{d['schedule']} PP{d['ranks']} EP{d['ep']} {d['gpus']} GPUs, "
                      f"M={d['microbatches']} x {d['microbatch_tokens']} tokens")
            models.add_row(name, str(m.layers), str(m.hidden), experts, layout, desc)
        console = out_console()
        console.print(hw)
        console.print(models)
