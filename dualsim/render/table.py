"""The comparison table of a report: one row per schedule, and DualPipe-README-style formulas.

DeepSeek's DualPipe README compares schedules by their bubble (idle time per rank), parameter
copies and in-flight activations in closed form. ``readme_formula`` gives that row for each
family (with costs per rank-worth of layers, docs/schedules.md) and evaluates the bubble for the
abstract costs, so the report can show the simulated idle time next to the formula as a sanity
check. Everything here is plain data and text: no matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping

from dualsim.ir import Schedule
from dualsim.sim.result import SimResult

Costs = Mapping[str, Any]


@dataclass(frozen=True)
class Formula:
    """A README-style row: bubble (idle per rank), parameter copies, activations per rank.

    Activations count whole (stage, micro-batch) pairs in flight on the busiest rank, as the
    simulator does; a V's stages hold half a rank-worth of layers ("half-stages").
    """

    bubble: str
    params: str
    activations: str
    value: Callable[[int, int, Costs], Any] | None  # (R, chunks, costs) -> bubble, or None
    condition: str = ""  # when the closed form holds


def _c(costs: Costs) -> tuple[Any, Any, Any, Any, Any]:
    f, i, w = costs.get("F", 1), costs.get("I", 1), costs.get("W", 1)
    b = costs.get("B", i + w)
    fb = costs.get("FB", f + b)
    return f, i, w, b, fb


FORMULAS: dict[str, Formula] = {
    "gpipe": Formula("(R-1)(F+B)", "1x", "M", lambda r, v, c: (r - 1) * (_c(c)[0] + _c(c)[3])),
    "1f1b": Formula("(R-1)(F+B)", "1x", "R", lambda r, v, c: (r - 1) * (_c(c)[0] + _c(c)[3])),
    "1f1b-overlap": Formula("(R-1)(F+B) (last rank)", "1x", "2R",
                            lambda r, v, c: (r - 1) * (_c(c)[0] + _c(c)[3]),
                            "max(F, B) <= F&B <= F+B"),
    "interleaved": Formula("(R-1)(F+B)/v", "1x", "see per rank",
                           lambda r, v, c: Fraction(r - 1) * (_c(c)[0] + _c(c)[3]) / v),
    "interleaved-overlap": Formula("(R-1)(F+B)/v (last rank)", "1x", "see per rank",
                                   lambda r, v, c: Fraction(r - 1) * (_c(c)[0] + _c(c)[3]) / v,
                                   "max(F, B) <= F&B <= F+B"),
    "zb-h1": Formula("(R-1)(F+I-W)", "1x", "R", lambda r, v, c: (r - 1) * (_c(c)[0] + _c(c)[1] - _c(c)[2]),
                     "M >= R, W <= min(F, I)"),
    "zb-h2": Formula("(R-1)(F+I-2W) (span)", "1x", "2R-1", None, "span only, 2W <= F+I, W <= F"),
    "zb-v": Formula("(R-1)F/2", "1x", "2R half-stages", lambda r, v, c: Fraction(r - 1) * _c(c)[0] / 2,
                    "F = I = W"),
    "dualpipe": Formula("(R/2-1)(F&B+B-3W)", "2x", "R+1",
                        lambda r, v, c: (Fraction(r, 2) - 1) * (_c(c)[4] + _c(c)[3] - 3 * _c(c)[2])),
    "dualpipev": Formula("(R-1)(F&B+B-3W)/2", "1x", "2R+1 half-stages",
                         lambda r, v, c: Fraction(r - 1) * (_c(c)[4] + _c(c)[3] - 3 * _c(c)[2]) / 2),
}


def readme_formula(schedule: Schedule, costs: Costs | None) -> dict[str, Any]:
    """The README-style row for ``schedule``; with abstract ``costs`` also the bubble's value."""
    f = FORMULAS.get(schedule.name)
    if f is None:
        return {"bubble": "n/a", "params": "n/a", "activations": "n/a", "value": None}
    value = None
    if costs is not None and f.value is not None:
        value = f.value(schedule.ranks, schedule.chunks or 2, costs)
    return {"bubble": f.bubble, "params": f.params, "activations": f.activations,
            "condition": f.condition, "value": value}


