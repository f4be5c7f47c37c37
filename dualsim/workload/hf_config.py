"""Hugging Face ``config.json`` -> a model preset (the same table a TOML preset gives).

``--model path/to/config.json`` (or a checkpoint folder holding one) works wherever ``--model``
does. Supported ``model_type``s (SUPPORTED): DeepSeek-V2/V3 (MLA, shared + routed experts,
first dense layers, group-limited routing, MTP), Qwen2-MoE and Qwen3-MoE (routed experts, a
shared expert for Qwen2-MoE), Mixtral (every layer MoE, no shared expert) and the dense GQA
families Llama, Mistral, Qwen2 and Qwen3.

A config describes the network only. Training settings it does not hold are arguments with
defaults (the CLI's options): sequence length (4096 tokens, one sequence per micro-batch),
precision (BF16 GEMMs unless asked for FP8), recomputation (none), optimizer bytes (FP32 master
and moments), and a default layout (1F1B, PP8, EP8 or the largest divisor of the experts below
it, 1024 GPUs, 4096 sequences per step). How config fields map onto the preset:

| preset field | config field(s) |
|---|---|
| layers, hidden, heads, vocab | num_hidden_layers, hidden_size, num_attention_heads, vocab_size |
| kv_heads, head_dim (GQA) | num_key_value_heads (default: heads), head_dim (default hidden/heads) |
| q_lora_rank, kv_lora_rank, qk_nope/rope_head_dim, v_head_dim (MLA) | same names |
| routed_experts | n_routed_experts (DeepSeek), num_experts (Qwen), num_local_experts (Mixtral) |
| experts_per_token | num_experts_per_tok |
| expert_intermediate | moe_intermediate_size (Mixtral: intermediate_size) |
| shared_experts | n_shared_experts; Qwen2-MoE: shared_expert_intermediate_size / expert width |
| dense_layers | first_k_dense_replace (DeepSeek); Qwen: the leading mlp_only_layers |
| ffn_intermediate | intermediate_size |
| max_nodes_per_token | topk_group when n_group > 1 (group-limited routing: DeepSeek deploys one
  expert group per node), else experts_per_token (no limit) |
| mtp_depth | num_nextn_predict_layers (DeepSeek-V3) |
| tied embeddings | tie_word_embeddings: noted in the description; every pipeline rank holding the
  embedding or the head keeps its own copy, so per-GPU memory does not change |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from dualsim.errors import ProfileError
from dualsim.workload.model import RECOMPUTE_OPTIONS, Model, parse_model

MLA_TYPES = ("deepseek_v2", "deepseek_v3")
MOE_TYPES = ("qwen2_moe", "qwen3_moe", "mixtral")
DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED = tuple(sorted(MLA_TYPES + MOE_TYPES + DENSE_TYPES))

DEFAULT_SEQ_LEN = 4096
DEFAULT_PRECISION = "bf16"
#: layout of a config (it has none): PP8, EP up to 8, 1024 GPUs, 4096 sequences per step
DEFAULT_LAYOUT = {"schedule": "1f1b", "ranks": 8, "gpus": 1024, "global_batch": 4096}
MEMORY = {"param_bytes": 2, "grad_bytes": 4, "optimizer_bytes": 12,
          "weight_grad_activation_fraction": 0.5}


def config_path(name_or_path: str | Path) -> Path:
    """The config.json a ``--model`` argument names (a file, or a folder holding one)."""
    p = Path(name_or_path)
    if p.is_dir():
        p = p / "config.json"
    return p


def is_hf_config(name_or_path: str) -> bool:
    """Whether a ``--model`` argument names a Hugging Face config (a .json file or a folder)."""
    p = Path(name_or_path)
    return p.suffix == ".json" or (p.is_dir() and (p / "config.json").is_file())


def read_config(path: Path) -> dict[str, Any]:
    """The parsed config.json; ProfileError for a missing, unreadable or non-object file."""
    if not path.is_file():
        raise ProfileError(f"model config {str(path)!r} does not exist; give a Hugging Face "
                           "config.json (or the checkpoint folder holding it)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"cannot read model config {str(path)!r}: {e}") from None
    except json.JSONDecodeError as e:
        raise ProfileError(f"model config {str(path)!r} is not valid JSON (line {e.lineno}, "
                           f"column {e.colno}: {e.msg})") from None
    except ValueError:  # an integer of more than 4300 digits
        raise ProfileError(f"model config {str(path)!r} holds an integer too long to read "
                           "(over 4300 digits)") from None
    except RecursionError:
        raise ProfileError(f"model config {str(path)!r} nests JSON too deeply to be a "
                           "config.json") from None
    if not isinstance(doc, dict):
        raise ProfileError(f"model config {str(path)!r} is not a Hugging Face config.json "
                           "(expected a JSON object with model_type)")
    return doc


class _Fields:
    """Typed access to a config's fields; every problem names the file and the field."""

    def __init__(self, doc: dict[str, Any], file: str, model_type: str) -> None:
        self.doc, self.file, self.model_type = doc, file, model_type

    def int(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        v = self.doc.get(key)
        if v is None:
            if default is None:
                raise ProfileError(f"{self.file}: missing field {key} (needed for model_type "
                                   f"{self.model_type})")
            return default
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ProfileError(f"{self.file}: field {key} must be an integer >= {minimum}, "
                               f"got {v!r}")
        return v

    def flag(self, key: str, default: bool) -> bool:
        v = self.doc.get(key, default)
        if not isinstance(v, bool):
            raise ProfileError(f"{self.file}: field {key} must be true or false, got {v!r}")
        return v

    def ints(self, key: str) -> list[int]:
        v = self.doc.get(key) or []
        if not (isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                            for x in v)):
            raise ProfileError(f"{self.file}: field {key} must be a list of layer indices, "
                               f"got {v!r}")
        return v


