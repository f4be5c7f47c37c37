"""Calibration rows: one measured quantity of a trace and the cost model's value for it.

Each row is a disjoint set of kernels of one MoE layer (mean over the trace's layers), so a row
held out of the fit shares no kernel with a fitted one. Trace kernel classes (pieces.py) map onto
the cost model's kernel types (dualsim/workload/units.py): ``gemm`` <-> Gemm, ``attention_core``
<-> AttentionCore, ``other`` <-> Elementwise.

| row | kernels (ranges as in DeepSeek's trace) | the model's term |
|---|---|---|
| attn_core_f, attn_core_i | attention-core kernels of ``attn(F)``, ``attn(B)`` | AttentionCore |
| attn_gemm_f, attn_gemm_i | GEMM kernels of ``attn(F)``, ``attn(B)`` (projections, router) | Gemm (fprop; dgrad + recomputed up-projections) |
| mlp_gemm_f, mlp_gemm_i | GEMM kernels of ``mlp(F)``, ``mlp(B)`` (experts) | Gemm |
| attn_other_f, attn_other_i, mlp_other_f, mlp_other_i | the other kernels (norms, casts, RoPE, permutes, SwiGLU) | Elementwise |
| attn_gemm_w, mlp_gemm_w | GEMM kernels of ``attn(W)``, ``mlp(W)`` | Gemm (wgrad) |
| a2a_dispatch_f | data-moving all-to-all kernel in ``dispatch(F)`` (FP8) | all-to-all ``dispatch`` |
| a2a_combine_f | data-moving all-to-all kernel in ``combine(F)`` (BF16) | ``combine`` |
| a2a_combine_b | data kernel in ``combine(B)``: a dispatch of FP8 gradients | ``combine_bwd`` |
| a2a_dispatch_b | data kernel in ``dispatch(B)``: a combine of BF16 gradients | ``dispatch_bwd`` |

Kernels the cost model has no term for (``mlp(W)``'s FP8 casts and transposes: the model's
weight-gradient pass is its GEMMs only) are rows without a model: fit.py lists them as
``unmodelled`` and leaves them out of both tables. The all-to-all rows leave out the notify/layout kernels (the model's latency is per kernel).
The model is evaluated as the trace ran: compute kernels on the SMs the communication kernels
leave (DeepSeek's GEMMs were launched on 112 of 132 SMs), the all-to-all overlapped with compute
(an FB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dualsim.calibrate.pieces import PieceTimes
from dualsim.cluster.comm import a2a_flow
from dualsim.cluster.compute import kernel_time
from dualsim.cluster.profile import Profile
from dualsim.workload.model import Model
from dualsim.workload.units import AttentionCore, Elementwise, Gemm, Kernel, Unit, model_units

#: trace kernel class -> cost model kernel type
CLASS_TYPES = {"gemm": Gemm, "attention_core": AttentionCore, "other": Elementwise}
#: profile fields a trace of an MoE layer can determine (section.key); a field no row of the
#: trace depends on materially is left as it is (fit.dependencies). The GEMM mainloop fractions
#: of forward and input-gradient GEMMs come from DeepGEMM's table (`dualsim profiles
#: --gemm-fit`), not from the trace: the trace's GEMM rows are predictions of that fit.
FITTED_KEYS = ("efficiency.attention_fwd", "efficiency.attention_bwd", "efficiency.elementwise",
               "gemm.fp8_wgrad_mainloop", "comm.a2a_overlap_rate", "comm.interference")
#: rows fitted unless --hold-out says otherwise (every other row is held out and predicted):
#: the attention-core kernels, the forward pass's elementwise kernels, the experts' weight
#: gradient, the forward all-to-alls and the GEMM kernel pairs (interference)
DEFAULT_FITTED = ("pairs_gemm", "attn_core_f", "attn_other_f", "attn_core_i", "mlp_other_f",
                  "mlp_gemm_w", "a2a_dispatch_f", "a2a_combine_f")


@dataclass(frozen=True)
class Row:
    """A measured quantity (seconds) and the model's value for it under a profile."""

    name: str
    measured: float
    model: Callable[[Profile], float] | None  # None: the cost model has no such kernels
    what: str


@dataclass(frozen=True)
class Setting:
    """What the traced job ran: the model, its EP degree and tokens per micro-batch."""

    model: Model
    ep: int
    tokens: int
    sequence: int


