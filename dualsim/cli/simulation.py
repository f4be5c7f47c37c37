"""What `dualsim simulate` and `dualsim compare` do: resolve the config, run, tabulate, write.

Abstract mode (costs) is the default; naming a --profile or --model (or any hardware override)
switches to hardware mode, where R and M default to the model preset's published layout.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from dualsim.defaults import (ABSTRACT_MICROBATCHES, ABSTRACT_RANKS, DEFAULT_MODEL,
                              DEFAULT_PROFILE)
from dualsim.errors import DualsimError, PlanError, ProfileError, ScheduleError
from dualsim.ir import Schedule
from dualsim.sim.result import SimResult
from dualsim.world import World

if TYPE_CHECKING:
    from dualsim.cluster.profile import Profile
    from dualsim.workload.model import Model

MAX_WARNINGS = 3  # per schedule on stderr; --json carries them all


@dataclass
class Config:
    """One comparison's settings, shared by every schedule in it."""

    ranks: int | None
    microbatches: int | None
    chunks: int | None
    costs: dict[str, Any] = field(default_factory=dict)
    comm: float = 0.0
    hardware: dict[str, Any] | None = None  # profile, model and overrides; None = abstract
    global_batch: int | None = None  # --global-batch (sequences per step): it sets M
    # hardware mode: the profile (with the overrides) and the model preset, loaded once for
    # the simulations and the report
    profile: Profile | None = None
    model: Model | None = None
    # the plan file whose world gave values no flag gave, and those values (see world_errors)
    plan_path: str | None = None
    recorded: dict[str, Any] = field(default_factory=dict)

    def _batch(self, ranks: int) -> dict[str, Any]:
        """microbatches_for_global_batch's arguments for --global-batch at ``ranks`` ranks."""
        from dualsim.workload.model import default_layout, with_training

        assert self.hardware is not None and self.model is not None
        assert self.global_batch is not None
        d = default_layout(with_training(self.model, seq_len=self.hardware.get("seq_len")))
        return {"global_batch": self.global_batch, "sequence": d["sequence"],
                "microbatch_tokens": self.hardware.get("microbatch_tokens",
                                                       d["microbatch_tokens"]),
                "ranks": ranks, "gpus": self.hardware.get("gpus", d["gpus"]),
                "preset": () if "gpus" in self.hardware else ("gpus",)}

    def global_batch_microbatches(self, ranks: int) -> int:
        """M for --global-batch at ``ranks`` pipeline ranks, on this config's model and GPUs."""
        from dualsim.workload.layout import microbatches_for_global_batch

        return microbatches_for_global_batch(**self._batch(ranks))

    def generate(self, name: str, chunks: int | None) -> Schedule:
        """The family ``name`` at this config's R and M; with --global-batch, a broken rule on M
        names the global batches that would pass (M was not given)."""
        from dualsim.generators import accepts, generate
        from dualsim.workload.layout import global_batch_rule

        ranks, mbs = self.ranks, self.microbatches
        assert ranks is not None and mbs is not None
        try:
            return generate(name, ranks, mbs, chunks)
        except ScheduleError as e:
            if self.global_batch is None:
                raise
            raise global_batch_rule(e, lambda m: accepts(name, ranks, m, chunks),
                                    **self._batch(ranks)) from None

    @staticmethod
    def make(ranks: int | None, microbatches: int | None, chunks: int | None,
             costs: str | None, comm: float, profile: str | None, model: str | None,
             ep: int | None, gpus: int | None, comm_sms: int | None,
             microbatch_tokens: int | None, ib_gbps: float | None,
             nvlink_gbps: float | None, *, precision: str | None = None,
             global_batch: int | None = None, seq_len: int | None = None,
             recompute: str | None = None, world: World | None = None,
             routing_imbalance: float | None = None,
             sm_sharing: str | None = None, plan_path: str | None = None) -> "Config":
        """``world``: a plan file's (``plan_path``) recorded hardware world, used where no flag
        is given (the flags that override it are named in one note on stderr); ignored in
        abstract mode. An error about a value it gave names the plan, not a flag."""
        overrides = {"ep": ep, "gpus": gpus, "comm_sms": comm_sms,
                     "microbatch_tokens": microbatch_tokens, "ib_gbps": ib_gbps,
                     "nvlink_gbps": nvlink_gbps, "precision": precision, "seq_len": seq_len,
                     "recompute": recompute, "routing_imbalance": routing_imbalance,
                     "sm_sharing": sm_sharing}
        recorded: dict[str, Any] = {}
        if world is not None and costs is None and comm == 0:
            profile, model, recorded = _apply_world(world, profile, model, overrides)
        with world_errors(plan_path, recorded):
            cfg = Config._make(ranks, microbatches, chunks, costs, comm, profile, model,
                               overrides, global_batch, world)
        cfg.plan_path, cfg.recorded = plan_path, recorded
        return cfg

    @staticmethod
    def _make(ranks: int | None, microbatches: int | None, chunks: int | None,
              costs: str | None, comm: float, profile: str | None, model: str | None,
              overrides: dict[str, Any], global_batch: int | None,
              world: World | None) -> "Config":
        precision = overrides["precision"]
        if world is not None and (costs is not None or comm != 0):
            from dualsim.cli.common import err_console

            err_console.print("note: --costs/--comm simulate the plan in abstract mode; its "
                              f"recorded world ({world.profile} / {world.model}) is not used",
                              markup=False)
        hw_asked = profile is not None or model is not None or global_batch is not None or any(
            v is not None for v in overrides.values())
        if precision is not None:  # refused before any simulation starts
            from dualsim.cluster.compute import check_precision

            check_precision(precision)
        if global_batch is not None and microbatches is not None:
            raise DualsimError("--global-batch and --microbatches both set the micro-batches; "
                               "give one of them")
        if comm < 0:
            raise DualsimError(f"--comm must be >= 0, got {comm:g}")
        for flag, value in (("--ranks", ranks), ("--microbatches", microbatches)):
            if value is not None and value < 1:  # 0 must not fall back to the default
                raise DualsimError(f"{flag} must be at least 1, got {value}")
        if hw_asked:
            if costs is not None:
                raise DualsimError("--costs is for abstract mode; drop it, or drop "
                                   "--profile/--model and the hardware overrides")
            if comm != 0:  # hardware mode times transfers from the links; --comm would be ignored
                raise DualsimError("--comm is for abstract mode (hardware mode times transfers "
                                   "from --ib-gbps/--nvlink-gbps); drop it, or drop "
                                   "--profile/--model and the hardware overrides")
            from dualsim.cluster.profile import load_profile
            from dualsim.workload.model import default_layout, load_model

            m = load_model(model or DEFAULT_MODEL)
            layout = default_layout(m)
            hw = {"profile": profile or DEFAULT_PROFILE, "model": model or DEFAULT_MODEL}
            hw.update({k: v for k, v in overrides.items() if v is not None})
            prof = load_profile(profile or DEFAULT_PROFILE).with_overrides(
                comm_sms=overrides["comm_sms"], ib_gbps=overrides["ib_gbps"],
                nvlink_gbps=overrides["nvlink_gbps"])
            cfg = Config(_given(ranks, layout["ranks"]),
                         _given(microbatches, layout["microbatches"]), chunks, {}, comm, hw,
                         global_batch, prof, m)
            if global_batch is not None:
                assert cfg.ranks is not None
                cfg.microbatches = cfg.global_batch_microbatches(cfg.ranks)
            return cfg
        from dualsim.sim.abstract import parse_costs

        parsed = parse_costs(costs) if costs is not None else {"F": 1, "I": 1, "W": 1}
        return Config(_given(ranks, ABSTRACT_RANKS), _given(microbatches, ABSTRACT_MICROBATCHES),
                      chunks, parsed, comm, None)

    @property
    def mode(self) -> str:
        return "abstract" if self.hardware is None else "hardware"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "ranks": self.ranks,
                             "microbatches": self.microbatches}
        if self.chunks is not None:
            d["chunks"] = self.chunks
        if self.hardware is None:
            d["costs"] = {k: _plain(v) for k, v in self.costs.items()}
            d["comm"] = self.comm
        else:
            d.update(self.hardware)
            if self.global_batch is not None:
                d["global_batch"] = self.global_batch
        return d


