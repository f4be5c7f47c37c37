"""GPipe: every rank runs all its forwards, then all its backwards (docs/schedules.md)."""

from __future__ import annotations

from dualsim.generators import placement
from dualsim.ir import Action, B, F, Schedule


def build(ranks: int, microbatches: int) -> Schedule:
    """Rank r: F(r, m) for m = 0..M-1, then B(r, m) for m = 0..M-1."""
    rows: list[tuple[Action, ...]] = []
    for r in range(ranks):
        forwards = [F(r, m) for m in range(microbatches)]
        backwards = [B(r, m) for m in range(microbatches)]
        rows.append(tuple(forwards + backwards))
    return Schedule("gpipe", ranks, microbatches, placement.linear(ranks),
                    (tuple(range(microbatches)),), tuple(rows))
