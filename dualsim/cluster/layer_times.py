"""Per-layer times of one MoE layer for one micro-batch: the quantities DeepSeek's trace measures.

Used to check the cost model against the measured profile (docs/hardware-mode.md) and by the
what-if tools: attention and MLP forward and input-gradient times, the weight gradient, and the
four all-to-alls, all timed as they run inside an FB: compute beside a resident all-to-all kernel
(on the SMs it leaves, slowed by the interference), the all-to-all beside compute.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualsim.cluster.comm import A2A_KINDS, a2a_flow
from dualsim.cluster.compute import piece_times
from dualsim.cluster.profile import Profile
from dualsim.workload.layout import Layout


@dataclass(frozen=True)
class LayerTimes:
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


def moe_layer_times(layout: Layout, profile: Profile) -> LayerTimes:
    """The model's numbers for one MoE layer, compute and all-to-all overlapped (as in an FB):
    compute at the simulator's rate beside a resident all-to-all kernel, (S - s)/S x (1 -
    interference) of its all-SM time (DeepSeek's trace launched its GEMMs on 132 - 20 = 112 SMs),
    the all-to-all beside compute."""
    unit = next(u for s in layout.slices for u in s.units if u.moe and u.name.startswith("layer"))
    tokens = layout.microbatch_tokens
    shared = (profile.sms - profile.comm_sms) / profile.sms * (1 - profile.interference)
    attn, mlp = ([t / shared for t in piece_times(p, tokens, profile)] for p in unit.pieces)
    t = {k: a2a_flow(layout.model, profile, layout.ep, tokens, k).standalone_time(profile, True)
         for k in A2A_KINDS}
    return LayerTimes(attn[0], mlp[0], attn[1], mlp[1], attn[2] + mlp[2], t["dispatch"],
                            t["combine"], t["combine_bwd"], t["dispatch_bwd"])
