"""Precision follows the model and the profile; --precision fp8|bf16 overrides the preset."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dualsim.cli import app
from dualsim.cluster.comm import a2a_flow
from dualsim.cluster.compute import piece_times, precision_for
from dualsim.cluster.profile import load_profile
from dualsim.errors import ProfileError
from dualsim.workload.layout import build_layout
from dualsim.workload.model import FP8_WITH_SCALES, load_model

R = 16
runner = CliRunner()


def moe_layer(model):
    lay = build_layout(model, R, 120, [[k, R - 1 - k] for k in range(R)], ep=64, gpus=2048,
                       microbatch_tokens=4096)
    return next(u for s in lay.slices for u in s.units if u.moe)


def test_override_and_fallback_rules() -> None:
    m, h800, a100 = load_model("deepseek-v3"), load_profile("h800"), load_profile("a100")
    assert precision_for(m, h800) == (m, [])
    bf16, warnings = precision_for(m, h800, "bf16")
    assert bf16.gemm_dtype == "bf16" and warnings == []
    # the preset's own fp8 on a profile without FP8: BF16 with a warning
    fallback, warnings = precision_for(m, a100)
    assert fallback.gemm_dtype == "bf16" and "no FP8" in warnings[0]
    # an explicit --precision fp8 there is an error
    with pytest.raises(ProfileError, match="profile a100 has no FP8"):
        precision_for(m, a100, "fp8")
    with pytest.raises(ProfileError, match="fp8 or bf16"):
        precision_for(m, h800, "fp16")


def test_bf16_model_moves_bf16_dispatch_bytes() -> None:
    m, p = load_model("deepseek-v3"), load_profile("h800")
    bf16, _ = precision_for(m, p, "bf16")
    fp8 = a2a_flow(m, p, 64, 4096, "dispatch").nbytes
    assert fp8 == pytest.approx(4096 * 3.5 * 7168 * FP8_WITH_SCALES)
    assert a2a_flow(bf16, p, 64, 4096, "dispatch").nbytes == pytest.approx(4096 * 3.5 * 7168 * 2)


def test_bf16_model_caches_bf16_activations() -> None:
    m = load_model("deepseek-v3")
    bf16, _ = precision_for(m, load_profile("h800"), "bf16")
    a, b = moe_layer(m), moe_layer(bf16)
    # FP8 GEMM inputs cached (RMSNorm recomputed): 8 routed + 1 shared expert inputs, 9 SwiGLU
    # inputs (gate and up), and the attention output (E5M6 -> BF16)
    fp8_elements = 8 * 7168 + 7168 + 9 * 2 * 2048
    assert b.activation_bytes - a.activation_bytes == pytest.approx(
        fp8_elements * (2 - FP8_WITH_SCALES) + 128 * 128 * (2 - 1.5))


def test_bf16_gemms_run_at_the_bf16_peak() -> None:
    m, p = load_model("deepseek-v3"), load_profile("h800")
    bf16, _ = precision_for(m, p, "bf16")
    layer = moe_layer(bf16)
    gemms = [g for piece in layer.pieces for g in piece.gemms]
    assert {g.dtype for g in gemms} == {"bf16"}
    f8 = sum(piece_times(moe_layer(m).pieces[1], 4096, p))
    f16 = sum(piece_times(layer.pieces[1], 4096, p))
    assert 1.3 < f16 / f8 < 2.2  # half the peak; elementwise bytes change less


def test_cli_precision_option() -> None:
    base = ["simulate", "1f1b", "-r", "4", "-m", "8", "--profile", "h800", "--model", "small-moe",
            "--json"]
    fp8 = json.loads(runner.invoke(app, base).stdout)
    out = runner.invoke(app, base + ["--precision", "bf16"])
    assert out.exit_code == 0, out.stderr
    bf16 = json.loads(out.stdout)
    assert (fp8["precision"], bf16["precision"]) == ("fp8", "bf16")
    assert bf16["step_time_s"] > fp8["step_time_s"]


@pytest.mark.parametrize("args,needle", [
    (["--profile", "a100", "--precision", "fp8"], "profile a100 has no FP8"),
    (["--profile", "h800", "--precision", "fp16"], "--precision must be fp8 or bf16"),
])
def test_cli_precision_errors(args: list[str], needle: str) -> None:
    out = runner.invoke(app, ["simulate", "1f1b", "-r", "4", "-m", "8", "--model", "small-moe",
                              *args])
    assert out.exit_code == 1 and out.stdout == ""
    assert out.stderr.startswith("error: ") and needle in out.stderr.splitlines()[0]
    assert "Traceback" not in out.stderr


def test_a100_default_falls_back_with_a_warning_line() -> None:
    out = runner.invoke(app, ["simulate", "1f1b", "-r", "4", "-m", "8", "--profile", "a100",
                              "--model", "small-moe", "--json"])
    assert out.exit_code == 0
    assert json.loads(out.stdout)["precision"] == "bf16"
    assert "warning: 1f1b: profile a100 has no FP8" in out.stderr
