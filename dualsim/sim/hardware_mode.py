"""Hardware mode: simulate one pipeline of a modelled cluster with SimPy, in seconds.

Every GPU (pipeline rank) has a compute stream and a communication stream; units expand into
per-layer pieces (sim/unit_pieces.py). Each GPU's IB NIC and NVLink are fluid links shared by the
all-to-all, the PP transfers and the data-parallel sync (sim/links.py). One pipeline's ranks are
simulated explicitly; their EP peers (the same stage in other pipelines) run the same schedule at
the same time, so by symmetry each GPU receives as much all-to-all traffic as it sends, on the
other direction of its full-duplex links, and only its outgoing share is simulated. At the end of
the step each stage's gradients are synchronised over its ZeRO-1 group (reduce-scatter +
all-gather, BF16, ring) once every rank holding a copy of that layer slice has finished its
weight gradients; this overlaps with the W of other stages still running.

``simulate_simpy`` (abstract costs on the same engine) is re-exported from sim/simpy_abstract.py.
"""

from __future__ import annotations

from typing import Any, Generator

import simpy

from dualsim.cluster.comm import a2a_saturation, pp_flow

from dualsim.cluster.compute import precision_for, unit_weight
from dualsim.cluster.profile import Profile, load_profile
from dualsim.defaults import DEFAULT_MODEL, DEFAULT_PROFILE
from dualsim.ir import Action, Op, Schedule
from dualsim.sim.simpy_engine import Engine, peak_live
from dualsim.sim.links import Gpu, Link
from dualsim.sim.memory import GB, ActivationLedger, memory_timeline, replicas, slice_params
from dualsim.sim.unit_pieces import UnitPieces, fb_pieces, only_w, plain_pieces, slice_chains, without_w
from dualsim.sim.result import RankStats, SimResult
from dualsim.sim.simpy_abstract import simulate_simpy
from dualsim.timeline import action_fields, from_rows
from dualsim.validate import validate
from dualsim.workload.layout import Layout, build_layout
from dualsim.workload.model import Model, default_layout, load_model, with_training

__all__ = ["simulate_hardware", "simulate_simpy"]


class HardwareExecutor:
    """Runs units as pieces on two streams per GPU, with flows on shared links."""

    def __init__(self, env: simpy.Environment, schedule: Schedule, layout: Layout,
                 profile: Profile) -> None:
        self.env, self.schedule, self.layout, self.profile = env, schedule, layout, profile
        sat = a2a_saturation(profile)
        self.gpus = [Gpu() for _ in range(schedule.ranks)]
        self.links = [{"ib": Link(env, g, profile.ib_bandwidth, profile.ib_bandwidth * sat,
                                  profile.overlap_rate),
                       "nvlink": Link(env, g, profile.nvlink_bandwidth,
                                      profile.nvlink_bandwidth * sat, profile.overlap_rate)}
                      for g in self.gpus]
        self.position = {st.stage: st.position for st in schedule.stages}
        self.chains = {p: slice_chains(sl, layout, profile) for p, sl in enumerate(layout.slices)}
        self.unit_pieces: dict[tuple, UnitPieces] = {}
        self.rows: list[tuple] = []
        self.busy = [0.0] * schedule.ranks
        self.memory = ActivationLedger(layout, schedule)
        self.dp_end = [0.0] * schedule.ranks
        # weight-gradient units left per (rank, stage), and per slice the holders still busy
        self.wleft: dict[int, int] = {}
        for _, _, a in schedule.iter_actions():
            for part in a.parts:
                if part.op in (Op.B, Op.W):
                    self.wleft[part.stage] = self.wleft.get(part.stage, 0) + 1
        self.slice_wait = {p: len(ranks) for p, ranks in enumerate(layout.holders)}

    # ---- pieces of a unit --------------------------------------------------------------------------------
    def pieces(self, a: Action) -> UnitPieces:
        op = a.op
        if op is Op.FB:
            key: tuple = ("FB", self.position[a.forward.stage], self.position[a.backward.stage])
        else:
            key = (op.value, self.position[a.stage])
        plan = self.unit_pieces.get(key)
        if plan is None:
            if op is Op.FB:
                plan = fb_pieces(self.chains[key[1]][0], self.chains[key[2]][1])
            else:
                fwd, bwd = self.chains[key[1]]
                nodes = {"F": fwd, "B": bwd, "I": without_w(bwd), "W": only_w(bwd)}[op.value]
                plan = plain_pieces(nodes)
            self.unit_pieces[key] = plan
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
        comm_done: list[simpy.Event] = []
        signal: dict[int, simpy.Event] = {}
        if plan.comm:
            comm_done = [env.event() for _ in plan.comm]
            signal = {i: env.event() for i in plan.signals}
            env.process(self._comm(rank, plan, signal, comm_done, fields, label))
        timeout = env.timeout
        for i, (piece, secs, _, dep) in enumerate(plan.comp):
            if dep >= 0:
                ev = comm_done[dep]
                if not ev.triggered:
                    gpu.set_active(False)
                    yield ev
            gpu.set_active(True)
            t0 = env.now
            yield timeout(secs)
            rows.append((rank, "compute", *fields, piece, t0, env.now, label))
            if i in signal:
                signal[i].succeed()
        self.busy[rank] += plan.busy
        if comm_done and not comm_done[-1].triggered:
            gpu.set_active(False)
            yield comm_done[-1]
        self.memory.backward(rank, env.now, a)

    def _comm(self, rank: int, plan: UnitPieces, signal: dict[int, simpy.Event],
              done: list[simpy.Event], fields: tuple, label: str) -> Generator[Any, Any, None]:
        env, links = self.env, self.links[rank]
        for j, (kind, tr, _, pred) in enumerate(plan.comm):
            if pred >= 0:
                yield signal[pred]
            t0 = env.now
            if tr.latency:
                yield env.timeout(tr.latency)
            yield links[tr.link].transfer(tr.nbytes, tr.a2a)
            self.rows.append((rank, "comm", kind, *fields[1:], "", t0, env.now, label))
            done[j].succeed()

    def send(self, eng: Engine, src: int, dst: int, kind: str, action: Action,
             arrival: simpy.Event) -> None:
        tr = pp_flow(self.layout, self.profile, src, dst)
        t0 = self.env.now
        sched = self.schedule
        row = (src, "comm", "pp_send", action.stage, action.microbatch,
               sched.placement(action.stage).chain, -1, -1, -1, kind, t0)

        def arrived(_e: simpy.Event) -> None:
            self.rows.append((*row, self.env.now, str(action)))
            arrival.succeed()

        self.links[src][tr.link].transfer(tr.nbytes, False).callbacks.append(arrived)

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
        dense, expert = slice_params(lay, position)
        n_dense, n_expert = replicas(lay, position)
        nbytes = 2 * 2 * (dense * (n_dense - 1) / n_dense + expert * (n_expert - 1) / n_expert)
        if nbytes <= 0:
            return
        intranode = lay.pipelines == lay.ep and lay.ep <= self.profile.gpus_per_node
        link = "nvlink" if intranode else "ib"
        for st in self.schedule.stages:
            if st.position != position:
                continue
            t0, rank = self.env.now, st.rank
            row = (rank, "comm", "dp_sync", st.stage, -1, st.chain, -1, -1, -1, "", t0)

            def synced(_e: simpy.Event, row: tuple = row, rank: int = rank) -> None:
                self.rows.append((*row, self.env.now, f"dp_sync stage {row[3]}"))
                self.dp_end[rank] = max(self.dp_end[rank], self.env.now)

            self.links[rank][link].transfer(nbytes, False).callbacks.append(synced)


