"""The abstract (cost-based) simulator: exact start/end times of every action from unit costs.

Semantics (docs/schedules.md, abstract mode; the SimPy engine must agree with these exactly):

- **Durations.** An action on a stage costs its op's cost times ``schedule.stage_size``
  (ranks / chain length: 1 for the linear families and DualPipe, 1/2 for ZB-V and DualPipeV,
  1/v for interleaved). F, I, W, B cost ``costs[op]``; an FB unit costs ``costs["FB"]`` times the
  size of its forward half's stage. B is a full (unsplit) backward, run by the families that do
  not split it (GPipe, 1F1B, interleaved, DualPipe outside its FBs); it defaults to I + W.
  FB is one overlapped forward + full backward (DualPipe, DualPipeV); it defaults to F + B,
  and F + B - FB is the time the overlap saves. A given B or FB that the schedule never runs,
  and an FB above F + B, are reported in ``extra["warnings"]``.
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
  busy(rank) = sum of its durations; idle = makespan - busy; ideal = the mean of busy over ranks
  (the step with no waiting: M(F + I + W) with the default B and FB, M(F + B) for 1F1B with a
  given B; as in hardware mode); bubble_rate = 1 - ideal/makespan (the mean idle share, never
  negative); span_bubble_rate = 1 - ideal/span.
- **Activations.** peak_activations(rank) = max over time of the (stage, micro-batch) pairs of
  the rank whose F has started and whose backward (B or I) has not ended. An FB allocates its
  forward at its start and frees its backward at its end; at equal times frees come first.
- **Deadlock.** When no rank can start its next unit and some have not finished, the schedule
  would hang: ValidationError names each stuck rank, its next action and what it waits for.

Exactness: with int or Fraction costs (and comm) every time is computed on integers scaled by
a common denominator and returned as an int (when that denominator is 1 and no input is a
Fraction) or a Fraction; with any float input times are floats. Timeline columns are float.
The engine (:mod:`dualsim.sim.abstract_engine`) is an O(actions + dependencies) worklist: a rank
advances while its next unit's inputs are ready; a blocked rank waits on the one input it lacks
and is woken when that input's action ends. ``result.timeline`` is built on first access.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from dualsim.ir import Op, Schedule
from dualsim.sim import abstract_engine as engine
from dualsim.sim.abstract_engine import EngineRun
from dualsim.sim.abstract_costs import COMM_EXAMPLE, Costs, TimeBase, check_number, parse_costs
from dualsim.sim.result import RankStats, SimResult
from dualsim.timeline import COLUMNS

__all__ = ["simulate", "Costs", "parse_costs"]


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
                        hint=COMM_EXAMPLE)
    size = Fraction(schedule.ranks, schedule.chain_length)
    base = TimeBase.of(c, size, comm)
    schedule, run = engine.run(schedule, base.durations, base.latency)
    result = _result(schedule, c, run, base.scale, base.out)
    warnings = cost_warnings(schedule, c, costs)
    if warnings:
        result.extra["warnings"] = warnings
    return result


def cost_warnings(schedule: Schedule, c: Costs, given: Any) -> list[str]:
    """What the user should know about a B or FB they gave: unused, or an FB slower than F+B.

    ``given`` is what the caller passed (a mapping says which names were given; a Costs or
    None names none, so gives no warnings).
    """
    named = set(given) if isinstance(given, Mapping) else set()
    ops = {a.op for row in schedule.actions for a in row}
    out = []
    if "B" in named and Op.B not in ops and (Op.FB not in ops or "FB" in named):
        how = ("times its overlapped pairs by FB" if Op.FB in ops
               else "splits every backward into I and W")
        out.append(f"cost B={_show(c.B)} is not used: the schedule runs no full backward B "
                   f"on its own (it {how})")
    if "FB" in named and Op.FB not in ops:
        out.append(f"cost FB={_show(c.FB)} is not used: the schedule runs no overlapped "
                   "forward+backward pair (DualPipe, DualPipeV and the -overlap families do)")
    elif "FB" in named and c.FB > c.F + c.B:
        out.append(f"cost FB={_show(c.FB)} is more than F+B={_show(c.F + c.B)}: an overlapped "
                   "pair would be slower than its halves one after the other; FB is the time "
                   "of the pair with its overlap, normally at most F+B")
    return out


def _show(x: Any) -> str:
    return f"{float(x):g}"


def exact_mean(values: list[Any]) -> Any:
    """The mean of engine times: exact (an int when whole, else a Fraction) for ints."""
    total = sum(values)
    if isinstance(total, int):
        return total // len(values) if total % len(values) == 0 else Fraction(total, len(values))
    return total / len(values)


def _peak_activations(allocs: list[Any], frees: list[Any]) -> int:
    """Max live (stage, mb) pairs given sorted alloc and free times (frees first at ties)."""
    if not allocs:
        return 0
    freed_before = np.searchsorted(np.asarray(frees), np.asarray(allocs), side="right")
    return int((np.arange(1, len(allocs) + 1) - freed_before).max())


def _result(schedule: Schedule, c: Costs, run: EngineRun, scale: int, out: Any) -> SimResult:
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
    ideal = out(exact_mean(run.busy))
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


def _timeline(schedule: Schedule, run: EngineRun, scale: int) -> pd.DataFrame:
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
        "sms": np.zeros(n, dtype=np.int64),
    }
    return pd.DataFrame(data, columns=list(COLUMNS))
