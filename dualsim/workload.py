"""Workloads: model presets (TOML) and the per-stage work they imply under a training layout.

A model preset gives the dimensions (DESIGN.md §6), precisions, recomputation options, memory
bytes per parameter and the published training layout. From a preset and a layout (pipeline ranks,
EP, data parallel GPUs, micro-batch tokens, layer-to-stage assignment) this module derives, per
layer slice (= chain position): the FLOPs of every compute piece (attention, MLP, head) for the
forward, input-gradient and weight-gradient passes, the parameters held, and the activation bytes
of one micro-batch. Everything is per token here; costs.py multiplies by tokens and turns FLOPs
and bytes into seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from dualsim.errors import ProfileError
from dualsim.hardware import builtin_files, read_toml, resolve

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
RECOMPUTE_OPTIONS = ("rmsnorm", "mla_up_proj", "swiglu_output", "full")
FP8_WITH_SCALES = 1 + 4 / 128  # bytes per FP8 element with its 1/128 FP32 scales
FLASH_BWD_FACTOR = 2.5  # FlashAttention backward FLOPs / forward FLOPs (recomputes the scores)


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
                raise ProfileError(f"{where} must be a non-negative integer, got {v!r}")
            if typ == _FLOAT and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ProfileError(f"{where} must be a non-negative number, got {v!r}")
            if typ == _STR and not isinstance(v, str):
                raise ProfileError(f"{where} must be a string, got {v!r}")
            if typ == _LIST and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise ProfileError(f"{where} must be a list of strings, got {v!r}")


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
    return Model(str(raw.get("name", file)), str(raw.get("description", "")), file, dict(m),
                 prec["gemm"], prec["attention"], tuple(prec["recompute"]),
                 {k: float(v) for k, v in raw["memory"].items()}, dict(lay))


def load_model(name_or_path: str) -> Model:
    """A built-in preset by name (deepseek-v3, small-moe, llama-70b) or a user's TOML file."""
    path = resolve(name_or_path, "models", "model")
    return parse_model(read_toml(path, "model"), str(path))


def list_models() -> list[tuple[str, str]]:
    """(name, one-line description) of the built-in model presets."""
    return [(n, str(read_toml(p, "model").get("description", "")))
            for n, p in builtin_files("models").items()]


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


# ---- per-token work of the pieces ------------------------------------------------------------

@dataclass(frozen=True)
class Gemm:
    """FLOPs per token of one kernel class: ``kind`` names the profile's efficiency factor."""

    flops: float
    dtype: str
    kind: str


@dataclass(frozen=True)
class Piece:
    """One compute piece of a unit (attn, mlp, head): kernels of its F, I and W passes."""

    name: str
    fwd: tuple[Gemm, ...]
    bwd_input: tuple[Gemm, ...]
    bwd_weight: tuple[Gemm, ...]


@dataclass(frozen=True)
class Unit:
    """A layer (or embedding / head / MTP block) of the model, per token."""

    name: str
    moe: bool
    pieces: tuple[Piece, ...]
    params: float          # parameters replicated on every EP rank
    expert_params: float   # routed-expert parameters (sharded over EP)
    activation_bytes: float  # per token, held from forward until backward
    model_flops: float     # forward FLOPs per token counted for MFU (no recomputation)


def _gemm_kind(model: Model, mlp: bool) -> tuple[str, str]:
    if model.gemm_dtype == "fp8":
        return "fp8", "expert_gemm" if mlp else "dense_gemm"
    return "bf16", "bf16_gemm"


def _attention(model: Model, seq: int) -> tuple[Piece, float, float, float]:
    """(piece, params, activation bytes, model flops) of one attention block, per token."""
    d, h, H = model.dims, model.hidden, model.heads
    a8 = model.gemm_input_bytes
    dt, kind = _gemm_kind(model, mlp=False)
    rec = model.recompute
    if d["attention"] == "mla":
        dn, dr, dv = d["qk_nope_head_dim"], d["qk_rope_head_dim"], d["v_head_dim"]
        ql, kvl = d.get("q_lora_rank", 0), d["kv_lora_rank"]
        q_down = h * ql if ql else 0
        q_up = (ql if ql else h) * H * (dn + dr)
        kv_down, kv_up, o = h * (kvl + dr), kvl * H * (dn + dv), H * dv * h
        params = q_down + q_up + kv_down + kv_up + o + 2 * h + ql + kvl
        up = q_up + kv_up if ql else kv_up
        proj = 2 * (q_down + q_up + kv_down + kv_up + o)
        core = H * seq * (dn + dr + dv)  # causal: half of 2*H*S*(dqk+dv)
        act = (ql + kvl + dr) * 2 + H * dv * a8 + H * 4
        if "mla_up_proj" not in rec:
            act += H * (dn + dr) * 2 * 2 + H * dv * 2
        recompute_flops = 2 * up if "mla_up_proj" in rec else 0
    else:
        hd, kvh = d["head_dim"], d["kv_heads"]
        params = h * H * hd + 2 * h * kvh * hd + H * hd * h + 2 * h
        proj = 2 * params
        core = H * seq * 2 * hd
        act = (H + 2 * kvh) * hd * 2 + H * hd * a8 + H * 4
        recompute_flops = 0
    act += h * 2 + (0 if "rmsnorm" in rec else h * a8)  # residual input (+ normed input)
    at_dt = model.attention_dtype
    piece = Piece("attn",
                  (Gemm(proj, dt, kind), Gemm(core, at_dt, "attention_fwd")),
                  (Gemm(proj + recompute_flops, dt, kind),
                   Gemm(FLASH_BWD_FACTOR * core, at_dt, "attention_bwd")),
                  (Gemm(proj, dt, kind),))
    return piece, params, act, proj + core


