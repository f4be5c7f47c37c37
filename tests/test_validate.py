"""The validator: placement, counts, unknown actions, transfers, deadlock cycles and messages.

Small plans are written by hand in the string form of docs/schedules.md so that every expected
message can be checked word for word; the generated families are checked at a few sizes.
"""

from __future__ import annotations

import pytest

from dualsim.errors import ValidationError
from dualsim.generators import FAMILIES, generate
from dualsim.generators import placement
from dualsim.ir import Action, Schedule, Stage
from dualsim.lower import lower
from dualsim.validate import dependency_graph, validate

FIX = "re-emit the plan with `dualsim emit`"
GOOD = ["0F0 0F1 0B0 0B1", "1F0 1B0 1F1 1B1"]  # 1F1B, R=2, M=2


def linear(rows: list[str], ranks: int = 2, mbs: int = 2) -> Schedule:
    return Schedule("hand", ranks, mbs, placement.linear(ranks), (tuple(range(mbs)),),
                    tuple(tuple(Action.parse(a) for a in row.split()) for row in rows))


def edited(s: Schedule, rank: int, row: str) -> Schedule:
    rows = [list(r) for r in s.actions]
    rows[rank] = [Action.parse(a) for a in row.split()]
    return s.with_actions(rows)


def error(s: Schedule) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate(s)
    return info.value


def message(s: Schedule) -> str:
    return error(s).message


# ---- valid plans ---------------------------------------------------------------------------


def test_hand_written_plans_are_valid() -> None:
    validate(linear(GOOD))
    validate(linear(["0F0 0F1 0I0 0W0 0I1 0W1", "1F0 1I0 1F1 1I1 1W1 1W0"]))
    validate(linear(["0F0 0F1 0B0 0B1", "1F0 (1F1;1B0) 1B1"]))  # an FB of two micro-batches


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_is_valid_computed_and_lowered(name: str) -> None:
    for r, m in [(2, 4), (4, 8), (4, 12)]:
        s = generate(name, r, m)
        validate(s)
        validate(lower(s))


# ---- placement and shape -------------------------------------------------------------------


def test_placement_rank_out_of_range() -> None:
    s = linear(GOOD)
    bad = Schedule("hand", 2, 2, (Stage(0, 0, 0, 0), Stage(1, 5, 0, 1)), s.chains, s.actions)
    assert message(bad) == ("stage 1 is placed on rank 5, but the plan has ranks 0..1; " + FIX)


def test_placement_chain_positions() -> None:
    s = linear(GOOD)
    bad = Schedule("hand", 2, 2, (Stage(0, 0, 0, 0), Stage(1, 1, 0, 0)), s.chains, s.actions)
    assert message(bad) == "chain 0 has stage positions [0, 0], expected 0..0 once each; " + FIX


def test_placement_stage_numbers() -> None:
    s = linear(GOOD)
    bad = Schedule("hand", 2, 2, (Stage(0, 0, 0, 0), Stage(2, 1, 0, 1)), s.chains, s.actions)
    assert message(bad) == "plan stages must be numbered 0..1 once each, got [0, 2]; " + FIX


def test_placement_needs_stages_and_known_chains() -> None:
    s = linear(GOOD)
    assert message(Schedule("hand", 2, 2, (), s.chains, s.actions)) == (
        "plan has 0 stages and 1 chains; it needs at least one of each; " + FIX)
    bad = Schedule("hand", 2, 2, (Stage(0, 0, 0, 0), Stage(1, 1, 3, 1)), s.chains, s.actions)
    assert message(bad) == "stage 1 is in chain 3, but the plan has chains 0..0; " + FIX


def test_chains_must_split_the_microbatches() -> None:
    s = linear(GOOD)
    bad = Schedule("hand", 2, 2, s.stages, ((0, 0),), s.actions)
    assert message(bad) == ("the chains must split micro-batches 0..1 among them, each once; "
                            "got [0, 0]; " + FIX)


def test_ranks_disagree_with_action_lists() -> None:
    e = error(linear(["0F0 0F1 0B0 0B1"]))
    assert e.message == "plan says ranks=2 but has action lists for 1 rank; " + FIX
    assert e.detail is None


# ---- unknown, misplaced, duplicate and missing actions ----------------------------------


