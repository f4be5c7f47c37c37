"""Measured time: the run's Timeline, step times, all-to-all figures, and sim vs measured.

Every process records each action's start and end in seconds from its step's start, which is
the exit of a barrier every process passes (the clock is aligned at the start of each step).
The rows form the same Timeline the simulator produces: compute actions on stream
``compute`` (with expert parallelism one row per piece), SEND/RECV on ``comm`` (op ``pp_send``
/ ``pp_recv``), the expert-parallel all-to-alls on ``a2a`` (op ``dispatch``, ``combine``,
``combine_bwd``, ``dispatch_bwd``; from when its data was ready to when it completed). The
Timeline of a run (Gantt, trace, calibration) holds the processes of expert-parallel index 0,
one per pipeline rank; the all-to-all figures use every process.

**One step time.** ``step_time_s`` is the median, over the measured steps (all but the first,
a warm-up, when there are several), of the slowest process's step: from the aligned start to
the end of its optimizer step. ``--compare-sim`` predicts that same number.

**All-to-all.** Per process and step: the union of its all-to-all intervals (time with an
all-to-all in flight), and the part of it outside the union of its compute pieces (exposed).
``a2a_hidden_fraction`` = 1 - sum(exposed) / sum(in flight) over processes (the hardware
simulator's definition); ``a2a_exposed_s`` and ``a2a_time_s`` are per-process means, all
medians over the measured steps; ``a2a_bytes_per_step`` sums the bytes every process sent to
the other processes of its group.

``--compare-sim`` calibrates abstract costs from the measurement and simulates the same plan.
An action's *effective* duration runs from its start to the next compute action's start, less
the receive waits in between: posting sends and the interpreter's own overhead delay the rank,
so they count; waiting does not (the simulator produces the waits). For each (op, stage) the
cost is the median over steps of that step's mean effective duration. The simulator takes one
cost per op, while the first and last layer slices (embedding, head and loss) are heavier than
the others; the slowest rank paces a pipeline, so F, I, W, B, FB = the maximum over ranks of
the rank's mean over its stages, divided by the stage's size (abstract costs are per
rank-worth of layers); an op the plan lacks gets B = I + W, I = W = B / 2, FB = F + B. The
transfer latency is the median, over cross-rank messages whose receiver was already waiting,
of (receive done - send posted), at least 0. The simulated step = the simulated makespan plus
the measured end of step (gradient sums and optimizer: not simulated, taken from the run).
With a calibration from another run (its ``--profile-trace``, read as ``dualsim calibrate``
reads it) the costs and latency come from there, so one run predicts another (a different
schedule or seed) instead of fitting and predicting the same run.
A rank's measured idle time is the actions' makespan less the sum of its effective durations.

With expert parallelism the comparison also predicts the all-to-all: every compute piece and
all-to-all kind gets its median measured duration, and each unit of the plan is replayed on
two streams in the order of :mod:`dualsim.overlap_order` (each stream in order; a compute
piece waits for the all-to-all before it; an all-to-all for the piece producing its data), the
hardware simulator's rule; predicted hidden fraction and exposed time follow as measured.

No torch import here: ``dualsim calibrate`` builds Timelines from profiler traces and calls
:func:`calibrate`.
"""

from __future__ import annotations

import os
import statistics
from typing import TYPE_CHECKING, Any

import pandas as pd

from dualsim.ir import Op, Schedule
from dualsim.overlap_order import Node, Order, fb_order, only_w, plain_order, without_w
from dualsim.runtime.chains import slice_chains
from dualsim.timeline import exposed, from_rows, intervals_union

if TYPE_CHECKING:
    from dualsim.runtime.records import RankReport

COMPUTE_OPS = ("F", "I", "W", "B", "FB")


def measured_steps(reports: list[RankReport]) -> list[int]:
    """The steps measurements use: all but the warm-up step when there are several."""
    n = len(reports[0].steps)
    return list(range(1, n)) if n > 1 else [0]


def timeline_reports(reports: list[RankReport]) -> list[RankReport]:
    """One process per pipeline rank: expert-parallel index 0."""
    return [r for r in reports if r.ep_index == 0]


def step_timeline(reports: list[RankReport], step: int) -> pd.DataFrame:
    return from_rows(row for rep in timeline_reports(reports) for row in rep.steps[step].rows)


def step_time_s(reports: list[RankReport]) -> float:
    """Median over the measured steps of the slowest process's whole step."""
    return statistics.median(max(rep.steps[k].step_end for rep in reports)
                             for k in measured_steps(reports))


def actions_time_s(reports: list[RankReport], step: int) -> float:
    """The step's makespan as the simulator defines it: the latest action end."""
    return max(rep.steps[step].actions_end for rep in reports)


def busy_s(timeline: pd.DataFrame, rank: int, column: str | None = None) -> float:
    """A rank's compute time: end - start, or ``column`` (effective durations) when given."""
    c = timeline[(timeline["rank"] == rank) & (timeline["stream"] == "compute")]
    return float(c[column].sum() if column else (c["end"] - c["start"]).sum())


