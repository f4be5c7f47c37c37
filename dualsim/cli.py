"""The `dualsim` command line (typer): schedules, emit, check, simulate, compare, profiles, run, plan.

Every user mistake ends in one `error: ...` line on stderr and exit code 1 (2 for usage
errors), never a traceback. `--json` output goes alone to stdout; progress goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from dualsim.commands.common import print_json, user_errors
from dualsim.commands import simulation as simcmd

app = typer.Typer(
    name="dualsim",
    help="Generate, simulate, compare and run pipeline-parallel schedules "
    "(GPipe, 1F1B, interleaved, ZB-H1/H2/V, DualPipe, DualPipeV).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RanksOpt = typer.Option(None, "--ranks", "-r", help="Pipeline ranks R (hardware mode: default from the model's layout).")
MbsOpt = typer.Option(None, "--microbatches", "-m", help="Micro-batches M per step.")
ChunksOpt = typer.Option(None, "--chunks", "-v", help="Stages per rank for interleaved (default 2).")
CostsOpt = typer.Option(None, "--costs", help="Abstract costs per rank-worth of layers, e.g. F=1,I=1,W=1[,B=2][,FB=3].")
CommOpt = typer.Option(0.0, "--comm", help="Abstract transfer latency added to every cross-rank dependency.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of a table.")
ProfileOpt = typer.Option(None, "--profile", help="Hardware profile name or TOML file (enables hardware mode).")
ModelOpt = typer.Option(None, "--model", help="Workload preset name or TOML file (enables hardware mode).")
EpOpt = typer.Option(None, "--ep", help="Expert-parallel degree.")
GpusOpt = typer.Option(None, "--gpus", help="Total GPUs (data parallel = gpus / ranks).")
CommSmsOpt = typer.Option(None, "--comm-sms", help="SMs reserved for communication kernels.")
TokensOpt = typer.Option(None, "--microbatch-tokens", help="Tokens per micro-batch.")
IbOpt = typer.Option(None, "--ib-gbps", help="Usable InfiniBand bandwidth per GPU, GB/s.")
NvOpt = typer.Option(None, "--nvlink-gbps", help="Usable NVLink bandwidth per GPU, GB/s.")


@app.command("schedules")
def schedules_cmd(as_json: bool = JsonOpt) -> None:
    """List the schedule families, their parameters and legal ranges."""
    from dualsim.generators import FAMILIES

    rows = [
        {"name": f.name, "summary": f.summary, "rules": f.rules,
         "parameters": ["ranks", "microbatches"] + (["chunks"] if f.takes_chunks else [])}
        for f in FAMILIES.values()
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    from dualsim.commands.common import out_console

    t = Table(title="dualsim schedule families")
    for col in ("name", "what it is", "parameters", "legal range"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["summary"], ", ".join(r["parameters"]), r["rules"])
    out_console().print(t)


@app.command("emit")
def emit_cmd(
    schedule: str = typer.Argument(..., help="Schedule family (see `dualsim schedules`)."),
    ranks: int = typer.Option(..., "--ranks", "-r", help="Pipeline ranks R."),
    microbatches: int = typer.Option(..., "--microbatches", "-m", help="Micro-batches M."),
    chunks: Optional[int] = ChunksOpt,
    output: str = typer.Option("-", "--output", "-o", help="Output file, or - for stdout."),
    fmt: str = typer.Option("json", "--format", help="json (dualsim plan, version 1) or torch-csv."),
) -> None:
    """Write a schedule as an executable plan (validated and lowered with SEND/RECV)."""
    with user_errors():
        from dualsim.errors import DualsimError
        from dualsim.generators import generate

        if fmt not in ("json", "torch-csv"):
            raise DualsimError(f"unknown --format {fmt!r}: use json or torch-csv")
        s = generate(schedule, ranks, microbatches, chunks)
        if fmt == "json":
            from dualsim.planfile import write_plan

            write_plan(s, output)
        else:
            from dualsim.io import write_atomic
            from dualsim.torch_csv import to_torch_csv

            text = to_torch_csv(s)
            if output == "-":
                typer.echo(text, nl=False)
            else:
                write_atomic(output, text)


@app.command("check")
def check_cmd(
    plan: Path = typer.Argument(..., help="Plan file (JSON) to validate."),
    as_json: bool = JsonOpt,
) -> None:
    """Validate a plan file: exit 0 if it is valid, else 1 with the error and the marked grid."""
    with user_errors():
        from dualsim.planfile import read_plan

        s = read_plan(str(plan))
        n = sum(len(r) for r in s.actions)
        transfers = sum(1 for _, _, a in s.iter_actions() if a.op.is_transfer)
        info = {"plan": str(plan), "valid": True, "schedule": s.name, "ranks": s.ranks,
                "microbatches": s.microbatches, "stages": s.num_stages, "actions": n,
                "transfers": transfers}
        if as_json:
            print_json(info)
        else:
            typer.echo(f"ok: {plan} is a valid {s.name} plan: R={s.ranks}, M={s.microbatches}, "
                       f"{s.num_stages} stages, {n} actions ({transfers} transfers)")


@app.command("simulate")
def simulate_cmd(
    schedule: str = typer.Argument(..., help="Schedule family, or a plan file (.json)."),
    ranks: Optional[int] = RanksOpt,
    microbatches: Optional[int] = MbsOpt,
    chunks: Optional[int] = ChunksOpt,
    costs: Optional[str] = CostsOpt,
    comm: float = CommOpt,
    profile: Optional[str] = ProfileOpt,
    model: Optional[str] = ModelOpt,
    ep: Optional[int] = EpOpt,
    gpus: Optional[int] = GpusOpt,
    comm_sms: Optional[int] = CommSmsOpt,
    microbatch_tokens: Optional[int] = TokensOpt,
    ib_gbps: Optional[float] = IbOpt,
    nvlink_gbps: Optional[float] = NvOpt,
    as_json: bool = JsonOpt,
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write a Perfetto/Chrome trace (JSON)."),
    gantt: Optional[Path] = typer.Option(None, "--gantt", help="Write a Gantt chart (.png or .svg)."),
) -> None:
    """Simulate one schedule: abstract costs by default, a modelled cluster with --profile/--model."""
    with user_errors():
        if gantt is not None and gantt.suffix.lower() not in (".png", ".svg"):
            from dualsim.errors import DualsimError

            raise DualsimError(f"--gantt {str(gantt)!r}: the file name must end in .png or .svg")
        cfg = simcmd.Config.make(ranks, microbatches, chunks, costs, comm, profile, model, ep,
                                 gpus, comm_sms, microbatch_tokens, ib_gbps, nvlink_gbps)
        s = simcmd.load_schedule(schedule, cfg)
        if simcmd.is_plan_path(schedule):
            simcmd.check_plan_options(s, ranks, microbatches, chunks)
        r = simcmd.run(s, cfg)
        simcmd.print_warnings([(s.name, r)])
        if trace is not None:
            from dualsim.render.perfetto import write_trace

            write_trace(r.timeline, trace, time_unit=r.time_unit, schedule=s, memory=r.memory)
        if gantt is not None:
            from dualsim.render.gantt import render_gantt

            render_gantt(r.timeline, gantt, title=simcmd.title(s, cfg), time_unit=r.time_unit)
        if as_json:
            print_json(simcmd.result_json(r, s, cfg))
        else:
            simcmd.print_table([(s.name, r)], [], cfg)
            simcmd.print_per_rank(r)


@app.command("compare")
def compare_cmd(
    schedules: Optional[list[str]] = typer.Argument(None, help="Families to compare (default: all)."),
    ranks: Optional[int] = RanksOpt,
    microbatches: Optional[int] = MbsOpt,
    chunks: Optional[int] = ChunksOpt,
    costs: Optional[str] = CostsOpt,
    comm: float = CommOpt,
    profile: Optional[str] = ProfileOpt,
    model: Optional[str] = ModelOpt,
    ep: Optional[int] = EpOpt,
    gpus: Optional[int] = GpusOpt,
    comm_sms: Optional[int] = CommSmsOpt,
    microbatch_tokens: Optional[int] = TokensOpt,
    ib_gbps: Optional[float] = IbOpt,
    nvlink_gbps: Optional[float] = NvOpt,
    out: Path = typer.Option(Path("dualsim-compare"), "--out", "-o", help="Folder for the charts and report."),
    as_json: bool = JsonOpt,
) -> None:
    """Compare schedules at the same R, M and costs: a table, Gantt charts and a report folder."""
    with user_errors():
        if out.exists() and not out.is_dir():
            from dualsim.errors import DualsimError

            raise DualsimError(f"--out {str(out)!r} is a file; give a folder for the charts "
                               "and report")
        cfg = simcmd.Config.make(ranks, microbatches, chunks, costs, comm, profile, model, ep,
                                 gpus, comm_sms, microbatch_tokens, ib_gbps, nvlink_gbps)
        results, built, skipped = simcmd.compare(schedules or [], cfg)
        simcmd.print_warnings(results)
        written = simcmd.write_outputs(out, results, built, skipped, cfg)
        if as_json:
            print_json({
                "config": cfg.describe(),
                "results": [simcmd.result_json(r, built[n], cfg) for n, r in results],
                "skipped": [{"schedule": n, "reason": why} for n, why in skipped],
                "out": str(out),
                "files": written,
            })
        else:
            simcmd.print_table(results, skipped, cfg)
            typer.echo(f"charts and report written to {out}/", err=True)


def _register_module_commands() -> None:
    """Commands implemented in their own modules under dualsim/commands/."""
    from dualsim.commands.plan import plan_command
    from dualsim.commands.profiles import profiles_command
    from dualsim.commands.run import run_command

    app.command("profiles", help="List hardware profiles and workload presets.")(profiles_command)
    app.command("run", help="Execute a plan on torch.distributed (gloo here, NCCL under "
                "torchrun) and check it against a single-process reference.")(run_command)
    app.command("plan", help="Sweep schedules x ranks x micro-batches x comm SMs; rank by "
                "throughput.")(plan_command)


_register_module_commands()


def main() -> Any:
    """Console-script entry point."""
    return app()


if __name__ == "__main__":
    main()