@pytest.mark.parametrize(("row", "expected"), [
    ("1F0 1B0 2F1 1B1", "rank 1, position 2: 2F1 names stage 2, but the plan has stages 0..1; "),
    ("1F0 1B0 1F2 1B1", "rank 1, position 2: 1F2 names micro-batch 2, which is not in stage 1's "
                        "chain (chain 0: micro-batches 0..1); "),
    ("1F0 1B0 0F1 1B1", "rank 1, position 2: 0F1 is on rank 1, but stage 0 is held by rank 0; "),
    ("1F0 1B0 1F1 1B1 1F0", "rank 1, position 4: 1F0 is a second 1F0 (the first is 1F0 at "
                            "position 0): each (stage, micro-batch) runs each op once; "),
    ("1F0 1B0 1F1 1I1 1B1", "rank 1, position 4: 1B1 is a second backward of stage 1, "
                            "micro-batch 1 (the other is 1I1 at position 3); use either one B "
                            "or one I and one W; "),
    ("1F0 1B0 1F1 1B1 1W1", "rank 1, position 4: 1W1 has no input-gradient half to follow: 1B1 "
                            "is a full backward that computes it already; "),
    ("1F0 1B0 1F1 1W1", "rank 1, position 3: 1W1 has no input-gradient half to follow: 1I1 is "
                        "missing; "),
    ("1F0 1B0 1B1", "rank 1, position 2: 1B1 has no forward: 1F1 is missing from rank 1; "),
    ("1F0 1B0 1F1", "rank 1, position 2: 1F1 never gets a backward: 1B1 (or 1I1 and 1W1) is "
                    "missing; "),
    ("1F0 1B0 1F1 1I1", "rank 1, position 3: 1I1 never gets its weight gradient: 1W1 is "
                        "missing; "),
    ("1F0 1B0", "rank 1: 1F1 and its backward are missing (stage 1 must run micro-batch 1); "),
])
def test_bad_actions(row: str, expected: str) -> None:
    assert message(edited(linear(GOOD), 1, row)) == expected + FIX


def test_error_detail_is_the_marked_grid() -> None:
    e = error(edited(linear(GOOD), 1, "1F0 1B0 2F1 1B1"))
    assert e.detail == ("rank | 0     1     2     3     \n"
                        "   0 | 0F0   0F1   0B0   0B1\n"
                        "   1 | 1F0   1B0   >2F1< 1B1")


def test_fb_half_is_named() -> None:
    s = edited(linear(GOOD), 1, "1F0 (1F1;1B0) 1B1 1F1")
    assert message(s) == ("rank 1, position 3: 1F1 is a second 1F1 (the first is 1F1 in "
                          "(1F1;1B0) at position 1): each (stage, micro-batch) runs each op once; "
                          + FIX)


# ---- deadlocks ------------------------------------------------------------------------------


def test_backward_before_its_forward_on_one_rank() -> None:
    e = error(edited(linear(GOOD), 1, "1F0 1B0 1B1 1F1"))
    assert e.message == ("rank 1, position 2: 1B1 runs before its forward 1F1 at position 3: "
                         "the plan deadlocks (cycle: rank 1 waits at 1B1 for 1F1 on rank 1, "
                         "position 3); reorder rank 1's actions or " + FIX)
    assert ">1B1<" in (e.detail or "")


def test_cross_rank_cycle() -> None:
    s = linear(["0F0 0B0 0F1 0B1", "1F0 1F1 1B0 1B1"])
    assert message(s) == (
        "rank 0, position 1: 0B0 runs before its input gradient from stage 1 (1B0 on rank 1, "
        "position 2) can exist: the plan deadlocks (cycle: rank 0 waits at 0B0 for 1B0 on "
        "rank 1, position 2; rank 1 waits at 1F1 for 0F1 on rank 0, position 2); reorder "
        "rank 0's actions or " + FIX)


def test_fb_outputs_exist_only_when_it_ends() -> None:
    # as separate actions 1F0 then 1B0 would be fine; as one FB the B half needs its own F half
    validate(edited(linear(GOOD), 1, "1F0 1B0 1F1 1B1"))
    assert message(edited(linear(GOOD), 1, "(1F0;1B0) 1F1 1B1")) == (
        "rank 1, position 0: (1F0;1B0) needs its own output: 1B0 needs 1F0, and an FB's results "
        "exist only when the whole FB ends: the plan deadlocks (cycle: rank 1 waits at "
        "(1F0;1B0) for 1F0 in (1F0;1B0) on rank 1, position 0); reorder rank 1's actions or "
        + FIX)


def test_weight_gradient_before_its_input_gradient() -> None:
    s = linear(["0F0 0F1 0W0 0I0 0B1", "1F0 1B0 1F1 1B1"])
    assert message(s) == ("rank 0, position 2: 0W0 runs before 0I0 at position 3: a W needs its "
                          "I first: the plan deadlocks (cycle: rank 0 waits at 0W0 for 0I0 on "
                          "rank 0, position 3); reorder rank 0's actions or " + FIX)


