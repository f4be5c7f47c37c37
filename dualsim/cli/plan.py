"""`dualsim plan`: search configurations in hardware mode, rank them by throughput, emit the best.

List options take comma-separated values or repeat (``--ranks 8,16`` = ``--ranks 8 --ranks 16``).
The model preset's published layout is always evaluated and shown for reference. Writes
``plan.csv`` and the Pareto chart (``pareto.png``/``.svg``) into ``--out``; ``--json`` prints
``evaluated``, ``results`` (ranked survivors), ``dropped`` (with reasons), ``pruned`` (with their
throughput bound), ``best`` and ``reference``; ``--emit FILE`` writes the best configuration's
executable plan, with its world, for ``dualsim simulate``, ``dualsim run`` and torchrun.
Evaluations run here (``--executor local``, ``--workers``) or on Ray (``--executor ray``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

import typer

from dualsim.cli.common import (check_output, check_output_folder, err_console, print_json,
                                progress, user_errors)
from dualsim.defaults import DEFAULT_MODEL, DEFAULT_PROFILE
from dualsim.errors import DualsimError
from dualsim.io import check_writable_file

if TYPE_CHECKING:
    from dualsim.planner import Setting, SweepResult
    from dualsim.workload.model import Model

T = TypeVar("T")


def parse_list(values: Optional[list[str]], convert: Callable[[str], T], flag: str) -> list[T]:
    """Flatten repeated and comma-separated values; one error line names a bad entry, or the
    flag given with nothing but commas and spaces (rather than sweeping the defaults)."""
    out: list[T] = []
    for v in values or []:
        for part in filter(None, (p.strip() for p in v.split(","))):
            try:
                out.append(convert(part))
            except ValueError:
                raise DualsimError(f"bad {flag} value {part!r}: expected a number, e.g. "
                                   f"{flag} 8,16") from None
    if values and not out:
        raise DualsimError(f"{flag} was given no values; leave it out for the default sweep")
    return list(dict.fromkeys(out))


def parse_range(values: Optional[list[str]], flag: str) -> list[int]:
    """Like parse_list for integers, where an entry may also be a range ``A..B`` (every integer
    from A to B) or ``A..B:S`` (A, A+S, ... up to B)."""
    out: list[int] = []
    for v in values or []:
        for part in filter(None, (p.strip() for p in v.split(","))):
            lo, sep, rest = part.partition("..")
            hi, _, step = rest.partition(":")
            try:
                if not sep:
                    out.append(int(part))
                    continue
                a, b, k = int(lo), int(hi), int(step) if step else 1
            except ValueError:
                raise DualsimError(f"bad {flag} value {part!r}: expected a number or a range, "
                                   f"e.g. {flag} 8,16 or {flag} 8..32:4") from None
            if k < 1 or b < a:
                raise DualsimError(f"bad {flag} range {part!r}: give A..B with A <= B and a "
                                   f"step of 1 or more, e.g. {flag} 8..32:4")
            out.extend(range(a, b + 1, k))
    if values and not out:
        raise DualsimError(f"{flag} was given no values; leave it out for the default sweep")
    return list(dict.fromkeys(out))


def plan_command(
    profile: str = typer.Option(DEFAULT_PROFILE, "--profile", help="Hardware profile name or TOML file."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Workload preset name, TOML file, or Hugging Face config.json."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="Total GPUs (default: the model's layout)."),
    global_batch: Optional[int] = typer.Option(None, "--global-batch", help="Sequences per step, held fixed (default: the model's); M follows from the layout."),
    schedules: Optional[list[str]] = typer.Option(None, "--schedules", help="Families to sweep (default: all)."),
    ranks: Optional[list[str]] = typer.Option(None, "--ranks", help="Pipeline ranks, a list or range: 8,16 or 4..32:4 (default: 4,8,16,32)."),
    ep: Optional[list[str]] = typer.Option(None, "--ep", help="Expert-parallel degrees, a list or range (default: 8,16,32,64 for MoE models)."),
    microbatch_tokens: Optional[list[str]] = typer.Option(None, "--microbatch-tokens", help="Tokens per micro-batch, a list or range (default: 1, 2 and 4 sequences)."),
    precision: Optional[list[str]] = typer.Option(None, "--precision", help="GEMM precisions: fp8, bf16 (default: both where the profile has FP8)."),
    comm_sms: Optional[list[str]] = typer.Option(None, "--comm-sms", help="All-to-all SMs, a list or range, e.g. 8..32:4 (default: 8,12,16,20,24,32 for MoE models; the profile's for dense ones)."),
    ib_gbps: Optional[list[str]] = typer.Option(None, "--ib-gbps", help="What-if usable IB bandwidths per GPU (GB/s)."),
    nvlink_gbps: Optional[list[str]] = typer.Option(None, "--nvlink-gbps", help="What-if usable NVLink bandwidths per GPU (GB/s)."),
    microbatches: Optional[list[str]] = typer.Option(None, "--microbatches", help="Micro-batch counts to sweep instead of holding --global-batch fixed."),
    memory_gb: Optional[float] = typer.Option(None, "--memory-gb", help="Memory cap per GPU in GB (default: the profile's HBM)."),
    top: int = typer.Option(10, "--top", help="Rows of the ranking to print."),
    out: Path = typer.Option(Path("dualsim-plan"), "--out", "-o", help="Folder for plan.csv and the Pareto chart."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    emit: Optional[Path] = typer.Option(None, "--emit", help="Write the best configuration's plan (JSON) here."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: all cores)."),
    executor: str = typer.Option("local", "--executor", help="Where evaluations run: local or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to use, e.g. ray://head:10001 (default: a local Ray for the run)."),
) -> None:
    """Search families x ranks x EP x micro-batch size x precision x comm SMs (x what-ifs) at a
    fixed global batch; rank by throughput next to the model's published layout."""
    with user_errors():
        from dualsim import planner
        from dualsim.cluster.compute import PRECISIONS, precision_for
        from dualsim.cluster.profile import load_profile
        from dualsim.generators import FAMILIES
        from dualsim.workload.model import default_layout, load_model

        prof = load_profile(profile)
        mdl = load_model(model)
        layout = default_layout(mdl)
        axes = planner.default_axes(mdl, prof)
        names = parse_list(schedules, str, "--schedules") or axes["schedules"]
        unknown = [n for n in names if n not in FAMILIES]
        if unknown:
            raise DualsimError(f"unknown schedule {unknown[0]!r}: choose from "
                               f"{', '.join(FAMILIES)} (see `dualsim schedules`)")
        rank_list = parse_range(ranks, "--ranks") or axes["ranks"]
        ep_list = parse_range(ep, "--ep") or axes["eps"]
        tok_list = parse_range(microbatch_tokens, "--microbatch-tokens") or axes[
            "microbatch_tokens"]
        sms_list = parse_range(comm_sms, "--comm-sms") or axes["comm_sms"]
        mb_list = parse_range(microbatches, "--microbatches") or None
        ib_list = parse_list(ib_gbps, float, "--ib-gbps") or [None]
        nv_list = parse_list(nvlink_gbps, float, "--nvlink-gbps") or [None]
        prec_list = parse_list(precision, str, "--precision") or axes["precisions"]
        bad = [p for p in prec_list if p not in PRECISIONS]
        if bad:
            raise DualsimError(f"bad --precision value {bad[0]!r}: use fp8 and/or bf16")
        if mb_list is not None and global_batch is not None:
            raise DualsimError("--global-batch and --microbatches both set the micro-batches; "
                               "give one of them")
        for flag, vals in (("--ranks", rank_list), ("--ep", ep_list),
                           ("--microbatch-tokens", tok_list), ("--microbatches", mb_list or [1]),
                           ("--comm-sms", sms_list)):
            if any(v < 1 for v in vals):
                raise DualsimError(f"{flag} values must be 1 or more, got {vals}")
        # what-if values the profile refuses (not positive, out of its ranges) fail now, not in
        # every row
        for v in ib_list:
            prof.with_overrides(ib_gbps=v)
        for v in nv_list:
            prof.with_overrides(nvlink_gbps=v)
        for n in (sms_list if comm_sms else []):
            prof.with_overrides(comm_sms=n)
        for flag, val in (("--gpus", gpus), ("--global-batch", global_batch)):
            if val is not None and val < 1:
                raise DualsimError(f"{flag} must be 1 or more, got {val}")
        if top < 0:
            raise DualsimError(f"--top must be 0 or more, got {top}")
        if workers is not None and workers < 1:
            raise DualsimError(f"--workers must be 1 or more, got {workers}")
        cap = memory_gb if memory_gb is not None else prof.hbm_bytes / 1e9
        if not 1 <= cap <= 1e6:  # below 1 GB nothing fits: it would drop every configuration
            raise DualsimError(f"--memory-gb must be between 1 and 1e+06 GB, got {cap:g}")
        setting = planner.Setting(
            prof.name if Path(profile).suffix != ".toml" else profile,
            mdl.name if Path(model).suffix not in (".toml", ".json") else model,
            gpus if gpus is not None else int(layout["gpus"]), float(cap),
            global_batch=(global_batch if global_batch is not None or mb_list is not None
                          else int(layout["global_batch"])),
            preset=tuple(k for k, v in (("gpus", gpus), ("global_batch", global_batch))
                         if v is None))
        # a wrong --out or --emit fails now, not after a sweep of minutes
        check_writable_file(out / "plan.csv")
        check_output_folder("--out", out)
        check_output("--emit", emit, (".json",))
        cands = planner.candidates(names, rank_list, mb_list, sms_list, ib_list, nv_list,
                                   eps=ep_list, microbatch_tokens=tok_list, precisions=prec_list)
        refuse_if_none_can_run(cands, setting, mdl, layout,
                               preset=[k for k, v in (("ep", ep), ("gpus", gpus),
                                                      ("microbatch_tokens", microbatch_tokens))
                                       if v is None])
        ref = planner.reference(layout, prof.comm_sms, precision_for(mdl, prof)[0].gemm_dtype)
        ex = planner.make_executor(executor, workers, ray_address)
        try:
            with progress() as bar:
                task = bar.add_task("evaluating configurations", total=len(cands) + 1)

                def show(t: planner.Tally) -> None:
                    bar.update(task, total=t.total, completed=t.evaluated,
                               description=f"evaluated {t.evaluated}: pruned {t.pruned}, "
                                           f"dropped {t.dropped}, simulated {t.simulated}")

                result = planner.sweep(cands, setting, executor=ex, keep=max(top, 10),
                                       reference=ref, on_progress=show)
                if result.best is None:
                    bar.discard()  # the error below is then the first line on stderr
        finally:
            ex.close()
        files = planner.write_outputs(result, out)
        emitted = emit is not None and result.best is not None
        if emitted:
            from dualsim.planfile import write_plan

            write_plan(planner.best_schedule(result), str(emit), planner.best_world(result))
        if as_json:
            d = result.to_json()
            d["files"] = files + ([str(emit)] if emitted else [])
            print_json(d)
        elif result.best is not None:  # (no empty table: the error below names plan.csv)
            _print(result, top)
            err_console.print(f"wrote {', '.join(files)}", markup=False)
        if emitted:
            err_console.print(f"best plan written to {emit}: simulate it with `dualsim simulate "
                              f"{emit}`, run it with `dualsim run {emit}`", markup=False)
        if result.best is None:
            raise DualsimError(f"none of the {result.evaluated} configurations survived "
                               f"({', '.join(result.dropped_by_kind())}); see {out}/plan.csv for each reason, "
                               "or raise --memory-gb / change the sweep")


