"""scripts/gpu_check.sh's line checks and the merged profiler trace, on hand-made traces.

The GPU parts of the script only run on a GPU machine; what they compute from the files
(the overlap of the all-to-all's GPU work with compute, the trace's format) is checked here on
Kineto-shaped traces with known kernels, to exact numbers. The merge of the processes' traces
must leave every pid/tid an integer and every flow id owned by one process, and calibrate must
still link kernels through a merged trace's ``ac2g`` flows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualsim.calibrate.trace import FLOW_ID_STRIDE, read_trace
from dualsim.generators import generate
from dualsim.lower import lower
from dualsim.runtime.gpu_check import format_problems, gpu_overlap, main, overlap_line, \
    run_line, trace_line

PLAN = lower(generate("dualpipe", 2, 4))


def _x(name: str, cat: str, pid: int, tid: int, ts: float, dur: float, **args) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur,
            "args": args}


def _launch(pid: int, tid: int, ts: float, corr: int) -> dict:
    return _x("cudaLaunchKernel", "cuda_runtime", pid, tid, ts, 1, correlation=corr)


def _kernel(name: str, pid: int, stream: int, ts: float, dur: float, corr: int) -> dict:
    cat = "gpu_memcpy" if name.startswith("Memcpy") else "kernel"
    return _x(name, cat, pid, stream, ts, dur, correlation=corr, stream=stream)


def _process(pid: int, comm_stream: int) -> list[dict]:
    """One process: the main thread (tid 1) runs attn(F) and mlp(B), launching compute kernels
    on stream 7 at [0, 15) and [25, 40); the communication thread (tid 2) posts dispatch(F),
    whose kernel runs on ``comm_stream`` at [10, 30); a wait's copy back on stream 7 at
    [40, 45) is no compute."""
    ranges = [_x(n, "user_annotation", pid, tid, ts, dur) for n, tid, ts, dur in
              [("attn(F)", 1, 0, 5), ("mlp(B)", 1, 20, 5), ("dispatch(F)", 2, 4, 4),
               ("wait dispatch(F)", 1, 30, 5), ("combine(B)", 2, 50, 1), ("attn(W)", 1, 60, 1)]]
    launches = [_launch(pid, 1, 1, 1), _launch(pid, 1, 21, 2), _launch(pid, 2, 5, 3),
                _launch(pid, 1, 31, 4)]
    kernels = [_kernel("gemm", pid, 7, 0, 15, 1), _kernel("gemm", pid, 7, 25, 15, 2),
               _kernel("ncclAllToAll", pid, comm_stream, 10, 20, 3),
               _kernel("Memcpy HtoD (Pageable -> Device)", pid, 7, 40, 5, 4)]
    return ranges + launches + kernels


def _trace(tmp_path: Path, events: list[dict], name: str = "t.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"traceEvents": events, "dualsimPlan": PLAN.to_dict(),
                             "dualsimEp": 2}))
    return p


def test_overlap_of_the_all_to_all_with_compute(tmp_path: Path) -> None:
    # process 0: all-to-all on its own stream 20, [10, 30) against compute [0, 15) + [25, 40):
    # 5 + 5 of 20 us hidden; process 1: on stream 21, the same
    path = _trace(tmp_path, _process(0, 20) + _process(1, 21))
    o = gpu_overlap(read_trace(path))
    assert (o.a2a_us, o.hidden_us) == (40.0, 20.0) and o.fraction == 0.5
    assert o.a2a_streams == {20, 21} and o.compute_streams == {7}
    ok, line = overlap_line(path)
    assert ok and line.startswith("50% of the all-to-all's GPU time (40 us) ran beside compute")


def test_all_to_all_on_the_compute_stream_fails_the_overlap_check(tmp_path: Path) -> None:
    # the same kernels, the all-to-all on the compute stream: serialized, nothing hidden
    events = [e if e.get("name") != "ncclAllToAll" else {**e, "ts": 15.0, "dur": 10.0}
              for e in _process(0, 7)]
    o = gpu_overlap(read_trace(_trace(tmp_path, events)))
    assert (o.a2a_us, o.hidden_us) == (10.0, 0.0)
    assert overlap_line(_trace(tmp_path, events))[0] is False
    none = [e for e in events if e.get("name") != "ncclAllToAll"]
    assert overlap_line(_trace(tmp_path, none)) == (
        False, "no GPU work inside the all-to-all ranges: nothing to measure")


def test_trace_format_check(tmp_path: Path) -> None:
    path = _trace(tmp_path, _process(0, 20) + _process(1, 21))
    ok, line = trace_line(path, gpu=True)
    assert ok and line == "28 events, 8 GPU kernels, 6 range names, processes [0, 1]"
    # what Kineto writes and a plain merge kept: a thread name as tid, per-process flow ids
    flows = [{"ph": ph, "id": 1, "pid": pid, "tid": 1, "ts": 1.0, "cat": "fwdbwd",
              "name": "fwdbwd"} for ph in "sf" for pid in (0, 1)]
    bad = _process(0, 20) + flows + [_x("PyTorch Profiler (0)", "Trace", 0, 1, 0, 1) | {
        "tid": "PyTorch Profiler"}, {"ph": "X", "pid": 0, "tid": 1, "ts": 0, "name": "x"}]
    assert format_problems({"traceEvents": bad}) == [
        "X events with a non-integer tid (1)", "X events without a numeric dur >= 0 (1)",
        "flow ids reused by two processes (2)"]
    assert format_problems([]) == ["no traceEvents list"]
    ok, line = trace_line(_trace(tmp_path, bad), gpu=False)
    assert not ok and line.startswith("not Chrome trace JSON as Perfetto reads it")


def test_run_line_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = {"schedule": "zb-v", "ranks": 2, "ep": 2, "device": "cuda", "backend": "gloo",
         "matches_reference": True, "max_rel_grad_diff": 3e-7, "step_time_s": 0.0125,
         "a2a_bytes_per_step": 1024, "a2a_hidden_fraction": 0.25}
    assert run_line(r) == (True, "zb-v 2x2 on cuda/gloo: grad rel diff 3e-07, step 12.5 ms, "
                                 "all-to-all 25% hidden")
    assert run_line({**r, "max_rel_grad_diff": 2e-5})[0] is False
    assert run_line({**r, "a2a_bytes_per_step": 0})[0] is False  # no rows moved: no EP
    p = tmp_path / "r.json"
    p.write_text(json.dumps(r))
    assert main(["run", str(p)]) == 0 and capsys.readouterr().out.startswith("zb-v 2x2")
    assert main(["bogus"]) == 2


def test_a_file_it_cannot_read_is_one_error_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/gpu_check.sh quotes the last lines of a failed check: no traceback there."""
    missing, folder, bad = tmp_path / "none.json", tmp_path / "d", tmp_path / "bad.json"
    folder.mkdir()
    bad.write_text("{bad")
    (tmp_path / "other.json").write_text('{"a": 1}')
    cases = [
        (["run", str(missing)], f"run result file '{missing}' does not exist; check the path"),
        (["trace", str(missing), "--gpu"],
         f"profiler trace file '{missing}' does not exist; check the path"),
        (["overlap", str(missing)], f"trace file '{missing}' does not exist; check the path"),
        (["run", str(folder)], f"run result file '{folder}' is a folder, not a file"),
        (["trace", str(bad)], f"profiler trace file '{bad}' is not valid JSON (line 1, column "
                              "2: Expecting property name enclosed in double quotes); it may be "
                              "truncated: give the file that `dualsim run --profile-trace` "
                              "wrote"),
        (["run", str(tmp_path / "other.json")],
         f"'{tmp_path / 'other.json'}' is not a `dualsim run --json` result (KeyError: "
         "'matches_reference'); give the file that `dualsim run --json` wrote"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        out = capsys.readouterr()
        assert (out.out, out.err) == ("", f"error: {message}\n")


def test_merged_trace_has_integer_tids_and_per_process_flow_ids(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from dualsim.runtime.profiling import NAMED_TID_BASE, merge
    from dualsim.runtime.progress import World

    def kineto(pid: int) -> dict:
        # a process's own trace: launches without correlation args (the ac2g flows link them),
        # Kineto's profiler-window marker on a named thread, flows numbered from 1
        ev = [_x(n, "user_annotation", 4242 + pid, 1, ts, dur) for n, ts, dur in
              [("attn(F)", 0, 5), ("dispatch(F)", 4, 4), ("mlp(B)", 20, 5),
               ("combine(B)", 50, 1), ("attn(W)", 60, 1)]]
        ev += [_x("cudaLaunchKernel", "cuda_runtime", 4242 + pid, 1, 1, 1),
               {"ph": "s", "id": 7, "pid": 4242 + pid, "tid": 1, "ts": 1, "cat": "ac2g",
                "name": "ac2g"},
               {"ph": "f", "id": 7, "pid": 0, "tid": 7, "ts": 2, "cat": "ac2g", "name": "ac2g",
                "bp": "e"},
               _kernel("gemm", 0, 7, 2 + pid, 3, 7),
               {**_x("PyTorch Profiler (0)", "Trace", 4242 + pid, 0, 0, 100),
                "tid": "PyTorch Profiler"},
               {"ph": "M", "name": "process_name", "pid": 4242 + pid, "tid": 0,
                "args": {"name": "python"}}]
        return {"traceEvents": ev}

    doc = merge([kineto(0), kineto(1)], PLAN, World(2, 2))
    assert format_problems(doc) == []
    flows = sorted((e["pid"], e["ph"], e["id"]) for e in doc["traceEvents"] if e["ph"] in "sf")
    assert flows == [(0, "f", 7), (0, "s", 7), (1, "f", 7 + FLOW_ID_STRIDE),
                     (1, "s", 7 + FLOW_ID_STRIDE)]
    named = [e for e in doc["traceEvents"] if e.get("cat") == "Trace"]
    assert [(e["pid"], e["tid"]) for e in named] == [(0, NAMED_TID_BASE), (1, NAMED_TID_BASE)]
    assert {(e["pid"], e["args"]["name"]) for e in doc["traceEvents"]
            if e.get("name") == "thread_name"} == {(0, "PyTorch Profiler"),
                                                    (1, "PyTorch Profiler")}
    path = tmp_path / "merged.json"
    path.write_text(json.dumps(doc))
    trace = read_trace(path)  # calibrate undoes the stride: each kernel finds its launch
    assert trace.unlinked == 0
    assert [(k.rank, k.start, k.launch) for k in trace.kernels] == [(0, 2.0, 1.0),
                                                                    (1, 3.0, 1.0)]


def test_every_runtime_module_imports_and_is_listed() -> None:
    """What gpu_check.sh's "modules" line checks: every runtime module imports on this
    machine (its CUDA paths included, as far as an import reaches them), and the package's
    docstring lists each one."""
    pytest.importorskip("torch")
    import importlib
    import pkgutil
    import re

    import dualsim.runtime as runtime

    names = sorted(m.name for m in pkgutil.iter_modules(runtime.__path__))
    for name in names:
        importlib.import_module(f"dualsim.runtime.{name}")
    listed = sorted(set(re.findall(r":mod:`(\w+)`", runtime.__doc__ or "")))
    assert listed == names
