"""`dualsim simulate` and `dualsim compare`: one schedule, or several side by side.

The work (configuration, running, tables, the report folder) is in :mod:`dualsim.cli.simulation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dualsim.cli import simulation as simcmd
from dualsim.cli.common import check_output, check_output_folder, print_json, user_errors
from dualsim.cli.options import (ChunksOpt, CommOpt, CommSmsOpt, CostsOpt, EpOpt, GpusOpt, IbOpt,
                                 GlobalBatchOpt, ImbalanceOpt, JsonOpt, MbsOpt, ModelOpt, NvOpt,
                                 PrecisionOpt, ProfileOpt, RanksOpt, RecomputeOpt, SeqLenOpt,
                                 SmSharingOpt, TokensOpt)


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
    precision: Optional[str] = PrecisionOpt,
    global_batch: Optional[int] = GlobalBatchOpt,
    seq_len: Optional[int] = SeqLenOpt,
    recompute: Optional[str] = RecomputeOpt,
    routing_imbalance: Optional[float] = ImbalanceOpt,
    sm_sharing: Optional[str] = SmSharingOpt,
    as_json: bool = JsonOpt,
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write a Perfetto/Chrome trace (JSON)."),
    gantt: Optional[Path] = typer.Option(None, "--gantt", help="Write a Gantt chart (.png or .svg)."),
) -> None:
    """Simulate one schedule: abstract costs by default, a modelled cluster with --profile/--model."""
    with user_errors():
        # a bad path fails now, not after the simulation (as for `dualsim run`)
        check_output("--trace", trace, (".json",))
        check_output("--gantt", gantt, (".png", ".svg"))
        plan, world = None, None
        if simcmd.is_plan_path(schedule):  # a plan from `dualsim plan --emit` knows its world
            from dualsim.planfile import read_plan_world

            plan, world = read_plan_world(schedule)
        cfg = simcmd.Config.make(ranks, microbatches, chunks, costs, comm, profile, model, ep,
                                 gpus, comm_sms, microbatch_tokens, ib_gbps, nvlink_gbps,
                                 precision=precision, global_batch=global_batch,
                                 seq_len=seq_len, recompute=recompute, world=world,
                                 routing_imbalance=routing_imbalance, sm_sharing=sm_sharing,
                                 plan_path=schedule)
        s = simcmd.load_schedule(schedule, cfg, plan=plan)
        if simcmd.is_plan_path(schedule):
            simcmd.check_plan_options(s, ranks, microbatches, chunks)
        r = simcmd.run(s, cfg)
        simcmd.check_recorded_global_batch(r, s, cfg)
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
    precision: Optional[str] = PrecisionOpt,
    global_batch: Optional[int] = GlobalBatchOpt,
    seq_len: Optional[int] = SeqLenOpt,
    recompute: Optional[str] = RecomputeOpt,
    routing_imbalance: Optional[float] = ImbalanceOpt,
    sm_sharing: Optional[str] = SmSharingOpt,
    out: Path = typer.Option(Path("dualsim-compare"), "--out", "-o", help="Folder for the charts and report."),
    as_json: bool = JsonOpt,
) -> None:
    """Compare schedules at the same R, M and costs: a table, Gantt charts and a report folder."""
    with user_errors():
        simcmd.check_report_folder(out)
        check_output_folder("--out", out)
        cfg = simcmd.Config.make(ranks, microbatches, chunks, costs, comm, profile, model, ep,
                                 gpus, comm_sms, microbatch_tokens, ib_gbps, nvlink_gbps,
                                 precision=precision, global_batch=global_batch,
                                 seq_len=seq_len, recompute=recompute,
                                 routing_imbalance=routing_imbalance, sm_sharing=sm_sharing)
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
