"""The validator: a schedule's dependencies, its completeness, its transfers and deadlocks.

``validate`` checks the rules of docs/schedules.md ("Dependencies: what valid means"), whose
dependency part is :mod:`dualsim.deps`, in a fixed order, and raises one
:class:`~dualsim.errors.ValidationError` for the first problem it finds. Its message is one line
naming the rank, the position and the action and the rule broken; its ``detail`` is the per-rank
grid around that step with the step marked. A schedule that passes comes back as a
:class:`ValidSchedule` (a :class:`Plan` when it holds its transfers): only this module makes
them, and the simulators and the runtime take only them.

1. the placement table is sane (stages, ranks, chains, micro-batches);
2. there is one action list per rank;
3. every action names a known stage and a micro-batch of that stage's chain, sits on the rank
   holding its stage, and appears once;
4. every (stage, micro-batch) gets one F and either one B or one I and one W;
5. in a lowered plan, every cross-rank dependency (a :class:`~dualsim.deps.Handoff`) is carried
   by a SEND on the producer's rank and a RECV on the consumer's rank, no transfer serves a
   same-rank dependency, and between two ranks the receives are posted in the order of the
   sends (NCCL matches them in posting order);
6. the graph of dependencies plus per-rank order has no cycle: otherwise some rank would wait
   forever. The ranks are walked through the graph until they stall and the stalled ranks'
   waits are followed to a cycle (with networkx), which the message names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, Mapping, NamedTuple, NoReturn

import networkx as nx

from dualsim.deps import (MADE_BY, MAKES, Key, Kind, Neighbours, compile_rules, handoffs,
                          unit_needs)
from dualsim.errors import ValidationError, clip
from dualsim.ir import Action, Op, Schedule
from dualsim.walk import ZERO, Walk, walk

FIX = "re-emit the plan with `dualsim emit`"

# dependency rules (dualsim.deps): name -> how a consumer that runs too early is described
RULES: dict[str, str] = {
    "activation": "runs before its input activation from stage {stage} ({pred}) can exist",
    "forward": "runs before its forward {pred}",
    "gradient": "runs before its input gradient from stage {stage} ({pred}) can exist",
    "weight": "runs before {pred}: a W needs its I first",
    "send": "sends the output of {pred} before it exists",
    "recv": "runs before {pred} has received its input",
    "match": "waits for {pred}, which cannot be posted before it",
}


# ---- the validated types -------------------------------------------------------------------

class ValidSchedule(Schedule):
    """A schedule that passed :func:`validate`. Only this module makes one (``validate``, and
    ``lower`` through it); the simulators and the runtime take only these. It equals the
    plain Schedule with the same fields; changing it (``with_actions``, ``compute_only``) gives
    a plain Schedule again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"a {type(self).__name__} comes from dualsim.validate.validate(schedule)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(Schedule))

    __hash__ = Schedule.__hash__


class Plan(ValidSchedule):
    """A valid schedule that holds the SEND/RECV actions of all its cross-rank dependencies
    (one on a single rank needs none): what plan files hold and ``dualsim run`` executes (see
    ``dualsim.lower``)."""


def _seal(schedule: Schedule, plan: bool) -> ValidSchedule:
    valid = object.__new__(Plan if plan else ValidSchedule)
    valid.__dict__.update({f.name: getattr(schedule, f.name) for f in fields(Schedule)})
    return valid


# ---- messages -------------------------------------------------------------------------------

def _fail(schedule: Schedule, rank: int, pos: int, text: str) -> NoReturn:
    raise ValidationError(f"rank {rank}, position {pos}: {text}",
                          detail=schedule.grid(mark=(rank, pos), window=6))


def _mbs(mbs: tuple[int, ...]) -> str:
    """Micro-batches as a short range when contiguous."""
    if mbs and list(mbs) == list(range(mbs[0], mbs[0] + len(mbs))):
        return f"{mbs[0]}..{mbs[-1]}" if len(mbs) > 1 else str(mbs[0])
    return ", ".join(map(str, mbs))


# ---- 1, 2: placement and shape ------------------------------------------------------------

