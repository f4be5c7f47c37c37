"""Schedule generators: registry, parameter rules, structural invariants and hand-derived orders.

The structural checks here are written independently of the generators: they recount every
(stage, micro-batch) from the placement table and replay each schedule against the dependency
rules of docs/schedules.md to prove it runs to completion without deadlock.
"""

from __future__ import annotations

from collections import Counter

import pytest

from dualsim.errors import ScheduleError
from dualsim.generators import FAMILIES, Family, check, generate
from dualsim.ir import Action, Op, Schedule

# ---- independent checkers ----------------------------------------------------------------


def legal_grid() -> list[tuple[str, int, int, int | None]]:
    """A grid of legal (family, R, M, chunks), including the edges of every rule."""
    grid: list[tuple[str, int, int, int | None]] = []
    for name in ("gpipe", "1f1b", "zb-h1", "1f1b-overlap"):
        grid += [(name, r, m, None) for r in range(1, 6) for m in range(1, 11)]
    for name in ("zb-h2", "zb-v"):
        grid += [(name, r, m, None) for r in range(1, 6) for m in range(2 * r - 1, 2 * r + 5)]
    grid += [(name, r, m, v) for name in ("interleaved", "interleaved-overlap")
             for r in range(1, 5) for m in range(r, 3 * r + 2) for v in (2, 3)]
    grid += [("dualpipe", r, m, None) for r in (2, 4, 6) for m in range(2 * r, 2 * r + 8, 2)]
    grid += [("dualpipev", r, m, None) for r in range(1, 6) for m in range(2 * r, 2 * r + 5)]
    return grid


GRID = legal_grid()
GRID_IDS = [f"{n}-R{r}-M{m}" + (f"-v{v}" if v else "") for n, r, m, v in GRID]


def compute_parts(s: Schedule) -> list[tuple[int, Action]]:
    """(rank, part) for every F/I/W/B, with FB halves counted separately, in rank order."""
    return [(r, p) for r, row in enumerate(s.actions) for a in row for p in a.parts]


def replay(s: Schedule) -> int:
    """Run the ranks' lists against the §3 dependencies; return the number of units run.

    A unit (an FB counts as one) may start once every dependency of all its parts has finished;
    a rank that waits forever means the schedule deadlocks and the test fails.
    """
    done: set[tuple[Op, int, int]] = set()
    pointer = [0] * s.ranks

    def ready(part: Action) -> bool:
        st, m = part.stage, part.microbatch
        if part.op is Op.F:
            prev = s.prev_stage(st)
            return prev is None or (Op.F, prev, m) in done
        if part.op in (Op.B, Op.I):
            nxt = s.next_stage(st)
            later = nxt is None or (Op.B, nxt, m) in done or (Op.I, nxt, m) in done
            return (Op.F, st, m) in done and later
        assert part.op is Op.W
        return (Op.I, st, m) in done

    progress, units = True, 0
    while progress:
        progress = False
        for r in range(s.ranks):
            row = s.actions[r]
            while pointer[r] < len(row) and all(ready(p) for p in row[pointer[r]].parts):
                done.update((p.op, p.stage, p.microbatch) for p in row[pointer[r]].parts)
                pointer[r] += 1
                units += 1
                progress = True
    stuck = [(r, str(s.actions[r][pointer[r]])) for r in range(s.ranks)
             if pointer[r] < len(s.actions[r])]
    assert not stuck, f"{s.name} deadlocks; ranks waiting at {stuck}"
    return units


def row(s: Schedule, rank: int) -> str:
    return " ".join(s.action_strings()[rank])


# ---- registry --------------------------------------------------------------------------


def test_family_names_in_order() -> None:
    assert list(FAMILIES) == ["gpipe", "1f1b", "1f1b-overlap", "interleaved",
                              "interleaved-overlap", "zb-h1", "zb-h2", "zb-v", "dualpipe",
                              "dualpipev"]
    assert all(isinstance(f, Family) and f.name == n for n, f in FAMILIES.items())
    assert [n for n, f in FAMILIES.items() if f.takes_chunks] == ["interleaved",
                                                                  "interleaved-overlap"]
    assert FAMILIES["dualpipe"].rules == "R even, M even, M >= 2R"


