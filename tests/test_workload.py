"""Workload presets and the per-stage work they imply (the DeepSeek-V3 report's dimensions,
docs/hardware-mode.md)."""

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
    (dict(ep=4096, gpus=2048), "larger than the 2048 GPUs"),
    (dict(ep=3, gpus=2048), "--ep 3 does not divide the 128 data-parallel GPUs"),
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
        "--ep 64 is larger than the 16 GPUs; use --ep 1 (dividing 1 GPUs per stage and 256 "
        "routed experts)")


@pytest.mark.parametrize("args, expected", [
    (["--ep", "7"], "--ep 7 does not divide the 128 data-parallel GPUs per pipeline stage "
                    "(gpus / ranks = 2048 / 16); use --ep 1, 2, 4, 8, 16, 32, 64, 128 (dividing "
                    "128 GPUs per stage and 256 routed experts)"),
    (["--ranks", "24", "--gpus", "2400"],
     "the model preset's EP degree 64 does not divide the 100 data-parallel GPUs per pipeline "
     "stage (gpus / ranks = 2400 / 24); pass --ep 1, 2, 4 (dividing 100 GPUs per stage and 256 "
     "routed experts)"),
    (["--ranks", "24"], "the model preset's GPU count 2048 is not divisible by the 24 pipeline "
                        "ranks; pass --gpus with a multiple of 24, or other --ranks"),
    (["--ranks", "24", "--gpus", "100"], "--gpus 100 is not divisible by the 24 pipeline ranks; "
                                         "use a multiple of 24, or other --ranks"),
    (["--gpus", "2048", "--ep", "3"], "--ep 3 does not divide the 128 data-parallel GPUs per "
                                      "pipeline stage (gpus / ranks = 2048 / 16); use --ep 1, 2, "
                                      "4, 8, 16, 32, 64, 128 (dividing 128 GPUs per stage and "
                                      "256 routed experts)"),
])
def test_layout_errors_say_which_value_the_user_passed(args: list[str], expected: str) -> None:
    from typer.testing import CliRunner

    from dualsim.cli import app

    res = CliRunner().invoke(app, ["simulate", "zb-h1", "--profile", "h800", *args])
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == f"error: {expected}\n"


# ---- every number of a preset is bounded (the bound is in the message) -----------------------

def _preset_with(section: str, key: str, value: str) -> str:
    text = (data_dir("models") / "deepseek-v3.toml").read_text()
    out, current, done = [], None, False
    for line in text.splitlines():
        head = re.match(r"^\[(\w+)\]", line)
        if head:
            current = head.group(1)
        elif current == section and re.match(rf"^{key}\s*=", line):
            line, done = f"{key} = {value}", True
        out.append(line)
    assert done, (section, key)
    return "\n".join(out) + "\n"


def _numeric_fields() -> list[tuple[str, str, str]]:
    import tomllib

    from dualsim.workload.model import MODEL_SCHEMA

    raw = tomllib.loads((data_dir("models") / "deepseek-v3.toml").read_text())
    return [(s, k, spec[0]) for s, keys in MODEL_SCHEMA.items() for k, spec in keys.items()
            if spec[0] in ("int", "float") and k in raw.get(s, {})]


@pytest.mark.parametrize("section, key, typ", _numeric_fields())
def test_every_model_number_is_bounded(tmp_path: Path, section: str, key: str, typ: str) -> None:
    from dualsim.workload.model import field_range

    lo, hi = field_range(section, key)
    assert 0 <= lo <= hi <= 10**9
    f = tmp_path / "m.toml"
    values = ["1000000001", "4611686018427387904"] + (["nan", "inf", "1e308"] if typ == "float"
                                                      else [])
    for value in values:
        f.write_text(_preset_with(section, key, value))
        with pytest.raises(ProfileError) as e:
            load_model(str(f))
        shown = float(value) if typ == "float" and not value.isdigit() else int(value)
        assert e.value.message == (f"{f}: field {section}.{key} must be between {lo:g} and "
                                   f"{hi:g}, got {shown!r}")


@pytest.mark.parametrize("key, value, bound", [
    ("layers", 1_000_000_000, "between 1 and 1000"),  # was: still running after 40 s
    ("mtp_depth", 1_000_000_000, "between 0 and 16"),
])
def test_layer_counts_that_would_hang_are_refused(tmp_path: Path, key: str, value: int,
                                                  bound: str) -> None:
    f = tmp_path / "m.toml"
    f.write_text(_preset_with("model", key, str(value)))
    with pytest.raises(ProfileError, match=rf"field model.{key} must be {bound}, got {value}$"):
        load_model(str(f))


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_param_bytes_nan_or_inf_is_refused(tmp_path: Path, value: str) -> None:
    f = tmp_path / "m.toml"
    f.write_text(_preset_with("memory", "param_bytes", value))
    with pytest.raises(ProfileError, match=rf"field memory.param_bytes must be between 0 and 64, "
                                           rf"got {value}$"):
        load_model(str(f))


def test_more_dense_layers_than_layers_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text(_preset_with("model", "dense_layers", "62"))
    with pytest.raises(ProfileError, match=r"field model.dense_layers \(62\) must be at most "
                                           r"model.layers \(61\)$"):
        load_model(str(f))


def test_the_builtin_presets_lie_inside_their_ranges() -> None:
    for name, _ in list_models():
        load_model(name)