def refuse_if_none_can_run(cands: list, setting: Setting, mdl: Model, layout: dict,
                           preset: list[str]) -> None:
    """Before any progress bar: when every configuration breaks the batch, its family's rules or
    the layout (e.g. dualpipe at R=7, --ep 7), one error line gives the real reasons."""
    from dualsim.planner.evaluate import check_rules
    from dualsim.workload.layout import check_parallel

    reasons: dict[str, None] = {}
    seen: dict[tuple, str] = {}  # (ranks, ep, tokens) -> why the layout cannot exist ("" if it can)
    for c in cands:
        try:
            c = check_rules(c, setting)
        except DualsimError as e:
            reasons[e.cli] = None
            continue
        key = (c.ranks, c.ep or layout["ep"], c.microbatch_tokens or layout["microbatch_tokens"])
        if key not in seen:
            try:
                check_parallel(mdl, key[0], key[1], setting.gpus, key[2], preset=preset)
                seen[key] = ""
            except DualsimError as e:
                seen[key] = e.cli
        if not seen[key]:
            return
        reasons[seen[key]] = None
    shown = list(reasons)[:3]
    more = f" (and {len(reasons) - 3} more reasons)" if len(reasons) > 3 else ""
    raise DualsimError(f"none of the {len(cands)} configurations can run: "
                       + "; ".join(shown) + more)


