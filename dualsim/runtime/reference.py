"""The single-process reference a run is checked against.

The same slices (plain autograd, no I/W split), the same micro-batches in order, loss = mean of
the micro-batch losses, the same optimizer. What a correct pipeline run must reproduce: every
step's loss, the last step's gradients, and the weights after the last step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dualsim.runtime.net import NetConfig, StageNet, grad_or_zeros, loss_fn, make_batch

LR = 0.05
MOMENTUM = 0.9


def make_optimizer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of both the runtime and the reference: SGD with momentum (deterministic)."""
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)


@dataclass
class ReferenceResult:
    losses: list[float]                      # per step
    grads: dict[tuple[int, str], torch.Tensor]    # (position, name) -> last step's gradient
    weights: dict[tuple[int, str], torch.Tensor]  # (position, name) -> after the last step


def run_reference(cfg: NetConfig, positions: int, microbatches: int, steps: int,
                  ep: int = 1) -> ReferenceResult:
    """Train ``steps`` steps of the whole model in one process.

    ``ep``: the run's expert-parallel processes per pipeline rank; a micro-batch then holds
    every process's sequences, routed in ``ep`` groups as the processes route them.
    """
    slices = [StageNet(cfg, k, positions, split=False, groups=ep) for k in range(positions)]
    params = [p for s in slices for p in s.parameters()]
    opt = make_optimizer(params)
    losses: list[float] = []
    grads: dict[tuple[int, str], torch.Tensor] = {}
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        tokens, targets = make_batch(cfg, microbatches, step, ep)
        total = 0.0
        for m in range(microbatches):
            x = tokens[m]
            for s in slices:
                x = s(x)
            loss = loss_fn(x, targets[m]) / microbatches
            loss.backward()
            total += loss.item()
        losses.append(total)
        grads = {(s.position, n): grad_or_zeros(p).detach().clone()
                 for s in slices for n, p in s.named_parameters()}
        opt.step()
    weights = {(s.position, n): p.detach().clone() for s in slices for n, p in s.named_parameters()}
    return ReferenceResult(losses, grads, weights)