def test_generate_sets_name_and_chunks() -> None:
    assert generate("interleaved", 2, 4).chunks == 2
    assert generate("interleaved", 2, 4, chunks=3).chunks == 3
    assert generate("interleaved", 2, 4, chunks=3).num_stages == 6
    for name in FAMILIES:
        r, m = (2, 4)
        s = generate(name, r, m)
        assert s.name == name and s.ranks == r and s.microbatches == m
        if not FAMILIES[name].takes_chunks:
            assert s.chunks is None


def test_placement_and_chains() -> None:
    dp = generate("dualpipe", 4, 8)
    assert dp.chains == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert [dp.rank_of(st) for st in range(8)] == [0, 1, 2, 3, 3, 2, 1, 0]
    assert generate("zb-v", 3, 5).chains == ((0, 1, 2, 3, 4),)
    assert [generate("dualpipev", 3, 6).rank_of(st) for st in range(6)] == [0, 1, 2, 2, 1, 0]
    assert [generate("interleaved", 2, 4, 3).rank_of(st) for st in range(6)] == [0, 1] * 3


# ---- illegal inputs --------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (("foo", 4, 8), "unknown schedule 'foo': choose one of gpipe, 1f1b, 1f1b-overlap, "
                    "interleaved, interleaved-overlap, zb-h1, zb-h2, zb-v, dualpipe, dualpipev"),
    (("dualpipe", 5, 10), "dualpipe needs an even number of ranks, got 5: use --ranks 4 or 6"),
    (("dualpipe", 4, 9), "dualpipe needs an even number of micro-batches, got 9: "
                         "use --microbatches 8 or 10"),
    (("dualpipe", 4, 5), "dualpipe needs an even number of micro-batches, got 5: "
                         "use --microbatches 8"),
    (("dualpipe", 4, 6), "dualpipe needs M >= 2R micro-batches (R=4 needs at least 8), got 6"),
    (("dualpipe", 1, 2), "dualpipe needs an even number of ranks, got 1: use --ranks 2"),
    (("dualpipev", 3, 5), "dualpipev needs M >= 2R micro-batches (R=3 needs at least 6), got 5"),
    (("zb-h2", 4, 5), "zb-h2 needs M >= 2R-1 micro-batches (R=4 needs at least 7), got 5"),
    (("zb-v", 3, 4), "zb-v needs M >= 2R-1 micro-batches (R=3 needs at least 5), got 4"),
    (("interleaved", 4, 3), "interleaved needs M >= R micro-batches (R=4 needs at least 4), "
                            "got 3: use --microbatches 4 or more"),
    (("interleaved", 2, 4, 1), "interleaved needs --chunks >= 2 (stages per rank), got 1: "
                               "use --chunks 2 or more"),
    (("1f1b", 4, 8, 2), "1f1b does not take --chunks, got 2: only interleaved and "
                        "interleaved-overlap take --chunks"),
    (("1f1b-overlap", 4, 8, 2), "1f1b-overlap does not take --chunks, got 2: only interleaved "
                                "and interleaved-overlap take --chunks"),
    (("interleaved-overlap", 2, 1), "interleaved-overlap needs M >= R micro-batches (R=2 needs "
                                    "at least 2), got 1: use --microbatches 2 or more"),
    (("interleaved-overlap", 2, 4, 1), "interleaved-overlap needs --chunks >= 2 (stages per "
                                       "rank), got 1: use --chunks 2 or more"),
    (("1f1b-overlap", 0, 8), "1f1b-overlap needs R >= 1 ranks, got 0: use --ranks 1 or more"),
    (("gpipe", 0, 8), "gpipe needs R >= 1 ranks, got 0: "
                      "use --ranks 1 or more"),
    (("zb-h1", 2, -3), "zb-h1 needs M >= 1 micro-batches, got -3: "
                       "use --microbatches 1 or more"),
    (("1f1b", True, 8), "1f1b needs an integer number of ranks, got True: use --ranks 1 or more"),
    (("1f1b", 2, 2.0), "1f1b needs an integer number of micro-batches, got 2.0: "
                       "use --microbatches 1 or more"),
])
def test_illegal_inputs_name_the_rule(args: tuple, message: str) -> None:
    """``message`` is what the command line prints (its options); the API names parameters."""
    with pytest.raises(ScheduleError) as info:
        generate(*args)
    assert info.value.cli == message
    assert "--" not in str(info.value)
    with pytest.raises(ScheduleError):
        check(*args)