def _union(starts: list[float], ends: list[float]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(zip(starts, ends)):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _exposed(compute: list[tuple[float, float]],
             comm: list[tuple[float, float]]) -> tuple[float, float]:
    """(comm busy, comm exposed) seconds: union of comm, and its part outside compute."""
    total = sum(e - s for s, e in comm)
    covered, i = 0.0, 0
    for s, e in comm:
        while i < len(compute) and compute[i][1] <= s:
            i += 1
        j = i
        while j < len(compute) and compute[j][0] < e:
            covered += min(e, compute[j][1]) - max(s, compute[j][0])
            j += 1
    return total, total - covered


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
                          weight=unit_weight(prof, tokens, sms=prof.sms - prof.comm_sms))
    return prof, layout, warnings


def simulate_hardware(schedule: Schedule, profile: str | Profile = DEFAULT_PROFILE,
                      model: str | Model = DEFAULT_MODEL, *, ep: int | None = None,
                      gpus: int | None = None, comm_sms: int | None = None,
                      microbatch_tokens: int | None = None, ib_gbps: float | None = None,
                      nvlink_gbps: float | None = None, precision: str | None = None,
                      seq_len: int | None = None, recompute: str | None = None) -> SimResult:
    """One training step of ``schedule`` on a modelled cluster; times in seconds.

    ``precision`` ("fp8" / "bf16") overrides the model preset's GEMM precision; ``seq_len`` and
    ``recompute`` its sequence length and recomputation (workload.model.with_training).
    """
    prof, layout, warnings = hardware_setup(
        schedule, profile, model, ep=ep, gpus=gpus, comm_sms=comm_sms,
        microbatch_tokens=microbatch_tokens, ib_gbps=ib_gbps, nvlink_gbps=nvlink_gbps,
        precision=precision, seq_len=seq_len, recompute=recompute)
    mdl = layout.model
    validate(schedule)  # ValidationError with the grid for a bad or incomplete schedule
    # a slice with no layer but the embedding, head or MTP still works; one with nothing at all
    # only passes activations on
    empty = sum(1 for sl in layout.slices if not sl.units)
    if empty:
        warnings.append(f"{empty} of {len(layout.slices)} layer slices hold nothing "
                        f"({mdl.layers} layers over {len(layout.slices)} slices): their stages "
                        "only pass activations on; use fewer --ranks")
    env = simpy.Environment()
    ex = HardwareExecutor(env, schedule, layout, prof)
    eng = Engine(schedule, ex, env)
    eng.run()
    return _result(schedule, layout, prof, eng, ex, warnings)


def _sequences(tokens: int, sequence: int) -> int | float:
    """Sequences per step (the global batch), an int when whole."""
    return tokens // sequence if tokens % sequence == 0 else tokens / sequence


def _result(schedule: Schedule, layout: Layout, prof: Profile, eng: Engine,
            ex: HardwareExecutor, warnings: list[str]) -> SimResult:
    R = schedule.ranks
    last = [e[-1] if e else 0.0 for e in eng.ends]
    step = max(max(last), max(ex.dp_end))
    span = max(e[-1] - s[0] for s, e in zip(eng.starts, eng.ends) if e)
    memory, peaks = memory_timeline(layout, schedule, prof, ex.memory)
    timeline = from_rows(ex.rows)
    comm = []
    for r, rows in timeline.groupby("rank", sort=True):
        streams = {k: _union(g["start"].tolist(), g["end"].tolist())
                   for k, g in rows.groupby("stream")}
        comm.append(_exposed(streams.get("compute", []), streams.get("comm", [])))
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
                     ideal, per_rank, timeline, time_unit="s", extra=extra, memory=memory)
