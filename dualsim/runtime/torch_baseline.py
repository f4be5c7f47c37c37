"""The same plan on torch.distributed.pipelining, for the interop test and the benchmark.

Each rank builds torch ``PipelineStage`` objects around the same seeded slices (plain
autograd), loads the plan's torch CSV export with ``_PipelineScheduleRuntime._load_csv``
(compute_only: torch adds the transfers) and trains with the same data and optimizer. The
report has the same shape as the dualsim interpreter's, without per-action rows.

With expert parallelism (``ep`` processes per pipeline rank) torch's schedule runs once per
expert-parallel index, on a pipeline process group of that index's processes, and the MoE
layers do their all-to-alls inside the stage module's forward (:class:`ExpertParallelSlice`:
a counts exchange, then ``torch.distributed.nn.functional.all_to_all_single``, which autograd
reverses in the backward), as TorchTitan runs PP with EP; nothing overlaps one micro-batch's
all-to-all with another's compute there. The processes of a rank then sum their dense
gradients, as dualsim's interpreter does. Every all-to-all's input requires a gradient on every
process (a process whose experts got no rows still sends zeros that do), so autograd runs the
same backward all-to-alls on all of them: without that, a process whose experts got nothing
skipped the combine's backward all-to-all and its peer waited in it (torch's first step
infers shapes from a real forward and backward, which met exactly that).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_to_all_single
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

from dualsim.ir import Schedule
from dualsim.runtime.moe import Dispatch, route
from dualsim.runtime.net import Block, StageNet, loss_fn, make_batch, named_tensors, \
    sum_dense_grads
from dualsim.runtime.options import RunOptions
from dualsim.runtime.p2p import ProcessGroups
from dualsim.runtime.progress import SYNCING, Progress
from dualsim.runtime.records import RankReport, StepRecord
from dualsim.runtime.reference import make_optimizer
from dualsim.torch_csv import to_torch_csv


class ExpertParallelSlice(torch.nn.Module):
    """A slice whose MoE layers move token rows to the process holding their expert."""

    def __init__(self, net: StageNet, group: dist.ProcessGroup, ep: int) -> None:
        super().__init__()
        self.net, self.group, self.ep = net, group, ep

    def _moe(self, block: Block, x: torch.Tensor) -> torch.Tensor:
        cfg = self.net.cfg
        h, tokens, scores = block.attention_and_scores(x)
        routing = route(scores, cfg.top_k, cfg.capacity_factor)
        d = Dispatch.plan(routing, cfg.experts, self.ep)
        counts = torch.empty_like(d.send_counts)
        dist.all_to_all_single(counts, d.send_counts, group=self.group)
        d = d.received(counts)
        rows = tokens[d.token]
        got = all_to_all_single(rows.new_empty((sum(d.recv_splits), rows.shape[1])), rows,
                                d.recv_splits, d.send_splits, group=self.group)
        local = d.local_experts()
        first = dist.get_rank(self.group) * (cfg.experts // self.ep)
        done = got * 0  # requires a gradient even when no rows came (see the docstring)
        for e in range(cfg.experts // self.ep):
            sel = (local == e).nonzero(as_tuple=True)[0]
            if sel.numel():
                done = done.index_add(0, sel, block.expert(got[sel], first + e))
        back = all_to_all_single(done.new_empty(rows.shape), done, d.send_splits,
                                 d.recv_splits, group=self.group)
        weighted = back * routing.weights[d.token, d.slot].unsqueeze(-1)
        out = block.shared(tokens).index_add(0, d.token, weighted)
        return h + out.reshape(h.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        if net.first:
            x = net.embed(x)
        for block in net.blocks:
            x = self._moe(block, x)
        return net.head_logits(x) if net.last else x


def run_rank_torch(plan: Schedule, process: int, options: RunOptions, device: torch.device,
                   progress: Progress | None = None,
                   groups: ProcessGroups | None = None) -> RankReport:
    cfg, progress = options.model, progress or Progress()
    world = options.world(plan.ranks)
    rank, index, ep = world.rank_of(process), world.ep_index(process), world.ep
    share = cfg.experts // ep
    held = range(index * share, (index + 1) * share)
    slices = {s: StageNet(cfg, plan.placement(s).position, plan.chain_length, split=False,
                          experts=held).to(device)
              for s in plan.stages_of_rank(rank)}
    if ep > 1:
        assert groups is not None
        # every process creates every index's pipeline group, in one order (collective)
        pipes = [dist.new_group([r * ep + e for r in range(plan.ranks)]) for e in range(ep)]
        ep_group = groups.expert_group(rank)
        stages = [PipelineStage(ExpertParallelSlice(m, ep_group, ep), s, plan.num_stages,
                                device, group=pipes[index]) for s, m in slices.items()]
    else:
        stages = [PipelineStage(m, s, plan.num_stages, device) for s, m in slices.items()]

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss_fn(logits, targets) / ep  # the rank's loss: the mean over its processes

    schedule = _PipelineScheduleRuntime(stages, plan.microbatches, loss_fn=loss)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "plan.csv"
        path.write_text(to_torch_csv(plan))
        schedule._load_csv(str(path), format="compute_only")
    optimizer = make_optimizer([p for m in slices.values() for p in m.parameters()])
    first = any(plan.placement(s).position == 0 for s in slices)
    last = any(plan.placement(s).position == plan.chain_length - 1 for s in slices)
    mine = slice(index * cfg.microbatch_size, (index + 1) * cfg.microbatch_size)
    records = []
    for step in range(options.steps):
        tokens, targets = make_batch(cfg, plan.microbatches, step, ep)
        args = (tokens[:, mine].reshape(-1, cfg.seq).to(device),) if first else ()
        target = targets[:, mine].reshape(-1, cfg.seq).to(device) if last else None
        optimizer.zero_grad(set_to_none=True)
        progress.update(step, -1, SYNCING)
        dist.barrier()
        t0, cpu0 = time.perf_counter(), time.process_time()
        losses: list[torch.Tensor] = []
        schedule.step(*args, target=target, losses=losses)
        if ep > 1:
            sum_dense_grads(slices, groups.expert_group(rank))  # type: ignore[union-attr]
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        end = time.perf_counter() - t0
        loss_value = sum(float(x.detach()) for x in losses) / plan.microbatches
        records.append(StepRecord([], loss_value, end, end, cpu_s=time.process_time() - cpu0))
    return RankReport(rank, records, named_tensors(slices, grads=True),
                      named_tensors(slices, grads=False), process, index)

