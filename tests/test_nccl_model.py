"""Model check: lowered plans cannot deadlock on NCCL when each direction has its own stream.

A rendezvous model of NCCL point-to-point, pure Python (no torch, no processes):

- every rank replays its lowered action list the way the runtime does: compute actions take no
  time; a run of consecutive SEND/RECV actions is posted at once, then the rank waits until
  the receives of the run have completed; sends are not waited on before the end of the step;
- a stream is a FIFO of one rank's operations on one channel (in NCCL's terms a process group
  and a pair of ranks). A send and its receive complete together, and only when both are at
  the head of their streams: a large NCCL send is a rendezvous, it does not finish until the
  peer's receive runs, and it holds up whatever was posted after it on its stream;
- a batch (one ``batch_isend_irecv``, one NCCL group) is the run's transfers on one stream:
  they reach the head together, the batch leaves the stream when all of them completed, and
  its one handle makes a rank that waits on any of its receives wait for all of it;
- a replay is deadlock-free when every rank reaches the end of its list and every stream is
  empty.

Two channel layouts are checked:

- ``per_direction``: a -> b messages have a stream of their own (the runtime on NCCL: one
  process group per direction); lowering makes the receive order equal the send order there,
  so the model must never get stuck;
- ``shared``: both directions of a pair of ranks share one stream (ProcessGroupNCCL's P2P on
  a single group); a send that waits for its receive blocks a later receive on the same stream,
  and ZB-H2 at R = 2, M = 4 is known to hang. This shows the model can fail.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable

import pytest

from dualsim.errors import ScheduleError
from dualsim.generators import FAMILIES, generate
from dualsim.ir import Action, Op, Schedule
from dualsim.lower import lower

# a message: (direction "F" or "B", producing stage, micro-batch)
Message = tuple[str, int, int]
Channel = Callable[[int, int], Hashable]  # (src rank, dst rank) -> stream name on each side

SIZES = [(2, 4), (2, 8), (3, 6), (4, 4), (4, 8), (4, 12), (6, 12), (8, 16)]


def per_direction(src: int, dst: int) -> Hashable:
    return (src, dst)


def shared(src: int, dst: int) -> Hashable:
    return frozenset((src, dst))


@dataclass(frozen=True)
class Op2P:
    """One posted transfer as its stream sees it."""

    send: bool
    message: Message
    src: int
    dst: int


def _transfer(plan: Schedule, rank: int, a: Action) -> Op2P:
    """The message an action carries, named by its producer, and its two ranks."""
    if a.op is Op.SEND_F:
        peer = plan.rank_of(_stage(plan.next_stage(a.stage)))
        return Op2P(True, ("F", a.stage, a.microbatch), rank, peer)
    if a.op is Op.SEND_B:
        peer = plan.rank_of(_stage(plan.prev_stage(a.stage)))
        return Op2P(True, ("B", a.stage, a.microbatch), rank, peer)
    if a.op is Op.RECV_F:
        producer = _stage(plan.prev_stage(a.stage))
        return Op2P(False, ("F", producer, a.microbatch), plan.rank_of(producer), rank)
    assert a.op is Op.RECV_B, a
    producer = _stage(plan.next_stage(a.stage))
    return Op2P(False, ("B", producer, a.microbatch), plan.rank_of(producer), rank)


def _stage(stage: int | None) -> int:
    assert stage is not None
    return stage


def _programs(plan: Schedule) -> list[list[list[Op2P]]]:
    """Per rank, its list of transfer runs (compute actions between runs take no time)."""
    programs = []
    for rank, row in enumerate(plan.actions):
        runs: list[list[Op2P]] = []
        current: list[Op2P] = []
        for a in row:
            if a.op.is_transfer:
                current.append(_transfer(plan, rank, a))
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        programs.append(runs)
    return programs


@dataclass
class Stuck:
    """Where a deadlocked replay stopped: the unfinished operations at each rank's stream heads."""

    heads: dict[int, list[Op2P]]


