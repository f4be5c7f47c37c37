"""The validator: a schedule's dependency graph, its completeness, its transfers and deadlocks.

``validate`` checks the rules of DESIGN.md §3 in a fixed order and raises one
:class:`~dualsim.errors.ValidationError` for the first problem it finds. Its message is one line
naming the rank, the position and the action and the rule broken; its ``detail`` is the per-rank
grid around that step with the step marked.

1. the placement table is sane (stages, ranks, chains, micro-batches);
2. there is one action list per rank;
3. every action names a known stage and a micro-batch of that stage's chain, sits on the rank
   holding its stage, and appears once;
4. every (stage, micro-batch) gets one F and either one B or one I and one W;
5. in a lowered plan, every cross-rank dependency is carried by a SEND on the producer's rank
   and a RECV on the consumer's rank (torch.distributed.pipelining semantics: SEND_F of stage s
   carries F's output to the next stage, RECV_F of stage s receives it from the previous one,
   SEND_B of stage s carries the input gradient to the previous stage, RECV_B of stage s
   receives it from the next one), no transfer serves a same-rank dependency, and between two
   ranks the receives are posted in the order of the sends (NCCL matches them in posting order);
6. the graph of dependencies plus per-rank order has no cycle: otherwise some rank would wait
   forever. The ranks are executed in the graph until they stall and the stalled ranks' waits
   are followed to a cycle (with networkx), which the message names.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, NoReturn

import networkx as nx

from dualsim.errors import ValidationError, clip
from dualsim.ir import Action, Op, Schedule

Key = tuple[Op, int, int]  # (op, stage, micro-batch) of one compute part or one transfer

FIX = "re-emit the plan with `dualsim emit`"

# dependency rules: name -> how a consumer that runs too early is described
RULES: dict[str, str] = {
    "activation": "runs before its input activation from stage {stage} ({pred}) can exist",
    "forward": "runs before its forward {pred}",
    "gradient": "runs before its input gradient from stage {stage} ({pred}) can exist",
    "weight": "runs before {pred}: a W needs its I first",
    "send": "sends the output of {pred} before it exists",
    "recv": "runs before {pred} has received its input",
    "match": "waits for {pred}, which cannot be posted before it",
}


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


@dataclass
class Index:
    """Every action as a node id; every compute part and transfer by (op, stage, mb).

    Also flat per-stage tables (rank, previous and next stage, -1 for none) so that the hot
    loops do no method calls.
    """

    schedule: Schedule
    base: list[int] = field(default_factory=list)  # rank -> first node id
    rank: list[int] = field(default_factory=list)  # node -> rank
    pos: list[int] = field(default_factory=list)  # node -> position
    action: list[Action] = field(default_factory=list)  # node -> action
    at: dict[Key, int] = field(default_factory=dict)  # part or transfer -> node
    stage_rank: list[int] = field(default_factory=list)
    prev: list[int] = field(default_factory=list)
    next: list[int] = field(default_factory=list)
    lowered: bool = False

    def backward(self, stage: int, mb: int) -> int | None:
        n = self.at.get((B_, stage, mb))
        return n if n is not None else self.at.get((I_, stage, mb))

    def name(self, node: int, part: Action, rank: int | None = None) -> str:
        """``part`` as a reader finds it: '6I3 on rank 1, position 9' (or 'at position 9')."""
        unit = self.action[node]
        what = str(part) if unit == part else f"{part} in {unit}"
        if rank is not None and self.rank[node] == rank:
            return f"{what} at position {self.pos[node]}"
        return f"{what} on rank {self.rank[node]}, position {self.pos[node]}"

    def part(self, node: int, key: Key) -> Action:
        """The part of node ``node`` that ``key`` names."""
        for p in self.action[node].parts:
            if _part_key(p) == key:
                return p
        return self.action[node]

    def part_of(self, node: int, stage: int, mb: int) -> Action:
        """The part of ``node`` that computes (stage, mb), whatever its op."""
        for p in self.action[node].parts:
            if p.stage == stage and p.microbatch == mb:
                return p
        return self.action[node]

    def unit(self, node: int, part: Action) -> str:
        """'(0F7;7B3) (its half 7B3)' for an FB's half, else the action."""
        unit = self.action[node]
        return str(unit) if unit == part else f"{unit} (its half {part})"


