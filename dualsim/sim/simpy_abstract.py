"""The SimPy engine driven by abstract costs: must equal dualsim.sim.abstract exactly.

Each unit is one timeout of its cost x stage size (B = I + W and FB = F + B by default), and
every cross-rank dependency is a fixed latency ``comm``. Times run on integers scaled by the
common denominator of all durations, so int and Fraction costs give exact results; float costs
give floats. This is the check that the hardware engine's scheduling core keeps the abstract
semantics (docs/schedules.md).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Generator, Mapping

import simpy

from dualsim.ir import Action, Op, Schedule
from dualsim.sim.abstract import exact_mean
from dualsim.sim.abstract_costs import COMM_EXAMPLE, Costs, TimeBase, check_number
from dualsim.sim.simpy_engine import Engine, peak_live
from dualsim.sim.result import RankStats, SimResult
from dualsim.timeline import action_fields, from_rows
from dualsim.validate import validate


class AbstractExecutor:
    """Units are single timeouts; transfers are a fixed latency."""

    def __init__(self, durations: dict[Op, Any], latency: Any) -> None:
        self.durations = durations
        self.latency = latency

    def run(self, eng: Engine, rank: int, action: Action) -> Generator[Any, Any, None]:
        yield eng.env.timeout(self.durations[action.op])

    def send(self, eng: Engine, src: int, dst: int, piece: str, action: Action,
             arrival: simpy.Event) -> None:
        if not self.latency:
            arrival.succeed()
            return
        eng.env.timeout(self.latency).callbacks.append(lambda _e: arrival.succeed())

    def idle(self, rank: int) -> None:
        pass

    def unit_done(self, eng: Engine, rank: int, action: Action) -> None:
        pass


def simulate_simpy(schedule: Schedule, costs: Costs | Mapping[str, Any] | None = None,
                   comm: Any = 0) -> SimResult:
    """Abstract-mode simulation on the SimPy engine (same figures as the abstract engine).
    A schedule that is not a ValidSchedule is validated first."""
    c = Costs.of(costs)
    comm = check_number("comm (the cross-rank latency)", comm, allow_zero=True,
                        hint=COMM_EXAMPLE)
    schedule = validate(schedule)
    size = Fraction(schedule.ranks, schedule.chain_length)
    base = TimeBase.of(c, size, comm)
    durations, out = base.durations, base.out
    eng = Engine(schedule, AbstractExecutor(durations, base.latency))
    eng.run()
    R = schedule.ranks
    busy = [sum(durations[a.op] for a in eng.rows[r]) for r in range(R)]
    makespan = max((e[-1] for e in eng.ends if e), default=0)
    span = max((e[-1] - s[0] for s, e in zip(eng.starts, eng.ends) if e), default=0)
    per_rank = [RankStats(r, out(busy[r]), out(makespan - busy[r]),
                          out(eng.starts[r][0] if eng.starts[r] else 0),
                          out(eng.ends[r][-1] if eng.ends[r] else 0),
                          peak_live(eng.allocs[r], eng.frees[r])) for r in range(R)]
    rows = []
    for r in range(R):
        for a, s, e in zip(eng.rows[r], eng.starts[r], eng.ends[r]):
            f = action_fields(schedule, a)
            rows.append((r, "compute", *f[:7], "", float(out(s)), float(out(e)), f[7]))
    ideal = out(exact_mean(busy))
    return SimResult(schedule.name, R, schedule.num_stages, schedule.microbatches,
                     out(makespan), out(span), ideal, per_rank, from_rows(rows))
