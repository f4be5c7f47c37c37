"""Action expansion for hardware mode: a unit's per-layer pieces with their costs, on two streams.

The order of the pieces (which compute piece waits for which all-to-all, which all-to-all waits
for which compute piece, how an FB interleaves its two micro-batches) is dualsim/overlap_order.py,
shared with the runtime. This module only gives each piece its cost on the profile: a compute
piece its seconds on all the GPU's SMs (cluster/compute.py), an all-to-all its Flow
(cluster/comm.py). With ``--routing-imbalance X`` an all-to-all moves X times the bytes (it
ends when the hottest peer's share has moved), and the combine (and the dispatch's backward,
which returns expert gradients) also waits for the hottest GPU's routed-expert GEMMs, which see X
times the mean tokens (cluster/compute.py ``imbalance``): the difference from the mean GPU's
mlp piece is added to its fixed cost.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from dualsim.cluster.comm import A2A_KINDS, Flow, a2a_flow
from dualsim.cluster.compute import piece_times
from dualsim.cluster.profile import Profile
from dualsim.ir import Action, Op
from dualsim.overlap_order import (Node, Order, backward_chain, fb_order, forward_chain, only_w,
                                   plain_order, without_w)
from dualsim.workload.layout import LayerSlice, Layout

#: the all-to-all that carries a MoE unit's piece output in the forward
A2A_AFTER = {"attn": "dispatch", "mlp": "combine"}


@dataclass(frozen=True)
class Chain:
    """One half's nodes (overlap_order) and their costs: seconds on all SMs, or a Flow."""

    nodes: tuple[Node, ...]
    costs: tuple[float | Flow, ...]

    def pick(self, keep: Sequence[Node]) -> "Chain":
        """The sub-chain of the nodes in ``keep`` (a filtered copy of ``nodes``), with costs."""
        it = iter(keep)
        want = next(it, None)
        pairs = []
        for n, c in zip(self.nodes, self.costs):
            if n is want:
                pairs.append((n, c))
                want = next(it, None)
        return Chain(tuple(n for n, _ in pairs), tuple(c for _, c in pairs))


@dataclass(frozen=True)
class UnitPieces:
    """Pieces of one unit. comp: (piece, seconds on all SMs, half, comm dep or -1); comm: (kind,
    flow, half, producing compute piece or -1); ``signals``: compute pieces some comm piece
    waits on; ``busy``: the compute seconds on all SMs."""

    comp: tuple[tuple[str, float, int, int], ...]
    comm: tuple[tuple[str, Flow, int, int], ...]
    signals: frozenset[int]
    busy: float




def slice_chains(sl: LayerSlice, layout: Layout, profile: Profile,
                 imbalance: float = 1.0) -> tuple[Chain, Chain]:
    """(forward chain, backward chain) of one layer slice for a micro-batch, with costs."""
    tokens, model = layout.microbatch_tokens, layout.model
    a2a = model.is_moe and layout.ep > 1
    flows = {k: a2a_flow(model, profile, layout.ep, tokens, k, imbalance)
             for k in A2A_KINDS} if a2a else {}
    specs = [[(p.name, A2A_AFTER.get(p.name) if a2a and u.moe else None) for p in u.pieces]
             for u in sl.units]
    extra = imbalance - 1.0
    cost: dict[tuple[int, str], float | Flow] = {}
    for k, unit in enumerate(sl.units):
        for p in unit.pieces:
            f, i, w = piece_times(p, tokens, profile)
            cost[(k, p.name)], cost[(k, f"{p.name}_bwd")], cost[(k, f"{p.name}_w")] = f, i, w
        if not (a2a and unit.moe):
            continue
        for kind in A2A_KINDS:
            cost[(k, kind)] = flows[kind]
        mlp = next((p for p in unit.pieces if p.name == "mlp"), None)
        if extra and mlp is not None:
            # the combine waits for the hottest GPU's forward experts (its routed-expert GEMMs
            # see X times the mean tokens), the dispatch's backward (which returns the experts'
            # input gradients) for its input-gradient experts
            hot, mean = (piece_times(mlp, tokens, profile, imbalance=x) for x in (imbalance, 1.0))
            for kind, j in (("combine", 0), ("dispatch_bwd", 1)):
                wait = hot[j] - mean[j]
                cost[(k, kind)] = replace(flows[kind], latency=flows[kind].latency + wait)
    fwd, bwd = forward_chain(specs), backward_chain(specs)
    return (Chain(tuple(fwd), tuple(cost[(n.unit, n.name)] for n in fwd)),
            Chain(tuple(bwd), tuple(cost[(n.unit, n.name)] for n in bwd)))


def _pieces(chains: Sequence[Chain], order: Order) -> UnitPieces:
    comp = tuple((chains[s.half].nodes[s.node].name, chains[s.half].costs[s.node], s.half,
                  s.waits) for s in order.compute)
    comm = tuple((chains[s.half].nodes[s.node].name, chains[s.half].costs[s.node], s.half,
                  s.after) for s in order.comm)
    return UnitPieces(comp, comm, order.signals,  # type: ignore[arg-type]
                      sum(c[1] for c in comp))  # type: ignore[misc]


def plain_pieces(chain: Chain) -> UnitPieces:
    """A plain unit (F, I, W or B): its chain in order (overlap_order.plain_order)."""
    return _pieces([chain], plain_order(chain.nodes))


def fb_pieces(fwd: Chain, bwd: Chain) -> UnitPieces:
    """An FB: the forward chain of one micro-batch interleaved with the backward chain of
    another (overlap_order.fb_order)."""
    return _pieces([fwd, bwd], fb_order(fwd.nodes, bwd.nodes))


def unit_chain(op: str, fwd: Chain, bwd: Chain) -> Chain:
    """The chain a plain F, B, I or W unit runs."""
    if op == "F":
        return fwd
    if op == "B":
        return bwd
    return bwd.pick(without_w(bwd.nodes) if op == "I" else only_w(bwd.nodes))



def unit_kind(a: Action, position: Mapping[int, int]) -> tuple[str, int, int]:
    """The kind of unit ``a`` (what its pieces depend on): ("FB", forward position, backward
    position) for an FB, (op, position, position) for a plain F, B, I or W; ``position`` maps
    a stage to its slice position."""
    if a.op is Op.FB:
        return ("FB", position[a.forward.stage], position[a.backward.stage])
    p = position[a.stage]
    return (a.op.value, p, p)


def kind_pieces(kind: tuple[str, int, int],
                chains: Callable[[int], tuple[Chain, Chain]]) -> UnitPieces:
    """The pieces of a unit of ``kind`` (``unit_kind``); ``chains(p)`` gives position p's
    (forward, backward) chains (``slice_chains``)."""
    op, fwd, bwd = kind
    if op == "FB":
        return fb_pieces(chains(fwd)[0], chains(bwd)[1])
    return plain_pieces(unit_chain(op, *chains(fwd)))
