"""Hardware mode at unit level, without SimPy: what a configuration's units cost and hold.

A StepModel knows each unit of a schedule as the SimPy engine (sim/hardware_mode.py) would run
it: its pieces on the compute and communication streams, from the same executor. From that,
without simulating:

- **memory** and **busy time** exactly: a rank's units run one after the other in list order,
  and its activations are allocated at a forward's start and freed at a backward's end, so the
  peak and the compute-stream seconds do not depend on timing;
- a **lower bound of the step**: each unit at a lower bound of its duration (the larger of its
  critical path, with compute pieces at their all-SM times and each flow alone at its link's
  full standalone rate, and its compute work plus the least its comm kernels take from compute
  by holding SMs: ``sharing_bound``), laid out on the ranks with no PP transfer faster than
  its standalone time (sim/unit_level.py: times are monotone in durations and latencies), and
  each slice's gradient sync alone on its link once its holders are done. The planner prunes
  with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from dualsim.cluster.comm import Flow, dp_sync_flow, pp_flow
from dualsim.cluster.profile import Profile
from dualsim.ir import Action, Op, Schedule
from dualsim.sim.links import compute_speed
from dualsim.sim.memory import (ActivationLedger, live_at_peak, pair_bytes, peak_breakdown,
                                replicas, slice_params, static_components)
from dualsim.sim.unit_level import UnitTimes, compute_rows, lay_out
from dualsim.sim.unit_pieces import (Chain, UnitPieces, kind_pieces, slice_chains,
                                     unit_kind)
from dualsim.workload.layout import Layout

@dataclass(frozen=True)
class ScheduleIndex:
    """What a schedule alone decides, shared by every configuration that runs it: each rank's
    compute units, their kinds ((op, forward position, backward position)) and how many of each
    kind it runs, the units after which each slice's gradients are complete (the last B or W of
    each of its stages), and the memory peaks already worked out for it (``memory``)."""

    schedule: Schedule
    rows: list[list[Action]]
    kinds: list[list[tuple[str, int, int]]]
    counts: list[dict[tuple[str, int, int], int]]
    last_grad: dict[int, list[tuple[int, int]]]  # position -> (rank, unit index) per stage
    memory: dict[tuple, list[list[float]]] = field(default_factory=dict, compare=False)

    @staticmethod
    def of(schedule: Schedule) -> "ScheduleIndex":
        rows = compute_rows(schedule)
        pos = {st.stage: st.position for st in schedule.stages}
        kinds = [[unit_kind(a, pos) for a in row] for row in rows]
        last: dict[int, tuple[int, int]] = {}  # stage -> its last unit with a B or W part
        for r, row in enumerate(rows):
            for i, a in enumerate(row):
                for part in a.parts:
                    if part.op is Op.B or part.op is Op.W:
                        last[part.stage] = (r, i)
        last_grad: dict[int, list[tuple[int, int]]] = {}
        for stage, at in sorted(last.items()):
            last_grad.setdefault(pos[stage], []).append(at)
        return ScheduleIndex(schedule, rows, kinds, [dict(Counter(k)) for k in kinds],
                             last_grad)


class StepModel:
    """One configuration ready for unit-level timing (see the module docstring)."""

    def __init__(self, index: ScheduleIndex, profile: Profile, layout: Layout) -> None:
        self.index, self.profile, self.layout = index, profile, layout

    @cached_property
    def pieces(self) -> dict[tuple[str, int, int], UnitPieces]:
        """Each kind of unit's pieces, as the SimPy executor builds them for a simulation
        (unit_pieces.kind_pieces over each position's slice chains)."""
        # slices holding the same pieces (most of a model's layers are one block) have the
        # same chains, and units over the same slices the same pieces: each is built once
        what = [tuple((u.moe, u.pieces) for u in sl.units) for sl in self.layout.slices]
        chains: dict[tuple, tuple[Chain, Chain]] = {}

        def chain(p: int) -> tuple[Chain, Chain]:
            hit = chains.get(what[p])
            if hit is None:
                hit = chains[what[p]] = slice_chains(self.layout.slices[p], self.layout,
                                                     self.profile)
            return hit

        built: dict[tuple, UnitPieces] = {}
        out = {}
        for k in dict.fromkeys(k for counts in self.index.counts for k in counts):
            same = (k[0], what[k[1]], what[k[2]])
            hit = built.get(same)
            if hit is None:
                hit = built[same] = kind_pieces(k, chain)
            out[k] = hit
        return out

    @cached_property
    def unit_bounds(self) -> dict[tuple[str, int, int], float]:
        """``unit_lower_bound`` of each kind of unit (worked out once per distinct pieces)."""
        by_id: dict[int, float] = {}
        out = {}
        for k, p in self.pieces.items():
            b = by_id.get(id(p))
            if b is None:
                b = by_id[id(p)] = unit_lower_bound(p, self.profile)
            out[k] = b
        return out

    def static_memory_gb(self) -> list[float]:
        """Memory per rank (GB) before any activation: a lower bound of its peak."""
        lay, s, prof = self.layout, self.index.schedule, self.profile
        return [sum(peak_breakdown(static_components(lay, s, prof, r), [0.0, 0.0, 0.0],
                                   prof).values()) for r in range(s.ranks)]

    # ---- flows between ranks -----------------------------------------------------------------
    def pp_latency(self) -> list[list[float]]:
        """Standalone seconds of one micro-batch's activation from rank to rank."""
        R, lay, prof = self.index.schedule.ranks, self.layout, self.profile
        return [[0.0 if a == b else pp_flow(lay, prof, a, b).standalone_time(prof)
                 for b in range(R)] for a in range(R)]

    def dp_flows(self) -> list[tuple[int, Flow]]:
        """(position, flow) of each slice's gradient sync (per holder)."""
        lay, prof = self.layout, self.profile
        flows = ((p, dp_sync_flow(lay, prof, *slice_params(lay, p), replicas(lay, p)))
                 for p in range(len(lay.slices)))
        return [(p, f) for p, f in flows if f.nbytes > 0]

    def _grads_done(self, times: UnitTimes) -> dict[int, float]:
        """Per position, when the last B or W of any of its stages has ended."""
        return {p: max(times.ends[r][i] for r, i in at)
                for p, at in self.index.last_grad.items()}

    def _dp_lower_bound(self, times: UnitTimes) -> float:
        """When the last gradient sync could end at the earliest: each alone on its link, once
        the last B or W of its slice has ended."""
        done = self._grads_done(times)
        return max((done.get(p, 0.0) + flow.standalone_time(self.profile)
                    for p, flow in self.dp_flows()), default=0.0)

    # ---- the step ----------------------------------------------------------------------------
    def busy_lower_bound(self) -> float:
        """A cheaper, looser lower bound of the step: the busiest rank's units back to back,
        each at its lower bound (no bubble, no transfer, no gradient sync)."""
        per_kind = self.unit_bounds
        return max(sum(per_kind[k] * n for k, n in counts.items())
                   for counts in self.index.counts)

    def lower_bound(self) -> float:
        """A lower bound of the step in seconds (module docstring)."""
        per_kind = self.unit_bounds
        durations = [[per_kind[k] for k in kinds] for kinds in self.index.kinds]
        times = lay_out(self.index.schedule, self.index.rows, durations, self.pp_latency())
        return max(times.last_end, self._dp_lower_bound(times))

    # ---- what does not depend on timing ------------------------------------------------------
    def busy(self) -> list[float]:
        """Compute-stream seconds per rank."""
        per_kind = {k: p.busy for k, p in self.pieces.items()}
        return [sum(per_kind[k] for k in kinds) for kinds in self.index.kinds]

    def peak_memory_gb(self) -> list[float]:
        """Peak memory per rank (GB), every entry of the simulation's breakdown. A rank's units
        book their activations (sim/memory.py's ledger) at their start and end in list order,
        whatever the timing, so unit positions stand in for times (frees before allocations at
        a unit boundary, as in the simulation); the live bytes at each rank's peak are worked
        out once per schedule and per what a micro-batch keeps on each slice."""
        lay, s, prof = self.layout, self.index.schedule, self.profile
        key = tuple(pair_bytes(lay, p) for p in range(len(lay.slices)))
        live = self.index.memory.get(key)
        if live is None:
            ledger = ActivationLedger(lay, s)
            for r, row in enumerate(self.index.rows):
                for i, a in enumerate(row):
                    fwd = a.pair[0] if a.op is Op.FB else a  # type: ignore[index]
                    if fwd.op is Op.F:
                        ledger.forward(r, i, fwd.stage)
                    ledger.backward(r, i + 0.5, a)
            live = self.index.memory[key] = [live_at_peak(d) for d in ledger.deltas]
        return [sum(peak_breakdown(static_components(lay, s, prof, r), live[r], prof).values())
                for r in range(s.ranks)]


def unit_lower_bound(pieces: UnitPieces, profile: Profile) -> float:
    """A lower bound of a unit's seconds: the larger of its critical path (``chain_bound``) and
    its compute work plus what its comm kernels take from compute (``sharing_bound``)."""
    return max(chain_bound(pieces, profile), sharing_bound(pieces, profile))


def sharing_bound(pieces: UnitPieces, profile: Profile) -> float:
    """A lower bound of a unit's seconds from SM sharing (sim/links.py): the unit's comm kernels
    run one at a time within its span, and while kernel j (holding s SMs) is resident the
    compute stream either waits (rate 0) or runs at most at r = (S - s)/S x (1 - interference),
    while the kernel moves bytes at most at c_idle = min(cap alone, link) or c_busy = min(cap
    beside compute, link). Over the span, compute work W = the time computing minus what
    sharing took, so span >= W + sum_j lost_j, where lost_j is the least the kernel can take:
    (1 - r) per second of its fixed cost (it holds its SMs then too) plus, for its bytes N, the
    cheaper of N (1 - r) / c_busy (beside compute) and N / c_idle (compute waiting)."""
    lost = 0.0
    for _, flow, _, _ in pieces.comm:
        # compute lost per second beside the kernel
        slow = 1.0 - compute_speed(profile.sms, flow.sms, profile.interference)
        link = profile.link_bandwidth(flow.link)
        idle, busy = min(flow.cap(False), link), min(flow.cap(True), link)
        per_byte = min(slow / busy, 1.0 / idle) if busy > 0 else 1.0 / idle
        lost += slow * flow.latency + flow.nbytes * per_byte
    return pieces.busy + lost


def chain_bound(pieces: UnitPieces, profile: Profile) -> float:
    """A lower bound of a unit's seconds: its two streams in order, each piece waiting for the
    piece it depends on, compute at its time and every flow alone at its link's full rate."""
    comp_end = [0.0] * len(pieces.comp)
    comm_end: list[float] = []
    last = 0.0

    def comm_upto(j: int) -> None:
        while len(comm_end) <= j:
            _, flow, _, pred = pieces.comm[len(comm_end)]
            t = comm_end[-1] if comm_end else 0.0
            if pred >= 0 and comp_end[pred] > t:
                t = comp_end[pred]
            comm_end.append(t + flow.standalone_time(profile))

    for i, (_, secs, _, dep) in enumerate(pieces.comp):
        t = last
        if dep >= 0:
            comm_upto(dep)
            t = max(t, comm_end[dep])
        last = comp_end[i] = t + secs
    comm_upto(len(pieces.comm) - 1)
    return max([last] + comm_end)


__all__ = ["ScheduleIndex", "StepModel", "chain_bound", "sharing_bound", "unit_lower_bound"]
