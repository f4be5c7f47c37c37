"""1F1B (PipeDream-flush) and its batch-level-overlap variant 1F1B-overlap.

See docs/overlap-schedules.md for the overlap families.

Both interleaved 1F1B and 1F1B are "warm-up, one forward one backward, cool-down" over a rank's
forward and backward sequences; ``one_forward_one_backward`` builds that order from the
sequences, and with ``overlap`` it merges each steady-state (F, B) pair into one FB unit.

**1F1B**, rank r of R, M micro-batches: w = min(R-r-1, M) forwards F0..F(w-1); then for
k = 0..M-w-1: F(w+k), B(k); then B(M-w)..B(M-1).

**1F1B-overlap** (batch-level overlap: one micro-batch's forward runs with another's backward as
one FB unit, as Megatron-Core's ``--overlap-moe-expert-parallel-comm`` does): w = min(2(R-r-1)+1,
M) forwards F0..F(w-1); then for k = 0..M-w-1 one overlapped unit (F(w+k); B(k)); then
B(M-w)..B(M-1) alone. On the last rank that is F0, (F1;B0), (F2;B1), ..., B(M-1).

Why this warm-up. Megatron-Core v0.14 runs its combined 1F1B only without pipelining and with
the virtual pipeline (it asserts a virtual pipeline when PP > 1); its warm-up for the latter is
2(R-r-1) + (v-1)R + 1, interleaved 1F1B's plus one. 1F1B-overlap is that rule at v = 1
(interleaved-overlap with one chunk per rank); at R = 1 it is Megatron's no-pipelining order
F0, (F1;B0), ..., B(M-1) exactly. The extra forward is needed because plain 1F1B's last rank
pairs F(m) with B(m), which cannot be one unit (B needs F's output, and an FB's results exist
only when it ends). The doubled spacing 2(R-r-1) is needed for speed: an FB's forward output
leaves only when the whole unit ends, so rank r's k-th unit can run one unit after rank r+1's
only if their warm-ups differ by 2. Plain 1F1B's spacing with one extra forward (w = R-r) is
valid but runs one unit per two FB times (R=4, M=8, F=I=W=1: makespan 51 against 1F1B's 33).
With 2 the last rank never waits once started: makespan = R(F+B) + (M-1)FB when
FB >= max(F, B) (docs/overlap-schedules.md).
"""

from __future__ import annotations

from typing import Sequence

from dualsim.generators import placement
from dualsim.ir import Action, B, F, Schedule


def one_forward_one_backward(forwards: Sequence[Action], backwards: Sequence[Action],
                             warmup: int, overlap: bool = False) -> list[Action]:
    """``warmup`` forwards; then forward ``warmup+k`` and backward ``k`` for each remaining
    forward (one FB unit each with ``overlap``, else F then B); then the remaining backwards."""
    assert len(forwards) == len(backwards) and 0 <= warmup <= len(forwards)
    order = list(forwards[:warmup])
    for f, b in zip(forwards[warmup:], backwards):
        order.extend((Action.fb(f, b),) if overlap else (f, b))
    order.extend(backwards[len(forwards) - warmup:])
    return order


def rank_order(rank: int, ranks: int, microbatches: int, overlap: bool = False) -> list[Action]:
    """Rank ``rank``'s order (module docstring): warm-up R-r-1 forwards, 2(R-r-1)+1 with
    ``overlap``."""
    warmup = min(2 * (ranks - rank - 1) + 1 if overlap else ranks - rank - 1, microbatches)
    return one_forward_one_backward([F(rank, m) for m in range(microbatches)],
                                    [B(rank, m) for m in range(microbatches)], warmup, overlap)


def build(ranks: int, microbatches: int) -> Schedule:
    return _build("1f1b", ranks, microbatches, overlap=False)


def build_overlap(ranks: int, microbatches: int) -> Schedule:
    return _build("1f1b-overlap", ranks, microbatches, overlap=True)


def _build(name: str, ranks: int, microbatches: int, overlap: bool) -> Schedule:
    rows = tuple(tuple(rank_order(r, ranks, microbatches, overlap)) for r in range(ranks))
    return Schedule(name, ranks, microbatches, placement.linear(ranks),
                    (tuple(range(microbatches)),), rows)
