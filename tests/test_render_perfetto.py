"""Perfetto traces: JSON shape, metadata names, exact timestamps, flows, memory counters."""

from __future__ import annotations

import json
import math

import pandas as pd

from dualsim.generators import generate
from dualsim.render.perfetto import handoffs_in_trace_order, to_trace, write_trace
from dualsim.timeline import from_rows
from test_render_helpers import row, serial_timeline


def events(trace, ph):
    return [e for e in trace["traceEvents"] if e["ph"] == ph]


def format_errors(trace):
    """Deviations from the Trace Event Format rules Perfetto's JSON importer relies on."""
    errs = []
    spans = {}
    for e in trace["traceEvents"]:
        missing = [k for k in ("ph", "name", "pid", "tid", "ts") if k not in e]
        if missing:
            errs.append(f"{e.get('ph')} {e.get('name')} lacks {missing}")
            continue
        for k in ("ts", "dur"):
            if k in e and not (isinstance(e[k], (int, float)) and math.isfinite(e[k])):
                errs.append(f"{k} {e[k]!r} is not a finite number")
        if e["ph"] == "X":
            if e["dur"] < 0:
                errs.append(f"negative dur {e}")
            spans.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
        elif e["ph"] == "C":
            if not e["args"] or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                        for v in e["args"].values()):
                errs.append(f"counter args not numbers: {e}")
        elif e["ph"] == "M":
            if e["name"] in ("process_name", "thread_name") and not e["args"].get("name"):
                errs.append(f"unnamed {e}")
        elif e["ph"] in "sf":
            if "id" not in e or "cat" not in e:
                errs.append(f"flow without id/cat {e}")
            if e["ph"] == "f" and e.get("bp") != "e":
                errs.append(f"flow end not bound to its enclosing slice {e}")
    for e in trace["traceEvents"]:  # both ends of an arrow inside a slice on their thread
        if e.get("ph") in ("s", "f") and not any(
                a <= e["ts"] < b or a == e["ts"] == b for a, b in spans.get((e["pid"], e["tid"]), [])):
            errs.append(f"flow {e['ph']} {e['id']} outside any slice of its thread")
    ids = [(e["ph"], e["cat"], e["id"]) for e in trace["traceEvents"] if e.get("ph") in ("s", "f")]
    if len(ids) != len(set(ids)):
        errs.append("flow ids reused")
    return errs


def test_slices_have_exact_microsecond_times_for_abstract_units():
    tl = from_rows([row(0, "F", 0, 0, 0, 1), row(1, "F", 1, 0, 1, 2.5),
                    row(1, "B", 1, 0, 2.5, 4.5)])
    tr = to_trace(tl)
    xs = events(tr, "X")
    assert [(e["pid"], e["tid"], e["name"], e["ts"], e["dur"]) for e in xs] == [
        (0, 0, "0F0", 0, 1000), (1, 0, "1F0", 1000, 1500), (1, 0, "1B0", 2500, 2000)]
    assert xs[1]["args"] == {"op": "F", "stage": 1, "microbatch": 0, "chain": 0}
    assert "1000 us" in tr["otherData"]["note"]


def test_seconds_scale_to_microseconds():
    tl = from_rows([row(0, "F", 0, 0, 0.001, 0.0035)])
    (x,) = events(to_trace(tl, time_unit="s"), "X")
    assert (x["ts"], x["dur"]) == (1000, 2500)


def test_metadata_names_each_rank_and_thread():
    tl = from_rows([row(0, "F", 0, 0, 0, 1), row(1, "combine", 1, 0, 0, 1, stream="comm")])
    meta = events(to_trace(tl), "M")
    names = {(e["pid"], e["tid"], e["name"]): e["args"].get("name") for e in meta}
    assert names[(0, 0, "process_name")] == "rank 0"
    assert names[(1, 0, "process_name")] == "rank 1"
    assert names[(1, 0, "thread_name")] == "compute"
    assert names[(1, 1, "thread_name")] == "comm"
    comm = [e for e in events(to_trace(tl), "X") if e["pid"] == 1]
    assert comm[0]["tid"] == 1 and comm[0]["cat"] == "comm"


