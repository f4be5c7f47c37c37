"""The planner's outputs: plan.csv (every configuration with its fate), the Pareto chart of
throughput against memory (with the published layout marked), and the best configuration as an
executable plan that records its world (dualsim/world.py).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from dualsim.errors import DualsimError
from dualsim.io import write_atomic
from dualsim.planner.evaluate import Outcome
from dualsim.planner.search import SweepResult
from dualsim.world import World

CSV_COLUMNS = ("rank", "status", "reference", "schedule", "ranks", "microbatches", "comm_sms",
               "ib_gbps", "nvlink_gbps", "tokens_per_s_per_gpu", "step_time_s", "mfu",
               "peak_memory_gb", "bubble_rate", "bound_tokens_per_s_per_gpu", "ep",
               "gpus", "comm_sms_used", "microbatch_tokens", "precision", "reason")


def to_csv(result: SweepResult) -> str:
    """Every configuration: survivors in rank order, then the dropped and the pruned ones, each
    with its reason."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    for i, o in enumerate(result.ranked):
        w.writerow(_csv_row(o, i + 1))
    for o in result.dropped + result.pruned:
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


#: the chart shows peak memory up to this many times the larger of the cap and the survivors'
#: highest peak (configurations far over the cap would squeeze the survivors into one corner)
CHART_MEMORY_SPAN = 2.0


def chart_memory_limit(result: SweepResult) -> float:
    """The right edge of the Pareto chart's memory axis (GB)."""
    kept = [o.figures["peak_memory_gb"] for o in result.ranked]
    return CHART_MEMORY_SPAN * max([result.setting.memory_gb] + kept)


def render_pareto(result: SweepResult, path: str | Path, *, title: str = "") -> None:
    """Throughput against peak memory: survivors by schedule, the Pareto front, the memory cap,
    the best configuration and the published layout circled, and the configurations dropped for
    memory as grey crosses at their throughput bound (those beyond ``chart_memory_limit``
    counted in the legend, not drawn)."""
    from dualsim.render.figure import check_path, new_figure, save_figure, style

    check_path(path)
    kept = result.ranked
    limit = chart_memory_limit(result)
    over_all = [o for o in result.dropped if o.kind == "memory" and o.bound is not None]
    over = [o for o in over_all if o.figures["peak_memory_gb"] <= limit]
    beyond = len(over_all) - len(over)
    names = list(dict.fromkeys(o.candidate.schedule for o in kept))
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
            ax.scatter([o.figures["peak_memory_gb"] for o in pts],
                       [o.figures["tokens_per_s_per_gpu"] for o in pts],
                       s=30 if k % len(markers) else 46, marker=markers[k % len(markers)],
                       facecolors="none" if k == 0 else palette[k % len(palette)],
                       edgecolors=palette[k % len(palette)], linewidths=1.2, label=name,
                       alpha=0.9, zorder=3 if k else 3.5)
        if over_all:
            more = f"\n{beyond} more beyond {limit:.0f} GB, not drawn" if beyond else ""
            ax.scatter([o.figures["peak_memory_gb"] for o in over], [o.bound for o in over],
                       marker="x", s=18, color="#9A9A9A",
                       label=f"over memory cap, at its throughput bound{more}", zorder=2)
        pts = [(o.figures["peak_memory_gb"], o.figures["tokens_per_s_per_gpu"]) for o in kept]
        front = [pts[i] for i in pareto_front(pts)]
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#333333",
                    linewidth=1.0, linestyle="-", label="Pareto front", zorder=4)
        ref = result.reference
        for o, what, style_kw, dy in (
                (result.best, "best", {"edgecolors": "black", "s": 160}, -4),
                (ref if ref is not None and ref.kept else None, "published layout",
                 {"edgecolors": "#C44E52", "s": 230, "linestyles": "--"}, 12)):
            if o is None:
                continue
            f, c = o.figures, o.candidate
            ax.scatter([f["peak_memory_gb"]], [f["tokens_per_s_per_gpu"]], facecolors="none",
                       linewidths=1.4, zorder=5, label=what, **style_kw)
            ax.annotate(f"{what}: {c.describe()}", (f["peak_memory_gb"],
                                                     f["tokens_per_s_per_gpu"]),
                        xytext=(10, dy), textcoords="offset points", fontsize=8,
                        va="top" if dy < 0 else "bottom", zorder=6)
        ax.axvline(result.setting.memory_gb, color="#C44E52", linestyle="--", linewidth=1.0,
                   label=f"memory cap {result.setting.memory_gb:g} GB")
        ax.set_xlabel("peak memory per GPU (GB)")
        ax.set_ylabel("throughput (tokens/s per GPU)")
        ax.grid(color="#E5E5E5", linewidth=0.5)
        ax.set_title(title or f"{result.setting.model} on {result.setting.gpus} x "
                     f"{result.setting.profile}: {result.evaluated} configurations",
                     loc="left", fontsize=10, fontweight="bold")
        ax.set_xlim(right=limit)
        ax.legend(loc="lower right", fontsize=7.5, framealpha=0.9)
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


def best_world(result: SweepResult) -> World:
    """The world of the best configuration, as its emitted plan records it."""
    if result.best is None:
        raise DualsimError("no configuration survived, so there is no plan to emit")
    return result.setting.world(result.best.candidate, result.best.figures)