def check_placement(schedule: Schedule) -> None:
    """Stages numbered 0..S-1, ranks in range, chains of positions 0..L-1, micro-batches split."""
    s = schedule
    if s.ranks < 1 or s.microbatches < 1:
        raise ValidationError(f"plan has ranks={s.ranks} and microbatches={s.microbatches}; "
                              f"both must be at least 1; {FIX}")
    if not s.stages or not s.chains:
        raise ValidationError(f"plan has {len(s.stages)} stages and {len(s.chains)} chains; it "
                              f"needs at least one of each; {FIX}")
    check_sizes(s)
    numbers = sorted(st.stage for st in s.stages)
    if numbers != list(range(len(s.stages))):
        raise ValidationError(f"plan stages must be numbered 0..{len(s.stages) - 1} once each, "
                              f"got {clip(numbers)}; {FIX}")
    for st in s.stages:
        if not 0 <= st.rank < s.ranks:
            raise ValidationError(f"stage {st.stage} is placed on rank {st.rank}, but the plan "
                                  f"has ranks 0..{s.ranks - 1}; {FIX}")
        if not 0 <= st.chain < len(s.chains):
            raise ValidationError(f"stage {st.stage} is in chain {st.chain}, but the plan has "
                                  f"chains 0..{len(s.chains) - 1}; {FIX}")
    length = s.chain_length
    for c in range(len(s.chains)):
        positions = sorted(st.position for st in s.stages if st.chain == c)
        if positions != list(range(length)):
            raise ValidationError(f"chain {c} has stage positions {clip(positions)}, expected "
                                  f"0..{length - 1} once each; {FIX}")
    mbs = sorted(m for chain in s.chains for m in chain)
    if mbs != list(range(s.microbatches)):
        raise ValidationError(f"the chains must split micro-batches 0..{s.microbatches - 1} "
                              f"among them, each once; got {clip(mbs)}; {FIX}")


def check_sizes(s: Schedule) -> None:
    """Counts the plan claims against what it lists, before anything is sized by a claim.

    A hostile plan may say microbatches=10**12 or put a stage at position 2**63; the later
    checks build lists of those sizes, so the claims are first held against the lists.
    """
    listed = sum(len(chain) for chain in s.chains)
    if s.microbatches != listed:
        raise ValidationError(f"plan says microbatches={clip(s.microbatches)} but its chains "
                              f"list {listed} micro-batches; {FIX}")
    for st in s.stages:
        if not 0 <= st.position < len(s.stages):
            raise ValidationError(f"stage {st.stage} is at position {clip(st.position)}, but a "
                                  f"plan of {len(s.stages)} stages has positions "
                                  f"0..{len(s.stages) - 1}; {FIX}")


def check_shape(schedule: Schedule) -> None:
    if len(schedule.actions) != schedule.ranks:
        n = len(schedule.actions)
        raise ValidationError(f"plan says ranks={schedule.ranks} but has action lists for "
                              f"{n} rank{'s' if n != 1 else ''}; {FIX}")


# ---- 3: the index of actions ------------------------------------------------------------

F_, I_, W_, B_, FB_ = Op.F, Op.I, Op.W, Op.B, Op.FB
SEND_F, RECV_F, SEND_B, RECV_B = Op.SEND_F, Op.RECV_F, Op.SEND_B, Op.RECV_B
TRANSFERS = frozenset((SEND_F, RECV_F, SEND_B, RECV_B))
#: the single ops, in the order of the blocks of ``Index.at``
OPS: tuple[Op, ...] = tuple(MAKES)
_BLOCK = {op: k for k, op in enumerate(OPS)}


