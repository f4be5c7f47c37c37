"""Reading profiler traces: kernels linked to the ranges that launched them (DeepSeek's trace)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dualsim.calibrate.pieces import kernel_class, piece_times
from dualsim.calibrate.trace import read_trace, require
from dualsim.errors import TraceError

DATA = Path(__file__).parent / "data" / "traces"
TRIMMED = DATA / "deepseek-v3-train-trace.trimmed.json.gz"
FULL = Path(__file__).parents[1] / ".." / "shared" / "data" / "deepseek-v3-train-trace.json"
PIECES = ("attn", "mlp", "dispatch", "combine")


@pytest.fixture(scope="module")
def trace():
    return read_trace(TRIMMED)


def test_every_kernel_is_linked_and_lands_in_exactly_one_piece_range(trace) -> None:
    assert trace.unlinked == 0
    assert len(trace.kernels) == 983  # 963 kernels + 12 memsets + 8 memcpys
    pieces = [r for r in trace.ranges if "(" in r.name]
    assert len(pieces) == 40  # 10 piece ranges x 4 layers
    owners = {}
    for r in pieces:
        for k in r.kernels:
            assert id(k) not in owners, f"{k.name} in {owners.get(id(k))} and {r.name}"
            owners[id(k)] = r.name
    assert len(owners) == 983


def test_backward_kernels_come_from_the_autograd_thread(trace) -> None:
    """attn(B) is a range on the main thread; its kernels are launched by autograd's thread."""
    attn_b = trace.named("attn(B)")
    assert {r.tid for r in attn_b} == {1166}
    assert all({k.launch_tid for k in r.kernels} == {2571} for r in attn_b)
    assert all(len(r.kernels) == 101 for r in attn_b)
    # the forward's kernels come from the main thread
    assert all({k.launch_tid for k in r.kernels} == {1166} for r in trace.named("attn(F)"))


def test_dispatch_range_is_mostly_host_wait(trace) -> None:
    """The CPU range of dispatch(F) in layer 1 lasts 20.6 ms; its kernels 5.7 ms."""
    r = trace.named("dispatch(F)")[1]
    assert r.dur == 20604
    assert r.gpu_sum == 116 + 1436 + 4154
    # get_dispatch_layout and notify_dispatch (control), then the dispatch itself (data)
    assert [kernel_class(k.name) for k in r.kernels] == ["a2a_control", "a2a_control",
                                                         "a2a_data"]


def test_piece_times_are_kernel_sums_per_layer(trace) -> None:
    t = piece_times(trace)
    assert set(t.keys) == {f"{p}({x})" for p in PIECES for x in "FB"} | {"attn(W)", "mlp(W)"}
    assert all(t.layers(k) == 4 for k in t.keys)
    # data-moving all-to-all kernels, microseconds per layer as in the file
    assert [s.by_class["a2a_data"] for s in t.of("dispatch(F)")] == pytest.approx(
        [4604e-6, 4154e-6, 4437e-6, 4188e-6])
    assert [s.by_class["a2a_data"] for s in t.of("combine(F)")] == pytest.approx(
        [6002e-6, 6074e-6, 5847e-6, 6052e-6])
    # backward: combine(B) runs a dispatch kernel (FP8), dispatch(B) a combine kernel (BF16)
    assert [s.by_class["a2a_data"] for s in t.of("combine(B)")] == pytest.approx(
        [3320e-6, 3575e-6, 3613e-6, 3113e-6])
    assert [s.by_class["a2a_data"] for s in t.of("dispatch(B)")] == pytest.approx(
        [6549e-6, 6543e-6, 5889e-6, 6492e-6])
    # the FlashAttention forward kernel alone, and the whole FB's GPU span
    assert [s.by_class["attention_core"] for s in t.of("attn(F)")] == pytest.approx(
        [1248e-6, 1199e-6, 1264e-6, 1237e-6], abs=60e-6)
    assert t.mean("attn(F)") == pytest.approx(4.37e-3, abs=0.005e-3)
    assert t.mean("mlp(W)") == pytest.approx(6.378e-3, abs=0.001e-3)
    assert t.gpu_span == pytest.approx(129.012e-3)


def test_mlp_w_runs_on_two_streams(trace) -> None:
    r = trace.named("mlp(W)")[0]
    assert {k.stream for k in r.kernels} == {7, 23}
    assert r.gpu_span < r.gpu_sum  # concurrent streams


@pytest.mark.skipif(not FULL.exists(), reason="needs ../shared/data (the full trace)")
def test_trimmed_copy_reads_the_same_as_the_full_trace(trace) -> None:
    assert piece_times(read_trace(FULL)) == piece_times(trace)


