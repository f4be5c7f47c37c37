"""The SimPy engine core: one process per rank walking its action list, dependency events.

This is the part shared by both modes. Each rank runs its compute actions in list order, one
unit at a time (an FB is one unit). A unit starts when the rank is free and its inputs have
arrived: F(s, m) needs the forward output of the previous stage in its chain, B or I(s, m) need
F(s, m) and the input gradient from the next stage, W(s, m) needs I(s, m); an FB needs the union.
When a unit ends, its outputs are published: on the same rank at once, to another rank through
the executor's ``send`` (a fixed latency in abstract mode, a flow on a shared link in hardware
mode). What a unit does while it runs is the executor's business: one timeout in abstract mode,
per-layer pieces on a compute and a communication stream in hardware mode.
"""

from __future__ import annotations

from typing import Any, Generator, Protocol

import simpy

from dualsim.errors import ValidationError
from dualsim.ir import Action, Op, Schedule


class Executor(Protocol):
    """How units run and outputs travel (abstract or hardware)."""

    def run(self, eng: "Engine", rank: int, action: Action) -> Generator[Any, Any, None]: ...

    def send(self, eng: "Engine", src: int, dst: int, kind: str, action: Action,
             arrival: simpy.Event) -> None: ...

    def idle(self, rank: int) -> None: ...

    def unit_done(self, eng: "Engine", rank: int, action: Action) -> None: ...


class Engine:
    """Runs ``schedule`` under ``executor``; records per-rank unit starts/ends and activations."""

    def __init__(self, schedule: Schedule, executor: Executor,
                 env: simpy.Environment | None = None) -> None:
        self.schedule = schedule
        self.executor = executor
        self.env = env if env is not None else simpy.Environment()
        self.events: dict[tuple[str, int, int], simpy.Event] = {}
        R = schedule.ranks
        self.rows: list[list[Action]] = [[a for a in row if a.op.is_compute]
                                         for row in schedule.actions]
        self.starts: list[list[Any]] = [[] for _ in range(R)]
        self.ends: list[list[Any]] = [[] for _ in range(R)]
        self.allocs: list[list[Any]] = [[] for _ in range(R)]
        self.frees: list[list[Any]] = [[] for _ in range(R)]
        self.rank_of = {st.stage: st.rank for st in schedule.stages}
        self.prev = {st.stage: schedule.prev_stage(st.stage) for st in schedule.stages}
        self.next = {st.stage: schedule.next_stage(st.stage) for st in schedule.stages}
        self.done = [0] * R

    def event(self, key: tuple[str, int, int]) -> simpy.Event:
        ev = self.events.get(key)
        if ev is None:
            ev = self.events[key] = self.env.event()
        return ev

    def _needs(self, a: Action) -> list[tuple[str, int, int]]:
        keys = []
        for part in a.parts:
            s, m = part.stage, part.microbatch
            if part.op is Op.F:
                if self.prev[s] is not None:
                    keys.append(("Fin", s, m))
            elif part.op is Op.W:
                keys.append(("I", s, m))
            else:
                keys.append(("F", s, m))
                if self.next[s] is not None:
                    keys.append(("Gin", s, m))
        return keys

    def _publish(self, rank: int, a: Action) -> None:
        for part in a.parts:
            s, m = part.stage, part.microbatch
            if part.op is Op.F:
                self.event(("F", s, m)).succeed()
                ns = self.next[s]
                if ns is not None:
                    self._deliver(rank, self.rank_of[ns], "pp_fwd", part, ("Fin", ns, m))
            elif part.op is Op.B or part.op is Op.I:
                if part.op is Op.I:
                    self.event(("I", s, m)).succeed()
                ps = self.prev[s]
                if ps is not None:
                    self._deliver(rank, self.rank_of[ps], "pp_bwd", part, ("Gin", ps, m))

    def _deliver(self, src: int, dst: int, kind: str, part: Action,
                 key: tuple[str, int, int]) -> None:
        ev = self.event(key)
        if src == dst:
            ev.succeed()
        else:
            self.executor.send(self, src, dst, kind, part, ev)

    def _rank(self, r: int) -> Generator[Any, Any, None]:
        env, ex = self.env, self.executor
        starts, ends, allocs, frees = self.starts[r], self.ends[r], self.allocs[r], self.frees[r]
        for a in self.rows[r]:
            if a.stage not in self.rank_of or self.rank_of[a.stage] != r:
                raise ValidationError(f"rank {r}: action {a} runs a stage not placed on it")
            for key in self._needs(a):
                ev = self.event(key)
                if not ev.triggered:
                    ex.idle(r)
                    yield ev
            t = env.now
            yield from ex.run(self, r, a)
            end = env.now
            starts.append(t)
            ends.append(end)
            op = a.op
            if op is Op.F or op is Op.FB:
                allocs.append(t)
            if op is Op.B or op is Op.I or op is Op.FB:
                frees.append(end)
            self.done[r] += 1
            self._publish(r, a)
            ex.unit_done(self, r, a)
        ex.idle(r)

    def run(self) -> None:
        for r in range(self.schedule.ranks):
            self.env.process(self._rank(r))
        self.env.run()
        stuck = [r for r in range(self.schedule.ranks) if self.done[r] < len(self.rows[r])]
        if stuck:
            r = stuck[0]
            raise ValidationError(
                f"schedule deadlocks: rank {r} cannot start {self.rows[r][self.done[r]]} "
                f"(ranks stuck: {', '.join(map(str, stuck))})")


def peak_live(allocs: list[Any], frees: list[Any]) -> int:
    """Max live (stage, mb) pairs from alloc and free times (frees first at equal times)."""
    events = sorted([(t, 0) for t in frees] + [(t, 1) for t in allocs])
    live = peak = 0
    for _, kind in events:
        live += 1 if kind else -1
        peak = max(peak, live)
    return peak
