"""`dualsim schedules`, `dualsim emit` and `dualsim check`: the families, plans out, plans checked."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dualsim.cli.common import check_output, print_json, user_errors
from dualsim.cli.options import ChunksOpt, JsonOpt


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

    from dualsim.cli.common import out_console

    t = Table(title="dualsim schedule families")
    for col in ("name", "what it is", "parameters", "legal range"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["summary"], ", ".join(r["parameters"]), r["rules"])
    out_console().print(t)


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
        if output != "-":
            check_output("-o", Path(output), (".json",) if fmt == "json" else (".csv",))
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
