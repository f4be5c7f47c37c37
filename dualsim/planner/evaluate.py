"""What becomes of one configuration: screened, then (if promising) simulated.

Two steps, each a plain function of (candidate, setting) so any executor can run it:

- ``screen``: the family's rules, the layout, the memory (exact: it does not depend on timing,
  see sim/unit_model.py) and an upper bound of the throughput from a lower bound of the step.
  Rule, layout and memory failures are dropped here with their reason.
- ``simulate``: the SimPy engine, whose figures are the ones ``dualsim simulate`` prints.

Profiles, models and schedules are parsed or generated once per process (``_context``), not
once per configuration.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from dualsim.errors import DualsimError, ScheduleError
from dualsim.planner.space import Candidate, Setting

#: relative slack on the throughput bound: the bound and the simulation add the same durations
#: in different orders, so an exact bound can come out a few ulps low
BOUND_SLACK = 1e-9


@dataclass
class Outcome:
    """A configuration and what became of it.

    ``status``: "open" (screened, waiting), "kept" (simulated, fits), "dropped" (with its
    reason) or "pruned" (its throughput bound is below what the search already holds).
    ``bound``: an upper bound of its tokens/s per GPU (None when dropped before it).
    """

    candidate: Candidate
    status: str
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    order: int = 0  # position in the sweep, for a deterministic tie-break
    bound: float | None = None
    reference: bool = False  # the model's published layout

    @property
    def kept(self) -> bool:
        return self.status == "kept"

    @property
    def kind(self) -> str:
        """What dropped it: "rule", "layout" or "memory" ("" when not dropped)."""
        return self.reason.split(":")[0] if self.status == "dropped" else ""

    def row(self) -> dict[str, Any]:
        """The configuration and its figures, numbers as every --json output shows them."""
        from dualsim.sim.result import json_number

        d: dict[str, Any] = asdict(self.candidate)
        d.update({k: json_number(v) for k, v in self.figures.items()})
        d["bound_tokens_per_s_per_gpu"] = json_number(self.bound)
        d["status"] = self.status
        d["reference"] = self.reference
        d["reason"] = self.reason
        return d


def count_kinds(outcomes: list[Outcome]) -> dict[str, int]:
    """How many configurations each kind of reason dropped, kinds in alphabetical order."""
    return dict(sorted(Counter(o.kind for o in outcomes).items()))


class _Context:
    """The parsed profile and model of a Setting, and the schedules generated so far."""

    def __init__(self, setting: Setting) -> None:
        from dualsim.cluster.profile import load_profile
        from dualsim.workload.model import load_model

        self.profile = load_profile(setting.profile)
        self.model = load_model(setting.model)
        self.schedules: dict[tuple[str, int, int], Any] = {}

    def schedule(self, name: str, ranks: int, mbs: int) -> Any:
        """(Schedule, ScheduleIndex) of a family, generated once."""
        from dualsim.generators import generate
        from dualsim.sim.unit_model import ScheduleIndex

        key = (name, ranks, mbs)
        hit = self.schedules.get(key)
        if hit is None:
            if len(self.schedules) >= 64:  # a sweep visits a few dozen; bound the memory
                self.schedules.clear()
            s = generate(name, ranks, mbs)
            hit = self.schedules[key] = (s, ScheduleIndex.of(s))
        return hit


_CONTEXTS: dict[tuple[str, str], _Context] = {}


def _context(setting: Setting) -> _Context:
    key = (setting.profile, setting.model)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = _CONTEXTS[key] = _Context(setting)
    return ctx


def _step_model(c: Candidate, setting: Setting) -> Any:
    """The candidate's StepModel; ScheduleError or DualsimError (layout) for what cannot run."""
    from dualsim.generators import check
    from dualsim.sim.hardware_mode import hardware_setup
    from dualsim.sim.unit_model import StepModel

    check(c.schedule, c.ranks, c.microbatches)
    ctx = _context(setting)
    s, index = ctx.schedule(c.schedule, c.ranks, c.microbatches)
    prof, layout, _ = hardware_setup(s, ctx.profile, ctx.model, **setting.overrides(c))
    return StepModel(index, prof, layout)


def screen(c: Candidate, setting: Setting) -> Outcome:
    """Rules, layout, memory and the throughput bound. Never raises a DualsimError."""
    try:
        sm = _step_model(c, setting)
    except ScheduleError as e:
        return Outcome(c, "dropped", f"rule: {e.message}")
    except DualsimError as e:
        return Outcome(c, "dropped", f"layout: {e.message}")
    lay, prof = sm.layout, sm.profile
    peaks = sm.peak_memory_gb()
    figures: dict[str, Any] = {"peak_memory_gb": round(max(peaks), 6), "ep": lay.ep,
                               "gpus": lay.gpus, "comm_sms_used": prof.comm_sms,
                               "microbatch_tokens": lay.microbatch_tokens,
                               "global_batch": _sequences(lay),
                               "precision": lay.model.gemm_dtype}
    bound = lay.tokens_per_step / sm.lower_bound() / lay.gpus * (1 + BOUND_SLACK)
    if figures["peak_memory_gb"] > setting.memory_gb:
        worst = max(range(len(peaks)), key=peaks.__getitem__)
        return Outcome(c, "dropped", f"memory: rank {worst} needs "
                       f"{figures['peak_memory_gb']:.1f} GB, over the {setting.memory_gb:g} GB cap",
                       figures, bound=bound)
    return Outcome(c, "open", figures=figures, bound=bound)


def _sequences(lay: Any) -> int | float:
    """Sequences per step (the global batch), an int when whole (as hardware mode reports)."""
    tokens, seq = lay.tokens_per_step, lay.model.layout["sequence"]
    return tokens // seq if tokens % seq == 0 else tokens / seq


def simulate(c: Candidate, setting: Setting) -> dict[str, Any]:
    """Figures of a screened candidate from the SimPy engine (what `dualsim simulate` gives)."""
    from dualsim.sim.hardware_mode import simulate_hardware

    ctx = _context(setting)
    s, _ = ctx.schedule(c.schedule, c.ranks, c.microbatches)
    r = simulate_hardware(s, ctx.profile, ctx.model, **setting.overrides(c))
    e = r.extra
    return {"step_time_s": float(e["step_time_s"]),
            "tokens_per_s_per_gpu": float(e["tokens_per_s_per_gpu"]),
            "mfu": float(e["mfu"]), "peak_memory_gb": float(e["peak_memory_gb"]),
            "bubble_rate": float(r.bubble_rate), "ep": e.get("ep"), "gpus": e.get("gpus"),
            "comm_sms_used": e.get("comm_sms"), "microbatch_tokens": e.get("microbatch_tokens"),
            "global_batch": e.get("global_batch"), "precision": e.get("precision")}
