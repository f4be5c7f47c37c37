"""The abstract (cost-based) simulator: exact start/end times of every action from unit costs.

Semantics (DESIGN.md §3, §5; the SimPy engine must agree with these exactly on abstract inputs):

- **Durations.** An action on a stage costs its op's cost times ``schedule.stage_size``
  (ranks / chain length: 1 for the linear families and DualPipe, 1/2 for ZB-V and DualPipeV,
  1/v for interleaved). F, I, W, B cost ``costs[op]``; an FB unit costs ``costs["FB"]`` times the
  size of its forward half's stage. B defaults to I + W, FB to F + B.
- **Units.** Each rank runs its compute actions in list order, one at a time; an FB is one unit.
  SEND/RECV actions of a lowered plan are ignored (the compute dependencies below stand for them).
- **Dependencies.** F(s, m) needs F(prev stage in chain, m). B or I(s, m) needs F(s, m) and the
  backward (B or I) of (next stage in chain, m). W(s, m) needs I(s, m). An FB needs the union of
  its halves' needs; both halves' outputs become available when the whole FB ends.
- **Latency.** A dependency is ready at its producer's end, plus ``comm`` when the producer runs
  on another rank (nothing on the same rank: the turn of a V, F -> B/I -> W on a stage).
- **Start.** All ranks start at 0. A unit starts at max(its rank's previous end, the ready time
  of each dependency) and ends ``duration`` later.
- **Figures.** makespan = latest end; span = max over ranks of (last end - first start);
  busy(rank) = sum of its durations; idle = makespan - busy; ideal = M(F + I + W) (unscaled,
  whatever B and FB are); bubble_rate = 1 - ideal/makespan; span_bubble_rate = 1 - ideal/span.
- **Activations.** peak_activations(rank) = max over time of the (stage, micro-batch) pairs of
  the rank whose F has started and whose backward (B or I) has not ended. An FB allocates its
  forward at its start and frees its backward at its end; at equal times frees come first.
- **Deadlock.** When no rank can start its next unit and some have not finished, the schedule
  would hang: ValidationError names each stuck rank, its next action and what it waits for.

Exactness: with int or Fraction costs (and comm) every time is computed on integers scaled by
a common denominator and returned as an int (when that denominator is 1 and no input is a
Fraction) or a Fraction; with any float input times are floats. Timeline columns are float.
The engine is an O(actions + dependencies) worklist: a rank advances while its next unit's
producers have ended; a blocked rank waits on the one producer it lacks and is woken when it ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from dualsim.errors import ValidationError
from dualsim.ir import Action, Op, Schedule
from dualsim.sim.costs_abstract import Costs, check_number, parse_costs
from dualsim.sim.result import RankStats, SimResult
from dualsim.timeline import COLUMNS

__all__ = ["simulate", "Costs", "parse_costs"]


@dataclass
class _Run:
    """What the engine computes, per rank, over the rank's compute actions in list order."""

    rows: list[Sequence[Action]]  # compute actions (SEND/RECV dropped)
    starts: list[list[Any]]
    ends: list[list[Any]]
    busy: list[Any]
    allocs: list[list[Any]] = field(default_factory=list)  # forward starts (F, FB)
    frees: list[list[Any]] = field(default_factory=list)  # backward ends (B, I, FB)


def simulate(schedule: Schedule, costs: Costs | Mapping[str, Any] | None = None,
             comm: Any = 0) -> SimResult:
    """Simulate ``schedule`` with abstract ``costs`` and cross-rank latency ``comm``.

    ``costs``: a Costs or a mapping with F, I, W (and optionally B, FB); None means all 1.
    A lowered plan is accepted (its SEND/RECV actions are ignored). Raises CostError for bad
    costs and ValidationError for a schedule that cannot run (bad or repeated action, an action
    whose input no rank produces, deadlock).
    """
    c = Costs.of(costs)
    comm = check_number("comm (the cross-rank latency)", comm, allow_zero=True,
                        hint="e.g. --comm 0.5")
    if comm == 0:
        comm = 0
    size = Fraction(schedule.ranks, schedule.chain_length)
    op_cost = {Op.F: c.F, Op.I: c.I, Op.W: c.W, Op.B: c.B, Op.FB: c.FB}
    if c.exact and not isinstance(comm, float):
        # integers scaled by the common denominator of every duration and the latency
        scale = math.lcm(*(Fraction(x * size).denominator for x in op_cost.values()),
                         Fraction(comm).denominator)
        op_time: dict[Op, Any] = {op: int(x * size * scale) for op, x in op_cost.items()}
        latency: Any = int(comm * scale)
        fraction_out = scale != 1 or isinstance(comm, Fraction) or any(
            isinstance(x, Fraction) for x in op_cost.values())

        def out(t: Any) -> Any:
            return Fraction(t, scale) if fraction_out else t
    else:
        scale = 1
        op_time = {op: float(x) * float(size) for op, x in op_cost.items()}
        latency = float(comm)

        def out(t: Any) -> Any:
            return float(t)

    run = _run(schedule, op_time, latency)
    return _result(schedule, c, run, scale, out)


