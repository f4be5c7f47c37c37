"""Hugging Face config.json as --model: the same preset data as the TOML presets, or one error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualsim.errors import ProfileError
from dualsim.workload.model import load_model
from dualsim.workload.units import model_units
from dualsim.workload.hf_config import SUPPORTED, load_hf_config

CONFIGS = Path(__file__).parents[1] / "dualsim" / "data" / "hf_configs"


def total_params(m) -> float:
    return sum(u.params + u.expert_params for u in model_units(m, 4096))


def test_deepseek_v3_config_gives_the_preset_dims_and_work() -> None:
    hf, preset = load_model(str(CONFIGS / "deepseek-v3.json")), load_model("deepseek-v3")
    assert hf.dims == preset.dims
    assert hf.gemm_dtype == "bf16" and preset.gemm_dtype == "fp8"  # a config's default precision
    fp8 = load_hf_config(CONFIGS / "deepseek-v3.json", precision="fp8",
                         recompute=list(preset.recompute))
    assert model_units(fp8, 4096) == model_units(preset, 4096)


def test_deepseek_v2_lite_config_matches_the_small_moe_preset() -> None:
    hf, preset = load_model(str(CONFIGS / "deepseek-v2-lite.json")), load_model("small-moe")
    differ = {k for k in preset.dims if hf.dims[k] != preset.dims[k]}
    # V2-Lite has no group-limited routing (n_group 1): no node limit, i.e. top-k nodes
    assert differ == {"max_nodes_per_token"} and hf.max_nodes_per_token == 6


@pytest.mark.parametrize("file,billions", [
    ("deepseek-v2-lite.json", 15.7), ("deepseek-v2.json", 236), ("mixtral-8x7b.json", 46.7),
    ("llama-3-8b.json", 8.03), ("qwen2-57b-a14b.json", 57.4), ("qwen3-30b-a3b.json", 30.5),
    ("qwen2.5-7b.json", 7.62),
])
def test_parameter_count_matches_the_model_card(file: str, billions: float) -> None:
    """Total parameters as published on each model card (independent of our reading)."""
    assert total_params(load_model(str(CONFIGS / file))) / 1e9 == pytest.approx(billions,
                                                                                rel=0.01)


def test_deepseek_v3_with_mtp_matches_its_card() -> None:
    # 671B main model + 14B MTP module (DeepSeek-V3 model card: 685B on Hugging Face)
    assert total_params(load_model(str(CONFIGS / "deepseek-v3.json"))) / 1e9 == pytest.approx(
        685, rel=0.01)


@pytest.mark.parametrize("file,expected", [
    ("deepseek-v3.json", dict(max_nodes_per_token=4, dense_layers=3, mtp_depth=1,
                              shared_experts=1, attention="mla", q_lora_rank=1536)),
    ("deepseek-v2.json", dict(max_nodes_per_token=3, dense_layers=1, mtp_depth=0,
                              routed_experts=160, experts_per_token=6)),
    ("deepseek-v2-lite.json", dict(q_lora_rank=0, shared_experts=2)),
    ("qwen2-57b-a14b.json", dict(shared_experts=8, expert_intermediate=2560, kv_heads=4,
                                 head_dim=128, dense_layers=0, routed_experts=64)),
    ("qwen3-30b-a3b.json", dict(shared_experts=0, expert_intermediate=768, head_dim=128,
                                kv_heads=4, heads=32, routed_experts=128, experts_per_token=8)),
    ("mixtral-8x7b.json", dict(routed_experts=8, experts_per_token=2, expert_intermediate=14336,
                               dense_layers=0, shared_experts=0, max_nodes_per_token=2)),
    ("llama-3-8b.json", dict(routed_experts=0, dense_layers=32, kv_heads=8, head_dim=128,
                             ffn_intermediate=14336, attention="gqa")),
    ("qwen2.5-0.5b.json", dict(head_dim=64, kv_heads=2, vocab=151936)),
])
def test_fields_map_onto_the_preset(file: str, expected: dict) -> None:
    m = load_model(str(CONFIGS / file))
    assert {k: m.dims[k] for k in expected} == expected


def test_defaults_and_options() -> None:
    m = load_hf_config(CONFIGS / "qwen3-30b-a3b.json", seq_len=8192)
    assert m.layout["sequence"] == m.layout["microbatch_tokens"] == 8192
    assert m.layout["ep"] == 8 and m.recompute == ()
    assert m.gemm_dtype == "bf16" and m.memory["optimizer_bytes"] == 12
    assert load_model(str(CONFIGS / "llama-3-8b.json")).layout["ep"] == 1
    assert "tied embeddings" in load_model(str(CONFIGS / "qwen2.5-0.5b.json")).description


def test_a_checkpoint_folder_works(tmp_path: Path) -> None:
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "config.json").write_text((CONFIGS / "mixtral-8x7b.json").read_text())
    m = load_model(str(tmp_path / "my-model"))
    assert m.name == "my-model" and m.routed_experts == 8


def _cfg(tmp_path: Path, **changes) -> str:
    doc = json.loads((CONFIGS / "qwen3-30b-a3b.json").read_text())
    for k, v in changes.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    p = tmp_path / "config.json"
    p.write_text(json.dumps(doc))
    return str(p)


def test_unsupported_model_type_names_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as e:
        load_model(_cfg(tmp_path, model_type="gpt2"))
    assert "unsupported model_type 'gpt2'" in e.value.message
    assert all(t in e.value.message for t in SUPPORTED)


@pytest.mark.parametrize("changes,match", [
    (dict(hidden_size=None), "missing field hidden_size"),
    (dict(model_type=None), "missing field model_type"),
    (dict(num_experts=None), "missing field num_experts"),
    (dict(num_hidden_layers="48"), "field num_hidden_layers must be an integer"),
    (dict(num_experts_per_tok=200), "num_experts_per_tok .* exceeds"),
    (dict(decoder_sparse_step=2), "decoder_sparse_step 2"),
    (dict(mlp_only_layers=[3, 7]), "mlp_only_layers"),
    (dict(num_key_value_heads=5), "must divide"),
    (dict(tie_word_embeddings="yes"), "true or false"),
])
def test_bad_fields_are_one_error_naming_the_field(tmp_path: Path, changes, match) -> None:
    with pytest.raises(ProfileError, match=match):
        load_model(_cfg(tmp_path, **changes))


def test_leading_dense_layers_are_allowed(tmp_path: Path) -> None:
    assert load_model(_cfg(tmp_path, mlp_only_layers=[0, 1])).dense_layers == 2


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_model(str(tmp_path / "none.json"))
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(ProfileError, match="not a Hugging Face config"):
        load_model(str(tmp_path / "a.json"))
    (tmp_path / "b.json").write_text('{"model_type": "llama",')
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_model(str(tmp_path / "b.json"))


def test_option_errors() -> None:
    with pytest.raises(ProfileError, match="--precision"):
        load_hf_config(CONFIGS / "llama-3-8b.json", precision="fp16")
    with pytest.raises(ProfileError, match="--seq-len"):
        load_hf_config(CONFIGS / "llama-3-8b.json", seq_len=0)
    with pytest.raises(ProfileError, match="mla_up_proj needs MLA"):
        load_hf_config(CONFIGS / "llama-3-8b.json", recompute=["mla_up_proj"])


def test_training_options_apply_to_any_model() -> None:
    from dualsim.workload.model import with_training

    m = load_model(str(CONFIGS / "llama-3-8b.json"))
    t = with_training(m, seq_len=8192, recompute="full")
    assert t.layout["sequence"] == t.layout["microbatch_tokens"] == 8192
    assert t.recompute == ("full",)
    assert with_training(load_model("deepseek-v3"), recompute="none").recompute == ()
    # recomputation drops the activations it recomputes: less stored per token
    full, none = (sum(u.activation_bytes for u in model_units(with_training(m, recompute=r),
                                                              4096)) for r in ("full", "none"))
    assert full < none / 5
    with pytest.raises(ProfileError, match="needs MLA"):
        with_training(m, recompute="mla_up_proj")
    with pytest.raises(ProfileError, match="unknown option 'x'"):
        with_training(m, recompute="rmsnorm,x")


def test_simulate_takes_a_config_and_the_training_options() -> None:
    from typer.testing import CliRunner

    from dualsim.cli import app

    base = ["simulate", "zb-h1", "--profile", "h800", "--model",
            str(CONFIGS / "qwen3-30b-a3b.json"), "--ranks", "4", "--microbatches", "8", "--ep",
            "8", "--precision", "bf16", "--json"]
    runner = CliRunner()
    plain = json.loads(runner.invoke(app, base).stdout)
    long = json.loads(runner.invoke(app, base + ["--seq-len", "8192"]).stdout)
    assert plain["microbatch_tokens"] == 4096 and long["microbatch_tokens"] == 8192
    assert long["tokens_per_step"] == 2 * plain["tokens_per_step"]
    saved = json.loads(runner.invoke(app, base + ["--recompute", "full"]).stdout)
    assert saved["peak_memory_gb"] < plain["peak_memory_gb"]


@pytest.mark.parametrize("text, why", [
    ("[" * 100_000 + "]" * 100_000, "nests JSON too deeply to be a config.json"),
    ('{"model_type": "llama", "hidden_size": ' + "9" * 5000 + "}",
     "holds an integer too long to read (over 4300 digits)"),
])
def test_hostile_config_json_is_one_error(tmp_path: Path, text: str, why: str) -> None:
    f = tmp_path / "config.json"
    f.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_model(str(f))
    assert e.value.message == f"model config {str(f)!r} {why}"
