"""The planner: sweep schedules x pipeline ranks x micro-batches x communication SMs (and what-if
overrides such as InfiniBand bandwidth) in hardware mode, drop what breaks a rule or the memory
cap (each with its reason), and rank the survivors by throughput.

Each configuration is one ``simulate_hardware`` run, evaluated in a process pool over all cores
(``spawn`` workers: no forked threads). Results come back in any order and are ranked
deterministically (tokens/s per GPU descending, then peak memory ascending, then the
configuration's own order), so the same sweep always gives the same table, CSV and best row.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from dualsim.errors import DualsimError, ScheduleError
from dualsim.io import write_atomic

DEFAULT_SCHEDULES = ("dualpipe", "dualpipev", "zb-v", "zb-h2", "zb-h1", "interleaved", "1f1b",
                     "gpipe")
DEFAULT_RANKS = (8, 16)
DEFAULT_COMM_SMS = (16, 20, 24)
MB_PER_RANK = (2, 3, 4)  # default micro-batches: these multiples of R (legal for every family)


@dataclass(frozen=True)
class Candidate:
    """One configuration of the sweep (None = the profile's or model's default)."""

    schedule: str
    ranks: int
    microbatches: int
    comm_sms: int | None = None
    ib_gbps: float | None = None
    nvlink_gbps: float | None = None


@dataclass(frozen=True)
class Setting:
    """What every configuration of one sweep shares."""

    profile: str
    model: str
    gpus: int
    memory_gb: float
    ep: int | None = None
    microbatch_tokens: int | None = None


@dataclass
class Outcome:
    """A configuration and what became of it: ``kept`` with its figures, or dropped and why."""

    candidate: Candidate
    kept: bool
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    order: int = 0  # position in the sweep, for a deterministic tie-break

    @property
    def kind(self) -> str:
        """What dropped it: "rule", "layout" or "memory" ("" when kept)."""
        return self.reason.split(":")[0]

    def row(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self.candidate)
        d.update(self.figures)
        d["status"] = "kept" if self.kept else "dropped"
        d["reason"] = self.reason
        return d


@dataclass
class SweepResult:
    """A finished sweep: survivors ranked best first, and the dropped ones with reasons."""

    setting: Setting
    ranked: list[Outcome]
    dropped: list[Outcome]

    @property
    def evaluated(self) -> int:
        return len(self.ranked) + len(self.dropped)

    @property
    def simulated(self) -> int:
        return len(self.ranked) + sum(1 for o in self.dropped if o.figures)

    @property
    def best(self) -> Outcome | None:
        return self.ranked[0] if self.ranked else None

    def dropped_by_kind(self) -> dict[str, int]:
        """How many configurations each kind of reason dropped, kinds in alphabetical order."""
        return dict(sorted(Counter(o.kind for o in self.dropped).items()))

    def to_json(self) -> dict[str, Any]:
        return {"setting": asdict(self.setting), "evaluated": self.evaluated,
                "simulated": self.simulated,
                "results": [dict(o.row(), rank=i + 1) for i, o in enumerate(self.ranked)],
                "dropped": [o.row() for o in self.dropped],
                "best": dict(self.best.row(), rank=1) if self.best else None}


def candidates(schedules: Sequence[str], ranks: Sequence[int],
               microbatches: Sequence[int] | None, comm_sms: Sequence[int | None],
               ib_gbps: Sequence[float | None] = (None,),
               nvlink_gbps: Sequence[float | None] = (None,)) -> list[Candidate]:
    """The cross product, in a fixed order. Without ``microbatches``: 2R, 3R and 4R per R."""
    out = []
    for name in schedules:
        for r in ranks:
            mbs = microbatches if microbatches else [k * r for k in MB_PER_RANK]
            for m in mbs:
                for sms in comm_sms:
                    for ib in ib_gbps:
                        for nv in nvlink_gbps:
                            out.append(Candidate(name, r, m, sms, ib, nv))
    return out


def evaluate(candidate: Candidate, setting: Setting) -> Outcome:
    """Check the family's rules, simulate, apply the memory cap. Never raises a DualsimError."""
    from dualsim.generators import check, generate
    from dualsim.sim.hardware_mode import simulate_hardware

    c = candidate
    try:
        check(c.schedule, c.ranks, c.microbatches)
    except ScheduleError as e:
        return Outcome(c, False, f"rule: {e.message}")
    try:
        r = simulate_hardware(generate(c.schedule, c.ranks, c.microbatches), setting.profile,
                              setting.model, ep=setting.ep, gpus=setting.gpus,
                              comm_sms=c.comm_sms, microbatch_tokens=setting.microbatch_tokens,
                              ib_gbps=c.ib_gbps, nvlink_gbps=c.nvlink_gbps)
    except DualsimError as e:
        return Outcome(c, False, f"layout: {e.message}")
    e = r.extra
    figures = {"step_time_s": float(e["step_time_s"]),
               "tokens_per_s_per_gpu": float(e["tokens_per_s_per_gpu"]),
               "mfu": float(e["mfu"]), "peak_memory_gb": float(e["peak_memory_gb"]),
               "bubble_rate": float(r.bubble_rate), "ep": e.get("ep"), "gpus": e.get("gpus"),
               "comm_sms_used": e.get("comm_sms")}
    if figures["peak_memory_gb"] > setting.memory_gb:
        worst = max(r.per_rank, key=lambda p: p.peak_memory_gb or 0.0)
        return Outcome(c, False, f"memory: rank {worst.rank} needs {figures['peak_memory_gb']:.1f} "
                       f"GB, over the {setting.memory_gb:g} GB cap", figures)
    return Outcome(c, True, "", figures)


