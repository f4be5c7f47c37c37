"""The IR: the action string form round-trips, plans round-trip through JSON, placement helpers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualsim.errors import PlanError
from dualsim.generators import FAMILIES, generate
from dualsim.ir import B, F, I, W, Action, Op, Schedule

SINGLE_OPS = ["F", "I", "W", "B", "SEND_F", "RECV_F", "SEND_B", "RECV_B"]


@pytest.mark.parametrize("text,op,stage,mb", [
    ("0F3", Op.F, 0, 3), ("7I12", Op.I, 7, 12), ("5W0", Op.W, 5, 0), ("2B9", Op.B, 2, 9),
    ("3SEND_F1", Op.SEND_F, 3, 1), ("4RECV_F1", Op.RECV_F, 4, 1),
    ("4SEND_B1", Op.SEND_B, 4, 1), ("3RECV_B1", Op.RECV_B, 3, 1),
])
def test_single_actions_parse_and_print(text: str, op: Op, stage: int, mb: int) -> None:
    a = Action.parse(text)
    assert (a.op, a.stage, a.microbatch, a.pair) == (op, stage, mb, None)
    assert str(a) == text


def test_overlapped_pair() -> None:
    a = Action.parse("(0F7;7B3)")
    assert a.op is Op.FB and (a.stage, a.microbatch) == (0, 7)
    assert a.parts == (F(0, 7), B(7, 3))
    assert (a.forward, a.backward) == (F(0, 7), B(7, 3))
    assert str(a) == "(0F7;7B3)"


@given(st.sampled_from(SINGLE_OPS), st.integers(0, 10**6), st.integers(0, 10**6))
def test_string_form_round_trips(op: str, stage: int, mb: int) -> None:
    text = f"{stage}{op}{mb}"
    assert str(Action.parse(text)) == text


@given(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999), st.integers(0, 999))
def test_pair_round_trips(s1: int, m1: int, s2: int, m2: int) -> None:
    text = f"({s1}F{m1};{s2}B{m2})"
    assert str(Action.parse(text)) == text


@pytest.mark.parametrize("bad", ["", "F3", "0X3", "0F", "-1F2", "(0F1;1I2)", "(0B1;1F2)",
                                 "0F3 1F4", "(0F1)"])
def test_bad_strings_are_plan_errors(bad: str) -> None:
    with pytest.raises(PlanError, match="cannot parse action"):
        Action.parse(bad)


def test_fb_needs_forward_and_full_backward() -> None:
    with pytest.raises(ValueError, match="pairs an F with a B"):
        Action.fb(F(0, 1), I(1, 0))
    assert W(0, 1) != I(0, 1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_plan_json_round_trips(family: str) -> None:
    s = generate(family, 4, 8)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["format"] == "dualsim-plan" and d["version"] == 1
    assert Schedule.from_dict(d) == s


def test_placement_helpers_for_dualpipe() -> None:
    s = generate("dualpipe", 4, 8)
    assert [s.rank_of(st_) for st_ in range(8)] == [0, 1, 2, 3, 3, 2, 1, 0]
    assert s.chain_stages(1) == [4, 5, 6, 7]
    assert (s.next_stage(3), s.prev_stage(0), s.next_stage(4), s.prev_stage(5)) == (None, None, 5, 4)
    assert s.stages_of_rank(1) == [1, 6]
    assert (s.chain_of_microbatch(3), s.chain_of_microbatch(4)) == (0, 1)
    assert s.stage_size == 1


def test_stage_size_of_v_and_interleaved() -> None:
    assert generate("zb-v", 4, 8).stage_size == 0.5
    assert generate("interleaved", 4, 8, 3).stage_size == pytest.approx(1 / 3)


def test_compute_only_strips_transfers() -> None:
    from dualsim.lower import lower

    s = generate("1f1b", 2, 2)
    lowered = lower(s)
    assert lowered.is_lowered and not s.is_lowered
    assert lowered.compute_only().actions == s.actions


def test_grid_marks_the_step() -> None:
    s = generate("1f1b", 2, 3)
    assert s.grid(mark=(1, 2)) == (
        "rank | 0     1     2     3     4     5     \n"
        "   0 | 0F0   0F1   0B0   0F2   0B1   0B2\n"
        "   1 | 1F0   1B0   >1F1< 1B1   1F2   1B2")
