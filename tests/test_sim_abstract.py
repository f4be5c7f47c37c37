"""The abstract simulator on hand-built schedules: exact times, latency, activations, the
Timeline, the validator's errors for bad schedules, and the costs it accepts (dict, --costs
text)."""

from __future__ import annotations

import dataclasses
import pickle
from fractions import Fraction

import pandas as pd
import pytest

from dualsim.errors import CostError, ValidationError
from dualsim.generators import generate, placement
from dualsim.ir import Action, B, F, I, Op, Schedule, W
from dualsim.sim.abstract import simulate
from dualsim.sim.abstract_costs import Costs, parse_costs
from dualsim.timeline import COLUMNS, action_fields, from_rows
from dualsim.validate import ValidSchedule, validate

UNIT = {"F": 1, "I": 1, "W": 1}
FIGURE_COSTS = {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3}


def linear(rows: list[list[Action]], microbatches: int) -> Schedule:
    ranks = len(rows)
    return Schedule("custom", ranks, microbatches, placement.linear(ranks),
                    (tuple(range(microbatches)),), tuple(tuple(r) for r in rows))


def vshape(rows: list[list[Action]], microbatches: int) -> Schedule:
    ranks = len(rows)
    return Schedule("custom", ranks, microbatches, placement.vshape(ranks),
                    (tuple(range(microbatches)),), tuple(tuple(r) for r in rows))


ONE_F_ONE_B_2x2 = linear([[F(0, 0), F(0, 1), B(0, 0), B(0, 1)],
                          [F(1, 0), B(1, 0), F(1, 1), B(1, 1)]], 2)


def times(result) -> list[tuple[int, str, float, float]]:
    tl = result.timeline
    return list(zip(tl["rank"], tl["action"], tl["start"], tl["end"]))


def test_1f1b_two_ranks_exact_times_and_figures() -> None:
    r = simulate(ONE_F_ONE_B_2x2, UNIT)
    assert times(r) == [
        (0, "0F0", 0, 1), (0, "0F1", 1, 2), (0, "0B0", 4, 6), (0, "0B1", 7, 9),
        (1, "1F0", 1, 2), (1, "1B0", 2, 4), (1, "1F1", 4, 5), (1, "1B1", 5, 7),
    ]
    assert (r.makespan, r.span, r.ideal) == (9, 9, 6)
    assert [(p.busy, p.idle, p.first_start, p.last_end, p.peak_activations)
            for p in r.per_rank] == [(6, 3, 0, 9, 2), (6, 3, 1, 7, 1)]
    assert r.bubble_rate == pytest.approx(1 / 3)
    assert type(r.makespan) is int


def test_comm_adds_latency_on_cross_rank_dependencies_only() -> None:
    r = simulate(ONE_F_ONE_B_2x2, UNIT, comm=Fraction(1, 2))
    # rank 1 waits c after each F of rank 0; rank 0 waits c after each B of rank 1
    assert times(r) == [
        (0, "0F0", 0, 1), (0, "0F1", 1, 2), (0, "0B0", 5, 7), (0, "0B1", 8, 10),
        (1, "1F0", 1.5, 2.5), (1, "1B0", 2.5, 4.5), (1, "1F1", 4.5, 5.5), (1, "1B1", 5.5, 7.5),
    ]
    assert r.makespan == 10 and isinstance(r.makespan, Fraction)
    assert r.per_rank[1].first_start == Fraction(3, 2)
    assert r.per_rank[1].idle == 4


def test_float_comm_gives_float_results() -> None:
    r = simulate(ONE_F_ONE_B_2x2, UNIT, comm=0.5)
    assert r.makespan == 10.0 and isinstance(r.makespan, float)
    assert isinstance(r.per_rank[0].first_start, float)


def test_v_turn_gets_no_latency() -> None:
    # R=2, M=1, a V: stages 0, 3 on rank 0 and 1, 2 on rank 1; each stage op costs 1/2.
    rows = [[F(0, 0), F(3, 0), I(3, 0), I(0, 0), W(3, 0), W(0, 0)],
            [F(1, 0), F(2, 0), I(2, 0), I(1, 0), W(2, 0), W(1, 0)]]
    s = vshape(rows, 1)
    assert simulate(s, UNIT).makespan == 5
    r = simulate(s, UNIT, comm=Fraction(1, 4))
    # four cross-rank edges on the critical path (0->1, 2->3, 3->2, 1->0); the turns 1->2 and
    # 3 (F) -> 3 (I) are on one rank
    assert r.makespan == 6
    assert dict(zip(r.timeline["action"], r.timeline["start"])) == {
        "0F0": 0, "3F0": 2, "3I0": 2.5, "0I0": 4.5, "3W0": 5, "0W0": 5.5,
        "1F0": 0.75, "2F0": 1.25, "2I0": 3.25, "1I0": 3.75, "2W0": 4.25, "1W0": 4.75,
    }


