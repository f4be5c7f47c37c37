"""Shared links for the SimPy engine: a GPU's IB NIC and NVLink as fluid, fairly shared pipes.

Every transfer is a flow of bytes on one link. Concurrent flows share the link's bandwidth
max-min fairly; an all-to-all flow is also capped by what the communication SMs can drive
(link x saturation), and that cap drops to ``overlap_rate`` of itself while the GPU's compute
stream is busy (interference measured by DeepSeek). Rates are recomputed whenever a flow starts
or ends or the compute stream changes state; one pending timer per link marks the next finish.
"""

from __future__ import annotations

import math
from typing import Any

import simpy

_INF = float("inf")


class Gpu:
    """One GPU's compute-activity flag and its links (whose a2a caps depend on the flag)."""

    __slots__ = ("active", "links")

    def __init__(self) -> None:
        self.active = False
        self.links: list[Link] = []

    def set_active(self, flag: bool) -> None:
        if flag is not self.active:
            self.active = flag
            for link in self.links:
                if link.flows:
                    link.update()


class Link:
    """A fluid link of ``bandwidth`` bytes/s; a2a flows capped at ``a2a_cap`` (x overlap rate)."""

    def __init__(self, env: simpy.Environment, gpu: Gpu, bandwidth: float, a2a_cap: float,
                 overlap_rate: float) -> None:
        self.env = env
        self.gpu = gpu
        self.bandwidth = bandwidth
        self.a2a_cap = a2a_cap
        self.overlap_rate = overlap_rate
        self.flows: list[list[Any]] = []  # [remaining bytes, is_a2a, done event, rate]
        self.last = 0.0
        self.version = 0
        gpu.links.append(self)

    def transfer(self, nbytes: float, a2a: bool) -> simpy.Event:
        """An event that succeeds when ``nbytes`` have crossed the link."""
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()
            return done
        self._advance()
        self.flows.append([nbytes, a2a, done, 0.0])
        self._reschedule()
        return done

    def update(self) -> None:
        """Re-rate the flows after the compute stream changed state."""
        self._advance()
        self._reschedule()

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self.last
        if dt > 0:
            for f in self.flows:
                f[0] -= f[3] * dt
        self.last = now

    def _reschedule(self) -> None:
        flows = self.flows
        a2a_cap = self.a2a_cap * (self.overlap_rate if self.gpu.active else 1.0)
        if len(flows) == 1:
            f = flows[0]
            f[3] = min(a2a_cap, self.bandwidth) if f[1] else self.bandwidth
        else:  # max-min fair share: satisfy the small caps first
            left, n = self.bandwidth, len(flows)
            for f in sorted(flows, key=lambda f: a2a_cap if f[1] else _INF):
                share = left / n
                rate = min(a2a_cap, share) if f[1] else share
                f[3] = rate
                left -= rate
                n -= 1
        self.version += 1
        version = self.version
        dt = min(f[0] / f[3] for f in flows)
        timer = self.env.timeout(max(dt, 0.0))
        timer.callbacks.append(lambda _e: self._on_timer(version))

    def _on_timer(self, version: int) -> None:
        if version != self.version:
            return
        self._advance()
        # A flow is done when what is left is float dust: under a byte, or under what the clock
        # can still resolve at this time (late in a long step, now + dt == now for tiny dt, and a
        # fixed byte threshold would re-arm a zero-length timer forever).
        tick = 4 * math.ulp(max(self.env.now, 1.0))
        keep = []
        for f in self.flows:
            if f[0] <= max(1.0, f[3] * tick):
                f[2].succeed()
            else:
                keep.append(f)
        self.flows = keep
        if keep:
            self._reschedule()
