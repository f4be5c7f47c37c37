"""`dualsim calibrate TRACE`: a profile fitted to a GPU trace, or abstract costs from a run.

A trace written by `dualsim run --profile-trace` (it carries its plan) gives per-stage abstract
costs for `dualsim simulate --costs ... --comm ...`. Any other PyTorch profiler trace with piece
ranges (attn(F), dispatch(B), ...) fits the hardware profile's parameters (dualsim/calibrate/):
two tables, `fitted` and `predicted` (rows held out of the fit), and with -o a complete profile
TOML usable wherever --profile is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dualsim.cli.common import check_output, out_console, print_json, user_errors
from dualsim.defaults import DEFAULT_MODEL, DEFAULT_PROFILE
from dualsim.errors import DualsimError


def calibrate_command(
    trace: Path = typer.Argument(..., help="PyTorch profiler trace (Chrome trace JSON, "
                                 ".json or .json.gz)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Hardware profile to fit "
                                          f"(name or TOML file); default {DEFAULT_PROFILE}."),
    model: Optional[str] = typer.Option(None, "--model", help="The traced model: preset name, "
                                        "TOML file or Hugging Face config.json; default "
                                        f"{DEFAULT_MODEL}."),
    ep: Optional[int] = typer.Option(None, "--ep", help="EP degree of the traced job "
                                     "(default: the model's layout)."),
    microbatch_tokens: Optional[int] = typer.Option(None, "--microbatch-tokens", help="Tokens "
                                                    "per micro-batch in the traced job "
                                                    "(default: the model's layout)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the fitted profile "
                                       "here (.toml)."),
    hold_out: Optional[str] = typer.Option(None, "--hold-out", help="Rows held out of the fit "
                                           "and predicted, comma-separated (default: "
                                           "attn_other_i, mlp_other_i, attn_gemm_w and the "
                                           "backward all-to-alls; rows no fitted field depends "
                                           "on are predicted anyway)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout "
                                 "instead of tables."),
) -> None:
    """Calibrate from a PyTorch profiler trace: fit a hardware profile to a GPU trace (fitted and
    held-out rows), or abstract per-stage costs from a `dualsim run --profile-trace` trace."""
    with user_errors():
        check_output("-o", out, (".toml",))
        from dualsim.calibrate.runtime_trace import is_runtime_trace
        from dualsim.calibrate.trace import read_trace

        t = read_trace(trace)
        if is_runtime_trace(t):
            given = [f for f, v in (("--profile", profile), ("--model", model), ("--ep", ep),
                                    ("--microbatch-tokens", microbatch_tokens), ("-o", out),
                                    ("--hold-out", hold_out)) if v is not None]
            if given:
                raise DualsimError(f"{given[0]} is for GPU traces with piece ranges; {trace} is "
                                   "a `dualsim run --profile-trace` trace, which calibrates "
                                   "abstract costs: drop it")
            _runtime(t, as_json)
            return
        _hardware(t, profile, model, ep, microbatch_tokens, out, hold_out, as_json)


def _hold_out(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise DualsimError("--hold-out was given no row names; leave it out for the default "
                           "(or name rows, e.g. --hold-out attn_other_i,mlp_other_i)")
    return list(dict.fromkeys(names))


def _hardware(t, profile: Optional[str], model: Optional[str], ep: Optional[int],
              tokens: Optional[int], out: Optional[Path], hold_out: Optional[str],
              as_json: bool) -> None:
    from dualsim.calibrate.hardware_fit import calibrate_profile

    for flag, v in (("--ep", ep), ("--microbatch-tokens", tokens)):
        if v is not None and v < 1:
            raise DualsimError(f"{flag} must be a positive integer, got {v}")
    cal = calibrate_profile(t, profile or DEFAULT_PROFILE, model or DEFAULT_MODEL, ep=ep,
                            tokens=tokens, hold_out=_hold_out(hold_out),
                            name=out.stem if out is not None else None)
    if out is not None:
        from dualsim.io import write_atomic

        write_atomic(out, cal.text)
    if as_json:
        print_json(cal.as_json(str(out) if out is not None else None))
        return
    from rich.table import Table

    console = out_console()
    r = cal.result
    for title, rows in (("fitted (rows that set the parameters)", r.fitted),
                        ("predicted (rows held out of the fit)", r.predicted)):
        tab = Table(title=f"{title}: per MoE layer, one micro-batch")
        for col in ("name", "measured ms", "model ms", "error", "kernels"):
            tab.add_column(col)
        for row in rows:
            tab.add_row(row.name, f"{row.measured_ms:.3f}", f"{row.model_ms:.3f}",
                        f"{row.error:+.1%}", row.what)
        console.print(tab)
    if r.unmodelled:
        console.print("measured but not in the cost model: " + ", ".join(
            f"{row.name} {row.measured_ms:.3f} ms" for row in r.unmodelled))
    tab = Table(title=f"fitted parameters of {cal.profile}")
    for col in ("parameter", "value", "was", "unit", "fitted rows"):
        tab.add_column(col)
    for p in r.params:
        tab.add_row(p.key, f"{p.value:g}", f"{p.previous:g}", p.unit, ", ".join(p.rows))
    console.print(tab)
    if out is not None:
        console.print(f"profile written to {out} (use it as --profile {out})")


def _runtime(t, as_json: bool) -> None:
    from dualsim.calibrate.runtime_trace import calibrate_costs

    sc = calibrate_costs(t)
    if as_json:
        print_json(sc.as_json())
        return
    from rich.table import Table

    console = out_console()
    tab = Table(title=f"{sc.plan.name} R={sc.plan.ranks} M={sc.plan.microbatches}: mean "
                f"action time per stage (ms), {sc.steps} step(s)")
    ops = [op for op in ("F", "I", "W", "B", "FB") if any(op in row for row in sc.per_stage)]
    for col in ("stage", "rank", *ops):
        tab.add_column(col)
    for row in sc.per_stage:
        tab.add_row(str(row["stage"]), str(row["rank"]),
                    *(f"{row[op] * 1e3:.3f}" if op in row else "-" for op in ops))
    console.print(tab)
    console.print("abstract costs per rank-worth of layers (ms): "
                  + ", ".join(f"{k}={v * 1e3:.4g}" for k, v in sc.costs.items())
                  + f"; transfer latency {sc.latency * 1e3:.4g} ms")
    console.print(f"dualsim simulate {sc.plan.name} -r {sc.plan.ranks} -m "
                  f"{sc.plan.microbatches} {sc.simulate_args()}")