def _apply_world(world: World, profile: str | None, model: str | None,
                 overrides: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Fill ``overrides`` (in place) and the profile and model from a plan's world where no flag
    was given, and return them with the recorded values so used; one note on stderr names the
    flags that replace a recorded value."""
    from dualsim.cli.common import err_console

    recorded = world.to_dict()
    given = dict(overrides, profile=profile, model=model)
    changed = [f"--{k.replace('_', '-')} {v} (recorded {recorded[k]})"
               for k, v in given.items() if v is not None and k in recorded and v != recorded[k]]
    if changed:
        err_console.print("note: the command line overrides the plan's recorded world: "
                          + ", ".join(changed), markup=False)
    used = {k: v for k, v in recorded.items() if given.get(k) is None}
    for k in overrides:
        if overrides[k] is None:
            overrides[k] = recorded.get(k)
    return profile or world.profile, model or world.model, used


@contextlib.contextmanager
def world_errors(plan: str | None, recorded: dict[str, Any]) -> Iterator[None]:
    """An error about a value that the plan file ``plan``'s world gave (``recorded``: no flag
    gave it) says so and how to fix the plan, rather than naming a flag never passed."""
    try:
        yield
    except DualsimError as e:
        blamed = _blame_world(e, plan, recorded) if plan and recorded else None
        if blamed is None:
            raise
        raise blamed from None


def _blame_world(e: DualsimError, plan: str, recorded: dict[str, Any]) -> DualsimError | None:
    """``e`` in the words of the plan's world when it is about one of its ``recorded`` values:
    the message names its flag first (``--gpus 3 is not ...``), or (profile, model) quotes it."""
    text = e.cli
    for key, value in recorded.items():
        flag = "--" + key.replace("_", "-")
        said = f"plan {plan} records {key}={json.dumps(value)} in its world"
        fix = f"re-emit the plan for a world that fits, or override it with {flag}"
        if text.startswith((f"{flag} ", f"{flag}:")):
            rest = text[len(flag):].lstrip(":").lstrip()
            rest = rest.removeprefix(f"{value} ") if not isinstance(value, float) else rest
            head, _, hint = rest.partition("; ")
            # keep the hint's clauses that the override can follow (not e.g. "other --ranks")
            hint = ", or ".join(c for c in hint.split(", or ")
                                if set(re.findall(r"--[a-z-]+", c)) <= {flag})
            join = ", which " if head.startswith(("is ", "does ", "must ")) else ": "
            return type(e)(f"{said}{join}{head}; {fix}" + (f": {hint}" if hint else ""))
        if key in ("profile", "model") and isinstance(e, ProfileError) and repr(value) in text:
            return type(e)(f"{said}: {text}; {fix}")
    return None


def _given(value: int | None, default: int) -> int:
    """The user's value when given (even a falsy one), else the default."""
    return default if value is None else value


