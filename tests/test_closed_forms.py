"""The generated schedules hit docs/schedules.md's closed forms exactly (zero transfer latency),
and its worked example R=4, M=8 to the last digit (makespan, span, idle, peak activations)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from dualsim.generators import generate
from dualsim.sim.abstract import simulate
from dualsim.sim.abstract_costs import Costs

UNIT = {"F": 1, "I": 1, "W": 1}
FIGURE = {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3}  # DualPipe README figure's costs
COSTS = [UNIT, {"F": 2, "I": 2, "W": 1}, {"F": 3, "I": 2, "W": 1},
         {"F": Fraction(3, 2), "I": 2, "W": Fraction(1, 2)}]
SIZES = [(1, 1), (1, 4), (2, 2), (2, 5), (3, 7), (4, 4), (4, 8), (5, 11), (6, 12), (8, 16)]


def run(name: str, ranks: int, mbs: int, costs: dict, chunks: int | None = None):
    return simulate(generate(name, ranks, mbs, chunks), costs)


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("costs", COSTS)
@pytest.mark.parametrize("ranks, mbs", SIZES + [(4, 2), (6, 3)])
def test_gpipe_and_1f1b(name: str, costs: dict, ranks: int, mbs: int) -> None:
    c = Costs.of(costs)
    r = run(name, ranks, mbs, costs)
    assert r.makespan == (mbs + ranks - 1) * (c.F + c.B)
    assert r.span == r.makespan


@pytest.mark.parametrize("chunks", [2, 3, 4])
@pytest.mark.parametrize("costs", COSTS)
@pytest.mark.parametrize("ranks, mbs", [(1, 3), (2, 2), (2, 6), (3, 6), (4, 4), (4, 8),
                                        (4, 12), (5, 10), (2, 3), (4, 7), (4, 9), (5, 13)])
def test_interleaved(chunks: int, costs: dict, ranks: int, mbs: int) -> None:
    c = Costs.of(costs)
    r = run("interleaved", ranks, mbs, costs, chunks)
    assert r.makespan == mbs * (c.F + c.B) + Fraction((ranks - 1) * (c.F + c.B), chunks)


@pytest.mark.parametrize("costs", COSTS)  # all have W <= min(F, I)
@pytest.mark.parametrize("ranks, mbs", [(r, m) for r, m in SIZES if m >= r])
def test_zb_h1(costs: dict, ranks: int, mbs: int) -> None:
    c = Costs.of(costs)
    r = run("zb-h1", ranks, mbs, costs)
    assert r.makespan == mbs * (c.F + c.I + c.W) + (ranks - 1) * (c.F + c.I - c.W)


@pytest.mark.parametrize("costs", COSTS)  # all have 2W <= F + I and W <= F
@pytest.mark.parametrize("ranks, mbs", [(1, 1), (2, 3), (2, 6), (3, 5), (4, 7), (4, 8),
                                        (5, 12), (6, 11), (8, 15)])
def test_zb_h2(costs: dict, ranks: int, mbs: int) -> None:
    c = Costs.of(costs)
    r = run("zb-h2", ranks, mbs, costs)
    work = mbs * (c.F + c.I + c.W)
    assert r.span == work + (ranks - 1) * (c.F + c.I - 2 * c.W)
    assert r.makespan == max(r.span, work + (ranks - 1) * c.F)


@pytest.mark.parametrize("cost", [1, 2, Fraction(1, 3)])
@pytest.mark.parametrize("ranks, mbs", [(1, 1), (2, 3), (2, 8), (3, 5), (4, 7), (4, 8),
                                        (5, 9), (6, 16), (8, 15)])
def test_zb_v(cost, ranks: int, mbs: int) -> None:
    r = run("zb-v", ranks, mbs, {"F": cost, "I": cost, "W": cost})
    assert r.span == 3 * mbs * cost
    assert r.makespan == r.span + Fraction((ranks - 1) * cost, 2)


@pytest.mark.parametrize("ranks, mbs", [(2, 4), (2, 6), (4, 8), (4, 10), (6, 12), (6, 14),
                                        (8, 16), (8, 20)])
def test_dualpipe_idle_with_the_figure_costs(ranks: int, mbs: int) -> None:
    r = run("dualpipe", ranks, mbs, FIGURE)
    idle = (ranks // 2 - 1) * (3 + 2 - 3 * 1)  # (R/2-1)(FB + B - 3W)
    assert [p.idle for p in r.per_rank] == [idle] * ranks
    assert r.makespan == r.ideal + idle


@pytest.mark.parametrize("ranks, mbs", [(6, 12), (8, 20)])
def test_dualpipe_idle_formula_is_the_middle_ranks_when_fb_overlaps(ranks: int,
                                                                    mbs: int) -> None:
    # with FB < F + B the outer ranks idle less; the formula holds on the middle ranks
    costs = {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 2}
    r = run("dualpipe", ranks, mbs, costs)
    idle = (ranks // 2 - 1) * (2 + 2 - 3)
    idles = [p.idle for p in r.per_rank]
    assert idles[ranks // 2 - 1] == idles[ranks // 2] == idle == max(idles)
    assert idles[0] < idle
    # ideal is the mean busy time, so the bubble rate is the mean idle share
    assert r.ideal == Fraction(sum(p.busy for p in r.per_rank), ranks)
    assert 1 - Fraction(r.ideal) / r.makespan == Fraction(sum(idles), ranks * r.makespan)


@pytest.mark.parametrize("ranks, mbs", [(1, 2), (1, 5), (2, 4), (3, 6), (3, 9), (4, 8),
                                        (5, 11), (6, 12)])
def test_dualpipev_is_half_of_dualpipe_at_twice_the_size(ranks: int, mbs: int) -> None:
    r = run("dualpipev", ranks, mbs, FIGURE)
    double = run("dualpipe", 2 * ranks, 2 * mbs, FIGURE)
    assert r.makespan * 2 == double.makespan
    assert [p.idle for p in r.per_rank] == [Fraction((ranks - 1) * 2, 2)] * ranks


# ---- batch-level overlap: 1f1b-overlap (v = 1) and interleaved-overlap -----------------------
# With N = group_size(R, M) (R when R divides M; always R for v = 1, where N plays no part)
# rank r runs w_r = min(2(R-r-1) + (v-1)N + 1, vM) plain F and plain B slots and vM - w_r FB
# units. Whenever FB >= max(F, B) the last rank, once started, never waits, so
# makespan = span = its busy time + (R-1)(F+B)/v = ((v-1)N + R)(F+B)/v + (vM-(v-1)N-1) FB/v,
# idle_r = makespan - [w_r(F+B) + (vM-w_r) FB]/v, and peak activations are min(w_r + 1, vM).

OVERLAP_COSTS = [  # FB below, at and above F + B, and at its lower bound max(F, B)
    UNIT,
    {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 2},
    {"F": 2, "I": 3, "W": 1, "FB": 4},
    {"F": 3, "I": 1, "W": 1, "B": 2, "FB": 4},
    {"F": Fraction(3, 2), "I": 2, "W": Fraction(1, 2), "FB": Fraction(13, 5)},
    {"F": 1, "I": 2, "W": 2, "B": 4, "FB": Fraction(9, 2)},
    {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 5},
]


def overlap_expected(c: Costs, ranks: int, mbs: int, v: int, group: int) -> tuple:
    plain, fb = c.F + c.B, c.FB
    makespan = (Fraction((v - 1) * group + ranks) * plain
                + Fraction(v * mbs - (v - 1) * group - 1) * fb) / v
    warmups = [min(2 * (ranks - r - 1) + (v - 1) * group + 1, v * mbs) for r in range(ranks)]
    idle = [makespan - Fraction(w * plain + (v * mbs - w) * fb, v) for w in warmups]
    return makespan, idle, [min(w + 1, v * mbs) for w in warmups]


@pytest.mark.parametrize("costs", OVERLAP_COSTS)
@pytest.mark.parametrize("ranks, mbs", SIZES + [(4, 2), (6, 3), (3, 4), (8, 9)])
def test_1f1b_overlap(costs: dict, ranks: int, mbs: int) -> None:
    c = Costs.of(costs)
    r = run("1f1b-overlap", ranks, mbs, costs)
    makespan, idle, peaks = overlap_expected(c, ranks, mbs, 1, ranks)
    assert r.makespan == r.span == makespan == ranks * (c.F + c.B) + (mbs - 1) * c.FB
    assert [p.idle for p in r.per_rank] == idle
    assert [p.peak_activations for p in r.per_rank] == peaks


@pytest.mark.parametrize("chunks", [2, 3, 4])
@pytest.mark.parametrize("costs", OVERLAP_COSTS)
@pytest.mark.parametrize("ranks, mbs, group", [(1, 3, 1), (2, 2, 2), (2, 6, 2), (3, 6, 3),
                                               (4, 4, 4), (4, 8, 4), (4, 12, 4), (5, 10, 5),
                                               (6, 12, 6), (2, 3, 3), (4, 7, 7), (4, 9, 5),
                                               (4, 11, 6), (5, 13, 7), (6, 20, 7)])
def test_interleaved_overlap(chunks: int, costs: dict, ranks: int, mbs: int,
                             group: int) -> None:
    c = Costs.of(costs)
    r = run("interleaved-overlap", ranks, mbs, costs, chunks)
    makespan, idle, peaks = overlap_expected(c, ranks, mbs, chunks, group)
    if group == ranks:
        assert makespan == ranks * (c.F + c.B) + Fraction(chunks * mbs - (chunks - 1) * ranks
                                                          - 1) * c.FB / chunks
    assert r.makespan == r.span == makespan
    assert [p.idle for p in r.per_rank] == idle
    assert [p.peak_activations for p in r.per_rank] == peaks


@pytest.mark.parametrize("name, chunks", [("1f1b", None), ("interleaved", 2),
                                          ("interleaved", 3)])
@pytest.mark.parametrize("ranks, mbs", [(2, 6), (4, 8), (6, 12)])
def test_overlap_families_save_what_each_fb_saves(name: str, chunks: int | None, ranks: int,
                                                  mbs: int) -> None:
    """Against the plain family: equal when FB = F + B; otherwise the last rank's FB count
    vM - (v-1)R - 1 times (F + B - FB) / v earlier."""
    v = chunks or 1
    for fb in (3, 2, Fraction(5, 2)):
        costs = {"F": 1, "I": 1, "W": 1, "FB": fb}
        plain, over = run(name, ranks, mbs, costs, chunks), run(f"{name}-overlap", ranks, mbs,
                                                                costs, chunks)
        assert plain.makespan - over.makespan == Fraction((v * mbs - (v - 1) * ranks - 1)
                                                          * (3 - fb), v)


# ---- docs/schedules.md's worked example: R=4, M=8 ----------------------------------------

@pytest.mark.parametrize("name, chunks, makespan, span", [
    ("gpipe", None, 33, 33),
    ("1f1b", None, 33, 33),
    ("1f1b-overlap", None, 33, 33),  # FB = F + B: no gain, no loss
    ("interleaved", 2, Fraction(57, 2), Fraction(57, 2)),
    ("interleaved-overlap", 2, Fraction(57, 2), Fraction(57, 2)),
    ("zb-h1", None, 27, 27),
    ("zb-h2", None, 27, 24),
    ("zb-v", None, Fraction(51, 2), 24),
])
def test_worked_example_unit_costs(name: str, chunks: int | None, makespan, span) -> None:
    r = run(name, 4, 8, UNIT, chunks)
    assert (r.makespan, r.span, r.ideal) == (makespan, span, 24)


@pytest.mark.parametrize("name, makespan, idle, peak", [
    ("dualpipe", 26, 2, 5),
    ("dualpipev", 27, 3, 9),
])
def test_worked_example_dualpipe_family(name: str, makespan: int, idle: int, peak: int) -> None:
    r = run(name, 4, 8, FIGURE)
    assert r.makespan == makespan and r.ideal == 24
    assert [p.idle for p in r.per_rank] == [idle] * 4
    assert [p.peak_activations for p in r.per_rank] == [peak] * 4  # R+1, 2R+1


def test_worked_example_peak_activations() -> None:
    assert [p.peak_activations for p in run("1f1b", 4, 8, UNIT).per_rank] == [4, 3, 2, 1]
    assert [p.peak_activations for p in run("1f1b", 4, 2, UNIT).per_rank] == [2, 2, 2, 1]
    assert [p.peak_activations for p in run("gpipe", 4, 8, UNIT).per_rank] == [8] * 4
    assert run("zb-h2", 4, 8, UNIT).per_rank[0].peak_activations == 7  # 2R-1


@pytest.mark.parametrize("ranks, mbs", [(2, 4), (4, 8), (6, 12), (8, 16)])
def test_peak_activations_by_family(ranks: int, mbs: int) -> None:
    def peaks(name: str, costs: dict = UNIT) -> list[int]:
        return [p.peak_activations for p in run(name, ranks, mbs, costs).per_rank]

    assert peaks("1f1b") == [min(ranks - r, mbs) for r in range(ranks)]
    assert peaks("gpipe") == [mbs] * ranks
    assert peaks("zb-h2")[0] == 2 * ranks - 1
    assert peaks("dualpipe", FIGURE) == [ranks + 1] * ranks
    assert peaks("dualpipev", FIGURE) == [2 * ranks + 1] * ranks