def test_single_rank_v_ignores_comm_entirely() -> None:
    rows = [[F(0, 0), F(1, 0), I(1, 0), I(0, 0), W(1, 0), W(0, 0)]]
    r = simulate(vshape(rows, 1), UNIT, comm=7)
    assert r.makespan == 3 and r.span == 3 and r.ideal == 3


def test_fb_is_one_unit_and_has_both_halves_in_its_row() -> None:
    s = linear([[F(0, 0), Action.fb(F(0, 1), B(0, 0)), B(0, 1)]], 2)
    r = simulate(s, {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3})
    assert times(r) == [(0, "0F0", 0, 1), (0, "(0F1;0B0)", 1, 4), (0, "0B1", 4, 6)]
    row = r.timeline.iloc[1]
    assert (row["op"], row["stage"], row["microbatch"], row["chain"],
            row["stage2"], row["microbatch2"], row["chain2"]) == ("FB", 0, 1, 0, 0, 0, 0)
    assert r.per_rank[0].peak_activations == 2  # the FB's forward allocates before B0 frees
    assert (r.makespan, r.ideal, r.per_rank[0].idle) == (6, 6, 0)


def test_fb_waits_for_both_halves_inputs() -> None:
    # rank 1's FB needs F(0, 1) from rank 0 (ready at 2) and its own F(1, 0)
    s = linear([[F(0, 0), F(0, 1), B(0, 0), B(0, 1)],
                [F(1, 0), Action.fb(F(1, 1), B(1, 0)), B(1, 1)]], 2)
    r = simulate(s, {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3}, comm=1)
    assert times(r)[4:] == [(1, "1F0", 2, 3), (1, "(1F1;1B0)", 3, 6), (1, "1B1", 6, 8)]
    assert times(r)[2] == (0, "0B0", 7, 9)  # B(1, 0) is available only when the FB ends


def test_frees_come_before_allocations_at_equal_times() -> None:
    r = simulate(linear([[F(0, 0), B(0, 0), F(0, 1), B(0, 1)]], 2), UNIT)
    assert r.per_rank[0].peak_activations == 1
    r = simulate(linear([[F(0, 0), F(0, 1), B(0, 0), B(0, 1)]], 2), UNIT)
    assert r.per_rank[0].peak_activations == 2


def test_i_frees_the_activation_and_w_does_not_need_it() -> None:
    r = simulate(linear([[F(0, 0), I(0, 0), F(0, 1), W(0, 0), I(0, 1), W(0, 1)]], 2), UNIT)
    assert r.per_rank[0].peak_activations == 1
    assert r.makespan == 6


def test_timeline_has_the_design_columns_and_one_row_per_compute_action() -> None:
    r = simulate(ONE_F_ONE_B_2x2, UNIT)
    tl = r.timeline
    assert tuple(tl.columns) == COLUMNS
    assert len(tl) == 8
    assert set(tl["stream"]) == {"compute"} and set(tl["piece"]) == {""}
    assert list(tl["op"]) == ["F", "F", "B", "B", "F", "B", "F", "B"]
    assert list(tl["stage2"]) == [-1] * 8 and list(tl["chain"]) == [0] * 8
    assert str(tl["start"].dtype) == "float64" and str(tl["rank"].dtype) == "int64"


def test_stage_size_scales_costs_exactly() -> None:
    # interleaved-style placement: 3 stages per rank, each op costs 1/3
    s = Schedule("custom", 1, 1, placement.interleaved(1, 3), ((0,),),
                 ((F(0, 0), F(1, 0), F(2, 0), B(2, 0), B(1, 0), B(0, 0)),))
    r = simulate(s, {"F": 1, "I": 1, "W": 1})
    assert r.makespan == 3 and r.per_rank[0].busy == 3
    assert list(r.timeline["end"]) == pytest.approx([1 / 3, 2 / 3, 1, 5 / 3, 7 / 3, 3])
    assert isinstance(r.makespan, Fraction)


