"""Point-to-point transfers between pipeline ranks (torch.distributed isend/irecv).

Sends are asynchronous: their handles are kept until the step ends. Receives are posted and
then waited on. A run of consecutive SEND/RECV actions in a rank's list is posted as one batch
(``batch_isend_irecv`` on NCCL, which needs it to avoid deadlocks between neighbours that send
to each other; plain isend/irecv on gloo, which matches messages per pair in posting order as
well). Messages carry no tags: the plan guarantees that, between a pair of ranks, receives are
posted in the order of the sends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Transfer:
    """One message: send ``tensor`` to ``peer``, or receive into ``tensor`` from ``peer``."""

    send: bool
    peer: int
    tensor: torch.Tensor


class PeerComm:
    """Posts transfers on the default process group and keeps unfinished sends alive."""

    def __init__(self, backend: str) -> None:
        self.batched = backend == "nccl"
        self.pending_sends: list[tuple[dist.Work, torch.Tensor]] = []

    def post(self, transfers: list[Transfer]) -> list[dist.Work | None]:
        """Post every transfer; return one handle per transfer (receives must be waited on)."""
        if self.batched and transfers:
            ops = [dist.P2POp(dist.isend if t.send else dist.irecv, t.tensor, t.peer)
                   for t in transfers]
            works: list[dist.Work | None] = list(dist.batch_isend_irecv(ops))
        else:
            works = [dist.isend(t.tensor, t.peer) if t.send else dist.irecv(t.tensor, t.peer)
                     for t in transfers]
        for t, w in zip(transfers, works):
            if t.send and w is not None:
                self.pending_sends.append((w, t.tensor))
        return works

    def finish_sends(self) -> None:
        """Wait for every send posted so far (end of step: the buffers may then be reused)."""
        for work, _ in self.pending_sends:
            work.wait()
        self.pending_sends.clear()

    def exchange(self, sends: list[Transfer], recvs: list[Transfer]) -> None:
        """Post sends and receives together and wait for all of them (gradient sums)."""
        works = self.post(sends + recvs)
        for w in works[len(sends):]:
            if w is not None:
                w.wait()
        self.finish_sends()
