"""The runtime's model: a small MoE transformer, cut into layer slices, seeded per slice.

Each block is pre-norm attention then a pre-norm MoE FFN (a router picks the top-k of several
routed experts per token, weighted by renormalised softmax scores, plus one shared expert that
sees every token). The model has ``positions × layers_per_slice`` blocks; slice k (= position
k of every chain, DESIGN §3) holds its blocks, slice 0 also the token and position embeddings,
the last slice also the final norm and the LM head. A slice's parameters come from a generator
seeded by (seed, k) alone, so every copy of slice k on any rank (DualPipe keeps two) and the
single-process reference start identical.

Two op sets compute the same maths: ``split=True`` routes every parameter through
:mod:`dualsim.runtime.wgrad` (the I/W split the runtime needs); ``split=False`` is plain
autograd (the reference and torch.distributed.pipelining use it), so the I/W split is checked
against ordinary autograd, not against itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as tf

from dualsim.runtime import wgrad

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class NetConfig:
    """Size and numerics of the model and of one micro-batch."""

    vocab: int = 32
    hidden: int = 32
    heads: int = 2
    experts: int = 4
    top_k: int = 2
    expert_hidden: int = 32
    layers_per_slice: int = 1
    seq: int = 8
    microbatch_size: int = 2
    dtype: str = "float64"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if not 1 <= self.top_k <= self.experts:
            raise ValueError(f"top_k must be in 1..experts ({self.experts}), got {self.top_k}")
        if min(self.vocab, self.hidden, self.expert_hidden, self.layers_per_slice, self.seq,
               self.microbatch_size) < 1:
            raise ValueError("model sizes must be positive")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ops:
    """Plain autograd versions of the three parameter ops of :mod:`wgrad`."""

    @staticmethod
    def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return tf.linear(x, w, b)

    @staticmethod
    def scale(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * w

    @staticmethod
    def embed(tokens: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w[tokens]


class SplitOps(Ops):
    """The same ops with a deferrable weight gradient (see wgrad)."""

    linear = staticmethod(wgrad.linear)  # type: ignore[assignment]
    scale = staticmethod(wgrad.scale)  # type: ignore[assignment]
    embed = staticmethod(wgrad.embed)  # type: ignore[assignment]


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class Block(torch.nn.Module):
    """Pre-norm causal attention, then a pre-norm MoE FFN with a shared expert."""

    def __init__(self, cfg: NetConfig, gen: torch.Generator, ops: type[Ops]) -> None:
        super().__init__()
        self.cfg, self.ops = cfg, ops
        d, e, h = cfg.hidden, cfg.experts, cfg.expert_hidden

        def p(*shape: int, std: float) -> torch.nn.Parameter:
            t = torch.randn(*shape, generator=gen, dtype=torch.float64) * std
            return torch.nn.Parameter(t.to(cfg.torch_dtype))

        self.attn_norm = torch.nn.Parameter(torch.ones(d, dtype=cfg.torch_dtype))
        self.qkv = p(3 * d, d, std=1 / math.sqrt(d))
        self.proj = p(d, d, std=1 / math.sqrt(d))
        self.moe_norm = torch.nn.Parameter(torch.ones(d, dtype=cfg.torch_dtype))
        self.router = p(e, d, std=1 / math.sqrt(d))
        self.up = torch.nn.ParameterList([p(h, d, std=1 / math.sqrt(d)) for _ in range(e)])
        self.down = torch.nn.ParameterList([p(d, h, std=1 / math.sqrt(h)) for _ in range(e)])
        self.shared_up = p(h, d, std=1 / math.sqrt(d))
        self.shared_down = p(d, h, std=1 / math.sqrt(h))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        nh = self.cfg.heads
        q, k, v = self.ops.linear(x, self.qkv).split(d, dim=-1)
        q, k, v = (t.reshape(b, s, nh, d // nh).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // nh)
        mask = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        att = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
        return self.ops.linear(att.transpose(1, 2).reshape(b, s, d), self.proj)

    def expert(self, x: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        return self.ops.linear(tf.silu(self.ops.linear(x, up)), down)

    def moe(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        scores = self.ops.linear(tokens, self.router).softmax(-1)
        top_w, top_i = scores.topk(self.cfg.top_k, dim=-1)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        out = self.expert(tokens, self.shared_up, self.shared_down)
        for e in range(self.cfg.experts):
            rows, slot = (top_i == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            y = self.expert(tokens[rows], self.up[e], self.down[e])
            out = out.index_add(0, rows, y * top_w[rows, slot].unsqueeze(-1))
        return out.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ops.scale(_rms(x), self.attn_norm))
        return x + self.moe(self.ops.scale(_rms(x), self.moe_norm))


class StageNet(torch.nn.Module):
    """Layer slice ``position`` of ``positions``: what one stage runs."""

    def __init__(self, cfg: NetConfig, position: int, positions: int, split: bool = True) -> None:
        super().__init__()
        if not 0 <= position < positions:
            raise ValueError(f"position {position} outside 0..{positions - 1}")
        self.cfg, self.position, self.positions = cfg, position, positions
        self.ops: type[Ops] = SplitOps if split else Ops
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + position)
        self.first = position == 0
        self.last = position == positions - 1
        d = cfg.hidden
        if self.first:
            self.tok_emb = torch.nn.Parameter(
                torch.randn(cfg.vocab, d, generator=gen, dtype=torch.float64).to(cfg.torch_dtype))
            self.pos_emb = torch.nn.Parameter(
                (torch.randn(cfg.seq, d, generator=gen, dtype=torch.float64) * 0.1)
                .to(cfg.torch_dtype))
        self.blocks = torch.nn.ModuleList(
            [Block(cfg, gen, self.ops) for _ in range(cfg.layers_per_slice)])
        if self.last:
            self.final_norm = torch.nn.Parameter(torch.ones(d, dtype=cfg.torch_dtype))
            self.head = torch.nn.Parameter(
                (torch.randn(cfg.vocab, d, generator=gen, dtype=torch.float64) / math.sqrt(d))
                .to(cfg.torch_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (first slice) or hidden states in; hidden states or logits (last slice) out."""
        if self.first:
            positions = torch.arange(x.shape[-1], device=x.device)
            x = self.ops.embed(x, self.tok_emb) + self.ops.embed(positions, self.pos_emb)
        for block in self.blocks:
            x = block(x)
        if self.last:
            x = self.ops.linear(self.ops.scale(_rms(x), self.final_norm), self.head)
        return x


def grad_or_zeros(p: torch.nn.Parameter) -> torch.Tensor:
    """A parameter's gradient; zeros for one no token reached (an unused expert)."""
    return p.grad if p.grad is not None else torch.zeros_like(p)


def named_tensors(slices: dict[int, StageNet], grads: bool) -> dict[tuple[int, int, str], torch.Tensor]:
    """(stage, position, name) -> gradient (``grads``) or weight of each stage's slice, on the CPU."""
    return {(stage, m.position, name): (grad_or_zeros(p) if grads else p).detach().cpu().clone()
            for stage, m in slices.items() for name, p in m.named_parameters()}


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of one micro-batch."""
    return tf.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def make_batch(cfg: NetConfig, microbatches: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and next-token targets of one step: [M, microbatch_size, seq] each, seeded."""
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 104_729 * (step + 1))
    data = torch.randint(0, cfg.vocab, (microbatches, cfg.microbatch_size, cfg.seq + 1),
                         generator=gen)
    return data[..., :-1].contiguous(), data[..., 1:].contiguous()
