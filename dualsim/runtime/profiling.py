"""``dualsim run --profile-trace FILE.json``: the last step under torch.profiler, all processes.

Each process records its last step with ``torch.profiler`` (CPU activities, plus CUDA on a GPU)
inside a ``record_function`` range ``step k``. The interpreter opens one range per action,
named by the IR's string form (``0F3``, ``(0F7;7B3)``, ``0SEND_F3``), and with expert
parallelism one per piece inside it (``attn(F)``, ``mlp(B)``, ``attn(W)``..., DeepSeek's trace
names; an all-to-all is a range ``dispatch(F)``, ``combine(B)``... on the process's
communication thread, which posts it, with ``post ...`` and ``wait ...`` ranges on the main
thread). All threads are recorded (``profile_all_threads``). The processes' Chrome traces are merged
into one file: every event of process g gets ``"pid": g`` (torch's own process-name events are
replaced by ``rank g``), and the top level carries ``dualsimPlan`` (the plan) and
``dualsimEp`` (processes per pipeline rank), which ``dualsim calibrate`` reads. Perfetto's
JSON importer and chrome://tracing open it.

Two things are made unique per process while merging, as one file needs: flow ids (``s``/``t``
/``f`` events: torch's forward-backward links, and on a GPU the launch-to-kernel ``ac2g``
links; every process numbers its own from 1, and Perfetto joins flows by id across the file)
become ``id + g * FLOW_ID_STRIDE``; and the few events Kineto gives a thread *name* as ``tid``
(its ``PyTorch Profiler`` window markers) get an integer tid with a ``thread_name``, so every
``pid``/``tid`` is an integer as the Chrome trace format has them.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any, ContextManager, Iterator

import torch

from dualsim.calibrate.trace import FLOW_ID_STRIDE
from dualsim.ir import Schedule
from dualsim.runtime.progress import World


_profiling = False  # True while `recording` profiles a step (read by every thread)


def span(name: str) -> ContextManager[Any]:
    """A ``record_function`` range ``name`` while a step is profiled, else nothing: a range
    costs two dispatcher calls (about 10 us, several times that when the process's threads
    contend for the interpreter), and an expert-parallel step opens hundreds."""
    return torch.profiler.record_function(name) if _profiling else contextlib.nullcontext()


@contextlib.contextmanager
def recording(enabled: bool, device: torch.device, step: int) -> Iterator[list[Any]]:
    """Profile the block when ``enabled``; the yielded list then holds the trace's events."""
    out: list[Any] = []
    if not enabled:
        yield out
        return
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    # every thread: the all-to-alls are posted by each process's communication thread
    config = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    global _profiling
    with torch.profiler.profile(activities=acts, experimental_config=config) as prof:
        _profiling = True
        try:
            with span(f"step {step}"):
                yield out
        finally:
            _profiling = False
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.json"
        prof.export_chrome_trace(str(path))
        out.append(json.loads(path.read_text()))


FLOW_PHASES = frozenset("stf")
NAMED_TID_BASE = 2**31 - 1  # named threads count down from here: above any OS tid or stream


def merge(traces: list[dict[str, Any]], plan: Schedule, world: World) -> dict[str, Any]:
    """One Chrome trace of every process's trace (process g's events get pid g)."""
    events: list[dict[str, Any]] = []
    for g, trace in enumerate(traces):
        events.append({"name": "process_name", "ph": "M", "ts": 0, "pid": g, "tid": 0,
                       "args": {"name": world.describe(g)}})
        events.append({"name": "process_sort_index", "ph": "M", "ts": 0, "pid": g, "tid": 0,
                       "args": {"sort_index": g}})
        named: dict[str, int] = {}
        for e in trace.get("traceEvents", []):
            if e.get("ph") == "M" and e.get("name") in ("process_name", "process_sort_index",
                                                         "process_labels"):
                continue
            e = {**e, "pid": g}
            if isinstance(e.get("tid"), str):
                name = e["tid"]
                if name not in named:
                    named[name] = NAMED_TID_BASE - len(named)
                    events.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": g,
                                   "tid": named[name], "args": {"name": name or "profiler"}})
                e["tid"] = named[name]
            if e.get("ph") in FLOW_PHASES and isinstance(e.get("id"), int):
                e["id"] += g * FLOW_ID_STRIDE
            events.append(e)
    out: dict[str, Any] = {"traceEvents": events, "displayTimeUnit": "ms",
                           "dualsimPlan": plan.to_dict(), "dualsimEp": world.ep}
    if traces and "deviceProperties" in traces[0]:
        out["deviceProperties"] = traces[0]["deviceProperties"]
    return out
