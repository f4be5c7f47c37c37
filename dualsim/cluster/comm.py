"""Communication cost model: all-to-all and pipeline transfers as flows on a GPU's links.

Expert-parallel all-to-all: node-limited routing gives the expected copies of each token that
cross InfiniBand (to the same-index GPU of each remote node) and NVLink (forwarded to the
expert's GPU); dispatch moves FP8 (with 1/128 scales), combine BF16. The bandwidth an
all-to-all gets is the link's, times a saturating function of the communication SMs
(1 - exp(-SMs / scale), fit to DeepEP), times the overlap rate while compute runs beside it.
The NVLink leg runs concurrently with the IB leg, so only the slower leg (the bottleneck) is
simulated as a flow. PP activations go over NVLink when both stages share a node, else over IB.
See docs/hardware-mode.md for the assumptions and the calibration against DeepSeek's trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dualsim.cluster.profile import Profile
from dualsim.workload.layout import Layout
from dualsim.workload.model import FP8_WITH_SCALES, Model

A2A_KINDS = ("dispatch", "combine", "combine_bwd", "dispatch_bwd")


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
class Flow:
    """A flow of bytes: ``nbytes`` over ``link`` ("ib" or "nvlink"); ``a2a`` flows are SM-driven."""

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


def a2a_flow(model: Model, profile: Profile, ep: int, tokens: float, kind: str) -> Flow:
    """One GPU's share of an all-to-all of ``tokens`` tokens, on its bottleneck leg."""
    ib, nvl = a2a_copies(model, ep, profile.gpus_per_node)
    per = a2a_bytes_per_copy(model, kind) * tokens
    ib_t = ib * per / profile.ib_bandwidth
    nvl_t = nvl * per / profile.nvlink_bandwidth
    if ib_t >= nvl_t and ib > 0:
        return Flow(kind, "ib", ib * per, profile.a2a_latency, True)
    return Flow(kind, "nvlink", nvl * per, profile.a2a_latency, True)


def node_of(rank: int, ep: int, gpus_per_node: int) -> int:
    """Node of pipeline rank ``rank``'s GPU (GPUs ordered EP-innermost, then pipeline rank)."""
    return rank * ep // gpus_per_node


def pp_flow(layout: Layout, profile: Profile, src: int, dst: int) -> Flow:
    """The activation (or its gradient) of one micro-batch between two pipeline ranks."""
    same = (node_of(src, layout.ep, profile.gpus_per_node)
            == node_of(dst, layout.ep, profile.gpus_per_node))
    nbytes = layout.microbatch_tokens * layout.model.hidden * 2.0
    return Flow("pp_send", "nvlink" if same else "ib", nbytes, 0.0, False)
