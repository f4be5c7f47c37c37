"""The unit-level model: exact memory and busy time, a lower bound of the step, and the unit
layout that both rest on (checked against the abstract engine and the SimPy engine)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from dualsim.generators import FAMILIES, generate
from dualsim.sim.abstract import simulate
from dualsim.sim.hardware_mode import simulate_hardware
from dualsim.sim.unit_level import compute_rows, lay_out
from dualsim.sim.hardware_mode import hardware_setup
from dualsim.sim.unit_model import (ScheduleIndex, StepModel, chain_bound, sharing_bound,
                                    unit_lower_bound)

# (model, family, R, M, overrides): every family, both MoE presets, several comm-SM counts, EP
# and link what-ifs; DeepSeek-V3 at its published layout among them
SAMPLE = [
    ("deepseek-v3", "dualpipe", 16, 120, {}),
    ("deepseek-v3", "zb-v", 8, 32, {"comm_sms": 12}),
    ("deepseek-v3", "interleaved", 8, 16, {"ep": 32}),
    ("deepseek-v3", "dualpipev", 8, 16, {"comm_sms": 10, "ib_gbps": 100.0}),
    ("small-moe", "1f1b", 4, 12, {"gpus": 64, "comm_sms": 24}),
    ("small-moe", "zb-h2", 4, 8, {"gpus": 64}),
    ("small-moe", "zb-h1", 2, 8, {"gpus": 64, "nvlink_gbps": 80.0}),
    ("small-moe", "gpipe", 4, 8, {"gpus": 64, "comm_sms": 8}),
    ("small-moe", "1f1b-overlap", 4, 12, {"gpus": 64}),
    ("deepseek-v3", "interleaved-overlap", 8, 24, {}),
]


def step_model(model: str, name: str, R: int, M: int, kw: dict) -> StepModel:
    s = generate(name, R, M)
    prof, layout, _ = hardware_setup(s, "h800", model, **kw)
    return StepModel(ScheduleIndex.of(s), prof, layout)


@pytest.mark.parametrize("model, name, R, M, kw", SAMPLE,
                         ids=[f"{m}-{n}-R{r}-M{mb}" for m, n, r, mb, _ in SAMPLE])
def test_memory_and_busy_are_the_simulations_and_the_bound_is_below_its_step(
        model, name, R, M, kw) -> None:
    full = simulate_hardware(generate(name, R, M), "h800", model, **kw)
    sm = step_model(model, name, R, M, kw)
    assert [round(x, 6) for x in sm.peak_memory_gb()] == [p.peak_memory_gb for p in full.per_rank]
    assert sm.busy() == pytest.approx([p.busy for p in full.per_rank], rel=1e-12)
    assert sm.busy_lower_bound() <= sm.lower_bound() <= full.extra["step_time_s"] * (1 + 1e-9)


def test_the_bound_is_the_step_when_nothing_overlaps() -> None:
    """One rank, plain F, I and W units: every piece runs in sequence with its flow alone on the
    link, and the one gradient sync starts after the last W. The bound is then the step itself.
    (A plain B is not such a unit: its W runs beside the all-to-all that follows its I.)"""
    for name in ("zb-h1", "zb-h2"):
        full = simulate_hardware(generate(name, 1, 4), "h800", "small-moe", gpus=64)
        sm = step_model("small-moe", name, 1, 4, {"gpus": 64})
        assert sm.lower_bound() == pytest.approx(full.extra["step_time_s"], rel=1e-12)


def unit_spans(full, index: ScheduleIndex) -> list[tuple[tuple, float]]:
    """(kind, simulated seconds from its first piece's start to its last piece's end) of every
    unit, from the SimPy engine's timeline (PP transfers and gradient syncs left out)."""
    tl = full.timeline[~full.timeline["op"].isin(["pp_send", "pp_recv", "dp_sync"])]
    g = tl.groupby(["rank", "action"]).agg(start=("start", "min"), end=("end", "max"))
    span = {k: e - s for k, s, e in zip(g.index, g["start"], g["end"])}
    return [(k, span[(r, str(a))]) for r, (row, kinds) in enumerate(zip(index.rows, index.kinds))
            for a, k in zip(row, kinds)]


def test_every_unit_lasts_at_least_its_bound_and_a_hidden_fb_exactly_its_sharing_bound() -> None:
    """Every simulated unit lasts at least unit_lower_bound of its kind. In DualPipe's steady
    state an FB's all-to-all kernels all run beside the other half's compute, so the FB lasts
    its compute work plus what the kernels take from compute at the shared rate
    ((S - s)/S x (1 - interference)) while they move their bytes at the overlapped rate: the
    sharing bound is then the simulated duration itself, above the critical path's."""
    sm = step_model("deepseek-v3", "dualpipe", 8, 16, {})
    full = simulate_hardware(generate("dualpipe", 8, 16), "h800", "deepseek-v3")
    spans = unit_spans(full, sm.index)
    assert len(spans) == sum(len(row) for row in sm.index.rows)
    for kind, secs in spans:
        assert secs >= unit_lower_bound(sm.pieces[kind], sm.profile) * (1 - 1e-9), kind
    for kind in (("FB", 1, 6), ("FB", 3, 4), ("FB", 4, 3)):
        p = sm.pieces[kind]
        shortest = min(secs for k, secs in spans if k == kind)
        assert shortest == pytest.approx(sharing_bound(p, sm.profile), rel=1e-9)
        comm = sum(f.standalone_time(sm.profile) for _, f, _, _ in p.comm)
        assert p.busy <= chain_bound(p, sm.profile) < sharing_bound(p, sm.profile) < p.busy + comm
    # the step's bound is then within 1% of the step (5.561 s against 5.590 s)
    assert 0.99 * full.extra["step_time_s"] < sm.lower_bound() <= full.extra["step_time_s"]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_unit_layout_matches_the_abstract_engine(name: str) -> None:
    """With abstract durations (per op, times the stage size) and one latency, the unit-level
    layout is the abstract engine's, exactly (Fractions in, Fractions out)."""
    s = generate(name, 4, 8)
    costs = {"F": Fraction(1), "I": Fraction(4, 3), "W": Fraction(2, 3), "B": Fraction(2),
             "FB": Fraction(5, 2)}
    comm = Fraction(1, 4)
    ref = simulate(s, costs, comm=comm)
    size = Fraction(s.ranks, s.chain_length)
    rows = compute_rows(s)
    durations = [[costs[a.op.value] * size for a in row] for row in rows]
    times = lay_out(s, rows, durations, [[comm] * s.ranks for _ in range(s.ranks)])
    assert times.last_end == ref.makespan
    assert [e[-1] for e in times.ends] == [p.last_end for p in ref.per_rank]
    assert [st[0] for st in times.starts] == [p.first_start for p in ref.per_rank]
