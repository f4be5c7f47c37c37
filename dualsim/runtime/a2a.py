"""The expert-parallel all-to-all: one pipeline rank's ``ep`` processes exchange token rows.

``all_to_all_single`` with uneven splits. A dispatch first exchanges the row counts (how many
rows each process sends each other process's experts: DeepEP's "notify"), then the rows; a
combine and the backward all-to-alls know their splits already.

Every all-to-all of a process is posted by one **communication thread**, in program order,
and :class:`Pending` is the handle a later piece waits on. So the main thread never blocks on
posting (not even on a dispatch's counts exchange, which waits for the peers to get there),
and the processes of a group post their collectives in the same order (one thread, one queue).
The transports:

- **CPU (gloo).** The thread posts the collective; gloo's threads move the data while the
  main thread computes. Its start is when its data was ready (the main thread's request), its
  end comes from the work's future callback, so a late ``wait`` does not stretch it.
- **GPU, NCCL.** The main thread records an event on the compute stream after the producing
  piece; the thread makes a second CUDA stream (the communication stream) wait on it and posts
  the collective there (NCCL's own stream follows it), then ``Work.wait()`` on the
  communication stream and an end event; before the consuming piece the compute stream waits on
  that event. The host's main thread never blocks; the counts' copy to the host blocks only the
  communication thread. Tensors used on a stream that did not allocate them are marked with
  ``record_stream``.
- **GPU, gloo (more processes than GPUs: host staging).** The thread makes the communication
  stream wait for the producing piece's event, copies the rows to host memory there (so the
  copy runs beside the compute stream's kernels, and blocks only this thread) and posts the
  gloo collective; ``wait`` copies the result back to the GPU. Times are host times.

A group of one process sends nothing: rows are "received" as they are (``ep`` = 1 runs the
same pieces without communication).
"""

from __future__ import annotations

import queue
import threading
from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.distributed as dist

from dualsim.runtime.clock import Mark, StepClock
from dualsim.runtime.profiling import span


class Pending:
    """An all-to-all requested from the communication thread; ``wait()`` returns the rows.

    ``start``/``end`` are clock marks of when it could start (its data ready) and when it was
    done; ``nbytes`` the bytes this process sent to the others.
    """

    def __init__(self, start: Mark, nbytes: int = 0) -> None:
        self.start, self.nbytes = start, nbytes
        self.end: Mark | None = None
        self.posted = threading.Event()
        self.error: BaseException | None = None
        self.finish: Callable[[], torch.Tensor] = lambda: torch.empty(0)
        self._result: torch.Tensor | None = None

    @staticmethod
    def done(rows: torch.Tensor, mark: Mark) -> "Pending":
        p = Pending(mark)
        p.end, p._result = mark, rows
        p.posted.set()
        return p

    def wait(self) -> torch.Tensor:
        if self._result is None:
            self.posted.wait()
            if self.error is not None:
                raise self.error
            self._result = self.finish()
        return self._result


