"""What-if behaviours that must come out of the model (issue #3, point 7), on reduced configs.

deepseek-v3 on h800, 4 pipeline ranks (about 15 layers per stage), EP64 over 8 nodes
(256 GPUs), 16 micro-batches of 4096 tokens. The full-size defaults show the same
(README, bench/bench_hardware.py); one full-size DualPipe step checks the memory claim.
"""

from __future__ import annotations

import pytest

from dualsim.cluster.layer_times import moe_layer_times
from dualsim.generators import generate
from dualsim.cluster.profile import load_profile
from dualsim.sim.abstract import simulate
from dualsim.sim.hardware_mode import simulate_hardware
from dualsim.workload.layout import build_layout
from dualsim.workload.model import load_model

R, M, GPUS = 4, 16, 256
FREE = dict(ib_gbps=1e6, nvlink_gbps=1e6)


def _step(name: str, **kw) -> float:
    return simulate_hardware(generate(name, R, M), gpus=GPUS, **kw).makespan


@pytest.fixture(scope="module")
def steps() -> dict[str, tuple[float, float]]:
    return {n: (_step(n), _step(n, **FREE)) for n in ("dualpipe", "zb-v", "1f1b")}


def test_dualpipe_beats_exposed_all_to_all(steps) -> None:
    dp, zbv, ofob = steps["dualpipe"][0], steps["zb-v"][0], steps["1f1b"][0]
    assert zbv > 1.15 * dp  # ZB-V exposes every all-to-all
    assert ofob > 1.3 * dp


def test_free_links_shrink_the_edge_to_the_bubbles(steps) -> None:
    edge = steps["zb-v"][0] / steps["dualpipe"][0] - 1
    edge_free = steps["zb-v"][1] / steps["dualpipe"][1] - 1
    assert edge_free < edge / 4
    # what is left is the bubble difference of abstract mode with the same per-layer costs,
    # plus the per-kernel all-to-all latency that fast links do not remove
    p, m = load_profile("h800"), load_model("deepseek-v3")
    lay = build_layout(m, R, M, [[r] for r in range(R)], ep=64, gpus=GPUS,
                       microbatch_tokens=4096)
    c = moe_layer_times(lay, p)
    costs = {"F": c.f, "I": c.i, "W": c.w}
    abstract_edge = (simulate(generate("zb-v", R, M), costs).makespan
                     / simulate(generate("dualpipe", R, M), costs).makespan - 1)
    assert abs(edge_free - abstract_edge) < 0.05
    assert steps["dualpipe"][1] < steps["dualpipe"][0]


def test_comm_sms_have_an_interior_optimum() -> None:
    sms = [2, 4, 8, 12, 16, 20, 28, 40, 60]
    t = [_step("dualpipe", comm_sms=s) for s in sms]
    best = min(range(len(sms)), key=t.__getitem__)
    assert 0 < best < len(sms) - 1
    assert t[0] > 1.3 * t[best]  # too few SMs: all-to-all too slow to hide
    assert t[-1] > 1.2 * t[best]  # too many: compute starves


def test_full_size_dualpipe_fits_in_80gb() -> None:
    res = simulate_hardware(generate("dualpipe", 16, 120))
    assert res.extra["peak_memory_gb"] < 80
    assert all(r.peak_memory_gb < 80 for r in res.per_rank)
    assert not res.extra["warnings"]
    assert 1000 < res.extra["tokens_per_s_per_gpu"] < 2500
