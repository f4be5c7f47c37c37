"""Cost model calibration against DeepSeek's measured H800 trace (DESIGN.md §6), within ±20%."""

from __future__ import annotations

import pytest

from dualsim.cluster.comm import a2a_copies, a2a_flow, a2a_saturation

from dualsim.cluster.layer_times import moe_layer_times
from dualsim.cluster.profile import load_profile
from dualsim.workload.layout import build_layout
from dualsim.workload.model import load_model

R = 16


@pytest.fixture(scope="module")
def calib():
    m, p = load_model("deepseek-v3"), load_profile("h800")
    lay = build_layout(m, R, 120, [[k, R - 1 - k] for k in range(R)], ep=64, gpus=2048,
                       microbatch_tokens=4096)
    return moe_layer_times(lay, p)


# (model quantity, DeepSeek measured ms): each must land within ±20%
MEASURED = [
    ("f", 9.0), ("attn_f", 4.4), ("mlp_f", 4.6), ("i", 14.6), ("attn_i", 9.3), ("mlp_i", 5.3),
    ("w", 8.8), ("dispatch", 4.35), ("combine", 6.0), ("dispatch_bwd_fp8", 3.4),
    ("combine_bwd_bf16", 6.4),
]


@pytest.mark.parametrize("name,ms", MEASURED)
def test_calibration_within_20_percent(calib, name: str, ms: float) -> None:
    got = getattr(calib, name) * 1e3
    assert got == pytest.approx(ms, rel=0.20), f"{name}: model {got:.2f} ms vs measured {ms}"


def test_node_limited_routing_copies() -> None:
    ib, nvl = a2a_copies(load_model("deepseek-v3"), 64, 8)
    assert ib == pytest.approx(3.5)  # 4 - 4/8
    assert 6 < nvl < 8


def test_dispatch_volume_and_bottleneck() -> None:
    m, p = load_model("deepseek-v3"), load_profile("h800")
    t = a2a_flow(m, p, 64, 4096, "dispatch")
    assert t.link == "ib"
    assert t.nbytes == pytest.approx(4096 * 3.5 * 7168 * (1 + 4 / 128))
    c = a2a_flow(m, p, 64, 4096, "combine")
    assert c.nbytes == pytest.approx(4096 * 3.5 * 7168 * 2)
    # intranode EP: NVLink only
    assert a2a_flow(m, p, 8, 4096, "dispatch").link == "nvlink"


def test_bandwidth_saturates_with_comm_sms() -> None:
    p = load_profile("h800")
    s = [a2a_saturation(p.with_overrides(comm_sms=n)) for n in (4, 10, 20, 40)]
    assert s == sorted(s) and s[-1] < 1
    assert s[2] == pytest.approx(0.95, abs=0.01)
    assert s[3] - s[2] < 0.05 < s[1] - s[0]


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