def test_plain_json_and_gz_read_the_same(trace, tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_bytes(gzip.decompress(TRIMMED.read_bytes()))
    assert piece_times(read_trace(p)) == piece_times(trace)


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.mark.parametrize("content,match", [
    ('{"traceEvents": [{"ph": "X", "cat": "kernel"', "not valid JSON.*truncated"),
    ('{"format": "dualsim-plan", "version": 1}', "not a profiler trace"),
    ('[1, 2, 3', "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
])
def test_malformed_files_are_one_error(tmp_path: Path, content, match) -> None:
    with pytest.raises(TraceError, match=match):
        read_trace(_write(tmp_path, "bad.json", content))


def test_missing_folder_and_bad_gzip(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist"):
        read_trace(tmp_path / "nope.json")
    with pytest.raises(TraceError, match="is a folder"):
        read_trace(tmp_path)
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(_write(tmp_path, "t.json.gz", b"not gzip"))


def test_kernels_without_ranges_and_ranges_without_kernels(tmp_path: Path) -> None:
    doc = json.loads(gzip.decompress(TRIMMED.read_bytes()))
    no_ranges = dict(doc, traceEvents=[e for e in doc["traceEvents"]
                                       if e.get("cat") != "user_annotation"])
    t = read_trace(_write(tmp_path, "a.json", json.dumps(no_ranges)))
    with pytest.raises(TraceError, match="no annotated ranges"):
        require(t)
    cpu_only = dict(doc, traceEvents=[e for e in doc["traceEvents"]
                                      if e.get("cat") not in ("kernel", "gpu_memcpy",
                                                              "gpu_memset")])
    t = read_trace(_write(tmp_path, "b.json", json.dumps(cpu_only)))
    with pytest.raises(TraceError, match="no GPU kernels"):
        require(t)
    with pytest.raises(TraceError, match="launched no GPU kernels"):
        piece_times(t)
    unlinked = dict(doc, traceEvents=[e for e in doc["traceEvents"]
                                      if e.get("cat") not in ("cuda_runtime", "cuda_driver",
                                                              "ac2g")])
    with pytest.raises(TraceError, match="links to the CPU call"):
        read_trace(_write(tmp_path, "c.json", json.dumps(unlinked)))


def test_a_damaged_event_is_named(tmp_path: Path) -> None:
    doc = {"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "ts": "soon"}]}
    with pytest.raises(TraceError, match="event 0 .*no numeric ts/dur"):
        read_trace(_write(tmp_path, "d.json", json.dumps(doc)))


def test_damaged_launch_links_leave_the_kernel_unlinked(tmp_path: Path) -> None:
    """args not an object, a list as correlation or flow id: no link, not a traceback."""
    kernel = {"ph": "X", "cat": "kernel", "name": "k", "ts": 5, "dur": 1, "pid": 0, "tid": 7,
              "args": {"correlation": [1]}}
    events = [{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 1, "dur": 1,
               "pid": 0, "tid": 1, "args": [1]},
              {"ph": "s", "cat": "ac2g", "name": "ac2g", "ts": 1, "id": [1], "pid": 0, "tid": 1},
              kernel]
    with pytest.raises(TraceError, match="none of its 1 GPU kernels links"):
        read_trace(_write(tmp_path, "f.json", json.dumps({"traceEvents": events})))
    kernel["args"] = {"correlation": 1}  # the flow's list id must not stand for a missing id
    events[1]["id"] = {"x": 1}
    with pytest.raises(TraceError, match="none of its 1 GPU kernels links"):
        read_trace(_write(tmp_path, "g.json", json.dumps({"traceEvents": events})))


def test_unrelated_trace_has_no_piece_ranges(tmp_path: Path) -> None:
    """A Chrome trace of something else (ranges, but none named like attn(F))."""
    doc = {"traceEvents": [{"ph": "X", "cat": "user_annotation", "name": "step", "ts": 0,
                            "dur": 10, "pid": 1, "tid": 1}]}
    with pytest.raises(TraceError, match="no piece ranges named like attn"):
        piece_times(read_trace(_write(tmp_path, "e.json", json.dumps(doc))))


def test_a_trace_with_a_5000_digit_integer_is_one_error(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text('{"traceEvents": [{"ts": ' + "9" * 5000 + "}]}")
    with pytest.raises(TraceError) as e:
        read_trace(f)
    assert e.value.message == (f"trace file {str(f)!r} holds an integer too long to read (over "
                               "4300 digits); record it again")