def test_lowered_plan_transfers_are_ignored() -> None:
    send, recv = Op.SEND_F, Op.RECV_F
    lowered = linear([[F(0, 0), Action(send, 0, 0), F(0, 1), Action(send, 0, 1),
                       Action(Op.RECV_B, 0, 0), B(0, 0), Action(Op.RECV_B, 0, 1), B(0, 1)],
                      [Action(recv, 1, 0), F(1, 0), B(1, 0), Action(Op.SEND_B, 1, 0),
                       Action(recv, 1, 1), F(1, 1), B(1, 1), Action(Op.SEND_B, 1, 1)]], 2)
    assert times(simulate(lowered, UNIT)) == times(simulate(ONE_F_ONE_B_2x2, UNIT))


def test_cyclic_order_deadlock_names_the_cycle() -> None:
    # rank 0 wants B(0,0) before F(0,1); rank 1 wants F(1,1) before F(1,0)
    s = linear([[F(0, 0), B(0, 0), F(0, 1), B(0, 1)],
                [F(1, 1), F(1, 0), B(1, 0), B(1, 1)]], 2)
    with pytest.raises(ValidationError) as e:
        simulate(s, UNIT)
    assert e.value.message == (
        "rank 1, position 0: 1F1 runs before its input activation from stage 0 (0F1 on rank 0, "
        "position 2) can exist: the plan deadlocks (cycle: rank 1 waits at 1F1 for 0F1 on rank "
        "0, position 2; rank 0 waits at 0B0 for 1B0 on rank 1, position 2); reorder rank 1's "
        "actions or re-emit the plan with `dualsim emit`")
    assert ">1F1<" in e.value.detail


def test_an_incomplete_schedule_is_refused_not_simulated() -> None:
    # 1F1B R=4 M=8 without 0B7: nothing waits for it, so a walk alone would finish at 31
    s = generate("1f1b", 4, 8)
    rows = [list(row) for row in s.actions]
    rows[0].remove(B(0, 7))
    with pytest.raises(ValidationError, match=r"^rank 0, position 11: 0F7 never gets a "
                                              r"backward: 0B7 \(or 0I7 and 0W7\) is missing"):
        simulate(s.with_actions(rows), UNIT)


@pytest.mark.parametrize("rows, message", [
    ([[F(0, 0), B(0, 0), W(0, 0)]], "rank 0, position 2: 0W0 has no input-gradient half to "
                                    "follow: 0B0 is a full backward that computes it already"),
    ([[F(0, 0), F(0, 0), B(0, 0)]], "rank 0, position 1: 0F0 is a second 0F0 (the first is 0F0 "
                                    "at position 0)"),
    ([[F(0, 0), I(0, 0), W(0, 0), W(0, 0)]], "rank 0, position 3: 0W0 is a second 0W0"),
    ([[F(0, 0), I(0, 0), B(0, 0)]], "rank 0, position 2: 0B0 is a second backward of stage 0, "
                                    "micro-batch 0 (the other is 0I0 at position 1)"),
    ([[F(0, 0), F(3, 0)]], "rank 0, position 1: 3F0 names stage 3, but the plan has stages "
                           "0..0"),
    ([[F(0, 0), F(0, 5)]], "rank 0, position 1: 0F5 names micro-batch 5, which is not in "
                           "stage 0's chain"),
    ([[F(0, 0), F(1, 0)], [B(1, 0), B(0, 0)]], "rank 0, position 1: 1F0 is on rank 0, but "
                                               "stage 1 is held by rank 1"),
])
def test_bad_schedules_get_the_validators_error(rows, message) -> None:
    s = linear(rows, 1)
    with pytest.raises(ValidationError) as by_sim:
        simulate(s, UNIT)
    with pytest.raises(ValidationError) as by_validate:
        validate(s)
    assert by_sim.value.message == by_validate.value.message
    assert by_sim.value.message.startswith(message)


def test_a_validated_schedule_is_not_validated_again(monkeypatch) -> None:
    valid = validate(ONE_F_ONE_B_2x2)
    assert isinstance(valid, ValidSchedule) and valid == ONE_F_ONE_B_2x2
    import dualsim.validate as checks

    def refuse(*_: object) -> None:
        raise AssertionError("validated twice")

    monkeypatch.setattr(checks, "check_placement", refuse)
    assert simulate(valid, UNIT).makespan == 9
    with pytest.raises(AssertionError, match="validated twice"):
        simulate(ONE_F_ONE_B_2x2, UNIT)