def _plain(v: Any) -> Any:
    f = float(v)
    return int(f) if f.is_integer() else f


def is_plan_path(name_or_plan: str) -> bool:
    """Whether a SCHEDULE argument names a plan file rather than a family."""
    return name_or_plan.endswith(".json") or Path(name_or_plan).is_file()


def load_schedule(name_or_plan: str, cfg: Config, *, strict_chunks: bool = True,
                  plan: Schedule | None = None) -> Schedule:
    """A family name generates a schedule; a path to a plan file reads (and validates) it
    (``plan``: that file already read).

    With ``strict_chunks`` a --chunks given to a family that takes none is an error (simulate);
    without, it only applies to the families that take chunks (compare).
    """
    if is_plan_path(name_or_plan):
        from dualsim.planfile import read_plan

        s = plan if plan is not None else read_plan(name_or_plan)
        if cfg.global_batch is not None:
            want = cfg.global_batch_microbatches(s.ranks)
            if want != s.microbatches:
                raise DualsimError(
                    f"--global-batch {cfg.global_batch} gives M={want} micro-batches per "
                    f"pipeline at R={s.ranks}, but the plan file has M={s.microbatches}; drop "
                    "--global-batch (a plan fixes M)")
        cfg.ranks, cfg.microbatches = s.ranks, s.microbatches
        return s
    from dualsim.generators import FAMILIES

    family = FAMILIES.get(name_or_plan)
    chunks = cfg.chunks if strict_chunks or (family and family.takes_chunks) else None
    return cfg.generate(name_or_plan, chunks)


def check_plan_options(s: Schedule, ranks: int | None, microbatches: int | None,
                       chunks: int | None) -> None:
    """A plan file fixes R, M and v: options that disagree with it are an error, not ignored."""
    for flag, given, actual in (("--ranks", ranks, s.ranks),
                                ("--microbatches", microbatches, s.microbatches),
                                ("--chunks", chunks, s.chunks)):
        if given is not None and given != actual:
            raise DualsimError(f"{flag} {given} disagrees with the plan file, which has "
                               f"{flag.lstrip('-')}={actual}; drop {flag} (a plan fixes it)")


#: world keys that, given by a flag instead, change the sequences a plan's step holds
GLOBAL_BATCH_INPUTS = ("gpus", "microbatch_tokens", "seq_len", "model")