def _part_key(a: Action) -> Key:
    return (a.op, a.stage, a.microbatch)


def _tables(ix: Index) -> None:
    s = ix.schedule
    n = s.num_stages
    ix.stage_rank = [s.rank_of(st) for st in range(n)]
    ix.prev = [-1 if (p := s.prev_stage(st)) is None else p for st in range(n)]
    ix.next = [-1 if (q := s.next_stage(st)) is None else q for st in range(n)]


def build_index(schedule: Schedule) -> Index:
    """Index every action, rejecting unknown stages/micro-batches, wrong ranks and duplicates.

    Needs a sane placement table (check_placement)."""
    s = schedule
    ix = Index(s)
    _tables(ix)
    stage_chain = [s.placement(st).chain for st in range(s.num_stages)]
    mb_chain = [s.chain_of_microbatch(m) for m in range(s.microbatches)]
    stage_rank, num_stages, num_mbs = ix.stage_rank, s.num_stages, s.microbatches
    at, ranks, poss, actions = ix.at, ix.rank, ix.pos, ix.action
    for r, row in enumerate(s.actions):
        ix.base.append(len(actions))
        for i, a in enumerate(row):
            node = len(actions)
            ranks.append(r)
            poss.append(i)
            actions.append(a)
            if a.op in TRANSFERS:
                ix.lowered = True
            for p in (a.pair or (a,)):
                st, m = p.stage, p.microbatch
                if not (0 <= st < num_stages and 0 <= m < num_mbs
                        and mb_chain[m] == stage_chain[st] and stage_rank[st] == r):
                    _fail_unknown(s, r, i, a, p)
                key = (p.op, st, m)
                if key in at:
                    _fail(s, r, i, f"{ix.unit(node, p)} is a second {p} (the first is "
                                   f"{ix.name(at[key], p, r)}): each (stage, micro-batch) runs "
                                   f"each op once; {FIX}")
                at[key] = node
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
    for c, mbs in enumerate(s.chains):
        for st in s.chain_stages(c):
            r = ix.stage_rank[st]
            for m in mbs:
                f, b = at.get((F_, st, m)), at.get((B_, st, m))
                i, w = at.get((I_, st, m)), at.get((W_, st, m))
                if f is not None and b is not None and i is None and w is None:
                    continue  # the common case: F and B
                if f is not None and i is not None and w is not None and b is None:
                    continue  # F, I and W
                _fail_incomplete(ix, r, st, m, f, b, i, w)


def _fail_incomplete(ix: Index, r: int, st: int, m: int, f: int | None, b: int | None,
                     i: int | None, w: int | None) -> NoReturn:
    s = ix.schedule

    def here(node: int, op: Op) -> str:
        return ix.unit(node, ix.part(node, (op, st, m)))

    if b is not None and i is not None:
        late, other = (b, i) if b > i else (i, b)
        _fail(s, r, ix.pos[late], f"{here(late, B_ if late == b else I_)} is a second backward "
              f"of stage {st}, micro-batch {m} (the other is "
              f"{ix.name(other, ix.part_of(other, st, m), r)}); use either one B or one I and "
              f"one W; {FIX}")
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

class Handoff(NamedTuple):
    """One cross-rank dependency and the SEND/RECV pair that must carry it.

    ``producer``/``consumer`` use op F for forwards and B for either backward (B or I)."""

    producer: Key
    consumer: Key
    send: Key
    recv: Key
    src: int
    dst: int


def cross_rank_handoffs(schedule: Schedule) -> Iterator[Handoff]:
    """Every cross-rank dependency of the schedule's chains, in (chain, stage, mb) order."""
    s = schedule
    for c, mbs in enumerate(s.chains):
        stages = s.chain_stages(c)
        for k in range(len(stages) - 1):
            a, b = stages[k], stages[k + 1]
            ra, rb = s.rank_of(a), s.rank_of(b)
            if ra == rb:
                continue
            for m in mbs:
                yield Handoff((F_, a, m), (F_, b, m), (SEND_F, a, m), (RECV_F, b, m), ra, rb)
                yield Handoff((B_, b, m), (B_, a, m), (SEND_B, b, m), (RECV_B, a, m), rb, ra)