# ---- transfers in lowered plans -----------------------------------------------------------

LOWERED = ["0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1",
           "1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1"]


def test_hand_lowered_plan_equals_lower() -> None:
    validate(linear(LOWERED))
    assert lower(linear(GOOD)) == linear(LOWERED)


@pytest.mark.parametrize(("rank", "row", "expected"), [
    (1, "1RECV_F0 1F0 1B0 1SEND_B0 1F1 1B1 1SEND_B1",
     "rank 1, position 4: 1F1 needs stage 0's output from rank 0, but rank 1 has no 1RECV_F1; "),
    (0, "0F0 0SEND_F0 0F1 0RECV_B0 0B0 0RECV_B1 0B1",
     "rank 0, position 2: 0F1's output goes to stage 1 on rank 1, but rank 0 has no 0SEND_F1; "),
    (1, "1RECV_F1 1F0 1B0 1SEND_B0 1RECV_F0 1F1 1B1 1SEND_B1",
     "rank 1, position 0: 1RECV_F1 is receive #1 of rank 1 from rank 0, but send #1 of rank 0 "
     "to rank 1 is 0SEND_F0 (position 1): messages between two ranks are matched in posting "
     "order; "),
    (0, "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1 0SEND_F1",
     "rank 0, position 8: 0SEND_F1 is a second 0SEND_F1 (the first is 0SEND_F1 at position 3): "
     "each (stage, micro-batch) runs each op once; "),
    (0, "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1 0RECV_F1",
     "rank 0, position 8: 0RECV_F1 receives an activation of stage 0, the first stage of its "
     "chain: no stage is on the other end; "),
    (1, "1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1 1SEND_F1",
     "rank 1, position 8: 1SEND_F1 sends an activation of stage 1, the last stage of its chain: "
     "no stage is on the other end; "),
    (0, "0SEND_F0 0F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1",
     "rank 0, position 0: 0SEND_F0 sends the output of 0F0 at position 1 before it exists: the "
     "plan deadlocks (cycle: rank 0 waits at 0SEND_F0 for 0F0 on rank 0, position 1); reorder "
     "rank 0's actions or "),
    (1, "1RECV_F0 1F0 1RECV_F1 1F1 1B0 1SEND_B0 1B1 1SEND_B1", None),
])
def test_bad_transfers(rank: int, row: str, expected: str | None) -> None:
    s = edited(linear(LOWERED), rank, row)
    if expected is None:
        validate(s)  # receiving early is fine
    else:
        assert message(s) == expected + FIX


def test_cross_rank_cycle_through_transfers() -> None:
    s = linear(["0F0 0SEND_F0 0RECV_B0 0B0 0F1 0SEND_F1 0RECV_B1 0B1",
                "1RECV_F0 1F0 1RECV_F1 1F1 1B0 1SEND_B0 1B1 1SEND_B1"])
    assert message(s) == (
        "rank 0, position 2: 0RECV_B0 waits for 1SEND_B0 on rank 1, position 5, which cannot be "
        "posted before it: the plan deadlocks (cycle: rank 0 waits at 0RECV_B0 for 1SEND_B0 on "
        "rank 1, position 5; rank 1 waits at 1RECV_F1 for 0SEND_F1 on rank 0, position 5); "
        "reorder rank 0's actions or " + FIX)


def test_same_rank_turn_takes_no_transfer() -> None:
    v = lower(generate("zb-v", 2, 3))
    bad = edited(v, 1, "1SEND_F0 " + " ".join(map(str, v.actions[1])))
    assert message(bad) == ("rank 1, position 0: 1SEND_F0 sends an activation between stages 1 "
                            "and 2, both on rank 1: a same-rank dependency takes no transfer; "
                            + FIX)


# ---- the dependency graph -------------------------------------------------------------------


def test_dependency_graph_of_compute_plan() -> None:
    g = dependency_graph(linear(GOOD))
    assert g.nodes[(1, 2)]["action"] == Action.parse("1F1")
    deps = sorted((u, v, d["rule"]) for u, v, d in g.edges(data=True) if d["rule"] != "order")
    assert deps == [
        ((0, 0), (0, 2), "forward"), ((0, 0), (1, 0), "activation"),
        ((0, 1), (0, 3), "forward"), ((0, 1), (1, 2), "activation"),
        ((1, 0), (1, 1), "forward"), ((1, 1), (0, 2), "gradient"),
        ((1, 2), (1, 3), "forward"), ((1, 3), (0, 3), "gradient"),
    ]
    # 6 per-rank order edges, two of which are also dependencies (then named by the rule)
    assert sorted(e for e in g.edges if g.edges[e]["rule"] == "order") == [
        ((0, 0), (0, 1)), ((0, 1), (0, 2)), ((0, 2), (0, 3)), ((1, 1), (1, 2))]