def action_rows(timeline: pd.DataFrame) -> pd.DataFrame:
    """Compute rows one per action: pieces of one action (expert parallelism) merged."""
    comp = timeline[timeline["stream"] == "compute"]
    if not (comp["piece"] != "").any():
        return comp
    first = comp.groupby(["rank", "action"], sort=False).agg(
        start=("start", "min"), end=("end", "max"))
    keep = comp.drop_duplicates(["rank", "action"]).drop(columns=["start", "end"])
    merged = keep.merge(first.reset_index(), on=["rank", "action"])
    return merged.assign(piece="")[list(timeline.columns)]


def effective_durations(timeline: pd.DataFrame) -> pd.DataFrame:
    """Compute rows (one per action) with ``dur``: from the action's start to the next
    compute action's start, less the receive waits in between (so the posting of sends and the
    interpreter's own overhead count as the action's cost, as they delay the rank; waiting
    does not)."""
    out = []
    for rank, tl in timeline.groupby("rank"):
        compute = action_rows(tl).sort_values("start")
        waits = tl[(tl["stream"] == "comm") & (tl["op"] == "pp_recv")]
        starts = compute["start"].tolist()
        nexts = starts[1:] + [compute["end"].iloc[-1]]
        durs = []
        for (start, end, nxt) in zip(starts, compute["end"], nexts):
            between = waits[(waits["start"] >= end) & (waits["end"] <= nxt)]
            durs.append(max(end - start,
                            nxt - start - float((between["end"] - between["start"]).sum())))
        out.append(compute.assign(dur=durs))
    return pd.concat(out, ignore_index=True)


def calibrate(plan: Schedule, timelines: list[pd.DataFrame],
              effective: list[pd.DataFrame] | None = None) -> tuple[dict[str, float], float]:
    """Abstract costs (seconds per rank-worth of layers) and transfer latency from a run
    (``effective``: the timelines' :func:`effective_durations`, when the caller has them)."""
    if effective is None:
        effective = [effective_durations(tl) for tl in timelines]
    return _costs(plan, effective), _latency(plan, timelines)


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


# ---- all-to-all ---------------------------------------------------------------------------
def a2a_exposure(rows: list[tuple[Any, ...]] | pd.DataFrame) -> tuple[float, float]:
    """(time with an all-to-all in flight, its part outside compute) of one process's step."""
    tl = rows if isinstance(rows, pd.DataFrame) else from_rows(rows)
    busy = intervals_union(zip(tl.loc[tl["stream"] == "compute", "start"],
                               tl.loc[tl["stream"] == "compute", "end"]))
    a2a = intervals_union(zip(tl.loc[tl["stream"] == "a2a", "start"],
                              tl.loc[tl["stream"] == "a2a", "end"]))
    return exposed(busy, a2a)


def a2a_figures(reports: list[RankReport]) -> dict[str, float]:
    """The all-to-all part of ``--json``: bytes, time, exposed time and hidden fraction."""
    steps = measured_steps(reports)
    hidden, time_s, exposed_s, nbytes = [], [], [], []
    for k in steps:
        per = [a2a_exposure(rep.steps[k].rows) for rep in reports]
        total, out = sum(p[0] for p in per), sum(p[1] for p in per)
        hidden.append(1 - out / total if total > 0 else 0.0)
        time_s.append(total / len(reports))
        exposed_s.append(out / len(reports))
        nbytes.append(sum(rep.steps[k].a2a_bytes for rep in reports))
    return {"a2a_bytes_per_step": int(statistics.median(nbytes)),
            "a2a_time_s": statistics.median(time_s),
            "a2a_exposed_s": statistics.median(exposed_s),
            "a2a_hidden_fraction": statistics.median(hidden)}


