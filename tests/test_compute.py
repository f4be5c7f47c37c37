"""Compute cost model: kernels of a piece -> seconds on the whole GPU (shapes, roles, bytes)."""

from __future__ import annotations

import pytest

from dualsim.cluster.compute import gemm_shape, kernel_time, one_kernel_time, piece_times
from dualsim.cluster.gemm import GemmShape, gemm_time
from dualsim.cluster.profile import load_profile
from dualsim.workload.layout import build_layout
from dualsim.workload.model import load_model
from dualsim.workload.units import AttentionCore, Elementwise, Gemm

R = 16
H800 = load_profile("h800")


def moe_layer(ep: int = 64, gpus: int = 2048):
    m = load_model("deepseek-v3")
    lay = build_layout(m, R, 120, [[k, R - 1 - k] for k in range(R)], ep=ep, gpus=gpus,
                       microbatch_tokens=4096)
    return next(u for s in lay.slices for u in s.units if u.moe)


def expert_up(ep: int = 64) -> Gemm:
    return next(g for g in moe_layer(ep, 2048).pieces[1].gemms if g.name == "experts_up")


def test_tokens_per_expert_follow_ep_topk_and_microbatch() -> None:
    # EP64: 256 / 64 = 4 experts per GPU, each sees 64 x 4096 x 8 / 256 = 8192 tokens
    g = expert_up(64)
    assert (g.groups, g.rows, g.routed) == (4, 8, True)
    assert gemm_shape(g, 4096) == GemmShape(4, 8192, 4096, 7168, grouped=True)
    # EP8: 32 experts per GPU, 8 x 4096 x 8 / 256 = 1024 tokens each
    assert gemm_shape(expert_up(8), 4096) == GemmShape(32, 1024, 4096, 7168, grouped=True)
    # the DeepGEMM grouped row (4 x 8192 x 4096 x 7168) is exactly DeepSeek-V3's EP64 expert GEMM
    t = one_kernel_time(g, 4096, H800)
    assert t == gemm_time(GemmShape(4, 8192, 4096, 7168, grouped=True), "fp8", sms=132,
                          peak_flops=1979e12, hbm_bandwidth=3.35e12, params=H800.gemm)


def test_fewer_tokens_per_expert_run_below_peak() -> None:
    g = expert_up(64)
    # micro-batch tokens -> 8192, 1024, 256, 64, 16 tokens per expert
    rate = [g.flops * t / one_kernel_time(g, t, H800) for t in (4096, 512, 128, 32, 8)]
    assert rate == sorted(rate, reverse=True)
    # below ~256 rows an expert GEMM is bound by reading its weights: the rate falls with M
    assert rate[2] > 2.5 * rate[3] > 2.5 * 2.5 * rate[4]
    assert rate[4] < 0.05 * 1979e12


def test_backward_roles_permute_the_shape() -> None:
    g = Gemm("o", 7168, 16384, "fp8")
    assert gemm_shape(g, 4096) == GemmShape(1, 4096, 7168, 16384)
    assert gemm_shape(g.as_role("dgrad"), 4096) == GemmShape(1, 4096, 16384, 7168)
    assert gemm_shape(g.as_role("wgrad"), 4096) == GemmShape(1, 16384, 7168, 4096)
    # the weight gradient runs at the profile's wgrad main-loop fraction and writes FP32
    assert H800.gemm.fraction("fp8", wgrad=True) < H800.gemm.fraction("fp8")
    assert one_kernel_time(g.as_role("wgrad"), 4096, H800) > one_kernel_time(g, 4096, H800)


def test_imbalance_scales_only_routed_rows() -> None:
    shared = Gemm("shared_up", 4096, 7168, "fp8")
    routed = expert_up(64)
    assert gemm_shape(shared, 4096, imbalance=2.0).m == 4096
    assert gemm_shape(routed, 4096, imbalance=2.0).m == 2 * 8192
    mlp = moe_layer().pieces[1]
    f1, f2 = piece_times(mlp, 4096, H800)[0], piece_times(mlp, 4096, H800, imbalance=2.0)[0]
    assert f2 > f1


def test_attention_core_and_elementwise_laws() -> None:
    core = AttentionCore(1e9, "attention_fwd")
    assert one_kernel_time(core, 1000, H800) == pytest.approx(
        1e12 / (989e12 * H800.efficiency["attention_fwd"]))
    # on fewer SMs the core slows in proportion; a memory-bound kernel does not
    assert one_kernel_time(core, 1000, H800, sms=66) == pytest.approx(
        2 * one_kernel_time(core, 1000, H800))
    ew = Elementwise(1e6)
    assert one_kernel_time(ew, 1000, H800) == pytest.approx(
        1e9 / (3.35e12 * H800.efficiency["elementwise"]))
    assert one_kernel_time(ew, 1000, H800, sms=66) == one_kernel_time(ew, 1000, H800)


def test_piece_times_mean_all_sms() -> None:
    """No static communication-SM factor: compute times are on the whole GPU."""
    attn = moe_layer().pieces[0]
    full = kernel_time(attn.fwd, 4096, H800)
    assert full == pytest.approx(kernel_time(attn.fwd, 4096, H800, sms=132))
    assert kernel_time(attn.fwd, 4096, H800, sms=112) > full
    assert kernel_time(attn.fwd, 4096, H800.with_overrides(comm_sms=40)) == full


def test_backward_elementwise_moves_twice_the_forward_bytes() -> None:
    for piece in moe_layer().pieces:
        fwd = sum(k.nbytes for k in piece.fwd if isinstance(k, Elementwise))
        bwd = sum(k.nbytes for k in piece.bwd_input if isinstance(k, Elementwise))
        assert fwd > 0 and bwd == 2 * fwd
        assert not any(isinstance(k, Elementwise) for k in piece.bwd_weight)


def test_profile_gemm_section_is_checked(tmp_path) -> None:
    from dualsim.datafiles import data_dir
    from dualsim.errors import ProfileError

    text = (data_dir("profiles") / "h800.toml").read_text()
    f = tmp_path / "p.toml"
    f.write_text("\n".join(line for line in text.splitlines()
                           if not line.startswith("fp8_mainloop")))
    with pytest.raises(ProfileError, match=r"p.toml: missing field gemm.fp8_mainloop \(needed "
                                           r"with gpu.fp8_peak\)"):
        load_profile(str(f))
    f.write_text(text.replace('launch = { value = 1.6, unit = "us"',
                              'launch = { value = 1.6, unit = "ms"'))
    with pytest.raises(ProfileError, match=r"field gemm.launch has unit 'ms'; expected 'us'"):
        load_profile(str(f))
    f.write_text(text.replace("hbm_fraction = { value = 0.825", "hbm_fraction = { value = 1.2"))
    with pytest.raises(ProfileError, match=r"gemm.hbm_fraction must be between 0.001 and 1, "
                                           r"got 1.2$"):
        load_profile(str(f))
    # a profile without FP8 needs no FP8 GEMM fields (a100)
    assert "fp8" not in load_profile("a100").gemm.mainloop_fraction
