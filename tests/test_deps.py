"""The dependency rules (dualsim/deps.py): what each action makes and needs, the handoffs, and
the compiled slot tables the hot loops use, checked against the readable rules."""

from __future__ import annotations

import pytest

from dualsim.deps import (MADE_BY, MAKES, Handoff, Key, Kind, Need, Neighbours, compile_rules,
                          destination, handoffs, makes, needs, unit_needs)
from dualsim.generators import generate, placement
from dualsim.ir import Action, B, F, I, Op, Schedule, W

FWD, BWD, DEF, WGT = Kind.FORWARD, Kind.BACKWARD, Kind.DEFERRED, Kind.WEIGHT


def vee(ranks: int, mbs: int) -> Schedule:
    """A V placement (stage s on rank s, or 2R-1-s) with no actions: only its tables matter."""
    return Schedule("v", ranks, mbs, placement.vshape(ranks), (tuple(range(mbs)),),
                    tuple(() for _ in range(ranks)))


def test_neighbours_of_a_v() -> None:
    nb = Neighbours.of(vee(2, 1))
    assert nb == Neighbours(rank=(0, 1, 1, 0), prev=(-1, 0, 1, 2), next=(1, 2, 3, -1))


def test_what_compute_actions_make() -> None:
    assert makes(F(3, 5)) == (Key(FWD, 3, 5),)
    assert makes(B(3, 5)) == (Key(BWD, 3, 5),)
    assert makes(I(3, 5)) == (Key(BWD, 3, 5), Key(DEF, 3, 5))
    assert makes(W(3, 5)) == (Key(WGT, 3, 5),)
    assert makes(Action(Op.SEND_B, 2, 1)) == (Key(Kind.SENT_B, 2, 1),)
    assert MADE_BY[BWD] == (Op.B, Op.I) and MADE_BY[DEF] == (Op.I,)
    assert Op.FB not in MAKES


def test_what_compute_actions_need_on_a_v() -> None:
    nb = Neighbours.of(vee(2, 4))  # stages 0, 3 on rank 0; 1, 2 on rank 1
    assert needs(F(0, 2), nb) == ()
    assert needs(F(1, 2), nb) == (Need(Key(FWD, 0, 2), "activation", True),)
    assert needs(F(2, 2), nb) == (Need(Key(FWD, 1, 2), "activation", False),)  # the turn
    assert needs(B(3, 2), nb) == (Need(Key(FWD, 3, 2), "forward", False),)  # last: no gradient
    assert needs(I(1, 2), nb) == (Need(Key(FWD, 1, 2), "forward", False),
                                  Need(Key(BWD, 2, 2), "gradient", False))
    assert needs(B(0, 2), nb) == (Need(Key(FWD, 0, 2), "forward", False),
                                  Need(Key(BWD, 1, 2), "gradient", True))
    assert needs(W(2, 2), nb) == (Need(Key(DEF, 2, 2), "weight", False),)


def test_lowered_needs_go_through_transfers() -> None:
    nb = Neighbours.of(vee(2, 4))
    assert needs(F(1, 0), nb, lowered=True) == (Need(Key(Kind.RECEIVED_F, 1, 0), "recv", False),)
    assert needs(F(2, 0), nb, lowered=True) == (Need(Key(FWD, 1, 0), "activation", False),)
    assert needs(B(0, 0), nb, lowered=True)[1] == Need(Key(Kind.RECEIVED_B, 0, 0), "recv", False)
    assert needs(Action(Op.SEND_F, 0, 3), nb, lowered=True) == (
        Need(Key(FWD, 0, 3), "send", False),)
    assert needs(Action(Op.SEND_B, 1, 3), nb, lowered=True) == (
        Need(Key(BWD, 1, 3), "send", False),)
    assert needs(Action(Op.RECV_F, 1, 3), nb, lowered=True) == (
        Need(Key(Kind.SENT_F, 0, 3), "match", True),)
    assert needs(Action(Op.RECV_B, 0, 3), nb, lowered=True) == (
        Need(Key(Kind.SENT_B, 1, 3), "match", True),)


def test_an_fb_needs_what_its_halves_need_forward_first() -> None:
    nb = Neighbours.of(vee(2, 4))
    fb = Action.fb(F(1, 3), B(2, 0))
    assert unit_needs(fb, nb) == [(F(1, 3), Need(Key(FWD, 0, 3), "activation", True)),
                                  (B(2, 0), Need(Key(FWD, 2, 0), "forward", False)),
                                  (B(2, 0), Need(Key(BWD, 3, 0), "gradient", True))]
    with pytest.raises(ValueError, match="ask about its halves"):
        needs(fb, nb)


def test_destination_is_the_neighbour_that_needs_a_key() -> None:
    nb = Neighbours.of(vee(2, 1))
    assert [destination(Key(FWD, s, 0), nb) for s in range(4)] == [1, 2, 3, -1]
    assert [destination(Key(BWD, s, 0), nb) for s in range(4)] == [-1, 0, 1, 2]
    assert destination(Key(DEF, 1, 0), nb) == -1


