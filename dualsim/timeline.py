"""Timeline: the common output of the simulators and of the runtime's measurement.

A Timeline is a pandas DataFrame with one row per interval on one stream of one rank. Every
renderer (Gantt, Perfetto, memory plot, report) and the sim-vs-measured comparison read only
this. Columns (always present, in this order):

- ``rank`` (int), ``stream``: "compute", "comm" (pipeline transfers; in hardware mode also the
  all-to-all), or "a2a" (the runtime's measured expert-parallel all-to-all, its own lane)
- ``op``: F, I, W, B, FB for compute actions; for communication rows a lower-case kind such as
  ``dispatch``, ``combine``, ``pp_send``, ``dp_sync``
- ``stage``, ``microbatch``, ``chain``: of the action (the forward half of an FB); -1 if none
- ``stage2``, ``microbatch2``, ``chain2``: the backward half of an FB; -1 otherwise
- ``piece``: sub-piece name in hardware mode and in the runtime with expert parallelism
  (``attn``, ``mlp``, ``mlp_bwd``, ...), "" for a whole action
- ``start``, ``end`` (float): in the time unit of the producer (abstract cost units, or seconds)
- ``action``: the action's string form (``(0F7;7B3)`` for an FB)
- ``sms`` (int): SMs the row's kernel held while it ran (hardware mode's communication kernels:
  all-to-all, PP send/receive, gradient sync); 0 for compute rows and where not modelled. Where
  a compute row overlaps a comm row with ``sms`` > 0 on the same rank, compute shared the GPU's
  SMs and ran slower (``sm_shared_intervals``).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd

from dualsim.ir import Action, Op, Schedule

COLUMNS: tuple[str, ...] = (
    "rank", "stream", "op", "stage", "microbatch", "chain",
    "stage2", "microbatch2", "chain2", "piece", "start", "end", "action", "sms",
)
INT_COLUMNS = ("rank", "stage", "microbatch", "chain", "stage2", "microbatch2", "chain2", "sms")


def action_fields(schedule: Schedule, action: Action) -> tuple[Any, ...]:
    """(op, stage, microbatch, chain, stage2, microbatch2, chain2, action) of one action."""
    chain = schedule.placement(action.stage).chain if schedule.has_stage(action.stage) else -1
    if action.op is Op.FB:
        b = action.backward
        return ("FB", action.stage, action.microbatch, chain, b.stage, b.microbatch,
                schedule.placement(b.stage).chain, str(action))
    return (action.op.value, action.stage, action.microbatch, chain, -1, -1, -1, str(action))


def from_rows(rows: Iterable[Sequence[Any]]) -> pd.DataFrame:
    """Build a Timeline from rows in COLUMNS order, sorted by (rank, stream, start). A row may
    leave out the last column, ``sms`` (then 0: no SMs held)."""
    n = len(COLUMNS)
    df = pd.DataFrame([r if len(r) == n else (*r, 0) for r in rows], columns=list(COLUMNS))
    for c in INT_COLUMNS:
        df[c] = df[c].astype("int64")
    df["start"] = df["start"].astype("float64")
    df["end"] = df["end"].astype("float64")
    df = df.sort_values(["rank", "stream", "start", "end"], kind="stable").reset_index(drop=True)
    return df



def intervals_union(pairs: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, disjoint union of [start, end) intervals (empty ones dropped)."""
    merged: list[list[float]] = []
    for s, e in sorted(pairs):
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def exposed(busy: Sequence[tuple[float, float]],
            comm: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(length of ``comm``, its part outside ``busy``); both sorted disjoint unions."""
    total = sum(e - s for s, e in comm)
    covered, i = 0.0, 0
    for s, e in comm:
        while i < len(busy) and busy[i][1] <= s:
            i += 1
        j = i
        while j < len(busy) and busy[j][0] < e:
            covered += min(e, busy[j][1]) - max(s, busy[j][0])
            j += 1
    return total, total - covered


def sm_shared_intervals(timeline: pd.DataFrame, rank: int) -> list[tuple[float, float]]:
    """Where ``rank``'s compute ran beside comm kernels holding SMs: the intersection of its
    compute rows with its comm rows of ``sms`` > 0, as sorted disjoint (start, end) intervals."""
    if "sms" not in timeline.columns:
        return []
    mine = timeline[timeline["rank"] == rank]
    comp = intervals_union(_pairs(mine[mine["stream"] == "compute"]))
    held = intervals_union(_pairs(mine[(mine["stream"] == "comm") & (mine["sms"] > 0)]))
    out, j = [], 0
    for s, e in comp:
        while j < len(held) and held[j][1] <= s:
            j += 1
        k = j
        while k < len(held) and held[k][0] < e:
            lo, hi = max(s, held[k][0]), min(e, held[k][1])
            if hi > lo:
                out.append((lo, hi))
            k += 1
    return out


def _pairs(rows: pd.DataFrame) -> list[tuple[float, float]]:
    return list(zip(rows["start"].tolist(), rows["end"].tolist()))
