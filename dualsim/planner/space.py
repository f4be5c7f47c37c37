"""The planner's search space: one Candidate per configuration, and what a sweep shares.

A Candidate is a schedule family on R pipeline ranks, plus the knobs that vary from one
configuration to the next: EP degree, tokens per micro-batch, GEMM precision, communication SMs,
link what-ifs (None = the Setting's value, else the profile's or model's default). Its number of
micro-batches M is given, or (None) follows from the sweep's fixed global batch:
M = global batch x sequence / (tokens per micro-batch x pipelines), pipelines = GPUs / R
(``workload.layout.microbatches_for_global_batch``); a configuration that cannot hold the batch
is dropped with the reason. The Setting is what every configuration of one sweep shares: profile,
model, GPUs, memory cap, global batch. ``reference`` is the model preset's published layout on
the sweep's GPUs and global batch.

The default axes contain DeepSeek-V3's published layout (DualPipe, PP16, EP64, 4096-token
micro-batches, 20 comm SMs, FP8) and reach past it on every side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from dualsim.world import World

DEFAULT_SCHEDULES = ("dualpipe", "dualpipev", "zb-v", "zb-h2", "zb-h1", "interleaved-overlap",
                     "interleaved", "1f1b-overlap", "1f1b", "gpipe")
DEFAULT_RANKS = (4, 8, 16, 32)
DEFAULT_EP = (8, 16, 32, 64)
DEFAULT_MICROBATCH_SEQUENCES = (1, 2, 4)  # tokens per micro-batch: these many sequences
DEFAULT_COMM_SMS = (8, 12, 16, 20, 24, 32)


@dataclass(frozen=True)
class Candidate:
    """One configuration of the sweep (None = the Setting's, profile's or model's default;
    ``microbatches`` None = from the Setting's global batch)."""

    schedule: str
    ranks: int
    microbatches: int | None
    comm_sms: int | None = None
    ib_gbps: float | None = None
    nvlink_gbps: float | None = None
    ep: int | None = None
    microbatch_tokens: int | None = None
    precision: str | None = None

    def describe(self) -> str:
        """A short human label, e.g. ``dualpipe R=16 M=120 EP64, 4096 tok/mb, 20 comm SMs``."""
        m = f" M={self.microbatches}" if self.microbatches is not None else ""
        parts = [f"{self.schedule} R={self.ranks}{m}"
                 + (f" EP{self.ep}" if self.ep is not None else "")]
        if self.microbatch_tokens is not None:
            parts.append(f"{self.microbatch_tokens} tok/mb")
        if self.precision is not None:
            parts.append(self.precision.upper())
        if self.comm_sms is not None:
            parts.append(f"{self.comm_sms} comm SMs")
        return ", ".join(parts)


@dataclass(frozen=True)
class Setting:
    """What every configuration of one sweep shares (None = the model preset's value)."""

    profile: str
    model: str
    gpus: int
    memory_gb: float
    ep: int | None = None
    microbatch_tokens: int | None = None
    global_batch: int | None = None  # sequences per step, held fixed
    #: the values the user did not pass ("gpus", "global_batch"): the model preset's, which
    #: messages name as such rather than as a flag
    preset: tuple[str, ...] = ()

    def overrides(self, c: Candidate) -> dict[str, Any]:
        """The keyword arguments of simulate_hardware for ``c`` in this setting."""
        return {"ep": c.ep if c.ep is not None else self.ep, "gpus": self.gpus,
                "comm_sms": c.comm_sms,
                "microbatch_tokens": (c.microbatch_tokens if c.microbatch_tokens is not None
                                      else self.microbatch_tokens),
                "ib_gbps": c.ib_gbps, "nvlink_gbps": c.nvlink_gbps, "precision": c.precision}

    def world(self, c: Candidate, figures: dict[str, Any]) -> World:
        """The world of ``c`` as a plan records it: every knob resolved (from the simulation's
        figures where the candidate left it to a default), link what-ifs only when set."""
        gb = figures.get("global_batch")
        return World(self.profile, self.model, ep=figures.get("ep"), gpus=self.gpus,
                     comm_sms=figures.get("comm_sms_used"),
                     microbatch_tokens=figures.get("microbatch_tokens"),
                     global_batch=gb if isinstance(gb, int) else None,
                     precision=figures.get("precision"),
                     ib_gbps=c.ib_gbps, nvlink_gbps=c.nvlink_gbps)


def default_axes(model: Any, profile: Any) -> dict[str, list[Any]]:
    """The default value list of each axis for a model preset on a profile: every family, the
    default ranks, EP degrees and comm SMs for a MoE model (a dense one has no all-to-all: EP 1
    and the profile's comm SMs, which nothing else uses), micro-batches of 1, 2 and 4
    sequences, FP8 and BF16 where the profile has FP8."""
    seq = model.layout["sequence"]
    return {"schedules": list(DEFAULT_SCHEDULES), "ranks": list(DEFAULT_RANKS),
            "eps": list(DEFAULT_EP) if model.is_moe else [1],
            "microbatch_tokens": [seq * k for k in DEFAULT_MICROBATCH_SEQUENCES],
            "precisions": ["fp8", "bf16"] if profile.fp8_flops is not None else ["bf16"],
            "comm_sms": list(DEFAULT_COMM_SMS) if model.is_moe else [profile.comm_sms]}


def candidates(schedules: Sequence[str], ranks: Sequence[int],
               microbatches: Sequence[int] | None = None,
               comm_sms: Sequence[int | None] = (None,),
               ib_gbps: Sequence[float | None] = (None,),
               nvlink_gbps: Sequence[float | None] = (None,), *,
               eps: Sequence[int | None] = (None,),
               microbatch_tokens: Sequence[int | None] = (None,),
               precisions: Sequence[str | None] = (None,)) -> list[Candidate]:
    """The cross product, in a fixed order (family, R, EP, tokens, precision, comm SMs, links,
    M). Without ``microbatches`` M follows from the Setting's global batch."""
    mbs: Sequence[int | None] = microbatches if microbatches else (None,)
    return [Candidate(name, r, m, sms, ib, nv, ep, tok, prec)
            for name in schedules for r in ranks for ep in eps for tok in microbatch_tokens
            for prec in precisions for sms in comm_sms for ib in ib_gbps for nv in nvlink_gbps
            for m in mbs]


def reference(layout: dict[str, Any], comm_sms: int, precision: str | None = None) -> Candidate:
    """The model preset's published layout (``default_layout``): its family, ranks, EP and
    micro-batch tokens, the profile's comm SMs and ``precision`` (the model's on this profile),
    with M from the sweep's global batch on the sweep's GPUs."""
    return Candidate(layout["schedule"], layout["ranks"], None, comm_sms, ep=layout["ep"],
                     microbatch_tokens=layout["microbatch_tokens"], precision=precision)


def same_configuration(a: Candidate, b: Candidate, setting: Setting) -> bool:
    """Whether two candidates simulate the same thing once the Setting's values are filled in."""
    def filled(c: Candidate) -> Candidate:
        o = setting.overrides(c)
        return replace(c, ep=o["ep"], microbatch_tokens=o["microbatch_tokens"])
    return filled(a) == filled(b)
