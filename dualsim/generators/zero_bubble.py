"""ZB-H1 and ZB-H2 (Zero Bubble, Qi et al. ICLR 2024): 1F1B with backward split into I and W.

docs/schedules.md: ``warmup`` forwards, then for i = 0..M-1: [F if any left] I(oldest)
[W(oldest pending) if i >= lag]; then the pending W. ZB-H1 has warmup R-r-1 and lag r, ZB-H2
warmup 2(R-r-1) and lag 2r. Warm-up is capped by M.
"""

from __future__ import annotations

from dualsim.generators import placement
from dualsim.ir import Action, F, I, Schedule, W


def rank_order(rank: int, microbatches: int, warmup: int, lag: int) -> list[Action]:
    warmup = min(warmup, microbatches)
    order = [F(rank, m) for m in range(warmup)]
    next_w = 0
    for i in range(microbatches):
        if warmup + i < microbatches:
            order.append(F(rank, warmup + i))
        order.append(I(rank, i))
        if i >= lag:
            order.append(W(rank, next_w))
            next_w += 1
    order.extend(W(rank, m) for m in range(next_w, microbatches))
    return order


def _schedule(name: str, ranks: int, microbatches: int, rows: list[list[Action]]) -> Schedule:
    return Schedule(name, ranks, microbatches, placement.linear(ranks),
                    (tuple(range(microbatches)),), tuple(tuple(r) for r in rows))


def build_h1(ranks: int, microbatches: int) -> Schedule:
    rows = [rank_order(r, microbatches, ranks - r - 1, r) for r in range(ranks)]
    return _schedule("zb-h1", ranks, microbatches, rows)


def build_h2(ranks: int, microbatches: int) -> Schedule:
    rows = [rank_order(r, microbatches, 2 * (ranks - r - 1), 2 * r) for r in range(ranks)]
    return _schedule("zb-h2", ranks, microbatches, rows)
