"""`dualsim run PLAN`: execute a plan on torch.distributed and check it against a reference.

Locally it spawns one process per rank (gloo by default); under torchrun (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT set) this process is one rank and rank 0 prints the result. The exit
code is 1 when the run fails or its gradients differ from the single-process reference.
torch is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from dualsim.cli.common import err_console, fail, print_json, user_errors
from dualsim.errors import DualsimError


def run_command(
    plan: Path = typer.Argument(..., metavar="PLAN", help="Plan file written by `dualsim emit`."),
    backend: str = typer.Option("gloo", "--backend", help="gloo (CPU) or nccl (GPU)."),
    steps: int = typer.Option(3, "--steps", min=1, help="Optimizer steps; times are medians."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write a Perfetto trace (.json)."),
    gantt: Optional[Path] = typer.Option(None, "--gantt", help="Write a Gantt chart (.png/.svg)."),
    compare_sim: bool = typer.Option(False, "--compare-sim",
                                     help="Simulate the plan on costs calibrated from this run."),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0,
                                  help="Seconds without progress before the run is stopped."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and data."),
    dtype: str = typer.Option("float64", "--dtype", help="float64, float32 (or bfloat16 on GPU)."),
    layers: Optional[int] = typer.Option(None, "--layers",
                                         help="Transformer layers (default: one per stage of a chain)."),
    hidden: int = typer.Option(32, "--hidden", min=1, help="Hidden size."),
    heads: int = typer.Option(2, "--heads", min=1, help="Attention heads."),
    experts: int = typer.Option(4, "--experts", min=1, help="Routed experts per MoE layer."),
    top_k: int = typer.Option(2, "--top-k", min=1, help="Experts per token."),
    expert_hidden: int = typer.Option(32, "--expert-hidden", min=1, help="Expert FFN width."),
    vocab: int = typer.Option(32, "--vocab", min=2, help="Vocabulary size."),
    seq: int = typer.Option(8, "--seq", min=1, help="Tokens per sequence."),
    microbatch_size: int = typer.Option(2, "--microbatch-size", min=1,
                                        help="Sequences per micro-batch."),
) -> None:
    """Execute PLAN and report loss, gradient error against the reference and step time."""
    with user_errors():
        for flag, path, kinds in (("--trace", trace, (".json",)),
                                  ("--gantt", gantt, (".png", ".svg"))):
            if path is not None and path.suffix.lower() not in kinds:
                raise DualsimError(f"{flag} {str(path)!r}: the file name must end in "
                                   f"{' or '.join(kinds)}")
        from dualsim.planfile import read_plan

        schedule = read_plan(str(plan))
        try:
            from dualsim.runtime.launcher import RunOptions
            from dualsim.runtime.session import model_config, run_plan
        except ImportError as e:
            raise fail(f"the runtime needs torch ({e}); install it with "
                       "`pip install 'dualsim[runtime]'`") from None
        cfg = model_config(schedule, layers, hidden=hidden, heads=heads, experts=experts,
                           top_k=top_k, expert_hidden=expert_hidden, vocab=vocab, seq=seq,
                           microbatch_size=microbatch_size, dtype=dtype, seed=seed)
        options = RunOptions(cfg, steps=steps, backend=backend, timeout=timeout)
        banner = f"running {schedule.name} on {schedule.ranks} ranks ({backend}), {steps} steps"
        outcome = run_plan(schedule, options, with_sim=compare_sim,
                           on_start=lambda: err_console.print(banner, markup=False))
        if outcome is None:  # a non-zero rank under torchrun: rank 0 reports
            return
        if trace is not None:
            from dualsim.render.perfetto import write_trace

            write_trace(outcome.timeline, str(trace), time_unit="s", schedule=schedule)
        if gantt is not None:
            from dualsim.render.gantt import render_gantt

            render_gantt(outcome.timeline, str(gantt), time_unit="s",
                         title=f"{schedule.name}: measured, R={schedule.ranks}, "
                               f"M={schedule.microbatches}")
        if json_out:
            print_json(outcome.result)
        else:
            _print_text(outcome.result)
        if not outcome.ok:
            raise fail("the run's gradients differ from the single-process reference "
                       f"(max abs {outcome.result['max_abs_grad_diff']:.3g}, max rel "
                       f"{outcome.result['max_rel_grad_diff']:.3g})")


def _print_text(r: dict[str, Any]) -> None:
    lines = [
        f"{r['schedule']}: {r['ranks']} ranks, {r['microbatches']} micro-batches, {r['dtype']}",
        f"loss {r['loss']:.12g} (reference {r['reference_loss']:.12g})",
        f"gradients vs reference: max abs diff {r['max_abs_grad_diff']:.3g}, "
        f"max rel diff {r['max_rel_grad_diff']:.3g} -> "
        f"{'match' if r['matches_reference'] else 'MISMATCH'}",
        f"weights after {r['steps']} steps: max abs diff {r['max_abs_weight_diff']:.3g}",
        f"step time (median of {r['steps']}): {r['step_time_s'] * 1e3:.2f} ms",
    ]
    if "predicted_step_time_s" in r:
        lines.append(f"simulated {r['predicted_step_time_s'] * 1e3:.2f} ms vs measured "
                     f"{r['measured_step_time_s'] * 1e3:.2f} ms: error "
                     f"{r['prediction_error'] * 100:+.1f}%")
        for p in r["per_rank_idle"]:
            lines.append(f"  rank {p['rank']}: idle predicted {p['predicted_idle_s'] * 1e3:.2f} ms,"
                         f" measured {p['measured_idle_s'] * 1e3:.2f} ms")
    typer.echo("\n".join(lines))
