"""What becomes of one configuration: screened, then (if promising) simulated.

Three steps, each a plain function of (candidate, setting) so any executor can run it:

- ``screen``: the global batch, the family's rules, the layout, the memory (exact: it does not
  depend on timing, see sim/unit_model.py) and an upper bound of the throughput from a cheap
  lower bound of the step (the busiest rank's work). Batch, rule, layout and memory failures are
  dropped here with their reason.
- ``refine``: a tighter bound, from the whole step laid out unit by unit.
- ``simulate``: the SimPy engine, whose figures are the ones ``dualsim simulate`` prints.

Profiles, models and schedules are parsed or generated once per process (``_context``), not
once per configuration.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
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
        """What dropped it: "batch", "rule", "layout" or "memory" ("" when not dropped)."""
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
        self.profiles: dict[tuple, Any] = {}
        self.layouts: dict[tuple, Any] = {}

    def what_if(self, comm_sms: int | None, ib: float | None, nv: float | None) -> Any:
        """The profile with these overrides, one object per distinct what-if (so per-piece
        times computed for one configuration serve the next)."""
        key = (comm_sms, ib, nv)
        prof = self.profiles.get(key)
        if prof is None:
            prof = self.profiles[key] = self.profile.with_overrides(
                comm_sms=comm_sms, ib_gbps=ib, nvlink_gbps=nv)
        return prof

    def setup(self, c: Candidate, setting: Setting) -> tuple[Any, Any]:
        """hardware_setup's (profile, layout) for ``c``. The layout does not depend on the
        comm SMs (layers are balanced by their compute on all SMs), so configurations that
        differ only there share one."""
        from dualsim.sim.hardware_mode import hardware_setup

        o = setting.overrides(c)
        sms, ib, nv = o.pop("comm_sms"), o.pop("ib_gbps"), o.pop("nvlink_gbps")
        key = (c.schedule, c.ranks, c.microbatches, ib, nv, tuple(sorted(o.items())))
        layout = self.layouts.get(key)
        if layout is None:
            if len(self.layouts) >= 256:  # a sweep visits them in order; bound the memory
                self.layouts.clear()
            s, _ = self.schedule(c.schedule, c.ranks, c.microbatches)
            _, layout, _ = hardware_setup(s, self.what_if(None, ib, nv), self.model, **o)
            self.layouts[key] = layout
        return self.what_if(sms, ib, nv), layout

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
    from dualsim.sim.unit_model import StepModel

    check(c.schedule, c.ranks, c.microbatches)
    ctx = _context(setting)
    _, index = ctx.schedule(c.schedule, c.ranks, c.microbatches)
    prof, layout = ctx.setup(c, setting)
    return StepModel(index, prof, layout)


def _batch(c: Candidate, setting: Setting) -> dict[str, Any]:
    """The arguments of microbatches_for_global_batch for ``c`` (whose M is not given)."""
    lay = _context(setting).model.layout
    tokens = c.microbatch_tokens or setting.microbatch_tokens or lay["microbatch_tokens"]
    preset = set(setting.preset) | ({"global_batch"} if setting.global_batch is None else set())
    return {"global_batch": setting.global_batch or lay["global_batch"],
            "sequence": lay["sequence"], "microbatch_tokens": tokens, "ranks": c.ranks,
            "gpus": setting.gpus, "preset": sorted(preset)}


def with_microbatches(c: Candidate, setting: Setting) -> Candidate:
    """``c`` with its M: given, or from the Setting's global batch (default the model's).
    ProfileError when R does not divide the GPUs or the batch does not split."""
    from dualsim.workload.layout import microbatches_for_global_batch

    if c.microbatches is not None:
        return c
    return replace(c, microbatches=microbatches_for_global_batch(**_batch(c, setting)))


def check_rules(c: Candidate, setting: Setting) -> Candidate:
    """with_microbatches, then the family's rules (generators.check). ScheduleError for a
    broken rule; when M came from the global batch, it names the global batches that would
    pass (the user gave no --microbatches to change)."""
    from dualsim.generators import accepts, check
    from dualsim.workload.layout import global_batch_rule

    m = with_microbatches(c, setting)
    try:
        check(m.schedule, m.ranks, m.microbatches)
    except ScheduleError as e:
        if c.microbatches is not None:
            raise
        raise global_batch_rule(e, lambda mbs: accepts(c.schedule, c.ranks, mbs),
                                **_batch(c, setting)) from None
    return m


def screen(c: Candidate, setting: Setting) -> Outcome:
    """The batch, rules, layout, memory and the throughput bound. Never raises a DualsimError."""
    from dualsim.workload.layout import check_pipelines

    try:
        check_pipelines(setting.gpus, c.ranks, preset=setting.preset)
    except DualsimError as e:
        return Outcome(c, "dropped", f"layout: {e.cli}")
    given = c
    try:
        c = with_microbatches(c, setting)
    except DualsimError as e:
        return Outcome(c, "dropped", f"batch: {e.cli}")
    try:
        check_rules(given, setting)
        sm = _step_model(c, setting)
    except ScheduleError as e:
        return Outcome(c, "dropped", f"rule: {e.cli}")
    except DualsimError as e:
        return Outcome(c, "dropped", f"layout: {e.cli}")
    lay, prof = sm.layout, sm.profile
    static = sm.static_memory_gb()
    if max(static) > setting.memory_gb:  # hopeless before any activation: skip the rest
        worst = max(range(len(static)), key=static.__getitem__)
        return Outcome(c, "dropped", f"memory: rank {worst} needs at least {static[worst]:.1f} "
                       f"GB (weights, gradients, optimizer state, buffers), over the "
                       f"{setting.memory_gb:g} GB cap")
    peaks = sm.peak_memory_gb()
    figures: dict[str, Any] = {"peak_memory_gb": round(max(peaks), 6), "ep": lay.ep,
                               "gpus": lay.gpus, "comm_sms_used": prof.comm_sms,
                               "microbatch_tokens": lay.microbatch_tokens,
                               "global_batch": _sequences(lay),
                               "precision": lay.model.gemm_dtype}
    bound = _throughput(sm, sm.busy_lower_bound())
    if figures["peak_memory_gb"] > setting.memory_gb:
        worst = max(range(len(peaks)), key=peaks.__getitem__)
        return Outcome(c, "dropped", f"memory: rank {worst} needs "
                       f"{figures['peak_memory_gb']:.1f} GB, over the {setting.memory_gb:g} GB cap",
                       figures, bound=bound)
    return Outcome(c, "open", figures=figures, bound=bound)


def _throughput(sm: Any, step: float) -> float:
    """Tokens/s per GPU of a step of ``step`` seconds (with the bound's slack)."""
    lay = sm.layout
    return lay.tokens_per_step / step / lay.gpus * (1 + BOUND_SLACK)


def refine(c: Candidate, setting: Setting) -> float:
    """The tighter throughput bound of a screened candidate: the whole step laid out."""
    sm = _step_model(c, setting)
    return _throughput(sm, sm.lower_bound())


def _sequences(lay: Any) -> int | float:
    """Sequences per step (the global batch), an int when whole (as hardware mode reports)."""
    tokens, seq = lay.tokens_per_step, lay.model.layout["sequence"]
    return tokens // seq if tokens % seq == 0 else tokens / seq


def simulate(c: Candidate, setting: Setting) -> dict[str, Any]:
    """Figures of a screened candidate from the SimPy engine (what `dualsim simulate` gives)."""
    from dualsim.sim.hardware_mode import simulate_hardware

    ctx = _context(setting)
    s, _ = ctx.schedule(c.schedule, c.ranks, c.microbatches)
    r = simulate_hardware(s, ctx.profile, ctx.model, timeline=False, **setting.overrides(c))
    e = r.extra
    return {"step_time_s": float(e["step_time_s"]),
            "tokens_per_s_per_gpu": float(e["tokens_per_s_per_gpu"]),
            "mfu": float(e["mfu"]), "peak_memory_gb": float(e["peak_memory_gb"]),
            "bubble_rate": float(r.bubble_rate), "ep": e.get("ep"), "gpus": e.get("gpus"),
            "comm_sms_used": e.get("comm_sms"), "microbatch_tokens": e.get("microbatch_tokens"),
            "global_batch": e.get("global_batch"), "precision": e.get("precision")}
