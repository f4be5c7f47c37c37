"""Shape-aware GEMM model: its mechanisms, and its fit to DeepGEMM's H800 table (held-out rows)."""

from __future__ import annotations

import pytest

from dualsim.cluster.gemm import (BLOCK_NS, GemmParams, GemmShape, Tile, choose_tile,
                                  gemm_time)
from dualsim.cluster.gemm_fit import (H800_FP8_PEAK, H800_HBM, H800_SMS, fit_report,
                                      load_table)

PARAMS = GemmParams({"fp8": 0.8, "bf16": 0.8}, 0.8, 80e9, 2e-6)


def t(shape: GemmShape, dtype: str = "fp8", params: GemmParams = PARAMS, **kw) -> float:
    return gemm_time(shape, dtype, sms=H800_SMS, peak_flops=H800_FP8_PEAK,
                     hbm_bandwidth=H800_HBM, params=params, **kw)


@pytest.fixture(scope="module")
def report():
    return fit_report()


# ---- the fit: held-out rows only ---------------------------------------------------------------

def test_table_and_split() -> None:
    rows = load_table()
    assert len(rows) == 22
    held = [r.label() for r in rows if r.held_out]
    assert held == ["64 x 24576 x 1536", "64 x 4096 x 7168", "128 x 24576 x 1536",
                    "128 x 4096 x 7168", "4096 x 24576 x 1536", "4096 x 4096 x 7168",
                    "4 x 8192 x 7168 x 2048"]
    # the table's memory column is (M K + groups N K + 2 M N) bytes at its TFLOPS: our byte count
    r = rows[0]
    assert (r.shape.operand_bytes("fp8") + r.shape.output_bytes()) / r.seconds / 1e9 == \
        pytest.approx(1688, rel=0.005)


@pytest.mark.parametrize("index", [1, 4, 7, 10, 13, 16, 19])
def test_held_out_rows_within_10_percent(report, index: int) -> None:
    row = report.rows[index]
    assert row.row.held_out
    assert abs(row.error) < 0.10, f"{row.row.label()}: {row.error:+.1%}"


def test_every_row_left_out_within_20_percent(report) -> None:
    """Leave-one-out: each row predicted by a fit that never saw it."""
    worst = max(report.rows, key=lambda r: abs(r.loo_error))
    assert abs(worst.loo_error) < 0.20, f"{worst.row.label()}: {worst.loo_error:+.1%}"


def test_fit_is_physical(report) -> None:
    p = report.params
    assert 0.5 < p.mainloop_fraction["fp8"] < 1 and 0.5 < p.hbm_fraction < 1
    assert 20e9 < p.sm_load_bandwidth < 200e9 and 0 < p.launch < 10e-6


# ---- mechanisms --------------------------------------------------------------------------------

