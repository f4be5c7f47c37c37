"""Hardware mode: simulate one pipeline of a modelled cluster with SimPy, in seconds.

Every GPU (pipeline rank) has a compute stream and a communication stream; units expand into
per-layer pieces (sim/unit_pieces.py, in the order of dualsim/overlap_order.py). Each GPU's SMs
are shared in time: a comm kernel (all-to-all, PP send or receive, gradient sync) holds its SMs
only while it runs, and compute, fluid work in seconds on all SMs, runs slower while one is
resident; each GPU's IB NIC and NVLink are fluid links shared by the all-to-all, the PP
transfers and the data-parallel sync (sim/links.py; the law is dualsim/cluster/comm.py). One
pipeline's ranks are simulated explicitly; their EP peers (the same stage in other pipelines) run
the same schedule at the same time, so by symmetry each GPU receives as much all-to-all traffic as it sends, on the
other direction of its full-duplex links, and only its outgoing share is simulated. At the end of
the step each stage's gradients are synchronised over its ZeRO-1 group (reduce-scatter +
all-gather, BF16, ring) once every rank holding a copy of that layer slice has finished its
weight gradients; this overlaps with the W of other stages still running.

``simulate_simpy`` (abstract costs on the same engine) is re-exported from sim/simpy_abstract.py.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Generator

import simpy

from dualsim.cluster.comm import Flow, dp_sync_flow, pp_flow
from dualsim.cluster.compute import precision_for, unit_weight
from dualsim.cluster.profile import Profile, load_profile
from dualsim.defaults import DEFAULT_MODEL, DEFAULT_PROFILE
from dualsim.errors import ProfileError, ScheduleError
from dualsim.ir import Action, Op, Schedule
from dualsim.sim.simpy_engine import Engine, peak_live
from dualsim.sim.links import Gpu, Link
from dualsim.sim.memory import GB, ActivationLedger, memory_timeline, replicas, slice_params
from dualsim.sim.unit_pieces import (Chain, UnitPieces, kind_pieces, slice_chains,
                                     unit_kind)
from dualsim.sim.result import RankStats, SimResult
from dualsim.sim.simpy_abstract import simulate_simpy
from dualsim.timeline import action_fields, exposed, from_rows, intervals_union
from dualsim.validate import validate
from dualsim.workload.layout import Layout, build_layout
from dualsim.workload.model import Model, default_layout, load_model, with_training

__all__ = ["SM_SHARING", "simulate_hardware", "simulate_simpy"]

#: how compute shares SMs with the all-to-all kernels: only while they run, or never
SM_SHARING = ("dynamic", "static")


class HardwareExecutor:
    """Runs units as pieces on two streams per GPU, with SM-holding kernels on shared links."""

    def __init__(self, env: simpy.Environment, schedule: Schedule, layout: Layout,
                 profile: Profile, routing_imbalance: float = 1.0,
                 sm_sharing: str = "dynamic") -> None:
        self.env, self.schedule, self.layout, self.profile = env, schedule, layout, profile
        reserved = profile.comm_sms if sm_sharing == "static" else 0
        self.gpus = [Gpu(env, profile.sms, profile.interference, reserved)
                     for _ in range(schedule.ranks)]
        self.links = [{"ib": Link(env, g, profile.ib_bandwidth),
                       "nvlink": Link(env, g, profile.nvlink_bandwidth)} for g in self.gpus]
        self.position = {st.stage: st.position for st in schedule.stages}
        self.chain_of = {st.stage: st.chain for st in schedule.stages}
        self.pp: dict[tuple[int, int], Flow] = {}
        self.routing_imbalance = routing_imbalance
        self.chains: dict[int, tuple[Chain, Chain]] = {}  # per position, on first use
        self.unit_pieces: dict[tuple, UnitPieces] = {}
        self.rows: list[tuple] = []
        self.busy = [0.0] * schedule.ranks  # compute work: seconds on all SMs (no sharing)
        self.stream = [0.0] * schedule.ranks  # compute-stream seconds (slower beside comm)
        self.memory = ActivationLedger(layout, schedule)
        self.dp_end = [0.0] * schedule.ranks
        # weight-gradient units left per (rank, stage), and per slice the holders still busy
        self.wleft: dict[int, int] = {}
        for _, _, a in schedule.iter_actions():
            for part in a.parts:
                if part.op in (Op.B, Op.W):
                    self.wleft[part.stage] = self.wleft.get(part.stage, 0) + 1
        self.slice_wait = {p: len(ranks) for p, ranks in enumerate(layout.holders)}

    # ---- pieces of a unit ---------------------------------------------------------------------
    def slice_chains(self, position: int) -> tuple[Chain, Chain]:
        """(forward, backward) chains of the slice at ``position``, built once."""
        hit = self.chains.get(position)
        if hit is None:
            hit = self.chains[position] = slice_chains(
                self.layout.slices[position], self.layout, self.profile, self.routing_imbalance)
        return hit

    def pieces(self, a: Action) -> UnitPieces:
        key = unit_kind(a, self.position)
        plan = self.unit_pieces.get(key)
        if plan is None:
            plan = self.unit_pieces[key] = kind_pieces(key, self.slice_chains)
        return plan

    # ---- executor protocol --------------------------------------------------------------------
    def run(self, eng: Engine, rank: int, a: Action) -> Generator[Any, Any, None]:
        env, gpu, plan = self.env, self.gpus[rank], self.pieces(a)
        row = action_fields(self.schedule, a)
        fields, label = row[:7], row[7]
        rows = self.rows
        fwd = a.forward if a.op is Op.FB else a
        if fwd.op is Op.F:
            self.memory.forward(rank, env.now, fwd.stage)
        comm = _CommStream(self, rank, plan, fields, label) if plan.comm else None
        compute = gpu.compute
        signals = plan.signals
        busy = 0.0
        for i, (piece, work, _, dep) in enumerate(plan.comp):
            if dep >= 0 and not comm.done[dep]:  # type: ignore[union-attr]
                gpu.set_active(False)
                yield comm.wait(dep)  # type: ignore[union-attr]
            gpu.set_active(True)
            t0 = env.now
            yield compute(work)
            gpu.computed()
            rows.append((rank, "compute", *fields, piece, t0, env.now, label, 0))
            busy += env.now - t0
            if i in signals:
                comm.produced(i)  # type: ignore[union-attr]
        self.stream[rank] += busy
        self.busy[rank] += plan.busy
        if comm is not None and not comm.done[-1]:
            gpu.set_active(False)
            yield comm.wait(len(comm.done) - 1)
        self.memory.backward(rank, env.now, a)

    def _kernel(self, rank: int, flow: Flow, then: Callable[[], None]) -> None:
        """Start one comm kernel on ``rank``: it holds its SMs for its fixed cost and its
        transfer, then releases them and calls ``then``."""
        gpu, env = self.gpus[rank], self.env
        link = self.links[rank][flow.link]
        gpu.hold(flow.sms)

        def moved() -> None:
            gpu.release(flow.sms)
            then()

        def start(_e: simpy.Event | None = None) -> None:
            link.transfer(flow.nbytes, moved, flow.cap(False), flow.cap(True))

        if flow.latency:
            env.timeout(flow.latency).callbacks.append(start)
        else:
            start()

    def send(self, eng: Engine, src: int, dst: int, piece: str, action: Action,
             arrival: simpy.Event) -> None:
        """A PP transfer: a send kernel on ``src`` and a receive kernel on ``dst``, each holding
        its NCCL channels' SMs, for the flow on the sender's link."""
        flow = self.pp.get((src, dst))
        if flow is None:
            flow = self.pp[(src, dst)] = pp_flow(self.layout, self.profile, src, dst)
        env, gpu = self.env, self.gpus[dst]
        t0 = env.now
        gpu.hold(flow.sms)

        def arrived() -> None:
            gpu.release(flow.sms)
            chain = self.chain_of[action.stage]
            for rank, op in ((src, "pp_send"), (dst, "pp_recv")):
                self.rows.append((rank, "comm", op, action.stage, action.microbatch, chain, -1,
                                  -1, -1, piece, t0, env.now, str(action), flow.sms))
            arrival.succeed()

        self._kernel(src, flow, arrived)

    def idle(self, rank: int) -> None:
        self.gpus[rank].set_active(False)

    def unit_done(self, eng: Engine, rank: int, a: Action) -> None:
        for part in a.parts:
            if part.op in (Op.B, Op.W):
                self.wleft[part.stage] -= 1
                if self.wleft[part.stage] == 0:
                    p = self.position[part.stage]
                    self.slice_wait[p] -= 1
                    if self.slice_wait[p] == 0:
                        self._dp_sync(p)

    def _dp_sync(self, position: int) -> None:
        """Reduce-scatter + all-gather (BF16, ring) of one slice on every rank holding it."""
        lay = self.layout
        flow = dp_sync_flow(lay, self.profile, *slice_params(lay, position),
                            replicas(lay, position))
        if flow.nbytes <= 0:
            return
        for st in self.schedule.stages:
            if st.position != position:
                continue
            t0, rank, stage = self.env.now, st.rank, st.stage
            row = (rank, "comm", "dp_sync", stage, -1, st.chain, -1, -1, -1, "", t0)

            def synced(row: tuple = row, rank: int = rank) -> None:
                self.rows.append((*row, self.env.now, f"dp_sync stage {row[3]}", flow.sms))
                self.dp_end[rank] = max(self.dp_end[rank], self.env.now)

            self._kernel(rank, flow, synced)


class _CommStream:
    """One unit's communication stream on one GPU: its all-to-all kernels in stream order, each
    started once the previous one is done and the compute piece producing its data has run."""

    __slots__ = ("ex", "rank", "plan", "fields", "label", "next", "upto", "running", "done",
                 "waiters")

    def __init__(self, ex: HardwareExecutor, rank: int, plan: UnitPieces, fields: tuple,
                 label: str) -> None:
        self.ex, self.rank, self.plan, self.fields, self.label = ex, rank, plan, fields, label
        self.next = 0  # the next kernel to start
        self.upto = -1  # the last compute piece done
        self.running = False
        self.done = [False] * len(plan.comm)
        self.waiters: dict[int, simpy.Event] = {}
        self._pump()

    def produced(self, i: int) -> None:
        """Compute piece ``i`` (a producer of some kernel's data) is done."""
        self.upto = i
        self._pump()

    def wait(self, j: int) -> simpy.Event:
        """An event that succeeds when kernel ``j`` is done."""
        ev = self.waiters[j] = self.ex.env.event()
        return ev

    def _pump(self) -> None:
        if self.running or self.next >= len(self.done):
            return
        j = self.next
        kind, flow, _, after = self.plan.comm[j]
        if after > self.upto:
            return
        self.running = True
        t0 = self.ex.env.now
        self.ex._kernel(self.rank, flow, lambda: self._finished(j, kind, flow.sms, t0))

    def _finished(self, j: int, kind: str, sms: int, t0: float) -> None:
        ex = self.ex
        ex.rows.append((self.rank, "comm", kind, *self.fields[1:], "", t0, ex.env.now,
                        self.label, sms))
        self.done[j] = True
        self.running = False
        self.next += 1
        ev = self.waiters.pop(j, None)
        if ev is not None:
            ev.succeed()
        self._pump()


def hardware_setup(schedule: Schedule, profile: str | Profile, model: str | Model, *,
                   ep: int | None = None, gpus: int | None = None, comm_sms: int | None = None,
                   microbatch_tokens: int | None = None, ib_gbps: float | None = None,
                   nvlink_gbps: float | None = None, precision: str | None = None,
                   seq_len: int | None = None, recompute: str | None = None
                   ) -> tuple[Profile, Layout, list[str]]:
    """The profile (with its overrides), the layout a step of ``schedule`` runs on (the model
    preset's published layout where an argument is None) and the warnings they raise. Shared
    with the planner's unit-level model (sim/unit_model.py), so both see the same cluster."""
    prof = load_profile(profile) if isinstance(profile, str) else profile
    prof = prof.with_overrides(comm_sms=comm_sms, ib_gbps=ib_gbps, nvlink_gbps=nvlink_gbps)
    mdl = load_model(model) if isinstance(model, str) else model
    mdl = with_training(mdl, seq_len=seq_len, recompute=recompute)
    mdl, warnings = precision_for(mdl, prof, precision)
    d = default_layout(mdl)
    tokens = microbatch_tokens if microbatch_tokens is not None else d["microbatch_tokens"]
    holders = [[st.rank for st in schedule.stages if st.position == p]
               for p in range(schedule.chain_length)]
    layout = build_layout(mdl, schedule.ranks, schedule.microbatches, holders,
                          ep=ep if ep is not None else d["ep"],
                          gpus=gpus if gpus is not None else d["gpus"],
                          microbatch_tokens=tokens, sequence=d["sequence"],
                          weight=unit_weight(prof, tokens),
                          preset=[k for k, v in (("ep", ep), ("gpus", gpus),
                                                 ("microbatch_tokens", microbatch_tokens))
                                  if v is None])
    return prof, layout, warnings


#: the most pieces (compute and communication kernels) one hardware simulation runs: about 100k
#: a CPU second; a preset's global batch of 10^6 sequences would otherwise run for many minutes
MAX_PIECES = 3_000_000


def check_work(schedule: Schedule, layout: Layout) -> None:
    """ScheduleError when the step would take more than MAX_PIECES pieces to simulate (an
    estimate: each action's layer pieces, twice for their communication)."""
    per_slice = [2 * sum(len(u.pieces) for u in sl.units) + 1 for sl in layout.slices]
    position = {st.stage: st.position for st in schedule.stages}
    pieces = sum(per_slice[position[p.stage]] for row in schedule.actions for a in row
                 if a.op.is_compute for p in a.parts)
    if pieces > MAX_PIECES:
        raise ScheduleError(
            f"this step would take about {pieces:,} pieces to simulate ({schedule.ranks} ranks, "
            f"{schedule.microbatches:,} micro-batches, {layout.model.layers} layers), more than "
            f"dualsim simulates ({MAX_PIECES:,}); use fewer --microbatches or a smaller "
            "--global-batch")


def simulate_hardware(schedule: Schedule, profile: str | Profile = DEFAULT_PROFILE,
                      model: str | Model = DEFAULT_MODEL, *, ep: int | None = None,
                      gpus: int | None = None, comm_sms: int | None = None,
                      microbatch_tokens: int | None = None, ib_gbps: float | None = None,
                      nvlink_gbps: float | None = None, precision: str | None = None,
                      seq_len: int | None = None, recompute: str | None = None,
                      routing_imbalance: float = 1.0, sm_sharing: str = "dynamic",
                      timeline: bool = True) -> SimResult:
    """One training step of ``schedule`` on a modelled cluster; times in seconds.

    ``precision`` ("fp8" / "bf16") overrides the model preset's GEMM precision; ``seq_len`` and
    ``recompute`` its sequence length and recomputation (workload.model.with_training);
    ``routing_imbalance`` is max/mean tokens received per GPU in the all-to-all (1.0: balanced);
    ``sm_sharing`` "dynamic" (comm kernels hold their SMs only while they run) or "static"
    (compute never gets the all-to-all's ``comm_sms``, as DeepSeek's GEMMs were launched).
    A schedule that is not a ValidSchedule is validated first (ValidationError with the grid).
    ``timeline=False`` leaves the result's Timeline empty (every figure is the same; building
    the DataFrame is about a quarter of a DeepSeek-V3 step's time, which the planner skips).
    """
    if not (routing_imbalance >= 1.0 and math.isfinite(routing_imbalance)):
        raise ProfileError(f"--routing-imbalance must be a number >= 1 (max/mean tokens received "
                           f"per GPU; 1 = balanced), got {routing_imbalance}")
    if sm_sharing not in SM_SHARING:
        raise ProfileError(f"--sm-sharing must be one of {', '.join(SM_SHARING)}, got "
                           f"{sm_sharing!r}")
    schedule = validate(schedule)
    prof, layout, warnings = hardware_setup(
        schedule, profile, model, ep=ep, gpus=gpus, comm_sms=comm_sms,
        microbatch_tokens=microbatch_tokens, ib_gbps=ib_gbps, nvlink_gbps=nvlink_gbps,
        precision=precision, seq_len=seq_len, recompute=recompute)
    mdl = layout.model
    check_work(schedule, layout)
    # a slice with no layer but the embedding, head or MTP still works; one with nothing at all
    # only passes activations on
    empty = sum(1 for sl in layout.slices if not sl.units)
    if empty:
        warnings.append(f"{empty} of {len(layout.slices)} layer slices hold nothing "
                        f"({mdl.layers} layers over {len(layout.slices)} slices): their stages "
                        "only pass activations on; use fewer --ranks")
    env = simpy.Environment()
    ex = HardwareExecutor(env, schedule, layout, prof, routing_imbalance, sm_sharing)
    eng = Engine(schedule, ex, env)
    eng.run()
    res = _result(schedule, layout, prof, eng, ex, warnings, timeline)
    res.extra["routing_imbalance"] = routing_imbalance
    res.extra["sm_sharing"] = sm_sharing
    return res


def _sequences(tokens: int, sequence: int) -> int | float:
    """Sequences per step (the global batch), an int when whole."""
    return tokens // sequence if tokens % sequence == 0 else tokens / sequence


def _result(schedule: Schedule, layout: Layout, prof: Profile, eng: Engine,
            ex: HardwareExecutor, warnings: list[str], timeline: bool = True) -> SimResult:
    R = schedule.ranks
    last = [e[-1] if e else 0.0 for e in eng.ends]
    step = max(max(last), max(ex.dp_end))
    span = max(e[-1] - s[0] for s, e in zip(eng.starts, eng.ends) if e)
    memory, peaks = memory_timeline(layout, schedule, prof, ex.memory)
    frame = from_rows(ex.rows if timeline else [])
    # per rank: (comm busy, comm exposed); a PP transfer counts once, on its sender (its receive
    # kernel's row is there for the SM record)
    spans: list[dict[str, list[tuple[float, float]]]] = [
        {"compute": [], "comm": []} for _ in range(R)]
    for row in ex.rows:
        if row[2] != "pp_recv":
            spans[row[0]][row[1]].append((row[10], row[11]))
    comm = [exposed(intervals_union(sp["compute"]), intervals_union(sp["comm"]))
            for sp in spans]
    per_rank = []
    for r in range(R):
        total_gb = sum(peaks[r].values())
        per_rank.append(RankStats(r, ex.busy[r], step - ex.busy[r], eng.starts[r][0], last[r],
                                  peak_live(eng.allocs[r], eng.frees[r]), round(total_gb, 6),
                                  {k: round(v, 6) for k, v in peaks[r].items()}))
        if total_gb * GB > prof.hbm_bytes:
            warnings.append(f"rank {r} needs {total_gb:.1f} GB, more than the "
                            f"{prof.hbm_bytes / GB:.0f} GB of {prof.name}")
    tokens = layout.tokens_per_step
    flops = layout.model_flops_per_token * tokens
    extra: dict[str, Any] = {
        "step_time_s": step,
        "tokens_per_s_per_gpu": tokens / step / layout.gpus,
        "mfu": flops / (step * layout.gpus * prof.bf16_flops),
        "mfu_fp8_peak": flops / (step * layout.gpus * prof.peak_flops("fp8")),
        "peak_memory_gb": max(r.peak_memory_gb for r in per_rank),
        "comm_exposed_s": sum(c[1] for c in comm) / R,
        "comm_hidden_fraction": 1 - sum(c[1] for c in comm) / max(1e-30, sum(c[0] for c in comm)),
        "dp_sync_end_s": max(ex.dp_end),
        "compute_stream_s": sum(ex.stream) / R,
        "sm_shared_s": sum(g.shared for g in ex.gpus) / R,
        "profile": prof.name, "model": layout.model.name, "ep": layout.ep, "gpus": layout.gpus,
        "comm_sms": prof.comm_sms, "microbatch_tokens": layout.microbatch_tokens,
        "tokens_per_step": tokens,
        "global_batch": _sequences(tokens, layout.model.layout["sequence"]),
        "precision": layout.model.gemm_dtype,
        "layers_per_stage": [s.layers for s in layout.slices],
        "per_rank_comm_exposed_s": [c[1] for c in comm],
        "warnings": warnings,
    }
    ideal = sum(ex.busy) / R
    return SimResult(schedule.name, R, schedule.num_stages, schedule.microbatches, step, span,
                     ideal, per_rank, frame, time_unit="s", extra=extra, memory=memory)
