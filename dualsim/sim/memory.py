"""Memory per rank in hardware mode: static state plus activations that follow the timeline.

Every entry of the per-rank breakdown, with where it comes from (docs/hardware-mode.md):

* ``params``, ``grads``, ``optimizer``: every stage a rank holds brings its parameters
  (DualPipe: two stages, so 2x), their gradients, and its share of the optimizer state (ZeRO-1:
  sharded over the replicas of that stage: all pipelines x stage copies for replicated weights,
  pipelines / EP x copies for routed experts, of which each GPU holds routed_experts / EP per
  MoE layer); bytes per parameter from the model preset.
* ``a2a_buffers``: DeepEP's communication buffers, allocated once per GPU of an EP > 1 MoE
  model: its NVLink and RDMA buffer size hints for the comm kernels' SM count and the EP size.
* ``logits_grad``: on a rank holding the head (or an MTP head), the FP32 gradient of the logits
  the loss backward materialises (tokens x vocab x 4 B), one head at a time.
* ``activations``, ``attention_output``, ``logits``: what a (stage, micro-batch) pair keeps from
  its forward to its backward: the attention output (+ LSE) kept for FlashAttention's backward,
  the BF16 logits kept for the loss, and everything else. A pair allocates when its forward
  starts; a full B frees it at its end; an I frees the logits and all but the share of the rest
  kept for the weight gradient, which the W frees.
* ``workspace``: the profile's fixed allowance (CUDA context, cuBLAS and NCCL buffers) plus its
  fragmentation share of everything above.

The peak is taken over the simulated timeline (frees first at equal times).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pandas as pd

from dualsim.cluster.profile import Profile
from dualsim.ir import Action, Op, Schedule
from dualsim.workload.layout import Layout

GB = 1e9
STATIC = ("params", "grads", "optimizer", "a2a_buffers", "logits_grad")
LIVE = ("activations", "attention_output", "logits")
COMPONENTS = STATIC + LIVE + ("workspace",)

#: DeepEP (deep_ep/buffer.py, csrc/config.hpp, 2025-04): a channel per 2 comm SMs; tokens each
#: channel's receive ring holds per peer, by EP size, for the NVLink and the RDMA buffer; per
#: token besides its hidden bytes: source meta (8 B), top-k indices (128 x 8 B) and weights
#: (128 x 4 B), FP8 scales (128 x 4 B)
_NVL_RECV_TOKENS = ((8, 256), (64, 288), (128, 560))
_NVL_RECV_TOKENS_MAX = 720
_RDMA_RECV_TOKENS = 128
_META = 8 + 128 * 8 + 128 * 4 + 128 * 4


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


def a2a_buffer_bytes(layout: Layout, profile: Profile) -> float:
    """DeepEP's NVLink + RDMA buffers on one GPU (0 without expert parallelism).

    Sized for BF16 tokens (the combine), with ``profile.comm_sms`` / 2 channels; the RDMA
    buffer exists only when EP spans nodes.
    """
    m = layout.model
    if not m.is_moe or layout.ep <= 1:
        return 0.0
    per_node = profile.gpus_per_node
    channels = max(1, profile.comm_sms // 2)
    nvl_ranks, rdma_ranks = min(layout.ep, per_node), max(1, layout.ep // per_node)
    recv = next((n for limit, n in _NVL_RECV_TOKENS if layout.ep <= limit), _NVL_RECV_TOKENS_MAX)
    hidden = 2.0 * m.hidden
    nvl = channels * nvl_ranks * ((2 * rdma_ranks + 3) * 4 + recv * (hidden + _META))
    if layout.ep <= per_node:
        return nvl
    rdma = channels * rdma_ranks * ((2 * per_node + 2) * 2 * 4
                                    + _RDMA_RECV_TOKENS * 2 * (hidden + _META + 16))
    return nvl + rdma


def pair_bytes(layout: Layout, position: int) -> tuple[float, float, float]:
    """(activations, attention output, logits) bytes one micro-batch keeps on a slice."""
    units = layout.slices[position].units
    att = sum(u.attn_output_bytes for u in units)
    logits = sum(u.logits_bytes for u in units)
    rest = sum(u.activation_bytes for u in units) - att - logits
    t = layout.microbatch_tokens
    return rest * t, att * t, logits * t


class ActivationLedger:
    """What each rank's (stage, micro-batch) pairs hold over time, by component (LIVE)."""

    def __init__(self, layout: Layout, schedule: Schedule) -> None:
        self.position = {st.stage: st.position for st in schedule.stages}
        self.pair = [pair_bytes(layout, p) for p in range(len(layout.slices))]
        self.wfrac = layout.model.memory["weight_grad_activation_fraction"]
        self.deltas: list[list[tuple[float, tuple[float, float, float]]]] = [
            [] for _ in range(schedule.ranks)]

    def forward(self, rank: int, now: float, stage: int) -> None:
        """A forward starts: its pair allocates."""
        self.deltas[rank].append((now, self.pair[self.position[stage]]))

    def backward(self, rank: int, now: float, action: Action) -> None:
        """A unit ended: its B frees the pair, its I all but the W's share, its W the rest."""
        w = self.wfrac
        for part in action.parts:
            act, att, logits = self.pair[self.position[part.stage]]
            if part.op is Op.B:
                self.deltas[rank].append((now, (-act, -att, -logits)))
            elif part.op is Op.I:
                self.deltas[rank].append((now, (-act * (1 - w), -att * (1 - w), -logits)))
            elif part.op is Op.W:
                self.deltas[rank].append((now, (-act * w, -att * w, 0.0)))


