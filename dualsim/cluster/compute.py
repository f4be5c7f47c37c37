"""Compute cost model: a piece's kernels on a hardware profile -> seconds on the whole GPU.

Each kernel of a piece (dualsim/workload/units.py) is timed on ALL the GPU's SMs; sharing SMs with
communication kernels is the simulator's business, not this module's.

* a weight GEMM by its shape for the given tokens (dualsim/cluster/gemm.py: tile/wave roofline
  with the profile's ``[gemm]`` parameters): M = tokens x rows per token / groups (routed
  experts: tokens x experts_per_token / (routed_experts / EP) per expert, the balanced
  routing; ``imbalance`` scales it for the hottest GPU); its dgrad and wgrad permute the shape;
* the attention core: FLOPs / (BF16 peak x the profile's attention_fwd / attention_bwd);
* elementwise kernels: bytes / (HBM bandwidth x the profile's ``elementwise`` fraction).

``unit_weight`` is the balancing weight of a model unit (its F+I+W seconds), used to spread layers
over the pipeline's slices. ``precision_for`` settles the GEMM precision of a model on a profile.
See docs/hardware-mode.md for the assumptions and the fits.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Sequence

from dualsim.cluster.gemm import GemmShape, gemm_time
from dualsim.cluster.profile import Profile
from dualsim.errors import ProfileError
from dualsim.workload.model import Model
from dualsim.workload.units import AttentionCore, Elementwise, Gemm, Kernel, Piece, Unit

PRECISIONS = ("fp8", "bf16")


def gemm_shape(g: Gemm, tokens: float, imbalance: float = 1.0) -> GemmShape:
    """The concrete GEMM of ``g`` for ``tokens`` tokens (per group rows rounded up)."""
    rows = tokens * g.rows * (imbalance if g.routed else 1.0) / g.groups
    m = math.ceil(rows - 1e-9) if rows > 0 else 0
    grouped = g.groups > 1 or g.routed
    if g.role == "dgrad":
        return GemmShape(g.groups, m, g.k, g.n, grouped)
    if g.role == "wgrad":
        return GemmShape(g.groups, g.k, g.n, m, False)
    return GemmShape(g.groups, m, g.n, g.k, grouped)


def one_kernel_time(kernel: Kernel, tokens: float, profile: Profile, *,
                    sms: int | None = None, imbalance: float = 1.0) -> float:
    """Seconds of one kernel for ``tokens`` tokens, on ``sms`` SMs (default: all of them)."""
    if isinstance(kernel, Gemm):
        return gemm_time(gemm_shape(kernel, tokens, imbalance), kernel.dtype, sms=profile.sms,
                         peak_flops=profile.peak_flops(kernel.dtype),
                         hbm_bandwidth=profile.hbm_bandwidth, params=profile.gemm,
                         sms_used=sms, wgrad=kernel.role == "wgrad")
    share = 1.0 if sms is None else sms / profile.sms
    if isinstance(kernel, AttentionCore):
        rate = profile.peak_flops(kernel.dtype) * profile.efficiency[kernel.kind] * share
        return kernel.flops * tokens / rate
    assert isinstance(kernel, Elementwise)
    return kernel.nbytes * tokens / (profile.hbm_bandwidth * profile.efficiency["elementwise"])


def kernel_time(kernels: Sequence[Kernel], tokens: float, profile: Profile, *,
                sms: int | None = None, imbalance: float = 1.0) -> float:
    """Seconds for ``tokens`` tokens through these kernels, on all SMs unless ``sms`` is given.

    ``imbalance`` (max / mean tokens per GPU) scales the rows of the routed-expert GEMMs.
    """
    return sum(one_kernel_time(k, tokens, profile, sms=sms, imbalance=imbalance)
               for k in kernels)


#: piece_times results by (profile identity, piece, tokens, SMs, imbalance); the profile is
#: kept with its entry so its id cannot be reused while cached. A model's layers share pieces,
#: so a simulation or a planner sweep computes each piece's times once instead of per layer.
_PIECE_TIMES: dict[tuple, tuple[Profile, tuple[float, float, float]]] = {}
_PIECE_TIMES_MAX = 100_000


def piece_times(piece: Piece, tokens: float, profile: Profile, *, sms: int | None = None,
                imbalance: float = 1.0) -> tuple[float, float, float]:
    """(F, I, W) seconds of one piece for ``tokens`` tokens, on all SMs unless ``sms``."""
    key = (id(profile), piece, tokens, sms, imbalance)
    hit = _PIECE_TIMES.get(key)
    if hit is not None and hit[0] is profile:
        return hit[1]
    kw = {"sms": sms, "imbalance": imbalance}
    times = (kernel_time(piece.fwd, tokens, profile, **kw),
             kernel_time(piece.bwd_input, tokens, profile, **kw),
             kernel_time(piece.bwd_weight, tokens, profile, **kw))
    if len(_PIECE_TIMES) >= _PIECE_TIMES_MAX:
        _PIECE_TIMES.clear()
    _PIECE_TIMES[key] = (profile, times)
    return times


def unit_weight(profile: Profile, tokens: float = 4096.0,
                sms: int | None = None) -> Callable[[Unit], float]:
    """Balancing weight of a unit on this profile: its F+I+W compute seconds (on ``sms``)."""
    def weight(unit: Unit) -> float:
        return sum(sum(piece_times(p, tokens, profile, sms=sms)) for p in unit.pieces)
    return weight


def check_precision(precision: str) -> None:
    """ProfileError unless ``precision`` is one of PRECISIONS (``--precision``)."""
    if precision not in PRECISIONS:
        raise ProfileError(f"--precision must be fp8 or bf16, got {precision!r}")


def precision_for(model: Model, profile: Profile,
                  precision: str | None = None) -> tuple[Model, list[str]]:
    """The model with its GEMM precision settled for this profile, and any warning.

    ``precision`` (``--precision``) overrides the preset's; an explicit "fp8" on a profile
    without FP8 is an error, the preset's own "fp8" there falls back to BF16 with a warning.
    A BF16 model runs BF16 GEMMs, moves BF16 dispatch bytes and caches BF16 activations.
    """
    if precision is not None:
        check_precision(precision)
    want = precision or model.gemm_dtype
    warnings = []
    if want == "fp8" and profile.fp8_flops is None:
        if precision is not None:
            raise ProfileError(f"--precision fp8: profile {profile.name} has no FP8 (no "
                               "gpu.fp8_peak); use --precision bf16 or another profile")
        warnings.append(f"profile {profile.name} has no FP8: model {model.name} runs in BF16 "
                        "(GEMMs, dispatch, cached activations); --precision bf16 says so "
                        "explicitly")
        want = "bf16"
    if want == model.gemm_dtype:
        return model, warnings
    return replace(model, gemm_dtype=want), warnings
