"""Calibration rows: one measured quantity of a trace and the cost model's value for it.

Each row is a disjoint set of kernels of one MoE layer (mean over the trace's layers), so a row
held out of the fit shares no kernel with a fitted one:

| row | kernels (ranges as in DeepSeek's trace) | the model's term |
|---|---|---|
| attn_core_f | attention-core kernels (FlashAttention/MLA) in ``attn(F)`` | core FLOPs, attention_fwd |
| attn_rest_f | all other kernels in ``attn(F)`` (projections, norms, RoPE, casts) | projection GEMMs |
| mlp_f | ``mlp(F)`` | expert GEMMs (+ router) |
| attn_core_i | attention-core kernels in ``attn(B)`` | 2.5 x core FLOPs, attention_bwd |
| attn_rest_i | all other kernels in ``attn(B)`` | projection input-grad GEMMs + recomputation |
| mlp_i | ``mlp(B)`` | expert input-grad GEMMs |
| attn_w, mlp_w | ``attn(W)``, ``mlp(W)`` | weight-grad GEMMs |
| a2a_dispatch_f | data-moving all-to-all kernel in ``dispatch(F)`` (FP8) | all-to-all ``dispatch`` |
| a2a_combine_f | data-moving all-to-all kernel in ``combine(F)`` (BF16) | ``combine`` |
| a2a_combine_b | data kernel in ``combine(B)``: a dispatch of FP8 gradients | ``combine_bwd`` |
| a2a_dispatch_b | data kernel in ``dispatch(B)``: a combine of BF16 gradients | ``dispatch_bwd`` |

The all-to-all rows leave out the notify/layout kernels (the model's latency is per kernel).
The model is evaluated as the trace ran: the all-to-all overlapped with compute (an FB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dualsim.calibrate.pieces import PieceTimes
from dualsim.cluster.comm import a2a_flow
from dualsim.cluster.compute import kernel_time
from dualsim.cluster.profile import Profile
from dualsim.workload.model import Model
from dualsim.workload.units import Gemm, Unit, model_units

CORE_KINDS = ("attention_fwd", "attention_bwd")
#: profile fields a trace of an MoE layer can determine (section.key); a field no row of the
#: trace depends on materially is left as it is (fit.dependencies)
FITTED_KEYS = ("efficiency.attention_fwd", "efficiency.dense_gemm", "efficiency.expert_gemm",
               "efficiency.attention_bwd", "efficiency.bf16_gemm", "comm.overlap_rate",
               "comm.a2a_latency")
#: rows held out of the fit unless --hold-out says otherwise: the forward pass and the
#: attention-core backward kernel set the parameters; the rest of the backward, the weight
#: gradients and the backward all-to-alls are predicted
DEFAULT_HOLD_OUT = ("attn_rest_i", "mlp_i", "attn_w", "mlp_w", "a2a_combine_b",
                    "a2a_dispatch_b")


@dataclass(frozen=True)
class Row:
    """A measured quantity (seconds) and the model's value for it under a profile."""

    name: str
    measured: float
    model: Callable[[Profile], float]
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
    units = model_units(setting.model, min(setting.sequence, setting.tokens))
    for u in units:
        if u.moe and u.name.startswith("layer"):
            return u
    from dualsim.errors import ProfileError

    raise ProfileError(f"model {setting.model.name} has no MoE layer; calibrating from an MoE "
                       "trace needs the MoE model that was traced (--model)")


def _kernels(gemms: tuple[Gemm, ...], core: bool | None) -> tuple[Gemm, ...]:
    if core is None:
        return gemms
    return tuple(g for g in gemms if (g.kind in CORE_KINDS) == core)


def build_rows(times: PieceTimes, setting: Setting) -> list[Row]:
    """Every row the trace has (pieces missing from the trace give no row)."""
    unit = moe_unit(setting)
    pieces = {p.name: p for p in unit.pieces}
    attn, mlp = pieces["attn"], pieces["mlp"]
    tok = setting.tokens

    def compute(gemms: tuple[Gemm, ...]) -> Callable[[Profile], float]:
        return lambda prof: kernel_time(gemms, tok, prof)

    def a2a(kind: str) -> Callable[[Profile], float]:
        def f(prof: Profile) -> float:
            t = a2a_flow(setting.model, prof, setting.ep, tok, kind)
            return t.standalone_time(prof, overlapped=True)
        return f

    spec: list[tuple[str, str, str | None, str | None, Callable[[Profile], float], str]] = [
        ("attn_core_f", "attn(F)", "attention_core", None,
         compute(_kernels(attn.fwd, True)), "attention-core kernels of attn(F)"),
        ("attn_rest_f", "attn(F)", None, "attention_core",
         compute(_kernels(attn.fwd, False)), "attn(F) without its attention-core kernels"),
        ("mlp_f", "mlp(F)", None, None, compute(mlp.fwd), "all kernels of mlp(F)"),
        ("attn_core_i", "attn(B)", "attention_core", None,
         compute(_kernels(attn.bwd_input, True)), "attention-core kernels of attn(B)"),
        ("attn_rest_i", "attn(B)", None, "attention_core",
         compute(_kernels(attn.bwd_input, False)), "attn(B) without its attention-core kernels"),
        ("mlp_i", "mlp(B)", None, None, compute(mlp.bwd_input), "all kernels of mlp(B)"),
        ("attn_w", "attn(W)", None, None, compute(attn.bwd_weight), "all kernels of attn(W)"),
        ("mlp_w", "mlp(W)", None, None, compute(mlp.bwd_weight),
         "all kernels of mlp(W) (two streams, summed)"),
    ]
    if setting.model.is_moe and setting.ep > 1:
        spec += [
            ("a2a_dispatch_f", "dispatch(F)", "a2a_data", None, a2a("dispatch"),
             "data-moving all-to-all kernel of dispatch(F) (FP8)"),
            ("a2a_combine_f", "combine(F)", "a2a_data", None, a2a("combine"),
             "data-moving all-to-all kernel of combine(F) (BF16)"),
            ("a2a_combine_b", "combine(B)", "a2a_data", None, a2a("combine_bwd"),
             "data-moving all-to-all kernel of combine(B) (a dispatch, FP8)"),
            ("a2a_dispatch_b", "dispatch(B)", "a2a_data", None, a2a("dispatch_bwd"),
             "data-moving all-to-all kernel of dispatch(B) (a combine, BF16)"),
        ]
    rows = []
    for name, key, cls, exclude, model, what in spec:
        if not times.of(key):
            continue
        measured = times.mean(key, cls=cls, exclude=exclude)
        if measured > 0:
            rows.append(Row(name, measured, model, what))
    return rows