def _run(schedule: Schedule, op_time: dict[Op, Any], latency: Any) -> _Run:
    """The worklist engine: start and end of every compute action; ValidationError on a bad
    action or a deadlock.

    Products (what an action makes available) live in one flat list ``ready`` of end times,
    indexed by kind offset + stage * M + micro-batch: the forward output of (s, m), its input
    gradient (made by B or I) and its I-only mark (what W needs). A rank runs actions while
    their inputs are ready; a blocked rank parks on the missing product and is woken when the
    product's action ends.
    """
    ranks, mbs = schedule.ranks, schedule.microbatches
    num = max((st.stage for st in schedule.stages), default=-1) + 1
    rank_of = {st.stage: st.rank for st in schedule.stages}
    prev = [-1] * num
    nxt = [-1] * num
    fwd_lat = [0] * num  # latency on F(prev, m) -> F(s, m)
    bwd_lat = [0] * num  # latency on backward(next, m) -> backward(s, m)
    for st in schedule.stages:
        p_, n_ = schedule.prev_stage(st.stage), schedule.next_stage(st.stage)
        if p_ is not None:
            prev[st.stage] = p_
            fwd_lat[st.stage] = latency if rank_of[p_] != st.rank else 0
        if n_ is not None:
            nxt[st.stage] = n_
            bwd_lat[st.stage] = latency if rank_of[n_] != st.rank else 0
    # kind offsets in ``ready``: forward output, input gradient, I done (for W), W done
    grad_at, wgrad_at, done_at = num * mbs, 2 * num * mbs, 3 * num * mbs
    ready: list[Any] = [None] * (4 * num * mbs)
    waiting: dict[int, list[int]] = {}
    blocked_on: dict[int, int] = {}

    actions = schedule.actions
    if len(actions) != ranks:
        raise ValidationError(f"schedule {schedule.name!r} has {len(actions)} action lists for "
                              f"{ranks} ranks: give one list per rank")
    own_stages = [frozenset(st.stage for st in schedule.stages if st.rank == r)
                  for r in range(ranks)]
    starts: list[list[Any]] = [[] for _ in range(ranks)]
    ends: list[list[Any]] = [[] for _ in range(ranks)]
    allocs: list[list[Any]] = [[] for _ in range(ranks)]
    frees: list[list[Any]] = [[] for _ in range(ranks)]
    busy: list[Any] = [0] * ranks
    pointer = [0] * ranks
    free: list[Any] = [0] * ranks
    dF, dI, dW, dB, dFB = (op_time[o] for o in (Op.F, Op.I, Op.W, Op.B, Op.FB))
    F_, I_, W_, B_, FB_ = Op.F, Op.I, Op.W, Op.B, Op.FB
    work = list(range(ranks - 1, -1, -1))

    def bad(r: int, p: int, why: str) -> ValidationError:
        return ValidationError(f"rank {r} position {p}: action {actions[r][p]} {why}",
                               schedule.grid(mark=(r, p), window=4))

    def misplaced(r: int, s: int, m: int) -> str:
        if s not in rank_of:
            return f"names unknown stage {s}"
        if rank_of[s] != r:
            return f"runs stage {s}, which is placed on rank {rank_of[s]}"
        return f"names unknown micro-batch {m} (there are {mbs})"

    def repeated(r: int, p: int) -> ValidationError:
        return bad(r, p, "repeats a forward or backward that another position already ran")

    while work:
        r = work.pop()
        row = actions[r]
        p, n, t_free, t_busy = pointer[r], len(row), free[r], busy[r]
        mine, out_start, out_end = own_stages[r], starts[r], ends[r]
        out_alloc, out_free = allocs[r], frees[r]
        while p < n:
            a = row[p]
            op = a.op
            if op is F_:
                s, m = a.stage, a.microbatch
                if s not in mine or not 0 <= m < mbs:
                    raise bad(r, p, misplaced(r, s, m))
                t = t_free
                ps = prev[s]
                if ps >= 0:
                    e = ready[ps * mbs + m]
                    if e is None:
                        blocked_on[r] = ps * mbs + m
                        break
                    e += fwd_lat[s]
                    if e > t:
                        t = e
                t_free = t + dF
                made = s * mbs + m
                if ready[made] is not None:
                    raise repeated(r, p)
                ready[made] = t_free
                if made in waiting:
                    work.extend(waiting.pop(made))
                out_alloc.append(t)
                t_busy += dF
            elif op is I_ or op is B_:
                s, m = a.stage, a.microbatch
                if s not in mine or not 0 <= m < mbs:
                    raise bad(r, p, misplaced(r, s, m))
                own = s * mbs + m
                t = ready[own]
                if t is None:
                    blocked_on[r] = own
                    break
                if t_free > t:
                    t = t_free
                ns = nxt[s]
                if ns >= 0:
                    e = ready[grad_at + ns * mbs + m]
                    if e is None:
                        blocked_on[r] = grad_at + ns * mbs + m
                        break
                    e += bwd_lat[s]
                    if e > t:
                        t = e
                d = dI if op is I_ else dB
                t_free = t + d
                made = grad_at + own
                if ready[made] is not None:
                    raise repeated(r, p)
                ready[made] = t_free
                if made in waiting:
                    work.extend(waiting.pop(made))
                if op is I_:
                    ready[wgrad_at + own] = t_free
                    if wgrad_at + own in waiting:
                        work.extend(waiting.pop(wgrad_at + own))
                out_free.append(t_free)
                t_busy += d
            elif op is W_:
                s, m = a.stage, a.microbatch
                if s not in mine or not 0 <= m < mbs:
                    raise bad(r, p, misplaced(r, s, m))
                t = ready[wgrad_at + s * mbs + m]
                if t is None:
                    blocked_on[r] = wgrad_at + s * mbs + m
                    break
                if t_free > t:
                    t = t_free
                t_free = t + dW
                made = done_at + s * mbs + m
                if ready[made] is not None:
                    raise repeated(r, p)
                ready[made] = t_free
                t_busy += dW
            elif op is FB_:
                f, b = a.pair  # type: ignore[misc]
                s, m, bs, bm = f.stage, f.microbatch, b.stage, b.microbatch
                if s not in mine or not 0 <= m < mbs:
                    raise bad(r, p, misplaced(r, s, m))
                if bs not in mine or not 0 <= bm < mbs:
                    raise bad(r, p, misplaced(r, bs, bm))
                t = t_free
                ps = prev[s]
                if ps >= 0:
                    e = ready[ps * mbs + m]
                    if e is None:
                        blocked_on[r] = ps * mbs + m
                        break
                    e += fwd_lat[s]
                    if e > t:
                        t = e
                own = bs * mbs + bm
                e = ready[own]
                if e is None:
                    blocked_on[r] = own
                    break
                if e > t:
                    t = e
                ns = nxt[bs]
                if ns >= 0:
                    e = ready[grad_at + ns * mbs + bm]
                    if e is None:
                        blocked_on[r] = grad_at + ns * mbs + bm
                        break
                    e += bwd_lat[bs]
                    if e > t:
                        t = e
                t_free = t + dFB
                for made in (s * mbs + m, grad_at + own):
                    if ready[made] is not None:
                        raise repeated(r, p)
                    ready[made] = t_free
                    if made in waiting:
                        work.extend(waiting.pop(made))
                out_alloc.append(t)
                out_free.append(t_free)
                t_busy += dFB
            else:  # SEND/RECV of a lowered plan: the compute dependencies stand for them
                p += 1
                continue
            out_start.append(t)
            out_end.append(t_free)
            p += 1
        else:
            pointer[r], free[r], busy[r] = p, t_free, t_busy
            continue
        waiting.setdefault(blocked_on[r], []).append(r)
        pointer[r], free[r], busy[r] = p, t_free, t_busy
    stuck = [r for r in range(ranks) if pointer[r] < len(actions[r])]
    if stuck:
        raise _deadlock(schedule, stuck, pointer, blocked_on, num, mbs)
    rows = [row if len(row) == len(done) else [a for a in row if a.op.is_compute]
            for row, done in zip(actions, starts)]  # drop a lowered plan's transfers
    return _Run(rows, starts, ends, busy, allocs, frees)


