"""The SimPy engine core: one process per rank walking its action list, dependency events.

This is the part shared by both modes. Each rank runs its compute actions in list order, one
unit at a time (an FB is one unit). A unit starts when the rank is free and its inputs exist:
what each action needs and makes is :mod:`dualsim.deps`'s (F(s, m) needs the forward output of
the previous stage in its chain, B or I(s, m) need F(s, m) and the input gradient of the next
stage, W(s, m) needs I(s, m); an FB needs the union). When a unit ends, its products exist on its
rank at once, and each one a neighbour stage needs is delivered to it: on the same rank at once,
to another rank through the executor's ``send`` (a fixed latency in abstract mode, a flow on a
shared link in hardware mode). What a unit does while it runs is the executor's business: one
timeout in abstract mode, per-layer pieces on a compute and a communication stream in hardware
mode. The engine runs a validated schedule only (:func:`dualsim.validate.validate`).
"""

from __future__ import annotations

from typing import Any, Generator, Protocol

import simpy

from dualsim.deps import PIECE, Key, Neighbours, destination, makes, needs
from dualsim.ir import Action, Op
from dualsim.validate import ValidSchedule


class Executor(Protocol):
    """How units run and outputs travel (abstract or hardware)."""

    def run(self, eng: "Engine", rank: int, action: Action) -> Generator[Any, Any, None]: ...

    def send(self, eng: "Engine", src: int, dst: int, piece: str, action: Action,
             arrival: simpy.Event) -> None:
        """Carry ``action``'s output from rank ``src`` to ``dst``; succeed ``arrival`` when it
        is there. ``piece`` names the transfer (:data:`dualsim.deps.PIECE`)."""

    def idle(self, rank: int) -> None: ...

    def unit_done(self, eng: "Engine", rank: int, action: Action) -> None: ...


class Engine:
    """Runs ``schedule`` under ``executor``; records per-rank unit starts/ends and activations."""

    def __init__(self, schedule: ValidSchedule, executor: Executor,
                 env: simpy.Environment | None = None) -> None:
        if not isinstance(schedule, ValidSchedule):
            raise TypeError("the SimPy engine runs a validated schedule: pass "
                            "dualsim.validate.validate(schedule)")
        self.schedule = schedule
        self.executor = executor
        self.env = env if env is not None else simpy.Environment()
        self.made: dict[Key, simpy.Event] = {}  # the product exists on the rank making it
        self.arrived: dict[Key, simpy.Event] = {}  # ... and at the neighbour stage needing it
        R = schedule.ranks
        self.rows: list[list[Action]] = [[a for a in row if a.op.is_compute]
                                         for row in schedule.actions]
        self.starts: list[list[Any]] = [[] for _ in range(R)]
        self.ends: list[list[Any]] = [[] for _ in range(R)]
        self.allocs: list[list[Any]] = [[] for _ in range(R)]
        self.frees: list[list[Any]] = [[] for _ in range(R)]
        self.nb = Neighbours.of(schedule)
        self.done = [0] * R

    def _event(self, table: dict[Key, simpy.Event], key: Key) -> simpy.Event:
        ev = table.get(key)
        if ev is None:
            ev = table[key] = self.env.event()
        return ev

    def _needs(self, a: Action) -> list[simpy.Event]:
        """What unit ``a`` waits for: a product of its own stage where it is made, one of a
        neighbour stage where it arrives."""
        return [self._event(self.arrived if need.key.stage != part.stage else self.made,
                            need.key)
                for part in a.parts for need in needs(part, self.nb)]

    def _publish(self, rank: int, a: Action) -> None:
        for part in a.parts:
            made = makes(part)
            for key in made:
                self._event(self.made, key).succeed()
            for key in made:
                stage = destination(key, self.nb)
                if stage < 0:
                    continue
                arrival, dst = self._event(self.arrived, key), self.nb.rank[stage]
                if dst == rank:
                    arrival.succeed()
                else:
                    self.executor.send(self, rank, dst, PIECE[key.kind], part, arrival)

    def _rank(self, r: int) -> Generator[Any, Any, None]:
        env, ex = self.env, self.executor
        starts, ends, allocs, frees = self.starts[r], self.ends[r], self.allocs[r], self.frees[r]
        for a in self.rows[r]:
            for ev in self._needs(a):
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
        assert not stuck, f"a validated schedule stalled on ranks {stuck}"


def peak_live(allocs: list[Any], frees: list[Any]) -> int:
    """Max live (stage, mb) pairs from alloc and free times (frees first at equal times)."""
    events = sorted([(t, 0) for t in frees] + [(t, 1) for t in allocs])
    live = peak = 0
    for _, kind in events:
        live += 1 if kind else -1
        peak = max(peak, live)
    return peak
