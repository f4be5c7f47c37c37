"""Workload presets and the per-stage work they imply (DESIGN.md §6 dimensions)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dualsim.cluster.compute import unit_weight
from dualsim.errors import ProfileError
from dualsim.cluster.profile import load_profile
from dualsim.datafiles import data_dir
from dualsim.workload.layout import build_layout
from dualsim.workload.model import default_layout, list_models, load_model
from dualsim.workload.units import AttentionCore, Elementwise, Gemm

R = 16
DUALPIPE_HOLDERS = [[k, R - 1 - k] for k in range(R)]


def test_presets_listed_and_default_layout() -> None:
    assert {"deepseek-v3", "small-moe", "llama-70b"} <= {n for n, _ in list_models()}
    lay = default_layout(load_model("deepseek-v3"))
    assert lay["schedule"] == "dualpipe" and lay["ranks"] == 16 and lay["ep"] == 64
    assert lay["gpus"] == 2048 and lay["microbatch_tokens"] == 4096
    assert lay["microbatches"] == 120  # 15360 / (2048 / 16)


def test_deepseek_per_token_flops_match_sanity_arithmetic() -> None:
    m = load_model("deepseek-v3")
    lay = build_layout(m, R, 120, DUALPIPE_HOLDERS, ep=64, gpus=2048, microbatch_tokens=4096)
    moe = next(u for s in lay.slices for u in s.units if u.moe)
    attn, mlp = moe.pieces
    proj = sum(g.flops for g in attn.gemms if g.name != "router")
    core = sum(k.flops for k in attn.fwd if isinstance(k, AttentionCore))
    assert proj / 1e9 == pytest.approx(0.37, abs=0.01)
    assert core / 1e9 == pytest.approx(0.17, abs=0.01)
    # 8 routed + 1 shared expert, 3 GEMMs each (the router runs before the dispatch, in attn)
    assert sum(g.flops for g in mlp.gemms) / 1e9 == pytest.approx(0.79, abs=0.01)
    assert [g.name for g in attn.gemms][-1] == "router"
    assert moe.model_flops / 1e9 == pytest.approx(1.34, abs=0.01)
    # routed experts: 256 x 3 x 7168 x 2048 parameters per MoE layer
    assert moe.expert_params == 256 * 3 * 7168 * 2048
    # total parameters ~671B (main model + MTP module)
    total = sum(u.params + u.expert_params for s in lay.slices for u in s.units)
    assert total / 1e9 == pytest.approx(671 + 11.5, rel=0.03)


def test_layers_balanced_with_light_ends() -> None:
    m, p = load_model("deepseek-v3"), load_profile("h800")
    lay = build_layout(m, R, 120, DUALPIPE_HOLDERS, ep=64, gpus=2048, microbatch_tokens=4096,
                       weight=unit_weight(p))
    counts = [s.layers for s in lay.slices]
    assert sum(counts) == 61 and len(counts) == 16
    assert counts[0] < 4 and counts[-1] < 4 and max(counts) == 4
    assert [u.name for u in lay.slices[-1].units][-3:] == ["head", "mtp0", "mtp0_head"]
    assert lay.slices[0].units[0].name == "embed"
    assert lay.tokens_per_step == 15360 * 4096


def test_explicit_layers_per_stage() -> None:
    m = load_model("deepseek-v3")
    counts = [4] * 15 + [1]
    lay = build_layout(m, R, 120, [[k] for k in range(R)], ep=64, gpus=2048,
                       microbatch_tokens=4096, layers_per_stage=counts)
    assert [s.layers for s in lay.slices] == counts
    with pytest.raises(ProfileError, match="must be 16 non-negative numbers"):
        build_layout(m, R, 120, [[k] for k in range(R)], ep=64, gpus=2048,
                     microbatch_tokens=4096, layers_per_stage=[4] * 16)


@pytest.mark.parametrize("kw,msg", [
    (dict(ep=64, gpus=2040), "not divisible"),
    (dict(ep=4096, gpus=2048), "larger than --gpus"),
    (dict(ep=3, gpus=2048), "must divide"),
])
def test_bad_layouts(kw: dict, msg: str) -> None:
    m = load_model("deepseek-v3")
    with pytest.raises(ProfileError, match=msg):
        build_layout(m, R, 120, DUALPIPE_HOLDERS, microbatch_tokens=4096, **kw)


def test_dense_model_ep_only_places_gpus() -> None:
    """--ep on a dense model groups data-parallel GPUs innermost: no all-to-all, but pipeline
    neighbours land on different nodes (PP over IB instead of NVLink)."""
    from dualsim.cluster.comm import a2a_copies, pp_flow

    m, p = load_model("llama-70b"), load_profile("h800")
    wide = build_layout(m, R, 64, [[k] for k in range(R)], ep=8, gpus=256, microbatch_tokens=4096)
    narrow = build_layout(m, R, 64, [[k] for k in range(R)], ep=1, gpus=256,
                          microbatch_tokens=4096)
    assert a2a_copies(m, 8, 8) == (0.0, 0.0)
    assert pp_flow(narrow, p, 0, 1).link == "nvlink" and pp_flow(wide, p, 0, 1).link == "ib"


def test_bad_model_file_names_field(tmp_path: Path) -> None:
    text = (data_dir("models") / "deepseek-v3.toml").read_text()
    f = tmp_path / "m.toml"
    f.write_text(text.replace("hidden = 7168", "hiden = 7168"))
    with pytest.raises(ProfileError, match=r"m.toml: unknown field model.hiden"):
        load_model(str(f))
    f.write_text(text.replace('gemm = "fp8"', 'gemm = "fp4"'))
    with pytest.raises(ProfileError, match=r"m.toml: field precision.gemm"):
        load_model(str(f))
    f.write_text(re.sub(r"max_nodes_per_token = \d+", "max_nodes_per_token = 0", text))
    with pytest.raises(ProfileError, match=r"m.toml: field model.max_nodes_per_token"):
        load_model(str(f))


def test_full_recompute_keeps_only_block_inputs() -> None:
    m = load_model("llama-70b")
    assert m.recompute == ("full",)
    lay = build_layout(m, R, 64, [[k] for k in range(R)], ep=1, gpus=256, microbatch_tokens=4096)
    block = lay.slices[1].units[0]
    assert block.activation_bytes == 8192 * 2
    attn = block.pieces[0]
    proj = sum(g.flops for g in attn.gemms)
    core = sum(k.flops for k in attn.fwd if isinstance(k, AttentionCore))
    flops = [k.flops for k in attn.bwd_input if not isinstance(k, Elementwise)]
    # forward rerun, then projections' input gradient and 2.5x the attention core
    assert sum(flops) == pytest.approx(2 * proj + 3.5 * core)
    assert [g.role for g in attn.bwd_input if isinstance(g, Gemm)] == [
        "fprop", "fprop", "dgrad", "dgrad"]
    assert not m.is_moe and block.expert_params == 0


def test_deepseek_activation_bytes_per_layer() -> None:
    m = load_model("deepseek-v3")
    lay = build_layout(m, R, 120, DUALPIPE_HOLDERS, ep=64, gpus=2048, microbatch_tokens=4096)
    moe = next(u for s in lay.slices for u in s.units if u.moe)
    # residuals 2x7168x2, MLA latents (1536+512+64)x2, attention output E5M6 + LSE, router,
    # 8 routed + 1 shared FP8 inputs, SwiGLU inputs FP8 (outputs recomputed)
    assert moe.activation_bytes / 1e3 == pytest.approx(163.6, abs=0.5)
    # the attention output, kept once in E5M6 (1.5 B) for the output projection's weight
    # gradient and FlashAttention's backward, plus the FP32 log-sum-exp per head
    assert moe.attn_output_bytes == 128 * 128 * 1.5 + 128 * 4
    assert moe.logits_bytes == 0
    head = next(u for s in lay.slices for u in s.units if u.name == "head")
    assert head.logits_bytes == 129280 * 2 and head.activation_bytes == 7168 * 2 + 129280 * 2


def test_ep_larger_than_gpus_says_how_to_fix() -> None:
    from dualsim.errors import ProfileError
    from dualsim.workload.layout import check_parallel
    from dualsim.workload.model import load_model

    with pytest.raises(ProfileError) as e:
        check_parallel(load_model("deepseek-v3"), ranks=16, ep=64, gpus=16,
                       microbatch_tokens=4096)
    assert e.value.message == (
        "--ep 64 is larger than --gpus 16; EP groups come from the GPUs: pass --ep 16 or less "
        "(without --ep the model preset's default is used)")
