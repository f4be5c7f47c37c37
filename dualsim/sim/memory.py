"""Memory per rank in hardware mode: static state plus activations that follow the timeline.

Static (DESIGN.md §6): every stage a rank holds brings its parameters (DualPipe: two stages, so
2x), their gradients, and its share of the optimizer state (ZeRO-1: sharded over the replicas of
that stage: all pipelines x stage copies for replicated weights, pipelines / EP x copies for
routed experts, of which each GPU holds routed_experts / EP per MoE layer).
Activations: a (stage, micro-batch) pair allocates its slice's bytes when its forward starts;
a full B frees them at its end; an I frees all but the share kept for the weight gradient, which
the W frees. The peak is taken over the simulated timeline (frees first at equal times).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dualsim.ir import Schedule
from dualsim.workload.layout import Layout

GB = 1e9


@dataclass(frozen=True)
class StaticMemory:
    """Bytes of parameters, gradients and optimizer state on one rank."""

    params: float
    grads: float
    optimizer: float


def slice_params(layout: Layout, position: int) -> tuple[float, float]:
    """(replicated params, this GPU's routed-expert params) of one layer slice."""
    sl = layout.slices[position]
    return (sum(u.params for u in sl.units),
            sum(u.expert_params for u in sl.units) / layout.ep)


def replicas(layout: Layout, position: int) -> tuple[int, int]:
    """ZeRO-1 group sizes of a slice: (replicated weights, routed-expert shards)."""
    copies = len(layout.holders[position]) if layout.holders else 1
    return layout.pipelines * copies, max(1, layout.pipelines // layout.ep) * copies


def static_memory(layout: Layout, schedule: Schedule, rank: int) -> StaticMemory:
    mem = layout.model.memory
    params = opt = 0.0
    for st in schedule.stages:
        if st.rank != rank:
            continue
        dense, expert = slice_params(layout, st.position)
        n_dense, n_expert = replicas(layout, st.position)
        params += dense + expert
        opt += mem["optimizer_bytes"] * (dense / n_dense + expert / n_expert)
    return StaticMemory(params * mem["param_bytes"], params * mem["grad_bytes"], opt)


def activation_bytes(layout: Layout, position: int) -> float:
    """Bytes one micro-batch leaves live on a slice between its forward and backward."""
    return layout.microbatch_tokens * sum(u.activation_bytes
                                          for u in layout.slices[position].units)


def memory_timeline(ranks: int, static: list[StaticMemory],
                    deltas: list[list[tuple[float, float]]]) -> tuple[pd.DataFrame, list[dict]]:
    """The memory DataFrame and, per rank, the breakdown (GB) at its peak."""
    rows = []
    peaks = []
    for r in range(ranks):
        s = static[r]
        base = (s.params + s.grads + s.optimizer) / GB
        live = peak = 0.0
        rows.append((r, 0.0, s.params / GB, s.grads / GB, s.optimizer / GB, 0.0, base))
        for t, d in sorted(deltas[r], key=lambda x: (x[0], x[1] > 0)):
            live = max(0.0, live + d)
            peak = max(peak, live)
            rows.append((r, t, s.params / GB, s.grads / GB, s.optimizer / GB, live / GB,
                         base + live / GB))
        peaks.append({"params": s.params / GB, "grads": s.grads / GB,
                      "optimizer": s.optimizer / GB, "activations": peak / GB})
    df = pd.DataFrame(rows, columns=["rank", "time", "params_gb", "grads_gb", "optimizer_gb",
                                     "activations_gb", "total_gb"])
    return df, peaks
