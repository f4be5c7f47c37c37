"""One (stage, micro-batch) pass run piece by piece, so all-to-alls can overlap other work.

With expert parallelism a layer's forward is the hardware model's four pieces:
``attn`` (attention, router, dispatch plan) -> ``dispatch`` (all-to-all of the token rows to
the processes holding their experts) -> ``mlp`` (local experts on the received rows, shared
expert on the local tokens) -> ``combine`` (all-to-all of the expert outputs back). The slice
ends with one more compute piece that adds the last combine's rows to the residual stream:
``head`` on the last slice (with the final norm, LM head and loss), ``post`` elsewhere; the
previous layer's combine is added at the start of the next ``attn``, and the token and
position embedding are part of the first ``attn`` of slice 0.

The backward runs the same pieces in reverse: ``head_bwd``/``post_bwd``, then per layer
``combine_bwd`` (all-to-all of the output rows' gradients to the experts) -> ``mlp_bwd`` ->
``dispatch_bwd`` (the input rows' gradients back) -> ``attn_bwd``. Every forward is recorded for
the I/W split, so each input-gradient piece is followed by its weight piece (``mlp_w``,
``attn_w``, ...): right after it in a B or an FB (once the all-to-all that follows the
input-gradient piece was posted), or later, by the W action. The chains and their names are
in :mod:`dualsim.runtime.chains`.

Autograd runs per piece: every tensor a piece passes to a later one is detached there into a
leaf, and a backward piece is one ``torch.autograd.backward`` from the piece's outputs to its
leaves, whose gradients feed the producing pieces. An all-to-all's backward is the reverse
all-to-all of the gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dualsim.overlap_order import COMM, Node
from dualsim.runtime import wgrad
from dualsim.runtime.a2a import ExpertComm, Pending
from dualsim.runtime.chains import slice_chains, trace_name, with_layers
from dualsim.runtime.moe import Dispatch, route


@dataclass
class _Record:
    """A forward compute piece: the leaves it read, what it produced, its weight closures."""

    leaves: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    stash: wgrad.WeightGradStash


@dataclass
class Pass:
    """The forward and backward of one (stage, micro-batch) on one process.

    ``x``: the stage's input (tokens on slice 0, else hidden states); ``targets`` and
    ``loss_scale`` for the last slice's loss. Every forward piece is recorded for the I/W split
    (weight pieces run after their input-gradient piece, in B and FB as in I then W).
    """

    net: Any  # the stage's layer slice
    comm: ExpertComm
    x: torch.Tensor
    targets: torch.Tensor | None
    loss_scale: float
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    grads: dict[str, torch.Tensor | None] = field(default_factory=dict)
    records: dict[tuple[str, int], _Record] = field(default_factory=dict)
    dispatch: dict[int, Dispatch] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values["x"] = self.x
        self.layers = len(self.net.blocks)
        fwd, bwd = slice_chains(self.layers, self.net.last)
        self._fwd = with_layers(fwd, self.layers, backward=False)
        self._bwd = with_layers(bwd, self.layers, backward=True)

    def chain(self, unit: str) -> list[tuple[Node, int]]:
        """The (node, layer) chain of a plain unit of this pass: F, B, I (no W pieces) or W."""
        if unit == "F":
            return self._fwd
        if unit == "I":
            return [(n, k) for n, k in self._bwd if not n.is_w]
        if unit == "W":
            return [(n, k) for n, k in self._bwd if n.is_w]
        return self._bwd

    # ---- one piece ----------------------------------------------------------------------
    def run(self, node: Node, layer: int) -> None:
        """Run a compute piece (forward, input-gradient or weight)."""
        if node.name.endswith("_w"):
            self.records[(node.name[:-2], layer)].stash.flush()
        elif node.name.endswith("_bwd"):
            self._backward_piece(node.name[:-4], layer)
        else:
            self._forward_piece(node.name, layer)

    def post(self, node: Node, layer: int) -> Pending:
        """Request an all-to-all (a forward dispatch exchanges the row counts first)."""
        assert node.stream == COMM
        d, label = self.dispatch[layer], trace_name(node)
        if node.name == "dispatch":
            def counted(recv_counts: torch.Tensor) -> None:
                self.dispatch[layer] = d.received(recv_counts)

            return self.comm.dispatch(self.values[f"{layer}.send"].detach(), d.send_counts,
                                      counted, label)
        if node.name == "combine":
            return self.comm.post(self.values[f"{layer}.y"].detach(), d.recv_splits,
                                  d.send_splits, label)
        if node.name == "combine_bwd":  # the output rows' gradients go back to the experts
            return self.comm.post(self._grad(f"{layer}.back"), d.send_splits, d.recv_splits,
                                  label)
        return self.comm.post(self._grad(f"{layer}.recv"), d.recv_splits, d.send_splits, label)

    def land(self, node: Node, layer: int, rows: torch.Tensor) -> None:
        """Store what an all-to-all received (forward: rows; backward: their gradients)."""
        slot = {"dispatch": "recv", "combine": "back", "combine_bwd": "y",
                "dispatch_bwd": "send"}[node.name]
        target = self.grads if node.name.endswith("_bwd") else self.values
        target[f"{layer}.{slot}"] = rows

    # ---- results ------------------------------------------------------------------------
    @property
    def output(self) -> torch.Tensor:
        """The forward's result: hidden states, or the scaled loss on the last slice."""
        return self.values["out"]

    def begin_backward(self, grad_out: torch.Tensor | None) -> None:
        """``grad_out``: the gradient of the stage's output (None on the last slice)."""
        self.grads["out"] = grad_out

    @property
    def input_grad(self) -> torch.Tensor | None:
        """The gradient of the stage's input once the backward ran (None on slice 0)."""
        return self.grads.get("x")

    # ---- forward pieces -----------------------------------------------------------------
    def _inputs(self, name: str, layer: int) -> list[str]:
        if name == "mlp":
            return [f"{layer}.recv", f"{layer}.xn"]
        if name == "attn" and layer == 0:
            return ["x"]
        k = layer - 1 if name == "attn" else self.layers - 1
        return [f"{k}.h1", f"{k}.shared", f"{k}.back", f"{k}.w"]

    def _leaf(self, slot: str) -> torch.Tensor:
        v = self.values[slot]
        return v.detach().requires_grad_() if v.is_floating_point() else v

    def _forward_piece(self, name: str, layer: int) -> None:
        ins = {k: self._leaf(k) for k in self._inputs(name, layer)}
        stash = wgrad.WeightGradStash()
        with self.net.ops.recording(stash):
            outs = self._compute(name, layer, ins)
        self.values.update(outs)
        self.records[(name, layer)] = _Record(ins, outs, stash)

    def _compute(self, name: str, layer: int, ins: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        net = self.net
        if name == "mlp":
            return self._mlp(layer, ins)
        if name == "attn" and layer == 0:
            h = net.embed(ins["x"]) if net.first else ins["x"]
        else:
            h = self._combined(layer - 1 if name == "attn" else self.layers - 1, ins)
        if name == "attn":
            return self._attn(layer, h)
        if name == "head":
            assert self.targets is not None
            return {"out": net.loss(net.head_logits(h), self.targets) * self.loss_scale}
        return {"out": h}

    def _combined(self, k: int, ins: dict[str, torch.Tensor]) -> torch.Tensor:
        """Layer k's output: residual + shared expert + the weighted expert rows per token."""
        d = self.dispatch[k]
        h1 = ins[f"{k}.h1"]
        moe = ins[f"{k}.shared"].index_add(0, d.token, ins[f"{k}.back"] * ins[f"{k}.w"][:, None])
        return h1 + moe.reshape(h1.shape)

    def _attn(self, k: int, h: torch.Tensor) -> dict[str, torch.Tensor]:
        block = self.net.blocks[k]
        h1, xn, scores = block.attention_and_scores(h)
        routing = route(scores, block.cfg.top_k, block.cfg.capacity_factor)
        d = self.dispatch[k] = Dispatch.plan(routing, block.cfg.experts, self.comm.size)
        return {f"{k}.h1": h1, f"{k}.xn": xn, f"{k}.send": xn[d.token],
                f"{k}.w": routing.weights[d.token, d.slot]}

    def _mlp(self, k: int, ins: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The local experts on the received rows (grouped by expert), the shared expert."""
        block = self.net.blocks[k]
        recv = ins[f"{k}.recv"]
        local = self.dispatch[k].local_experts()
        order = torch.sort(local, stable=True).indices
        sizes = torch.bincount(local, minlength=block.cfg.experts // self.comm.size).tolist()
        first = self.comm.index * len(sizes)
        ys = [block.expert(rows, first + e)
              for e, rows in enumerate(recv[order].split(sizes)) if len(rows)]
        y = torch.cat(ys).index_select(0, torch.argsort(order)) if ys else recv * 0
        return {f"{k}.y": y, f"{k}.shared": block.shared(ins[f"{k}.xn"])}

    # ---- backward pieces ----------------------------------------------------------------
    def _backward_piece(self, name: str, layer: int) -> None:
        """One input-gradient piece: from its outputs' gradients to its leaves' gradients;
        the weight-gradient closures wait in the piece's stash for its weight piece."""
        rec = self.records[(name, layer)]
        outs, grads = [], []
        for slot, t in rec.outputs.items():
            if slot in self.grads and t.requires_grad:
                outs.append(t)
                grads.append(self.grads.pop(slot))
        rec.stash.defer = True
        if outs:
            torch.autograd.backward(outs, grad_tensors=grads)
        for slot, leaf in rec.leaves.items():
            if leaf.is_floating_point() and leaf.grad is not None:
                prev = self.grads.get(slot)
                self.grads[slot] = leaf.grad if prev is None else prev + leaf.grad
        rec.outputs.clear()
        rec.leaves.clear()

    def _grad(self, slot: str) -> torch.Tensor:
        g = self.grads.pop(slot, None)
        return g.contiguous() if g is not None else torch.zeros_like(self.values[slot])
