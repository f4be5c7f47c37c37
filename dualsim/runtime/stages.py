"""How a process computes its stages' F, B, I, W and FB: whole slices, or pieces with all-to-all.

The interpreter decides what runs and where data goes; a stage runner does the compute of one
unit and returns a handle (what the backward needs) and the unit's piece times.

- :class:`WholeStages` (no expert parallelism): a forward is one autograd graph per
  (stage, micro-batch); B is one ``torch.autograd.backward``, I the same with the weight
  gradients deferred to W. An FB runs its forward then its backward on the CPU, and puts them
  on two CUDA streams on a GPU (there is no all-to-all to overlap).
- :class:`PieceStages` (expert parallelism): every unit runs as pieces
  (:mod:`dualsim.runtime.pieces`) in the order of :mod:`dualsim.overlap_order`, the same order
  the hardware simulator uses; an FB overlaps each micro-batch's all-to-all with the other's
  compute (:mod:`dualsim.runtime.overlap`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from dualsim.overlap_order import Node, fb_order, plain_order
from dualsim.runtime.a2a import ExpertComm
from dualsim.runtime.net import StageNet
from dualsim.runtime.overlap import PieceTime, run_unit
from dualsim.runtime.pieces import Pass
from dualsim.runtime.wgrad import WeightGradStash

#: (stage, input, targets or None on non-last stages, record for the I/W split)
ForwardArgs = tuple[int, torch.Tensor, "torch.Tensor | None", bool]


@dataclass
class Saved:
    """A whole-slice forward: its input leaf, output (hidden states or loss), stash."""

    x: torch.Tensor
    out: torch.Tensor
    stash: WeightGradStash | None


class WholeStages:
    """Stages without expert parallelism: one autograd graph per (stage, micro-batch)."""

    def __init__(self, modules: dict[int, StageNet], loss_scale: float,
                 device: torch.device) -> None:
        self.modules, self.loss_scale = modules, loss_scale
        self.streams = (torch.cuda.Stream(device), torch.cuda.Stream(device)) \
            if device.type == "cuda" else None
        self.device = device

    def forward(self, args: ForwardArgs) -> tuple[Saved, list[PieceTime]]:
        stage, x, targets, record = args
        net = self.modules[stage]
        if x.is_floating_point():
            x = x.detach().requires_grad_()
        stash = WeightGradStash() if record else None
        if stash is not None:
            with net.ops.recording(stash):  # type: ignore[union-attr]
                out = net(x)
        else:
            out = net(x)
        if targets is not None:
            out = net.loss(out, targets) * self.loss_scale
        return Saved(x, out, stash), []

    @staticmethod
    def output(saved: Saved) -> torch.Tensor:
        return saved.out

    def backward(self, saved: Saved, grad: torch.Tensor | None,
                 unit: str) -> tuple[torch.Tensor | None, list[PieceTime]]:
        if saved.stash is not None:
            saved.stash.defer = unit == "I"
        torch.autograd.backward(saved.out, grad_tensors=grad)
        return (saved.x.grad if saved.x.is_floating_point() else None), []

    def weights(self, saved: Saved) -> list[PieceTime]:
        assert saved.stash is not None
        saved.stash.flush()
        return []

    def fb(self, f: ForwardArgs, b: tuple[Saved, torch.Tensor | None]
           ) -> tuple[Saved, torch.Tensor | None, list[PieceTime]]:
        """On CPU one half after the other; on CUDA each half on its own stream.

        Autograd runs a backward op on the stream its forward op used, so on a GPU the overlap
        is only as good as the streams the earlier forward ran on.
        """
        if self.streams is None:
            saved, _ = self.forward(f)
            grad, _ = self.backward(*b, unit="B")
            return saved, grad, []
        current = torch.cuda.current_stream(self.device)
        for s in self.streams:
            s.wait_stream(current)
        with torch.cuda.stream(self.streams[0]):
            saved, _ = self.forward(f)
        with torch.cuda.stream(self.streams[1]):
            grad, _ = self.backward(*b, unit="B")
        for s in self.streams:
            current.wait_stream(s)
        return saved, grad, []


class PieceStages:
    """Stages with expert parallelism: every unit as pieces, all-to-alls between them."""

    def __init__(self, modules: dict[int, StageNet], loss_scale: float, comm: ExpertComm) -> None:
        self.modules, self.loss_scale, self.comm = modules, loss_scale, comm
        self.on_wait: Callable[[Node | None], None] = lambda node: None
        self.before_post: Callable[[Node], None] = lambda node: None

    def _run(self, halves: list[tuple[Pass, str]]) -> list[PieceTime]:
        chains = [(p, p.chain(unit)) for p, unit in halves]
        nodes = [[n for n, _ in chain] for _, chain in chains]
        order = plain_order(nodes[0]) if len(nodes) == 1 else fb_order(nodes[0], nodes[1])
        return run_unit(chains, order, self.comm.clock, self.on_wait, self.before_post)

    def _pass(self, args: ForwardArgs) -> Pass:
        stage, x, targets, _ = args
        return Pass(self.modules[stage], self.comm, x, targets, self.loss_scale)

    def forward(self, args: ForwardArgs) -> tuple[Pass, list[PieceTime]]:
        p = self._pass(args)
        return p, self._run([(p, "F")])

    @staticmethod
    def output(p: Pass) -> torch.Tensor:
        return p.output

    def backward(self, p: Pass, grad: torch.Tensor | None,
                 unit: str) -> tuple[torch.Tensor | None, list[PieceTime]]:
        p.begin_backward(grad)
        times = self._run([(p, unit)])
        return p.input_grad, times

    def weights(self, p: Pass) -> list[PieceTime]:
        return self._run([(p, "W")])

    def fb(self, f: ForwardArgs, b: tuple[Pass, torch.Tensor | None]
           ) -> tuple[Pass, torch.Tensor | None, list[PieceTime]]:
        pf, (pb, grad) = self._pass(f), b
        pb.begin_backward(grad)
        times = self._run([(pf, "F"), (pb, "B")])
        return pf, pb.input_grad, times


Stages = Any  # WholeStages | PieceStages
