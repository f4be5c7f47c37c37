"""Interleaved 1F1B (Megatron virtual pipeline, v chunks per rank), DESIGN.md §4.

Chunk c of rank r is stage c*R + r. Forward slot k is micro-batch (k div vR)*R + (k mod R) on
chunk (k mod vR) div R; backward slot k is that micro-batch on chunk v-1-((k mod vR) div R).
"""

from __future__ import annotations

from dualsim.generators import placement
from dualsim.ir import Action, B, F, Schedule


def _slot(k: int, ranks: int, chunks: int) -> tuple[int, int]:
    """(micro-batch, chunk) of forward slot k."""
    group = chunks * ranks
    return (k // group) * ranks + k % ranks, (k % group) // ranks


def rank_order(rank: int, ranks: int, microbatches: int, chunks: int) -> list[Action]:
    """Warm-up forward slots, then alternate one forward slot and one backward slot, then drain."""
    total = chunks * microbatches
    if microbatches == ranks:
        warmup = total
    else:
        warmup = min(2 * (ranks - rank - 1) + (chunks - 1) * ranks, total)

    def forward(k: int) -> Action:
        mb, chunk = _slot(k, ranks, chunks)
        return F(chunk * ranks + rank, mb)

    def backward(k: int) -> Action:
        mb, chunk = _slot(k, ranks, chunks)
        return B((chunks - 1 - chunk) * ranks + rank, mb)

    order = [forward(k) for k in range(warmup)]
    for k in range(total - warmup):
        order.append(forward(warmup + k))
        order.append(backward(k))
    order.extend(backward(k) for k in range(total - warmup, total))
    return order


def build(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    rows = tuple(tuple(rank_order(r, ranks, microbatches, chunks)) for r in range(ranks))
    return Schedule("interleaved", ranks, microbatches, placement.interleaved(ranks, chunks),
                    (tuple(range(microbatches)),), rows, chunks)