def _mlp(model: Model, moe: bool) -> tuple[Piece, float, float, float, float]:
    """(piece, params, expert params, activation bytes, model flops) of one FFN, per token."""
    d, h = model.dims, model.hidden
    a8 = model.gemm_input_bytes
    dt, kind = _gemm_kind(model, mlp=True)
    keep_out = "swiglu_output" not in model.recompute
    act = h * 2 + (0 if "rmsnorm" in model.recompute else h * a8)
    if moe:
        k, s, ie, E = (d["experts_per_token"], d["shared_experts"], d["expert_intermediate"],
                       d["routed_experts"])
        flops = 6 * h * ie * (k + s)
        gate = 2 * h * E
        params, experts = s * 3 * h * ie + h * E + 2 * h, E * 3 * h * ie
        act += E * 4 + k * h * a8 + (h * a8 if s else 0) + (k + s) * ie * a8 * (2 + keep_out)
        kernels: tuple[Gemm, ...] = (Gemm(flops, dt, kind), Gemm(gate, "bf16", "bf16_gemm"))
    else:
        ffn = d["ffn_intermediate"]
        flops, gate = 6 * h * ffn, 0
        params, experts = 3 * h * ffn + 2 * h, 0.0
        act += h * a8 + ffn * a8 * (2 + keep_out)
        kernels = (Gemm(flops, dt, kind),)
    return Piece("mlp", kernels, kernels, kernels), params, experts, act, flops + gate


def _head(model: Model) -> Piece:
    g = (Gemm(2 * model.hidden * model.vocab, "bf16", "bf16_gemm"),)
    return Piece("head", g, g, g)


def model_units(model: Model, seq: int) -> list[Unit]:
    """The model in order: embedding, layers, head, then the MTP modules (each a block + head)."""
    h, V = model.hidden, model.vocab
    units = [Unit("embed", False, (), V * h, 0.0, 0.0, 0.0)]

    def block(name: str, moe: bool, extra_params: float = 0.0, extra_flops: float = 0.0) -> Unit:
        attn, ap, aa, af = _attention(model, seq)
        if extra_flops:
            dt, kind = _gemm_kind(model, mlp=False)
            g = Gemm(extra_flops, dt, kind)
            attn = Piece("attn", attn.fwd + (g,), attn.bwd_input + (g,), attn.bwd_weight + (g,))
        mlp, mp, me, ma, mf = _mlp(model, moe)
        pieces = (attn, mlp)
        act = aa + ma
        if "full" in model.recompute:  # keep only the block's input; rerun its forward in I
            pieces = tuple(Piece(p.name, p.fwd, p.fwd + p.bwd_input, p.bwd_weight)
                           for p in pieces)
            act = h * 2.0
        return Unit(name, moe, pieces, ap + mp + extra_params, me, act, af + mf + extra_flops)

    for i in range(model.layers):
        units.append(block(f"layer{i}", model.layer_is_moe(i)))
    head_flops = 2 * h * V
    head_act = h * 2 + V * 2  # input and BF16 logits kept for the loss backward
    units.append(Unit("head", False, (_head(model),), V * h + h, 0.0, head_act, head_flops))
    for k in range(model.dims["mtp_depth"]):
        # MTP module: RMSNorms + projection of [h; emb] (2h -> h) + one block; shares emb/head
        units.append(block(f"mtp{k}", model.is_moe, 2 * h * h + 2 * h, 2 * 2 * h * h))
        units.append(Unit(f"mtp{k}_head", False, (_head(model),), 0.0, 0.0, head_act,
                          head_flops))
    return units


# ---- layout: layers to slices ------------------------------------------------------------------

@dataclass(frozen=True)
class Slice:
    """The units at one chain position (the same layer slice in every chain)."""

    position: int
    units: tuple[Unit, ...]

    @property
    def layers(self) -> int:
        return sum(1 for u in self.units if u.name.startswith("layer"))


