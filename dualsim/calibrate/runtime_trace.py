"""Per-stage abstract costs from a trace written by ``dualsim run PLAN --profile-trace t.json``.

The runtime writes one Chrome trace for all its processes (docs/runtime.md): the plan under the
top-level key ``dualsimPlan``, ``dualsimEp`` = N processes per pipeline rank (expert parallelism),
``pid`` = the process's global rank g (pipeline rank g // N), one ``record_function`` range per
executed action named in the IR's string form (``0F3``, ``(0F7;7B3)``, ``0SEND_F3``,
``1RECV_B3``; the posting of a batch of transfers is one range named by its actions joined by
spaces, ``0SEND_F3 1RECV_B2``, and each receive's wait a range of its own), piece ranges nested
inside, and a range ``step k`` per recorded step (or torch.profiler's ``ProfilerStep#k``).

Each process's action ranges become a Timeline (compute actions on stream ``compute``, SEND/RECV
on ``comm`` as ``pp_send``/``pp_recv``), one per step, on the trace's common clock with the step's
first range at 0. The costs are then computed exactly as ``dualsim run --compare-sim`` computes
them from the runtime's own records (dualsim/runtime/measure.py: effective durations, per stage,
the slowest rank, per rank-worth of layers; the latency from receives that were already
waiting), so a trace and a live run calibrate the same way. With several EP processes per
pipeline rank each EP index is calibrated on its own and the slowest wins, cost by cost. With
several steps the first (warm-up) is dropped.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dualsim.calibrate.trace import Range, Trace
from dualsim.errors import PlanError, TraceError
from dualsim.ir import Action, Op, Schedule
from dualsim.timeline import action_fields, from_rows

STEP_RE = re.compile(r"^(ProfilerStep#|step )\d+$")


def is_runtime_trace(trace: Trace) -> bool:
    return "dualsimPlan" in trace.meta


@dataclass(frozen=True)
class StageCosts:
    """Abstract costs (seconds per rank-worth of layers), latency and the per-stage table."""

    plan: Schedule
    ep: int
    steps: int  # steps used (after dropping the warm-up)
    costs: dict[str, float]
    latency: float
    per_stage: tuple[dict[str, Any], ...]  # {stage, rank, op: seconds (mean per action)}

    def simulate_args(self, scale: float = 1e3) -> str:
        """The costs in ``dualsim simulate --costs ... --comm ...`` form (milliseconds)."""
        costs = ",".join(f"{k}={self.costs[k] * scale:.6g}" for k in ("F", "I", "W", "B", "FB")
                         if k in self.costs)
        return f"--costs {costs} --comm {self.latency * scale:.6g}"

    def as_json(self) -> dict[str, Any]:
        return {"mode": "runtime", "schedule": self.plan.name, "ranks": self.plan.ranks,
                "microbatches": self.plan.microbatches, "ep": self.ep, "steps": self.steps,
                "unit": "ms",
                "costs": {k: round(v * 1e3, 6) for k, v in self.costs.items()},
                "latency": round(self.latency * 1e3, 6),
                "per_stage": [{k: (round(v * 1e3, 6) if isinstance(v, float) else v)
                               for k, v in row.items()} for row in self.per_stage],
                "simulate_args": self.simulate_args()}


def _plan(trace: Trace) -> tuple[Schedule, int]:
    try:
        plan = Schedule.from_dict(trace.meta["dualsimPlan"])
    except (PlanError, TypeError, KeyError, ValueError) as e:
        raise TraceError(f"{trace.path}: its dualsimPlan is not a valid plan ({e}); record the "
                         "trace again with `dualsim run PLAN --profile-trace`") from None
    ep = trace.meta.get("dualsimEp", 1)
    if isinstance(ep, bool) or not isinstance(ep, int) or ep < 1:
        raise TraceError(f"{trace.path}: dualsimEp must be a positive integer, got {ep!r}")
    return plan, ep


def _actions(rng: Range) -> list[Action]:
    """The actions a range stands for: one, or the transfers of a batch posting."""
    if not rng.name[:1].isdigit() and not rng.name.startswith("("):
        return []
    try:
        acts = [Action.parse(part) for part in rng.name.split()]
    except PlanError:
        return []
    if len(acts) > 1:  # a batch posting: its sends (each receive has its own wait range)
        return [a for a in acts if a.op in (Op.SEND_F, Op.SEND_B)]
    return acts


def _steps(ranges: list[Range]) -> list[tuple[float, float]]:
    """(start, end) of each profiler step of one process; the whole trace if it has none."""
    steps = sorted((r.start, r.end) for r in ranges if STEP_RE.match(r.name))
    if steps:
        return steps
    return [(min(r.start for r in ranges), max(r.end for r in ranges))]


def timelines(trace: Trace, plan: Schedule, ep: int, ep_index: int) -> list[pd.DataFrame]:
    """One Timeline per recorded step, for the processes with this EP index (seconds)."""
    by_pid: dict[int, list[Range]] = {}
    for r in trace.ranges:
        by_pid.setdefault(r.rank, []).append(r)
    pids = [p * ep + ep_index for p in range(plan.ranks)]
    missing = [g for g in pids if g not in by_pid]
    if missing:
        raise TraceError(f"{trace.path}: no ranges of process {missing[0]} (pipeline rank "
                         f"{missing[0] // ep}); the plan has {plan.ranks} ranks x {ep} EP "
                         "processes: was the trace cut short?")
    steps = {g: _steps(by_pid[g]) for g in pids}
    count = min(len(s) for s in steps.values())
    out = []
    for k in range(count):
        origin = min(steps[g][k][0] for g in pids)
        rows = []
        for g in pids:
            lo, hi = steps[g][k]
            for r in by_pid[g]:
                if not lo <= r.start < hi:
                    continue
                for a in _actions(r):
                    op, stage, mb, chain, s2, m2, c2, text = action_fields(plan, a)
                    stream = "compute"
                    if a.op.is_transfer:
                        stream = "comm"
                        op = "pp_send" if a.op in (Op.SEND_F, Op.SEND_B) else "pp_recv"
                    rows.append((g // ep, stream, op, stage, mb, chain, s2, m2, c2, "",
                                 (r.start - origin) * 1e-6, (r.end - origin) * 1e-6, text))
        if not any(row[1] == "compute" for row in rows):
            raise TraceError(f"{trace.path}: step {k} has no action ranges named like 0F3 or "
                             "(0F7;7B3); record with `dualsim run PLAN --profile-trace`")
        out.append(from_rows(rows))
    return out


def calibrate_costs(trace: Trace) -> StageCosts:
    """Abstract costs and transfer latency of the run a runtime trace recorded."""
    from dualsim.runtime.measure import calibrate, effective_durations

    plan, ep = _plan(trace)
    best: dict[str, float] = {}
    latency = 0.0
    table: dict[tuple[int, str], list[float]] = {}
    used = 0
    for e in range(ep):
        tls = timelines(trace, plan, ep, e)
        if len(tls) > 1:
            tls = tls[1:]  # the first step is a warm-up
        used = len(tls)
        effective = [effective_durations(tl) for tl in tls]
        costs, lat = calibrate(plan, tls, effective)
        for k, v in costs.items():
            best[k] = max(best.get(k, 0.0), float(v))
        latency = max(latency, float(lat))
        for eff in effective:
            for (op, stage), d in eff.groupby(["op", "stage"])["dur"].mean().items():
                table.setdefault((int(stage), str(op)), []).append(float(d))
    per_stage = []
    for stage in sorted({s for s, _ in table}):
        row: dict[str, Any] = {"stage": stage, "rank": plan.rank_of(stage)}
        for op in ("F", "I", "W", "B", "FB"):
            if (stage, op) in table:
                row[op] = statistics.median(table[(stage, op)])
        per_stage.append(row)
    return StageCosts(plan, ep, used, best, latency, tuple(per_stage))
