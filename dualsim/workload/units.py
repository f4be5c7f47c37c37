"""Per-token work of a model: its units (embedding, layers, head, MTP) and their compute pieces.

Per layer: the attention block (MLA or GQA projections and the attention core) and the FFN
(dense or MoE: routed and shared experts plus the router), each a Piece with the kernels of its
forward, input-gradient and weight-gradient passes. A kernel is one of

* :class:`Gemm`, a weight GEMM by shape: per token, ``rows`` rows of width ``k`` times a
  ``[k, n]`` weight (routed experts: ``experts_per_token`` rows, split over the ``groups``
  experts one GPU holds). Its input gradient (dgrad) is the ``[rows, n] @ [n, k]`` GEMM, its
  weight gradient (wgrad) the ``[k, rows] @ [rows, n]`` GEMM, with the same FLOPs;
* :class:`AttentionCore`, the FlashAttention kernel: FLOPs at a flat efficiency;
* :class:`Elementwise`, the memory-bound kernels around them (norms, FP8 quantization, RoPE
  and q/k/v assembly, token permutation, SwiGLU, residual adds, the loss): bytes per token.

Also per unit: parameters, activation bytes held from the forward to the backward (split into
the attention output kept for FlashAttention's backward, the logits kept for the loss, and the
rest), and the model FLOPs counted for MFU. Everything is per token; dualsim/cluster/compute.py
turns shapes, FLOPs and bytes into seconds for a number of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Union

from dualsim.workload.model import FP8_WITH_SCALES, Model

FLASH_BWD_FACTOR = 2.5  # FlashAttention backward FLOPs / forward FLOPs (recomputes the scores)
#: DeepSeek-V3 report s3.3.4: the attention output (the input of the output projection, also
#: read by the attention backward) is cached once in a custom E5M6 format, 12 bits per element
E5M6_BYTES = 1.5
LSE_BYTES = 4  # FlashAttention's FP32 log-sum-exp per head and token
ROLES = ("fprop", "dgrad", "wgrad")


@dataclass(frozen=True)
class Gemm:
    """One weight GEMM, per token: ``rows`` rows of width ``k`` times a ``[k, n]`` weight."""

    name: str
    n: int
    k: int
    dtype: str
    rows: float = 1.0      # GEMM rows per token (routed experts: experts_per_token)
    groups: int = 1        # experts sharing one grouped kernel on a GPU
    routed: bool = False   # rows follow the routing (the hottest GPU gets more)
    role: str = "fprop"    # fprop (forward), dgrad (input gradient), wgrad (weight gradient)

    @property
    def flops(self) -> float:
        """FLOPs per token (the same for all three roles)."""
        return 2.0 * self.rows * self.n * self.k

    def as_role(self, role: str) -> "Gemm":
        return replace(self, role=role)


@dataclass(frozen=True)
class AttentionCore:
    """The attention core (FlashAttention): FLOPs per token at the profile's flat ``kind``
    efficiency (attention_fwd / attention_bwd)."""

    flops: float
    kind: str
    dtype: str = "bf16"


@dataclass(frozen=True)
class Elementwise:
    """Memory-bound kernels of a pass: HBM bytes read + written per token."""

    nbytes: float


Kernel = Union[Gemm, AttentionCore, Elementwise]


@dataclass(frozen=True)
class Piece:
    """One compute piece of a unit (attn, mlp, head): kernels of its F, I and W passes."""

    name: str
    fwd: tuple[Kernel, ...]
    bwd_input: tuple[Kernel, ...]
    bwd_weight: tuple[Kernel, ...]

    @property
    def gemms(self) -> tuple[Gemm, ...]:
        """The forward GEMMs."""
        return tuple(k for k in self.fwd if isinstance(k, Gemm))

    def __hash__(self) -> int:
        """The fields' hash, computed once: a piece keys the per-piece time memo
        (cluster/compute.py piece_times), looked up for every piece of every configuration."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.name, self.fwd, self.bwd_input, self.bwd_weight))
            object.__setattr__(self, "_hash", h)
        return h


@dataclass(frozen=True)
class Unit:
    """A layer (or embedding / head / MTP block) of the model, per token."""

    name: str
    moe: bool
    pieces: tuple[Piece, ...]
    params: float          # parameters replicated on every EP rank
    expert_params: float   # routed-expert parameters (sharded over EP)
    activation_bytes: float  # per token, held from forward until backward (all of it)
    model_flops: float     # forward FLOPs per token counted for MFU (no recomputation)
    attn_output_bytes: float = 0.0  # of which: attention output + LSE for the attention backward
    logits_bytes: float = 0.0       # of which: logits kept for the loss backward


