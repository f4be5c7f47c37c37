"""The report folder of ``dualsim compare ... --out DIR``.

``write_report`` writes, atomically and byte-reproducibly:

- ``report.md``: the comparison table (one row per schedule), the assumptions (mode, profile,
  model, layout, calibration), per-rank figures, and links to every chart and trace;
- ``gantt_<schedule>.png``/``.svg`` per schedule and ``gantt_compare.png``/``.svg`` combined;
- ``memory_<schedule>.png``/``.svg`` (hardware mode: memory over time per rank);
- ``trace_<schedule>.json``: Perfetto/Chrome trace with flows and memory counters;
- ``summary.json``: config, results (SimResult.to_dict plus the README formula), skipped;
- ``timeline.csv``: every schedule's Timeline with a leading ``schedule`` column (and
  ``memory.csv`` in hardware mode).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd

from dualsim.io import dumps_json, write_atomic
from dualsim.ir import Schedule
from dualsim.render.table import (comparison_rows, fmt, markdown_table, per_rank_text,
                                  readme_formula)
from dualsim.sim.result import SimResult

if TYPE_CHECKING:
    from dualsim.cluster.profile import Profile
    from dualsim.workload.model import Model


#: files of every report folder (beside the per-schedule ones its summary.json lists)
REPORT_FILES = ("report.md", "summary.json", "timeline.csv", "memory.csv", "gantt_compare.png",
                "gantt_compare.svg")


def foreign_files(folder: Path) -> list[str]:
    """Names in ``folder`` that no report wrote: anything but REPORT_FILES and the per-schedule
    files its summary.json lists (so a previous report folder has none; an empty folder none).
    """
    from dualsim.io import loads_json

    names = sorted(p.name for p in folder.iterdir())
    known = set(REPORT_FILES)
    try:
        old = loads_json((folder / "summary.json").read_text())
        for r in old["results"]:
            known.update(str(v) for v in r["files"].values())
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        pass  # no readable summary: only the fixed names are known
    return [n for n in names if n not in known or not (folder / n).is_file()]


def file_stem(name: str) -> str:
    """A schedule name made safe for a file name (``zb-v`` stays ``zb-v``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "schedule"


def chart_title(name: str, s: Schedule, config: Mapping[str, Any]) -> str:
    v = f", v={s.chunks}" if s.chunks else ""
    where = "abstract costs" if config.get("mode", "abstract") == "abstract" else \
        f"{config.get('model', '?')} on {config.get('profile', '?')}"
    return f"{name}  R={s.ranks}, M={s.microbatches}{v}  ({where})"


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n", float_format="%.12g")


def stacked(frames: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """The (schedule, table) pairs' tables stacked, with the schedule's name as first column."""
    df = pd.concat([f.assign(schedule=name) for name, f in frames], ignore_index=True)
    return df[["schedule"] + [c for c in df.columns if c != "schedule"]]


def timeline_table(results: list[tuple[str, SimResult]]) -> pd.DataFrame:
    """All Timelines stacked, with the schedule's name as the first column."""
    return stacked([(name, r.timeline) for name, r in results])


def assumptions(config: Mapping[str, Any], results: list[tuple[str, SimResult]],
                profile: Profile | None = None, model: Model | None = None) -> list[str]:
    """The report's assumption bullets: mode, costs or profile/model/layout, calibration.
    In hardware mode the profile (with the run's overrides) and the model the run used give
    their details; without them only their names from ``config`` are shown."""
    lines: list[str] = []
    mode = config.get("mode", "abstract")
    lines.append(f"- **mode**: {mode}")
    if mode == "abstract":
        costs = config.get("costs", {})
        lines.append("- **costs** (per rank-worth of layers): "
                     + ", ".join(f"{k}={fmt(v)}" for k, v in costs.items())
                     + "; B (a full backward) = I+W and F&B (an overlapped pair) = F+B "
                     "unless given")
        lines.append(f"- **transfer latency** per cross-rank dependency: {fmt(config.get('comm', 0))}")
        lines.append("- **ideal** = mean busy time per rank (M(F+I+W) unless B or F&B is "
                     "given); bubble rate = 1 - ideal/makespan")
    else:
        lines.extend(_hardware_lines(config, results, profile, model))
    layout = {k: v for k, v in config.items()
              if k not in ("mode", "costs", "comm", "profile", "model")}
    lines.append("- **layout**: " + ", ".join(f"{k}={v}" for k, v in layout.items()))
    hw_keys = sorted({k for _, r in results for k in r.extra})
    if hw_keys:
        lines.append("- **also reported per schedule** in summary.json: " + ", ".join(hw_keys))
    return lines


def hbm_gb(config: Mapping[str, Any], prof: Profile | None) -> float | None:
    """The HBM line of the memory charts in GB (1e9 bytes, as the simulator counts): the
    config's ``hbm_gb``, else the profile's, else none."""
    if "hbm_gb" in config:
        return float(config["hbm_gb"])
    return prof.hbm_bytes / 1e9 if prof is not None else None


def _hardware_lines(config: Mapping[str, Any], results: list[tuple[str, SimResult]],
                    prof: Profile | None, mdl: Model | None) -> list[str]:
    lines = []
    if prof is not None:
        fp8 = f", FP8 {prof.fp8_flops / 1e12:.0f} TFLOPS" if prof.fp8_flops else ", no FP8"
        lines.append(
            f"- **profile**: {prof.name} ({prof.description}): {prof.sms} SMs of which "
            f"{prof.comm_sms} for an all-to-all while it runs, HBM {prof.hbm_bytes / 1e9:.0f} GB, "
            f"BF16 "
            f"{prof.bf16_flops / 1e12:.0f} TFLOPS{fp8}; usable NVLink "
            f"{prof.nvlink_bandwidth / 1e9:.0f} GB/s and IB {prof.ib_bandwidth / 1e9:.0f} GB/s "
            f"per GPU; {prof.gpus_per_node} GPUs per node. Source: `{Path(prof.source).name}`")
        eff = ", ".join(f"{k} {v:g}" for k, v in sorted(prof.efficiency.items()))
        lines.append(
            f"- **calibration**: an all-to-all SM moves {prof.a2a_per_sm / 1e9:g} GB/s of token "
            f"copies ({prof.a2a_overlap_rate:.0%} of that beside compute); all-to-all fixed cost "
            f"{prof.dispatch_latency * 1e3:.3g} ms (dispatch) / {prof.combine_latency * 1e3:.3g} "
            f"ms (combine) + {prof.a2a_peer_latency * 1e6:.2g} us per EP peer; compute beside a "
            f"comm kernel runs on the SMs it leaves, {prof.interference:.1%} slower still; "
            f"kernel efficiencies: {eff}")
        g = prof.gemm
        loops = ", ".join(f"{k} {v:g}" for k, v in sorted(g.mainloop_fraction.items()))
        wgrad = ", ".join(f"{k} {v:g}" for k, v in sorted(g.wgrad_fraction.items()))
        lines.append(
            f"- **GEMM model** (tile/wave roofline): main loop {loops} of peak (weight gradients "
            f"{wgrad}), HBM {g.hbm_fraction:g}, per-SM operand loads "
            f"{g.sm_load_bandwidth / 1e9:g} GB/s, {g.launch * 1e6:g} us per kernel")
    else:
        lines.append(f"- **profile**: {config.get('profile')}")
    if mdl is not None:
        gemm = results[0][1].extra.get("precision", mdl.gemm_dtype) if results else mdl.gemm_dtype
        lines.append(f"- **model**: {mdl.name} ({mdl.description}); GEMMs {gemm}, "
                     f"attention {mdl.attention_dtype}; recomputed in backward: "
                     f"{', '.join(mdl.recompute) or 'nothing'}")
    else:
        lines.append(f"- **model**: {config.get('model')}")
    if results:
        e = results[0][1].extra
        keys = ("ep", "gpus", "comm_sms", "microbatch_tokens", "tokens_per_step")
        got = [f"{k}={_plain(e[k])}" for k in keys if k in e]
        if got:
            lines.append("- **parallelism**: " + ", ".join(got))
        for name, r in results:
            if r.extra.get("layers_per_stage"):
                lines.append(f"- **layers per stage** ({name}): "
                             + ", ".join(str(x) for x in r.extra["layers_per_stage"]))
            for w in r.extra.get("warnings", []) or []:
                lines.append(f"- **warning** ({name}): {w}")
    return lines


def _plain(v: Any) -> str:
    return fmt(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _per_rank_section(results: list[tuple[str, SimResult]]) -> list[str]:
    unit = results[0][1].time_unit
    out = ["## Per rank", ""]
    for name, r in results:
        out.append(f"- **{name}**: idle ({unit}) {per_rank_text([p.idle for p in r.per_rank])}; "
                   f"peak activations {per_rank_text([p.peak_activations for p in r.per_rank])}"
                   + (f"; peak memory (GB) "
                      f"{per_rank_text([p.peak_memory_gb for p in r.per_rank], 3)}"
                      if r.per_rank and r.per_rank[0].peak_memory_gb is not None else ""))
    return out + [""]


def report_markdown(results: list[tuple[str, SimResult]], schedules: Mapping[str, Schedule],
                    config: Mapping[str, Any], skipped: list[tuple[str, str]],
                    files: Mapping[str, dict[str, str]], profile: Profile | None = None,
                    model: Model | None = None) -> str:
    header, rows = comparison_rows(results, schedules, config)
    mode = config.get("mode", "abstract")
    title = ("abstract costs" if mode == "abstract"
             else f"{config.get('model')} on {config.get('profile')}")
    lines = [f"# dualsim comparison: {title}", "",
             f"R={config.get('ranks')}, M={config.get('microbatches')}; "
             f"{len(results)} schedule(s). Generated by `dualsim compare`; "
             "every number below comes from the simulator.", "",
             markdown_table(header, rows), ""]
    if skipped:
        lines += ["Skipped (their family's rules do not allow this configuration):", ""]
        lines += [f"- **{n}**: {why}" for n, why in skipped] + [""]
    lines += ["The README formula column is DeepSeek's DualPipe README table (bubble = idle "
              "time per rank, parameter copies, activations in flight per rank); in abstract "
              "mode with zero transfer latency its value must equal the simulated idle time (✓).",
              "", "## Assumptions", ""]
    lines += assumptions(config, results, profile, model) + [""]
    lines += ["## Timelines", "", "![all schedules](gantt_compare.png)", "",
              "Combined Gantt: [PNG](gantt_compare.png), [SVG](gantt_compare.svg).", ""]
    for name, _ in results:
        f = files[name]
        lines += [f"### {name}", "", f"![{name}]({f['gantt_png']})", "",
                  f"Gantt [PNG]({f['gantt_png']}) / [SVG]({f['gantt_svg']}); "
                  f"Perfetto trace [{f['trace']}]({f['trace']}) (open in ui.perfetto.dev)"
                  + (f"; memory [PNG]({f['memory_png']}) / [SVG]({f['memory_svg']})"
                     if "memory_png" in f else ""), ""]
        if "memory_png" in f:
            lines += [f"![memory of {name}]({f['memory_png']})", ""]
    lines += _per_rank_section(results)
    lines += ["## Files", "",
              "- `summary.json`: the configuration and every figure above, per schedule",
              "- `timeline.csv`: every interval of every schedule (Timeline columns, plus "
              "`schedule`)"]
    if any("memory_png" in f for f in files.values()):
        lines.append("- `memory.csv`: memory over time per rank and component")
    lines.append("- trace timestamps: microseconds; abstract cost units are shown as 1 unit = "
                 "1 ms (1000 us)")
    return "\n".join(lines) + "\n"


def summary(results: list[tuple[str, SimResult]], schedules: Mapping[str, Schedule],
            config: Mapping[str, Any], skipped: list[tuple[str, str]],
            files: Mapping[str, dict[str, str]]) -> dict[str, Any]:
    costs = config.get("costs") if config.get("mode", "abstract") == "abstract" else None
    out = []
    for name, r in results:
        d = r.to_dict()
        s = schedules[name]
        if s.chunks is not None:
            d["chunks"] = s.chunks
        formula = readme_formula(s, costs)
        if formula["value"] is not None:
            v = float(formula["value"])
            formula["value"] = int(v) if v.is_integer() else v
        d["readme_formula"] = formula
        d["files"] = dict(files[name])
        out.append(d)
    return {"config": {k: v for k, v in config.items()}, "results": out,
            "skipped": [{"schedule": n, "reason": why} for n, why in skipped]}


PARALLEL_ROWS = 2_000  # timeline rows in all from which charts render in worker processes


def _render_schedule(out: Path, f: dict[str, str], title: str, timeline: pd.DataFrame,
                     time_unit: str, schedule: Schedule, memory: pd.DataFrame | None,
                     hbm: float | None, part: str) -> None:
    """One rendering job of one schedule: its Gantt, its trace or its memory plot."""
    from dualsim.render.gantt import render_gantt_files
    from dualsim.render.memory import render_memory_files
    from dualsim.render.perfetto import write_trace

    if part == "gantt":
        render_gantt_files([(title, timeline)], [out / f["gantt_png"], out / f["gantt_svg"]],
                           time_unit=time_unit)
    elif part == "trace":
        write_trace(timeline, out / f["trace"], time_unit=time_unit, schedule=schedule,
                    memory=memory)
    else:
        render_memory_files(memory, [out / f["memory_png"], out / f["memory_svg"]], hbm_gb=hbm,
                            time_unit=time_unit, title=f"memory per rank: {title}")


def _render_compare(out: Path, panels: list[tuple[str, pd.DataFrame]], time_unit: str) -> None:
    from dualsim.render.gantt import render_gantt_files

    render_gantt_files(panels, [out / "gantt_compare.png", out / "gantt_compare.svg"],
                       time_unit=time_unit)


def _run_jobs(jobs: list[tuple[Any, tuple]], workers: int, progress: Any,
              while_waiting: Any) -> None:
    """Run ``(function, args)`` jobs in ``workers`` processes (in this one if 1), calling
    ``while_waiting()`` here meanwhile and ``progress()`` after each job."""
    if workers <= 1:
        while_waiting()
        for fn, args in jobs:
            fn(*args)
            if progress is not None:
                progress()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")  # no forked threads (progress bars, BLAS)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        while_waiting()
        for fut in as_completed(futures):
            fut.result()
            if progress is not None:
                progress()


def write_report(out_dir: str | Path, results: list[tuple[str, SimResult]], *,
                 schedules: dict[str, Schedule], config: dict, skipped: list[tuple[str, str]],
                 progress: Any = None, workers: int | None = None,
                 profile: Profile | None = None, model: Model | None = None) -> None:
    """Write the whole report folder (see the module docstring) into ``out_dir``.

    In hardware mode ``profile`` (with the run's overrides) and ``model`` are what the
    simulation used: the report states their details and draws the HBM line from them.

    Charts and traces are independent jobs: with long timelines (hardware mode) they run in
    ``workers`` processes (default: all cores), short ones in this process. The files are the
    same either way. ``progress`` is called after each job.
    """
    import os

    if not results:
        raise ValueError("write_report needs at least one result")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    hbm = hbm_gb(config, profile) if config.get("mode") == "hardware" else None
    unit = results[0][1].time_unit
    panels = [(chart_title(n, schedules[n], config), r.timeline) for n, r in results]
    jobs: list[tuple[Any, tuple]] = [(_render_compare, (out, panels, unit))]  # largest first
    for (name, r), (title, _) in zip(results, panels):
        stem = file_stem(name)
        f = {"gantt_png": f"gantt_{stem}.png", "gantt_svg": f"gantt_{stem}.svg",
             "trace": f"trace_{stem}.json"}
        has_memory = r.memory is not None and len(r.memory) > 0
        if has_memory:
            f["memory_png"], f["memory_svg"] = f"memory_{stem}.png", f"memory_{stem}.svg"
        files[name] = f
        for part in ("gantt", "trace") + (("memory",) if has_memory else ()):
            jobs.append((_render_schedule, (out, f, title, r.timeline, r.time_unit,
                                            schedules[name], r.memory if has_memory else None,
                                            hbm, part)))
    rows = sum(len(r.timeline) for _, r in results)
    if workers is None:
        workers = (os.cpu_count() or 1) if rows >= PARALLEL_ROWS else 1

    def tables() -> None:
        write_atomic(out / "timeline.csv", _csv(timeline_table(results)))
        mems = [(n, r.memory) for n, r in results if r.memory is not None and len(r.memory)]
        if mems:
            write_atomic(out / "memory.csv", _csv(stacked(mems)))
        write_atomic(out / "summary.json",
                     dumps_json(summary(results, schedules, config, skipped, files)))
        write_atomic(out / "report.md",
                     report_markdown(results, schedules, config, skipped, files, profile,
                                     model))

    _run_jobs(jobs, workers, progress, tables)
