"""One step's clock: times in seconds from the step's start, on the host or on the GPU.

On the CPU a mark is ``time.perf_counter()``. On a GPU a mark is a CUDA event recorded on a
stream, so a piece's start and end are the times the stream reached them (not the times the
host launched them); marks are resolved after the step's final synchronize. The step's zero is
taken after a synchronize, so host times and event times share it (to launch latency).
"""

from __future__ import annotations

import time
from typing import Union

import torch

Mark = Union[float, "torch.cuda.Event"]


class StepClock:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.t0 = time.perf_counter()
        self.e0: torch.cuda.Event | None = None

    def start(self) -> None:
        """The step's zero (call after the start-of-step barrier)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.e0 = torch.cuda.Event(enable_timing=True)
            self.e0.record()
        self.t0 = time.perf_counter()

    def host(self) -> float:
        """Seconds since the step's zero, on the host."""
        return time.perf_counter() - self.t0

    @staticmethod
    def host_mark() -> float:
        """Now on the host (a mark in host time even on a GPU)."""
        return time.perf_counter()

    def mark(self, stream: "torch.cuda.Stream | None" = None) -> Mark:
        """Now on the host (CPU), or an event on ``stream`` (default: the current stream)."""
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(stream)
        return event

    def seconds(self, mark: Mark) -> float:
        """A mark in seconds from the step's zero (GPU marks: once their stream reached them)."""
        if isinstance(mark, float):
            return mark - self.t0
        assert self.e0 is not None
        return self.e0.elapsed_time(mark) / 1e3