def _evaluate_indexed(args: tuple[int, Candidate, Setting]) -> tuple[int, Outcome]:
    i, c, s = args
    return i, evaluate(c, s)


def _run(jobs: list[tuple[int, Candidate, Setting]],
         workers: int) -> Iterator[tuple[int, Outcome]]:
    """``(index, outcome)`` per job as each finishes: in this process, or in a spawn pool."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_evaluate_indexed, jobs)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_evaluate_indexed, job) for job in jobs]
        for fut in as_completed(futures):
            yield fut.result()


def rank_outcomes(outcomes: Iterable[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """Survivors best first (throughput, then memory, then sweep order); dropped in sweep order."""
    kept = [o for o in outcomes if o.kept]
    dropped = [o for o in outcomes if not o.kept]
    kept.sort(key=lambda o: (-o.figures["tokens_per_s_per_gpu"], o.figures["peak_memory_gb"],
                             o.order))
    dropped.sort(key=lambda o: o.order)
    return kept, dropped


def sweep(cands: Sequence[Candidate], setting: Setting, *, workers: int | None = None,
          on_done: Callable[[Outcome], None] | None = None) -> SweepResult:
    """Evaluate every candidate (in ``workers`` processes; default all cores) and rank them."""
    n = workers if workers is not None else (os.cpu_count() or 1)
    jobs = [(i, c, setting) for i, c in enumerate(cands)]
    outcomes: list[Outcome] = []
    for i, o in _run(jobs, n):
        o.order = i
        outcomes.append(o)
        if on_done:
            on_done(o)
    kept, dropped = rank_outcomes(outcomes)
    return SweepResult(setting, kept, dropped)


CSV_COLUMNS = ("rank", "status", "schedule", "ranks", "microbatches", "comm_sms", "ib_gbps",
               "nvlink_gbps", "tokens_per_s_per_gpu", "step_time_s", "mfu", "peak_memory_gb",
               "bubble_rate", "ep", "gpus", "comm_sms_used", "reason")


def to_csv(result: SweepResult) -> str:
    """Every configuration, survivors first in rank order, then the dropped with reasons."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    for i, o in enumerate(result.ranked):
        w.writerow(_csv_row(o, i + 1))
    for o in result.dropped:
        w.writerow(_csv_row(o, ""))
    return buf.getvalue()