@dataclass
class Index:
    """Every action as a node id, rank-major (node = ``base[rank]`` + position), and every
    single action (an FB's half, a transfer) by (op, stage, micro-batch) in the flat table
    ``at`` (-1: none), with the stages' neighbours, so that the hot loops do no method calls.
    """

    schedule: Schedule
    nb: Neighbours
    base: list[int] = field(default_factory=list)  # rank -> first node id
    at: list[int] = field(default_factory=list)  # (op block, stage, mb) -> node, or -1
    lowered: bool = False

    def node(self, op: Op, stage: int, mb: int) -> int | None:
        """The node running ``op`` for (stage, mb), if any."""
        S, M = self.schedule.num_stages, self.schedule.microbatches
        if not (0 <= stage < S and 0 <= mb < M):
            return None
        n = self.at[(_BLOCK[op] * S + stage) * M + mb]
        return n if n >= 0 else None

    def maker(self, key: Key) -> int | None:
        """The node making ``key`` (for a backward, its B or else its I), if any."""
        for op in MADE_BY[key.kind]:
            n = self.node(op, key.stage, key.microbatch)
            if n is not None:
                return n
        return None

    @cached_property
    def made(self) -> list[int]:
        """The node making each product, by :class:`~dualsim.deps.Rules` slot (-1: none).
        Meaningful once every product has one maker (check_complete passed)."""
        block = self.schedule.num_stages * self.schedule.microbatches
        at = self.at
        out: list[int] = []
        for kind in Kind:
            first, *others = (at[_BLOCK[op] * block:(_BLOCK[op] + 1) * block]
                              for op in MADE_BY[kind])
            for other in others:
                first = [a if a >= 0 else b for a, b in zip(first, other)]
            out.extend(first)
        return out

    # node -> where it is; built on first use (messages, lowering), not by the checks
    @cached_property
    def action(self) -> list[Action]:
        return [a for row in self.schedule.actions for a in row]

    @cached_property
    def rank(self) -> list[int]:
        return [r for r, row in enumerate(self.schedule.actions) for _ in row]

    @cached_property
    def pos(self) -> list[int]:
        return [i for row in self.schedule.actions for i in range(len(row))]

    def name(self, node: int, part: Action, rank: int | None = None) -> str:
        """``part`` as a reader finds it: '6I3 on rank 1, position 9' (or 'at position 9')."""
        unit = self.action[node]
        what = str(part) if unit == part else f"{part} in {unit}"
        if rank is not None and self.rank[node] == rank:
            return f"{what} at position {self.pos[node]}"
        return f"{what} on rank {self.rank[node]}, position {self.pos[node]}"

    def part(self, node: int, key: Key) -> Action:
        """The part of node ``node`` that makes ``key``."""
        for p in self.action[node].parts:
            if p.stage == key.stage and p.microbatch == key.microbatch \
                    and key.kind in MAKES[p.op]:
                return p
        return self.action[node]

    def single(self, node: int, op: Op, stage: int, mb: int) -> Action:
        """The part of node ``node`` that runs ``op`` for (stage, mb)."""
        p = Action(op, stage, mb)
        return p if p in self.action[node].parts else self.action[node]

    def unit(self, node: int, part: Action) -> str:
        """'(0F7;7B3) (its half 7B3)' for an FB's half, else the action."""
        unit = self.action[node]
        return str(unit) if unit == part else f"{unit} (its half {part})"


def _new_index(schedule: Schedule) -> Index:
    s = schedule
    return Index(s, Neighbours.of(s), at=[-1] * (len(OPS) * s.num_stages * s.microbatches))


def _mark_lowered(ix: Index) -> None:
    block = ix.schedule.num_stages * ix.schedule.microbatches
    ix.lowered = any(n >= 0 for n in ix.at[_BLOCK[SEND_F] * block:])


def build_index(schedule: Schedule) -> Index:
    """Index every action, rejecting unknown stages/micro-batches, wrong ranks and duplicates.

    Needs a sane placement table (check_placement)."""
    s = schedule
    ix = _new_index(s)
    S, M = s.num_stages, s.microbatches
    stage_chain = [s.placement(st).chain for st in range(S)]
    mb_chain = [s.chain_of_microbatch(m) for m in range(M)]
    offset = {op: k * S * M for op, k in _BLOCK.items()}
    at, base, node = ix.at, ix.base, 0
    for r, row in enumerate(s.actions):
        base.append(node)
        mine = [held == r for held in ix.nb.rank]
        for i, a in enumerate(row):
            for p in a.pair or (a,):
                st, m = p.stage, p.microbatch
                if not (0 <= st < S and 0 <= m < M and mine[st]
                        and mb_chain[m] == stage_chain[st]):
                    _fail_unknown(s, r, i, a, p)
                k = offset[p.op] + st * M + m
                if at[k] >= 0:
                    _fail(s, r, i, f"{ix.unit(node, p)} is a second {p} (the first is "
                                   f"{ix.name(at[k], p, r)}): each (stage, micro-batch) runs "
                                   f"each op once; {FIX}")
                at[k] = node
            node += 1
    _mark_lowered(ix)
    return ix


