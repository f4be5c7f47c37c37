"""The planner's search space: one Candidate per configuration, and what a sweep shares.

A Candidate is a schedule family on R pipeline ranks with M micro-batches, plus the knobs that
vary from one configuration to the next (communication SMs, link what-ifs, EP degree, tokens
per micro-batch; None = the Setting's value, else the profile's or model's default). The
Setting is what every configuration of one sweep shares: profile, model, GPUs, memory cap.
``reference`` is the model preset's published layout on the sweep's GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from dualsim.world import World

DEFAULT_SCHEDULES = ("dualpipe", "dualpipev", "zb-v", "zb-h2", "zb-h1", "interleaved-overlap",
                     "interleaved", "1f1b-overlap", "1f1b", "gpipe")
DEFAULT_RANKS = (8, 16)
DEFAULT_COMM_SMS = (16, 20, 24)
MB_PER_RANK = (2, 3, 4)  # default micro-batches: these multiples of R (legal for every family)


@dataclass(frozen=True)
class Candidate:
    """One configuration of the sweep (None = the Setting's, profile's or model's default)."""

    schedule: str
    ranks: int
    microbatches: int
    comm_sms: int | None = None
    ib_gbps: float | None = None
    nvlink_gbps: float | None = None
    ep: int | None = None
    microbatch_tokens: int | None = None
    precision: str | None = None

    def describe(self) -> str:
        """A short human label, e.g. ``dualpipe R=16 M=120, 20 comm SMs``."""
        sms = f", {self.comm_sms} comm SMs" if self.comm_sms is not None else ""
        ep = f", EP{self.ep}" if self.ep is not None else ""
        return f"{self.schedule} R={self.ranks} M={self.microbatches}{ep}{sms}"


@dataclass(frozen=True)
class Setting:
    """What every configuration of one sweep shares."""

    profile: str
    model: str
    gpus: int
    memory_gb: float
    ep: int | None = None
    microbatch_tokens: int | None = None

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
        o = self.overrides(c)
        return World(self.profile, self.model,
                     ep=o["ep"] if o["ep"] is not None else figures.get("ep"),
                     gpus=self.gpus,
                     comm_sms=c.comm_sms if c.comm_sms is not None else figures.get("comm_sms_used"),
                     microbatch_tokens=(o["microbatch_tokens"] if o["microbatch_tokens"] is not None
                                        else figures.get("microbatch_tokens")),
                     global_batch=gb if isinstance(gb := figures.get("global_batch"), int) else None,
                     precision=c.precision or figures.get("precision"),
                     ib_gbps=c.ib_gbps, nvlink_gbps=c.nvlink_gbps)


def candidates(schedules: Sequence[str], ranks: Sequence[int],
               microbatches: Sequence[int] | None, comm_sms: Sequence[int | None],
               ib_gbps: Sequence[float | None] = (None,),
               nvlink_gbps: Sequence[float | None] = (None,)) -> list[Candidate]:
    """The cross product, in a fixed order. Without ``microbatches``: 2R, 3R and 4R per R."""
    out = []
    for name in schedules:
        for r in ranks:
            mbs = microbatches if microbatches else [k * r for k in MB_PER_RANK]
            for m in mbs:
                for sms in comm_sms:
                    for ib in ib_gbps:
                        for nv in nvlink_gbps:
                            out.append(Candidate(name, r, m, sms, ib, nv))
    return out


def reference(layout: dict[str, Any], comm_sms: int, setting: Setting) -> Candidate:
    """The model preset's published layout (``default_layout``) on the sweep's GPUs, with the
    profile's comm SMs and the preset's global batch (micro-batches follow from the pipelines;
    at least one)."""
    pipelines = max(1, setting.gpus // layout["ranks"])
    tokens = layout["global_batch"] * layout["sequence"]
    mbs = max(1, tokens // (layout["microbatch_tokens"] * pipelines))
    ep = None if setting.ep in (None, layout["ep"]) else layout["ep"]
    mt = (None if setting.microbatch_tokens in (None, layout["microbatch_tokens"])
          else layout["microbatch_tokens"])
    return Candidate(layout["schedule"], layout["ranks"], mbs, comm_sms, ep=ep,
                     microbatch_tokens=mt)


def same_configuration(a: Candidate, b: Candidate, setting: Setting) -> bool:
    """Whether two candidates simulate the same thing once the Setting's values are filled in."""
    def filled(c: Candidate) -> Candidate:
        o = setting.overrides(c)
        return replace(c, ep=o["ep"], microbatch_tokens=o["microbatch_tokens"])
    return filled(a) == filled(b)