def _piece(name: str, gemms: tuple[Gemm, ...], stream: float, *,
           core: float = 0.0, recompute: tuple[Gemm, ...] = ()) -> Piece:
    """A piece from its forward GEMMs, attention core FLOPs and elementwise bytes.

    I: the GEMMs' dgrad, the recomputed GEMMs' forward, FlashAttention's backward, and twice the
    forward's elementwise bytes (a backward elementwise kernel reads its input and the output
    gradient and writes the input gradient). W: the GEMMs' wgrad.
    """
    fwd: list[Kernel] = list(gemms)
    bwd: list[Kernel] = [g.as_role("dgrad") for g in gemms] + list(recompute)
    if core:
        fwd.append(AttentionCore(core, "attention_fwd"))
        bwd.append(AttentionCore(FLASH_BWD_FACTOR * core, "attention_bwd"))
    if stream:
        fwd.append(Elementwise(stream))
        bwd.append(Elementwise(2 * stream))
    return Piece(name, tuple(fwd), tuple(bwd), tuple(g.as_role("wgrad") for g in gemms))


def _quantize(model: Model, width: float) -> float:
    """Bytes per token to quantize a BF16 row of ``width`` to FP8 (none for a BF16 model)."""
    return (2 + FP8_WITH_SCALES) * width if model.gemm_dtype == "fp8" else 0.0


def _attention_output_bytes(model: Model, width: int) -> float:
    """Attention output (the output projection's input) + LSE, kept for the backward."""
    per = E5M6_BYTES if model.gemm_dtype == "fp8" else 2.0
    return width * per + model.heads * LSE_BYTES


def _attention(model: Model, seq: int, moe: bool) -> tuple[Piece, float, float, float, float]:
    """(piece, params, activation bytes, attention output bytes, model flops), per token.

    The piece ends where the FFN's all-to-all would start (see _ffn_entry)."""
    d, h, H = model.dims, model.hidden, model.heads
    a8 = model.gemm_input_bytes
    dt = model.gemm_dtype
    rec = model.recompute
    q = lambda width: _quantize(model, width)  # noqa: E731
    if d["attention"] == "mla":
        dn, dr, dv = d["qk_nope_head_dim"], d["qk_rope_head_dim"], d["v_head_dim"]
        ql, kvl = d.get("q_lora_rank", 0), d["kv_lora_rank"]
        ups = (Gemm("kv_up", H * (dn + dv), kvl, dt),)
        if ql:
            gemms: tuple[Gemm, ...] = (Gemm("q_down", ql, h, dt),)
            ups = (Gemm("q_up", H * (dn + dr), ql, dt),) + ups
        else:
            gemms = (Gemm("q", H * (dn + dr), h, dt),)
        gemms += (Gemm("kv_down", kvl + dr, h, dt),) + ups + (Gemm("o", h, H * dv, dt),)
        norms = 2 * h + ql + kvl
        core = H * seq * (dn + dr + dv)  # causal: half of 2*H*S*(dqk+dv)
        attn_out = _attention_output_bytes(model, H * dv)
        act = (ql + kvl + dr) * 2 + attn_out
        if "mla_up_proj" not in rec:
            act += H * (dn + dr) * 2 * 2 + H * dv * 2
        recompute = ups if "mla_up_proj" in rec else ()
        # latent norms + their quantization, RoPE and the q/k/v assembly (read + write, BF16)
        stream = 4 * (ql + kvl) + q(ql + kvl) + 4 * H * (2 * (dn + dr) + dv) + q(H * dv)
    else:
        hd, kvh = d["head_dim"], d["kv_heads"]
        gemms = (Gemm("qkv", (H + 2 * kvh) * hd, h, dt), Gemm("o", h, H * hd, dt))
        norms = 2 * h
        core = H * seq * 2 * hd
        attn_out = _attention_output_bytes(model, H * hd)
        act = (H + 2 * kvh) * hd * 2 + attn_out
        recompute = ()
        stream = 4 * (H + kvh) * hd + q(H * hd)  # RoPE on q and k, output quantization
    act += h * 2 + (0 if "rmsnorm" in rec else h * a8)  # residual input (+ normed input)
    stream += 4 * h + q(h)  # input RMSNorm + quantization
    params = sum(g.n * g.k for g in gemms) + norms
    proj = sum(g.flops for g in gemms)
    router, entry = _ffn_entry(model, moe)
    piece = _piece("attn", gemms + router, stream + entry, core=core, recompute=recompute)
    return piece, params, act, attn_out, proj + core


def _ffn_entry(model: Model, moe: bool) -> tuple[tuple[Gemm, ...], float]:
    """(GEMMs, elementwise bytes) that run before an FFN's all-to-all, in the attention piece:
    the residual add, the FFN's input RMSNorm and quantization, and (MoE) the router, whose
    choice the dispatch needs."""
    h = model.hidden
    router = (Gemm("router", model.routed_experts, h, "bf16"),) if moe else ()
    return router, 6 * h + 4 * h + _quantize(model, h)