@pytest.mark.parametrize(("args", "api"), [
    (("dualpipe", 5, 10), "dualpipe needs an even number of ranks, got 5: use ranks=4 or 6"),
    (("interleaved", 2, 4, 1), "interleaved needs chunks >= 2 (stages per rank), got 1: "
                               "use chunks=2 or more"),
    (("1f1b", 4, 8, 2), "1f1b does not take chunks, got 2: only interleaved and "
                        "interleaved-overlap take chunks"),
    (("zb-h1", 2, -3), "zb-h1 needs M >= 1 micro-batches, got -3: use microbatches=1 or more"),
    (("1f1b", 100_000, 100_000), "1f1b at R=100000, M=100000 has 10,000,000,000 (stage, "
                                 "micro-batch) pairs, more than dualsim simulates (2,000,000): "
                                 "use fewer ranks or microbatches"),
])
def test_api_errors_name_the_parameters(args: tuple, api: str) -> None:
    with pytest.raises(ScheduleError) as info:
        generate(*args)
    assert info.value.message == str(info.value) == api


@pytest.mark.parametrize(("name", "r", "m"), [("dualpipe", 2, 4), ("dualpipev", 3, 6),
                                              ("zb-h2", 4, 7), ("zb-v", 1, 1), ("gpipe", 1, 1),
                                              ("interleaved", 3, 3), ("1f1b-overlap", 1, 1),
                                              ("interleaved-overlap", 1, 1)])
def test_minimum_legal_sizes_pass(name: str, r: int, m: int) -> None:
    check(name, r, m)
    replay(generate(name, r, m))


# ---- structural invariants on a grid ------------------------------------------------------


@pytest.mark.parametrize(("name", "r", "m", "v"), GRID, ids=GRID_IDS)
def test_structure(name: str, r: int, m: int, v: int | None) -> None:
    s = generate(name, r, m, v)
    expected_stages = (v or 1) * r if name not in ("zb-v", "dualpipe", "dualpipev") else 2 * r
    assert s.num_stages == expected_stages
    parts = compute_parts(s)
    # every action sits on the rank that holds its stage
    assert all(s.rank_of(p.stage) == rank for rank, p in parts)
    # exactly one F, and one B or one I and one W, for each (stage, mb of the stage's chain)
    counts = Counter((p.op, p.stage, p.microbatch) for _, p in parts)
    assert all(c == 1 for c in counts.values())
    expected = {(st.stage, mb) for st in s.stages for mb in s.chains[st.chain]}
    assert {(st, mb) for op, st, mb in counts if op is Op.F} == expected
    full = {(st, mb) for op, st, mb in counts if op is Op.B}
    split_i = {(st, mb) for op, st, mb in counts if op is Op.I}
    split_w = {(st, mb) for op, st, mb in counts if op is Op.W}
    assert split_i == split_w and not full & split_i and full | split_i == expected
    # per stage: forwards, and backwards (B and I together), in increasing micro-batch order;
    # W never before its I on the rank
    for stage in range(s.num_stages):
        fwd = [p.microbatch for _, p in parts if p.stage == stage and p.op is Op.F]
        bwd = [p.microbatch for _, p in parts if p.stage == stage and p.op.is_backward]
        assert fwd == sorted(fwd) and bwd == sorted(bwd)
    for rank, row_ in enumerate(s.actions):
        seen_i: set[tuple[int, int]] = set()
        for a in row_:
            for p in a.parts:
                if p.op is Op.I:
                    seen_i.add((p.stage, p.microbatch))
                if p.op is Op.W:
                    assert (p.stage, p.microbatch) in seen_i
    # FB pairs only in the DualPipe and overlap families (the latter: one per steady-state step
    # on every rank, vM - w of them, see test_overlap_fb_counts), and it runs without deadlock
    has_fb = any(a.op is Op.FB for row_ in s.actions for a in row_)
    if name in ("dualpipe", "dualpipev"):
        assert has_fb
    elif not name.endswith("-overlap"):
        assert not has_fb
    assert replay(s) == sum(len(row_) for row_ in s.actions)


