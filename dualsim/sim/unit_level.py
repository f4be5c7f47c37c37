"""Unit-level timing: lay whole units out on their ranks, given each unit's duration.

The timing rules are those of the abstract engine (dualsim/sim/abstract.py): each rank runs its
compute units in list order, a unit starts at max(its rank's previous end, the arrival of each
input) and an FB publishes both halves at its end. The difference is that every unit has its own
duration (``durations[r][p]`` for the p-th compute unit of rank r) and every cross-rank edge its
own latency (``fwd_latency[s]`` on F(prev, m) -> F(s, m), ``bwd_latency[s]`` on the backward of
(next, m) -> the backward of (s, m)). The planner's bound and the fast hardware engine both lay
their units out with it; the schedule must already be valid (validate() or a generator).

Start times are monotone in every duration and latency: lengthening any of them never makes a
unit start earlier. So durations and latencies that are lower bounds give times that are lower
bounds (the planner's pruning relies on this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dualsim.errors import ValidationError
from dualsim.ir import Action, Op, Schedule


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


def stage_latencies(schedule: Schedule, latency: Sequence[Sequence[float]]
                    ) -> tuple[list[float], list[float]]:
    """(forward, backward) latency per stage from a rank-to-rank ``latency[src][dst]`` table;
    0 where the neighbouring stage is on the same rank or there is none."""
    num = max(st.stage for st in schedule.stages) + 1
    rank = {st.stage: st.rank for st in schedule.stages}
    fwd: list = [0] * num  # int 0: exact latencies stay exact
    bwd: list = [0] * num
    for st in schedule.stages:
        p, n = schedule.prev_stage(st.stage), schedule.next_stage(st.stage)
        if p is not None and rank[p] != st.rank:
            fwd[st.stage] = latency[rank[p]][st.rank]
        if n is not None and rank[n] != st.rank:
            bwd[st.stage] = latency[rank[n]][st.rank]
    return fwd, bwd


def lay_out(schedule: Schedule, rows: list[list[Action]], durations: list[list[float]],
            fwd_latency: Sequence[float], bwd_latency: Sequence[float]) -> UnitTimes:
    """Start and end of every unit of ``rows`` (see the module docstring).

    Products live in one flat list of ready times indexed by kind * S * M + stage * M + mb:
    kind 0 the forward output, 1 the input gradient (B or I), 2 an I's mark for its W. A rank
    blocked on a missing product parks until the unit that makes it ends.
    """
    ranks, mbs = schedule.ranks, schedule.microbatches
    num = max(st.stage for st in schedule.stages) + 1
    prev, nxt = [-1] * num, [-1] * num
    for st in schedule.stages:
        p, n = schedule.prev_stage(st.stage), schedule.next_stage(st.stage)
        prev[st.stage] = -1 if p is None else p
        nxt[st.stage] = -1 if n is None else n
    grad_at, wgrad_at = num * mbs, 2 * num * mbs
    ready: list[float | None] = [None] * (3 * num * mbs)
    waiting: dict[int, list[int]] = {}
    starts: list[list[float]] = [[] for _ in range(ranks)]
    ends: list[list[float]] = [[] for _ in range(ranks)]
    pointer = [0] * ranks
    free: list = [0] * ranks  # int 0 keeps exact durations (Fractions) exact
    F_, I_, W_, FB_ = Op.F, Op.I, Op.W, Op.FB
    work = list(range(ranks - 1, -1, -1))
    blocked = -1

    def made(key: int, t: float) -> None:
        ready[key] = t
        if key in waiting:
            work.extend(waiting.pop(key))

    while work:
        r = work.pop()
        row, dur = rows[r], durations[r]
        p, n, t_free = pointer[r], len(row), free[r]
        out_start, out_end = starts[r], ends[r]
        while p < n:
            a = row[p]
            op = a.op
            t = t_free
            if op is F_ or op is FB_:
                f = a.pair[0] if op is FB_ else a  # type: ignore[index]
                s, m = f.stage, f.microbatch
                ps = prev[s]
                if ps >= 0:
                    e = ready[ps * mbs + m]
                    if e is None:
                        blocked = ps * mbs + m
                        break
                    e += fwd_latency[s]
                    if e > t:
                        t = e
            if op is not F_:
                b = a.pair[1] if op is FB_ else a  # type: ignore[index]
                bs, bm = b.stage, b.microbatch
                own = bs * mbs + bm
                if op is W_:
                    e = ready[wgrad_at + own]
                    if e is None:
                        blocked = wgrad_at + own
                        break
                    if e > t:
                        t = e
                else:
                    e = ready[own]
                    if e is None:
                        blocked = own
                        break
                    if e > t:
                        t = e
                    ns = nxt[bs]
                    if ns >= 0:
                        e = ready[grad_at + ns * mbs + bm]
                        if e is None:
                            blocked = grad_at + ns * mbs + bm
                            break
                        e += bwd_latency[bs]
                        if e > t:
                            t = e
            t_free = t + dur[p]
            if op is F_:
                made(a.stage * mbs + a.microbatch, t_free)
            elif op is FB_:
                made(s * mbs + m, t_free)
                made(grad_at + own, t_free)
            elif op is not W_:
                made(grad_at + own, t_free)
                if op is I_:
                    made(wgrad_at + own, t_free)
            out_start.append(t)
            out_end.append(t_free)
            p += 1
        else:
            pointer[r], free[r] = p, t_free
            continue
        waiting.setdefault(blocked, []).append(r)
        pointer[r], free[r] = p, t_free
    stuck = [r for r in range(ranks) if pointer[r] < len(rows[r])]
    if stuck:
        r = stuck[0]
        raise ValidationError(f"schedule deadlocks: rank {r} cannot start {rows[r][pointer[r]]} "
                              f"(ranks stuck: {', '.join(map(str, stuck))})")
    return UnitTimes(rows, starts, ends)
