"""Runs one unit's pieces on a compute stream and a communication stream, in the shared order.

The order comes from :mod:`dualsim.overlap_order` (the hardware simulator uses the same one):
compute pieces run in ``Order.compute`` order, each first waiting for the all-to-all it
needs; an all-to-all is posted as soon as the compute piece producing its data has run (those
that need none at the start), so in an FB one micro-batch's all-to-all is in flight while the
other micro-batch's pieces compute. In a plain unit each all-to-all is waited on by the very
next compute piece, so it is exposed (except behind a W piece, which runs while the backward
all-to-all after its I piece flies).

Every piece is timed (compute: start and end marks on the compute stream; all-to-all: from when
its data was ready to when it completed) and, when a profiler records, wrapped in a
``record_function`` range named as DeepSeek's trace names pieces: ``attn(F)``, ``mlp(B)``,
``combine(B)``, ``attn(W)``... The all-to-all itself is posted by the communication thread
(:mod:`a2a`) inside a range of its name (``dispatch(F)``: on a GPU its kernels are launched
there); the main thread's request is ``post dispatch(F)`` and its wait ``wait dispatch(F)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from dualsim.overlap_order import Node, Order
from dualsim.runtime.a2a import Pending
from dualsim.runtime.chains import trace_name
from dualsim.runtime.clock import Mark, StepClock
from dualsim.runtime.profiling import span
from dualsim.runtime.pieces import Pass


@dataclass
class PieceTime:
    """One piece of one unit: ``stream`` "compute" or "a2a", which half of an FB (0/1)."""

    name: str
    stream: str
    half: int
    start: Mark
    end: Mark
    nbytes: int = 0


Half = tuple[Pass, Sequence[tuple[Node, int]]]  # a pass and the (node, layer) chain it runs


def run_unit(halves: Sequence[Half], order: Order, clock: StepClock,
             on_wait: Callable[[Node | None], None] = lambda node: None,
             before_post: Callable[[Node], None] = lambda node: None) -> list[PieceTime]:
    """Run one unit (one half for F/I/W/B, two for an FB); return its pieces' times.

    ``on_wait(node)`` / ``on_wait(None)`` bracket every wait for an all-to-all (the
    watchdog's state);
    ``before_post(node)`` runs before each all-to-all is posted (fault injection in tests).
    """
    times: list[PieceTime] = []
    pending: dict[int, Pending] = {}
    landed: set[int] = set()
    after: dict[int, list[int]] = {}
    for ci, step in enumerate(order.comm):
        after.setdefault(step.after, []).append(ci)

    def post(ci: int) -> None:
        step = order.comm[ci]
        p, chain = halves[step.half]
        node, layer = chain[step.node]
        before_post(node)
        with span(f"post {trace_name(node)}"):
            pending[ci] = p.post(node, layer)

    def wait(ci: int) -> None:
        if ci in landed:
            return
        step = order.comm[ci]
        p, chain = halves[step.half]
        node, layer = chain[step.node]
        on_wait(node)
        with span(f"wait {trace_name(node)}"):
            rows = pending[ci].wait()
        on_wait(None)
        p.land(node, layer, rows)
        landed.add(ci)
        pend = pending[ci]
        assert pend.end is not None
        times.append(PieceTime(node.name, "a2a", step.half, pend.start, pend.end, pend.nbytes))

    for ci in after.get(-1, []):
        post(ci)
    for gi, step in enumerate(order.compute):
        p, chain = halves[step.half]
        node, layer = chain[step.node]
        if step.waits >= 0:
            wait(step.waits)
        start = clock.mark()
        with span(trace_name(node)):
            p.run(node, layer)
        times.append(PieceTime(node.name, "compute", step.half, start, clock.mark()))
        for ci in after.get(gi, []):
            post(ci)
    for ci in range(len(order.comm)):  # a chain ending in an all-to-all (none of ours do)
        wait(ci)
    return times
