"""Cost model against DeepSeek's measured H800 trace: the rows held out of the calibration fit.

`dualsim calibrate` fits the profile's parameters on some rows of the trace (the forward pieces,
the attention-core backward kernel, the forward all-to-alls) and predicts the others; only the
predicted rows are asserted here (a fitted row would check the fit against its own data).
Also the all-to-all volume and routing mechanisms.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dualsim.calibrate.hardware_fit import calibrate_profile
from dualsim.calibrate.rows import DEFAULT_FITTED, FITTED_KEYS
from dualsim.cluster.comm import a2a_copies, a2a_flow
from dualsim.cluster.profile import load_profile
from dualsim.datafiles import data_dir
from dualsim.workload.layout import build_layout
from dualsim.workload.model import load_model

R = 16
TRACE = Path(__file__).parent / "data" / "traces" / "deepseek-v3-train-trace.trimmed.json.gz"

#: the largest |model / measured - 1| of each predicted row (docs/validation.md gives the table)
PREDICTED_BOUND = {"pairs_other": 0.05, "attn_gemm_f": 0.15, "attn_gemm_i": 0.20,
                   "attn_other_i": 0.20, "attn_gemm_w": 0.35, "mlp_gemm_f": 0.05,
                   "mlp_gemm_i": 0.05, "mlp_other_i": 0.45, "a2a_combine_b": 0.05,
                   "a2a_dispatch_b": 0.10}


@pytest.fixture(scope="module")
def calibration():
    return calibrate_profile(TRACE, "h800", "deepseek-v3")


def test_default_split_predicts_at_least_as_many_rows_as_it_fits(calibration) -> None:
    predicted = [r.name for r in calibration.result.predicted]
    assert set(predicted) == set(PREDICTED_BOUND)
    assert {r.name for r in calibration.result.fitted} == set(DEFAULT_FITTED)
    assert len(predicted) >= len(calibration.result.fitted)


def test_shipped_h800_is_this_calibration(calibration) -> None:
    """The h800 profile's trace-fitted fields are exactly what `dualsim calibrate` writes
    (regenerate: dualsim calibrate TRACE --profile h800 --model deepseek-v3 -o
    dualsim/data/profiles/h800.toml)."""
    shipped = tomllib.loads((data_dir("profiles") / "h800.toml").read_text())
    assert [p.key for p in calibration.result.params] == list(FITTED_KEYS)
    for p in calibration.result.params:
        section, key = p.key.split(".")
        assert shipped[section][key]["value"] == p.value, p.key
        assert shipped[section][key]["source"].startswith("dualsim calibrate: fit to")


@pytest.mark.parametrize("name", sorted(PREDICTED_BOUND))
def test_predicted_row_is_within_its_bound(calibration, name: str) -> None:
    row = next(r for r in calibration.result.predicted if r.name == name)
    assert abs(row.error) <= PREDICTED_BOUND[name], (
        f"{name}: model {row.model_ms:.3f} ms vs measured {row.measured_ms:.3f} ms")


def test_node_limited_routing_copies() -> None:
    ib, nvl = a2a_copies(load_model("deepseek-v3"), 64, 8)
    assert ib == pytest.approx(3.5)  # 4 - 4/8
    # 4 nodes reached, 8/4 = 2 experts each: 8 (1 - (7/8)^2) distinct GPUs, 7/8 of them remote
    assert nvl == pytest.approx(4 * 8 * (1 - (7 / 8) ** 2) * 7 / 8, rel=1e-15)  # 6.5625


def test_dispatch_volume_and_bottleneck() -> None:
    m, p = load_model("deepseek-v3"), load_profile("h800")
    t = a2a_flow(m, p, 64, 4096, "dispatch")
    assert t.link == "ib"
    assert t.nbytes == pytest.approx(4096 * 3.5 * 7168 * (1 + 4 / 128))
    c = a2a_flow(m, p, 64, 4096, "combine")
    assert c.nbytes == pytest.approx(4096 * 3.5 * 7168 * 2)
    # intranode EP: NVLink only
    assert a2a_flow(m, p, 8, 4096, "dispatch").link == "nvlink"


def test_pp_transfer_uses_nvlink_inside_a_node() -> None:
    from dualsim.cluster.comm import pp_flow

    p = load_profile("h800")
    dense = build_layout(load_model("llama-70b"), 16, 64, [[k] for k in range(16)], ep=1,
                         gpus=256, microbatch_tokens=4096)
    assert pp_flow(dense, p, 6, 7).link == "nvlink"  # ranks 0-7 share node 0
    assert pp_flow(dense, p, 7, 8).link == "ib"
    assert pp_flow(dense, p, 7, 8).nbytes == 4096 * 8192 * 2
    moe = build_layout(load_model("deepseek-v3"), R, 120, [[k, R - 1 - k] for k in range(R)],
                       ep=64, gpus=2048, microbatch_tokens=4096)
    assert pp_flow(moe, p, 0, 1).link == "ib"  # a node holds 8 EP peers of one stage
