"""Memory that is really there: each entry of the per-rank breakdown and the law behind it."""

from __future__ import annotations

import pytest

from dualsim.cluster.profile import load_profile
from dualsim.generators import generate
from dualsim.sim.hardware_mode import simulate_hardware
from dualsim.sim.memory import GB, a2a_buffer_bytes, pair_bytes
from dualsim.workload.layout import build_layout
from dualsim.workload.model import load_model

H800 = load_profile("h800")


def layout(ep: int, gpus: int = 2048, ranks: int = 16):
    return build_layout(load_model("deepseek-v3"), ranks, 120,
                        [[k] for k in range(ranks)], ep=ep, gpus=gpus, microbatch_tokens=4096)


@pytest.fixture(scope="module")
def small():
    return simulate_hardware(generate("1f1b", 4, 8), "h800", "small-moe", gpus=64)


def test_deepep_buffers_follow_its_size_hints() -> None:
    # EP64 on 8-GPU nodes, 20 comm SMs: 10 channels, 8 NVLink peers, 8 RDMA peers; BF16 tokens
    # of 7168 (14336 B) plus 8 + 128*8 + 128*4 + 128*4 B of metadata; NVLink ring of 288 tokens,
    # RDMA ring of 128 tokens (send and receive halves)
    meta = 8 + 1024 + 512 + 512
    nvl = 10 * 8 * ((2 * 8 + 3) * 4 + 288 * (14336 + meta))
    rdma = 10 * 8 * ((2 * 8 + 2) * 2 * 4 + 128 * 2 * (14336 + meta + 16))
    assert a2a_buffer_bytes(layout(64), H800) == nvl + rdma
    # intranode EP8: no RDMA buffer, a 256-token ring
    assert a2a_buffer_bytes(layout(8), H800) == 10 * 8 * ((2 + 3) * 4 + 256 * (14336 + meta))
    # more comm SMs, more channels, more buffer; no expert parallelism, no buffer
    assert a2a_buffer_bytes(layout(64), H800.with_overrides(comm_sms=40)) == pytest.approx(
        2 * (nvl + rdma), rel=1e-4)
    assert a2a_buffer_bytes(layout(1, gpus=16), H800) == 0


def test_pair_components_split_the_activation_bytes() -> None:
    lay = layout(64)
    for p in range(len(lay.slices)):
        act, att, logits = pair_bytes(lay, p)
        units = lay.slices[p].units
        assert act + att + logits == pytest.approx(
            4096 * sum(u.activation_bytes for u in units))
        layers = sum(1 for u in units if u.name.startswith(("layer", "mtp")) and
                     not u.name.endswith("head"))
        assert att == 4096 * layers * (128 * 128 * 1.5 + 128 * 4)
        heads = sum(1 for u in units if u.name.endswith("head"))
        assert logits == 4096 * heads * 129280 * 2


def test_every_entry_is_reported_and_sums_to_the_peak(small) -> None:
    for r in small.per_rank:
        b = r.memory_breakdown_gb
        assert r.peak_memory_gb == pytest.approx(sum(b.values()), abs=1e-4)
        assert b["a2a_buffers"] > 0
        # workspace = the profile's fixed allowance + its fragmentation share of the rest
        rest = sum(v for k, v in b.items() if k != "workspace")
        assert b["workspace"] == pytest.approx(2.0 + 0.05 * rest, abs=1e-5)


def test_logits_only_where_a_head_is(small) -> None:
    last = small.per_rank[-1].memory_breakdown_gb
    # small-moe: vocab 102400, 4096 tokens: FP32 gradient (4 B) and kept BF16 logits per pair
    assert last["logits_grad"] == pytest.approx(4096 * 102400 * 4 / GB, abs=1e-5)
    assert last["logits"] == pytest.approx(4096 * 102400 * 2 / GB, abs=1e-5)  # one in flight
    for r in small.per_rank[:-1]:
        assert r.memory_breakdown_gb["logits_grad"] == 0 == r.memory_breakdown_gb["logits"]


def test_attention_output_follows_the_in_flight_pairs(small) -> None:
    # 1F1B rank 0 holds min(R, M) = 4 micro-batches at its peak
    r0 = small.per_rank[0]
    assert r0.peak_activations == 4
    lay = build_layout(load_model("small-moe"), 4, 8, [[k] for k in range(4)], ep=8, gpus=64,
                       microbatch_tokens=4096, layers_per_stage=small.extra["layers_per_stage"])
    per_pair = pair_bytes(lay, 0)[1]
    assert r0.memory_breakdown_gb["attention_output"] == pytest.approx(4 * per_pair / GB,
                                                                       abs=1e-5)


def test_memory_columns_add_up(small) -> None:
    mem = small.memory
    parts = [c for c in mem.columns if c.endswith("_gb") and c != "total_gb"]
    assert (mem[parts].sum(axis=1) - mem["total_gb"]).abs().max() < 1e-9