class ExpertComm:
    """All-to-all of one process within its expert-parallel group (see the module docstring)."""

    def __init__(self, group: dist.ProcessGroup | None, size: int, index: int,
                 device: torch.device, staging: bool, clock: StepClock) -> None:
        self.group, self.size, self.index = group, size, index
        self.device, self.staging, self.clock = device, staging, clock
        self.nccl = device.type == "cuda" and not staging
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _nbytes(self, rows: torch.Tensor, send_splits: list[int]) -> int:
        row = rows[0:1].nbytes if len(rows) else 0
        return (sum(send_splits) - send_splits[self.index]) * row

    # ---- requests (main thread) ------------------------------------------------------------
    def post(self, rows: torch.Tensor, send_splits: list[int], recv_splits: list[int],
             label: str = "all-to-all") -> Pending:
        """Send ``rows`` (split per process by ``send_splits``); receive ``sum(recv_splits)``.

        ``label``: the profiler range the communication thread opens around it."""
        if self.size == 1:
            return Pending.done(rows, self.clock.mark())
        pending = Pending(self._ready_mark(), self._nbytes(rows, send_splits))
        ready = self._ready_event()
        self._submit(pending, label,
                     lambda: self._move(pending, ready, rows, send_splits, recv_splits))
        return pending

    def dispatch(self, rows: torch.Tensor, send_counts: torch.Tensor,
                 on_counts: Callable[[torch.Tensor], None], label: str = "dispatch") -> Pending:
        """Exchange the counts [ep, experts per process], call ``on_counts`` with the received
        ones (on the communication thread), then move the rows (split by the counts)."""
        send_splits = send_counts.sum(1).tolist()
        if self.size == 1:
            on_counts(send_counts)
            return Pending.done(rows, self.clock.mark())
        pending = Pending(self._ready_mark(), self._nbytes(rows, send_splits))
        ready = self._ready_event()

        def job() -> None:
            recv_counts = self._counts(send_counts, ready)
            # on a GPU on the communication stream: ``on_counts`` copies the counts to the
            # device, and on this thread's default stream (the main thread's compute stream)
            # that copy would wait for the compute queued meanwhile, and the rows with it. The
            # consuming piece waits for the rows' end event, recorded after it on this stream.
            with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
                on_counts(recv_counts)
            self._move(pending, ready, rows, send_splits, recv_counts.sum(1).tolist())

        self._submit(pending, label, job)
        return pending

    def _ready_mark(self) -> Mark:
        # NCCL: the start is an event on the communication stream, set by the thread
        return self.clock.host_mark()

    def _ready_event(self) -> torch.cuda.Event | None:
        if self.device.type != "cuda":
            return None
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def _submit(self, pending: Pending, label: str, job: Callable[[], None]) -> None:
        def run() -> None:
            try:
                with span(label):
                    job()
            except BaseException as e:  # noqa: BLE001 - re-raised by wait() on the main thread
                pending.error = e
            pending.posted.set()

        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="dualsim-a2a", daemon=True)
            self._thread.start()
        self._jobs.put(run)

    def _serve(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # the current device is per thread
        while True:
            self._jobs.get()()

    # ---- the communication thread ---------------------------------------------------------
    def _counts(self, counts: torch.Tensor, ready: Any) -> torch.Tensor:
        if self.nccl:
            assert self.stream is not None
            with torch.cuda.stream(self.stream):
                self.stream.wait_event(ready)
                out = torch.empty_like(counts)
                dist.all_to_all_single(out, counts, group=self.group)
                return out.cpu()  # blocks this thread only
        host = self._to_host(counts, ready)
        out = torch.empty_like(host)
        dist.all_to_all_single(out, host, group=self.group)
        return out

    def _move(self, pending: Pending, ready: Any, rows: torch.Tensor, send_splits: list[int],
              recv_splits: list[int]) -> None:
        shape = (sum(recv_splits),) + tuple(rows.shape[1:])
        if self.nccl:
            self._move_nccl(pending, ready, rows, send_splits, recv_splits, shape)
            return
        send = self._to_host(rows, ready).contiguous()
        out = torch.empty(shape, dtype=rows.dtype)
        work = dist.all_to_all_single(out, send, recv_splits, send_splits, group=self.group,
                                      async_op=True)

        def done(_: object) -> None:  # on gloo's thread, when the collective completes
            pending.end = self.clock.host_mark()

        work.get_future().add_done_callback(done)

        def finish() -> torch.Tensor:
            work.wait()
            del keep[:]  # the send buffer lived until the collective was done
            if pending.end is None:  # the callback may run just after wait() returns
                pending.end = self.clock.host_mark()
            return out.to(self.device) if self.device.type == "cuda" else out

        keep = [send]
        pending.finish = finish

    def _to_host(self, t: torch.Tensor, ready: Any) -> torch.Tensor:
        """``t`` in host memory (gloo): on a GPU copied on the communication stream once the
        producing piece's event fired; the copy blocks this thread only."""
        if ready is None:
            return t
        assert self.stream is not None
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(ready)
            return t.to("cpu")

    def _move_nccl(self, pending: Pending, ready: Any, rows: torch.Tensor,
                   send_splits: list[int], recv_splits: list[int],
                   shape: tuple[int, ...]) -> None:
        assert self.stream is not None
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(ready)
            pending.start = self.clock.mark(self.stream)
            out = torch.empty(shape, dtype=rows.dtype, device=self.device)
            work = dist.all_to_all_single(out, rows, recv_splits, send_splits,
                                          group=self.group, async_op=True)
            work.wait()  # the communication stream waits for NCCL's stream; no host wait
            end = self.clock.mark(self.stream)
        rows.record_stream(self.stream)
        pending.end = end

        def finish() -> torch.Tensor:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(end)  # type: ignore[arg-type]
            out.record_stream(compute)
            return out

        pending.finish = finish