def test_dependency_graph_tolerates_unknown_stages() -> None:
    g = dependency_graph(linear(["0F0 0F1 0B0 0B1", "1F0 1B0 1F1 1B1 7F0"]))
    assert g.nodes[(1, 4)]["action"] == Action.parse("7F0")
    assert list(g.predecessors((1, 4))) == [(1, 3)]


def test_dependency_graph_of_lowered_plan() -> None:
    g = dependency_graph(linear(LOWERED))
    deps = sorted((u, v, d["rule"]) for u, v, d in g.edges(data=True) if d["rule"] != "order")
    assert deps == [
        ((0, 0), (0, 1), "send"), ((0, 0), (0, 5), "forward"), ((0, 1), (1, 0), "match"),
        ((0, 2), (0, 3), "send"), ((0, 2), (0, 7), "forward"), ((0, 3), (1, 4), "match"),
        ((0, 4), (0, 5), "recv"), ((0, 6), (0, 7), "recv"),
        ((1, 0), (1, 1), "recv"), ((1, 1), (1, 2), "forward"), ((1, 2), (1, 3), "send"),
        ((1, 3), (0, 4), "match"), ((1, 4), (1, 5), "recv"), ((1, 5), (1, 6), "forward"),
        ((1, 6), (1, 7), "send"), ((1, 7), (0, 6), "match"),
    ]


# ---- the fast pass (a checking walk) agrees with the ordered checks -------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dualsim.ir import B as B_, I as I_, W as W_  # noqa: E402
from dualsim.validate import Plan, ValidSchedule, explain  # noqa: E402

SMALL = [("1f1b", 3, 4), ("zb-h1", 3, 4), ("zb-v", 2, 3), ("interleaved", 2, 4),
         ("dualpipe", 2, 4), ("dualpipev", 2, 4)]


@st.composite
def mutated(draw: st.DrawFn) -> Schedule:
    """A small generated schedule, maybe lowered, with one or two random edits."""
    name, r, m = draw(st.sampled_from(SMALL))
    s = generate(name, r, m)
    if draw(st.booleans()):
        s = lower(s)
    rows = [list(row) for row in s.actions]
    for _ in range(draw(st.integers(1, 2))):
        rank = draw(st.integers(0, len(rows) - 1))
        row = rows[rank]
        if not row:
            continue
        i = draw(st.integers(0, len(row) - 1))
        kind = draw(st.sampled_from(["drop", "copy", "move", "swap", "microbatch", "split"]))
        a = row[i]
        if kind == "drop":
            del row[i]
        elif kind == "copy":
            row.insert(draw(st.integers(0, len(row))), a)
        elif kind == "move":
            del row[i]
            rows[(rank + 1) % len(rows)].insert(0, a)
        elif kind == "swap":
            j = draw(st.integers(0, len(row) - 1))
            row[i], row[j] = row[j], row[i]
        elif kind == "microbatch" and a.pair is None:
            row[i] = Action(a.op, a.stage, (a.microbatch + 1) % (m + 1))
        elif kind == "split" and a.op.value == "B":
            row[i:i + 1] = [I_(a.stage, a.microbatch), W_(a.stage, a.microbatch)]
        elif kind == "split" and a.op.value == "I":
            row[i] = B_(a.stage, a.microbatch)
    return s.with_actions(rows)


def outcome(check, s: Schedule) -> str:
    try:
        check(s)
    except ValidationError as e:
        return e.message
    return "valid"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=mutated())
def test_validate_accepts_exactly_what_the_ordered_checks_accept(s: Schedule) -> None:
    got = outcome(validate, s)
    assert got == outcome(explain, s)
    if got == "valid":
        v = validate(s)
        assert isinstance(v, ValidSchedule) and v == s
        assert isinstance(v, Plan) == (s.is_lowered or s.ranks == 1)


def test_mutations_find_both_verdicts() -> None:
    """The mutation strategy above reaches valid and invalid schedules alike."""
    seen: set[bool] = set()

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(s=mutated())
    def collect(s: Schedule) -> None:
        seen.add(outcome(validate, s) == "valid")

    collect()
    assert seen == {True, False}
