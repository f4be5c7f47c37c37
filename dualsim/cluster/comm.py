"""Communication cost model: all-to-all, pipeline and gradient-sync kernels as flows on a GPU's links.

Expert-parallel all-to-all: node-limited routing gives the expected copies of each token that
cross InfiniBand (to the same-index GPU of each remote node) and NVLink (forwarded to the
expert's GPU); dispatch moves FP8 (with 1/128 scales), combine BF16. The NVLink leg runs
concurrently with the IB leg, so only the slower leg (the bottleneck) is simulated as a flow.
PP activations go over NVLink when both stages share a node, else over IB; the ZeRO-1 gradient
sync (reduce-scatter + all-gather, ring) over IB (NVLink when its group fits in a node).

**The law** (every kind; fitted in dualsim/cluster/comm_fit.py, see docs/hardware-mode.md): a
comm kernel holds ``sms`` SMs while it runs (all-to-all: ``--comm-sms``, DeepEP's num_sms; PP
send/recv and DP collectives: their NCCL channels), first for a fixed ``latency``, then moves
its bytes at ``min(sms x per-SM rate, fair share of the link)``. An all-to-all's SMs move token
copies, IB sends and NVLink forwards alike, at ``a2a_per_sm`` bytes/s each, so on its
bottleneck leg it gets ``a2a_per_sm x (that leg's copies / all copies)`` per SM: a faster link
on either leg needs more SMs. That per-SM rate drops to ``a2a_overlap_rate`` of itself while
compute runs beside the kernel. The all-to-all's fixed cost grows with the number of EP peers
(a per-peer handshake): ``latency = base(kind) + a2a_peer_latency x (EP - 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dualsim.cluster.profile import Profile
from dualsim.workload.layout import Layout
from dualsim.workload.model import FP8_WITH_SCALES, Model

A2A_KINDS = ("dispatch", "combine", "combine_bwd", "dispatch_bwd")
#: DeepEP dispatch kernels (the forward dispatch and the combine's backward); the others are
#: combine kernels (the forward combine and the dispatch's backward), which also reduce
DISPATCH_TYPE = ("dispatch", "combine_bwd")


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
    if kind in DISPATCH_TYPE and model.gemm_dtype == "fp8":
        return model.hidden * FP8_WITH_SCALES
    return model.hidden * 2.0


@dataclass(frozen=True)
class Flow:
    """One comm kernel: ``nbytes`` over ``link`` ("ib" or "nvlink") after a fixed ``latency``
    (s), holding ``sms`` SMs while it runs; each SM moves at most ``per_sm`` bytes/s, ``overlap``
    times that while the GPU's compute stream runs beside it."""

    kind: str
    link: str
    nbytes: float
    latency: float
    sms: int
    per_sm: float
    overlap: float = 1.0

    def cap(self, computing: bool = False) -> float:
        """What the kernel's SMs can drive (bytes/s), before the link's fair share."""
        return self.sms * self.per_sm * (self.overlap if computing else 1.0)

    def standalone_time(self, profile: Profile, overlapped: bool = False) -> float:
        """Seconds alone on its link (``overlapped``: with compute running beside it)."""
        return self.latency + self.nbytes / min(self.cap(overlapped),
                                                profile.link_bandwidth(self.link))


def a2a_latency(profile: Profile, kind: str, ep: int) -> float:
    """Fixed cost (s) of one all-to-all kernel among ``ep`` EP ranks (grows with the peers)."""
    base = profile.dispatch_latency if kind in DISPATCH_TYPE else profile.combine_latency
    return base + profile.a2a_peer_latency * (ep - 1)


def a2a_flow(model: Model, profile: Profile, ep: int, tokens: float, kind: str,
             imbalance: float = 1.0) -> Flow:
    """One GPU's share of an all-to-all of ``tokens`` tokens, on its bottleneck leg.

    ``imbalance`` (max/mean tokens received per GPU): the kernel ends when the hottest peer has
    moved its ``imbalance`` times larger share, so its bytes scale by it.
    """
    ib, nvl = a2a_copies(model, ep, profile.gpus_per_node)
    per = a2a_bytes_per_copy(model, kind) * tokens * imbalance
    on_ib = ib > 0 and ib / profile.ib_bandwidth >= nvl / profile.nvlink_bandwidth
    leg = ib if on_ib else nvl
    share = leg / (ib + nvl) if leg else 1.0
    return Flow(kind, "ib" if on_ib else "nvlink", leg * per, a2a_latency(profile, kind, ep),
                profile.comm_sms, profile.a2a_per_sm * share, profile.a2a_overlap_rate)


def nccl_flow(profile: Profile, kind: str, link: str, nbytes: float, sms: int) -> Flow:
    """A NCCL kernel (PP send/recv, DP collective) of ``sms`` channels moving ``nbytes``."""
    return Flow(kind, link, nbytes, profile.nccl_latency, sms, profile.nccl_per_sm)


def node_of(rank: int, ep: int, gpus_per_node: int) -> int:
    """Node of pipeline rank ``rank``'s GPU (GPUs ordered EP-innermost, then pipeline rank)."""
    return rank * ep // gpus_per_node


def pp_flow(layout: Layout, profile: Profile, src: int, dst: int) -> Flow:
    """The activation (or its gradient) of one micro-batch between two pipeline ranks."""
    same = (node_of(src, layout.ep, profile.gpus_per_node)
            == node_of(dst, layout.ep, profile.gpus_per_node))
    nbytes = layout.microbatch_tokens * layout.model.hidden * 2.0
    return nccl_flow(profile, "pp_send", "nvlink" if same else "ib", nbytes, profile.pp_sms)


def dp_sync_flow(layout: Layout, profile: Profile, dense: float, expert: float,
                 replicas: tuple[int, int]) -> Flow:
    """ZeRO-1 reduce-scatter + all-gather (BF16, ring) of a slice's ``dense`` and ``expert``
    parameters over their (dense, expert) ``replicas``: (n-1)/n of 2 x 2 bytes per parameter."""
    n_dense, n_expert = replicas
    nbytes = 2 * 2 * (dense * (n_dense - 1) / n_dense + expert * (n_expert - 1) / n_expert)
    intranode = layout.pipelines == layout.ep and layout.ep <= profile.gpus_per_node
    return nccl_flow(profile, "dp_sync", "nvlink" if intranode else "ib", nbytes, profile.dp_sms)
