"""Lowering: SEND/RECV insertion for every family, transfer counts, placement and pair order.

The checks recount transfers from the placement table and replay the NCCL matching rule
(receive #k between two ranks takes send #k) independently of dualsim.validate.
"""

from __future__ import annotations

import pytest

from dualsim.errors import ValidationError
from dualsim.generators import FAMILIES, generate
from dualsim.ir import Action, Op, Schedule
from dualsim.lower import lower
from dualsim.validate import validate

SIZES = {
    "gpipe": [(1, 1), (2, 3), (4, 8), (5, 7)],
    "1f1b": [(1, 3), (2, 3), (4, 8), (5, 3)],
    "1f1b-overlap": [(1, 3), (2, 4), (4, 8), (5, 3), (5, 12)],
    "interleaved": [(2, 2), (3, 6), (4, 8)],
    "interleaved-overlap": [(2, 2), (3, 6), (4, 8), (4, 4)],
    "zb-h1": [(2, 3), (4, 8), (5, 7)],
    "zb-h2": [(2, 3), (4, 8), (5, 9)],
    "zb-v": [(1, 1), (2, 3), (4, 8), (5, 9)],
    "dualpipe": [(2, 4), (4, 8), (6, 14)],
    "dualpipev": [(1, 2), (3, 7), (4, 8), (5, 13)],
}
CASES = [(name, r, m) for name in FAMILIES for r, m in SIZES[name]]
IDS = [f"{n}-R{r}-M{m}" for n, r, m in CASES]


def test_sizes_cover_every_family() -> None:
    assert set(SIZES) == set(FAMILIES)


def cross_rank_dependencies(s: Schedule) -> int:
    """Chain neighbours on different ranks, times the chain's micro-batches, times 2 (F, B)."""
    total = 0
    for c, mbs in enumerate(s.chains):
        stages = s.chain_stages(c)
        total += sum(2 * len(mbs) for a, b in zip(stages, stages[1:])
                     if s.rank_of(a) != s.rank_of(b))
    return total


def count(s: Schedule, *ops: Op) -> int:
    return sum(a.op in ops for row in s.actions for a in row)


def destination(s: Schedule, a: Action) -> tuple[int, tuple[Op, int, int]]:
    """A SEND's receiving rank and the RECV that must match it."""
    if a.op is Op.SEND_F:
        nxt = s.next_stage(a.stage)
        return s.rank_of(nxt), (Op.RECV_F, nxt, a.microbatch)
    prev = s.prev_stage(a.stage)
    return s.rank_of(prev), (Op.RECV_B, prev, a.microbatch)


@pytest.mark.parametrize(("name", "ranks", "mbs"), CASES, ids=IDS)
def test_family_lowers_validates_and_strips_back(name: str, ranks: int, mbs: int) -> None:
    s = generate(name, ranks, mbs)
    lowered = lower(s)
    validate(lowered)
    assert lowered.is_lowered == (ranks > 1)
    assert lowered.compute_only() == s
    n = cross_rank_dependencies(s)
    assert count(lowered, Op.SEND_F, Op.SEND_B) == n
    assert count(lowered, Op.RECV_F, Op.RECV_B) == n


@pytest.mark.parametrize(("name", "ranks", "mbs"), CASES, ids=IDS)
def test_pair_order_and_positions(name: str, ranks: int, mbs: int) -> None:
    s = lower(generate(name, ranks, mbs))
    sent: dict[tuple[int, int], list[tuple[Op, int, int]]] = {}
    got: dict[tuple[int, int], list[tuple[Op, int, int]]] = {}
    for r, row in enumerate(s.actions):
        for i, a in enumerate(row):
            key = (a.op, a.stage, a.microbatch)
            if a.op in (Op.SEND_F, Op.SEND_B):
                dst, recv = destination(s, a)
                sent.setdefault((r, dst), []).append(recv)
                # right after its producer, possibly behind other SENDs of that producer
                j = i - 1
                while row[j].op in (Op.SEND_F, Op.SEND_B):
                    j -= 1
                want = Op.F if a.op is Op.SEND_F else None
                assert any(p.stage == a.stage and p.microbatch == a.microbatch
                           and (p.op is want if want else p.op in (Op.B, Op.I))
                           for p in row[j].parts), (r, i, a)
            elif a.op in (Op.RECV_F, Op.RECV_B):
                src = s.rank_of(s.prev_stage(a.stage) if a.op is Op.RECV_F
                                else s.next_stage(a.stage))
                got.setdefault((src, r), []).append(key)
                # before its consumer
                want = Op.F if a.op is Op.RECV_F else None
                assert any(p.stage == a.stage and p.microbatch == a.microbatch
                           and (p.op is want if want else p.op in (Op.B, Op.I))
                           for b in row[i + 1:] for p in b.parts), (r, i, a)
    assert got == sent


