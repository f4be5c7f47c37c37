"""Per-token work of a model: its units (embedding, layers, head, MTP) and their compute pieces.

Per layer: the attention block (MLA or GQA projections and the attention core) and the FFN
(dense or MoE: routed and shared experts plus the router), each a Piece with the kernels of its
forward, input-gradient and weight-gradient passes; parameters, activation bytes held from the
forward to the backward, and the model FLOPs counted for MFU. Everything is per token; the cost
model (dualsim/cluster/) multiplies by tokens and turns FLOPs into seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualsim.workload.model import Model

FLASH_BWD_FACTOR = 2.5  # FlashAttention backward FLOPs / forward FLOPs (recomputes the scores)


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
