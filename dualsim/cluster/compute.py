"""Compute cost model: FLOPs of a piece's kernels on a hardware profile -> seconds.

Compute time of a kernel = FLOPs / (dtype peak x SMs left to compute / all SMs x efficiency of
its kernel kind), all from the profile. ``unit_weight`` is the balancing weight of a model unit
(its F+I+W seconds), used to spread layers over the pipeline's slices. See
docs/hardware-mode.md for the assumptions.
"""

from __future__ import annotations

from typing import Callable, Sequence

from dualsim.cluster.profile import Profile
from dualsim.workload.units import Gemm, Piece, Unit


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


def unit_weight(profile: Profile, tokens: float = 4096.0) -> Callable[[Unit], float]:
    """Balancing weight of a unit on this profile: its F+I+W compute seconds."""
    def weight(unit: Unit) -> float:
        return sum(sum(piece_times(p, tokens, profile)) for p in unit.pieces)
    return weight