_KIND = ("the forward", "the input gradient (B or I)", "the I")


def _deadlock(schedule: Schedule, stuck: list[int], pointer: list[int],
              blocked_on: dict[int, int], num: int, mbs: int) -> ValidationError:
    """The error for ranks that can never start their next action."""
    producers: dict[int, str] = {}
    for r, p, a in schedule.iter_actions():
        for part in a.parts:
            k = part.stage * mbs + part.microbatch
            if part.op is Op.F:
                producers[k] = f"{a} on rank {r}"
            elif part.op.is_backward:
                producers[num * mbs + k] = f"{a} on rank {r}"
                if part.op is Op.I:
                    producers[2 * num * mbs + k] = f"{a} on rank {r}"
    lines = []
    for r in stuck:
        key = blocked_on[r]
        kind, rest = divmod(key, num * mbs)
        stage, mb = divmod(rest, mbs)
        who = producers.get(key, "which no rank runs")
        lines.append(f"rank {r} at position {pointer[r]} ({schedule.actions[r][pointer[r]]}) "
                     f"waits for {_KIND[kind]} of stage {stage} micro-batch {mb}: {who}")
    r0 = stuck[0]
    return ValidationError("schedule deadlocks: " + "; ".join(lines),
                           schedule.grid(mark=(r0, pointer[r0]), window=4))