@dataclass(frozen=True)
class Layout:
    """A model placed on a cluster: parallel sizes and the layer slices of the pipeline."""

    model: Model
    ranks: int
    microbatches: int
    ep: int
    gpus: int
    microbatch_tokens: int
    sequence: int
    slices: tuple[Slice, ...]
    holders: tuple[tuple[int, ...], ...] = field(default=())  # position -> ranks holding it

    @property
    def pipelines(self) -> int:
        """Data-parallel replicas of the whole pipeline (gpus / ranks)."""
        return self.gpus // self.ranks

    @property
    def tokens_per_step(self) -> int:
        return self.microbatches * self.microbatch_tokens * self.pipelines

    @property
    def model_flops_per_token(self) -> float:
        """Forward + backward model FLOPs per token (3x forward, no recomputation)."""
        return 3 * sum(u.model_flops for s in self.slices for u in s.units)


def check_parallel(model: Model, ranks: int, ep: int, gpus: int, microbatch_tokens: int) -> None:
    """One clear ProfileError line for a layout that cannot exist."""
    for flag, value in (("--gpus", gpus), ("--ranks", ranks), ("--ep", ep),
                        ("--microbatch-tokens", microbatch_tokens)):
        if value <= 0:
            raise ProfileError(f"{flag} must be a positive integer, got {value}")
    if gpus % ranks:
        raise ProfileError(f"--gpus {gpus} is not divisible by the {ranks} pipeline ranks; "
                           "use a multiple of --ranks")
    if ep > gpus:
        raise ProfileError(f"--ep {ep} is larger than --gpus {gpus}; EP groups come from the GPUs: "
                           f"pass --ep {gpus} or less (without --ep the model preset's "
                           "default is used)")
    if (gpus // ranks) % ep:
        raise ProfileError(f"--ep {ep} must divide the {gpus // ranks} data-parallel GPUs per "
                           f"pipeline stage (gpus / ranks); pass --ep explicitly (without it "
                           "the model preset's default is used)")
    if not model.is_moe and ep != 1:
        raise ProfileError(f"model {model.name} has no experts: use --ep 1")
    if model.is_moe and model.routed_experts % ep:
        raise ProfileError(f"--ep {ep} must divide the {model.routed_experts} routed experts")


def _weight(u: Unit) -> float:
    """Balancing weight of a unit: FLOPs, BF16 ones counted double (half the peak)."""
    return sum(g.flops * (2 if g.dtype == "bf16" else 1) for p in u.pieces for g in p.fwd)


def assign_layers(units: Sequence[Unit], layers: int, holders: Sequence[Sequence[int]],
                  ranks: int, weight: Callable[[Unit], float] = _weight) -> list[int]:
    """Layers per chain position, balancing the load of the ranks (which hold positions).

    The first position carries the embedding, the last the head and MTP modules, so those get
    fewer layers. Greedy water-filling with the mean layer weight; ties go to the emptier slice.
    """
    n = len(holders)
    per_layer = sum(weight(u) for u in units if u.name.startswith("layer")) / max(1, layers)
    extra = [0.0] * n
    extra[0] += sum(weight(u) for u in units if u.name == "embed")
    extra[-1] += sum(weight(u) for u in units if not u.name.startswith(("layer", "embed")))
    load = [0.0] * ranks
    for p, hs in enumerate(holders):
        for r in hs:
            load[r] += extra[p]
    counts = [0] * n
    for _ in range(layers):
        best = min(range(n), key=lambda p: (max(load[r] + per_layer for r in holders[p]),
                                            counts[p], p))
        counts[best] += 1
        for r in holders[best]:
            load[r] += per_layer
    return counts


def build_layout(model: Model, ranks: int, microbatches: int, holders: Sequence[Sequence[int]],
                 *, ep: int, gpus: int, microbatch_tokens: int, sequence: int | None = None,
                 layers_per_stage: Sequence[int] | None = None,
                 weight: Callable[[Unit], float] = _weight) -> Layout:
    """Place ``model`` on a pipeline whose chain position p is held by ranks ``holders[p]``.

    ``weight`` (a unit's cost, e.g. its F+I+W seconds on a profile) balances the layers.
    """
    check_parallel(model, ranks, ep, gpus, microbatch_tokens)
    seq = min(sequence or model.layout["sequence"], microbatch_tokens)
    units = model_units(model, seq)
    n = len(holders)
    if layers_per_stage is None:
        counts = assign_layers(units, model.layers, holders, ranks, weight)
    else:
        counts = list(layers_per_stage)
        if len(counts) != n or sum(counts) != model.layers or min(counts) < 0:
            raise ProfileError(f"layers per stage {counts} must be {n} non-negative numbers "
                               f"summing to the model's {model.layers} layers")
    layer_units = [u for u in units if u.name.startswith("layer")]
    tail = tuple(u for u in units if not u.name.startswith(("layer", "embed")))
    slices, at = [], 0
    for p, c in enumerate(counts):
        us = tuple(layer_units[at:at + c])
        at += c
        if p == 0:
            us = (units[0],) + us
        if p == n - 1:
            us = us + tail
        slices.append(Slice(p, us))
    return Layout(model, ranks, microbatches, ep, gpus, microbatch_tokens, seq, tuple(slices),
                  tuple(tuple(h) for h in holders))