# ---- costs -------------------------------------------------------------------------------

def test_costs_defaults() -> None:
    assert Costs.of(None).as_dict() == {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3}
    assert Costs.of({"F": 2, "I": 3, "W": 1}).as_dict() == {"F": 2, "I": 3, "W": 1, "B": 4,
                                                           "FB": 6}
    assert Costs.of({"F": 1, "I": 1, "W": 1, "B": 3}).FB == 4
    assert simulate(ONE_F_ONE_B_2x2).makespan == 9


def test_ideal_is_the_mean_busy_time_so_a_given_b_counts() -> None:
    r = simulate(ONE_F_ONE_B_2x2, {"F": 1, "I": 1, "W": 1, "B": 1})
    assert r.makespan == 6  # (M+R-1)(F+B) with B=1
    assert r.per_rank[0].busy == 4 and r.per_rank[0].idle == 2
    assert r.ideal == 4 and 1 - Fraction(r.ideal, r.makespan) == Fraction(1, 3)  # (R-1)/(M+R-1)


@pytest.mark.parametrize("ranks, mbs", [(2, 3), (4, 8), (6, 5)])
def test_1f1b_with_a_given_b_has_the_textbook_bubble(ranks: int, mbs: int) -> None:
    r = simulate(generate("1f1b", ranks, mbs), {"F": 1, "I": 1, "W": 1, "B": 5})
    assert r.makespan == (mbs + ranks - 1) * 6
    assert r.ideal == mbs * 6  # M(F+B), not M(F+I+W)
    assert 1 - Fraction(r.ideal, r.makespan) == Fraction(ranks - 1, mbs + ranks - 1)
    assert "warnings" not in r.extra


def test_ideal_is_exact_when_ranks_do_unequal_work() -> None:
    # rank 0 runs F, B, F, B (2 x (1 + 2)); rank 1 the same: mean busy 6 over 2 ranks
    r = simulate(ONE_F_ONE_B_2x2, {"F": 1, "I": 1, "W": 1, "B": 2})
    assert r.ideal == 6 and isinstance(r.ideal, int)
    uneven = linear([[F(0, 0), B(0, 0)], [F(1, 0), B(1, 0)]], 1)
    r = simulate(uneven, {"F": 1, "I": 1, "W": 1, "B": Fraction(1, 3)})
    assert r.ideal == Fraction(4, 3)


def test_a_b_that_the_schedule_never_runs_is_a_warning() -> None:
    r = simulate(generate("zb-h1", 4, 8), {"F": 1, "I": 1, "W": 1, "B": 5})
    assert r.makespan == 27  # unchanged: ZB-H1 splits every backward into I and W
    assert r.extra["warnings"] == [
        "cost B=5 is not used: the schedule runs no full backward B on its own (it splits every "
        "backward into I and W)"]


def test_an_fb_without_fb_actions_or_above_f_plus_b_is_a_warning() -> None:
    r = simulate(generate("1f1b", 4, 8), {"F": 1, "I": 1, "W": 1, "FB": 1})
    assert r.extra["warnings"] == [
        "cost FB=1 is not used: the schedule runs no overlapped forward+backward pair (DualPipe, "
        "DualPipeV and the -overlap families do)"]
    r = simulate(generate("dualpipe", 4, 8), {"F": 1, "I": 1, "W": 1, "B": 5, "FB": 10})
    assert r.extra["warnings"] == [
        "cost FB=10 is more than F+B=6: an overlapped pair would be slower than its halves one "
        "after the other; FB is the time of the pair with its overlap, normally at most F+B"]
    # DualPipe and DualPipeV run standalone B's too, so a given B is used; FB <= F+B is silent
    for name in ("dualpipe", "dualpipev"):
        assert "warnings" not in simulate(generate(name, 4, 8), FIGURE_COSTS).extra
    # FB and B given to a plan whose every full backward is inside an FB: B is unused
    fb_only = linear([[F(0, 0), Action.fb(F(0, 1), B(0, 0)), B(0, 1)]], 2)
    assert "warnings" not in simulate(fb_only, {"F": 1, "I": 1, "W": 1, "B": 2}).extra
    no_b = linear([[F(0, 0), Action.fb(F(0, 1), B(0, 0)), I(0, 1), W(0, 1)]], 2)
    assert simulate(no_b, FIGURE_COSTS).extra["warnings"] == [
        "cost B=2 is not used: the schedule runs no full backward B on its own (it times its "
        "overlapped pairs by FB)"]
    # without FB given, B sets FB's default, so it is used
    assert "warnings" not in simulate(no_b, {"F": 1, "I": 1, "W": 1, "B": 2}).extra