def static_components(layout: Layout, schedule: Schedule, profile: Profile,
                      rank: int) -> dict[str, float]:
    """Bytes of the STATIC entries on one rank."""
    s = static_memory(layout, schedule, rank)
    heads = any(u.logits_bytes for st in schedule.stages if st.rank == rank
                for u in layout.slices[st.position].units)
    logits_grad = layout.microbatch_tokens * layout.model.vocab * 4.0 if heads else 0.0
    return {"params": s.params, "grads": s.grads, "optimizer": s.optimizer,
            "a2a_buffers": a2a_buffer_bytes(layout, profile), "logits_grad": logits_grad}


def live_walk(deltas: list[tuple[float, tuple[float, float, float]]]
              ) -> Iterator[tuple[float, list[float]]]:
    """(time, live bytes per LIVE entry) after each of a rank's ledger deltas, in time order
    (frees first at equal times)."""
    live = [0.0, 0.0, 0.0]
    for t, d in sorted(deltas, key=lambda x: (x[0], sum(x[1]) > 0)):
        live = [max(0.0, a + b) for a, b in zip(live, d)]
        yield t, live


def live_at_peak(deltas: list[tuple[float, tuple[float, float, float]]]) -> list[float]:
    """The live bytes per LIVE entry when their sum peaks (zeros when nothing is ever live)."""
    best, best_live = -1.0, [0.0, 0.0, 0.0]
    for _, live in live_walk(deltas):
        if sum(live) > best:
            best, best_live = sum(live), live
    return best_live


def peak_breakdown(static: dict[str, float], live: list[float],
                   profile: Profile) -> dict[str, float]:
    """A rank's breakdown (GB) given its STATIC bytes and its LIVE bytes at the peak."""
    total = sum(static.values()) + sum(live)
    peak = {k: static[k] / GB for k in STATIC}
    peak.update({k: v / GB for k, v in zip(LIVE, live)})
    peak["workspace"] = (profile.workspace_bytes + profile.fragmentation * total) / GB
    return peak


def memory_timeline(layout: Layout, schedule: Schedule, profile: Profile,
                    ledger: ActivationLedger) -> tuple[pd.DataFrame, list[dict[str, float]]]:
    """The memory DataFrame (one ``<component>_gb`` column per entry) and, per rank, the
    breakdown (GB) at its peak."""
    rows: list[tuple] = []
    peaks = []
    frag, fixed = profile.fragmentation, profile.workspace_bytes
    for r in range(schedule.ranks):
        static = static_components(layout, schedule, profile, r)
        base = sum(static.values())

        def row(t: float, live: list[float]) -> tuple:
            work = fixed + frag * (base + sum(live))
            parts = [static[k] for k in STATIC] + live + [work]
            return (r, t, *(p / GB for p in parts), sum(parts) / GB)

        rows.append(row(0.0, [0.0, 0.0, 0.0]))
        rows.extend(row(t, live) for t, live in live_walk(ledger.deltas[r]))
        peaks.append(peak_breakdown(static, live_at_peak(ledger.deltas[r]), profile))
    df = pd.DataFrame(rows, columns=["rank", "time", *(f"{c}_gb" for c in COMPONENTS),
                                     "total_gb"])
    return df, peaks
