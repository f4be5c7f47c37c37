"""What-if mechanisms of hardware mode: each test asserts a mechanism, never a winner.

deepseek-v3 on h800, 4 pipeline ranks, EP64 over 8 nodes (256 GPUs), a few micro-batches of
4096 tokens; one full-size DualPipe step checks the memory claim.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from dualsim.cluster.compute import piece_times
from dualsim.cluster.profile import load_profile
from dualsim.datafiles import builtin_files
from dualsim.errors import ProfileError, ScheduleError
from dualsim.generators import FAMILIES, check, generate
from dualsim.sim.abstract import simulate
from dualsim.sim.hardware_mode import simulate_hardware
from dualsim.workload.model import load_model
from dualsim.workload.units import model_units

R, GPUS = 4, 256


def _step(name: str, mbs: int = 8, **kw) -> float:
    return simulate_hardware(generate(name, R, mbs), gpus=GPUS, **kw).makespan


def test_comm_sm_optimum_does_not_move_down_when_ib_gets_faster() -> None:
    # An all-to-all SM moves a fixed number of bytes per second, so a faster link needs more SMs
    # to drive it: the best --comm-sms of DualPipe is non-decreasing in the IB bandwidth.
    sms = [8, 12, 16, 20, 24, 32, 40, 48, 64, 96]
    best = []
    for ib in (25, 50, 100, 200):
        t = [_step("dualpipe", ib_gbps=ib, comm_sms=s) for s in sms]
        best.append(sms[min(range(len(sms)), key=t.__getitem__)])
    assert best == sorted(best)
    assert best[0] < best[-1]


@pytest.mark.parametrize("name", ["zb-v", "zb-h1"])
def test_no_overlapped_unit_no_slower_with_more_comm_sms(name: str) -> None:
    # F and I run their chains in sequence and W sends nothing: no all-to-all ever runs beside
    # compute, so more all-to-all SMs only speed the all-to-all up (until its link saturates)
    t = [_step(name, comm_sms=s) for s in (4, 8, 16, 20, 32, 64, 120)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(t, t[1:]))
    assert t[0] > t[3]


@pytest.mark.parametrize("name", ["zb-v", "dualpipe"])
def test_dynamic_sm_sharing_is_no_slower_than_a_static_partition(name: str) -> None:
    # dynamic: compute gets all SMs whenever no comm kernel runs; static: never the comm SMs
    dyn, static = (simulate_hardware(generate(name, R, 8), gpus=GPUS, sm_sharing=m)
                   for m in ("dynamic", "static"))
    assert dyn.makespan < static.makespan
    assert dyn.ideal == static.ideal  # the same compute work on all SMs
    assert dyn.extra["compute_stream_s"] < static.extra["compute_stream_s"]
    assert (dyn.extra["sm_sharing"], static.extra["sm_sharing"]) == ("dynamic", "static")


def _free_comm(profile_name: str = "h800"):  # noqa: ANN202
    """A profile on which communication costs nothing: no latency, no SM or link limit, no
    interference."""
    inf = 1e30
    return replace(load_profile(profile_name), ib_bandwidth=inf, nvlink_bandwidth=inf,
                   a2a_per_sm=inf, nccl_per_sm=inf, dispatch_latency=0.0, combine_latency=0.0,
                   a2a_peer_latency=0.0, nccl_latency=0.0, interference=0.0)


def _balanced_moe(tmp_path: Path) -> Path:
    """deepseek-v3 with 8 identical MoE layers, a one-token vocabulary and no MTP: every layer
    slice of 4 or 8 slices holds the same layers; the last one also the head (final norm and a
    one-token head and loss, ~1% of a layer)."""
    text = builtin_files("models")["deepseek-v3"].read_text()
    for key, val in (("layers", 8), ("dense_layers", 0), ("vocab", 1), ("mtp_depth", 0)):
        text = re.sub(rf"^{key} = \d+", f"{key} = {val}", text, count=1, flags=re.M)
    path = tmp_path / "balanced.toml"
    path.write_text(text)
    return path


def test_free_communication_gives_the_abstract_bubble(tmp_path: Path) -> None:
    # With communication free, hardware mode is abstract mode with each stage's compute as its
    # cost: the step lies between the abstract makespans without and with the head's work on
    # every stage (makespans grow with costs), and the bubble matches.
    model = str(_balanced_moe(tmp_path))
    prof = _free_comm()
    units = model_units(load_model(model), 4096, 64)  # EP64, as simulated
    layer = next(u for u in units if u.moe)
    f, i, w = (sum(t) for t in zip(*(piece_times(p, 4096, prof) for p in layer.pieces)))
    hf, hi, hw = piece_times(next(u for u in units if u.name == "head").pieces[0], 4096, prof)
    checked = []
    for family in FAMILIES:
        try:
            check(family, R, 8, None)
        except ScheduleError:
            continue
        sched = generate(family, R, 8)
        v = sched.chain_length / R  # stages per rank: a stage costs 1/v of a rank-worth
        hw_res = simulate_hardware(sched, prof, model, gpus=GPUS)
        assert set(hw_res.extra["layers_per_stage"]) == {8 // sched.chain_length}
        costs = {"F": 8 * f / R, "I": 8 * i / R, "W": 8 * w / R}  # per rank-worth of layers
        lo = simulate(sched, costs)
        hi_ = simulate(sched, {"F": costs["F"] + hf * v, "I": costs["I"] + hi * v,
                               "W": costs["W"] + hw * v})
        assert lo.makespan * (1 - 1e-9) <= hw_res.makespan <= hi_.makespan * (1 + 1e-9), family
        assert hi_.makespan < lo.makespan * 1.02
        assert hw_res.bubble_rate == pytest.approx(lo.bubble_rate, abs=0.01), family
        checked.append(family)
    assert {"1f1b", "zb-v", "dualpipe", "dualpipev", "interleaved"} <= set(checked)


@pytest.mark.parametrize("name", ["1f1b", "dualpipe"])
def test_routing_imbalance_raises_exposed_all_to_all(name: str) -> None:
    sched = generate(name, R, 8)
    one, two = (simulate_hardware(sched, gpus=GPUS, routing_imbalance=x) for x in (1.0, 2.0))
    assert two.extra["comm_exposed_s"] > one.extra["comm_exposed_s"]
    assert two.makespan > one.makespan
    assert (one.extra["routing_imbalance"], two.extra["routing_imbalance"]) == (1.0, 2.0)


def test_routing_imbalance_below_one_is_refused() -> None:
    with pytest.raises(ProfileError, match="--routing-imbalance must be a number >= 1"):
        simulate_hardware(generate("1f1b", R, 8), gpus=GPUS, routing_imbalance=0.5)


def test_full_size_dualpipe_fits_in_80gb() -> None:
    res = simulate_hardware(generate("dualpipe", 16, 120))
    assert res.extra["peak_memory_gb"] < 80
    assert all(r.peak_memory_gb < 80 for r in res.per_rank)
    assert not res.extra["warnings"]