def _fail_unknown(s: Schedule, r: int, i: int, unit: Action, a: Action) -> NoReturn:
    what = str(unit) if unit == a else f"{unit} (its half {a})"
    if not s.has_stage(a.stage):
        _fail(s, r, i, f"{what} names stage {a.stage}, but the plan has stages "
                        f"0..{s.num_stages - 1}; {FIX}")
    chain = s.placement(a.stage).chain
    if s.chain_of_microbatch(a.microbatch) != chain:
        _fail(s, r, i, f"{what} names micro-batch {a.microbatch}, which is not in stage "
                        f"{a.stage}'s chain (chain {chain}: micro-batches "
                        f"{_mbs(s.chains[chain])}); {FIX}")
    _fail(s, r, i, f"{what} is on rank {r}, but stage {a.stage} is held by rank "
                    f"{s.rank_of(a.stage)}; {FIX}")


# ---- 4: completeness ------------------------------------------------------------------------

def check_complete(ix: Index) -> None:
    """One F and either one B or one I + one W for every (stage, micro-batch) of each chain."""
    s, at = ix.schedule, ix.at
    block = s.num_stages * s.microbatches
    oF, oB, oI, oW = (_BLOCK[op] * block for op in (F_, B_, I_, W_))
    M = s.microbatches
    for c, mbs in enumerate(s.chains):
        for st in s.chain_stages(c):
            k0 = st * M
            for m in mbs:
                k = k0 + m
                f, b, i, w = at[oF + k], at[oB + k], at[oI + k], at[oW + k]
                if f >= 0 and b >= 0 and i < 0 and w < 0:
                    continue  # the common case: F and B
                if f >= 0 and i >= 0 and w >= 0 and b < 0:
                    continue  # F, I and W
                _fail_incomplete(ix, ix.nb.rank[st], st, m, *(None if n < 0 else n
                                                              for n in (f, b, i, w)))


def _fail_incomplete(ix: Index, r: int, st: int, m: int, f: int | None, b: int | None,
                     i: int | None, w: int | None) -> NoReturn:
    s = ix.schedule

    def here(node: int, op: Op) -> str:
        return ix.unit(node, ix.single(node, op, st, m))

    if b is not None and i is not None:
        late, other = (b, i) if b > i else (i, b)
        _fail(s, r, ix.pos[late], f"{here(late, B_ if late == b else I_)} is a second backward "
              f"of stage {st}, micro-batch {m} (the other is "
              f"{ix.name(other, ix.single(other, I_ if late == b else B_, st, m), r)}); use "
              f"either one B or one I and one W; {FIX}")
    if w is not None and i is None:
        why = (f"{st}B{m} is a full backward that computes it already" if b is not None
               else f"{st}I{m} is missing")
        _fail(s, r, ix.pos[w], f"{here(w, W_)} has no input-gradient half to follow: {why}; "
                               f"{FIX}")
    bwd = b if b is not None else i
    if f is None and bwd is not None:
        _fail(s, r, ix.pos[bwd], f"{here(bwd, B_ if b is not None else I_)} has no forward: "
                                 f"{st}F{m} is missing from rank {r}; {FIX}")
    if f is None:
        raise ValidationError(f"rank {r}: {st}F{m} and its backward are missing (stage {st} "
                              f"must run micro-batch {m}); {FIX}",
                              detail=s.grid(mark=(r, len(s.actions[r])), window=6))
    if bwd is None:
        _fail(s, r, ix.pos[f], f"{here(f, F_)} never gets a backward: {st}B{m} (or {st}I{m} "
                               f"and {st}W{m}) is missing; {FIX}")
    assert i is not None and w is None
    _fail(s, r, ix.pos[i], f"{here(i, I_)} never gets its weight gradient: {st}W{m} is "
                           f"missing; {FIX}")


# ---- 5: transfers ---------------------------------------------------------------------------