# ---- hand-derived orders -------------------------------------------------------------------


def test_gpipe_order() -> None:
    assert row(generate("gpipe", 2, 3), 1) == "1F0 1F1 1F2 1B0 1B1 1B2"


def test_1f1b_r4_m8() -> None:
    s = generate("1f1b", 4, 8)
    assert row(s, 0) == "0F0 0F1 0F2 0F3 0B0 0F4 0B1 0F5 0B2 0F6 0B3 0F7 0B4 0B5 0B6 0B7"
    assert row(s, 3) == "3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3 3F4 3B4 3F5 3B5 3F6 3B6 3F7 3B7"
    assert row(s, 1) == "1F0 1F1 1F2 1B0 1F3 1B1 1F4 1B2 1F5 1B3 1F6 1B4 1F7 1B5 1B6 1B7"


def test_1f1b_warmup_capped_by_m() -> None:
    assert row(generate("1f1b", 4, 2), 0) == "0F0 0F1 0B0 0B1"


# ---- batch-level overlap: 1f1b-overlap and interleaved-overlap --------------------------------


def test_1f1b_overlap_r4_m8() -> None:
    """Warm-up 2(R-r-1)+1 = 7, 5, 3, 1 forwards; (F(w+k);B(k)) units; then the last w B."""
    s = generate("1f1b-overlap", 4, 8)
    assert row(s, 0) == "0F0 0F1 0F2 0F3 0F4 0F5 0F6 (0F7;0B0) 0B1 0B2 0B3 0B4 0B5 0B6 0B7"
    assert row(s, 1) == ("1F0 1F1 1F2 1F3 1F4 (1F5;1B0) (1F6;1B1) (1F7;1B2) "
                         "1B3 1B4 1B5 1B6 1B7")
    assert row(s, 2) == ("2F0 2F1 2F2 (2F3;2B0) (2F4;2B1) (2F5;2B2) (2F6;2B3) (2F7;2B4) "
                         "2B5 2B6 2B7")
    # the last rank: one extra forward, so F(m+1) runs with B(m), never F(m) with B(m)
    assert row(s, 3) == ("3F0 (3F1;3B0) (3F2;3B1) (3F3;3B2) (3F4;3B3) (3F5;3B4) (3F6;3B5) "
                         "(3F7;3B6) 3B7")


def test_1f1b_overlap_one_rank_is_megatrons_no_pipelining_order() -> None:
    """Megatron-Core's combined 1F1B without pipelining: F0, then F(m+1) with B(m), then B."""
    assert row(generate("1f1b-overlap", 1, 4), 0) == "0F0 (0F1;0B0) (0F2;0B1) (0F3;0B2) 0B3"
    assert row(generate("1f1b-overlap", 1, 1), 0) == "0F0 0B0"


def test_1f1b_overlap_warmup_capped_by_m() -> None:
    s = generate("1f1b-overlap", 4, 4)
    assert row(s, 0) == "0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3"
    assert row(s, 2) == "2F0 2F1 2F2 (2F3;2B0) 2B1 2B2 2B3"


def test_interleaved_overlap_r2_v2_m4() -> None:
    """One more warm-up slot than interleaved (5 and 3 of 8), then one FB per step."""
    s = generate("interleaved-overlap", 2, 4, 2)
    assert row(s, 0) == ("0F0 0F1 2F0 2F1 0F2 (0F3;2B0) (2F2;2B1) (2F3;0B0) "
                         "0B1 2B2 2B3 0B2 0B3")
    assert row(s, 1) == ("1F0 1F1 3F0 (3F1;3B0) (1F2;3B1) (1F3;1B0) (3F2;1B1) (3F3;3B2) "
                         "3B3 1B2 1B3")