def test_1f1b_flows_are_two_per_cross_rank_hop():
    R, M = 4, 8
    s = generate("1f1b", R, M)
    tr = to_trace(serial_timeline(s), schedule=s)
    starts, finishes = events(tr, "s"), events(tr, "f")
    assert len(starts) == len(finishes) == 2 * (R - 1) * M
    assert sorted(e["id"] for e in starts) == sorted(e["id"] for e in finishes)
    assert len({e["id"] for e in starts}) == len(starts)
    # every flow goes to a neighbouring rank
    by_id = {e["id"]: e for e in starts}
    assert all(abs(by_id[f["id"]]["pid"] - f["pid"]) == 1 for f in finishes)
    assert all(f["bp"] == "e" for f in finishes)


def test_v_turn_is_same_rank_and_gets_no_flow():
    R, M = 4, 8
    s = generate("zb-v", R, M)
    # a V of 2R stages has 2R-2 cross-rank hops per direction (the turn is on rank R-1)
    assert len(handoffs_in_trace_order(s)) == 2 * (2 * R - 2) * M
    tr = to_trace(serial_timeline(s), schedule=s)
    assert len(events(tr, "s")) == 2 * (2 * R - 2) * M


def test_fb_halves_produce_and_consume_flows():
    s = generate("dualpipe", 4, 8)
    tr = to_trace(serial_timeline(s), schedule=s)
    # DualPipe: 2 chains of R stages, M micro-batches, R-1 hops each way
    assert len(events(tr, "s")) == 2 * (4 - 1) * 8
    fb_slices = {(e["pid"], e["ts"]) for e in events(tr, "X") if e["args"]["op"] == "FB"}
    ends = {(e["pid"], e["ts"]) for e in events(tr, "f")}
    assert fb_slices & ends  # some arrows land on FB cells


def test_memory_counters_per_rank():
    tl = from_rows([row(0, "F", 0, 0, 0, 1)])
    mem = pd.DataFrame({"rank": [0, 0, 1], "time": [0.0, 0.5, 0.0],
                        "params_gb": [1.0, 1.0, 2.0], "activations_gb": [0.0, 3.25, 0.5],
                        "total_gb": [1.0, 4.25, 2.5]})
    cs = events(to_trace(tl, time_unit="s", memory=mem), "C")
    assert [(c["pid"], c["ts"], c["args"]) for c in cs] == [
        (0, 0, {"params": 1.0, "activations": 0.0}),
        (0, 500000, {"params": 1.0, "activations": 3.25}),
        (1, 0, {"params": 2.0, "activations": 0.5})]
    assert all(c["name"] == "memory (GB)" for c in cs)


def test_written_trace_is_valid_deterministic_json(tmp_path):
    s = generate("dualpipev", 4, 8)
    tl = serial_timeline(s)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_trace(tl, a, schedule=s)
    write_trace(tl, b, schedule=s)
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    assert {e["pid"] for e in data["traceEvents"]} == {0, 1, 2, 3}
    assert len(events(data, "X")) == sum(len(r) for r in s.actions)


def test_hardware_flows_start_at_the_pp_send():
    s = generate("1f1b", 2, 1)
    tl = from_rows([
        row(0, "F", 0, 0, 0.0, 1.0, piece="attn"),
        row(0, "pp_send", 0, 0, 1.0, 1.25, stream="comm", piece="pp_fwd", action="0F0"),
        row(1, "F", 1, 0, 1.5, 2.5, piece="attn"),
        row(1, "B", 1, 0, 2.5, 4.5, piece="mlp_bwd"),
        row(1, "pp_send", 1, 0, 4.5, 4.75, stream="comm", piece="pp_bwd", action="1B0"),
        row(0, "B", 0, 0, 5.0, 7.0, piece="mlp_bwd"),
    ])
    tr = to_trace(tl, schedule=s, time_unit="ms")
    starts = {e["id"]: e for e in events(tr, "s")}
    ends = {e["id"]: e for e in events(tr, "f")}
    got = sorted((e["name"], e["pid"], e["tid"], e["ts"], ends[i]["pid"], ends[i]["ts"])
                 for i, e in starts.items())
    assert got == [("activation", 0, 1, 1000, 1, 1500), ("gradient", 1, 1, 4500, 0, 5000)]


