"""Interleaved 1F1B (Megatron virtual pipeline, v chunks per rank) and interleaved-overlap.

Chunk c of rank r is stage c*R + r. The forward slots follow Megatron-Core's schedule table:
micro-batches are cut into groups of N (``microbatch_group_size_per_vp_stage``), and each group
runs chunk 0 for all its micro-batches, then chunk 1, ..., then chunk v-1; the last group takes
whatever is left. Backward slot k is forward slot k's micro-batch on chunk v-1-c. N is R when R
divides M (then forward slot k is micro-batch (k div vR)*R + (k mod R) on chunk (k mod vR) div R);
otherwise it is the smallest N >= R whose last group is whole or holds at least R micro-batches
(Megatron's rule; it refuses a shorter last group), e.g. N = 20 for R = 16, M = 120. M >= R.

**Interleaved 1F1B**: w = min(2(R-r-1) + (v-1)N, vM) warm-up forward slots (all vM when
M == R); then for k = 0..vM-w-1: forward slot w+k, backward slot k (a full B); then backward
slots vM-w..vM-1. Makespan M(F+B) + (R-1)(F+B)/v.

**Interleaved-overlap** (Megatron-Core v0.14 ``--overlap-moe-expert-parallel-comm``: its
combined 1F1B for the virtual pipeline): w = min(2(R-r-1) + (v-1)N + 1, vM), one more warm-up
forward slot than interleaved 1F1B on every rank, as Megatron schedules it; then for
k = 0..vM-w-1 one overlapped unit (forward slot w+k; backward slot k); then backward slots
vM-w..vM-1 alone. Without the extra slot the last rank's first steady pair would be F and B of
the same (stage, micro-batch), which cannot be one unit. Megatron v0.14 has no "all warm-up when
M == R" rule (older versions had it, and interleaved 1F1B here keeps it), so neither has this
family. When FB >= max(F, B) the last rank never waits once started, so the makespan is its busy
time plus (R-1)(F+B)/v: ((v-1)N + R)(F+B)/v + (vM - (v-1)N - 1)FB/v
(docs/overlap-schedules.md).
"""

from __future__ import annotations

from dualsim.generators import placement
from dualsim.generators.one_f_one_b import one_forward_one_backward
from dualsim.ir import Action, B, F, Schedule


def group_size(ranks: int, microbatches: int) -> int:
    """Micro-batches per group of the schedule table: R when R divides M, else the smallest
    N >= R whose last group (M mod N) is empty or holds at least R micro-batches."""
    return next((n for n in range(ranks, microbatches + 1)
                 if microbatches % n == 0 or microbatches % n >= ranks), ranks)


def slot_table(ranks: int, microbatches: int, chunks: int) -> list[tuple[int, int]]:
    """(micro-batch, chunk) of every forward slot, in order (module docstring)."""
    n = group_size(ranks, microbatches)
    starts = range(0, microbatches, n)
    table: list[tuple[int, int]] = []
    for first in starts:
        last = microbatches if first == starts[-1] else first + n
        table.extend((m, c) for c in range(chunks) for m in range(first, last))
    return table


def warmup_slots(rank: int, ranks: int, microbatches: int, chunks: int,
                 overlap: bool = False) -> int:
    """Forward slots rank ``rank`` runs before its first backward (module docstring)."""
    total = chunks * microbatches
    if microbatches == ranks and not overlap:
        return total
    group = group_size(ranks, microbatches)
    return min(2 * (ranks - rank - 1) + (chunks - 1) * group + int(overlap), total)


def rank_order(rank: int, ranks: int, microbatches: int, chunks: int,
               overlap: bool = False) -> list[Action]:
    """Warm-up forward slots, then one forward slot and one backward slot (one FB unit with
    ``overlap``) per step, then the remaining backward slots."""
    slots = slot_table(ranks, microbatches, chunks)
    forwards = [F(chunk * ranks + rank, mb) for mb, chunk in slots]
    backwards = [B((chunks - 1 - chunk) * ranks + rank, mb) for mb, chunk in slots]
    warmup = warmup_slots(rank, ranks, microbatches, chunks, overlap)
    return one_forward_one_backward(forwards, backwards, warmup, overlap)


def build(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    return _build("interleaved", ranks, microbatches, chunks, overlap=False)


def build_overlap(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    return _build("interleaved-overlap", ranks, microbatches, chunks, overlap=True)


def _build(name: str, ranks: int, microbatches: int, chunks: int, overlap: bool) -> Schedule:
    rows = tuple(tuple(rank_order(r, ranks, microbatches, chunks, overlap))
                 for r in range(ranks))
    return Schedule(name, ranks, microbatches, placement.interleaved(ranks, chunks),
                    (tuple(range(microbatches)),), rows, chunks)
