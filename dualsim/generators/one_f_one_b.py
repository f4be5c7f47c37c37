"""1F1B (PipeDream-flush): warm-up forwards, one-forward-one-backward, cool-down (DESIGN.md §4)."""

from __future__ import annotations

from dualsim.generators import placement
from dualsim.ir import Action, B, F, Schedule


def rank_order(rank: int, ranks: int, microbatches: int) -> list[Action]:
    """w = min(R-r-1, M) forwards; (M-w) x [F next, B oldest]; then the w remaining B."""
    warmup = min(ranks - rank - 1, microbatches)
    order = [F(rank, m) for m in range(warmup)]
    for k in range(microbatches - warmup):
        order.append(F(rank, warmup + k))
        order.append(B(rank, k))
    order.extend(B(rank, m) for m in range(microbatches - warmup, microbatches))
    return order


def build(ranks: int, microbatches: int) -> Schedule:
    rows = tuple(tuple(rank_order(r, ranks, microbatches)) for r in range(ranks))
    return Schedule("1f1b", ranks, microbatches, placement.linear(ranks),
                    (tuple(range(microbatches)),), rows)