def megatron_order(rank: int, ranks: int, mbs: int, chunks: int, group: int) -> list[str]:
    """Megatron-Core v0.14's combined-1F1B order, restated from its schedule table: groups of
    ``group`` micro-batches (the last one takes the rest) run chunk by chunk; the backward
    table is the forward one with chunk c -> v-1-c; warm-up 2(R-r-1) + (v-1)N + 1 slots (capped
    at vM); then forward slot w+k with backward slot k as one unit; then the other backwards."""
    starts = list(range(0, mbs, group))
    table = [(m, c) for g in starts for c in range(chunks)
             for m in range(g, mbs if g == starts[-1] else g + group)]
    fwd = [f"{c * ranks + rank}F{m}" for m, c in table]
    bwd = [f"{(chunks - 1 - c) * ranks + rank}B{m}" for m, c in table]
    w = min(2 * (ranks - rank - 1) + (chunks - 1) * group + 1, len(table))
    steady = [f"({f};{b})" for f, b in zip(fwd[w:], bwd)]
    return fwd[:w] + steady + bwd[len(table) - w:]


@pytest.mark.parametrize(("r", "m", "v", "group"), [
    (2, 2, 2, 2), (2, 4, 2, 2), (3, 6, 3, 3), (4, 4, 2, 4), (4, 8, 2, 4), (4, 12, 4, 4),
    (5, 10, 2, 5),
    # R does not divide M: the smallest N >= R whose last group is whole or >= R
    (4, 7, 2, 7), (4, 9, 2, 5), (4, 10, 2, 5), (4, 11, 3, 6), (3, 7, 2, 4), (16, 120, 2, 20),
])
def test_interleaved_overlap_is_megatrons_table_order(r: int, m: int, v: int,
                                                      group: int) -> None:
    from dualsim.generators.interleaved import group_size

    assert group_size(r, m) == group
    s = generate("interleaved-overlap", r, m, v)
    assert s.action_strings() == [megatron_order(rank, r, m, v, group) for rank in range(r)]


def test_interleaved_r2_v2_m3_one_group() -> None:
    """R does not divide M = 3: one group of 3 (a last group of 1 < R is refused by Megatron),
    warm-up 2(R-r-1) + (v-1)N = 5 and 3 of 6 slots."""
    s = generate("interleaved", 2, 3, 2)
    assert row(s, 0) == "0F0 0F1 0F2 2F0 2F1 2F2 2B0 2B1 2B2 0B0 0B1 0B2"
    assert row(s, 1) == "1F0 1F1 1F2 3F0 3B0 3F1 3B1 3F2 3B2 1B0 1B1 1B2"


@pytest.mark.parametrize(("r", "m"), [(1, 1), (1, 5), (2, 3), (3, 4), (4, 8), (5, 13), (6, 7)])
def test_1f1b_overlap_is_interleaved_overlap_with_one_chunk(r: int, m: int) -> None:
    """Megatron's warm-up 2(R-r-1) + (v-1)R + 1 at v = 1, with v = 1's slot order (any M)."""
    from dualsim.generators.interleaved import build_overlap

    assert generate("1f1b-overlap", r, m).actions == build_overlap(r, m, 1).actions


@pytest.mark.parametrize(("name", "r", "m", "v"), [("1f1b-overlap", 4, 8, 1),
                                                   ("1f1b-overlap", 5, 6, 1),
                                                   ("interleaved-overlap", 4, 8, 2),
                                                   ("interleaved-overlap", 3, 3, 3)])
def test_overlap_fb_counts(name: str, r: int, m: int, v: int) -> None:
    """Rank r runs w = min(2(R-r-1) + (v-1)R + 1, vM) plain F, vM - w FB units, w plain B."""
    s = generate(name, r, m, v if v > 1 else None)
    for rank, actions in enumerate(s.actions):
        w = min(2 * (r - rank - 1) + (v - 1) * r + 1, v * m)
        assert Counter(a.op for a in actions) == Counter({Op.F: w, Op.FB: v * m - w, Op.B: w})
        assert all(a.forward.microbatch != a.backward.microbatch or
                   a.forward.stage != a.backward.stage for a in actions if a.op is Op.FB)


