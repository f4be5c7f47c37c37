"""The expert-parallel all-to-all: one pipeline rank's ``ep`` processes exchange token rows.

``all_to_all_single`` with uneven splits, posted asynchronously; :class:`Pending` is the
handle a later piece waits on. The three transports:

- **CPU (gloo).** The collective runs on gloo's threads while this process computes; its
  end is taken from the work's future callback, so a late ``wait`` does not stretch it.
- **GPU, NCCL.** The collective is posted from a second CUDA stream (the communication
  stream) that first waits on an event recorded on the compute stream after the producing
  piece; NCCL's own stream follows the communication stream. ``Work.wait()`` on the
  communication stream, then an event, which the compute stream waits on before the consuming
  piece: the host never blocks, the GPU runs the other micro-batch's pieces meanwhile. The
  tensors are marked with ``record_stream`` for the stream that did not allocate them.
- **GPU, gloo (more processes than GPUs: host staging).** The host waits for the producing
  piece, copies the rows to host memory, posts the gloo collective and returns; ``wait``
  copies the result back to the GPU. The GPU keeps computing queued pieces meanwhile.

A group of one process sends nothing: rows are "received" as they are (``ep`` = 1 runs the
same pieces without communication).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from dualsim.runtime.clock import Mark, StepClock


@dataclass
class Pending:
    """An all-to-all in flight: ``wait()`` returns the received rows.

    ``start``/``end`` are clock marks of when it could start (its data ready) and when it was
    done; ``nbytes`` the bytes this process sent to the others.
    """

    finish: Callable[[], torch.Tensor]
    start: Mark
    nbytes: int
    end: Mark | None = None
    result: torch.Tensor | None = None

    def wait(self) -> torch.Tensor:
        if self.result is None:
            self.result = self.finish()
        return self.result


class ExpertComm:
    """All-to-all of one process within its expert-parallel group."""

    def __init__(self, group: dist.ProcessGroup | None, size: int, index: int,
                 device: torch.device, staging: bool, clock: StepClock) -> None:
        self.group, self.size, self.index = group, size, index
        self.device, self.staging, self.clock = device, staging, clock
        self.nccl = device.type == "cuda" and not staging
        self.stream = torch.cuda.Stream(device) if self.nccl else None

    # ---- the counts exchange (DeepEP's "notify"): blocking, tiny --------------------------
    def exchange_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """``counts[j]`` = rows for process j (any trailing shape); returns rows from each."""
        if self.size == 1:
            return counts
        host = counts.to("cpu") if self.staging else counts
        out = torch.empty_like(host)
        dist.all_to_all_single(out, host, group=self.group)
        return out.to(counts.device)

    # ---- rows ------------------------------------------------------------------------------
    def post(self, rows: torch.Tensor, send_splits: list[int], recv_splits: list[int]) -> Pending:
        """Send ``rows`` (split per process by ``send_splits``); receive ``sum(recv_splits)``."""
        nbytes = (sum(send_splits) - send_splits[self.index]) * rows[0:1].nbytes \
            if rows.dim() else 0
        if self.size == 1:
            mark = self.clock.mark()
            return Pending(lambda: rows, mark, 0, end=mark, result=rows)
        shape = (sum(recv_splits),) + tuple(rows.shape[1:])
        if self.nccl:
            return self._post_nccl(rows, send_splits, recv_splits, shape, nbytes)
        if self.device.type == "cuda":  # gloo: through host memory, timed on the host
            torch.cuda.current_stream(self.device).synchronize()
            start, send = self.clock.host_mark(), rows.to("cpu")
        else:
            start, send = self.clock.host_mark(), rows.contiguous()
        out = torch.empty(shape, dtype=rows.dtype)
        work = dist.all_to_all_single(out, send, recv_splits, send_splits, group=self.group,
                                      async_op=True)
        pending = Pending(lambda: out, start, nbytes)

        def done(_: object) -> None:  # on gloo's thread, when the collective completes
            pending.end = self.clock.host_mark()

        work.get_future().add_done_callback(done)

        def finish() -> torch.Tensor:
            work.wait()
            del send_keep[:]  # the send buffer lived until the collective was done
            if pending.end is None:  # the callback may run just after wait() returns
                pending.end = self.clock.host_mark()
            return out.to(self.device) if self.device.type == "cuda" else out

        send_keep = [send]
        pending.finish = finish
        return pending

    def _post_nccl(self, rows: torch.Tensor, send_splits: list[int], recv_splits: list[int],
                   shape: tuple[int, ...], nbytes: int) -> Pending:
        assert self.stream is not None
        compute = torch.cuda.current_stream(self.device)
        ready = torch.cuda.Event()
        ready.record(compute)
        out = torch.empty(shape, dtype=rows.dtype, device=self.device)
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(ready)
            start = self.clock.mark(self.stream)
            work = dist.all_to_all_single(out, rows, recv_splits, send_splits,
                                          group=self.group, async_op=True)
            work.wait()  # the communication stream waits for NCCL's stream; the host does not
            end = self.clock.mark(self.stream)
        rows.record_stream(self.stream)
        out.record_stream(self.stream)

        def finish() -> torch.Tensor:
            compute.wait_event(end)  # type: ignore[arg-type]
            return out

        return Pending(finish, start, nbytes, end=end)
