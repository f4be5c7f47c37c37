"""In which order a unit's per-layer pieces run on a GPU's compute and communication streams.

One definition, shared by the hardware simulator (dualsim/sim/unit_pieces.py gives each piece a
cost) and the runtime (which runs the pieces for real): nothing here knows costs, torch or
hardware. See docs/hardware-mode.md ("Piece order") for the reasons behind each rule.

A stage's work for one micro-batch is a **chain of nodes**. The forward chain is, per unit (a
layer, the head, ...) in model order, each compute piece followed by the all-to-all that carries
its output, if any: ``attn -> dispatch -> mlp -> combine`` for a MoE layer. The backward chain
is the reverse: for each piece, last first, the backward of its all-to-all, then its
input-gradient piece (I, ``<piece>_bwd``), then its weight-gradient piece (W, ``<piece>_w``):
``combine_bwd -> mlp_bwd -> mlp_w -> dispatch_bwd -> attn_bwd -> attn_w``.

Rules (both for plain units and for an FB):

* A GPU has one compute stream and one communication stream; each runs its pieces in order.
* A compute piece waits for the all-to-all just before it in its chain (its input).
* An all-to-all waits for the compute piece that produces its data: the nearest earlier compute
  piece of its chain that is **not** a W piece. A backward all-to-all therefore waits only for
  the input gradient (I), never for a weight gradient (W) (Megatron-Core's
  ``--delay-wgrad-compute``; DeepSeek-V3's Figure 4). So in a plain B the W piece right after
  an I runs while the all-to-all that follows the I is in flight.
* A plain unit (F, I, W or B) runs its chain's compute pieces in chain order.
* An FB unit interleaves its two micro-batches as DeepSeek-V3 (Figure 4) and Megatron-Core's
  batch-level overlap (``TransformerLayerSchedulePlan.run``) do: the compute stream alternates
  one forward compute piece and one backward group (an I piece with the W pieces after it):
  ``attn(F) | mlp_bwd, mlp_w | mlp(F) | attn_bwd, attn_w | ...``, so each micro-batch's
  all-to-all flies while the other micro-batch computes.
* The communication stream runs all-to-alls in the order their producing compute pieces run
  (those waiting on nothing first), so no piece waits on a piece queued after it: no deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

COMPUTE, COMM = "compute", "comm"


@dataclass(frozen=True)
class Node:
    """One node of a chain: a compute piece or an all-to-all (``stream`` COMPUTE or COMM)."""

    stream: str
    name: str
    is_w: bool = False  # a weight-gradient compute piece
    unit: int = 0  # index of its unit in the stage, forward order (forward_/backward_chain)


@dataclass(frozen=True)
class ComputeStep:
    """A compute piece in stream order: ``half`` (0 forward / plain, 1 backward of an FB),
    ``node`` its index in that half's chain, ``waits`` the index in ``Order.comm`` of the
    all-to-all it needs first (-1: none)."""

    half: int
    node: int
    waits: int


@dataclass(frozen=True)
class CommStep:
    """An all-to-all in stream order: ``half``, ``node`` (index in that half's chain) and
    ``after``, the index in ``Order.compute`` of the piece producing its data (-1: none)."""

    half: int
    node: int
    after: int


@dataclass(frozen=True)
class Order:
    """The two streams of one unit. ``signals``: compute steps some all-to-all waits for."""

    compute: tuple[ComputeStep, ...]
    comm: tuple[CommStep, ...]
    signals: frozenset[int]


#: (piece name, all-to-all after it in the forward or None), per piece of a unit
PieceSpec = tuple[str, str | None]


def forward_chain(units: Sequence[Sequence[PieceSpec]]) -> list[Node]:
    """The forward chain of a stage whose units (in model order) have these pieces."""
    out: list[Node] = []
    for u, pieces in enumerate(units):
        for name, a2a in pieces:
            out.append(Node(COMPUTE, name, unit=u))
            if a2a is not None:
                out.append(Node(COMM, a2a, unit=u))
    return out


def backward_chain(units: Sequence[Sequence[PieceSpec]]) -> list[Node]:
    """The backward chain (units and pieces reversed; per piece: a2a backward, I, W)."""
    out: list[Node] = []
    for u in reversed(range(len(units))):
        for name, a2a in reversed(units[u]):
            if a2a is not None:
                out.append(Node(COMM, f"{a2a}_bwd", unit=u))
            out.append(Node(COMPUTE, f"{name}_bwd", unit=u))
            out.append(Node(COMPUTE, f"{name}_w", is_w=True, unit=u))
    return out


def without_w(chain: Sequence[Node]) -> list[Node]:
    """The chain of an I unit: the backward chain without its W pieces."""
    return [n for n in chain if not n.is_w]


def only_w(chain: Sequence[Node]) -> list[Node]:
    """The chain of a W unit: only the W pieces (no all-to-all: W sends nothing)."""
    return [n for n in chain if n.is_w]


def _links(chain: Sequence[Node]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Per chain: compute (node, local comm dep) and comm (node, local compute producer)."""
    comp: list[tuple[int, int]] = []
    comm: list[tuple[int, int]] = []
    producer, pending = -1, -1
    for i, node in enumerate(chain):
        if node.stream == COMM:
            comm.append((i, producer))
            pending = len(comm) - 1
        else:
            comp.append((i, pending))
            pending = -1
            if not node.is_w:
                producer = len(comp) - 1
    return comp, comm


def _assemble(halves: list[tuple[list, list]], order: list[tuple[int, int]]) -> Order:
    """Global streams from per-half links and the compute order [(half, local compute)]."""
    gidx = {hj: g for g, hj in enumerate(order)}
    keys = sorted((gidx[(h, p)] if p >= 0 else -1, h, j)
                  for h, (_, comm) in enumerate(halves) for j, (_, p) in enumerate(comm))
    cidx = {(h, j): g for g, (_, h, j) in enumerate(keys)}
    compute = tuple(ComputeStep(h, halves[h][0][j][0],
                                cidx[(h, halves[h][0][j][1])] if halves[h][0][j][1] >= 0 else -1)
                    for h, j in order)
    comm = tuple(CommStep(h, halves[h][1][j][0], after) for after, h, j in keys)
    return Order(compute, comm, frozenset(after for after, _, _ in keys if after >= 0))


def plain_order(chain: Sequence[Node]) -> Order:
    """A plain unit (F, I, W or B): its compute pieces in chain order."""
    half = _links(chain)
    return _assemble([half], [(0, j) for j in range(len(half[0]))])


def fb_order(fwd: Sequence[Node], bwd: Sequence[Node]) -> Order:
    """An FB: forward compute pieces alternate with backward groups (an I and its W pieces)."""
    f, b = _links(fwd), _links(bwd)
    groups: list[list[int]] = []
    for j, (node, _) in enumerate(b[0]):
        if bwd[node].is_w and groups:
            groups[-1].append(j)
        else:
            groups.append([j])
    order: list[tuple[int, int]] = []
    for k in range(max(len(f[0]), len(groups))):
        if k < len(f[0]):
            order.append((0, k))
        if k < len(groups):
            order.extend((1, j) for j in groups[k])
    return _assemble([f, b], order)
