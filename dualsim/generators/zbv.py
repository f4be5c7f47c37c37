"""ZB-V: the handcrafted zero-bubble V schedule, two chunks per rank in a V (docs/schedules.md).

Chunk 0 of rank r is stage r, chunk 1 is stage 2R-1-r. Micro-batches run in increasing order
within each (stage, op), so each (chunk, op) only needs a counter.
"""

from __future__ import annotations

from dualsim.generators import placement
from dualsim.ir import Action, F, I, Schedule, W


def _pattern(rank: int, ranks: int, microbatches: int) -> list[tuple[int, int]]:
    """The (op, chunk) sequence of rank r; op 0 = F, 1 = I, 2 = W."""
    f0, f1, i0, i1, w0, w1 = (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)
    # warm-up: chunk 0 forwards, then chunk 1 and chunk 0 forwards alternating
    seq = [f0] * (2 * ranks - 2 * rank - 1) + [f1, f0] * rank
    # the turn of the V: chunk 1 starts its backwards
    seq += [f1, i1, w1] * (ranks - rank)
    # steady state: one more chunk-1 forward per round until all have run
    chunk0_left = microbatches - (2 * ranks - rank - 1)
    for k in range(microbatches - ranks):
        seq += [f0, i0, w0, f1, i1, w1] if k < chunk0_left else [i0, w0, f1, i1, w1]
    # cool-down, then the leftover weight gradients of chunk 1, then those of chunk 0
    seq += [i0, i1] * rank + [i0, w0] * (ranks - rank)
    return seq + [w1] * rank + [w0] * rank


def rank_order(rank: int, ranks: int, microbatches: int) -> list[Action]:
    stages = (rank, 2 * ranks - 1 - rank)
    makers = (F, I, W)
    nxt = [[0, 0], [0, 0], [0, 0]]  # next micro-batch of each (op, chunk)
    order: list[Action] = []
    for op, chunk in _pattern(rank, ranks, microbatches):
        counter = nxt[op]
        order.append(makers[op](stages[chunk], counter[chunk]))
        counter[chunk] += 1
    return order


def build(ranks: int, microbatches: int) -> Schedule:
    rows = tuple(tuple(rank_order(r, ranks, microbatches)) for r in range(ranks))
    return Schedule("zb-v", ranks, microbatches, placement.vshape(ranks),
                    (tuple(range(microbatches)),), rows)
