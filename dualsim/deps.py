"""The dependency rules of a schedule, in one place: what each action makes and what it needs.

Every part of dualsim that must know when an action may run derives from this module: the
validator and lowering, the abstract engine (which compiles the rules to flat slots with
:func:`compile_rules`), the SimPy engine, the Perfetto trace's flow arrows and the runtime's
interpreter. docs/schedules.md ("Dependencies: what valid means") states the same rules in prose.

A product is named by one key type, :class:`Key` = (kind, stage, micro-batch):

========== ============================ ==========================================================
kind       made by                      meaning
========== ============================ ==========================================================
FORWARD    F(s, m)                      its output activation (and the input it saved) exist
BACKWARD   B(s, m) or I(s, m)           the gradient of (s, m)'s input exists
DEFERRED   I(s, m)                      (s, m)'s weight gradient waits for its W
WEIGHT     W(s, m)                      (s, m)'s weight gradient is done
SENT_F     SEND_F(s, m)                 F(s, m)'s output is posted to the next stage's rank
RECEIVED_F RECV_F(s, m)                 F(s, m)'s input has arrived from the previous stage
SENT_B     SEND_B(s, m)                 backward(s, m)'s input gradient is posted to prev's rank
RECEIVED_B RECV_B(s, m)                 the gradient backward(s, m) needs has arrived from next
========== ============================ ==========================================================

An FB makes and needs what its two halves make and need; its products exist when it ends.
Every rule keeps the micro-batch: a part of micro-batch m only makes and needs keys of m.

In a plan without transfers a cross-rank dependency links producer and consumer directly (a
:class:`Need` with ``cross`` set); in a lowered plan (``lowered=True``) it runs producer -> SEND
-> RECV -> consumer. A :class:`Handoff` is one cross-rank dependency with the SEND and RECV that
carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator, NamedTuple

from dualsim.ir import Action, Op, Schedule


class Kind(IntEnum):
    """What a product is (see the module docstring)."""

    FORWARD = 0
    BACKWARD = 1
    DEFERRED = 2
    WEIGHT = 3
    SENT_F = 4
    RECEIVED_F = 5
    SENT_B = 6
    RECEIVED_B = 7


class Key(NamedTuple):
    """One product: ``kind`` of ``stage`` for ``microbatch``."""

    kind: Kind
    stage: int
    microbatch: int


#: the kinds each op makes (an FB makes its halves')
MAKES: dict[Op, tuple[Kind, ...]] = {
    Op.F: (Kind.FORWARD,),
    Op.B: (Kind.BACKWARD,),
    Op.I: (Kind.BACKWARD, Kind.DEFERRED),
    Op.W: (Kind.WEIGHT,),
    Op.SEND_F: (Kind.SENT_F,),
    Op.RECV_F: (Kind.RECEIVED_F,),
    Op.SEND_B: (Kind.SENT_B,),
    Op.RECV_B: (Kind.RECEIVED_B,),
}

#: the ops that can make each kind, the usual one first
MADE_BY: dict[Kind, tuple[Op, ...]] = {
    kind: tuple(op for op, kinds in MAKES.items() if kind in kinds) for kind in Kind
}

#: the rules a need can follow, as the validator names them
RULES = ("activation", "forward", "gradient", "weight", "send", "recv", "match")

#: hardware mode's Timeline ``piece`` of a pipeline transfer, by the kind it carries
PIECE: dict[Kind, str] = {Kind.FORWARD: "pp_fwd", Kind.BACKWARD: "pp_bwd"}

#: what a handoff of each kind carries (the Perfetto flow arrow's name)
CARRIES: dict[Kind, str] = {Kind.FORWARD: "activation", Kind.BACKWARD: "gradient"}


class Need(NamedTuple):
    """A part needs ``key`` (following ``rule``); ``cross``: it is made on another rank."""

    key: Key
    rule: str
    cross: bool


@dataclass(frozen=True)
class Neighbours:
    """Per stage 0..S-1: the rank holding it and the previous and next stage of its chain
    (-1 at a chain's ends). Flat tuples, so that hot loops index them directly."""

    rank: tuple[int, ...]
    prev: tuple[int, ...]
    next: tuple[int, ...]

    @staticmethod
    def of(schedule: Schedule) -> "Neighbours":
        """The tables of ``schedule``, whose stages must be numbered 0..S-1."""
        stages = range(schedule.num_stages)
        prev = (schedule.prev_stage(s) for s in stages)
        nxt = (schedule.next_stage(s) for s in stages)
        return Neighbours(tuple(schedule.rank_of(s) for s in stages),
                          tuple(-1 if p is None else p for p in prev),
                          tuple(-1 if n is None else n for n in nxt))


def makes(part: Action) -> tuple[Key, ...]:
    """The keys a single (non-FB) action makes."""
    return tuple(Key(kind, part.stage, part.microbatch) for kind in MAKES[part.op])


def needs(part: Action, nb: Neighbours, lowered: bool = False) -> tuple[Need, ...]:
    """What a single (non-FB) action needs, in the order a rank waits for them.

    With ``lowered`` the cross-rank inputs of compute actions come from RECVs; without, from
    their producers directly (and SEND/RECV actions, if any, are not asked about).
    """
    op, s, m = part.op, part.stage, part.microbatch
    rank = nb.rank[s]
    if op is Op.F:
        p = nb.prev[s]
        if p < 0:
            return ()
        cross = nb.rank[p] != rank
        if lowered and cross:
            return (Need(Key(Kind.RECEIVED_F, s, m), "recv", False),)
        return (Need(Key(Kind.FORWARD, p, m), "activation", cross),)
    if op is Op.B or op is Op.I:
        own = Need(Key(Kind.FORWARD, s, m), "forward", False)
        n = nb.next[s]
        if n < 0:
            return (own,)
        cross = nb.rank[n] != rank
        if lowered and cross:
            return own, Need(Key(Kind.RECEIVED_B, s, m), "recv", False)
        return own, Need(Key(Kind.BACKWARD, n, m), "gradient", cross)
    if op is Op.W:
        return (Need(Key(Kind.DEFERRED, s, m), "weight", False),)
    if op is Op.SEND_F:
        return (Need(Key(Kind.FORWARD, s, m), "send", False),)
    if op is Op.SEND_B:
        return (Need(Key(Kind.BACKWARD, s, m), "send", False),)
    if op is Op.RECV_F:
        return (Need(Key(Kind.SENT_F, nb.prev[s], m), "match", True),)
    if op is Op.RECV_B:
        return (Need(Key(Kind.SENT_B, nb.next[s], m), "match", True),)
    raise ValueError(f"{part} is an FB: ask about its halves ({part.parts})")


def unit_needs(unit: Action, nb: Neighbours, lowered: bool = False) -> list[tuple[Action, Need]]:
    """(part, need) for every part of ``unit`` (both halves of an FB, forward first)."""
    return [(p, n) for p in unit.parts for n in needs(p, nb, lowered)]


def destination(key: Key, nb: Neighbours) -> int:
    """The stage that needs ``key`` from a neighbour: the next stage for a forward, the
    previous one for a backward (-1: none, or a kind no other stage needs)."""
    if key.kind is Kind.FORWARD:
        return nb.next[key.stage]
    if key.kind is Kind.BACKWARD:
        return nb.prev[key.stage]
    return -1


def action_of(key: Key) -> Action:
    """The usual action making ``key`` (I for DEFERRED, B for BACKWARD), for messages."""
    return Action(MADE_BY[key.kind][0], key.stage, key.microbatch)


class Handoff(NamedTuple):
    """One cross-rank dependency and the SEND/RECV pair that must carry it in a lowered plan.

    ``producer`` is what moves (FORWARD of the earlier stage, or BACKWARD of the later one);
    ``consumer`` names the part that needs it by what that part makes; ``send`` and ``recv``
    are the products of the SEND on rank ``src`` and of the RECV on rank ``dst``.
    """

    producer: Key
    consumer: Key
    send: Key
    recv: Key
    src: int
    dst: int

    @property
    def piece(self) -> str:
        """The hardware-mode Timeline piece of this transfer ("pp_fwd" or "pp_bwd")."""
        return PIECE[self.producer.kind]


def handoffs(schedule: Schedule) -> Iterator[Handoff]:
    """Every cross-rank dependency, by chain, then hop along the chain, then micro-batch (the
    forward one of a (hop, micro-batch) before its backward one)."""
    s = schedule
    for c, mbs in enumerate(s.chains):
        stages = s.chain_stages(c)
        for a, b in zip(stages, stages[1:]):
            ra, rb = s.rank_of(a), s.rank_of(b)
            if ra == rb:
                continue
            for m in mbs:
                yield Handoff(Key(Kind.FORWARD, a, m), Key(Kind.FORWARD, b, m),
                              Key(Kind.SENT_F, a, m), Key(Kind.RECEIVED_F, b, m), ra, rb)
                yield Handoff(Key(Kind.BACKWARD, b, m), Key(Kind.BACKWARD, a, m),
                              Key(Kind.SENT_B, b, m), Key(Kind.RECEIVED_B, a, m), rb, ra)


# ---- the compiled form: keys as flat integer slots -------------------------------------------

@dataclass(frozen=True)
class Rules:
    """The rules of one schedule compiled to flat slots, for the hot loops.

    ``slot(key) = (kind * stages + stage) * microbatches + microbatch``. Since every rule keeps
    the micro-batch, the slots of a part of micro-batch m are the ones of micro-batch 0 plus m:
    ``needs[op][stage]`` is a tuple of (slot at micro-batch 0, cross) and ``makes[op][stage]`` a
    tuple of slots at micro-batch 0, for every single op that has rules. An FB is its halves.
    """

    stages: int
    microbatches: int
    needs: dict[Op, tuple[tuple[tuple[int, bool], ...], ...]]
    makes: dict[Op, tuple[tuple[int, ...], ...]]

    @property
    def size(self) -> int:
        """Slots in all (the length of a flat table over every key)."""
        return len(Kind) * self.stages * self.microbatches

    def slot(self, key: Key) -> int:
        return (key.kind * self.stages + key.stage) * self.microbatches + key.microbatch

    def key(self, slot: int) -> Key:
        rest, m = divmod(slot, self.microbatches)
        kind, stage = divmod(rest, self.stages)
        return Key(Kind(kind), stage, m)


def compile_rules(schedule: Schedule, lowered: bool = False,
                  nb: Neighbours | None = None) -> Rules:
    """:func:`needs` and :func:`makes` of every (op, stage) of ``schedule`` as flat slots.

    Without ``lowered`` only the compute ops have rules (the compute view, where a lowered
    plan's transfers are skipped: the compute dependencies stand for them)."""
    nb = nb if nb is not None else Neighbours.of(schedule)
    S, M = schedule.num_stages, schedule.microbatches
    table = Rules(S, M, {}, {})
    for op in MAKES if lowered else [op for op in MAKES if op.is_compute]:
        need_rows, make_rows = [], []
        for st in range(S):
            part = Action(op, st, 0)
            need_rows.append(tuple((table.slot(n.key), n.cross)
                                   for n in needs(part, nb, lowered) if n.key.stage >= 0))
            make_rows.append(tuple(table.slot(k) for k in makes(part)))
        table.needs[op] = tuple(need_rows)
        table.makes[op] = tuple(make_rows)
    return table