def _mlp(model: Model, moe: bool, ep: int) -> tuple[Piece, float, float, float, float]:
    """(piece, params, expert params, activation bytes, model flops) of one FFN, per token.

    The router is counted here (params, FLOPs) but runs in the attention piece (_ffn_entry).
    """
    d, h = model.dims, model.hidden
    a8 = model.gemm_input_bytes
    dt = model.gemm_dtype
    keep_out = "swiglu_output" not in model.recompute
    act = h * 2 + (0 if "rmsnorm" in model.recompute else h * a8)
    stream = 6 * h  # the residual add after the FFN
    gate_flops = 0.0
    if moe:
        k, s, ie, E = (d["experts_per_token"], d["shared_experts"], d["expert_intermediate"],
                       d["routed_experts"])
        groups = E // max(1, ep)
        gate_flops = 2.0 * E * h
        gemms: tuple[Gemm, ...] = (
            Gemm("experts_up", 2 * ie, h, dt, rows=k, groups=groups, routed=True),
            Gemm("experts_down", h, ie, dt, rows=k, groups=groups, routed=True))
        if s:
            gemms += (Gemm("shared_up", 2 * s * ie, h, dt), Gemm("shared_down", h, s * ie, dt))
        params, experts = s * 3 * h * ie + h * E + 2 * h, E * 3 * h * ie
        act += E * 4 + k * h * a8 + (h * a8 if s else 0) + (k + s) * ie * a8 * (2 + keep_out)
        # per routed copy: permute into expert order, the transposed FP8 copy for the weight
        # gradient, SwiGLU (read 2 x ie BF16, write ie), un-permute + weighted sum (BF16)
        fp8_copy = 2 * a8 * h if dt == "fp8" else 0.0
        swiglu = 4 * ie + a8 * ie
        stream += k * (2 * a8 * h + fp8_copy + swiglu + 4 * h) + s * swiglu
    else:
        ffn = d["ffn_intermediate"]
        gemms = (Gemm("ffn_up", 2 * ffn, h, dt), Gemm("ffn_down", h, ffn, dt))
        params, experts = 3 * h * ffn + 2 * h, 0.0
        act += h * a8 + ffn * a8 * (2 + keep_out)
        stream += 4 * ffn + a8 * ffn
    flops = sum(g.flops for g in gemms) + gate_flops
    return _piece("mlp", gemms, stream), params, experts, act, flops


def _head(model: Model) -> Piece:
    # final RMSNorm; the loss reads the BF16 logits and writes FP32 probabilities
    stream = 4 * model.hidden + 6 * model.vocab
    return _piece("head", (Gemm("head", model.vocab, model.hidden, "bf16"),), stream)


def model_units(model: Model, seq: int, ep: int = 1) -> list[Unit]:
    """The model in order: embedding, layers, head, then the MTP modules (each a block + head).

    ``ep`` sets how many routed experts one GPU holds (routed_experts / ep), which shapes the
    grouped expert GEMMs.
    """
    h, V = model.hidden, model.vocab
    units = [Unit("embed", False, (), V * h, 0.0, 0.0, 0.0)]

    def block(name: str, moe: bool, mtp: bool = False) -> Unit:
        attn, ap, aa, ao, af = _attention(model, seq, moe)
        extra_params = 0.0
        if mtp:  # RMSNorms + projection of [h; emb] (2h -> h); shares embedding and head
            proj = Gemm("mtp_proj", h, 2 * h, model.gemm_dtype)
            extra = _piece("attn", (proj,), 2 * 4 * h)
            attn = Piece("attn", extra.fwd + attn.fwd, extra.bwd_input + attn.bwd_input,
                         extra.bwd_weight + attn.bwd_weight)
            extra_params, af = 2 * h * h + 2 * h, af + proj.flops
        mlp, mp, me, ma, mf = _mlp(model, moe, ep)
        pieces = (attn, mlp)
        act = aa + ma
        if "full" in model.recompute:  # keep only the block's input; rerun its forward in I
            pieces = tuple(Piece(p.name, p.fwd, p.fwd + p.bwd_input, p.bwd_weight)
                           for p in pieces)
            act, ao = h * 2.0, 0.0
        return Unit(name, moe, pieces, ap + mp + extra_params, me, act, af + mf,
                    attn_output_bytes=ao)

    shapes: dict[bool, Unit] = {}  # every dense (MoE) layer is the same block but for its name
    for i in range(model.layers):
        moe = model.layer_is_moe(i)
        if moe not in shapes:
            shapes[moe] = block("layer", moe)
        units.append(replace(shapes[moe], name=f"layer{i}"))
    head_flops = 2 * h * V
    logits = V * 2  # BF16 logits kept for the loss backward
    head_act = h * 2 + logits  # and the head's input
    units.append(Unit("head", False, (_head(model),), V * h + h, 0.0, head_act, head_flops,
                      logits_bytes=logits))
    for k in range(model.dims["mtp_depth"]):
        units.append(block(f"mtp{k}", model.is_moe, mtp=True))
        units.append(Unit(f"mtp{k}_head", False, (_head(model),), 0.0, 0.0, head_act,
                          head_flops, logits_bytes=logits))
    return units