def replay(order: Order, halves: list[list[Node]], durations: dict[str, float]
           ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(compute, all-to-all) intervals of one unit run in ``order`` with ``durations`` per
    piece name: each stream in order, a compute piece after the all-to-all it waits for, an
    all-to-all after the compute piece producing its data."""
    comp_end: list[float] = []
    comm_end: list[float] = [0.0] * len(order.comm)
    comm_iv: list[tuple[float, float]] = [(0.0, 0.0)] * len(order.comm)
    comp_iv: list[tuple[float, float]] = []
    by_after: dict[int, list[int]] = {}
    for ci, c in enumerate(order.comm):
        by_after.setdefault(c.after, []).append(ci)
    free_comm = 0.0

    def run_comm(ci: int, ready: float) -> None:
        nonlocal free_comm
        c = order.comm[ci]
        start = max(free_comm, ready)
        end = start + durations.get(halves[c.half][c.node].name, 0.0)
        comm_iv[ci], comm_end[ci], free_comm = (start, end), end, end

    for ci in by_after.get(-1, []):
        run_comm(ci, 0.0)
    t = 0.0
    for gi, step in enumerate(order.compute):
        start = max(t, comm_end[step.waits] if step.waits >= 0 else 0.0)
        t = start + durations.get(halves[step.half][step.node].name, 0.0)
        comp_iv.append((start, t))
        comp_end.append(t)
        for ci in by_after.get(gi, []):
            run_comm(ci, t)
    return comp_iv, comm_iv


def _unit_halves(plan: Schedule, a: Any, layers: int) -> list[list[Node]] | None:
    def chains(stage: int) -> tuple[list[Node], list[Node]]:
        last = plan.placement(stage).position == plan.chain_length - 1
        return slice_chains(layers, last)

    if a.op is Op.F:
        return [chains(a.stage)[0]]
    if a.op is Op.B:
        return [chains(a.stage)[1]]
    if a.op is Op.I:
        return [without_w(chains(a.stage)[1])]
    if a.op is Op.W:
        return [only_w(chains(a.stage)[1])]
    if a.op is Op.FB:
        return [chains(a.forward.stage)[0], chains(a.backward.stage)[1]]
    return None


def predicted_a2a(plan: Schedule, layers: int, durations: dict[str, float]) -> tuple[float, float]:
    """(hidden fraction, exposed seconds per rank) of a step, replaying every unit."""
    total = out = 0.0
    for rank in range(plan.ranks):
        for a in plan.actions[rank]:
            halves = _unit_halves(plan, a, layers)
            if halves is None:
                continue
            order = plain_order(halves[0]) if len(halves) == 1 else fb_order(*halves)
            comp, comm = replay(order, halves, durations)
            t, e = exposed(intervals_union(comp), intervals_union(comm))
            total, out = total + t, out + e
    return (1 - out / total if total > 0 else 0.0), out / plan.ranks


def piece_durations(reports: list[RankReport]) -> dict[str, float]:
    """Median measured duration of every compute piece name and all-to-all kind."""
    samples: dict[str, list[float]] = {}
    for rep in reports:
        for k in measured_steps(reports):
            for r in rep.steps[k].rows:
                if r[1] in ("compute", "a2a") and r[9]:
                    samples.setdefault(r[9], []).append(r[11] - r[10])
    return {name: statistics.median(v) for name, v in sorted(samples.items())}


# ---- sim vs measured ----------------------------------------------------------------------
def compare_sim(plan: Schedule, reports: list[RankReport], layers: int = 1, ep: int = 1,
                calibration: tuple[dict[str, float], float, str] | None = None
                ) -> dict[str, Any]:
    """Predicted (abstract sim on calibrated costs) against measured step time and idle;
    with expert parallelism also the all-to-all's hidden fraction and exposed time.

    ``calibration``: (costs, latency, source) of another run (``dualsim calibrate`` of its
    ``--profile-trace``) to predict this one from; default: this run's own measurement.
    """
    from dualsim.sim.abstract import simulate

    steps = measured_steps(reports)
    timelines = [step_timeline(reports, k) for k in steps]
    effective = [effective_durations(tl) for tl in timelines]
    if calibration is None:
        (costs, latency), source = calibrate(plan, timelines, effective), "this run"
    else:
        costs, latency, source = calibration
    sim = simulate(plan, costs, comm=latency)
    measured = step_time_s(reports)
    tail = statistics.median(max(r.steps[k].step_end for r in reports) -
                             actions_time_s(reports, k) for k in steps)
    predicted = float(sim.makespan) + tail
    per_rank = []
    for rank in range(plan.ranks):
        m_idle = statistics.median(actions_time_s(reports, k) - busy_s(eff, rank, "dur")
                                   for k, eff in zip(steps, effective))
        p_idle = float(sim.per_rank[rank].idle)
        per_rank.append({"rank": rank, "measured_idle_s": m_idle, "predicted_idle_s": p_idle,
                         "idle_error": (p_idle - m_idle) / m_idle if m_idle > 0 else None})
    errors = [abs(p["idle_error"]) for p in per_rank if p["idle_error"] is not None]
    out: dict[str, Any] = {
        "predicted_step_time_s": predicted,
        "measured_step_time_s": measured,
        "prediction_error": (predicted - measured) / measured,
        "max_idle_error": max(errors) if errors else None,
        "calibrated_from": source,
        "predicted_makespan_s": float(sim.makespan),
        "measured_end_of_step_s": tail,
        "calibrated_costs_s": costs,
        "calibrated_latency_s": latency,
        "per_rank_idle": per_rank,
    }
    if ep > 1:
        durations = piece_durations(reports)
        hidden, exposed_s = predicted_a2a(plan, layers, durations)
        measured_a2a = a2a_figures(reports)
        out.update({
            "predicted_a2a_hidden_fraction": hidden,
            "measured_a2a_hidden_fraction": measured_a2a["a2a_hidden_fraction"],
            "predicted_a2a_exposed_s": exposed_s,
            "measured_a2a_exposed_s": measured_a2a["a2a_exposed_s"],
            "calibrated_piece_s": durations,
        })
    processes, cores = len(reports), len(os.sched_getaffinity(0))
    if processes > cores:
        out["caveat"] = (f"{processes} processes on {cores} cores: processes wait for a core, "
                         "so measured times include time-sharing the simulator does not model "
                         "and the prediction is not meaningful")
    return out
