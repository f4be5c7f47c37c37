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

With expert parallelism a pipeline rank is ``ep`` processes; process i of rank a talks only to
process i of rank b (same expert-parallel index), so the pairs above are pairs of processes.
On a GPU with gloo (more processes than GPUs) messages are staged through host memory: a send
copies to the host before posting, a receive copies to the GPU after its wait.

The groups live in a :class:`ProcessGroups` object made once per launch, after the default
group, and dropped before it: per-direction groups and the expert-parallel groups (one per
pipeline rank) are created collectively by every process in one order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable

import torch
import torch.distributed as dist

from dualsim.ir import Schedule
from dualsim.deps import handoffs
from dualsim.runtime.progress import World

Direction = tuple[int, int]  # (sending rank, receiving rank), or processes


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
    pairs = {(t.src, t.dst) for t in handoffs(plan)}
    for a in plan.stages:
        for b in plan.stages:
            if a.position == b.position and a.rank != b.rank:
                pairs.add((a.rank, b.rank))
    return sorted(pairs)


class ProcessGroups:
    """The process groups of one launch (all processes create them, in one order).

    Direction groups are made the first time a plan needs them and kept for the launch's later
    plans (a launch runs several plans in turn, the same on every process, so the processes
    agree on which exist already). On a GPU each group connects its NCCL communicator at
    creation, in that one order on every process; left lazy, the two processes of a pair could
    set up their a -> b and b -> a communicators in opposite orders at their first messages,
    each waiting for the other. On a process outside a pair the entry is torch's non-member
    placeholder, never used.
    """

    def __init__(self, world: World, device: torch.device, nccl: bool = False,
                 timeout: timedelta | None = None) -> None:
        """``timeout``: of every collective on the groups (the run's --timeout)."""
        self.world, self.device, self.nccl, self.timeout = world, device, nccl, timeout
        self._directions: dict[Direction, dist.ProcessGroup] = {}
        self._experts: list[dist.ProcessGroup] | None = None

    def _new(self, ranks: list[int]) -> dist.ProcessGroup:
        return dist.new_group(ranks, timeout=self.timeout,
                              device_id=self.device if self.nccl else None)

    def directions(self, pairs: Iterable[Direction]) -> dict[Direction, dist.ProcessGroup]:
        """One group per (sending process, receiving process); collective."""
        wanted = sorted(set(pairs))
        for src, dst in wanted:
            if (src, dst) not in self._directions:
                self._directions[(src, dst)] = self._new(sorted((src, dst)))
        return {p: self._directions[p] for p in wanted}

    def expert_group(self, rank: int) -> dist.ProcessGroup:
        """The group of pipeline rank ``rank``'s expert-parallel processes; collective the
        first time (every process creates every rank's group)."""
        if self._experts is None:
            ep = self.world.ep
            self._experts = [self._new(list(range(r * ep, (r + 1) * ep)))
                             for r in range(self.world.ranks)]
        return self._experts[rank]


class _StagedRecv:
    """A receive into host memory, copied to the GPU tensor once waited on."""

    def __init__(self, work: dist.Work, host: torch.Tensor, target: torch.Tensor) -> None:
        self.work, self.host, self.target = work, host, target

    def wait(self) -> None:
        self.work.wait()
        self.target.copy_(self.host)


class PeerComm:
    """Posts transfers and keeps unfinished sends alive.

    ``groups`` None: the default group, one isend/irecv per transfer (gloo). Otherwise the
    group of each transfer's direction, one batch per group and run (NCCL; gloo when asked).
    """

    def __init__(self, rank: int, groups: dict[Direction, dist.ProcessGroup] | None,
                 staging: bool = False) -> None:
        self.rank = rank  # this process
        self.groups = groups
        self.staging = staging
        self.pending_sends: list[tuple[Any, torch.Tensor]] = []

    @staticmethod
    def for_plan(plan: Schedule, process: int, groups: ProcessGroups, per_direction: bool,
                 staging: bool) -> "PeerComm":
        """Collective when ``per_direction``: every process must call it for the same plan."""
        ep = groups.world.ep
        pairs = [(a * ep + e, b * ep + e) for a, b in directions(plan) for e in range(ep)]
        return PeerComm(process, groups.directions(pairs) if per_direction else None, staging)

    def _group(self, t: Message) -> dist.ProcessGroup:
        assert self.groups is not None
        direction = (self.rank, t.peer) if t.send else (t.peer, self.rank)
        if direction not in self.groups:
            raise RuntimeError(f"rank {self.rank}: no process group for messages "
                               f"{direction[0]} -> {direction[1]} (not in the plan)")
        return self.groups[direction]

    def post(self, transfers: list[Message]) -> list[Any]:
        """Post every transfer; return one handle per transfer (receives must be waited on).

        A batch's transfers share its handle (NCCL returns one for the whole batch).
        """
        if self.staging:
            return self._post_staged(transfers)
        works: list[Any]
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

    def _post_staged(self, transfers: list[Message]) -> list[Any]:
        """gloo with GPU tensors: through host memory (one isend/irecv each)."""
        works: list[Any] = []
        for t in transfers:
            if t.send:
                host = t.tensor.to("cpu")
                work = dist.isend(host, t.peer)
                self.pending_sends.append((work, host))
                works.append(work)
            else:
                host = torch.empty(t.tensor.shape, dtype=t.tensor.dtype)
                works.append(_StagedRecv(dist.irecv(host, t.peer), host, t.tensor))
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