def test_overlapping_comm_goes_to_extra_threads_so_slices_nest():
    tl = from_rows([
        row(0, "F", 0, 0, 0.0, 4.0),
        row(0, "dispatch", 0, 0, 0.0, 2.0, stream="comm", action="0F0"),
        row(0, "combine", 0, 1, 1.0, 3.0, stream="comm", action="0F1"),
        row(0, "pp_send", 0, 0, 2.0, 4.0, stream="comm", action="0F0"),
    ])
    tr = to_trace(tl)
    comm = [(e["name"], e["tid"]) for e in events(tr, "X") if e["cat"] == "comm"]
    assert comm == [("dispatch 0F0", 1), ("combine 0F1", 2), ("pp_send 0F0", 1)]
    names = {e["tid"]: e["args"]["name"] for e in events(tr, "M") if e["name"] == "thread_name"}
    assert names == {0: "compute", 1: "comm", 2: "comm (concurrent 2)"}


def test_real_hardware_trace_slices_nest_and_flows_bind():
    from dualsim.sim.hardware_mode import simulate_hardware

    s = generate("dualpipe", 4, 8)
    r = simulate_hardware(s, "h800", "small-moe")
    tr = to_trace(r.timeline, time_unit="s", schedule=s, memory=r.memory)
    by_thread = {}
    for e in events(tr, "X"):
        assert e["dur"] >= 0
        by_thread.setdefault((e["pid"], e["tid"]), []).append((e["ts"], round(e["ts"] + e["dur"], 3)))
    for spans in by_thread.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # slices on a thread nest

    def inside(e):
        return any(s0 <= e["ts"] <= s1 for s0, s1 in by_thread[(e["pid"], e["tid"])])

    flows = events(tr, "s") + events(tr, "f")
    assert len(flows) == 2 * (2 * 3 * 4 * 2)  # s+f; 2 chains x 3 hops x 4 mbs x 2 directions
    assert all(inside(e) for e in flows)
    assert format_errors(tr) == []
    assert events(tr, "C") and all(c["tid"] == 0 for c in events(tr, "C"))


def test_every_event_has_ph_name_pid_tid_ts():
    s = generate("dualpipev", 4, 8)
    mem = pd.DataFrame({"rank": [0, 1], "time": [0.0, 0.5], "params_gb": [1.0, 2.0],
                        "total_gb": [1.0, 2.0]})
    tr = to_trace(serial_timeline(s), schedule=s, memory=mem)
    assert format_errors(tr) == []
    meta = events(tr, "M")
    assert meta and all(e["ts"] == 0 for e in meta)
    assert [(c["pid"], c["tid"], c["ts"]) for c in events(tr, "C")] == [(0, 0, 0), (1, 0, 500)]


def test_format_check_catches_a_flow_outside_its_slice():
    tl = from_rows([row(0, "F", 0, 0, 0, 1), row(1, "F", 1, 0, 2, 3)])
    s = generate("1f1b", 2, 1)
    tr = to_trace(tl, schedule=s)
    assert format_errors(tr) == []
    (f,) = events(tr, "f")
    f["ts"] = 1500  # between slices
    assert format_errors(tr) == ["flow f 1 outside any slice of its thread"]


def test_flow_ids_follow_each_microbatch_down_the_chain_and_back():
    from dualsim.deps import Key, Kind

    fwd, bwd = Kind.FORWARD, Kind.BACKWARD
    got = [(h.producer, h.consumer) for h in handoffs_in_trace_order(generate("1f1b", 3, 2))]
    assert got == [(Key(fwd, 0, m), Key(fwd, 1, m)) if k == 0 else
                   (Key(fwd, 1, m), Key(fwd, 2, m)) if k == 1 else
                   (Key(bwd, 2, m), Key(bwd, 1, m)) if k == 2 else
                   (Key(bwd, 1, m), Key(bwd, 0, m))
                   for m in (0, 1) for k in range(4)]
    tr = to_trace(serial_timeline(generate("1f1b", 3, 2)), schedule=generate("1f1b", 3, 2))
    assert [(e["id"], e["name"]) for e in events(tr, "s")] == [
        (1, "activation"), (2, "activation"), (3, "gradient"), (4, "gradient"),
        (5, "activation"), (6, "activation"), (7, "gradient"), (8, "gradient")]
