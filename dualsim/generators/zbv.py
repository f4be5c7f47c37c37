"""ZB-V: the handcrafted zero-bubble V schedule, two chunks per rank in a V (DESIGN.md §4).

Chunk 0 of rank r is stage r, chunk 1 is stage 2R-1-r. Micro-batches run in increasing order
within each (stage, op), so each (chunk, op) only needs a counter.
"""

from __future__ import annotations

from dualsim.generators import placement
from dualsim.ir import Action, F, I, Op, Schedule, W


def rank_order(rank: int, ranks: int, microbatches: int) -> list[Action]:
    stages = (rank, 2 * ranks - 1 - rank)
    nxt = {(op, c): 0 for op in (Op.F, Op.I, Op.W) for c in (0, 1)}
    make = {Op.F: F, Op.I: I, Op.W: W}
    order: list[Action] = []

    def run(op: Op, chunk: int) -> None:
        m = nxt[(op, chunk)]
        nxt[(op, chunk)] = m + 1
        order.append(make[op](stages[chunk], m))

    # warm-up: chunk 0 forwards, then chunk 1 and chunk 0 forwards alternating
    for _ in range(2 * ranks - 2 * rank - 1):
        run(Op.F, 0)
    for _ in range(rank):
        run(Op.F, 1)
        run(Op.F, 0)
    # the turn of the V: chunk 1 starts its backwards
    for _ in range(ranks - rank):
        run(Op.F, 1)
        run(Op.I, 1)
        run(Op.W, 1)
    # steady state, until every forward of both chunks has run
    while nxt[(Op.F, 1)] < microbatches:
        if nxt[(Op.F, 0)] < microbatches:
            run(Op.F, 0)
        run(Op.I, 0)
        run(Op.W, 0)
        run(Op.F, 1)
        run(Op.I, 1)
        run(Op.W, 1)
    # cool-down
    for _ in range(rank):
        run(Op.I, 0)
        run(Op.I, 1)
    for _ in range(ranks - rank):
        run(Op.I, 0)
        run(Op.W, 0)
    for chunk in (1, 0):
        while nxt[(Op.W, chunk)] < microbatches:
            run(Op.W, chunk)
    return order


def build(ranks: int, microbatches: int) -> Schedule:
    rows = tuple(tuple(rank_order(r, ranks, microbatches)) for r in range(ranks))
    return Schedule("zb-v", ranks, microbatches, placement.vshape(ranks),
                    (tuple(range(microbatches)),), rows)
