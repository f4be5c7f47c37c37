"""Measured time: the run's Timeline, step times, and the sim-vs-measured comparison.

Every rank records each action's start and end in seconds from its step's start, which is the
exit of a barrier every rank passes (the clock is aligned at the start of each step). The rows
form the same Timeline the simulator produces: compute actions on stream ``compute``, SEND/RECV
on stream ``comm`` (op ``pp_send`` / ``pp_recv``).

``--compare-sim`` calibrates abstract costs from the measurement and simulates the same plan.
An action's *effective* duration runs from its start to the next compute action's start, less
the receive waits in between: posting sends and the interpreter's own overhead delay the rank,
so they count; waiting does not (the simulator produces the waits). For each (op, stage) the
cost is the median over steps of that step's mean effective duration (the median drops steps
disturbed by other load; the mean inside a step keeps the tail that a sum of durations pays).
The simulator takes one cost per op, while the first and last layer slices (embedding, head
and loss) are heavier than the others; the slowest rank paces a pipeline, so F, I, W, B, FB =
the maximum over ranks of the rank's mean over its stages, divided by the stage's size
(abstract costs are per rank-worth of layers); an op the plan lacks gets B = I + W, I = W = B / 2, FB = F + B. The
transfer latency is the median, over cross-rank messages whose receiver was already waiting,
of (receive done − send posted), at least 0. The first step is a warm-up and is left out when
there are several. A rank's measured idle time is the step's makespan less the sum of its
effective durations, the same definition the simulator uses.
"""

from __future__ import annotations

import statistics
from typing import Any

import pandas as pd

from dualsim.ir import Schedule
from dualsim.runtime.launcher import RankReport
from dualsim.timeline import from_rows

COMPUTE_OPS = ("F", "I", "W", "B", "FB")


def measured_steps(reports: list[RankReport]) -> list[int]:
    """The steps measurements use: all but the warm-up step when there are several."""
    n = len(reports[0].steps)
    return list(range(1, n)) if n > 1 else [0]


def step_timeline(reports: list[RankReport], step: int) -> pd.DataFrame:
    return from_rows(row for rep in reports for row in rep.steps[step].rows)


def step_time_s(reports: list[RankReport]) -> float:
    """Median over steps of the slowest rank's step (actions, gradient sum, optimizer)."""
    return statistics.median(max(rep.steps[k].step_end for rep in reports)
                             for k in range(len(reports[0].steps)))


def actions_time_s(reports: list[RankReport], step: int) -> float:
    """The step's makespan as the simulator defines it: the latest action end."""
    return max(rep.steps[step].actions_end for rep in reports)


def busy_s(timeline: pd.DataFrame, rank: int, column: str | None = None) -> float:
    """A rank's compute time: end - start, or ``column`` (effective durations) when given."""
    c = timeline[(timeline["rank"] == rank) & (timeline["stream"] == "compute")]
    return float(c[column].sum() if column else (c["end"] - c["start"]).sum())


def effective_durations(timeline: pd.DataFrame) -> pd.DataFrame:
    """Compute rows with ``dur``: from the action's start to the next compute action's start,
    less the receive waits in between (so the posting of sends and the interpreter's own
    overhead count as the action's cost, as they delay the rank; waiting does not)."""
    out = []
    for _, tl in timeline.groupby("rank"):
        tl = tl.sort_values("start")
        compute = tl[tl["stream"] == "compute"]
        waits = tl[(tl["stream"] == "comm") & (tl["op"] == "pp_recv")]
        starts = compute["start"].tolist()
        nexts = starts[1:] + [compute["end"].iloc[-1]]
        durs = []
        for (start, end, nxt) in zip(starts, compute["end"], nexts):
            between = waits[(waits["start"] >= end) & (waits["end"] <= nxt)]
            durs.append(max(end - start, nxt - start - float((between["end"] - between["start"]).sum())))
        out.append(compute.assign(dur=durs))
    return pd.concat(out, ignore_index=True)


def calibrate(plan: Schedule, timelines: list[pd.DataFrame]) -> tuple[dict[str, float], float]:
    """Abstract costs (seconds per rank-worth of layers) and transfer latency from a run."""
    return _costs(plan, [effective_durations(tl) for tl in timelines]), _latency(plan, timelines)


def _costs(plan: Schedule, effective: list[pd.DataFrame]) -> dict[str, float]:
    """Abstract costs from each measured step's effective durations."""
    per_step = [eff.groupby(["op", "stage"])["dur"].mean().rename(k)
                for k, eff in enumerate(effective)]
    # per (op, stage): the median over steps of the step's mean duration
    table = pd.concat(per_step, axis=1).median(axis=1)
    size = plan.stage_size
    costs: dict[str, float] = {}
    for op in COMPUTE_OPS:
        if op in table.index.get_level_values("op"):
            by_stage = table.loc[op]
            per_rank = by_stage.groupby([plan.rank_of(int(s)) for s in by_stage.index]).mean()
            costs[op] = float(per_rank.max()) / size  # the slowest rank paces the pipeline
    if "B" not in costs:
        costs["B"] = costs["I"] + costs["W"]
    if "I" not in costs:
        costs["I"] = costs["W"] = costs["B"] / 2
    costs.setdefault("FB", costs["F"] + costs["B"])
    return costs


def _latency(plan: Schedule, timelines: list[pd.DataFrame]) -> float:
    samples: list[float] = []
    for tl in timelines:
        comm = tl[tl["stream"] == "comm"]
        sent = {(r.action[len(str(r.stage)):].rstrip("0123456789"), r.stage, r.microbatch): r.start
                for r in comm[comm["op"] == "pp_send"].itertuples()}
        for r in comm[comm["op"] == "pp_recv"].itertuples():
            forward = "RECV_F" in r.action
            src = plan.prev_stage(r.stage) if forward else plan.next_stage(r.stage)
            posted = sent.get(("SEND_F" if forward else "SEND_B", src, r.microbatch))
            if posted is not None and posted >= r.start:  # the receiver was already waiting
                samples.append(r.end - posted)
    return max(0.0, statistics.median(samples)) if samples else 0.0


def compare_sim(plan: Schedule, reports: list[RankReport]) -> dict[str, Any]:
    """Predicted (abstract sim on calibrated costs) against measured step time and idle."""
    from dualsim.sim.abstract import simulate

    steps = measured_steps(reports)
    timelines = [step_timeline(reports, k) for k in steps]
    effective = [effective_durations(tl) for tl in timelines]
    costs, latency = _costs(plan, effective), _latency(plan, timelines)
    sim = simulate(plan, costs, comm=latency)
    measured = statistics.median(actions_time_s(reports, k) for k in steps)
    predicted = float(sim.makespan)
    per_rank = []
    for rank in range(plan.ranks):
        m_idle = statistics.median(actions_time_s(reports, k) - busy_s(eff, rank, "dur")
                                   for k, eff in zip(steps, effective))
        per_rank.append({"rank": rank, "measured_idle_s": m_idle,
                         "predicted_idle_s": float(sim.per_rank[rank].idle)})
    return {
        "predicted_step_time_s": predicted,
        "measured_step_time_s": measured,
        "prediction_error": (predicted - measured) / measured,
        "calibrated_costs_s": costs,
        "calibrated_latency_s": latency,
        "per_rank_idle": per_rank,
    }
