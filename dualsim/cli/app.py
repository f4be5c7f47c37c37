"""The `dualsim` command line (typer): the app and its commands, one module per command group.

Every user mistake ends in one `error: ...` line on stderr and exit code 1 (2 for usage
errors), never a traceback. `--json` output goes alone to stdout; progress goes to stderr.
Commands live in this package: schedules.py (schedules, emit, check), simulate.py (simulate,
compare), profiles.py, run.py, plan.py, calibrate.py.
"""

from __future__ import annotations

from typing import Any

import typer

from dualsim.cli.calibrate import calibrate_command
from dualsim.cli.plan import plan_command
from dualsim.cli.profiles import profiles_command
from dualsim.cli.run import run_command
from dualsim.cli.schedules import check_cmd, emit_cmd, schedules_cmd
from dualsim.cli.simulate import compare_cmd, simulate_cmd

app = typer.Typer(
    name="dualsim",
    help="Generate, simulate, compare and run pipeline-parallel schedules "
    "(GPipe, 1F1B, interleaved, their F&B-overlap variants, ZB-H1/H2/V, DualPipe, DualPipeV).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

app.command("schedules")(schedules_cmd)
app.command("emit")(emit_cmd)
app.command("check")(check_cmd)
app.command("simulate")(simulate_cmd)
app.command("compare")(compare_cmd)
app.command("profiles", help="List hardware profiles and workload presets.")(profiles_command)
app.command("run", help="Execute a plan on torch.distributed (gloo here, NCCL under "
            "torchrun) and check it against a single-process reference.")(run_command)
app.command("calibrate")(calibrate_command)
app.command("plan", help="Sweep schedules x ranks x micro-batches x comm SMs; rank by "
            "throughput.")(plan_command)


def main() -> Any:
    """Console-script entry point."""
    return app()