def test_tile_choice_fills_the_sms() -> None:
    # N = 2112 = 132 x 16: one wave of 132 tiles with BLOCK_N 16 (M <= 64: BLOCK_M 64)
    tile = choose_tile(GemmShape(1, 64, 2112, 7168), 132)
    assert (tile.block_m, tile.block_n, tile.tiles, tile.waves) == (64, 16, 132, 1)
    grouped = choose_tile(GemmShape(4, 8192, 4096, 7168, grouped=True), 132)
    assert grouped.block_m == 128 and grouped.block_n in BLOCK_NS
    assert grouped.tiles == 4 * 64 * -(-4096 // grouped.block_n)


def test_one_tile_more_than_the_sms_costs_a_wave() -> None:
    # grouped (BLOCK_M 128): 132 groups of one 128 x 128 tile vs 133; memory made free
    free = GemmParams({"fp8": 0.8}, 1.0, 1e18, 0.0)
    full = gemm_time(GemmShape(132, 128, 128, 65536, grouped=True), "fp8", sms=132,
                     peak_flops=H800_FP8_PEAK, hbm_bandwidth=1e18, params=free)
    over = gemm_time(GemmShape(133, 128, 128, 65536, grouped=True), "fp8", sms=132,
                     peak_flops=H800_FP8_PEAK, hbm_bandwidth=1e18, params=free)
    assert full == pytest.approx(2 * 128 * 128 * 65536 / (H800_FP8_PEAK / 132 * 0.8))
    assert choose_tile(GemmShape(133, 128, 128, 65536, grouped=True), 132).waves == 2
    assert over == pytest.approx(2 * full)  # 0.8% more work, a second wave of one tile


def test_compute_bound_large_gemm_reaches_the_mainloop_fraction() -> None:
    # 8192 tiles of 256 x 128 on 132 SMs: 63 waves, the last one 8 tiles short; the main loop
    # runs at 0.8 of peak, then the 2-byte output is written at 0.8 of HBM
    s = GemmShape(1, 16384, 16384, 16384)
    assert choose_tile(s, H800_SMS) == Tile(256, 128, 8192, 63)
    waves_cost = 63 * 132 / 8192
    assert t(s) == pytest.approx(2e-6 + s.flops / (0.8 * H800_FP8_PEAK) * waves_cost
                                 + 2 * 16384 * 16384 / (0.8 * H800_HBM), rel=1e-12)


def test_small_m_is_memory_bound() -> None:
    # M = 64: time is the weight read; M = 32 saves almost nothing, efficiency halves
    a, b = GemmShape(1, 64, 7168, 16384), GemmShape(1, 32, 7168, 16384)
    assert t(b) == pytest.approx(t(a), rel=0.03)
    for m, shape in ((64, a), (32, b)):  # (A + weight) read, BF16 output written, at 0.8 HBM
        assert t(shape) == pytest.approx(
            2e-6 + (m * 16384 + 7168 * 16384 + 2 * m * 7168) / (H800_HBM * 0.8), rel=1e-12)
    assert a.flops / t(a) < 0.2 * H800_FP8_PEAK


def test_bf16_moves_twice_the_bytes() -> None:
    s = GemmShape(1, 64, 7168, 16384)  # memory-bound: the A and weight reads double
    assert t(s, "bf16") == pytest.approx(
        2e-6 + (2 * (64 * 16384 + 7168 * 16384) + 2 * 64 * 7168) / (H800_HBM * 0.8), rel=1e-12)


def test_fewer_sms_take_more_waves() -> None:
    # 6656 tiles of 128 x 160: 51 waves on 132 SMs, 60 on 112; each wave's per-SM operand
    # loads bound the main loop, so it grows by 60/51 (not 132/112)
    s = GemmShape(4, 8192, 4096, 7168, grouped=True)
    assert choose_tile(s, 132) == Tile(128, 160, 6656, 51)
    assert choose_tile(s, 112) == Tile(128, 160, 6656, 60)
    fixed = 2e-6 + s.output_bytes() / (H800_HBM * 0.8)
    assert t(s, sms_used=112) - fixed == pytest.approx((t(s) - fixed) * 60 / 51, rel=1e-12)
    assert t(s) - fixed == pytest.approx(51 * (128 + 160) * 7168 / 80e9, rel=1e-12)


def test_empty_gemm_costs_nothing() -> None:
    assert t(GemmShape(1, 0, 4096, 7168)) == 0.0


def test_h800_profile_carries_this_fit(report) -> None:
    """The held-out rows above test the numbers the simulator uses: h800's [gemm] is this fit."""
    from dualsim.cluster.profile import load_profile

    g, p = load_profile("h800").gemm, report.params
    assert g.mainloop_fraction["fp8"] == pytest.approx(p.mainloop_fraction["fp8"], abs=6e-4)
    assert g.hbm_fraction == pytest.approx(p.hbm_fraction, abs=6e-4)
    assert g.sm_load_bandwidth == pytest.approx(p.sm_load_bandwidth, abs=0.06e9)
    assert g.launch == pytest.approx(p.launch, abs=0.06e-6)
