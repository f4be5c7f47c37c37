"""The runtime's model: a small MoE transformer, cut into layer slices, seeded per slice.

Each block is pre-norm attention then a pre-norm MoE FFN (a router picks the top-k of several
routed experts per token, weighted by renormalised softmax scores, with an optional capacity
rule: :mod:`dualsim.runtime.moe`; plus one shared expert that sees every token). The model has ``positions × layers_per_slice`` blocks; slice k (= position
k of every chain, docs/schedules.md) holds its blocks, slice 0 also the token and position embeddings,
the last slice also the final norm and the LM head. A slice's parameters come from a generator
seeded by (seed, k) alone, so every copy of slice k on any rank (DualPipe keeps two) and the
single-process reference start identical.

Two op sets compute the same maths: ``split=True`` routes every parameter through a
:class:`dualsim.runtime.wgrad.WeightGradOps` of the slice (the I/W split the runtime needs);
``split=False`` is plain autograd (the reference and torch.distributed.pipelining use it), so
the I/W split is checked against ordinary autograd, not against itself.

With expert parallelism a slice holds only some routed experts (``experts``, a range of global
expert indices; the others are drawn from the generator and dropped, so every process's copy
of an expert is the reference's); the runtime then runs the MoE layer as pieces with
all-to-alls (:mod:`dualsim.runtime.pieces`) through :meth:`Block.attention_and_scores`,
:meth:`Block.expert` and :meth:`Block.shared`. The plain :meth:`Block.forward` (the reference,
and the runtime without expert parallelism) routes the tokens of a micro-batch in ``groups``
groups of consecutive sequences, as ``groups`` expert-parallel processes would.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as tf

from dualsim.runtime.moe import route
from dualsim.runtime.wgrad import WeightGradOps

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
    capacity_factor: float | None = None  # None: dropless


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
        if self.capacity_factor is not None and not 0 < self.capacity_factor < float("inf"):
            raise ValueError(f"capacity factor must be a positive number, got "
                             f"{self.capacity_factor}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ops:
    """Plain autograd versions of the three parameter ops of :mod:`wgrad`."""

    @staticmethod
    @contextlib.contextmanager
    def recording(stash: Any) -> Iterator[Any]:
        """Plain ops compute weight gradients inside the backward: nothing to record."""
        yield stash

    @staticmethod
    def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return tf.linear(x, w, b)

    @staticmethod
    def scale(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * w

    @staticmethod
    def embed(tokens: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w[tokens]


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class Block(torch.nn.Module):
    """Pre-norm causal attention, then a pre-norm MoE FFN with a shared expert.

    Routed experts are held in ``up``/``down`` under their global index (``up.5``), for the
    experts in ``experts`` only.
    """

    def __init__(self, cfg: NetConfig, gen: torch.Generator, ops: Ops | WeightGradOps,
                 experts: range) -> None:
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
        up = [p(h, d, std=1 / math.sqrt(d)) for _ in range(e)]
        down = [p(d, h, std=1 / math.sqrt(h)) for _ in range(e)]
        self.up = torch.nn.ParameterDict({str(g): up[g] for g in experts})
        self.down = torch.nn.ParameterDict({str(g): down[g] for g in experts})
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

    def attention_and_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                             torch.Tensor]:
        """(x after attention, its normed tokens [T, d] for the MoE, router scores [T, E])."""
        h = x + self.attention(self.ops.scale(_rms(x), self.attn_norm))
        tokens = self.ops.scale(_rms(h), self.moe_norm).reshape(-1, h.shape[-1])
        return h, tokens, self.ops.linear(tokens, self.router).softmax(-1)

    def expert(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Routed expert ``index`` (global) on rows ``x``."""
        return self._ffn(x, self.up[str(index)], self.down[str(index)])

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        return self._ffn(x, self.shared_up, self.shared_down)

    def _ffn(self, x: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        return self.ops.linear(tf.silu(self.ops.linear(x, up)), down)

    def moe(self, tokens: torch.Tensor, scores: torch.Tensor, groups: int) -> torch.Tensor:
        """The MoE output of ``tokens`` [T, d]: shared expert plus the kept routed copies."""
        out = self.shared(tokens)
        for g, (x, s) in enumerate(zip(tokens.chunk(groups), scores.chunk(groups))):
            r = route(s, self.cfg.top_k, self.cfg.capacity_factor)
            offset = g * x.shape[0]
            for e in range(self.cfg.experts):
                rows, slot = ((r.experts == e) & r.keep).nonzero(as_tuple=True)
                if rows.numel():
                    y = self.expert(x[rows], e) * r.weights[rows, slot].unsqueeze(-1)
                    out = out.index_add(0, rows + offset, y)
        return out

    def forward(self, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
        h, tokens, scores = self.attention_and_scores(x)
        return h + self.moe(tokens, scores, groups).reshape(h.shape)


class StageNet(torch.nn.Module):
    """Layer slice ``position`` of ``positions``: what one stage runs.

    ``experts``: the routed experts it holds (default all); ``groups``: routing groups of its
    plain forward (see the module docstring).
    """

    def __init__(self, cfg: NetConfig, position: int, positions: int, split: bool = True,
                 experts: range | None = None, groups: int = 1) -> None:
        super().__init__()
        if not 0 <= position < positions:
            raise ValueError(f"position {position} outside 0..{positions - 1}")
        self.cfg, self.position, self.positions, self.groups = cfg, position, positions, groups
        self.ops: Ops | WeightGradOps = WeightGradOps() if split else Ops()
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
        held = range(cfg.experts) if experts is None else experts
        self.blocks = torch.nn.ModuleList(
            [Block(cfg, gen, self.ops, held) for _ in range(cfg.layers_per_slice)])
        if self.last:
            self.final_norm = torch.nn.Parameter(torch.ones(d, dtype=cfg.torch_dtype))
            self.head = torch.nn.Parameter(
                (torch.randn(cfg.vocab, d, generator=gen, dtype=torch.float64) / math.sqrt(d))
                .to(cfg.torch_dtype))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
        return self.ops.embed(tokens, self.tok_emb) + self.ops.embed(positions, self.pos_emb)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.linear(self.ops.scale(_rms(x), self.final_norm), self.head)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss_fn(logits, targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (first slice) or hidden states in; hidden states or logits (last slice) out."""
        if self.first:
            x = self.embed(x)
        for block in self.blocks:
            x = block(x, self.groups)
        return self.head_logits(x) if self.last else x

    def is_expert(self, name: str) -> bool:
        """Whether parameter ``name`` belongs to a routed expert (held by one EP process)."""
        return ".up." in name or ".down." in name


def grad_or_zeros(p: torch.nn.Parameter) -> torch.Tensor:
    """A parameter's gradient; zeros for one no token reached (an unused expert)."""
    return p.grad if p.grad is not None else torch.zeros_like(p)


def sum_dense_grads(slices: dict[int, StageNet], group: "dist.ProcessGroup", *,
                    staging: bool = False) -> None:
    """Expert parallelism: the processes of a pipeline rank sum the gradients of their
    non-expert parameters (one all-reduce over ``group``; through host memory with ``staging``,
    for gloo beside CUDA tensors)."""
    import torch.distributed as dist

    params = [p for stage in sorted(slices) for name, p in slices[stage].named_parameters()
              if not slices[stage].is_expert(name)]
    flat = torch.cat([grad_or_zeros(p).reshape(-1) for p in params])
    host = flat.to("cpu") if staging else flat
    dist.all_reduce(host, group=group)
    flat = host.to(flat.device) if staging else host
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def named_tensors(slices: dict[int, StageNet], grads: bool) -> dict[tuple[int, int, str], torch.Tensor]:
    """(stage, position, name) -> gradient (``grads``) or weight of each stage's slice, on the CPU."""
    return {(stage, m.position, name): (grad_or_zeros(p) if grads else p).detach().cpu().clone()
            for stage, m in slices.items() for name, p in m.named_parameters()}


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of one micro-batch."""
    return tf.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def make_batch(cfg: NetConfig, microbatches: int, step: int,
               ep: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and next-token targets of one step: [M, ep x microbatch_size, seq] each, seeded.

    Expert-parallel process i of a pipeline rank takes sequences i x microbatch_size onwards of
    every micro-batch; the reference runs all of them.
    """
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 104_729 * (step + 1))
    data = torch.randint(0, cfg.vocab, (microbatches, ep * cfg.microbatch_size, cfg.seq + 1),
                         generator=gen)
    return data[..., :-1].contiguous(), data[..., 1:].contiguous()
