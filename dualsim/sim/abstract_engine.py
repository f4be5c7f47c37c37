"""The abstract simulator's engine: start and end time of every compute action.

It implements the timing rules written down in :mod:`dualsim.sim.abstract` for given integer
or float durations per op and one cross-rank latency, by walking the ranks through the
schedule's dependencies (:func:`dualsim.walk.walk`, over :mod:`dualsim.deps`'s rules in the
compute view: a lowered plan's SEND/RECV take no time, the compute dependencies stand for them).
It runs a validated schedule only: the walk that proves a schedule cannot deadlock is the one
that times it (:func:`dualsim.validate.validate_walk`), so nothing is validated twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from dualsim.ir import Action, Op, Schedule
from dualsim.validate import ValidSchedule, validate_walk


@dataclass
class EngineRun:
    """What the engine computes, per rank, over the rank's compute actions in list order."""

    rows: list[Sequence[Action]]  # compute actions (SEND/RECV dropped)
    starts: list[list[Any]]
    ends: list[list[Any]]
    busy: list[Any]
    allocs: list[list[Any]]  # forward starts (F, FB), rising
    frees: list[list[Any]]  # backward ends (B, I, FB), rising


def run(schedule: Schedule, op_time: dict[Op, Any],
        latency: Any) -> tuple[ValidSchedule, EngineRun]:
    """``schedule`` validated, and the start and end of every compute action with
    ``op_time[op]`` per action (already scaled by the stage size) and ``latency`` on cross-rank
    dependencies. Raises ValidationError for a schedule that breaks the rules."""
    valid, w = validate_walk(schedule, op_time, latency)
    rows = [row if len(row) == len(done) else [a for a in row if a.op.is_compute]
            for row, done in zip(valid.actions, w.starts)]  # drop a lowered plan's transfers
    return valid, EngineRun(rows, w.starts, w.ends, w.busy, w.allocs, w.frees)