def _peer(ix: Index, a: Action) -> int:
    """The stage a transfer action talks to (-1 when its chain has no such stage)."""
    return ix.nb.next[a.stage] if a.op is SEND_F or a.op is RECV_B else ix.nb.prev[a.stage]


def node_of_key(ix: Index, key: Key) -> int:
    """The node making ``key``, which must exist (check_complete ran)."""
    n = ix.maker(key)
    assert n is not None, key
    return n


def check_transfers(ix: Index) -> None:
    """Each transfer serves a cross-rank dependency; each such dependency has both transfers;
    between two ranks the receives follow the sends' order."""
    s = ix.schedule
    for node, a in enumerate(ix.action):
        if a.op not in TRANSFERS:
            continue
        r, peer = ix.rank[node], _peer(ix, a)
        if peer >= 0 and ix.nb.rank[peer] != r:
            continue
        verb = "sends" if a.op is SEND_F or a.op is SEND_B else "receives"
        data = "an activation" if a.op is SEND_F or a.op is RECV_F else "an input gradient"
        if peer < 0:
            end = "last" if a.op is SEND_F or a.op is RECV_B else "first"
            _fail(s, r, ix.pos[node], f"{a} {verb} {data} of stage {a.stage}, the {end} stage "
                                      f"of its chain: no stage is on the other end; {FIX}")
        _fail(s, r, ix.pos[node], f"{a} {verb} {data} between stages {a.stage} and {peer}, "
                                  f"both on rank {r}: a same-rank dependency takes no transfer; "
                                  f"{FIX}")
    for t in handoffs(s):
        if ix.maker(t.send) is None:
            prod = node_of_key(ix, t.producer)
            _fail(s, t.src, ix.pos[prod], f"{ix.unit(prod, ix.part(prod, t.producer))}'s "
                  f"output goes to stage {t.consumer.stage} on rank {t.dst}, but rank {t.src} "
                  f"has no {_action_str(t.send)}; {FIX}")
        if ix.maker(t.recv) is None:
            cons = node_of_key(ix, t.consumer)
            _fail(s, t.dst, ix.pos[cons], f"{ix.unit(cons, ix.part(cons, t.consumer))} needs "
                  f"stage {t.producer.stage}'s output from rank {t.src}, but rank {t.dst} has "
                  f"no {_action_str(t.recv)}; {FIX}")
    _check_pair_order(ix)


def _action_str(key: Key) -> str:
    return str(Action(MADE_BY[key.kind][0], key.stage, key.microbatch))


def _check_pair_order(ix: Index) -> None:
    """On every pair of ranks, receive #k must match send #k (NCCL has no tags)."""
    s = ix.schedule
    sends: dict[tuple[int, int], list[int]] = {}
    recvs: dict[tuple[int, int], list[int]] = {}
    for node, a in enumerate(ix.action):
        if a.op in TRANSFERS:
            other = ix.nb.rank[_peer(ix, a)]
            if a.op is SEND_F or a.op is SEND_B:
                sends.setdefault((ix.rank[node], other), []).append(node)
            else:
                recvs.setdefault((other, ix.rank[node]), []).append(node)
    for (src, dst), got in sorted(recvs.items()):
        for k, (rv, sd) in enumerate(zip(got, sends.get((src, dst), []))):
            sent = ix.action[sd]
            wanted = Action(RECV_F if sent.op is SEND_F else RECV_B, _peer(ix, sent),
                            sent.microbatch)
            if wanted != ix.action[rv]:
                _fail(s, dst, ix.pos[rv], f"{ix.action[rv]} is receive #{k + 1} of rank {dst} "
                      f"from rank {src}, but send #{k + 1} of rank {src} to rank {dst} is "
                      f"{sent} (position {ix.pos[sd]}): messages between two ranks are matched "
                      f"in posting order; {FIX}")


# ---- 6: dependencies and deadlocks -------------------------------------------------------

class Dep(NamedTuple):
    """Node ``consumer`` (its part ``part``) needs node ``producer`` (its product ``key``)."""

    producer: int
    consumer: int
    rule: str
    part: Action
    key: Key
    stage: int  # the producing stage for the activation/gradient rules, else -1


