"""`dualsim run PLAN`: execute a plan on torch.distributed and check it against a reference.

Locally it spawns ranks x ``--ep`` processes (gloo on the CPU; ``--device cuda``: NCCL with one
GPU per process, or gloo through host memory when processes share GPUs); under torchrun
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) this process is one of them and process 0
prints the result. The exit code is 1 when the run fails or its gradients differ from the
single-process reference. torch is imported only when the command runs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import typer

from dualsim.cli.common import check_output, err_console, fail, print_json, user_errors
from dualsim.errors import DualsimError
from dualsim.io import write_atomic

MAX_TIMEOUT_S = 7 * 24 * 3600.0


def run_command(
    plan: Path = typer.Argument(..., metavar="PLAN", help="Plan file written by `dualsim emit`."),
    ep: int = typer.Option(1, "--ep", min=1,
                           help="Expert-parallel processes per pipeline rank (experts split "
                                "over them; tokens move by all-to-all)."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda (one GPU per process "
                                                       "from LOCAL_RANK, shared round-robin "
                                                       "when there are fewer)."),
    backend: Optional[str] = typer.Option(None, "--backend",
                                          help="Force gloo or nccl (default: gloo on the CPU; "
                                               "on GPUs nccl when each process has its own)."),
    steps: int = typer.Option(3, "--steps", min=1, help="Optimizer steps; times are medians."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write a Perfetto trace (.json)."),
    gantt: Optional[Path] = typer.Option(None, "--gantt", help="Write a Gantt chart (.png/.svg)."),
    profile_trace: Optional[Path] = typer.Option(
        None, "--profile-trace",
        help="Record the last step with torch.profiler, every process in one Chrome trace "
             "(.json), one range per action and per piece."),
    compare_sim: bool = typer.Option(False, "--compare-sim",
                                     help="Simulate the plan on costs calibrated from this run."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration",
        help="With --compare-sim: take the costs from another run (its `run --compare-sim "
             "--json` output, or its --profile-trace) instead: one run predicts another."),
    timeout: float = typer.Option(60.0, "--timeout",
                                  help="Seconds without progress (or a process stopped) before "
                                       "the run is stopped; also the start-up's allowance."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and data."),
    dtype: str = typer.Option("float64", "--dtype", help="float64, float32 (or bfloat16 on GPU)."),
    layers: Optional[int] = typer.Option(None, "--layers",
                                         help="Transformer layers (default: one per stage of a chain)."),
    hidden: int = typer.Option(32, "--hidden", min=1, help="Hidden size."),
    heads: int = typer.Option(2, "--heads", min=1, help="Attention heads."),
    experts: int = typer.Option(4, "--experts", min=1, help="Routed experts per MoE layer."),
    top_k: int = typer.Option(2, "--top-k", min=1, help="Experts per token."),
    capacity_factor: Optional[float] = typer.Option(
        None, "--capacity-factor",
        help="Each expert keeps at most ceil(factor x tokens x top-k / experts) copies of one "
             "process's tokens (default: dropless)."),
    expert_hidden: int = typer.Option(32, "--expert-hidden", min=1, help="Expert FFN width."),
    vocab: int = typer.Option(32, "--vocab", min=2, help="Vocabulary size."),
    seq: int = typer.Option(8, "--seq", min=1, help="Tokens per sequence."),
    microbatch_size: int = typer.Option(2, "--microbatch-size", min=1,
                                        help="Sequences per micro-batch (per process)."),
) -> None:
    """Execute PLAN and report loss, gradient error against the reference and step time."""
    with user_errors():
        if not (math.isfinite(timeout) and 1 <= timeout <= MAX_TIMEOUT_S):
            raise DualsimError(f"--timeout {timeout:g}: give a number of seconds from 1 to "
                               f"{MAX_TIMEOUT_S:g} (a week)")
        check_output("--trace", trace, (".json",))
        check_output("--gantt", gantt, (".png", ".svg"))
        check_output("--profile-trace", profile_trace, (".json",))
        if calibration is not None and not compare_sim:
            raise DualsimError("--calibration is read by --compare-sim: add --compare-sim")
        from dualsim.planfile import read_plan

        schedule = read_plan(str(plan))
        try:
            from dualsim.runtime.options import RunOptions
            from dualsim.runtime.session import (choose_backend, model_config, read_calibration,
                                                 run_plan)
        except ImportError as e:
            raise fail(f"the runtime needs torch ({e}); install it with "
                       "`pip install 'dualsim[runtime]'`") from None
        cfg = model_config(schedule, layers, hidden=hidden, heads=heads, experts=experts,
                           top_k=top_k, expert_hidden=expert_hidden, vocab=vocab, seq=seq,
                           microbatch_size=microbatch_size, dtype=dtype, seed=seed,
                           capacity_factor=capacity_factor)
        device, backend = choose_backend(device, backend, schedule.ranks * ep)
        other = read_calibration(str(calibration), schedule, ep) if calibration else None
        options = RunOptions(cfg, steps=steps, backend=backend, device=device, ep=ep,
                             timeout=timeout, profile_trace=profile_trace is not None)
        procs = f"{schedule.ranks} ranks" + (f" x {ep} expert-parallel" if ep > 1 else "")
        banner = f"running {schedule.name} on {procs} ({device}, {backend}), {steps} steps"
        first = os.environ.get("RANK", "0") == "0"  # under torchrun, process 0 speaks
        outcome = run_plan(schedule, options, with_sim=compare_sim,
                           on_start=lambda: first and err_console.print(banner, markup=False),
                           calibration=other)
        if outcome is None:  # a non-zero process under torchrun: process 0 reports
            return
        if trace is not None:
            from dualsim.render.perfetto import write_trace

            write_trace(outcome.timeline, str(trace), time_unit="s", schedule=schedule)
        if gantt is not None:
            from dualsim.render.gantt import render_gantt

            who = f", ep {ep} (process 0 of each rank shown)" if ep > 1 else ""
            render_gantt(outcome.timeline, str(gantt), time_unit="s",
                         title=f"{schedule.name}: measured, R={schedule.ranks}, "
                               f"M={schedule.microbatches}{who}")
        if profile_trace is not None and outcome.trace is not None:
            from dualsim.io import dumps_json

            write_atomic(profile_trace, dumps_json(outcome.trace))
        if json_out:
            print_json(outcome.result)
        else:
            _print_text(outcome.result)
        if not outcome.ok:
            raise fail("the run's gradients differ from the single-process reference "
                       f"(max abs {outcome.result['max_abs_grad_diff']:.3g}, max rel "
                       f"{outcome.result['max_rel_grad_diff']:.3g})")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _print_text(r: dict[str, Any]) -> None:
    procs = f"{r['ranks']} ranks" + (f" x {r['ep']} expert-parallel" if r["ep"] > 1 else "")
    measured = max(1, r["steps"] - 1)
    lines = [
        f"{r['schedule']}: {procs}, {r['microbatches']} micro-batches, {r['dtype']}",
        f"loss {r['loss']:.12g} (reference {r['reference_loss']:.12g})",
        f"gradients vs reference: max abs diff {r['max_abs_grad_diff']:.3g}, "
        f"max rel diff {r['max_rel_grad_diff']:.3g} -> "
        f"{'match' if r['matches_reference'] else 'MISMATCH'}",
        f"weights after {r['steps']} steps: max abs diff {r['max_abs_weight_diff']:.3g}",
        f"step time (median of {measured} measured step{'s' if measured > 1 else ''}"
        f"{', warm-up dropped' if r['steps'] > 1 else ''}): {_ms(r['step_time_s'])}",
    ]
    if r["ep"] > 1:
        lines.append(f"all-to-all per step: {r['a2a_bytes_per_step'] / 1e6:.3f} MB sent, "
                     f"{_ms(r['a2a_time_s'])} in flight per process, "
                     f"{_ms(r['a2a_exposed_s'])} exposed: "
                     f"{r['a2a_hidden_fraction'] * 100:.0f}% hidden")
    if "predicted_step_time_s" in r:
        idle = r["max_idle_error"]
        worst = f"; idle per rank off by up to {idle * 100:.0f}%" if idle is not None else ""
        source = "" if r["calibrated_from"] == "this run" else \
            f" (costs from {r['calibrated_from']})"
        lines.append(f"simulated step{source} {_ms(r['predicted_step_time_s'])} (makespan "
                     f"{_ms(r['predicted_makespan_s'])} + measured end of step "
                     f"{_ms(r['measured_end_of_step_s'])}) vs measured "
                     f"{_ms(r['measured_step_time_s'])}: error {r['prediction_error'] * 100:+.1f}%"
                     f"{worst}")
        for p in r["per_rank_idle"]:
            err = f" ({p['idle_error'] * 100:+.0f}%)" if p["idle_error"] is not None else ""
            lines.append(f"  rank {p['rank']}: idle predicted {_ms(p['predicted_idle_s'])}, "
                         f"measured {_ms(p['measured_idle_s'])}{err}")
        if "predicted_a2a_hidden_fraction" in r:
            lines.append(f"all-to-all hidden: simulated "
                         f"{r['predicted_a2a_hidden_fraction'] * 100:.0f}% vs measured "
                         f"{r['measured_a2a_hidden_fraction'] * 100:.0f}%; exposed per rank: "
                         f"simulated {_ms(r['predicted_a2a_exposed_s'])} vs measured "
                         f"{_ms(r['measured_a2a_exposed_s'])}")
        if "caveat" in r:
            lines.append(f"caveat: {r['caveat']}")
    typer.echo("\n".join(lines))
