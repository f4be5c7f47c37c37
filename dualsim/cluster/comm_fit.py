"""The communication law's parameters, fitted to DeepEP's H800 figures and DeepSeek's trace.

The law (dualsim/cluster/comm.py, docs/hardware-mode.md "Communication law"): an all-to-all
kernel holding ``s`` SMs moves token copies (IB sends and NVLink forwards alike) at ``s x r``
bytes/s (``x`` the overlap rate while compute runs beside it), each link carries its copies at
most at its bandwidth, and a fixed cost ``base(kind) + per_peer x (EP - 1)`` comes first:
``time = latency + max(all copy bytes / (s r), IB bytes / IB, NVLink bytes / NVLink)``.

What each published number pins (all H800, one 400 Gb/s CX7 NIC per GPU, NVLink ~160 GB/s,
DeepEP V1 normal kernels, 4096 tokens per GPU, hidden 7168, top-8 of 256 experts, 4 node
groups, FP8 dispatch and BF16 combine, 24 SMs):

* DeepEP's bandwidths are *logical*: bytes of every (token, destination node) pair, the
  token's own node included (DeepEP tests/test_internode.py counts ``num_rdma_token_sent``
  that way; DeepEP issue #285), so the real IB bytes are the remote share of them. With the
  node-limited routing of dualsim/cluster/comm.py that gives, e.g. at EP64, 3.5 IB copies of
  the 4 logical ones: 51 GB/s logical = 44.6 GB/s on the wire.
* At 24 SMs the kernels already reach their links (EP32/EP64 on IB at ~44 GB/s + a fixed
  cost, EP8 on NVLink at 153-158 GB/s), so DeepEP's table bounds the per-SM rate from below.
  The knee itself comes from the DeepSeek-V3 report (s3.2.2): 20 SMs suffice to fully use IB
  and NVLink, and 20 is the budget DeepSeek chose: at EP64 (3.5 IB + 6.56 NVLink copies per
  token) 20 SMs move exactly what saturates IB, so r = IB x all copies / IB copies / 20
  (``KNEE_SMS``).
* The fixed cost: what the IB-bound EP32 and EP64 times leave over ``bytes / link``; one base per
  kernel kind (dispatch-type kernels: dispatch and the combine's backward; combine-type: combine
  and the dispatch's backward, which also reduce) plus one per-peer slope shared by both (the
  kernels' notify/handshake step exchanges counts with every EP peer). Held out: EP16 (NVLink
  bound) and EP8 (intranode).
* The overlap rate: DeepSeek's trace (EP64, 20 SMs, overlapped with compute inside an FB) times
  the four all-to-all kernels at 4.35 / 5.99 / 3.41 / 6.37 ms; the one factor on the per-SM rate
  that best matches them (least squares on log time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dualsim.cluster.comm import a2a_copies
from dualsim.workload.model import FP8_WITH_SCALES, Model

KNEE_SMS = 20  # DeepSeek-V3 report s3.2.2: 20 SMs saturate IB and NVLink
DEEPEP_SMS = 24  # DeepEP V1 tests' num_sms for the published table
DEEPEP_TOKENS = 4096
#: DeepEP V1 README ("Normal kernels with NVLink and RDMA forwarding"), H800: EP -> logical
#: (dispatch FP8, combine BF16) bandwidth in GB/s; EP8 is intranode (NVLink), the rest RDMA
DEEPEP_H800 = {8: (153.0, 158.0), 16: (43.0, 43.0), 32: (58.0, 57.0), 64: (51.0, 50.0)}
FIT_EPS = (32, 64)  # IB-bound points that set the fixed costs; EP16 and EP8 are held out
#: DeepSeek's trace (deepseek-ai/profile-data train.json, EP64, 4096 tokens, 20 comm SMs,
#: overlapped): data-moving kernel ms of (kind, FP8?) -> measured
TRACE_A2A_MS = {"dispatch": 4.35, "combine": 5.99, "combine_bwd": 3.41, "dispatch_bwd": 6.37}
DISPATCH_TYPE = ("dispatch", "combine_bwd")  # DeepEP dispatch kernels; the others are combines


@dataclass(frozen=True)
class Row:
    """One measured quantity against the model: ``name``, measured and model values, error."""

    name: str
    measured: float
    model: float

    @property
    def error(self) -> float:
        return self.model / self.measured - 1


@dataclass(frozen=True)
class CommFit:
    """Fitted law parameters (bytes/s per SM, seconds) with the rows behind them."""

    per_sm: float
    dispatch_base: float
    combine_base: float
    per_peer: float
    overlap_rate: float
    fitted: tuple[Row, ...]
    held_out: tuple[Row, ...]

    def latency(self, kind: str, ep: int) -> float:
        base = self.dispatch_base if kind in DISPATCH_TYPE else self.combine_base
        return base + self.per_peer * (ep - 1)


def _bytes(model: Model, fp8: bool) -> float:
    return model.hidden * (FP8_WITH_SCALES if fp8 else 2.0)


def _logical_copies(model: Model, ep: int, gpus_per_node: int) -> float:
    """DeepEP's logical copies per token: destination nodes reached (own node included), or
    for intranode the destination GPUs (itself included)."""
    ib, nvl = a2a_copies(model, ep, gpus_per_node)
    if ep <= gpus_per_node:
        return nvl * ep / (ep - 1)
    nodes = math.ceil(ep / gpus_per_node)
    return ib * nodes / (nodes - 1)


def _legs(model: Model, ep: int, gpus_per_node: int, fp8: bool) -> tuple[float, float]:
    """(IB bytes, NVLink bytes) one GPU sends in an all-to-all of DEEPEP_TOKENS tokens."""
    ib, nvl = a2a_copies(model, ep, gpus_per_node)
    per = _bytes(model, fp8) * DEEPEP_TOKENS
    return ib * per, nvl * per


def fit_deepep(model: Model, gpus_per_node: int, ib_bandwidth: float,
               nvlink_bandwidth: float) -> CommFit:
    """Fit the law to DEEPEP_H800 and TRACE_A2A_MS (bandwidths in bytes/s; see module doc)."""
    ib64, nvl64 = a2a_copies(model, 64, gpus_per_node)
    per_sm = ib_bandwidth * (ib64 + nvl64) / ib64 / KNEE_SMS

    def transfer(ep: int, fp8: bool, sms: int, rho: float = 1.0) -> float:
        ib_bytes, nvl_bytes = _legs(model, ep, gpus_per_node, fp8)
        return max((ib_bytes + nvl_bytes) / (sms * per_sm * rho), ib_bytes / ib_bandwidth,
                   nvl_bytes / nvlink_bandwidth)

    measured: dict[tuple[int, str], float] = {}
    for ep, bws in DEEPEP_H800.items():
        for kind, bw in zip(("dispatch", "combine"), bws):
            logical = (_logical_copies(model, ep, gpus_per_node) * DEEPEP_TOKENS
                       * _bytes(model, kind == "dispatch"))
            measured[(ep, kind)] = logical / (bw * 1e9)
    # fixed costs: measured time minus the IB transfer, base per kind + shared per-peer slope
    pts = [(kind, ep - 1, measured[(ep, kind)] - transfer(ep, kind == "dispatch", DEEPEP_SMS))
           for ep in FIT_EPS for kind in ("dispatch", "combine")]
    kinds = ("dispatch", "combine")
    mp = {k: _mean([p for kk, p, _ in pts if kk == k]) for k in kinds}
    mf = {k: _mean([f for kk, _, f in pts if kk == k]) for k in kinds}
    slope = (sum((p - mp[k]) * (f - mf[k]) for k, p, f in pts)
             / sum((p - mp[k]) ** 2 for k, p, _ in pts))
    base = {k: mf[k] - slope * mp[k] for k in kinds}

    def row(ep: int, kind: str) -> Row:
        model_s = base[kind] + slope * (ep - 1) + transfer(ep, kind == "dispatch", DEEPEP_SMS)
        return Row(f"DeepEP EP{ep} {kind} (ms)", measured[(ep, kind)] * 1e3, model_s * 1e3)

    fitted = [row(ep, k) for ep in FIT_EPS for k in ("dispatch", "combine")]
    held = [row(ep, k) for ep in sorted(DEEPEP_H800) if ep not in FIT_EPS
            for k in ("dispatch", "combine")]
    # overlap rate: the trace's kernels (EP64, KNEE_SMS SMs, compute beside them)
    def trace_ms(kind: str, rho: float) -> float:
        fp8 = kind in DISPATCH_TYPE
        lat = base["dispatch" if fp8 else "combine"] + slope * 63
        return (lat + transfer(64, fp8, KNEE_SMS, rho)) * 1e3

    def loss(rho: float) -> float:
        return sum(math.log(trace_ms(k, rho) / ms) ** 2 for k, ms in TRACE_A2A_MS.items())

    rho = min((i / 1000 for i in range(1, 1001)), key=loss)
    fitted += [Row(f"trace {k} overlapped (ms)", ms, trace_ms(k, rho))
               for k, ms in TRACE_A2A_MS.items()]
    return CommFit(per_sm, base["dispatch"], base["combine"], slope, rho, tuple(fitted),
                   tuple(held))


def _mean(vals: list[float]) -> float:
    return sum(vals) / len(vals)