@pytest.mark.parametrize("costs, match", [
    ({"F": 1, "I": 1}, "missing cost W"),
    ({"F": 1, "I": 1, "W": 1, "X": 1}, "unknown cost name 'X'"),
    ({"F": 0, "I": 1, "W": 1}, "cost F must be greater than zero"),
    ({"F": 1, "I": -1, "W": 1}, "cost I must be greater than zero"),
    ({"F": 1, "I": 1, "W": 1, "FB": float("nan")}, "cost FB must be finite"),
    ({"F": 1, "I": 1, "W": True}, "cost W must be a number"),
    ({"F": "1", "I": 1, "W": 1}, "cost F must be a number"),
    ([1, 1, 1], "costs must be a mapping"),
])
def test_bad_cost_dicts_raise_cost_error(costs, match) -> None:
    with pytest.raises(CostError, match=match):
        simulate(ONE_F_ONE_B_2x2, costs)


def test_negative_comm_is_rejected() -> None:
    with pytest.raises(CostError, match="comm .* must be zero or more"):
        simulate(ONE_F_ONE_B_2x2, UNIT, comm=-1)


def test_parse_costs_keeps_numbers_exact() -> None:
    assert parse_costs("F=1,I=1,W=1") == {"F": 1, "I": 1, "W": 1}
    got = parse_costs(" F = 2 , I=1.5, W=1/3 ,B=2e-1,FB=3")
    assert got == {"F": 2, "I": Fraction(3, 2), "W": Fraction(1, 3), "B": Fraction(1, 5),
                   "FB": 3}
    assert type(got["F"]) is int and type(got["I"]) is Fraction


