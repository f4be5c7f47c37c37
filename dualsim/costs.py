"""Cost model: hardware profile x workload layout -> seconds and bytes for every piece.

Compute time of a kernel = FLOPs / (dtype peak x SMs left to compute / all SMs x efficiency of
its kernel kind), all from the profile. Expert-parallel all-to-all: node-limited routing gives the
expected copies of each token that cross InfiniBand (to the same-index GPU of each remote node)
and NVLink (forwarded to the expert's GPU); dispatch moves FP8 (with 1/128 scales), combine BF16.
The bandwidth an all-to-all gets is the link's, times a saturating function of the communication
SMs (1 - exp(-SMs / scale), fit to DeepEP), times the overlap rate while compute runs beside it.
The NVLink leg runs concurrently with the IB leg, so only the slower leg (the bottleneck) is
simulated as a flow. PP activations go over NVLink when both stages share a node, else over IB.
See docs/hardware-mode.md for the assumptions and the calibration against DeepSeek's trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from dualsim.hardware import Profile
from dualsim.workload import FP8_WITH_SCALES, Gemm, Layout, Model, Piece, Unit

A2A_KINDS = ("dispatch", "combine", "combine_bwd", "dispatch_bwd")


def compute_fraction(profile: Profile) -> float:
    """Share of the GPU's throughput left to compute kernels (SMs minus communication SMs)."""
    return (profile.sms - profile.comm_sms) / profile.sms


def kernel_time(gemms: Sequence[Gemm], tokens: float, profile: Profile) -> float:
    """Seconds for ``tokens`` tokens through these kernels on the compute SMs."""
    frac = compute_fraction(profile)
    return sum(g.flops * tokens / (profile.peak_flops(g.dtype) * frac * profile.efficiency[g.kind])
               for g in gemms)


def piece_times(piece: Piece, tokens: float, profile: Profile) -> tuple[float, float, float]:
    """(F, I, W) seconds of one piece for ``tokens`` tokens."""
    return (kernel_time(piece.fwd, tokens, profile), kernel_time(piece.bwd_input, tokens, profile),
            kernel_time(piece.bwd_weight, tokens, profile))


def a2a_saturation(profile: Profile) -> float:
    """Fraction of link bandwidth the all-to-all kernels reach with the profile's comm SMs."""
    return 1.0 - math.exp(-profile.comm_sms / profile.a2a_sm_scale)


def _miss(total: int, group: int, k: int) -> float:
    """P(none of k distinct experts drawn from ``total`` falls in a given set of ``group``)."""
    if k > total - group:
        return 0.0
    return math.comb(total - group, k) / math.comb(total, k)