@pytest.mark.parametrize(("name", "ranks"), [("zb-v", 4), ("dualpipev", 4)])
def test_v_turn_takes_no_transfer(name: str, ranks: int) -> None:
    s = lower(generate(name, ranks, 2 * ranks))
    turn = [str(a) for row in s.actions for a in row
            if (a.op in (Op.SEND_F, Op.RECV_B) and a.stage == ranks - 1)
            or (a.op in (Op.RECV_F, Op.SEND_B) and a.stage == ranks)]
    assert turn == []
    # 2R-1 chain links, all but the turn cross ranks; M = 2R micro-batches
    assert count(s, Op.SEND_F) == (2 * ranks - 2) * (2 * ranks)


def test_counts_at_r4_m8() -> None:
    sends = {name: count(lower(generate(name, 4, 8)), Op.SEND_F, Op.SEND_B) for name in FAMILIES}
    assert sends == {"gpipe": 48, "1f1b": 48, "1f1b-overlap": 48, "interleaved": 112,
                     "interleaved-overlap": 112, "zb-h1": 48, "zb-h2": 48, "zb-v": 96,
                     "dualpipe": 48, "dualpipev": 96}


def test_exact_lowered_1f1b() -> None:
    s = lower(generate("1f1b", 3, 3))
    assert [" ".join(r) for r in s.action_strings()] == [
        "0F0 0SEND_F0 0F1 0SEND_F1 0F2 0SEND_F2 0RECV_B0 0B0 0RECV_B1 0B1 0RECV_B2 0B2",
        "1RECV_F0 1F0 1SEND_F0 1RECV_F1 1F1 1SEND_F1 1RECV_B0 1B0 1SEND_B0 1RECV_F2 1F2 "
        "1SEND_F2 1RECV_B1 1B1 1SEND_B1 1RECV_B2 1B2 1SEND_B2",
        "2RECV_F0 2F0 2B0 2SEND_B0 2RECV_F1 2F1 2B1 2SEND_B1 2RECV_F2 2F2 2B2 2SEND_B2",
    ]


def test_exact_lowered_1f1b_overlap() -> None:
    # an FB's forward output leaves after the whole unit; its backward needs its RECV_B first
    s = lower(generate("1f1b-overlap", 2, 4))
    assert [" ".join(r) for r in s.action_strings()] == [
        "0F0 0SEND_F0 0F1 0SEND_F1 0F2 0SEND_F2 0RECV_B0 (0F3;0B0) 0SEND_F3 0RECV_B1 0B1 "
        "0RECV_B2 0B2 0RECV_B3 0B3",
        "1RECV_F0 1F0 1RECV_F1 (1F1;1B0) 1SEND_B0 1RECV_F2 (1F2;1B1) 1SEND_B1 1RECV_F3 "
        "(1F3;1B2) 1SEND_B2 1B3 1SEND_B3",
    ]


def test_receive_moves_earlier_to_follow_send_order() -> None:
    # rank 0 of DualPipeV(3, 6) sends 0F4's activation before 5I0's gradient; rank 1 needs the
    # gradient first (4I0), so 1RECV_F4 moves before 4RECV_B0, ahead of its consumer 1F4
    s = lower(generate("dualpipev", 3, 6))
    row = " ".join(s.action_strings()[1])
    assert "1RECV_F4 4RECV_B0 4I0 4SEND_B0 4W0 4RECV_F2 4F2 4SEND_F2 4RECV_B1 (1F4;4B1) " \
           "1SEND_F4 4SEND_B1" in row
    # the FB's two outputs both go to rank 1: forward half first
    assert "(0F5;5B2) 0SEND_F5 5SEND_B2" in " ".join(s.action_strings()[0])


def test_lowering_is_deterministic() -> None:
    for name in FAMILIES:
        a, b = lower(generate(name, 4, 8)), lower(generate(name, 4, 8))
        assert a == b and a.action_strings() == b.action_strings()


def test_lowered_plan_is_returned_as_is() -> None:
    s = lower(generate("dualpipe", 4, 8))
    assert lower(s) is s


def test_invalid_schedule_is_refused_with_the_validators_message() -> None:
    s = generate("1f1b", 2, 2)
    rows = [list(r) for r in s.actions]
    rows[1] = rows[1][1:]  # drop 1F0
    with pytest.raises(ValidationError) as info:
        lower(s.with_actions(rows))
    assert info.value.message == ("rank 1, position 0: 1B0 has no forward: 1F0 is missing from "
                                  "rank 1; re-emit the plan with `dualsim emit`")


def test_badly_lowered_schedule_is_refused() -> None:
    s = lower(generate("1f1b", 2, 2))
    rows = [[a for a in r if str(a) != "1RECV_F1"] for r in s.actions]
    with pytest.raises(ValidationError, match=r"^rank 1, position \d+: 1F1 needs stage 0's "
                                              r"output from rank 0, but rank 1 has no 1RECV_F1"):
        lower(s.with_actions(rows))