def check_recorded_global_batch(r: SimResult, s: Schedule, cfg: Config) -> None:
    """A plan's recorded ``global_batch`` must be the sequences its step holds (M micro-batches
    on every pipeline), unless a flag changed what that depends on: a hand-edited or tampered
    value would otherwise be carried along, believed and never used."""
    recorded = cfg.recorded.get("global_batch")
    if recorded is None or cfg.hardware is None or any(
            k in cfg.hardware and k not in cfg.recorded for k in GLOBAL_BATCH_INPUTS):
        return  # nothing recorded, abstract mode, or a flag changed the batch on purpose
    held = r.extra.get("global_batch")
    if held is not None and held != recorded:
        raise PlanError(f"plan {cfg.plan_path} records global_batch={recorded} in its world, "
                        f"but its {s.microbatches} micro-batches on every pipeline hold {held} "
                        "sequences per step; re-emit the plan with `dualsim plan --emit`, or "
                        "delete world.global_batch")


def run(s: Schedule, cfg: Config) -> SimResult:
    if cfg.hardware is None:
        from dualsim.sim.abstract import simulate

        return simulate(s, costs=cfg.costs, comm=cfg.comm)
    from dualsim.sim.hardware_mode import simulate_hardware

    hw = dict(cfg.hardware)
    del hw["profile"], hw["model"]  # loaded once (Config.make); the overrides apply again as-is
    with world_errors(cfg.plan_path, cfg.recorded):
        return simulate_hardware(s, cfg.profile or cfg.hardware["profile"],
                                 cfg.model or cfg.hardware["model"], **hw)


def compare(names: list[str], cfg: Config) -> tuple[list[tuple[str, SimResult]],
                                                     dict[str, Schedule], list[tuple[str, str]]]:
    """Simulate each family; an unknown name is an error, an illegal (R, M) a skip."""
    from dualsim.generators import FAMILIES

    wanted = list(dict.fromkeys(names)) or list(FAMILIES)
    unknown = [n for n in wanted if n not in FAMILIES]
    if unknown:
        raise ScheduleError(f"unknown schedule {unknown[0]!r}: choose from "
                            f"{', '.join(FAMILIES)} (see `dualsim schedules`)")
    from dualsim.cli.common import progress

    results: list[tuple[str, SimResult]] = []
    built: dict[str, Schedule] = {}
    skipped: list[tuple[str, str]] = []
    for name in wanted:  # every refusal before the progress bar starts
        try:
            built[name] = load_schedule(name, cfg, strict_chunks=False)
        except ScheduleError as e:
            skipped.append((name, e.cli))
    if not built:
        raise ScheduleError(
            f"no schedule is legal at R={cfg.ranks}, M={cfg.microbatches}: "
            + "; ".join(f"{n}: {why}" for n, why in skipped))
    with progress() as bar:
        task = bar.add_task("simulating", total=len(built))
        for name, s in built.items():
            bar.update(task, description=f"simulating {name}")
            results.append((name, run(s, cfg)))
            bar.advance(task)
    return results, built, skipped


def title(s: Schedule, cfg: Config) -> str:
    extra = f", v={s.chunks}" if s.chunks else ""
    if cfg.hardware is None:
        return f"{s.name}  R={s.ranks}, M={s.microbatches}{extra} (abstract)"
    return (f"{s.name}  R={s.ranks}, M={s.microbatches}{extra} on "
            f"{cfg.hardware['profile']} / {cfg.hardware['model']}")


def result_json(r: SimResult, s: Schedule, cfg: Config) -> dict[str, Any]:
    d = r.to_dict()
    if s.chunks is not None:
        d["chunks"] = s.chunks
    d["mode"] = cfg.mode
    return d


def print_table(results: list[tuple[str, SimResult]], skipped: list[tuple[str, str]],
                cfg: Config) -> None:
    """The comparison table on stdout (rich), skipped families listed with their rule."""
    from rich.table import Table

    from dualsim.cli.common import out_console

    hw = cfg.hardware is not None
    unit = results[0][1].time_unit if results else ""
    t = Table(title=_table_title(cfg))
    cols = ["schedule", "stages", f"makespan ({unit})", f"span ({unit})", "bubble", "span bubble",
            "max idle", "peak act."]
    if hw:
        cols += ["step (s)", "tok/s/GPU", "MFU", "peak mem (GB)"]
    for c in cols:
        t.add_column(c, justify="left" if c == "schedule" else "right")
    for name, r in results:
        row = [name, str(r.stages), _fmt(r.makespan), _fmt(r.span), f"{float(r.bubble_rate):.1%}",
               f"{float(r.span_bubble_rate):.1%}", _fmt(max(p.idle for p in r.per_rank)),
               str(max(p.peak_activations for p in r.per_rank))]
        if hw:
            e = r.extra
            row += [f"{e['step_time_s']:.3f}", f"{e['tokens_per_s_per_gpu']:.0f}",
                    f"{e['mfu']:.1%}", f"{e['peak_memory_gb']:.1f}"]
        t.add_row(*row)
    console = out_console()
    console.print(t)
    for name, why in skipped:
        console.print(f"skipped {name}: {why}", markup=False)


