"""The I/W split: input gradients now, weight gradients later, without redoing any work.

Every parameter of the runtime's model enters the autograd graph through exactly one of three
ops defined here: ``linear`` (x @ w.T + b), ``scale`` (x * w, the RMSNorm gain) and ``embed``
(w[tokens]). Their backward always computes the *input* gradient (what the previous layer
needs), and turns the *weight* gradient into a small closure over tensors it already has:
the op's saved input and the incoming output gradient (ZeroBubble's observation: for a linear
layer dW = dY^T X needs nothing else). What happens to the closure depends on the
:class:`WeightGradStash` the forward was recorded under:

- ``defer = False`` (a full ``B``): the closure runs at once, inside the backward.
- ``defer = True``  (an ``I``): the closure is queued; ``W`` later calls :meth:`flush`,
  which runs exactly the weight GEMMs and reductions and accumulates into ``param.grad``.

The ops belong to a :class:`WeightGradOps` object (one per model instance): a forward run
inside ``ops.recording(stash)`` sends its closures to ``stash``; outside, the ops are plain
autograd. The interpreter records only the (stage, micro-batch) pairs that need it.
So I + W does the same arithmetic as B, split in two; nothing of the input-gradient chain is
recomputed, and the graph is freed after I (only the stashed (input, grad_output) pairs stay).
The ops return ``None`` as the autograd gradient of their parameters and accumulate into
``param.grad`` themselves, so ``param.grad`` after B equals ``param.grad`` after I then W.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch


class WeightGradStash:
    """The weight-gradient closures of one (stage, micro-batch) forward."""

    def __init__(self) -> None:
        self.defer = False
        self.pending: list[Callable[[], None]] = []

    def emit(self, closure: Callable[[], None]) -> None:
        if self.defer:
            self.pending.append(closure)
        else:
            closure()

    def flush(self) -> None:
        """Run every deferred weight-gradient closure (the W action)."""
        pending, self.pending = self.pending, []
        for closure in pending:
            closure()


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    """Add a freshly computed weight gradient (never a view of anything else) to .grad."""
    if param.grad is None:
        param.grad = grad.detach()
    else:
        param.grad.add_(grad)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stash):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.bias = bias
        ctx.stash = stash
        return torch.nn.functional.linear(x, weight, bias)  # as unrecorded: the same numbers

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        bias = ctx.bias
        grad_x = grad_y @ weight if ctx.needs_input_grad[0] else None

        def weight_grad() -> None:
            g2 = grad_y.reshape(-1, grad_y.shape[-1])
            _accumulate(weight, g2.t() @ x.reshape(-1, x.shape[-1]))
            if bias is not None:
                _accumulate(bias, g2.sum(0))

        ctx.stash.emit(weight_grad)
        return grad_x, None, None, None


class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stash):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.stash = stash
        return x * weight

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_x = grad_y * weight if ctx.needs_input_grad[0] else None

        def weight_grad() -> None:
            _accumulate(weight, (grad_y * x).reshape(-1, x.shape[-1]).sum(0))

        ctx.stash.emit(weight_grad)
        return grad_x, None, None


class _Embed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens, weight, stash):  # type: ignore[override]
        ctx.save_for_backward(tokens, weight)
        ctx.stash = stash
        return weight[tokens]

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        tokens, weight = ctx.saved_tensors

        def weight_grad() -> None:
            g = torch.zeros_like(weight)
            g.index_add_(0, tokens.reshape(-1), grad_y.reshape(-1, weight.shape[-1]))
            _accumulate(weight, g)

        ctx.stash.emit(weight_grad)
        return None, None, None


class WeightGradOps:
    """linear, scale and embed of one model instance, with deferrable weight gradients.

    Outside :meth:`recording` they are plain autograd: a forward whose backward will be a full
    B needs no stash, and plain ops cost less Python per call than custom Functions.
    """

    def __init__(self) -> None:
        self.active: WeightGradStash | None = None

    @contextlib.contextmanager
    def recording(self, stash: WeightGradStash) -> Iterator[WeightGradStash]:
        """Forwards run inside this block send their weight gradients to ``stash``."""
        previous, self.active = self.active, stash
        try:
            yield stash
        finally:
            self.active = previous

    def linear(self, x: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.active is None:
            return torch.nn.functional.linear(x, weight, bias)
        return _Linear.apply(x, weight, bias, self.active)

    def scale(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            return x * weight
        return _Scale.apply(x, weight, self.active)

    def embed(self, tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            return weight[tokens]
        return _Embed.apply(tokens, weight, self.active)
