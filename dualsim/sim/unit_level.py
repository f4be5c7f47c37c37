"""Unit-level timing: lay whole units out on their ranks, given each unit's duration.

The timing rules are those of the abstract engine (dualsim/sim/abstract.py), walked by the same
code (:func:`dualsim.walk.walk` over :mod:`dualsim.deps`'s rules): each rank runs its compute
units in list order, a unit starts at max(its rank's previous end, the arrival of each input)
and an FB publishes both halves at its end. The difference is that every unit has its own
duration (``durations[r][p]`` for the p-th compute unit of rank r) and every cross-rank edge
the latency of its pair of ranks (``latency[src][dst]``). The planner's bound lays its units out
with it; the schedule must already be valid (validate() or a generator).

Start times are monotone in every duration and latency: lengthening any of them never makes a
unit start earlier. So durations and latencies that are lower bounds give times that are lower
bounds (the planner's pruning relies on this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dualsim.deps import compile_rules
from dualsim.ir import Action, Schedule
from dualsim.walk import ZERO, walk


@dataclass
class UnitTimes:
    """Start and end of every compute unit, per rank in list order."""

    rows: list[list[Action]]  # the compute units of each rank (SEND/RECV dropped)
    starts: list[list[float]]
    ends: list[list[float]]

    @property
    def last_end(self) -> float:
        return max((e[-1] for e in self.ends if e), default=0.0)


def compute_rows(schedule: Schedule) -> list[list[Action]]:
    """Each rank's compute units in list order (a lowered plan's SEND/RECV dropped)."""
    return [[a for a in row if a.op.is_compute] for row in schedule.actions]


def lay_out(schedule: Schedule, rows: list[list[Action]], durations: list[list[float]],
            latency: Sequence[Sequence[float]]) -> UnitTimes:
    """Start and end of every unit of ``rows`` (``compute_rows(schedule)``; see the module
    docstring), with ``latency[src][dst]`` on each dependency from rank src to rank dst."""
    w = walk(schedule, compile_rules(schedule), ZERO, [list(r) for r in latency],
             unit_durations=durations)
    assert not w.blocked, "a valid schedule cannot stall"
    return UnitTimes(rows, w.starts, w.ends)
