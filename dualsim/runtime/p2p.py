"""Point-to-point transfers between pipeline ranks (torch.distributed isend/irecv).

Sends are asynchronous: their handles are kept until the step ends. Receives are posted and
then waited on. Messages carry no tags: the plan guarantees that, from rank a to rank b, b posts
its receives in the order a posts its sends (``dualsim/lower.py``).

Why one process group per direction on NCCL. A large NCCL send is a rendezvous: its kernel does
not finish until the peer's matching receive runs. ProcessGroupNCCL runs a group's P2P
operations between two ranks on one communicator and one CUDA stream, in posting order, for
both directions. On such a shared stream a pending a -> b send holds up every later operation
of a with b, including a receive of a b -> a message; if b's send of that message is itself
queued behind b's receive of a's pending send, both ranks wait for ever. The lowered plans of
interleaved, ZB-H2, ZB-V, DualPipe and DualPipeV contain such crossings (ZB-H2 at R = 2, M = 4:
rank 0's send of 0F3 against rank 1's send of 1B2). Batching the transfers that are adjacent in
a rank's list does not remove them: a batch waits as a whole, and the crossing messages need
not be adjacent. So every direction a -> b of every communicating pair gets its own group
(created collectively by all ranks, in one order derived from the plan), and a -> b messages go
only there. Each stream then carries one direction, in which the receive order equals the send
order by construction of the plan: the send at the head of a's stream meets its receive at the
head of b's, and no send can hold up a receive of the other direction.
``tests/test_nccl_model.py`` replays every family in a rendezvous model of these streams.

Batching stays where it is valid: the transfers of one run (consecutive SEND/RECV actions) that
share a group are posted as one ``batch_isend_irecv``; all of them go the same direction.

On gloo, sends do not hold up receives, so the default group with plain isend/irecv is enough
(it matches messages per pair in posting order as well); ``per_direction`` makes gloo take the
NCCL path, so the tests cover its plumbing with real processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

from dualsim.ir import Schedule
from dualsim.validate import cross_rank_handoffs

Direction = tuple[int, int]  # (sending rank, receiving rank)


@dataclass
class Message:
    """One message: send ``tensor`` to ``peer``, or receive into ``tensor`` from ``peer``."""

    send: bool
    peer: int
    tensor: torch.Tensor


def directions(plan: Schedule) -> list[Direction]:
    """Every (src, dst) pair of ranks with a message in a step, sorted.

    The plan's cross-rank activations and input gradients, and both directions between ranks
    holding copies of one layer slice (the end-of-step gradient sum of DualPipe).
    """
    pairs = {(t.src, t.dst) for t in cross_rank_handoffs(plan)}
    for a in plan.stages:
        for b in plan.stages:
            if a.position == b.position and a.rank != b.rank:
                pairs.add((a.rank, b.rank))
    return sorted(pairs)


# process groups already created, per direction; valid while the default group is the same
_groups: dict[Direction, dist.ProcessGroup] = {}
_groups_world: object = None


def direction_groups(pairs: Iterable[Direction],
                     device: torch.device) -> dict[Direction, dist.ProcessGroup]:
    """One process group per direction; collective: every rank calls it with the same pairs.

    Groups are created in sorted order and kept for later plans of the same process group (a
    launch runs several plans in turn, the same on every rank, so the ranks agree on which
    directions exist already). On a GPU each group connects its NCCL communicator here, in
    that one order on every rank; left lazy, the two ranks of a pair could set up their a -> b
    and b -> a communicators in opposite orders at their first messages, each waiting for the
    other. On a rank outside a pair the entry is torch's non-member placeholder, never used.
    """
    global _groups_world
    if _groups_world is not dist.group.WORLD:
        _groups.clear()
        _groups_world = dist.group.WORLD
    wanted = sorted(set(pairs))
    for src, dst in wanted:
        if (src, dst) not in _groups:
            _groups[(src, dst)] = dist.new_group(
                sorted((src, dst)), device_id=device if device.type == "cuda" else None)
    return {p: _groups[p] for p in wanted}


class PeerComm:
    """Posts transfers and keeps unfinished sends alive.

    ``groups`` None: the default group, one isend/irecv per transfer (gloo). Otherwise the
    group of each transfer's direction, one batch per group and run (NCCL; gloo when asked).
    """

    def __init__(self, rank: int, groups: dict[Direction, dist.ProcessGroup] | None) -> None:
        self.rank = rank
        self.groups = groups
        self.pending_sends: list[tuple[dist.Work, torch.Tensor]] = []

    @staticmethod
    def for_plan(plan: Schedule, rank: int, device: torch.device,
                 per_direction: bool) -> "PeerComm":
        """Collective when ``per_direction``: every rank must call it for the same plan."""
        groups = direction_groups(directions(plan), device) if per_direction else None
        return PeerComm(rank, groups)

    def _group(self, t: Message) -> dist.ProcessGroup:
        assert self.groups is not None
        direction = (self.rank, t.peer) if t.send else (t.peer, self.rank)
        if direction not in self.groups:
            raise RuntimeError(f"rank {self.rank}: no process group for messages "
                               f"{direction[0]} -> {direction[1]} (not in the plan)")
        return self.groups[direction]

    def post(self, transfers: list[Message]) -> list[dist.Work | None]:
        """Post every transfer; return one handle per transfer (receives must be waited on).

        A batch's transfers share its handle (NCCL returns one for the whole batch).
        """
        works: list[dist.Work | None]
        if self.groups is None:
            works = [dist.isend(t.tensor, t.peer) if t.send else dist.irecv(t.tensor, t.peer)
                     for t in transfers]
        else:
            works = [None] * len(transfers)
            batches: dict[int, tuple[dist.ProcessGroup, list[int]]] = {}
            for k, t in enumerate(transfers):  # per group, in posting order
                group = self._group(t)
                batches.setdefault(id(group), (group, []))[1].append(k)
            for group, ks in batches.values():
                ops = [dist.P2POp(dist.isend if transfers[k].send else dist.irecv,
                                  transfers[k].tensor, transfers[k].peer, group) for k in ks]
                handles = dist.batch_isend_irecv(ops)
                for i, k in enumerate(ks):  # one handle per op, or one for the batch
                    works[k] = handles[i] if len(handles) == len(ks) else \
                        (handles[0] if handles else None)
        for t, w in zip(transfers, works):
            if t.send and w is not None:
                self.pending_sends.append((w, t.tensor))
        return works

    def finish_sends(self) -> None:
        """Wait for every send posted so far (end of step: the buffers may then be reused)."""
        for work, _ in self.pending_sends:
            work.wait()
        self.pending_sends.clear()

    def exchange(self, sends: list[Message], recvs: list[Message]) -> None:
        """Post sends and receives together and wait for all of them (gradient sums).

        On the default group this relies on gloo's sends not holding up receives; on
        per-direction groups each direction's stream has its sends and receives in one order.
        """
        works = self.post(sends + recvs)
        for w in works[len(sends):]:
            if w is not None:
                w.wait()
        self.finish_sends()
