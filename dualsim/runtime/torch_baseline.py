"""The same plan on torch.distributed.pipelining, for the interop test and the benchmark.

Each rank builds torch ``PipelineStage`` objects around the same seeded slices (plain
autograd), loads the plan's torch CSV export with ``_PipelineScheduleRuntime._load_csv``
(compute_only: torch adds the transfers) and trains with the same data and optimizer. The
report has the same shape as the dualsim interpreter's, without per-action rows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

from dualsim.ir import Schedule
from dualsim.runtime.options import RunOptions
from dualsim.runtime.progress import SYNCING, Progress
from dualsim.runtime.records import RankReport, StepRecord
from dualsim.runtime.net import StageNet, loss_fn, make_batch, named_tensors
from dualsim.runtime.reference import make_optimizer
from dualsim.torch_csv import to_torch_csv


def run_rank_torch(plan: Schedule, rank: int, options: RunOptions, device: torch.device,
                   progress: Progress | None = None) -> RankReport:
    cfg, progress = options.model, progress or Progress()
    slices = {s: StageNet(cfg, plan.placement(s).position, plan.chain_length, split=False).to(device)
              for s in plan.stages_of_rank(rank)}
    stages = [PipelineStage(m, s, plan.num_stages, device) for s, m in slices.items()]
    schedule = _PipelineScheduleRuntime(stages, plan.microbatches, loss_fn=loss_fn)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "plan.csv"
        path.write_text(to_torch_csv(plan))
        schedule._load_csv(str(path), format="compute_only")
    optimizer = make_optimizer([p for m in slices.values() for p in m.parameters()])
    first = any(plan.placement(s).position == 0 for s in slices)
    last = any(plan.placement(s).position == plan.chain_length - 1 for s in slices)
    records = []
    for step in range(options.steps):
        tokens, targets = make_batch(cfg, plan.microbatches, step)
        args = (tokens.reshape(-1, cfg.seq).to(device),) if first else ()
        target = targets.reshape(-1, cfg.seq).to(device) if last else None
        optimizer.zero_grad(set_to_none=True)
        progress.update(step, -1, SYNCING)
        dist.barrier()
        t0 = time.perf_counter()
        losses: list[torch.Tensor] = []
        schedule.step(*args, target=target, losses=losses)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        end = time.perf_counter() - t0
        loss = sum(float(x.detach()) for x in losses) / plan.microbatches
        records.append(StepRecord([], loss, end, end))
    return RankReport(rank, records, named_tensors(slices, grads=True),
                      named_tensors(slices, grads=False))