def deps_of(ix: Index, n: int) -> list[Dep]:
    """The dependencies of node ``n`` (:func:`dualsim.deps.needs` of its parts) whose
    producers exist. In a plan without transfers a cross-rank dependency links producer and
    consumer directly; in a lowered plan it runs producer -> SEND -> RECV -> consumer."""
    out = []
    for part, need in unit_needs(ix.action[n], ix.nb, ix.lowered):
        producer = ix.maker(need.key)
        if producer is not None:
            stage = need.key.stage if need.rule in ("activation", "gradient") else -1
            out.append(Dep(producer, n, need.rule, part, need.key, stage))
    return out


def dependency_graph(schedule: Schedule) -> nx.DiGraph:
    """Nodes (rank, position) with attribute ``action``; edges with attribute ``rule``:
    'order' for the per-rank order, else the dependency rule (see ``RULES``)."""
    check_placement(schedule)
    ix = build_index_lenient(schedule)
    g = nx.DiGraph()
    nodes = list(zip(ix.rank, ix.pos))
    g.add_nodes_from((v, {"action": a}) for v, a in zip(nodes, ix.action))
    g.add_edges_from((((r, i), (r, i + 1)) for r, row in enumerate(schedule.actions)
                      for i in range(len(row) - 1)), rule="order")
    known = range(schedule.num_stages)
    by_rule: dict[str, list[tuple[tuple[int, int], tuple[int, int]]]] = {}
    for n, unit in enumerate(ix.action):
        if all(p.stage in known for p in unit.parts):
            for d in deps_of(ix, n):
                by_rule.setdefault(d.rule, []).append((nodes[d.producer], nodes[n]))
    for rule, edges in by_rule.items():
        g.add_edges_from(edges, rule=rule)
    return g


def build_index_lenient(schedule: Schedule) -> Index:
    """An index that tolerates broken plans (first occurrence wins, unknown stages skipped);
    for a valid schedule, the index without the checks."""
    s = schedule
    ix = _new_index(s)
    S, M = s.num_stages, s.microbatches
    at, node = ix.at, 0
    for row in s.actions:
        ix.base.append(node)
        for a in row:
            for p in a.pair or (a,):
                if 0 <= p.stage < S and 0 <= p.microbatch < M:
                    k = (_BLOCK[p.op] * S + p.stage) * M + p.microbatch
                    if at[k] < 0:
                        at[k] = node
            node += 1
    _mark_lowered(ix)
    return ix


def check_deadlock(ix: Index) -> None:
    """Walk every rank through the graph (:func:`dualsim.walk.walk`); if some stall, name the
    cycle they wait in."""
    stalled = walk(ix.schedule, compile_rules(ix.schedule, ix.lowered, ix.nb))
    if stalled.blocked:
        _fail_deadlock(ix, stalled)


def _fail_deadlock(ix: Index, w: Walk) -> NoReturn:
    # each stalled rank waits at its head for one producer on some rank (maybe itself)
    stalled, ptr = w.stalled, w.pointer
    done = bytearray(len(ix.action))
    for r, first in enumerate(ix.base):
        done[first:first + ptr[r]] = b"\x01" * ptr[r]
    blocked_by: dict[int, Dep] = {}
    waits = nx.DiGraph()
    for r in stalled:
        d = next(d for d in deps_of(ix, ix.base[r] + ptr[r]) if not done[d.producer])
        blocked_by[r] = d
        waits.add_edge(r, ix.rank[d.producer])
    start = min(stalled, key=lambda r: (ptr[r], r))
    cycle = [u for u, _ in nx.find_cycle(waits, source=start)]
    first = min(cycle, key=lambda r: (ptr[r], r))
    k = cycle.index(first)
    cycle = cycle[k:] + cycle[:k]

    def wanted(d: Dep, rank: int | None = None) -> str:
        return ix.name(d.producer, ix.part(d.producer, d.key), rank)

    d = blocked_by[first]
    if d.producer == d.consumer:
        what = ix.part(d.producer, d.key)
        text = (f"needs its own output: {d.part} needs {what}, and an FB's results exist only "
                f"when the whole FB ends")
    else:
        text = RULES[d.rule].format(stage=d.stage, pred=wanted(d, first))
    loop = "; ".join(f"rank {r} waits at {ix.action[blocked_by[r].consumer]} for "
                     f"{wanted(blocked_by[r])}" for r in cycle)
    subject = ix.action[d.consumer] if d.producer == d.consumer else ix.unit(d.consumer, d.part)
    _fail(ix.schedule, first, ptr[first], f"{subject} {text}: the plan "
          f"deadlocks (cycle: {loop}); reorder rank {first}'s actions or {FIX}")