@pytest.mark.parametrize("text, match", [
    ("", "empty --costs"),
    ("F=1,I=1", "missing cost W"),
    ("F=1,I=1,W=0", "cost W must be greater than zero"),
    ("F=1,I=-2,W=1", "cost I must be greater than zero"),
    ("F=x,I=1,W=1", "bad value 'x' for cost F"),
    ("F=1,I=1,W=1/0", "bad value '1/0' for cost W"),
    ("F=1,I=1,W=inf", "bad value 'inf' for cost W"),
    ("F1,I=1,W=1", "bad --costs entry 'F1': expected NAME=VALUE"),
    ("F=1,,I=1,W=1", "empty entry between commas"),
    ("F=1,F=2,I=1,W=1", "cost F given twice"),
    ("F=1,I=1,W=1,C=2", "unknown cost name 'C'"),
    ("f=1,i=1,w=1", "unknown cost name 'f'"),
])
def test_parse_costs_errors_are_one_line(text, match) -> None:
    with pytest.raises(CostError, match=match) as e:
        parse_costs(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("ranks, mbs", [(1, 3), (2, 2), (3, 5), (4, 8), (6, 4)])
@pytest.mark.parametrize("comm", [Fraction(1, 2), 2])
def test_gpipe_with_latency_pays_it_twice_per_rank_boundary(ranks: int, mbs: int,
                                                            comm: Fraction) -> None:
    # rank r's last F ends at r(F+c) + MF; backwards then flow back one boundary at a time
    r = simulate(generate("gpipe", ranks, mbs), {"F": 1, "I": 2, "W": 1}, comm=comm)
    assert r.makespan == (mbs + ranks - 1) * (1 + 3) + 2 * (ranks - 1) * comm


@pytest.mark.parametrize("name", ["dualpipe", "interleaved", "zb-v"])
def test_fast_timeline_equals_from_rows(name: str) -> None:
    s = generate(name, 4, 8)
    tl = simulate(s, {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3}).timeline
    when = {(r, a): (t0, t1) for r, a, t0, t1 in zip(tl["rank"], tl["action"], tl["start"],
                                                      tl["end"])}
    rows = []
    for r, _, a in s.iter_actions():
        op, stage, mb, chain, stage2, mb2, chain2, text = action_fields(s, a)
        rows.append((r, "compute", op, stage, mb, chain, stage2, mb2, chain2, "",
                     *when[(r, text)], text))
    pd.testing.assert_frame_equal(tl, from_rows(rows))


def test_timeline_is_built_once_and_survives_pickle_and_replace() -> None:
    r = simulate(ONE_F_ONE_B_2x2, UNIT)
    assert r.timeline is r.timeline
    fresh = simulate(ONE_F_ONE_B_2x2, UNIT)
    copy = pickle.loads(pickle.dumps(fresh))  # builds the timeline before pickling
    pd.testing.assert_frame_equal(copy.timeline, r.timeline)
    assert (copy.makespan, copy.per_rank) == (r.makespan, r.per_rank)
    moved = dataclasses.replace(r, makespan=10)
    assert moved.makespan == 10 and moved.timeline is r.timeline


def test_costs_value_type_validates_itself() -> None:
    assert Costs(1, 2, 1, 3, Fraction(7, 2)).FB == Fraction(7, 2)
    with pytest.raises(CostError, match="cost B must be greater than zero"):
        Costs(1, 1, 1, 0, 2)
    with pytest.raises(CostError, match="cost B must be a number"):
        Costs.of({"F": 1, "I": 1, "W": 1, "B": "2"})


@pytest.mark.parametrize("name, mbs", [("zb-v", 3), ("dualpipev", 4)])
def test_one_rank_v_families_pay_no_latency(name: str, mbs: int) -> None:
    s = generate(name, 1, mbs)
    assert simulate(s, FIGURE_COSTS, comm=5).makespan == simulate(s, FIGURE_COSTS).makespan \
        == 3 * mbs


@pytest.mark.parametrize(("text", "shown"), [("F=1e308,I=1,W=1", "got 1e+308"),
                                             ("F=1,I=1,W=1e400", "too large for a float"),
                                             ("F=1,I=1,W=2000000000000000", "got 2e+15")])
def test_absurdly_large_costs_are_refused_not_a_float_overflow(text: str, shown: str) -> None:
    with pytest.raises(CostError, match=r"must be at most 1e\+15") as e:
        parse_costs(text)
    assert shown in e.value.message and "Fraction" not in e.value.message
    with pytest.raises(CostError, match="at most"):
        simulate(generate("1f1b", 2, 2), costs={"F": 1, "I": 1, "W": 1}, comm=1e16)


def test_largest_allowed_cost_still_simulates_exactly() -> None:
    r = simulate(generate("1f1b", 4, 8), costs=parse_costs("F=1e12,I=1e12,W=1e12"))
    assert r.makespan == 33 * 10**12  # (M+R-1)(F+B)
    assert r.to_dict()["makespan"] == 33e12


@pytest.mark.parametrize("text, message", [
    ("F=5e-324,I=1,W=1", "cost F must be at least 1e-09, got 4.94066e-324; scale all costs up "
                         "together"),
    ("F=1,I=1/3000000000000000,W=1", "cost I must be at least 1e-09, got 3.33333e-16"),
    ("F=1,I=1,W=0.1234567890123456789", "cost W must have at most 12 decimal places (or a "
                                        "denominator of at most 10^12), got 0.123457"),
])
def test_costs_too_small_or_too_fine_for_a_time_base(text: str, message: str) -> None:
    # 5e-324 used to give a time base of 10^324 and an OverflowError converting it to float
    with pytest.raises(CostError) as e:
        parse_costs(text)
    assert e.value.message.startswith(message)


def test_tiny_float_costs_and_latency_are_refused_not_underflowed() -> None:
    # 5e-324 x a V's stage size 1/2 underflows to 0: a step of no time, a bubble of 0/0
    with pytest.raises(CostError, match="cost F must be at least 1e-09"):
        simulate(generate("zb-v", 2, 4), {"F": 5e-324, "I": 1, "W": 1})
    with pytest.raises(CostError, match=r"comm \(the cross-rank latency\) must be at least "
                                        r"1e-09 \(or 0\)"):
        simulate(generate("zb-v", 2, 4), UNIT, comm=5e-324)
    r = simulate(generate("zb-v", 2, 4), {"F": Fraction(1, 10**9), "I": 1, "W": 1})
    assert r.makespan > 0
