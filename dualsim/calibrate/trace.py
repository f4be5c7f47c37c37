"""Read a PyTorch profiler trace and attribute each GPU kernel to the ranges that launched it.

A trace is Chrome trace JSON as torch.profiler (Kineto) writes it: ``{"traceEvents": [...]}``
(``.json`` or ``.json.gz``). We use four kinds of events:

- GPU activity (``cat`` kernel, gpu_memcpy, gpu_memset): name, stream, start, duration and the
  ``correlation`` id of the CPU call that launched it;
- launch calls (``cat`` cuda_runtime / cuda_driver, e.g. cudaLaunchKernel) with the same
  ``correlation`` id, or, where those are missing, the ``ac2g`` flow start carrying it as ``id``;
- annotated ranges (``cat`` user_annotation: ``record_function`` / ``torch.profiler.record_function``
  ranges such as ``attn(F)`` or ``0F3``), which are CPU-side: their length includes host waits.

A kernel belongs to every range whose time span holds its launch call, on any thread of the same
process: the backward's kernels are launched by the autograd thread while the main thread sits in
the range that called backward (DeepSeek's ``attn(B)``), so matching by thread would lose them.
A range's GPU time is then the sum (or the span) of its kernels, not its CPU length.

One trace is one process (``distributedInfo`` gives its rank). A merged multi-rank trace (the
runtime's ``--profile-trace``, marked by a top-level ``dualsimPlan``) has ``pid`` = rank on every
event, and launch links are looked up per rank. Why not HolisticTraceAnalysis: docs/calibration.md.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from dualsim.errors import TraceError
from dualsim.timeline import intervals_union

GPU_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
LAUNCH_CATS = frozenset({"cuda_runtime", "cuda_driver"})
RANGE_CAT = "user_annotation"
# a merged runtime trace numbers process g's flow ids from g * FLOW_ID_STRIDE (ids are unique
# in one file, as Perfetto joins flows by id): dualsim/runtime/profiling.py
FLOW_ID_STRIDE = 2**32


@dataclass(frozen=True)
class Kernel:
    """One GPU activity; times in microseconds (the trace's unit)."""

    name: str
    rank: int
    stream: Any
    start: float
    dur: float
    launch: float  # CPU time of the launch call
    launch_tid: Any  # CPU thread of the launch call

    @property
    def end(self) -> float:
        return self.start + self.dur


@dataclass(frozen=True)
class Range:
    """One annotated CPU range and the kernels launched while it was open (microseconds)."""

    name: str
    rank: int
    tid: Any
    start: float
    dur: float
    kernels: tuple[Kernel, ...] = field(repr=False)

    @property
    def end(self) -> float:
        return self.start + self.dur

    @property
    def gpu_sum(self) -> float:
        """Summed duration of its kernels (GPU work, streams added up)."""
        return sum(k.dur for k in self.kernels)

    @property
    def gpu_span(self) -> float:
        """First kernel start to last kernel end (0 without kernels)."""
        if not self.kernels:
            return 0.0
        return max(k.end for k in self.kernels) - min(k.start for k in self.kernels)


@dataclass(frozen=True)
class Trace:
    """A parsed trace: ranges in start order, kernels in start order, and its metadata."""

    path: str
    ranges: tuple[Range, ...]
    kernels: tuple[Kernel, ...]
    unlinked: int  # kernels whose launch call was not found
    meta: dict[str, Any]  # top-level keys other than traceEvents

    @property
    def sms(self) -> int | None:
        """SMs of the traced GPU (deviceProperties), when the trace says."""
        props = self.meta.get("deviceProperties")
        if isinstance(props, list) and props and isinstance(props[0], dict):
            n = props[0].get("numSms")
            return int(n) if isinstance(n, int) and n > 0 else None
        return None

    @property
    def device(self) -> str | None:
        props = self.meta.get("deviceProperties")
        if isinstance(props, list) and props and isinstance(props[0], dict):
            name = props[0].get("name")
            return str(name) if name else None
        return None

    def named(self, name: str) -> list[Range]:
        return [r for r in self.ranges if r.name == name]


def load_events(path: str | Path) -> tuple[list[Any], dict[str, Any]]:
    """(events, other top-level keys) of a Chrome trace file; TraceError for anything else."""
    p = Path(path)
    if not p.exists():
        raise TraceError(f"trace file {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise TraceError(f"trace file {str(p)!r} is a folder; give the .json trace file")
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise TraceError(f"cannot read trace file {str(p)!r}: {e}") from None
    except UnicodeDecodeError:
        raise TraceError(f"trace file {str(p)!r} is not UTF-8 text; give the Chrome trace JSON "
                         "that torch.profiler writes (export_chrome_trace)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceError(f"trace file {str(p)!r} is not valid JSON (line {e.lineno}, column "
                         f"{e.colno}: {e.msg}); it may be truncated: record it again") from None
    except RecursionError:
        raise TraceError(f"trace file {str(p)!r} nests JSON too deeply to be a trace") from None
    except ValueError:  # an integer of more than 4300 digits
        raise TraceError(f"trace file {str(p)!r} holds an integer too long to read (over 4300 "
                         "digits); record it again") from None
    return _split(doc, str(p))


def _split(doc: Any, where: str) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(doc, list):  # Chrome's bare array form
        return doc, {}
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise TraceError(f"{where!r} is not a profiler trace: expected Chrome trace JSON with a "
                         "traceEvents list, as torch.profiler's export_chrome_trace writes")
    return doc["traceEvents"], {k: v for k, v in doc.items() if k != "traceEvents"}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _args(e: dict[str, Any]) -> dict[str, Any]:
    args = e.get("args")
    return args if isinstance(args, dict) else {}


def _id(v: Any) -> int | str | None:
    """A correlation or flow id, or None for a damaged one (a list, an object: no link)."""
    return v if isinstance(v, (int, str)) and not isinstance(v, bool) else None


def _timed(e: dict[str, Any], i: int, path: str) -> tuple[float, float]:
    ts, dur = e.get("ts"), e.get("dur")
    if not (_num(ts) and _num(dur)) or dur < 0:
        raise TraceError(f"{path}: event {i} ({e.get('cat')} {str(e.get('name'))[:60]!r}) has no "
                         "numeric ts/dur; the trace is damaged: record it again")
    return float(ts), float(dur)


def read_trace(path: str | Path) -> Trace:
    """Parse ``path`` and attribute its kernels to its annotated ranges."""
    return parse_trace(*load_events(path), str(path))


def trace_from_doc(doc: Any, path: str | Path) -> Trace:
    """:func:`read_trace` of a trace file's already-loaded JSON (the file is not read again)."""
    return parse_trace(*_split(doc, str(path)), str(path))


def parse_trace(events: list[Any], meta: dict[str, Any], where: str) -> Trace:
    """Attribute the kernels of ``events`` to their annotated ranges (``where`` names the file)."""
    merged = "dualsimPlan" in meta
    base_rank = 0
    info = meta.get("distributedInfo")
    if isinstance(info, dict) and isinstance(info.get("rank"), int):
        base_rank = info["rank"]

    def rank_of(e: dict[str, Any]) -> int:
        pid = e.get("pid")
        return pid if merged and isinstance(pid, int) else base_rank

    launches: dict[tuple[int, Any], tuple[float, Any]] = {}
    flows: dict[tuple[int, Any], tuple[float, Any]] = {}
    gpu: list[tuple[int, dict[str, Any], float, float]] = []
    raw_ranges: list[tuple[int, dict[str, Any], float, float]] = []
    for i, e in enumerate(events):
        if not isinstance(e, dict):
            continue
        cat = e.get("cat")
        ph = e.get("ph")
        if ph == "X" and cat in GPU_CATS:
            ts, dur = _timed(e, i, where)
            gpu.append((i, e, ts, dur))
        elif ph == "X" and cat in LAUNCH_CATS:
            corr = _id(_args(e).get("correlation"))
            if corr is not None and _num(e.get("ts")):
                launches[(rank_of(e), corr)] = (float(e["ts"]), e.get("tid"))
        elif ph == "s" and cat == "ac2g" and _num(e.get("ts")) and _id(e.get("id")) is not None:
            fid = _id(e.get("id"))
            if merged and isinstance(fid, int):  # back to the process's correlation id
                fid -= rank_of(e) * FLOW_ID_STRIDE
            flows[(rank_of(e), fid)] = (float(e["ts"]), e.get("tid"))
        elif ph == "X" and cat == RANGE_CAT:
            ts, dur = _timed(e, i, where)
            raw_ranges.append((i, e, ts, dur))

    kernels: list[Kernel] = []
    unlinked = 0
    for _, e, ts, dur in gpu:
        args = _args(e)
        r = rank_of(e)
        corr = _id(args.get("correlation"))
        launch = launches.get((r, corr), flows.get((r, corr)))
        if launch is None:
            unlinked += 1
            continue
        kernels.append(Kernel(str(e.get("name", "")), r, args.get("stream", e.get("tid")),
                              ts, dur, launch[0], launch[1]))
    if gpu and not kernels:
        raise TraceError(f"{where}: none of its {len(gpu)} GPU kernels links to the CPU call "
                         "that launched it (no cuda_runtime events or ac2g flows with their "
                         "correlation ids); record with ProfilerActivity.CPU and CUDA together")
    by_rank: dict[int, list[Kernel]] = {}
    for k in sorted(kernels, key=lambda k: (k.launch, k.start)):
        by_rank.setdefault(k.rank, []).append(k)
    keys = {r: [k.launch for k in ks] for r, ks in by_rank.items()}
    ranges = []
    for _, e, ts, dur in sorted(raw_ranges, key=lambda t: (t[2], -t[3], t[0])):
        r = rank_of(e)
        ks = by_rank.get(r, [])
        lo = bisect.bisect_left(keys.get(r, []), ts)
        hi = bisect.bisect_left(keys.get(r, []), ts + dur)
        inside = tuple(sorted(ks[lo:hi], key=lambda k: (k.start, k.launch)))
        ranges.append(Range(str(e.get("name", "")), r, e.get("tid"), ts, dur, inside))
    return Trace(where, tuple(ranges), tuple(sorted(kernels, key=lambda k: (k.start, k.launch))),
                 unlinked, meta)


def require(trace: Trace, *, kernels: bool = True, ranges: bool = True) -> None:
    """TraceError unless the trace has what a calibration needs."""
    if ranges and not trace.ranges:
        raise TraceError(f"{trace.path}: no annotated ranges (user_annotation events); wrap each "
                         "model piece in torch.profiler.record_function('attn(F)') etc.")
    if kernels and not trace.kernels:
        raise TraceError(f"{trace.path}: no GPU kernels; record on a GPU with "
                         "activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]")


def kernel_union(kernels: Iterable[Kernel]) -> float:
    """Time (us) during which at least one of ``kernels`` runs."""
    return sum(e - s for s, e in intervals_union((k.start, k.end) for k in kernels))