def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table: integers plainly, others with ``digits`` significant digits."""
    if v is None:
        return "—"
    f = float(v)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.{digits}g}"


def per_rank_text(values: list[Any], digits: int = 4) -> str:
    """'2 (all ranks)' when equal, else the values in rank order."""
    if values and all(v == values[0] for v in values):
        return f"{fmt(values[0], digits)} (all ranks)"
    return ", ".join(fmt(v, digits) for v in values)


def formula_cell(schedule: Schedule, result: SimResult, costs: Costs | None,
                 comm: float = 0.0) -> str:
    """'(R/2-1)(F&B+B-3W) = 6 ✓' (abstract, matches max idle), or the formula alone."""
    row = readme_formula(schedule, costs)
    text = f"{row['bubble']}; params {row['params']}; act. {row['activations']}"
    if row["value"] is None:
        return text
    idle = max(p.idle for p in result.per_rank)
    ok = comm == 0 and abs(float(idle) - float(row["value"])) < 1e-9
    mark = "✓" if ok else f"(simulated {fmt(idle)})"
    return f"{row['bubble']} = {fmt(row['value'])} {mark}; params {row['params']}; act. {row['activations']}"


def params_per_device(schedule: Schedule, result: SimResult) -> str:
    """Parameters held per device: GB in hardware mode, else copies of a rank-worth of layers."""
    for key in ("params_per_device_b", "parameters_per_device_b"):
        if key in result.extra:
            return f"{float(result.extra[key]):.3g} B"
    gb = [p.memory_breakdown_gb.get("params") for p in result.per_rank
          if p.memory_breakdown_gb and "params" in p.memory_breakdown_gb]
    if gb:
        return f"{max(gb):.1f} GB (max)"
    return "2x" if schedule.name == "dualpipe" else "1x"


def devices_used(schedule: Schedule, result: SimResult, config: Mapping[str, Any]) -> str:
    for key in ("gpus", "devices"):
        if key in result.extra:
            return fmt(result.extra[key])
        if key in config and config[key] is not None:
            return fmt(config[key])
    return str(schedule.ranks)


def comparison_rows(results: list[tuple[str, SimResult]], schedules: Mapping[str, Schedule],
                    config: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table (the same columns in both modes)."""
    abstract = config.get("mode", "abstract") == "abstract"
    costs = config.get("costs") if abstract else None
    comm = float(config.get("comm", 0.0) or 0.0)
    unit = results[0][1].time_unit if results else ""
    header = ["schedule", "R", "stages", "M", f"step time ({unit})", "bubble rate",
              f"idle per rank ({unit})",
              "peak activations per rank (units)" if abstract else "peak memory per rank (GB)",
              "parameters per device", "devices used", "README formula (bubble; params; act.)"]
    if not abstract:
        header[5:5] = ["tokens/s/GPU", "MFU"]
    rows = []
    for name, r in results:
        s = schedules[name]
        idle = per_rank_text([p.idle for p in r.per_rank])
        if abstract:
            peak = per_rank_text([p.peak_activations for p in r.per_rank])
        else:
            peak = per_rank_text([p.peak_memory_gb for p in r.per_rank], 3)
        step = r.extra.get("step_time_s", r.makespan) if not abstract else r.makespan
        row = [name, str(s.ranks), str(s.num_stages), str(s.microbatches), fmt(step),
               f"{float(r.bubble_rate):.1%}", idle, peak, params_per_device(s, r),
               devices_used(s, r, config), formula_cell(s, r, costs, comm)]
        if not abstract:
            row[5:5] = [fmt(r.extra.get("tokens_per_s_per_gpu"), 5),
                        f"{float(r.extra['mfu']):.1%}" if "mfu" in r.extra else "—"]
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""
    def cell(t: str) -> str:
        return t.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