def test_handoffs_of_1f1b_three_ranks() -> None:
    got = list(handoffs(generate("1f1b", 3, 2)))
    want = []
    for a in (0, 1):
        for m in (0, 1):
            want.append(Handoff(Key(FWD, a, m), Key(FWD, a + 1, m), Key(Kind.SENT_F, a, m),
                                Key(Kind.RECEIVED_F, a + 1, m), a, a + 1))
            want.append(Handoff(Key(BWD, a + 1, m), Key(BWD, a, m),
                                Key(Kind.SENT_B, a + 1, m), Key(Kind.RECEIVED_B, a, m), a + 1, a))
    assert got == want
    assert [h.piece for h in got[:2]] == ["pp_fwd", "pp_bwd"]


def test_handoffs_skip_the_turn_of_a_v_and_follow_both_dualpipe_chains() -> None:
    v = list(handoffs(generate("zb-v", 2, 3)))
    assert {(h.producer.stage, h.consumer.stage) for h in v} == {(0, 1), (1, 0), (2, 3), (3, 2)}
    assert len(v) == 4 * 3
    dp = list(handoffs(generate("dualpipe", 2, 4)))
    # chain 0 (mbs 0, 1): stage 0 on rank 0 -> stage 1 on rank 1; chain 1 (mbs 2, 3): 2 -> 3,
    # stage 2 on rank 1 -> stage 3 on rank 0
    assert [(h.producer, h.src, h.dst) for h in dp if h.producer.kind is FWD] == [
        (Key(FWD, 0, 0), 0, 1), (Key(FWD, 0, 1), 0, 1),
        (Key(FWD, 2, 2), 1, 0), (Key(FWD, 2, 3), 1, 0)]


@pytest.mark.parametrize("name", ["1f1b", "interleaved", "zb-h1", "zb-v", "dualpipe",
                                  "dualpipev"])
@pytest.mark.parametrize("lowered", [False, True])
def test_compiled_slots_equal_the_rules_for_every_action(name: str, lowered: bool) -> None:
    s = generate(name, 4, 8)
    if lowered:
        from dualsim.lower import lower

        s = lower(s)
    nb = Neighbours.of(s)
    rules = compile_rules(s, lowered)
    assert rules.size == len(Kind) * s.num_stages * s.microbatches
    seen = 0
    for _, _, unit in s.iter_actions():
        for p in unit.parts:
            if p.op.is_transfer and not lowered:
                continue
            m = p.microbatch
            assert [(base + m, cross) for base, cross in rules.needs[p.op][p.stage]] == \
                [(rules.slot(n.key), n.cross) for n in needs(p, nb, lowered)]
            assert [base + m for base in rules.makes[p.op][p.stage]] == \
                [rules.slot(k) for k in makes(p)]
            assert [rules.key(base + m) for base in rules.makes[p.op][p.stage]] == list(makes(p))
            seen += 1
    pairs = s.chain_length * sum(len(mbs) for mbs in s.chains)
    assert seen >= 2 * pairs  # at least an F and a backward per (stage, micro-batch)


def test_slots_are_distinct_for_distinct_keys() -> None:
    s = generate("zb-v", 2, 3)
    rules = compile_rules(s)
    keys = [Key(k, st, m) for k in Kind for st in range(4) for m in range(3)]
    assert sorted(rules.slot(k) for k in keys) == list(range(rules.size))
    assert all(rules.key(rules.slot(k)) == k for k in keys)


def test_walk_takes_per_unit_durations_and_a_rank_latency_table() -> None:
    from fractions import Fraction

    from dualsim.validate import validate
    from dualsim.walk import ZERO, walk

    s = validate(generate("1f1b", 2, 2))  # rank 0: 0F0 0F1 0B0 0B1; rank 1: 1F0 1B0 1F1 1B1
    rules = compile_rules(s)
    durations = [[1, 2, 3, 4], [5, 6, 7, 8]]
    latency = [[0, Fraction(1, 2)], [3, 0]]  # rank 0 -> 1: 1/2, rank 1 -> 0: 3
    w = walk(s, rules, ZERO, latency, unit_durations=durations)
    # 1F0 at 0F0's end 1 + 1/2; 1B0 right after; 1F1 when rank 1 is free (12.5); 0B0 at 1B0's
    # end 12.5 + 3, 0B1 at 1B1's end 27.5 + 3
    assert w.starts == [[0, 1, Fraction(31, 2), Fraction(61, 2)],
                        [Fraction(3, 2), Fraction(13, 2), Fraction(25, 2), Fraction(39, 2)]]
    assert w.ends[1][-1] == Fraction(55, 2) and w.busy == [10, 26]
    assert w.allocs == [[0, 1], [Fraction(3, 2), Fraction(25, 2)]]