def _attention(f: _Fields, mla: bool) -> dict[str, Any]:
    heads = f.int("num_attention_heads")
    if mla:
        return {"heads": heads, "attention": "mla", "q_lora_rank": f.int("q_lora_rank", 0,
                                                                          minimum=0),
                "kv_lora_rank": f.int("kv_lora_rank"),
                "qk_nope_head_dim": f.int("qk_nope_head_dim"),
                "qk_rope_head_dim": f.int("qk_rope_head_dim"), "v_head_dim": f.int("v_head_dim")}
    hidden = f.int("hidden_size")
    head_dim = f.int("head_dim", hidden // heads if hidden % heads == 0 else None)
    kv = f.int("num_key_value_heads", heads)
    if heads % kv:
        raise ProfileError(f"{f.file}: field num_key_value_heads ({kv}) must divide "
                           f"num_attention_heads ({heads})")
    return {"heads": heads, "attention": "gqa", "kv_heads": kv, "head_dim": head_dim}


def _dense_prefix(f: _Fields, layers: int) -> int:
    """Qwen MoE: leading dense layers; other layouts of dense layers cannot be modelled."""
    step = f.int("decoder_sparse_step", 1)
    only = sorted(set(f.ints("mlp_only_layers")))
    if step != 1:
        raise ProfileError(f"{f.file}: decoder_sparse_step {step} (an MoE layer every {step} "
                           "layers) is not supported; dualsim models leading dense layers then "
                           "MoE layers (decoder_sparse_step 1)")
    if only != list(range(len(only))) or len(only) > layers:
        raise ProfileError(f"{f.file}: mlp_only_layers {only} is not supported; dualsim models "
                           "dense layers only as a prefix (e.g. [0, 1, 2])")
    return len(only)


def _experts(f: _Fields, mt: str, layers: int) -> dict[str, Any]:
    """Routed and shared experts, their widths and where the dense layers are."""
    if mt in MLA_TYPES:
        routed, shared = f.int("n_routed_experts"), f.int("n_shared_experts", 0, minimum=0)
        width, dense = f.int("moe_intermediate_size"), f.int("first_k_dense_replace", 0,
                                                             minimum=0)
        freq = f.int("moe_layer_freq", 1)
        if freq != 1:
            raise ProfileError(f"{f.file}: moe_layer_freq {freq} is not supported; dualsim "
                               "models leading dense layers then MoE layers (moe_layer_freq 1)")
    elif mt == "mixtral":
        routed, shared, width, dense = (f.int("num_local_experts"), 0,
                                        f.int("intermediate_size"), 0)
    else:
        routed, width = f.int("num_experts"), f.int("moe_intermediate_size")
        dense = _dense_prefix(f, layers)
        shared = 0
        if mt == "qwen2_moe":
            shared_width = f.int("shared_expert_intermediate_size", 0, minimum=0)
            shared = round(shared_width / width)
            if shared * width != shared_width:
                raise ProfileError(f"{f.file}: shared_expert_intermediate_size {shared_width} "
                                   f"is not a multiple of moe_intermediate_size {width}; "
                                   "dualsim models the shared expert as whole experts")
    k = f.int("num_experts_per_tok")
    if k > routed:
        raise ProfileError(f"{f.file}: field num_experts_per_tok ({k}) exceeds the {routed} "
                           "routed experts")
    if dense > layers:
        raise ProfileError(f"{f.file}: {dense} dense layers exceed num_hidden_layers {layers}")
    groups, topk_group = f.int("n_group", 1), f.int("topk_group", 1)
    limited = mt in MLA_TYPES and groups > 1 and topk_group < groups
    return {"routed_experts": routed, "shared_experts": shared, "experts_per_token": k,
            "expert_intermediate": width, "dense_layers": dense,
            "max_nodes_per_token": topk_group if limited else k,
            "ffn_intermediate": f.int("intermediate_size", width)}


def _ep(routed: int) -> int:
    """Default EP: 8, or the largest divisor of the routed experts below it (1 for dense)."""
    return max((e for e in range(1, min(8, max(routed, 1)) + 1) if routed and routed % e == 0),
               default=1)


def preset_table(doc: dict[str, Any], file: str, *, seq_len: int = DEFAULT_SEQ_LEN,
                 precision: str | None = None,
                 recompute: Sequence[str] | None = None) -> dict[str, Any]:
    """The raw preset table (as a TOML preset would give) of a parsed config.json."""
    mt = doc.get("model_type")
    if mt is None:
        raise ProfileError(f"{file}: missing field model_type; is it a Hugging Face "
                           "config.json? (supported model_types: " + ", ".join(SUPPORTED) + ")")
    if mt not in SUPPORTED:
        raise ProfileError(f"{file}: unsupported model_type {mt!r}; supported: "
                           + ", ".join(SUPPORTED))
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise ProfileError(f"--seq-len must be a positive number of tokens, got {seq_len!r}")
    prec = precision or DEFAULT_PRECISION
    if prec not in ("fp8", "bf16"):
        raise ProfileError(f"--precision must be fp8 or bf16, got {prec!r}")
    rec = list(recompute or [])
    bad = [r for r in rec if r not in RECOMPUTE_OPTIONS]
    if bad:
        raise ProfileError(f"unknown recomputation option {bad[0]!r}; allowed: "
                           + ", ".join(RECOMPUTE_OPTIONS))
    f = _Fields(doc, file, mt)
    layers = f.int("num_hidden_layers")
    dims: dict[str, Any] = {"layers": layers, "hidden": f.int("hidden_size"),
                            "vocab": f.int("vocab_size")}
    dims.update(_attention(f, mt in MLA_TYPES))
    if mt in DENSE_TYPES:
        dims.update({"dense_layers": layers, "ffn_intermediate": f.int("intermediate_size"),
                     "routed_experts": 0, "shared_experts": 0, "experts_per_token": 0,
                     "expert_intermediate": 0, "max_nodes_per_token": 1})
    else:
        dims.update(_experts(f, mt, layers))
    if "mla_up_proj" in rec and mt not in MLA_TYPES:
        raise ProfileError(f"recomputation option mla_up_proj needs MLA attention; model_type "
                           f"{mt} has GQA")
    dims["mtp_depth"] = f.int("num_nextn_predict_layers", 0, minimum=0) if mt == "deepseek_v3" \
        else 0
    tied = f.flag("tie_word_embeddings", False)
    stem = Path(file).stem
    name = str(doc.get("_name_or_path") or (Path(file).parent.name if stem == "config" else stem))
    experts = (f"{dims['routed_experts']} experts top-{dims['experts_per_token']}"
               + (f" + {dims['shared_experts']} shared" if dims["shared_experts"] else "")
               if dims["routed_experts"] else "dense")
    description = (f"{mt} from {Path(file).name}: {layers} layers, hidden {dims['hidden']}, "
                   f"{dims['attention'].upper()}, {experts}"
                   + (", tied embeddings" if tied else "") + f"; {prec.upper()}, seq {seq_len}")
    layout = dict(DEFAULT_LAYOUT)
    layout.update({"ep": _ep(dims["routed_experts"]), "sequence": seq_len,
                   "microbatch_tokens": seq_len})
    return {"name": name, "description": description, "model": dims,
            "precision": {"gemm": prec, "attention": "bf16", "recompute": rec},
            "memory": dict(MEMORY), "layout": layout}


def load_hf_config(name_or_path: str | Path, *, seq_len: int = DEFAULT_SEQ_LEN,
                   precision: str | None = None,
                   recompute: Sequence[str] | None = None) -> Model:
    """A Model from a Hugging Face config.json (or a folder holding one)."""
    path = config_path(name_or_path)
    doc = read_config(path)
    return parse_model(preset_table(doc, str(path), seq_len=seq_len, precision=precision,
                                    recompute=recompute), str(path))