def a2a_copies(model: Model, ep: int, gpus_per_node: int) -> tuple[float, float]:
    """Expected (IB copies, NVLink copies) sent per token by one GPU in a dispatch.

    EP ranks are consecutive GPUs (EP innermost), so EP spans max(1, ep / gpus_per_node) nodes.
    Node-limited routing: a token reaches at most max_nodes_per_token nodes; one IB copy goes to
    each remote node reached, then NVLink forwards to the distinct expert GPUs on that node.
    """
    if not model.is_moe or ep <= 1:
        return 0.0, 0.0
    E, k = model.routed_experts, model.experts_per_token
    if ep <= gpus_per_node:
        per_gpu = E // ep
        hit = (ep - 1) * (1 - _miss(E, per_gpu, k))
        return 0.0, hit
    nodes = math.ceil(ep / gpus_per_node)
    reached = min(model.max_nodes_per_token, nodes * (1 - _miss(E, E // nodes, k)))
    ib = reached * (nodes - 1) / nodes
    per_node = k / reached
    distinct = gpus_per_node * (1 - (1 - 1 / gpus_per_node) ** per_node)
    nvl = reached * distinct * (1 - 1 / gpus_per_node)
    return ib, nvl


def a2a_bytes_per_copy(model: Model, kind: str) -> float:
    """Bytes per token copy: dispatch and combine_bwd move FP8 (+scales), the others BF16."""
    if kind in ("dispatch", "combine_bwd") and model.gemm_dtype == "fp8":
        return model.hidden * FP8_WITH_SCALES
    return model.hidden * 2.0


@dataclass(frozen=True)
class Transfer:
    """A flow: ``nbytes`` over ``link`` ("ib" or "nvlink"); ``a2a`` flows are SM-driven."""

    kind: str
    link: str
    nbytes: float
    latency: float
    a2a: bool

    def cap(self, profile: Profile) -> float:
        """Standalone rate of this flow (bytes/s) before sharing and overlap slowdown."""
        bw = profile.ib_bandwidth if self.link == "ib" else profile.nvlink_bandwidth
        return bw * a2a_saturation(profile) if self.a2a else bw

    def standalone_time(self, profile: Profile, overlapped: bool = False) -> float:
        rate = self.cap(profile) * (profile.overlap_rate if overlapped and self.a2a else 1.0)
        return self.latency + self.nbytes / rate


def a2a_transfer(model: Model, profile: Profile, ep: int, tokens: float, kind: str) -> Transfer:
    """One GPU's share of an all-to-all of ``tokens`` tokens, on its bottleneck leg."""
    ib, nvl = a2a_copies(model, ep, profile.gpus_per_node)
    per = a2a_bytes_per_copy(model, kind) * tokens
    ib_t = ib * per / profile.ib_bandwidth
    nvl_t = nvl * per / profile.nvlink_bandwidth
    if ib_t >= nvl_t and ib > 0:
        return Transfer(kind, "ib", ib * per, profile.a2a_latency, True)
    return Transfer(kind, "nvlink", nvl * per, profile.a2a_latency, True)


def node_of(rank: int, ep: int, gpus_per_node: int) -> int:
    """Node of pipeline rank ``rank``'s GPU (GPUs ordered EP-innermost, then pipeline rank)."""
    return rank * ep // gpus_per_node


def pp_transfer(layout: Layout, profile: Profile, src: int, dst: int) -> Transfer:
    """The activation (or its gradient) of one micro-batch between two pipeline ranks."""
    same = (node_of(src, layout.ep, profile.gpus_per_node)
            == node_of(dst, layout.ep, profile.gpus_per_node))
    nbytes = layout.microbatch_tokens * layout.model.hidden * 2.0
    return Transfer("pp_send", "nvlink" if same else "ib", nbytes, 0.0, False)


@dataclass(frozen=True)
class LayerCalibration:
    """Per-layer times (seconds) of one MoE layer for a micro-batch: the §6 trace's quantities."""

    attn_f: float
    mlp_f: float
    attn_i: float
    mlp_i: float
    w: float
    dispatch: float
    combine: float
    dispatch_bwd_fp8: float
    combine_bwd_bf16: float

    @property
    def f(self) -> float:
        return self.attn_f + self.mlp_f

    @property
    def i(self) -> float:
        return self.attn_i + self.mlp_i


def moe_layer_calibration(layout: Layout, profile: Profile) -> LayerCalibration:
    """The model's numbers for one MoE layer, all-to-all overlapped with compute (as in an FB)."""
    unit = next(u for s in layout.slices for u in s.units if u.moe and u.name.startswith("layer"))
    tokens = layout.microbatch_tokens
    attn, mlp = (piece_times(p, tokens, profile) for p in unit.pieces)
    t = {k: a2a_transfer(layout.model, profile, layout.ep, tokens, k).standalone_time(profile, True)
         for k in A2A_KINDS}
    return LayerCalibration(attn[0], mlp[0], attn[1], mlp[1], attn[2] + mlp[2], t["dispatch"],
                            t["combine"], t["combine_bwd"], t["dispatch_bwd"])


def unit_weight(profile: Profile, tokens: float = 4096.0) -> Callable[[Unit], float]:
    """Balancing weight of a unit on this profile: its F+I+W compute seconds."""
    def weight(unit: Unit) -> float:
        return sum(sum(piece_times(p, tokens, profile)) for p in unit.pieces)
    return weight
