"""The communication law (cluster/comm.py) and its fit to DeepEP and DeepSeek (comm_fit.py)."""

from __future__ import annotations

import pytest

from dualsim.cluster.comm import a2a_copies, a2a_flow, a2a_latency, pp_flow
from dualsim.cluster.comm_fit import fit_deepep
from dualsim.cluster.profile import load_profile
from dualsim.workload.layout import build_layout
from dualsim.workload.model import load_model


@pytest.fixture(scope="module")
def fit():
    p = load_profile("h800")
    return fit_deepep(load_model("deepseek-v3"), p.gpus_per_node, p.ib_bandwidth,
                      p.nvlink_bandwidth)


def test_profile_holds_the_fit(fit) -> None:
    # the shipped h800 numbers are the fit, rounded as written in h800.toml
    p = load_profile("h800")
    assert p.a2a_per_sm == pytest.approx(fit.per_sm, abs=0.005e9)
    assert p.dispatch_latency == pytest.approx(fit.dispatch_base, abs=0.5e-6)
    assert p.combine_latency == pytest.approx(fit.combine_base, abs=0.5e-6)
    assert p.a2a_peer_latency == pytest.approx(fit.per_peer, abs=0.005e-6)
    assert p.a2a_overlap_rate == pytest.approx(fit.overlap_rate, abs=0.005)


def test_held_out_deepep_rows(fit) -> None:
    # EP16 (NVLink-bound, as DeepEP's maintainers say) and EP8 (intranode) were not fitted
    held = {r.name: r for r in fit.held_out}
    assert set(held) == {f"DeepEP EP{ep} {k} (ms)" for ep in (8, 16)
                         for k in ("dispatch", "combine")}
    for r in fit.held_out:
        assert abs(r.error) < 0.15, (r.name, r.measured, r.model)


def test_fitted_rows_are_reported_with_their_errors(fit) -> None:
    names = [r.name for r in fit.fitted]
    assert names[:4] == ["DeepEP EP32 dispatch (ms)", "DeepEP EP32 combine (ms)",
                         "DeepEP EP64 dispatch (ms)", "DeepEP EP64 combine (ms)"]
    assert len(fit.fitted) == 8  # + the trace's four overlapped all-to-all kernels


def test_kernel_time_is_latency_plus_bytes_over_sm_or_link_rate() -> None:
    p, m = load_profile("h800"), load_model("deepseek-v3")
    ib, nvl = a2a_copies(m, 64, 8)  # 3.5 and 6.56: the SMs move both legs' copies
    for sms in (4, 10, 20, 40):
        q = p.with_overrides(comm_sms=sms)
        f = a2a_flow(m, q, 64, 4096, "dispatch")
        assert f.sms == sms and f.link == "ib"
        assert f.per_sm == pytest.approx(p.a2a_per_sm * ib / (ib + nvl), rel=1e-15)
        rate = min(sms * f.per_sm, 50e9)
        assert f.standalone_time(q) == f.latency + f.nbytes / rate
        assert f.standalone_time(q, overlapped=True) == (
            f.latency + f.nbytes / min(sms * f.per_sm * p.a2a_overlap_rate, 50e9))
    # past the knee (20 SMs on DeepSeek's cluster) more SMs buy nothing
    t = [a2a_flow(m, q, 64, 4096, "combine").standalone_time(q)
         for q in (p.with_overrides(comm_sms=s) for s in (20, 30, 60))]
    assert t[0] == t[1] == t[2]
    # faster links move the knee: IB at 100 GB/s (and NVLink at 320), 40 SMs
    fast = p.with_overrides(ib_gbps=100, nvlink_gbps=320)
    t20, t40, t60 = (a2a_flow(m, fast.with_overrides(comm_sms=s), 64, 4096, "combine")
                     .standalone_time(fast) for s in (20, 40, 60))
    assert t20 > t40 == t60


def test_fixed_cost_grows_with_the_number_of_peers() -> None:
    p = load_profile("h800")
    for kind, base in (("dispatch", p.dispatch_latency), ("combine_bwd", p.dispatch_latency),
                       ("combine", p.combine_latency), ("dispatch_bwd", p.combine_latency)):
        for ep in (8, 16, 64, 256):
            assert a2a_latency(p, kind, ep) == base + p.a2a_peer_latency * (ep - 1)
    assert a2a_latency(p, "dispatch", 256) > a2a_latency(p, "dispatch", 64)


def test_routing_imbalance_scales_the_bytes_of_the_hottest_peer() -> None:
    p, m = load_profile("h800"), load_model("deepseek-v3")
    one, two = (a2a_flow(m, p, 64, 4096, "combine", x) for x in (1.0, 2.0))
    assert two.nbytes == 2 * one.nbytes and two.latency == one.latency


def test_pp_and_dp_kernels_hold_their_nccl_channels() -> None:
    p = load_profile("h800")
    lay = build_layout(load_model("llama-70b"), 16, 64, [[k] for k in range(16)], ep=1,
                       gpus=256, microbatch_tokens=4096)
    f = pp_flow(lay, p, 7, 8)
    assert (f.sms, f.per_sm, f.link) == (2, 25e9, "ib")
    assert f.latency == pytest.approx(20e-6)
    assert f.standalone_time(p) == f.latency + f.nbytes / 50e9