# ---- the validator -------------------------------------------------------------------------

def validate(schedule: Schedule) -> ValidSchedule:
    """``schedule`` as a ValidSchedule (a Plan when it holds every transfer it needs); raise
    ValidationError for the first rule it breaks (see the module docstring). A ValidSchedule
    comes back as it is: nothing is validated twice."""
    if isinstance(schedule, ValidSchedule):
        return schedule
    return validate_walk(schedule, ZERO, 0)[0]


def validate_walk(schedule: Schedule, durations: Mapping[Op, Any],
                  latency: Any) -> tuple[ValidSchedule, Walk]:
    """``validate(schedule)`` and the walk of its compute actions with ``durations`` and
    ``latency`` (what the abstract simulator times), in one pass.

    The fast pass is that walk with ``check`` (it refuses misplaced actions and repeated
    products, and stalls on a deadlock or a missing product), then a count of the products
    made (completeness); a plan with transfers also gets checks 3 to 6 in full. Whatever the
    fast pass refuses, the checks run in order to report the first problem."""
    if isinstance(schedule, ValidSchedule):
        w = walk(schedule, compile_rules(schedule), durations, latency)
        assert not w.blocked, "a valid schedule cannot stall"
        return schedule, w
    check_placement(schedule)
    check_shape(schedule)
    nb = Neighbours.of(schedule)
    w = walk(schedule, compile_rules(schedule, False, nb), durations, latency, check=True)
    if w.bad is not None or w.blocked or not _complete(schedule, w.ready):
        explain(schedule)
        raise AssertionError("the validator's walk refused a schedule its checks accept")
    if w.skipped:  # SEND/RECV: their placement, pairing and order need the index
        ix = _checked_until_deadlock(schedule)
        check_deadlock(ix)
        return _sealed(ix), w
    return _seal(schedule, next(handoffs(schedule), None) is None), w


def _complete(schedule: Schedule, ready: list[Any]) -> bool:
    """Check 4 on a finished checking walk's products: every (stage, micro-batch) of its
    chain has its forward and its backward, and a W exactly when its backward was an I. A
    checking walk makes only those pairs' products, each once, and a W only after its I, so
    counting them is enough."""
    block = schedule.num_stages * schedule.microbatches
    fwd, bwd, deferred, weight = (ready[k * block:(k + 1) * block]
                                  for k in (Kind.FORWARD, Kind.BACKWARD, Kind.DEFERRED,
                                            Kind.WEIGHT))
    pairs = schedule.chain_length * sum(len(mbs) for mbs in schedule.chains)
    missing = block - pairs
    return (fwd.count(None) == missing and bwd.count(None) == missing
            and deferred.count(None) == weight.count(None))


def explain(schedule: Schedule) -> None:
    """Checks 1 to 6 in order, each building on the last: raise ValidationError for the first
    problem (with the index the messages need). Returns only for a valid schedule."""
    check_deadlock(_checked_until_deadlock(schedule))


def checked(schedule: Schedule) -> tuple[ValidSchedule, Index]:
    """``validate(schedule)`` and its index (for passes that build on a valid plan)."""
    valid = validate(schedule)
    return valid, build_index_lenient(valid)


def _checked_until_deadlock(schedule: Schedule) -> Index:
    """Checks 1 to 5 (all but the deadlock walk); the index they build."""
    check_placement(schedule)
    check_shape(schedule)
    ix = build_index(schedule)
    check_complete(ix)
    if ix.lowered:
        check_transfers(ix)
    return ix


def _sealed(ix: Index) -> ValidSchedule:
    """The checked schedule of ``ix`` as a ValidSchedule, or a Plan when it holds every
    transfer it needs."""
    s = ix.schedule
    return _seal(s, ix.lowered or next(handoffs(s), None) is None)