def test_one_extra_forward_on_the_last_rank_alone_deadlocks() -> None:
    """Why every rank gets the extra forward: on the last rank alone, rank R-2's first unit
    (F(1);B(0)) and the last rank's (F(1);B(0)) wait for each other."""
    from dualsim.generators.one_f_one_b import one_forward_one_backward
    from dualsim.ir import B as B_, F as F_

    s = generate("1f1b", 2, 4)
    rows = [one_forward_one_backward([F_(k, m) for m in range(4)], [B_(k, m) for m in range(4)],
                                     max(2 - k - 1, 1), overlap=True) for k in range(2)]
    with pytest.raises(AssertionError, match="deadlocks"):
        replay(s.with_actions(rows))


def test_plain_1f1b_spacing_plus_one_is_twice_as_slow() -> None:
    """Why the warm-up spacing doubles: with w = R-r (valid) a rank's unit waits for its
    neighbour's unit of the same step, so the steady state runs one unit per two FB times."""
    from dualsim.generators.one_f_one_b import one_forward_one_backward
    from dualsim.ir import B as B_, F as F_
    from dualsim.sim.abstract import simulate

    s = generate("1f1b", 4, 8)
    rows = [one_forward_one_backward([F_(k, m) for m in range(8)], [B_(k, m) for m in range(8)],
                                     4 - k, overlap=True) for k in range(4)]
    assert simulate(s.with_actions(rows)).makespan == 51
    assert simulate(generate("1f1b-overlap", 4, 8)).makespan == 33 == simulate(s).makespan


def test_zb_h1_r3_m4() -> None:
    s = generate("zb-h1", 3, 4)
    assert row(s, 0) == "0F0 0F1 0F2 0I0 0W0 0F3 0I1 0W1 0I2 0W2 0I3 0W3"
    assert row(s, 1) == "1F0 1F1 1I0 1F2 1I1 1W0 1F3 1I2 1W1 1I3 1W2 1W3"
    assert row(s, 2) == "2F0 2I0 2F1 2I1 2F2 2I2 2W0 2F3 2I3 2W1 2W2 2W3"


def test_zb_h2_r2_m3() -> None:
    s = generate("zb-h2", 2, 3)
    assert row(s, 0) == "0F0 0F1 0F2 0I0 0W0 0I1 0W1 0I2 0W2"
    assert row(s, 1) == "1F0 1I0 1F1 1I1 1F2 1I2 1W0 1W1 1W2"


def test_interleaved_r2_v2_m4() -> None:
    s = generate("interleaved", 2, 4, 2)
    assert row(s, 0) == "0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3"
    assert row(s, 1) == "1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3"


def test_interleaved_all_warmup_when_m_equals_r() -> None:
    assert row(generate("interleaved", 2, 2, 2), 1) == "1F0 1F1 3F0 3F1 3B0 3B1 1B0 1B1"


def test_zb_v_r2_m4() -> None:
    s = generate("zb-v", 2, 4)
    assert row(s, 0) == ("0F0 0F1 0F2 3F0 3I0 3W0 3F1 3I1 3W1 0F3 0I0 0W0 3F2 3I2 3W2 "
                         "0I1 0W1 3F3 3I3 3W3 0I2 0W2 0I3 0W3")
    assert row(s, 1) == ("1F0 2F0 1F1 2F1 2I0 2W0 1F2 1I0 1W0 2F2 2I1 2W1 1F3 1I1 1W1 "
                         "2F3 2I2 2W2 1I2 2I3 1I3 1W2 2W3 1W3")


def test_dualpipe_r2_m4_middle_ranks() -> None:
    """R=2: both ranks are middle ranks, h = 0: the first near-F/far-B pair is not overlapped."""
    s = generate("dualpipe", 2, 4)
    assert row(s, 0) == "0F0 3F2 0F1 3B2 (3F3;0B0) 3B3 0I1 0W1"
    assert row(s, 1) == "2F2 1F0 2F3 1B0 (1F1;2B2) 1B1 2I3 2W3"