def _peak_activations(allocs: list[Any], frees: list[Any]) -> int:
    """Max live (stage, mb) pairs given sorted alloc and free times (frees first at ties)."""
    if not allocs:
        return 0
    freed_before = np.searchsorted(np.asarray(frees), np.asarray(allocs), side="right")
    return int((np.arange(1, len(allocs) + 1) - freed_before).max())


def _result(schedule: Schedule, c: Costs, run: _Run, scale: int, out: Any) -> SimResult:
    last_ends = [e[-1] for e in run.ends if e]
    makespan = max(last_ends, default=0)
    span = max((e[-1] - s[0] for s, e in zip(run.starts, run.ends) if e), default=0)
    per_rank = [
        RankStats(r, out(run.busy[r]), out(makespan - run.busy[r]),
                  out(run.starts[r][0] if run.starts[r] else 0),
                  out(run.ends[r][-1] if run.ends[r] else 0),
                  _peak_activations(run.allocs[r], run.frees[r]))
        for r in range(schedule.ranks)
    ]
    ideal = schedule.microbatches * (c.F + c.I + c.W)
    result = AbstractResult(schedule.name, schedule.ranks, schedule.num_stages,
                            schedule.microbatches, out(makespan), out(span), ideal, per_rank,
                            None)
    result._build = lambda: _timeline(schedule, run, scale)
    return result


class AbstractResult(SimResult):
    """A SimResult whose Timeline is built on first access of ``.timeline``.

    Sweeps and figure reports read only the scalars; building the DataFrame costs about as
    much as the simulation itself, so it is deferred. Pickling builds it first.
    """

    _build: Callable[[], pd.DataFrame] | None = None
    _frame: pd.DataFrame | None = None

    @property  # type: ignore[override]
    def timeline(self) -> pd.DataFrame:
        if self._frame is None and self._build is not None:
            self._frame, self._build = self._build(), None
        return self._frame  # type: ignore[return-value]

    @timeline.setter
    def timeline(self, frame: pd.DataFrame | None) -> None:
        self._frame, self._build = frame, None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__, _frame=self.timeline)
        state.pop("_build", None)
        return state


def _timeline(schedule: Schedule, run: _Run, scale: int) -> pd.DataFrame:
    """One row per compute action, already in (rank, start) order, built column-wise."""
    acts = [a for row in run.rows for a in row]
    n = len(acts)
    num = max((st.stage for st in schedule.stages), default=-1) + 1
    chain_of = np.full(num + 1, -1, dtype=np.int64)  # index -1 (no stage) -> -1
    for st in schedule.stages:
        chain_of[st.stage] = st.chain
    ops = np.array([a.op._value_ for a in acts], dtype=object)  # _value_: skip enum property
    stage = np.array([a.stage for a in acts], dtype=np.int64)
    microbatch = np.array([a.microbatch for a in acts], dtype=np.int64)
    stage2 = np.full(n, -1, dtype=np.int64)
    microbatch2 = np.full(n, -1, dtype=np.int64)
    fb = np.flatnonzero(ops == "FB")
    for i in fb.tolist():
        backward = acts[i].pair[1]  # type: ignore[index]
        stage2[i], microbatch2[i] = backward.stage, backward.microbatch
    start = np.concatenate([np.array(x, dtype=np.float64) for x in run.starts] or [[]])
    end = np.concatenate([np.array(x, dtype=np.float64) for x in run.ends] or [[]])
    if scale != 1:
        start /= scale
        end /= scale
    stage_text = np.array([str(i) for i in range(num)], dtype=object)
    mb_text = np.array([str(i) for i in range(schedule.microbatches)], dtype=object)
    labels = stage_text[stage] + ops + mb_text[microbatch]
    if len(fb):
        labels[fb] = ("(" + stage_text[stage[fb]] + "F" + mb_text[microbatch[fb]] + ";"
                      + stage_text[stage2[fb]] + "B" + mb_text[microbatch2[fb]] + ")")
    data = {
        "rank": np.repeat(np.arange(len(run.rows), dtype=np.int64), [len(x) for x in run.rows]),
        "stream": np.repeat(np.array(["compute"], dtype=object), n),
        "op": ops,
        "stage": stage,
        "microbatch": microbatch,
        "chain": chain_of[stage],
        "stage2": stage2,
        "microbatch2": microbatch2,
        "chain2": chain_of[stage2],
        "piece": np.repeat(np.array([""], dtype=object), n),
        "start": start,
        "end": end,
        "action": labels,
    }
    return pd.DataFrame(data, columns=list(COLUMNS))