def _print(result: SweepResult, top: int) -> None:
    from rich.table import Table

    from dualsim.cli.common import out_console

    s = result.setting
    batch = f", global batch {s.global_batch}" if s.global_batch is not None else ""
    t = Table(title=f"{s.model} on {s.gpus} x {s.profile}{batch}, memory cap {s.memory_gb:g} GB: "
                    f"{len(result.ranked)} of {result.evaluated} configurations simulated "
                    f"({len(result.pruned)} pruned by their bound, {len(result.dropped)} dropped)")
    for col in ("#", "schedule", "R", "M", "EP", "tok/mb", "prec.", "comm SMs", "IB GB/s",
                "tok/s/GPU", "step (s)", "MFU", "bubble", "peak mem (GB)"):
        t.add_column(col, justify="left" if col == "schedule" else "right")
    ref = result.reference
    rows = [(i + 1, o) for i, o in enumerate(result.ranked[:top])]
    if ref is not None and ref.kept and all(o is not ref for _, o in rows):
        rows.append((result.rank_of(ref), ref))
    for i, o in rows:
        c, f = o.candidate, o.figures
        name = c.schedule + (" (published layout)" if o.reference else "")
        t.add_row(str(i), name, str(c.ranks), str(c.microbatches), str(f.get("ep", "")),
                  str(f.get("microbatch_tokens", "")), str(f.get("precision", "")),
                  str(c.comm_sms if c.comm_sms is not None else f.get("comm_sms_used", "")),
                  "default" if c.ib_gbps is None else f"{c.ib_gbps:g}",
                  f"{f['tokens_per_s_per_gpu']:.0f}", f"{f['step_time_s']:.3f}",
                  f"{f['mfu']:.1%}", f"{f['bubble_rate']:.1%}", f"{f['peak_memory_gb']:.1f}",
                  end_section=o is not ref and i == len(result.ranked[:top]))
    console = out_console()
    console.print(t)
    console.print(_versus_reference(result), markup=False)
    by_kind = result.dropped_by_kind()
    if by_kind:
        console.print("dropped: " + ", ".join(f"{n} ({k})" for k, n in by_kind.items())
                      + " - reasons per configuration in plan.csv", markup=False)


def _versus_reference(result: SweepResult) -> str:
    """One line: how the best compares with the published layout."""
    ref = result.reference
    if ref is None:
        return "published layout: none for this model"
    label = ref.candidate.describe()
    if not ref.kept:
        return f"published layout ({label}) not kept: {ref.reason}"
    ratio = result.best_vs_reference()
    tps = ref.figures["tokens_per_s_per_gpu"]
    if ratio is None or result.best is ref:
        return f"the best is the published layout ({label}, {tps:.0f} tokens/s/GPU)"
    return (f"best vs published layout ({label}, {tps:.0f} tokens/s/GPU, rank "
            f"{result.rank_of(ref)}): {ratio - 1:+.1%} tokens/s/GPU")
