"""Action expansion for hardware mode: per-layer pieces on a compute and a communication stream.

A stage's forward is, per layer: attn -> dispatch -> mlp -> combine (dense layers and the head
have no all-to-all); its backward, in reverse: combine_bwd -> mlp_bwd (I) -> mlp_w (W) ->
dispatch_bwd -> attn_bwd (I) -> attn_w (W). A plain F, I, W or B runs its chain strictly in
sequence, so every all-to-all is exposed. An FB interleaves its two micro-batches as in
DeepSeek-V3: the compute stream alternates forward pieces and backward pieces (each I piece
followed by its W), while the communication stream carries the other micro-batch's all-to-all;
inside an FB a W piece does not hold back the all-to-all that follows its I piece.

A UnitPieces lists the compute pieces in stream order, each with the index of the comm piece it waits
for, and the comm pieces in stream order (sorted by the compute piece that produces their data),
each with the index of that compute piece. This order cannot deadlock: every piece waits only on
pieces produced earlier in compute order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from dualsim.cluster.comm import Flow, a2a_flow

from dualsim.cluster.compute import piece_times
from dualsim.cluster.profile import Profile
from dualsim.workload.layout import LayerSlice, Layout

# chain nodes: ("c", name, seconds, is_w) or ("m", kind, Flow)
Node = Union[tuple[str, str, float, bool], tuple[str, str, Flow]]


@dataclass(frozen=True)
class UnitPieces:
    """Pieces of one unit. comp: (piece, seconds, half, comm dep or -1); comm: (kind, transfer,
    half, producing compute piece or -1); ``signals``: compute pieces some comm piece waits on."""

    comp: tuple[tuple[str, float, int, int], ...]
    comm: tuple[tuple[str, Flow, int, int], ...]
    signals: frozenset[int]
    busy: float


def slice_chains(sl: LayerSlice, layout: Layout, profile: Profile) -> tuple[list[Node], list[Node]]:
    """(forward nodes, backward nodes) of one layer slice for a micro-batch."""
    tokens = layout.microbatch_tokens
    # static SM split until the engine shares SMs dynamically: compute on the SMs the
    # communication kernels leave (piece_times defaults to all SMs)
    sms = profile.sms - profile.comm_sms
    a2a = layout.model.is_moe and layout.ep > 1
    tr = {k: a2a_flow(layout.model, profile, layout.ep, tokens, k) for k in
          ("dispatch", "combine", "combine_bwd", "dispatch_bwd")} if a2a else {}
    fwd: list[Node] = []
    bwd: list[Node] = []
    for unit in sl.units:
        moe = a2a and unit.moe
        for piece in unit.pieces:
            f, _, _ = piece_times(piece, tokens, profile, sms=sms)
            fwd.append(("c", piece.name, f, False))
            if moe:
                fwd.append(("m", "dispatch" if piece.name == "attn" else "combine",
                             tr["dispatch" if piece.name == "attn" else "combine"]))
    for unit in reversed(sl.units):
        moe = a2a and unit.moe
        for piece in reversed(unit.pieces):
            _, i, w = piece_times(piece, tokens, profile, sms=sms)
            if moe:
                kind = "combine_bwd" if piece.name == "mlp" else "dispatch_bwd"
                bwd.append(("m", kind, tr[kind]))
            bwd.append(("c", f"{piece.name}_bwd", i, False))
            bwd.append(("c", f"{piece.name}_w", w, True))
    return fwd, bwd


def _split(nodes: list[Node], overlapped: bool) -> tuple[list, list]:
    """Per-chain compute (name, s, is_w, dep) and comm (kind, transfer, pred) lists."""
    comp: list[tuple[str, float, bool, int]] = []
    comm: list[tuple[str, Flow, int]] = []
    last, pending = -1, -1
    for node in nodes:
        if node[0] == "m":
            comm.append((node[1], node[2], last))  # type: ignore[arg-type]
            pending = len(comm) - 1
        else:
            _, name, secs, is_w = node  # type: ignore[misc]
            comp.append((name, secs, is_w, pending))
            pending = -1
            if not (overlapped and is_w):
                last = len(comp) - 1
    return comp, comm


def _assemble(halves: list[tuple[list, list]], order: list[tuple[int, int]]) -> UnitPieces:
    gidx = {hj: g for g, hj in enumerate(order)}
    comm_keys = []
    for h, (_, comm) in enumerate(halves):
        for j, (_, _, pred) in enumerate(comm):
            comm_keys.append((gidx[(h, pred)] if pred >= 0 else -1, h, j))
    comm_keys.sort()
    cidx = {(h, j): g for g, (_, h, j) in enumerate(comm_keys)}
    comp = []
    for h, j in order:
        name, secs, _, dep = halves[h][0][j]
        comp.append((name, secs, h, cidx[(h, dep)] if dep >= 0 else -1))
    comm = []
    for pred, h, j in comm_keys:
        kind, tr, _ = halves[h][1][j]
        comm.append((kind, tr, h, pred))
    return UnitPieces(tuple(comp), tuple(comm), frozenset(p for p, _, _ in comm_keys if p >= 0),
                sum(c[1] for c in comp))


def plain_pieces(nodes: list[Node]) -> UnitPieces:
    """A unit that runs its chain in sequence (F, I, W or B)."""
    half = _split(nodes, overlapped=False)
    return _assemble([half], [(0, j) for j in range(len(half[0]))])


def fb_pieces(fwd: list[Node], bwd: list[Node]) -> UnitPieces:
    """An FB: forward pieces alternate with backward groups (an I piece and its W pieces)."""
    f, b = _split(fwd, overlapped=True), _split(bwd, overlapped=True)
    groups: list[list[int]] = []
    for j, (_, _, is_w, _) in enumerate(b[0]):
        if is_w and groups:
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


def without_w(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if not (n[0] == "c" and n[3])]  # type: ignore[misc]


def only_w(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if n[0] == "c" and n[3]]  # type: ignore[misc]