def replay(plan: Schedule, channel: Channel, batched: bool = True) -> Stuck | None:
    """Run the rendezvous model on a lowered plan; None when every rank finishes.

    ``batched``: the transfers of one run that share a stream are one batch (one NCCL group):
    all of them are at the head together, the batch leaves the stream when all completed, and
    a rank waiting on a receive of the batch waits for the whole batch (NCCL gives a batch one
    handle). Otherwise every transfer is a batch of its own.
    """
    programs = _programs(plan)
    ranks = len(programs)
    next_run = [0] * ranks
    waiting: list[list[list[Op2P]]] = [[] for _ in range(ranks)]  # batches a rank waits on
    streams: dict[tuple[int, Hashable], deque[list[Op2P]]] = {}

    def stream(rank: int, t: Op2P) -> deque[list[Op2P]]:
        return streams.setdefault((rank, channel(t.src, t.dst)), deque())

    def first_at_head(q: deque[list[Op2P]], send: bool, src: int, dst: int) -> Op2P | None:
        """The head batch's first pending send (or receive) between src and dst."""
        return next((t for t in q[0] if (t.send, t.src, t.dst) == (send, src, dst)), None) \
            if q else None

    moved = True
    while moved:
        moved = False
        for r in range(ranks):  # post runs until the rank has to wait for a receive
            while not any(waiting[r]) and next_run[r] < len(programs[r]):
                batches: dict[int, list[Op2P]] = {}
                for t in programs[r][next_run[r]]:
                    q = stream(r, t)
                    if not batched or id(q) not in batches:
                        batches[id(q)] = []
                        q.append(batches[id(q)])
                    batches[id(q)].append(t)
                    if not t.send:
                        waiting[r].append(batches[id(q)])
                next_run[r] += 1
                moved = True
        for (r, _), q in list(streams.items()):  # rendezvous of sends and receives at heads
            for t in list(q[0]) if q else []:
                if not t.send or first_at_head(q, True, t.src, t.dst) is not t:
                    continue
                peer = stream(t.dst, t)
                recv = first_at_head(peer, False, t.src, t.dst)
                if recv is None:
                    continue
                # a pair's messages match in posting order: it must be this very message
                assert recv.message == t.message, (t, recv)
                q[0].remove(t)
                peer[0].remove(recv)
                moved = True
        for q in streams.values():
            while q and not q[0]:
                q.popleft()
    if all(n == len(p) for n, p in zip(next_run, programs)) and not any(streams.values()):
        return None
    heads: dict[int, list[Op2P]] = {}
    for (r, _), q in sorted(streams.items(), key=lambda kv: (kv[0][0], repr(kv[0][1]))):
        if q:
            heads.setdefault(r, []).extend(q[0])
    return Stuck(heads)


def _plans() -> list[tuple[str, int, int, Schedule]]:
    out = []
    for name in FAMILIES:
        for ranks, mbs in SIZES:
            try:
                plan = generate(name, ranks, mbs)
            except ScheduleError:  # a size the family does not take (e.g. odd R for DualPipe)
                continue
            out.append((name, ranks, mbs, lower(plan)))
    return out


PLANS = _plans()


def test_every_family_is_covered_at_several_sizes() -> None:
    for name in FAMILIES:
        assert sum(1 for n, *_ in PLANS if n == name) >= 3, name


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one-by-one"])
@pytest.mark.parametrize("name,ranks,mbs,plan", PLANS,
                         ids=[f"{n}-R{r}-M{m}" for n, r, m, _ in PLANS])
def test_per_direction_streams_never_deadlock(name: str, ranks: int, mbs: int, plan: Schedule,
                                               batched: bool) -> None:
    assert replay(plan, per_direction, batched) is None


def test_shared_stream_per_pair_deadlocks_zb_h2() -> None:
    # the runtime before per-direction groups: one stream per pair, each run of transfers one
    # batch. Rank 0 waits for its batch [send 0F3, receive 1B1]; the send of 0F3 waits for
    # rank 1's receive of it, queued behind rank 1's send of 1B2, whose receive rank 0 posts
    # only after that batch.
    plan = lower(generate("zb-h2", 2, 4))
    stuck = replay(plan, shared, batched=True)
    assert stuck is not None
    assert stuck.heads == {0: [Op2P(True, ("F", 0, 3), 0, 1)],
                           1: [Op2P(True, ("B", 1, 2), 1, 0)]}
    assert replay(plan, per_direction, batched=True) is None


def test_shared_stream_deadlocks_exactly_the_families_found_before() -> None:
    stuck = {name for name, _, _, plan in PLANS if replay(plan, shared, batched=True)}
    assert stuck == {"interleaved", "zb-h2", "zb-v", "dualpipe", "dualpipev"}


def test_shared_stream_without_batches_deadlocks_even_1f1b() -> None:
    # why the runtime batched on NCCL: rank 0's send of 0F1 and rank 1's send of 1B0 both
    # wait for a receive queued behind them
    stuck = replay(lower(generate("1f1b", 2, 4)), shared, batched=False)
    assert stuck is not None
    assert stuck.heads == {0: [Op2P(True, ("F", 0, 1), 0, 1)],
                           1: [Op2P(True, ("B", 1, 0), 1, 0)]}


def test_model_finishes_a_plan_without_crossing_traffic_in_both_layouts() -> None:
    # GPipe sends all forwards before any backward: one shared stream is enough there
    plan = lower(generate("gpipe", 2, 4))
    for batched in (True, False):
        assert replay(plan, shared, batched) is None
        assert replay(plan, per_direction, batched) is None
