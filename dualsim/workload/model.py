"""Model presets: the validated description of a model (dimensions, precision, memory, layout).

A model preset (TOML, built-in or a user's file) gives the dimensions, precisions,
recomputation options, memory bytes per parameter and the published training layout.
``units.py`` turns it into per-token work, ``layout.py`` places it on a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dualsim.datafiles import (builtin_files, check_description, check_name, read_toml,
                               resolve)
from dualsim.errors import ProfileError, clip

_INT, _STR, _FLOAT, _LIST = "int", "str", "float", "list"
#: section -> key -> (type, required)
MODEL_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "model": {
        "layers": (_INT, True), "dense_layers": (_INT, True), "hidden": (_INT, True),
        "heads": (_INT, True), "attention": (_STR, True), "q_lora_rank": (_INT, False),
        "kv_lora_rank": (_INT, False), "qk_nope_head_dim": (_INT, False),
        "qk_rope_head_dim": (_INT, False), "v_head_dim": (_INT, False),
        "kv_heads": (_INT, False), "head_dim": (_INT, False),
        "ffn_intermediate": (_INT, True), "routed_experts": (_INT, True),
        "shared_experts": (_INT, True), "experts_per_token": (_INT, True),
        "expert_intermediate": (_INT, True), "max_nodes_per_token": (_INT, True),
        "vocab": (_INT, True), "mtp_depth": (_INT, True),
    },
    "precision": {"gemm": (_STR, True), "attention": (_STR, True), "recompute": (_LIST, True)},
    "memory": {
        "param_bytes": (_FLOAT, True), "grad_bytes": (_FLOAT, True),
        "optimizer_bytes": (_FLOAT, True), "weight_grad_activation_fraction": (_FLOAT, True),
    },
    "layout": {
        "schedule": (_STR, True), "ranks": (_INT, True), "ep": (_INT, True),
        "gpus": (_INT, True), "sequence": (_INT, True), "global_batch": (_INT, True),
        "microbatch_tokens": (_INT, True),
    },
}
#: the (lo, hi) every number of a type may take, unless MODEL_RANGES names the field: a value
#: outside is a typo or hostile (layers = 10**9 would take hours, a NaN byte count poisons
#: every memory figure); the message gives the range
TYPE_RANGES: dict[str, tuple[float, float]] = {_INT: (0, 10**9), _FLOAT: (0.0, 1e6)}
_DIM, _SMALL = (0, 1_000_000), (0, 100_000)
MODEL_RANGES: dict[str, tuple[float, float]] = {
    "model.layers": (1, 1000), "model.dense_layers": (0, 1000), "model.mtp_depth": (0, 16),
    "model.hidden": (1, 1_000_000), "model.heads": (1, 100_000), "model.vocab": (1, 10**8),
    "model.ffn_intermediate": (1, 10**7), "model.expert_intermediate": (0, 10**7),
    "model.routed_experts": _SMALL, "model.shared_experts": (0, 1000),
    "model.experts_per_token": _SMALL, "model.max_nodes_per_token": _SMALL,
    "model.kv_heads": _SMALL, "model.head_dim": _SMALL, "model.q_lora_rank": _DIM,
    "model.kv_lora_rank": _DIM, "model.qk_nope_head_dim": _SMALL,
    "model.qk_rope_head_dim": _SMALL, "model.v_head_dim": _SMALL,
    "memory.param_bytes": (0.0, 64.0), "memory.grad_bytes": (0.0, 64.0),
    "memory.optimizer_bytes": (0.0, 64.0), "memory.weight_grad_activation_fraction": (0.0, 1.0),
    "layout.ranks": (1, 4096), "layout.ep": (1, 10**6), "layout.gpus": (1, 10**7),
    "layout.sequence": (1, 10**7), "layout.global_batch": (1, 10**9),
    "layout.microbatch_tokens": (1, 10**8),
}


def field_range(section: str, key: str) -> tuple[float, float]:
    """The inclusive (lo, hi) of a numeric model field."""
    typ = MODEL_SCHEMA[section][key][0]
    return MODEL_RANGES.get(f"{section}.{key}", TYPE_RANGES[typ])


RECOMPUTE_OPTIONS = ("rmsnorm", "mla_up_proj", "swiglu_output", "full")
FP8_WITH_SCALES = 1 + 4 / 128  # bytes per FP8 element with its 1/128 FP32 scales


@dataclass(frozen=True)
class Model:
    """A validated model preset: ``dims`` (the [model] table) plus precision, memory, layout."""

    name: str
    description: str
    source: str
    dims: dict[str, Any]
    gemm_dtype: str
    attention_dtype: str
    recompute: tuple[str, ...]
    memory: dict[str, float]
    layout: dict[str, Any]

    def __getattr__(self, key: str) -> Any:  # dims as attributes: model.hidden, model.vocab...
        dims = self.__dict__.get("dims", {})
        if key in dims:
            return dims[key]
        raise AttributeError(key)

    @property
    def is_moe(self) -> bool:
        return self.dims["routed_experts"] > 0

    def layer_is_moe(self, i: int) -> bool:
        return self.is_moe and i >= self.dims["dense_layers"]

    @property
    def gemm_input_bytes(self) -> float:
        """Bytes per element of a GEMM input: FP8 plus one FP32 scale per 128, or BF16."""
        return FP8_WITH_SCALES if self.gemm_dtype == "fp8" else 2.0


def _check(raw: dict[str, Any], file: str) -> None:
    top = set(raw) - {"name", "description", *MODEL_SCHEMA}
    if top:
        raise ProfileError(f"{file}: unknown field {sorted(top)[0]!r}; allowed sections: "
                           f"{', '.join(MODEL_SCHEMA)}")
    for section, keys in MODEL_SCHEMA.items():
        sec = raw.get(section)
        if not isinstance(sec, dict):
            raise ProfileError(f"{file}: missing section [{section}]")
        extra = set(sec) - set(keys)
        if extra:
            raise ProfileError(f"{file}: unknown field {section}.{sorted(extra)[0]}")
        for key, (typ, required) in keys.items():
            where = f"{file}: field {section}.{key}"
            if key not in sec:
                if required:
                    raise ProfileError(f"{file}: missing field {section}.{key}")
                continue
            v = sec[key]
            if typ == _INT and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ProfileError(f"{where} must be a non-negative integer, got {clip(v)}")
            if typ == _FLOAT and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ProfileError(f"{where} must be a non-negative number, got {clip(v)}")
            if typ in (_INT, _FLOAT):
                lo, hi = field_range(section, key)
                if not lo <= v <= hi:  # also refuses NaN
                    raise ProfileError(f"{where} must be between {lo:g} and {hi:g}, got {clip(v)}")
            if typ == _STR and not isinstance(v, str):
                raise ProfileError(f"{where} must be a string, got {clip(v)}")
            if typ == _LIST and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise ProfileError(f"{where} must be a list of strings, got {clip(v)}")


def parse_model(raw: dict[str, Any], file: str) -> Model:
    """Validate a parsed preset (see MODEL_SCHEMA) and build a Model."""
    _check(raw, file)
    m, prec, lay = raw["model"], raw["precision"], raw["layout"]
    for key in ("layers", "hidden", "heads", "vocab", "ffn_intermediate"):
        if m[key] <= 0:
            raise ProfileError(f"{file}: field model.{key} must be positive")
    if m["attention"] not in ("mla", "gqa"):
        raise ProfileError(f"{file}: field model.attention must be \"mla\" or \"gqa\"")
    need = (("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
            if m["attention"] == "mla" else ("kv_heads", "head_dim"))
    for key in need:
        if not m.get(key):
            raise ProfileError(f"{file}: missing field model.{key} (needed by "
                               f"{m['attention']} attention)")
    if m["routed_experts"] > 0 and not (0 < m["experts_per_token"] <= m["routed_experts"]
                                        and m["expert_intermediate"] > 0):
        raise ProfileError(f"{file}: field model.experts_per_token must be in "
                           "1..routed_experts and model.expert_intermediate positive")
    if m["routed_experts"] > 0 and m["max_nodes_per_token"] <= 0:
        raise ProfileError(f"{file}: field model.max_nodes_per_token must be positive for a "
                           "model with routed experts")
    for key in ("gemm", "attention"):
        if prec[key] not in ("fp8", "bf16"):
            raise ProfileError(f"{file}: field precision.{key} must be \"fp8\" or \"bf16\"")
    bad = [r for r in prec["recompute"] if r not in RECOMPUTE_OPTIONS]
    if bad:
        raise ProfileError(f"{file}: field precision.recompute has unknown option {bad[0]!r}; "
                           f"allowed: {', '.join(RECOMPUTE_OPTIONS)}")
    for key in ("ranks", "ep", "gpus", "sequence", "global_batch", "microbatch_tokens"):
        if lay[key] <= 0:
            raise ProfileError(f"{file}: field layout.{key} must be positive")
    if not raw["memory"]["weight_grad_activation_fraction"] <= 1:
        raise ProfileError(f"{file}: field memory.weight_grad_activation_fraction must be <= 1")
    if m["dense_layers"] > m["layers"]:
        raise ProfileError(f"{file}: field model.dense_layers ({m['dense_layers']}) must be at "
                           f"most model.layers ({m['layers']})")
    return Model(file if "name" not in raw else check_name(raw["name"], file),
                 check_description(raw.get("description", ""), file), file, dict(m),
                 prec["gemm"], prec["attention"], tuple(prec["recompute"]),
                 {k: float(v) for k, v in raw["memory"].items()}, dict(lay))


def load_model(name_or_path: str) -> Model:
    """A built-in preset by name (deepseek-v3, small-moe, llama-70b), a user's TOML file, or a
    Hugging Face config.json (or checkpoint folder), read by hf_config.py with its defaults."""
    from dualsim.workload.hf_config import is_hf_config, load_hf_config

    if is_hf_config(name_or_path):
        return load_hf_config(name_or_path)
    path = resolve(name_or_path, "models", "model")
    return parse_model(read_toml(path, "model"), str(path))


def list_models() -> list[tuple[str, str]]:
    """(name, one-line description) of the built-in model presets."""
    return [(n, str(read_toml(p, "model").get("description", "")))
            for n, p in builtin_files("models").items()]


def with_training(model: Model, *, seq_len: int | None = None,
                  recompute: str | None = None) -> Model:
    """The model with the CLI's training settings applied (None keeps the preset's).

    ``seq_len`` (``--seq-len``): tokens per sequence, one sequence per micro-batch (sets the
    layout's sequence and micro-batch tokens). ``recompute`` (``--recompute``): comma-separated
    options of RECOMPUTE_OPTIONS, or "none"; it also sets what activations are stored, since
    every option drops the activations it recomputes (docs/hardware-mode.md).
    """
    changes: dict[str, Any] = {}
    if seq_len is not None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
            raise ProfileError(f"--seq-len must be a positive number of tokens, got {seq_len!r}")
        changes["layout"] = dict(model.layout, sequence=seq_len, microbatch_tokens=seq_len)
    if recompute is not None:
        opts = [o.strip() for o in recompute.split(",") if o.strip()]
        if opts == ["none"]:
            opts = []
        bad = [o for o in opts if o not in RECOMPUTE_OPTIONS]
        if bad or (not opts and recompute.strip() != "none"):
            raise ProfileError(f"--recompute: unknown option {(bad or [recompute])[0]!r}; give "
                               f"none or a comma-separated list of {', '.join(RECOMPUTE_OPTIONS)}")
        if "mla_up_proj" in opts and model.dims["attention"] != "mla":
            raise ProfileError(f"--recompute mla_up_proj needs MLA attention; model "
                               f"{model.name} has {model.dims['attention'].upper()}")
        changes["recompute"] = tuple(dict.fromkeys(opts))
    return replace(model, **changes) if changes else model


def default_layout(model: Model) -> dict[str, Any]:
    """The preset's published layout, with micro-batches derived from the global batch."""
    lay = model.layout
    pipelines = lay["gpus"] // lay["ranks"]
    tokens = lay["global_batch"] * lay["sequence"]
    mbs = max(1, tokens // (lay["microbatch_tokens"] * max(1, pipelines)))
    return {"schedule": lay["schedule"], "ranks": lay["ranks"], "microbatches": mbs,
            "ep": lay["ep"], "gpus": lay["gpus"], "microbatch_tokens": lay["microbatch_tokens"],
            "sequence": lay["sequence"], "global_batch": lay["global_batch"],
            "layers_per_stage": None}