def test_dualpipe_r6_m12_rank0_steps() -> None:
    """R=6, M=12, rank 0 (h=0): steps 1..8 of §4 with R/2-h-1 = 2 and M/2-R+h+1 = 1."""
    assert row(generate("dualpipe", 6, 12), 0) == (
        "0F0 0F1 0F2 0F3 "  # step 1
        "0F4 11F6 "  # step 2
        "11I6 11W6 11F7 11I7 11W7 11F8 "  # step 3
        "(0F5;11B8) (11F9;0B0) "  # step 4
        "11B9 (11F10;0B1) 11B10 (11F11;0B2) "  # step 5
        "11B11 0I3 "  # step 6
        "0W3 0I4 0W4 0I5 "  # step 7
        "0W5"  # step 8
    )


# ---- DualPipeV is DualPipe(2R, 2M) cut in half ----------------------------------------------


def relabel(s: Schedule, rank: int, ranks_v: int, mbs_v: int) -> list[str]:
    """Rank r of DualPipe(2R, 2M) in DualPipeV labels: far stage 4R-1-r -> 2R-1-r, mb M+k -> k."""
    far = 4 * ranks_v - 1 - rank

    def part(p: Action) -> Action:
        stage = 2 * ranks_v - 1 - rank if p.stage == far else p.stage
        assert stage in (rank, 2 * ranks_v - 1 - rank)
        return Action(p.op, stage, p.microbatch - mbs_v if p.microbatch >= mbs_v else p.microbatch)

    out = []
    for a in s.actions[rank]:
        if a.op is Op.FB:
            out.append(str(Action.fb(part(a.forward), part(a.backward))))
        else:
            out.append(str(part(a)))
    return out


@pytest.mark.parametrize(("r", "m"), [(1, 2), (1, 3), (2, 4), (2, 5), (3, 6), (3, 7), (4, 8),
                                      (4, 11), (5, 13)])
def test_dualpipev_is_relabelled_dualpipe(r: int, m: int) -> None:
    v = generate("dualpipev", r, m)
    dp = generate("dualpipe", 2 * r, 2 * m)
    for rank in range(r):
        assert v.action_strings()[rank] == relabel(dp, rank, r, m)


def test_dualpipe_r8_m16_middle_rank() -> None:
    """DualPipe(8, 16) rank 3 (h=3), derived by hand from §4; relabelled it is the last line of
    the DualPipeV R=4 M=8 reference (12 -> 4, micro-batch 8+k -> k)."""
    assert row(generate("dualpipe", 8, 16), 3) == (
        "3F0 12F8 3F1 12F9 3F2 12F10 3F3 12F11 "  # step 2
        "3F4 12B8 (12F12;3B0) (3F5;12B9) (12F13;3B1) (3F6;12B10) (12F14;3B2) (3F7;12B11) "
        "(12F15;3B3) "  # step 4, middle rank: first pair not overlapped
        "12B12 3B4 12B13 3B5 12I14 3I6 12I15 3I7 "  # step 6, h odd: switch before a far one
        "12W14 3W6 12W15 3W7"  # step 8
    )


def test_replay_catches_a_deadlock() -> None:
    """The checker itself: 1F1B with rank 1's first F and B swapped must be rejected."""
    s = generate("1f1b", 2, 2)
    rows = [list(r) for r in s.actions]
    rows[1][0], rows[1][1] = rows[1][1], rows[1][0]
    with pytest.raises(AssertionError, match="deadlocks"):
        replay(s.with_actions(rows))


@pytest.mark.parametrize(("name", "r", "m", "v"), [
    ("1f1b", 100_000, 100_000, None),            # a typo that used to eat all memory
    ("interleaved", 4, 8, 100_000),
    ("zb-v", 1000, 1999, None),                  # 2R stages: 3,998,000 pairs
])
def test_huge_sizes_are_refused_before_generating(name: str, r: int, m: int,
                                                  v: int | None) -> None:
    with pytest.raises(ScheduleError, match=r"more than dualsim simulates \(2,000,000\)"):
        check(name, r, m, v)


def test_benchmark_size_is_well_within_the_cap() -> None:
    check("zb-v", 32, 512)
    check("dualpipev", 32, 512)
    check("1f1b", 1000, 2000)  # exactly 2,000,000 pairs
