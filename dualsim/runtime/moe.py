"""The MoE layer's routing: top-k with a capacity rule (or dropless), and the dispatch plan of EP.

Routing is shared by the runtime and the single-process reference (it is the model's rule, not
a mechanism under test): scores = softmax(router(x)); each token picks its top-k experts with
weights renormalised over the k. With a capacity factor c, expert e keeps at most
C = ceil(c * T * k / E) copies from a group of T tokens (the tokens one process holds; the
reference routes the same groups), in priority order: every token's first choice before any
token's second choice, tokens in order within a choice (GShard's rule). A dropped copy
contributes nothing (the token's other copies keep their weights). Without a capacity factor
nothing is dropped (dropless).

Expert parallelism: the ``ep`` processes of a pipeline rank hold E / ep experts each (process
i holds experts i * E/ep ... (i + 1) * E/ep - 1). A :class:`Dispatch` lists one process's kept
copies sorted by expert (so by destination process, then by the destination's local expert),
the number of rows it sends to each process and, once the counts were exchanged, the rows it
receives from each process and their local experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Routing:
    """Top-k choice of each token: weights [T, k], experts [T, k], kept copies [T, k]."""

    weights: torch.Tensor
    experts: torch.Tensor
    keep: torch.Tensor


def capacity(tokens: int, top_k: int, experts: int, factor: float | None) -> int | None:
    """Copies an expert keeps from a group of ``tokens`` tokens (None: dropless)."""
    if factor is None:
        return None
    return math.ceil(factor * tokens * top_k / experts)


def keep_mask(experts: torch.Tensor, num_experts: int, cap: int | None) -> torch.Tensor:
    """[T, k] bool: which copies fit their expert's capacity, in GShard's priority order."""
    if cap is None:
        return torch.ones_like(experts, dtype=torch.bool)
    order = experts.t().reshape(-1)  # choice-major: all first choices, then all second ...
    onehot = torch.nn.functional.one_hot(order, num_experts)
    position = ((onehot.cumsum(0) - 1) * onehot).sum(-1)  # index of the copy at its expert
    return (position < cap).reshape(experts.shape[1], experts.shape[0]).t()


def route(scores: torch.Tensor, top_k: int, factor: float | None) -> Routing:
    """Routing of a group of tokens from their softmax scores [T, E]."""
    weights, experts = scores.topk(top_k, dim=-1)
    weights = weights / weights.sum(-1, keepdim=True)
    cap = capacity(scores.shape[0], top_k, scores.shape[1], factor)
    return Routing(weights, experts, keep_mask(experts, scores.shape[1], cap))


@dataclass(frozen=True)
class Dispatch:
    """Where one process's kept copies go and what it receives (see the module docstring).

    ``token``/``slot``: the token and choice of each sent copy, in send order;
    ``send_counts``: [ep, E/ep] copies to each process's local experts;
    ``recv_counts``: [ep, E/ep] copies from each process to this one's local experts (after
    the counts exchange), rows from process 0 first, each process's rows by local expert.
    """

    token: torch.Tensor
    slot: torch.Tensor
    send_counts: torch.Tensor
    recv_counts: torch.Tensor | None = None

    @staticmethod
    def plan(routing: Routing, num_experts: int, ep: int) -> "Dispatch":
        token, slot = routing.keep.nonzero(as_tuple=True)  # token-major
        expert = routing.experts[token, slot]
        order = torch.sort(expert, stable=True).indices
        counts = torch.bincount(expert, minlength=num_experts).reshape(ep, num_experts // ep)
        return Dispatch(token[order], slot[order], counts)

    def received(self, recv_counts: torch.Tensor) -> "Dispatch":
        """With the counts the other processes send (on this process's device)."""
        return Dispatch(self.token, self.slot, self.send_counts,
                        recv_counts.to(self.send_counts.device))

    @property
    def send_splits(self) -> list[int]:
        return self.send_counts.sum(1).tolist()

    @property
    def recv_splits(self) -> list[int]:
        assert self.recv_counts is not None
        return self.recv_counts.sum(1).tolist()

    def local_experts(self) -> torch.Tensor:
        """The local expert of each received row, in receive order."""
        assert self.recv_counts is not None
        local = torch.arange(self.recv_counts.shape[1], device=self.recv_counts.device)
        return torch.cat([local.repeat_interleave(row) for row in self.recv_counts])
