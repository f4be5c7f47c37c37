"""Export a plan as torch.distributed.pipelining's CSV schedule (``compute_only`` format).

One row per rank, no header, one compute action per cell in torch's string form (the same as
dualsim's for F, I, W and B); an overlapped pair is ``(0F7;7B3)OVERLAP_F_B``. torch 2.13 loads
it with the private ``_PipelineScheduleRuntime._load_csv(path, format="compute_only")``, infers
which rank holds each stage from the rows, and inserts the transfers and gradient scaling
itself, so SEND/RECV actions of a lowered plan are left out.

torch's pipelining has one chain: stage i feeds stage i+1, every micro-batch runs through all
stages 0..S-1, and each stage's parameters exist once. So only single-chain plans whose stage
numbers are their chain positions can be written; DualPipe is refused with the reason.
This module does not import torch.
"""

from __future__ import annotations

import csv
import io

from dualsim.errors import ScheduleError
from dualsim.ir import Action, Op, Schedule

DUALPIPE_REASON = (
    "torch.distributed.pipelining cannot express {name}: it has {chains} chains (micro-batches "
    "0..M/2-1 enter at rank 0, M/2..M-1 at rank R-1 and flow the other way) and keeps two "
    "copies of every layer slice whose gradients are summed at step end, while torch's schedules "
    "have one chain (stage i feeds stage i+1 for every micro-batch) and one copy of each stage; "
    "emit dualpipev (the same overlap on one V-shaped chain) for torch, or run this plan with "
    "`dualsim run`"
)


def torch_action(action: Action) -> str:
    """torch's string form of one compute action."""
    if action.op is Op.FB:
        return f"({action.forward};{action.backward})OVERLAP_F_B"
    return str(action)


def to_torch_csv(schedule: Schedule) -> str:
    """The CSV text of ``schedule`` (compute actions only, one row per rank)."""
    if len(schedule.chains) != 1:
        raise ScheduleError(DUALPIPE_REASON.format(name=schedule.name, chains=len(schedule.chains)))
    moved = [s.stage for s in schedule.stages if s.stage != s.position]
    if moved:
        raise ScheduleError(
            f"torch numbers stages by their position in the chain, but stage {moved[0]} of "
            f"{schedule.name} sits at position {schedule.placement(moved[0]).position}; "
            "renumber the stages in chain order")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in schedule.compute_only().actions:
        writer.writerow([torch_action(a) for a in row])
    return out.getvalue()
