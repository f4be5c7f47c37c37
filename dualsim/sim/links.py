"""A GPU's shared resources for the SimPy engine: its SMs (fluid compute) and its links (fluid flows).

**SMs.** A GPU has ``sms`` SMs. A communication kernel holds its SMs only while it runs
(``Gpu.hold`` / ``Gpu.release``). Compute is fluid work, in seconds on all SMs: with no comm
kernel resident it runs at rate 1; while kernels holding ``s`` SMs are resident it runs at
``(sms - s) / sms x (1 - interference)`` (at least one SM is left to compute). The running
piece is re-rated whenever a kernel starts or ends. With
``reserved`` SMs (a static partition, as DeepSeek's GEMMs were launched) compute never gets
more than ``sms - reserved``.

**Links.** Each GPU's IB NIC and NVLink are fluid links. Every comm kernel is a flow of bytes on
one link, capped by what its SMs can drive (``Flow.cap``: lower while the GPU computes, for the
all-to-all); concurrent flows share the link's bandwidth max-min fairly. Rates are recomputed
whenever a flow starts or ends or the compute stream changes state.

A link keeps one pending timer for its next finish; a re-rate bumps a version number so that the
stale timer does nothing when it fires. The running compute piece is one Timeout; a re-rate
replaces it and moves the waiting process over to the new one.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import simpy

_INF = float("inf")


def _done_within(env: simpy.Environment, left: float, rate: float) -> bool:
    """Whether ``left`` units at ``rate`` are float dust: under one unit's worth of the clock's
    resolution at this time (late in a long step, now + dt == now for tiny dt)."""
    return left <= rate * 4 * math.ulp(max(env.now, 1.0))


def compute_speed(sms: int, held: int, interference: float = 0.0) -> float:
    """Rate of compute beside comm kernels holding ``held`` SMs of ``sms``: (S - s)/S x (1 -
    interference), at least one SM left to compute."""
    return (sms - min(held, sms - 1)) / sms * (1.0 - interference)


class Gpu:
    """One GPU: its SMs shared by compute and resident comm kernels, and its links."""

    __slots__ = ("env", "sms", "interference", "reserved", "held", "kernels", "active", "links",
                 "work", "rate", "last", "job", "shared")

    def __init__(self, env: simpy.Environment, sms: int = 1, interference: float = 0.0,
                 reserved: int = 0) -> None:
        self.env = env
        self.sms = sms
        self.interference = interference
        self.reserved = reserved  # SMs compute never gets (0: dynamic sharing)
        self.held = 0  # SMs held by resident comm kernels
        self.kernels = 0  # resident comm kernels
        self.active = False  # the compute stream is running a piece
        self.links: list[Link] = []
        self.work = 0.0  # seconds-on-all-SMs left of the running compute piece
        self.rate = 1.0
        self.last = 0.0
        self.job: simpy.Event | None = None
        self.shared = 0.0  # compute seconds run while sharing SMs with comm kernels

    # ---- compute ------------------------------------------------------------------------------
    def compute_rate(self) -> float:
        """Rate of compute now: 1 alone, (S - s)/S x (1 - interference) beside comm kernels
        holding s SMs (s at least the reserved SMs of a static partition)."""
        if self.kernels:
            return compute_speed(self.sms, max(self.held, self.reserved), self.interference)
        return compute_speed(self.sms, self.reserved)

    def compute(self, work: float) -> simpy.Event:
        """An event that fires when ``work`` seconds-on-all-SMs of compute are done; the caller
        yields it, then calls ``computed()``. It is a Timeout for the current rate; a re-rate
        replaces it by one for the new finish time and moves its waiters there."""
        self.work, self.last = work, self.env.now
        self.rate = rate = self.compute_rate()
        self.job = self.env.timeout(work / rate)
        return self.job

    def computed(self) -> None:
        """The running piece is done (its event fired)."""
        self._advance()
        self.job = None

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self.last
        if dt > 0 and self.job is not None:
            self.work -= self.rate * dt
            if self.kernels:
                self.shared += dt
        self.last = now

    def _rerate(self) -> None:
        job = self.job
        if job is None or job.callbacks is None:  # no piece running (or it fires right now)
            return
        self.rate = rate = self.compute_rate()
        self.job = self.env.timeout(max(self.work, 0.0) / rate)
        self.job.callbacks, job.callbacks = job.callbacks, []

    # ---- comm kernels -------------------------------------------------------------------------
    def hold(self, sms: int) -> None:
        """A comm kernel holding ``sms`` SMs becomes resident."""
        self._advance()
        self.held += sms
        self.kernels += 1
        self._rerate()

    def release(self, sms: int) -> None:
        """A comm kernel holding ``sms`` SMs ends."""
        self._advance()
        self.held -= sms
        self.kernels -= 1
        self._rerate()

    def set_active(self, flag: bool) -> None:
        """Mark the compute stream busy or waiting (re-rates the flows that care)."""
        if flag is not self.active:
            self.active = flag
            for link in self.links:
                if link.sensitive:
                    link.update()


class Link:
    """A fluid link of ``bandwidth`` bytes/s shared max-min fairly by capped flows."""

    def __init__(self, env: simpy.Environment, gpu: Gpu, bandwidth: float) -> None:
        self.env = env
        self.gpu = gpu
        self.bandwidth = bandwidth
        # [remaining bytes, cap while idle, cap while computing, callback when done, rate]
        self.flows: list[list[Any]] = []
        self.sensitive = 0  # flows whose cap depends on the compute stream
        self.last = 0.0
        self.version = 0
        gpu.links.append(self)

    def transfer(self, nbytes: float, then: Callable[[], None], cap: float = _INF,
                 busy_cap: float | None = None) -> None:
        """Move ``nbytes`` over the link, at most ``cap`` bytes/s (``busy_cap`` while the GPU
        computes; default ``cap``); call ``then()`` when done (``event.succeed`` to wait on an
        event)."""
        if nbytes <= 0:
            then()
            return
        busy = cap if busy_cap is None else busy_cap
        self._advance()
        self.flows.append([nbytes, cap, busy, then, 0.0])
        if busy != cap:
            self.sensitive += 1
        self._reschedule()

    def update(self) -> None:
        """Re-rate the flows (the compute stream changed state)."""
        self._advance()
        self._reschedule()

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self.last
        if dt > 0:
            for f in self.flows:
                f[0] -= f[4] * dt
        self.last = now

    def _reschedule(self) -> None:
        flows = self.flows
        k = 2 if self.gpu.active else 1
        if len(flows) == 1:
            f = flows[0]
            f[4] = min(f[k], self.bandwidth)
        else:  # max-min fair share: satisfy the small caps first
            left, n = self.bandwidth, len(flows)
            for f in sorted(flows, key=lambda f: f[k]):
                f[4] = min(f[k], left / n)
                left -= f[4]
                n -= 1
        self.version += 1
        version = self.version
        dt = min(f[0] / f[4] for f in flows)
        self.env.timeout(max(dt, 0.0)).callbacks.append(lambda _e: self._on_timer(version))

    def _on_timer(self, version: int) -> None:
        if version != self.version:
            return
        self._advance()
        keep, finished = [], []
        for f in self.flows:
            # done when what is left is float dust: under a byte, or under what the clock can
            # still resolve (a fixed byte threshold would re-arm a zero-length timer forever)
            if f[0] <= 1.0 or _done_within(self.env, f[0], f[4]):
                finished.append(f[3])
                if f[1] != f[2]:
                    self.sensitive -= 1
            else:
                keep.append(f)
        self.flows = keep
        if keep:
            self._reschedule()
        for then in finished:  # after the link is consistent: a callback may start a flow here
            then()