def _csv_row(o: Outcome, rank: Any) -> dict[str, Any]:
    row = o.row()
    row["rank"] = rank
    for k, v in list(row.items()):
        if v is None:
            row[k] = ""
        elif isinstance(v, float):
            row[k] = f"{v:.6g}"
    return row


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (memory, throughput) not beaten on both: less memory, more speed."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def render_pareto(result: SweepResult, path: str | Path, *, title: str = "") -> None:
    """Throughput against peak memory: survivors by schedule, the Pareto front, the memory cap,
    and configurations dropped for memory as grey crosses."""
    from dualsim.render.figure import check_path, new_figure, save_figure, style

    check_path(path)
    kept = result.ranked
    over = [o for o in result.dropped if o.figures]
    names = list(dict.fromkeys(o.candidate.schedule for o in kept + over))
    with style():
        fig = new_figure(7.5, 4.8)
        fig.set_layout_engine("constrained")
        ax = fig.subplots()
        palette = ["#E8833A", "#3A923A", "#3274A1", "#C03D3E", "#9372B2", "#845B53", "#D684BD",
                   "#7F7F7F"]
        # a marker shape per schedule as well as a colour: families that tie (DualPipeV at R
        # and DualPipe at 2R often do) stay visible on top of each other
        markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
        for k, name in enumerate(names):
            pts = [o for o in kept if o.candidate.schedule == name]
            if pts:
                ax.scatter([o.figures["peak_memory_gb"] for o in pts],
                           [o.figures["tokens_per_s_per_gpu"] for o in pts],
                           s=30 if k % len(markers) else 46, marker=markers[k % len(markers)],
                           facecolors="none" if k == 0 else palette[k % len(palette)],
                           edgecolors=palette[k % len(palette)], linewidths=1.2, label=name,
                           alpha=0.9, zorder=3 if k else 3.5)
        if over:
            ax.scatter([o.figures["peak_memory_gb"] for o in over],
                       [o.figures["tokens_per_s_per_gpu"] for o in over], marker="x", s=18,
                       color="#9A9A9A", label="dropped: over memory cap", zorder=2)
        pts = [(o.figures["peak_memory_gb"], o.figures["tokens_per_s_per_gpu"]) for o in kept]
        front = [pts[i] for i in pareto_front(pts)]
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#333333",
                    linewidth=1.0, linestyle="-", label="Pareto front", zorder=4)
        if result.best is not None:
            b = result.best.figures
            c = result.best.candidate
            ax.scatter([b["peak_memory_gb"]], [b["tokens_per_s_per_gpu"]], s=160,
                       facecolors="none", edgecolors="black", linewidths=1.4, zorder=5,
                       label="best")
            sms = f", {c.comm_sms} comm SMs" if c.comm_sms is not None else ""
            ax.annotate(f"best: {c.schedule} R={c.ranks}, M={c.microbatches}{sms}",
                        (b["peak_memory_gb"], b["tokens_per_s_per_gpu"]),
                        xytext=(10, -4), textcoords="offset points", fontsize=8, va="top",
                        zorder=6)
        ax.axvline(result.setting.memory_gb, color="#C44E52", linestyle="--", linewidth=1.0,
                   label=f"memory cap {result.setting.memory_gb:g} GB")
        ax.set_xlabel("peak memory per GPU (GB)")
        ax.set_ylabel("throughput (tokens/s per GPU)")
        ax.grid(color="#E5E5E5", linewidth=0.5)
        ax.set_title(title or f"{result.setting.model} on {result.setting.gpus} x "
                     f"{result.setting.profile}: {result.evaluated} configurations",
                     loc="left", fontsize=10, fontweight="bold")
        ax.legend(loc="best", fontsize=7.5, frameon=False)
        save_figure(fig, path)


def write_outputs(result: SweepResult, out_dir: str | Path) -> list[str]:
    """plan.csv, pareto.png and pareto.svg in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    write_atomic(out / "plan.csv", to_csv(result))
    paths = [out / "plan.csv"]
    for name in ("pareto.png", "pareto.svg"):
        render_pareto(result, out / name)
        paths.append(out / name)
    return [str(p) for p in paths]


def best_schedule(result: SweepResult) -> Any:
    """The best configuration's Schedule (for --emit)."""
    from dualsim.generators import generate

    if result.best is None:
        raise DualsimError("no configuration survived, so there is no plan to emit")
    c = result.best.candidate
    return generate(c.schedule, c.ranks, c.microbatches)
