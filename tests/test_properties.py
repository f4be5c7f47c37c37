"""Property tests (hypothesis): for every family and random legal (R, M[, v]) the schedule
validates, each (stage, micro-batch) gets exactly the ops it needs, and the abstract simulation
ends with makespan >= ideal, span <= makespan and busy = M(F+I+W) on every rank."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualsim.generators import generate
from dualsim.errors import ValidationError
from dualsim.ir import Schedule
from dualsim.lower import lower
from dualsim.sim.abstract import simulate
from dualsim.validate import validate

MAX_R, MAX_M = 8, 24
SETTINGS = settings(max_examples=8, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def legal(draw: st.DrawFn, family: str) -> tuple[int, int, int | None]:
    """A legal (ranks, micro-batches, chunks) for ``family`` within the small sizes."""
    if family == "dualpipe":
        r = draw(st.sampled_from([2, 4, 6, 8]))
        return r, 2 * draw(st.integers(r, MAX_M // 2)), None
    r = draw(st.integers(1, MAX_R))
    if family == "interleaved":
        return r, r * draw(st.integers(1, MAX_M // r)), draw(st.integers(2, 4))
    low = {"zb-h2": 2 * r - 1, "zb-v": 2 * r - 1, "dualpipev": 2 * r}.get(family, 1)
    return r, draw(st.integers(low, MAX_M)), None


costs = st.fixed_dictionaries({
    "F": st.integers(1, 4), "I": st.integers(1, 4),
    "W": st.sampled_from([1, 2, Fraction(1, 2), Fraction(3, 4)]),
})
every_family = pytest.mark.parametrize("family", ["gpipe", "1f1b", "interleaved", "zb-h1",
                                                  "zb-h2", "zb-v", "dualpipe", "dualpipev"])


def ops_per_pair(schedule: Schedule) -> Counter[tuple[int, int]]:
    """(stage, mb) -> the sorted ops it runs, as a string like 'FIW' or 'BF'."""
    seen: dict[tuple[int, int], list[str]] = {}
    for _, _, a in schedule.iter_actions():
        for part in a.parts:
            seen.setdefault((part.stage, part.microbatch), []).append(part.op.value)
    return Counter("".join(sorted(v)) for v in seen.values())


@every_family
@SETTINGS
@given(data=st.data())
def test_schedule_validates_and_every_pair_has_its_ops(family: str, data: st.DataObject) -> None:
    r, m, v = data.draw(legal(family))
    s = generate(family, r, m, v)
    validate(s)
    pairs = ops_per_pair(s)
    assert sum(pairs.values()) == s.chain_length * m
    assert set(pairs) <= {"BF", "FIW"}
    if family in ("gpipe", "1f1b", "interleaved"):
        assert pairs == Counter({"BF": s.chain_length * m})
    if family in ("zb-h1", "zb-h2", "zb-v"):
        assert pairs == Counter({"FIW": s.chain_length * m})
    chains = {st_.stage: st_.chain for st_ in s.stages}
    for _, _, a in s.iter_actions():
        for part in a.parts:
            assert part.microbatch in s.chains[chains[part.stage]]


@every_family
@SETTINGS
@given(data=st.data(), c=costs)
def test_simulation_ends_with_consistent_figures(family: str, data: st.DataObject,
                                                 c: dict) -> None:
    r, m, v = data.draw(legal(family))
    s = generate(family, r, m, v)
    res = simulate(s, c)
    work = m * (c["F"] + c["I"] + c["W"])
    assert res.ideal == work
    assert res.makespan >= res.ideal
    assert res.span <= res.makespan
    assert all(p.busy == work for p in res.per_rank)
    assert all(p.idle == res.makespan - work for p in res.per_rank)
    assert all(0 <= p.first_start < p.last_end <= res.makespan for p in res.per_rank)
    assert len(res.timeline) == sum(len(row) for row in s.actions)
    assert all(1 <= p.peak_activations <= len(s.stages_of_rank(p.rank)) * m
               for p in res.per_rank)


@every_family
@SETTINGS
@given(data=st.data(), comm=st.sampled_from([Fraction(1, 2), 1, 3]))
def test_lowered_plan_and_latency(family: str, data: st.DataObject, comm) -> None:
    r, m, v = data.draw(legal(family))
    s = generate(family, r, m, v)
    plain = simulate(s, comm=comm)
    lowered = simulate(lower(s), comm=comm)
    assert lowered.makespan == plain.makespan
    assert list(lowered.timeline["end"]) == list(plain.timeline["end"])
    free = simulate(s).makespan
    assert plain.makespan > free if r > 1 else plain.makespan == free


@every_family
@SETTINGS
@given(data=st.data())
def test_simulator_and_validator_agree_on_swapped_orders(family: str,
                                                         data: st.DataObject) -> None:
    """Swap two neighbours in one rank's list: the simulator deadlocks iff the validator
    rejects the order."""
    r, m, v = data.draw(legal(family))
    s = generate(family, r, m, v)
    rows = [list(row) for row in s.actions]
    rank = data.draw(st.integers(0, s.ranks - 1))
    i = data.draw(st.integers(0, len(rows[rank]) - 2))
    rows[rank][i], rows[rank][i + 1] = rows[rank][i + 1], rows[rank][i]
    swapped = s.with_actions(rows)
    try:
        validate(swapped)
        valid = True
    except ValidationError:
        valid = False
    try:
        simulate(swapped)
        runs = True
    except ValidationError:
        runs = False
    assert runs == valid