def _peer(ix: Index, a: Action) -> int:
    """The stage a transfer action talks to (-1 when its chain has no such stage)."""
    return ix.next[a.stage] if a.op is SEND_F or a.op is RECV_B else ix.prev[a.stage]


def node_of_key(ix: Index, key: Key) -> int:
    """The node of a producer/consumer key (op B stands for either backward); must exist."""
    n = ix.at.get(key) if key[0] is F_ else ix.backward(key[1], key[2])
    assert n is not None, key  # check_complete ran
    return n


def check_transfers(ix: Index) -> None:
    """Each transfer serves a cross-rank dependency; each such dependency has both transfers;
    between two ranks the receives follow the sends' order."""
    s = ix.schedule
    for node, a in enumerate(ix.action):
        if a.op not in TRANSFERS:
            continue
        r, peer = ix.rank[node], _peer(ix, a)
        if peer >= 0 and ix.stage_rank[peer] != r:
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
    for t in cross_rank_handoffs(s):
        if t.send not in ix.at:
            prod = node_of_key(ix, t.producer)
            part = ix.part_of(prod, t.producer[1], t.producer[2])
            _fail(s, t.src, ix.pos[prod], f"{ix.unit(prod, part)}'s output goes to stage "
                  f"{t.consumer[1]} on rank {t.dst}, but rank {t.src} has no {_key_str(t.send)}; "
                  f"{FIX}")
        if t.recv not in ix.at:
            cons = node_of_key(ix, t.consumer)
            part = ix.part_of(cons, t.consumer[1], t.consumer[2])
            _fail(s, t.dst, ix.pos[cons], f"{ix.unit(cons, part)} needs stage "
                  f"{t.producer[1]}'s output from rank {t.src}, but rank {t.dst} has no "
                  f"{_key_str(t.recv)}; {FIX}")
    _check_pair_order(ix)


def _key_str(k: Key) -> str:
    return f"{k[1]}{k[0].value}{k[2]}"


def _check_pair_order(ix: Index) -> None:
    """On every pair of ranks, receive #k must match send #k (NCCL has no tags)."""
    s = ix.schedule
    sends: dict[tuple[int, int], list[int]] = {}
    recvs: dict[tuple[int, int], list[int]] = {}
    for node, a in enumerate(ix.action):
        if a.op in TRANSFERS:
            other = ix.stage_rank[_peer(ix, a)]
            if a.op is SEND_F or a.op is SEND_B:
                sends.setdefault((ix.rank[node], other), []).append(node)
            else:
                recvs.setdefault((other, ix.rank[node]), []).append(node)
    for (src, dst), got in sorted(recvs.items()):
        for k, (rv, sd) in enumerate(zip(got, sends.get((src, dst), []))):
            sent = ix.action[sd]
            peer = _peer(ix, sent)
            wanted = (RECV_F if sent.op is SEND_F else RECV_B, peer, sent.microbatch)
            if wanted != _part_key(ix.action[rv]):
                _fail(s, dst, ix.pos[rv], f"{ix.action[rv]} is receive #{k + 1} of rank {dst} "
                      f"from rank {src}, but send #{k + 1} of rank {src} to rank {dst} is "
                      f"{sent} (position {ix.pos[sd]}): messages between two ranks are matched "
                      f"in posting order; {FIX}")


# ---- 6: dependencies and deadlocks -------------------------------------------------------

class Dep(NamedTuple):
    """Node ``consumer`` (its part ``part``) needs node ``producer`` (its part named ``key``)."""

    producer: int
    consumer: int
    rule: str
    part: Action
    key: Key
    stage: int  # the producing stage for the activation/gradient rules, else -1