def moe_unit(setting: Setting) -> Unit:
    """The first MoE layer of the model (per token), as the cost model sees it."""
    units = model_units(setting.model, min(setting.sequence, setting.tokens), setting.ep)
    for u in units:
        if u.moe and u.name.startswith("layer"):
            return u
    from dualsim.errors import ProfileError

    raise ProfileError(f"model {setting.model.name} has no MoE layer; calibrating from an MoE "
                       "trace needs the MoE model that was traced (--model)")


def _shared_rate(prof: Profile) -> float:
    """Compute rate beside a resident all-to-all kernel, relative to all SMs alone."""
    return (prof.sms - prof.comm_sms) / prof.sms * (1.0 - prof.interference)


def _of(kernels: tuple[Kernel, ...], cls: str | None) -> tuple[Kernel, ...]:
    """The kernels of one trace class (all of them for None)."""
    if cls is None:
        return kernels
    return tuple(k for k in kernels if isinstance(k, CLASS_TYPES[cls]))


def build_rows(times: PieceTimes, setting: Setting) -> list[Row]:
    """Every row the trace has (pieces missing from the trace give no row)."""
    unit = moe_unit(setting)
    pieces = {p.name: p for p in unit.pieces}
    tok = setting.tokens

    def compute(kernels: tuple[Kernel, ...]) -> Callable[[Profile], float]:
        # as traced: beside a resident all-to-all kernel (the FB hid 96% of it), at the
        # simulator's rate (S - s)/S x (1 - interference) of the all-SM time
        return lambda prof: kernel_time(kernels, tok, prof) / _shared_rate(prof)

    def a2a(kind: str) -> Callable[[Profile], float]:
        def f(prof: Profile) -> float:
            t = a2a_flow(setting.model, prof, setting.ep, tok, kind)
            return t.standalone_time(prof, overlapped=True)
        return f

    spec: list[tuple[str, str, str | None, Callable[[Profile], float] | None, str]] = []
    for piece in ("attn", "mlp"):
        p = pieces[piece]
        for phase, kernels, trace_phase in (("f", p.fwd, "F"), ("i", p.bwd_input, "B"),
                                            ("w", p.bwd_weight, "W")):
            key = f"{piece}({trace_phase})"
            for cls, label in (("attention_core", "core"), ("gemm", "gemm"),
                               ("other", "other")):
                mine = _of(kernels, cls)
                spec.append((f"{piece}_{label}_{phase}", key, cls,
                             compute(mine) if mine else None, f"{cls} kernels of {key}"))
    if setting.model.is_moe and setting.ep > 1:
        spec += [
            ("a2a_dispatch_f", "dispatch(F)", "a2a_data", a2a("dispatch"),
             "data-moving all-to-all kernel of dispatch(F) (FP8)"),
            ("a2a_combine_f", "combine(F)", "a2a_data", a2a("combine"),
             "data-moving all-to-all kernel of combine(F) (BF16)"),
            ("a2a_combine_b", "combine(B)", "a2a_data", a2a("combine_bwd"),
             "data-moving all-to-all kernel of combine(B) (a dispatch, FP8)"),
            ("a2a_dispatch_b", "dispatch(B)", "a2a_data", a2a("dispatch_bwd"),
             "data-moving all-to-all kernel of dispatch(B) (a combine, BF16)"),
        ]
    rows = []
    pairs = times.pairs
    if "gemm" in pairs and pairs["gemm"].alone > 0:
        g = pairs["gemm"]
        # GEMMs launched on a fixed grid (DeepSeek: 112 CTAs) lose no SMs, only interference
        rows.append(Row("pairs_gemm", g.shared,
                        lambda prof: g.alone / (1.0 - prof.interference),
                        f"{g.positions} GEMM kernels with a comm kernel resident vs alone"))
    if "other" in pairs and pairs["other"].alone > 0:
        o = pairs["other"]
        # full-GPU elementwise kernels alone ran on all SMs: they lose the comm SMs too
        rows.append(Row("pairs_other", o.shared,
                        lambda prof: o.alone * prof.sms / (prof.sms - prof.comm_sms)
                        / (1.0 - prof.interference),
                        f"{o.positions} elementwise kernels with a comm kernel resident vs "
                        "alone"))
    for name, key, cls, model, what in spec:
        if not times.of(key):
            continue
        measured = times.mean(key, cls=cls)
        if measured > 0:
            rows.append(Row(name, measured, model, what))
    return rows
