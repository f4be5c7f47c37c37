"""Chrome/Perfetto JSON traces of a Timeline (open in ui.perfetto.dev or chrome://tracing).

Layout of a trace:

- one process per rank (``pid`` = rank, ``process_name`` "rank r"), threads ``compute`` (tid 0)
  and ``comm`` (tid 1), named with ``thread_name`` metadata events; transfers that overlap in
  time (concurrent flows) go to extra threads "comm (concurrent k)", as trace slices must nest;
- one complete event (``"ph": "X"``) per Timeline row, ``args`` holding stage, micro-batch, op
  (and the backward half's stage/micro-batch for an FB, the piece in hardware mode);
- with ``schedule``: one flow arrow (``"ph": "s"`` then ``"f"``, same ``id``, bound to the
  enclosing slices) per cross-rank handoff of :mod:`dualsim.deps`, from its producer to its
  consumer: F(s, m) -> F(next stage, m) and backward(s, m) -> backward(previous stage, m), where
  a backward is a B, an I or the backward half of an FB. Same-rank dependencies (the turn of a
  V) get no arrow. In hardware
  mode the arrow starts at the producer's ``pp_send`` slice on its comm thread (the send) and
  ends at the consumer's first compute slice (the receive); otherwise at the producer's slice;
- with ``memory`` (columns ``rank``, ``time`` and ``*_gb``): a counter track ``memory (GB)``
  per rank (``"ph": "C"``), one series per component.

Every event carries ``ph``, ``name``, ``pid``, ``tid`` and ``ts`` (metadata at ``ts`` 0, counters
on the compute thread's id), so strict readers of the Trace Event Format accept it as well as
Perfetto's importer.

Time: trace timestamps are microseconds. Seconds are scaled by 1e6 (``ms`` by 1e3, ``us`` by 1);
abstract cost units are scaled by 1000, i.e. **1 cost unit is shown as 1 ms**. The output is
deterministic: events are emitted in a fixed order and numbers rounded to nanoseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dualsim.io import write_atomic
from dualsim.deps import CARRIES, PIECE, Handoff, Key, Kind, handoffs, makes
from dualsim.ir import Action, Op, Schedule
from dualsim.render.frames import records

COMPUTE_TID = 0
COMM_TID = 1
#: non-compute streams: first thread id and thread name ("a2a": the runtime's all-to-all)
LANE_TIDS = {"comm": (COMM_TID, "comm"), "a2a": (101, "all-to-all")}
UNIT_SCALE = {"s": 1e6, "ms": 1e3, "us": 1.0}
ABSTRACT_SCALE = 1000.0  # 1 abstract cost unit = 1000 us
#: hardware mode: a ``pp_send`` row's piece says which kind of product it carries
SEND_PIECES: dict[str, Kind] = {piece: kind for kind, piece in PIECE.items()}


def time_scale(time_unit: str) -> float:
    """Microseconds per time unit of the Timeline."""
    return UNIT_SCALE.get(time_unit, ABSTRACT_SCALE)


def _us(value: float, scale: float) -> float | int:
    v = round(float(value) * scale, 3)
    return int(v) if v.is_integer() else v


def assign_comm_lanes(records: list[dict[str, Any]]) -> dict[tuple[int, str], int]:
    """Per rank and non-compute stream, how many threads it needs: overlapping transfers
    (concurrent flows on the links) go to extra threads, since slices on one trace thread must
    nest. Sets ``rec["_tid"]`` on every such record (the stream's first tid, + 1, ...: the first
    lane free at its start)."""
    lanes: dict[tuple[int, str], list[float]] = {}
    for rec in sorted((r for r in records if r["stream"] in LANE_TIDS),
                      key=lambda r: (int(r["rank"]), float(r["start"]), float(r["end"]))):
        ends = lanes.setdefault((int(rec["rank"]), str(rec["stream"])), [])
        base = LANE_TIDS[str(rec["stream"])][0]
        for k, end in enumerate(ends):
            if end <= float(rec["start"]):
                ends[k] = float(rec["end"])
                rec["_tid"] = base + k
                break
        else:
            ends.append(float(rec["end"]))
            rec["_tid"] = base + len(ends) - 1
    return {key: len(e) for key, e in lanes.items()}


def _metadata(ranks: list[int], comm_lanes: dict[tuple[int, str], int]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for r in ranks:
        events.append({"name": "process_name", "ph": "M", "ts": 0, "pid": r, "tid": 0,
                       "args": {"name": f"rank {r}"}})
        events.append({"name": "process_sort_index", "ph": "M", "ts": 0, "pid": r, "tid": 0,
                       "args": {"sort_index": r}})
        events.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": r, "tid": COMPUTE_TID,
                       "args": {"name": "compute"}})
        for stream, (base, label) in LANE_TIDS.items():
            for k in range(comm_lanes.get((r, stream), 0)):
                events.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": r,
                               "tid": base + k,
                               "args": {"name": label if k == 0 else
                                        f"{label} (concurrent {k + 1})"}})
    return events


def _slice(rec: dict[str, Any], scale: float) -> dict[str, Any]:
    comm = rec["stream"] in LANE_TIDS
    args: dict[str, Any] = {"op": rec["op"], "stage": int(rec["stage"]),
                            "microbatch": int(rec["microbatch"]), "chain": int(rec["chain"])}
    if rec["op"] == "FB":
        args.update({"stage2": int(rec["stage2"]), "microbatch2": int(rec["microbatch2"]),
                     "chain2": int(rec["chain2"])})
    if rec["piece"]:
        args["piece"] = rec["piece"]
    name = str(rec["action"]) or str(rec["op"])
    if comm:
        name = f"{rec['op']} {rec['action']}".strip() if rec["action"] else str(rec["op"])
    elif rec["piece"]:
        name = f"{name} {rec['piece']}"
    start = _us(rec["start"], scale)
    # the duration is the difference of the rounded ends, so back-to-back slices stay disjoint
    dur = round(_us(rec["end"], scale) - start, 3)
    return {"name": name, "cat": "comm" if comm else str(rec["op"]), "ph": "X",
            "ts": start, "dur": int(dur) if float(dur).is_integer() else dur,
            "pid": int(rec["rank"]), "tid": rec.get("_tid", COMM_TID) if comm else COMPUTE_TID,
            "args": args}


def _unit_keys(rec: dict[str, Any]) -> list[Key]:
    """The forward and backward products a compute row makes (an FB's halves both)."""
    if rec["op"] == "FB":
        parts = [Action(Op.F, int(rec["stage"]), int(rec["microbatch"])),
                 Action(Op.B, int(rec["stage2"]), int(rec["microbatch2"]))]
    else:
        parts = [Action(Op(rec["op"]), int(rec["stage"]), int(rec["microbatch"]))]
    return [key for part in parts for key in makes(part) if key.kind in CARRIES]


def handoffs_in_trace_order(schedule: Schedule) -> list[Handoff]:
    """Every cross-rank handoff of ``schedule`` (:func:`dualsim.deps.handoffs`), per chain and
    micro-batch: the forward hops down the chain, then the backward hops back up. The trace's
    flow ids count in this order."""
    where = {m: (c, i) for c, mbs in enumerate(schedule.chains) for i, m in enumerate(mbs)}
    position = {st.stage: st.position for st in schedule.stages}

    def order(h: Handoff) -> tuple[int, int, int, int]:
        forward = h.producer.kind is Kind.FORWARD
        hop = position[h.producer.stage]
        return (*where[h.producer.microbatch], 0 if forward else 1, hop if forward else -hop)

    return sorted(handoffs(schedule), key=order)


def _flows(records: list[dict[str, Any]], schedule: Schedule, scale: float) -> list[dict[str, Any]]:
    first: dict[Key, dict[str, Any]] = {}
    last: dict[Key, dict[str, Any]] = {}
    sends: dict[Key, dict[str, Any]] = {}
    for rec in records:
        if rec["stream"] != "compute":
            if rec["op"] == "pp_send" and rec["piece"] in SEND_PIECES:
                key = Key(SEND_PIECES[rec["piece"]], int(rec["stage"]), int(rec["microbatch"]))
                sends.setdefault(key, rec)
            continue
        for key in _unit_keys(rec):
            first.setdefault(key, rec)
            last[key] = rec
    events: list[dict[str, Any]] = []
    for fid, h in enumerate(handoffs_in_trace_order(schedule), start=1):
        src, dst = h.producer, h.consumer
        if src not in last or dst not in first:
            continue
        p, q = sends.get(src, last[src]), first[dst]
        name = CARRIES[src.kind]
        tid = p.get("_tid", COMM_TID) if p["stream"] == "comm" else COMPUTE_TID
        events.append({"name": name, "cat": "pp", "ph": "s", "id": fid,
                       "ts": _us(p["start"], scale), "pid": int(p["rank"]), "tid": tid})
        events.append({"name": name, "cat": "pp", "ph": "f", "bp": "e", "id": fid,
                       "ts": _us(q["start"], scale), "pid": int(q["rank"]), "tid": COMPUTE_TID})
    return events


def _counters(memory: pd.DataFrame, scale: float) -> list[dict[str, Any]]:
    cols = [c for c in memory.columns if c.endswith("_gb") and c != "total_gb"]
    if not cols and "total_gb" in memory.columns:
        cols = ["total_gb"]
    events = []
    for rec in records(memory.sort_values(["rank", "time"], kind="stable")):
        events.append({"name": "memory (GB)", "ph": "C", "ts": _us(rec["time"], scale),
                       "pid": int(rec["rank"]), "tid": COMPUTE_TID,
                       "args": {c[:-3]: round(float(rec[c]), 6) for c in cols}})
    return events


def to_trace(timeline: pd.DataFrame, *, time_unit: str = "cost units",
             schedule: Schedule | None = None, memory: pd.DataFrame | None = None) -> dict:
    """The trace as a JSON-ready dict (``traceEvents`` plus a note on the time scale)."""
    scale = time_scale(time_unit)
    tl = timeline.sort_values(["rank", "stream", "start", "end"], kind="stable")
    rows = records(tl)
    ranks = sorted({int(r) for r in tl["rank"]})
    if schedule is not None:
        ranks = sorted(set(ranks) | set(range(schedule.ranks)))
    comm_lanes = assign_comm_lanes(rows)
    events = _metadata(ranks, comm_lanes)
    events.extend(_slice(rec, scale) for rec in rows)
    if schedule is not None:
        events.extend(_flows(rows, schedule, scale))
    if memory is not None and len(memory):
        events.extend(_counters(memory, scale))
    note = ("1 abstract cost unit = 1000 us (shown as 1 ms)" if time_unit not in UNIT_SCALE
            else f"timestamps in microseconds (from {time_unit})")
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"generator": "dualsim", "time_unit": time_unit, "note": note}}


def write_trace(timeline: pd.DataFrame, path: str | Path, *, time_unit: str = "cost units",
                schedule: Schedule | None = None, memory: pd.DataFrame | None = None) -> None:
    """Write ``to_trace(...)`` as compact JSON to ``path``, atomically."""
    import json

    trace = to_trace(timeline, time_unit=time_unit, schedule=schedule, memory=memory)
    write_atomic(path, json.dumps(trace, separators=(",", ":")) + "\n")
