"""The checks behind ``scripts/gpu_check.sh``: one summary line each, from files a run wrote.

No torch here (the files are JSON), so every check runs, and is tested, on a CPU-only machine;
only the runs that produce the files need GPUs.

- ``run FILE``: a ``dualsim run --json`` result matches the reference (fp32: 1e-5 relative)
  and moved token rows between processes (expert parallelism).
- ``trace FILE [--gpu]``: a ``dualsim run --profile-trace`` file is Chrome trace JSON as
  Perfetto's importer reads it (a ``traceEvents`` list; every event a one-letter ``ph``,
  integer ``pid`` and ``tid``, numeric ``ts``; ``X`` events a numeric ``dur`` >= 0; flow ids
  not reused by two processes) with the action and piece ranges; ``--gpu``: and GPU kernels.
- ``overlap FILE``: from a GPU profiler trace, per process, the GPU work launched inside an
  all-to-all piece's range (``dispatch(F)``, ``combine(F)``, ``combine(B)``, ``dispatch(B)``:
  the communication thread's ranges; NCCL kernels with one GPU per process, the host staging's
  copies when processes share a GPU) against the compute kernels launched elsewhere: the share
  of the all-to-all's GPU time during which a compute kernel ran (necessarily on another
  stream). It fails when the all-to-all's work is not on a stream of its own or nothing of it
  overlapped compute.

    python -m dualsim.runtime.gpu_check run|trace|overlap FILE [--gpu]

A FILE that is missing, unreadable, not JSON or not what the check reads gives one ``error:``
line on stderr and exit code 1 (2 for a wrong command line).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualsim.calibrate.trace import Kernel, Trace, read_trace, trace_from_doc
from dualsim.errors import DualsimError, TraceError
from dualsim.io import read_json
from dualsim.timeline import exposed, intervals_union

A2A_RANGES = frozenset({"dispatch(F)", "combine(F)", "combine(B)", "dispatch(B)"})
NEEDED_RANGES = ("attn(F)", "dispatch(F)", "mlp(B)", "combine(B)", "attn(W)")
FP32_RTOL = 1e-5


def run_line(result: dict[str, Any]) -> tuple[bool, str]:
    """A ``dualsim run --json`` result: gradients against the reference, rows moved."""
    ok = (result["matches_reference"] and result["max_rel_grad_diff"] <= FP32_RTOL
          and result.get("a2a_bytes_per_step", 0) > 0)
    return ok, (f"{result['schedule']} {result['ranks']}x{result['ep']} on {result['device']}/"
                f"{result['backend']}: grad rel diff {result['max_rel_grad_diff']:.2g}, step "
                f"{result['step_time_s'] * 1e3:.1f} ms, all-to-all "
                f"{result['a2a_hidden_fraction'] * 100:.0f}% hidden")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def format_problems(doc: Any) -> list[str]:
    """What keeps ``doc`` from being Chrome trace JSON with the types Perfetto reads."""
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["no traceEvents list"]
    problems: Counter[str] = Counter()
    flow_owner: dict[tuple[Any, Any, Any, str], Any] = {}
    for e in doc["traceEvents"]:
        ph = e.get("ph") if isinstance(e, dict) else None
        if not isinstance(ph, str) or len(ph) != 1:
            problems["an event without a one-letter ph"] += 1
            continue
        for key in ("pid", "tid"):
            if not isinstance(e.get(key), int) or isinstance(e.get(key), bool):
                problems[f"{ph} events with a non-integer {key}"] += 1
        if ph != "M" and not _number(e.get("ts")):
            problems[f"{ph} events without a numeric ts"] += 1
        if ph == "X" and not (_number(e.get("dur")) and e["dur"] >= 0):
            problems["X events without a numeric dur >= 0"] += 1
        if ph in "stf":
            key = (e.get("cat"), e.get("name"), e.get("id"), ph)
            if flow_owner.setdefault(key, e.get("pid")) != e.get("pid"):
                problems["flow ids reused by two processes"] += 1
    return [f"{what} ({n})" for what, n in sorted(problems.items())]


def read_doc(path: str | Path, option: str) -> Any:
    """The JSON document of ``path``, written by ``dualsim run OPTION``; one error line
    (io.read_json's) when it is missing, unreadable or not JSON."""
    return read_json(path, what="run result" if option == "--json" else "profiler trace",
                     fix=f"give the file that `dualsim run {option}` wrote")


def trace_line(path: str | Path, gpu: bool) -> tuple[bool, str]:
    """A ``--profile-trace`` file: format, processes, ranges (and kernels on a GPU)."""
    doc = read_doc(path, "--profile-trace")
    problems = format_problems(doc)
    if problems:
        return False, "not Chrome trace JSON as Perfetto reads it: " + "; ".join(problems)
    trace = trace_from_doc(doc, path)
    names = {r.name for r in trace.ranges}
    missing = [n for n in NEEDED_RANGES if n not in names]
    processes = sorted({e["pid"] for e in doc["traceEvents"]})
    ok = not missing and "dualsimPlan" in doc and (not gpu or bool(trace.kernels))
    line = (f"{len(doc['traceEvents'])} events, {len(trace.kernels)} GPU kernels, "
            f"{len(names)} range names, processes {processes}")
    if missing:
        line += f"; missing ranges {missing}"
    return ok, line


@dataclass(frozen=True)
class Overlap:
    """The all-to-all's GPU time (union, microseconds) and the part of it under compute."""

    a2a_us: float
    hidden_us: float
    a2a_streams: frozenset[Any]
    compute_streams: frozenset[Any]

    @property
    def fraction(self) -> float:
        return self.hidden_us / self.a2a_us if self.a2a_us > 0 else 0.0


def _is_copy(k: Kernel) -> bool:
    return k.name.startswith(("Memcpy", "Memset"))


def gpu_overlap(trace: Trace) -> Overlap:
    """Summed over processes: GPU work launched in an all-to-all range against compute kernels
    (not copies) launched outside one."""
    a2a_us = hidden_us = 0.0
    a2a_streams: set[Any] = set()
    compute_streams: set[Any] = set()
    for rank in sorted({k.rank for k in trace.kernels}):
        comm = {k for r in trace.ranges if r.rank == rank and r.name in A2A_RANGES
                for k in r.kernels}
        compute = [k for k in trace.kernels
                   if k.rank == rank and k not in comm and not _is_copy(k)]
        a2a_streams |= {k.stream for k in comm}
        compute_streams |= {k.stream for k in compute}
        total, out = exposed(intervals_union((k.start, k.end) for k in compute),
                             intervals_union((k.start, k.end) for k in comm))
        a2a_us, hidden_us = a2a_us + total, hidden_us + total - out
    return Overlap(a2a_us, hidden_us, frozenset(a2a_streams), frozenset(compute_streams))


def overlap_line(path: str | Path) -> tuple[bool, str]:
    o = gpu_overlap(read_trace(path))
    if o.a2a_us == 0:
        return False, "no GPU work inside the all-to-all ranges: nothing to measure"
    own = o.a2a_streams - o.compute_streams
    line = (f"{o.fraction * 100:.0f}% of the all-to-all's GPU time ({o.a2a_us:.0f} us) ran "
            f"beside compute kernels; all-to-all on stream(s) {sorted(o.a2a_streams, key=str)}, "
            f"compute on {sorted(o.compute_streams, key=str)}")
    return bool(own) and o.hidden_us > 0, line


def _run_file(path: str) -> tuple[bool, str]:
    """run_line of a ``dualsim run --json`` file; TraceError when it is not such a result."""
    result = read_doc(path, "--json")
    try:
        return run_line(result)
    except (KeyError, TypeError, ValueError) as e:
        raise TraceError(f"{path!r} is not a `dualsim run --json` result ({type(e).__name__}: "
                         f"{e}); give the file that `dualsim run --json` wrote") from None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("run", "trace", "overlap"):
        print("usage: python -m dualsim.runtime.gpu_check run|trace|overlap FILE [--gpu]",
              file=sys.stderr)
        return 2
    what, path = argv[0], argv[1]
    try:
        if what == "run":
            ok, line = _run_file(path)
        elif what == "trace":
            ok, line = trace_line(path, gpu="--gpu" in argv[2:])
        else:
            ok, line = overlap_line(path)
    except DualsimError as e:
        print(f"error: {e.cli}", file=sys.stderr)
        return 1
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