def print_warnings(results: list[tuple[str, SimResult]]) -> None:
    """Hardware-mode warnings (a rank over HBM, no FP8, ...) as 'warning: ...' lines on stderr."""
    from dualsim.cli.common import err_console

    for name, r in results:
        warnings = r.extra.get("warnings") or []
        for w in warnings[:MAX_WARNINGS]:
            err_console.print(f"warning: {name}: {w}", markup=False)
        if len(warnings) > MAX_WARNINGS:
            err_console.print(f"warning: {name}: ... and {len(warnings) - MAX_WARNINGS} more "
                              "(all in --json's \"warnings\")", markup=False)


def print_per_rank(r: SimResult) -> None:
    from rich.table import Table

    from dualsim.cli.common import out_console

    t = Table(title=f"per rank ({r.time_unit})")
    cols = ["rank", "busy", "idle", "first start", "last end", "peak act."]
    mem = r.per_rank and r.per_rank[0].peak_memory_gb is not None
    if mem:
        cols.append("peak mem (GB)")
    for c in cols:
        t.add_column(c, justify="right")
    for p in r.per_rank:
        row = [str(p.rank), _fmt(p.busy), _fmt(p.idle), _fmt(p.first_start), _fmt(p.last_end),
               str(p.peak_activations)]
        if mem:
            row.append(f"{p.peak_memory_gb:.1f}")
        t.add_row(*row)
    out_console().print(t)


def _table_title(cfg: Config) -> str:
    if cfg.hardware is None:
        c = ", ".join(f"{k}={_plain(v)}" for k, v in cfg.costs.items())
        return f"R={cfg.ranks}, M={cfg.microbatches}, costs {c}, comm={cfg.comm:g} (abstract)"
    hw = cfg.hardware
    extra = ", ".join(f"{k}={v}" for k, v in hw.items() if k not in ("profile", "model"))
    return (f"{hw['model']} on {hw['profile']}: R={cfg.ranks}, M={cfg.microbatches}"
            + (f", {extra}" if extra else ""))


def _fmt(v: Any) -> str:
    f = float(v)
    if f.is_integer():
        return str(int(f))
    return f"{f:.4g}" if abs(f) < 1 else f"{f:.4f}".rstrip("0").rstrip(".")


def check_report_folder(out: Path) -> None:
    """Before any work: ``--out`` must be new, empty, or a report folder dualsim wrote (which
    is then replaced as a whole); never a file, a folder holding other files, or the current
    folder (or one above it)."""
    from dualsim.errors import clip
    from dualsim.render.report import foreign_files

    if out.exists() and not out.is_dir():
        raise DualsimError(f"--out {str(out)!r} is a file; give a folder for the charts "
                           "and report")
    if out.is_symlink():
        raise DualsimError(f"--out {str(out)!r} is a symbolic link; give the folder itself "
                           "(the report replaces it as a whole)")
    if not out.exists():
        return
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        raise DualsimError(f"--out {str(out)!r} is the current folder or holds it; give a "
                           "folder of its own for the report (it is replaced as a whole)")
    foreign = foreign_files(out)
    if foreign:
        raise DualsimError(f"--out {str(out)!r} holds files dualsim did not write "
                           f"({clip(', '.join(foreign[:3]), 80)}"
                           f"{', ...' if len(foreign) > 3 else ''}); the report replaces its "
                           "folder as a whole: give a new or empty folder, or a previous "
                           "report folder")


def write_outputs(out: Path, results: list[tuple[str, SimResult]], built: dict[str, Schedule],
                  skipped: list[tuple[str, str]], cfg: Config) -> list[str]:
    """The report folder (report.md, Gantt PNG/SVG per schedule and combined, traces, ...),
    written into a temporary folder that then replaces ``out`` as a whole: a report folder
    holds exactly one report (see check_report_folder)."""
    from dualsim.cli.common import progress
    from dualsim.io import replace_folder
    from dualsim.render.report import write_report

    check_report_folder(out)  # again: it may have changed while simulating
    with progress() as bar:
        task = bar.add_task(f"writing charts and traces to {out}", total=None)
        replace_folder(out, lambda tmp: write_report(
            tmp, results, schedules=built, config=cfg.describe(), skipped=skipped,
            profile=cfg.profile, model=cfg.model, progress=lambda: bar.advance(task)))
        bar.update(task, total=bar.tasks[0].completed)
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
