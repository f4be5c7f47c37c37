"""Renderers: everything that turns a Timeline (and a SimResult) into files people look at.

- ``gantt``: Gantt charts (PNG/SVG), one row per rank, DualPipe's palette, split FB cells.
- ``perfetto``: Chrome/Perfetto JSON traces with flows and memory counters.
- ``memory``: memory over time per rank (hardware mode).
- ``report``: the report folder of ``dualsim compare --out DIR``.

Rendering only reads data; it never runs a simulation. matplotlib is imported lazily inside the
render functions so ``import dualsim`` stays light.
"""

from __future__ import annotations