def wants(ix: Index, n: int) -> list[tuple[Key, Action, str, int]]:
    """What node ``n`` needs (not the per-rank order): (key, its part, rule, producing stage).

    In a plan without transfers a cross-rank dependency links producer and consumer directly;
    in a lowered plan it runs producer -> SEND -> RECV -> consumer. A backward's need of the
    next stage's backward is listed for both B and I: only one of them exists.
    """
    out: list[tuple[Key, Action, str, int]] = []
    r, lowered, stage_rank = ix.rank[n], ix.lowered, ix.stage_rank
    unit = ix.action[n]
    for p in unit.pair or (unit,):
        op, st, m = p.op, p.stage, p.microbatch
        if op is F_:
            prev = ix.prev[st]
            if prev >= 0:
                if lowered and stage_rank[prev] != r:
                    out.append(((RECV_F, st, m), p, "recv", -1))
                else:
                    out.append(((F_, prev, m), p, "activation", prev))
        elif op is B_ or op is I_:
            out.append(((F_, st, m), p, "forward", -1))
            nxt = ix.next[st]
            if nxt >= 0:
                if lowered and stage_rank[nxt] != r:
                    out.append(((RECV_B, st, m), p, "recv", -1))
                else:
                    out.append(((B_, nxt, m), p, "gradient", nxt))
                    out.append(((I_, nxt, m), p, "gradient", nxt))
        elif op is W_:
            out.append(((I_, st, m), p, "weight", -1))
        elif op is SEND_F:
            out.append(((F_, st, m), p, "send", -1))
        elif op is SEND_B:
            out.append(((B_, st, m), p, "send", -1))
            out.append(((I_, st, m), p, "send", -1))
        elif op is RECV_F:
            out.append(((SEND_F, ix.prev[st], m), p, "match", -1))
        else:  # RECV_B
            out.append(((SEND_B, ix.next[st], m), p, "match", -1))
    return out


def deps_of(ix: Index, n: int) -> list[Dep]:
    """The dependencies of node ``n`` whose producers exist."""
    at = ix.at
    return [Dep(at[key], n, rule, part, key, stage) for key, part, rule, stage in wants(ix, n)
            if key in at]


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
    """An index that tolerates broken plans (first occurrence wins, unknown stages skipped)."""
    s = schedule
    ix = Index(s)
    _tables(ix)
    for r, row in enumerate(s.actions):
        ix.base.append(len(ix.action))
        for i, a in enumerate(row):
            node = len(ix.action)
            ix.rank.append(r)
            ix.pos.append(i)
            ix.action.append(a)
            ix.lowered = ix.lowered or a.op in TRANSFERS
            for p in a.pair or (a,):
                if 0 <= p.stage < s.num_stages and p.microbatch < s.microbatches:
                    ix.at.setdefault(_part_key(p), node)
    return ix


def check_deadlock(ix: Index) -> None:
    """Run every rank through the graph; if some stall, name the cycle they wait in."""
    s = ix.schedule
    at = ix.at
    preds = [[at[w[0]] for w in wants(ix, n) if w[0] in at] for n in range(len(ix.action))]
    lengths = [len(row) for row in s.actions]
    ptr = [0] * s.ranks
    done = bytearray(len(ix.action))
    waiting: dict[int, list[int]] = {}
    ready = deque(range(s.ranks))
    while ready:
        r = ready.popleft()
        n, end = ix.base[r] + ptr[r], ix.base[r] + lengths[r]
        while n < end:
            blocker = -1
            for p in preds[n]:
                if not done[p]:
                    blocker = p
                    break
            if blocker >= 0:
                waiting.setdefault(blocker, []).append(r)
                break
            done[n] = 1
            n += 1
            ready.extend(waiting.pop(n - 1, ()))
        ptr[r] = n - ix.base[r]
    stalled = [r for r in range(s.ranks) if ptr[r] < lengths[r]]
    if stalled:
        _fail_deadlock(ix, stalled, ptr, done)


def _fail_deadlock(ix: Index, stalled: list[int], ptr: list[int], done: bytearray) -> NoReturn:
    # each stalled rank waits at its head for one producer on some rank (maybe itself)
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

def validate(schedule: Schedule) -> None:
    """Raise ValidationError for the first rule ``schedule`` breaks (see the module docstring)."""
    checked_index(schedule)


def checked_index(schedule: Schedule) -> Index:
    """Validate ``schedule`` and return its index (for passes that build on a valid plan)."""
    check_placement(schedule)
    check_shape(schedule)
    ix = build_index(schedule)
    check_complete(ix)
    if ix.lowered:
        check_transfers(ix)
    check_deadlock(ix)
    return ix
