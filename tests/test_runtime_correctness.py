"""The runtime reproduces the single-process reference: loss, every gradient, weights after 3 steps.

Spawning ranks is the slow part, so each launch runs several plans in one process group:
all ten families at R = 2 (fp64), a mix at R = 4 (fp64), and one fp32 run. The transfer path
NCCL takes (one process group per direction of each pair of ranks) runs on gloo too, at R = 2
and R = 4, for the families whose messages cross. With expert parallelism (two processes per
pipeline rank, experts split between them, tokens moved by all-to-all): all ten families at
R = 2 and DualPipe and ZB-V at R = 4 (8 processes, with the capacity rule dropping copies), in
fp32 to 1e-5 relative.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from dualsim.generators import generate  # noqa: E402
from dualsim.lower import lower  # noqa: E402
from dualsim.runtime.measure import a2a_figures  # noqa: E402
from dualsim.runtime.net import NetConfig  # noqa: E402
from dualsim.runtime.options import RunOptions  # noqa: E402
from dualsim.runtime.p2p import directions  # noqa: E402
from dualsim.runtime.supervisor import launch_local  # noqa: E402
from dualsim.runtime.verify import check_against_reference  # noqa: E402

pytestmark = pytest.mark.runtime

FAMILIES_R2 = [("gpipe", 3), ("1f1b", 4), ("1f1b-overlap", 4), ("interleaved", 4),
               ("interleaved-overlap", 4), ("zb-h1", 3), ("zb-h2", 4), ("zb-v", 4),
               ("dualpipe", 4), ("dualpipev", 4)]
FAMILIES_R4 = [("dualpipe", 8), ("dualpipev", 8), ("zb-v", 7), ("interleaved", 4), ("1f1b", 5),
               ("1f1b-overlap", 8), ("interleaved-overlap", 8)]
# families whose messages cross on a shared NCCL stream (tests/test_nccl_model.py), and 1F1B
DIRECTION_R2 = [("zb-h2", 4), ("interleaved", 4), ("zb-v", 4), ("dualpipe", 4), ("dualpipev", 4),
                ("1f1b", 4)]
# DualPipe sums copies' gradients between ranks 0 and 3; interleaved wraps from rank 3 to 0
DIRECTION_R4 = [("dualpipe", 8), ("interleaved", 4)]
EP_R2 = FAMILIES_R2
EP_R4 = [("dualpipe", 8), ("zb-v", 7)]


def _run(ranks: int, families: list[tuple[str, int]], options: RunOptions) -> dict[str, dict]:
    plans = [lower(generate(name, ranks, m)) for name, m in families]
    results = launch_local(plans, options)
    return {name: {**check_against_reference(plan, options, reports), **a2a_figures(reports),
                   "steps": [(s.step_end, s.cpu_s) for r in reports for s in r.steps]}
            for (name, _), plan, reports in zip(families, plans, results)}


@pytest.fixture(scope="module")
def r2_fp64() -> dict[str, dict]:
    return _run(2, FAMILIES_R2, RunOptions(NetConfig(dtype="float64"), steps=3))


@pytest.fixture(scope="module")
def r4_fp64() -> dict[str, dict]:
    return _run(4, FAMILIES_R4, RunOptions(NetConfig(dtype="float64", layers_per_slice=1),
                                           steps=3))


@pytest.fixture(scope="module")
def r2_ep2() -> dict[str, dict]:
    return _run(2, EP_R2, RunOptions(NetConfig(dtype="float32"), steps=2, ep=2))


@pytest.fixture(scope="module")
def r4_ep2() -> dict[str, dict]:
    cfg = NetConfig(dtype="float32", capacity_factor=1.0)
    return _run(4, EP_R4, RunOptions(cfg, steps=2, ep=2))


@pytest.fixture(scope="module")
def r2_directions() -> dict[str, dict]:
    return _run(2, DIRECTION_R2, RunOptions(NetConfig(dtype="float64"), steps=2,
                                            direction_groups=True))


@pytest.fixture(scope="module")
def r4_directions() -> dict[str, dict]:
    return _run(4, DIRECTION_R4, RunOptions(NetConfig(dtype="float64", layers_per_slice=1),
                                            steps=2, direction_groups=True))


def _assert_matches(r: dict, atol: float) -> None:
    assert r["tensors_checked"] > 0
    assert abs(r["loss"] - r["reference_loss"]) <= atol
    for got, want in zip(r["losses"], r["reference_losses"]):
        assert abs(got - want) <= atol
    assert r["max_abs_grad_diff"] <= atol
    assert r["max_abs_weight_diff"] <= atol


@pytest.mark.parametrize("family", [f for f, _ in FAMILIES_R2])
def test_every_family_matches_reference_on_2_ranks(r2_fp64: dict[str, dict], family: str) -> None:
    _assert_matches(r2_fp64[family], 1e-12)


@pytest.mark.parametrize("family", [f for f, _ in FAMILIES_R4])
def test_families_match_reference_on_4_ranks(r4_fp64: dict[str, dict], family: str) -> None:
    _assert_matches(r4_fp64[family], 1e-12)


@pytest.mark.parametrize("family", [f for f, _ in DIRECTION_R2])
def test_per_direction_groups_match_reference_on_2_ranks(r2_directions: dict[str, dict],
                                                          family: str) -> None:
    _assert_matches(r2_directions[family], 1e-12)


@pytest.mark.parametrize("family", [f for f, _ in DIRECTION_R4])
def test_per_direction_groups_match_reference_on_4_ranks(r4_directions: dict[str, dict],
                                                          family: str) -> None:
    _assert_matches(r4_directions[family], 1e-12)


def test_directions_cover_plan_messages_and_copy_sums() -> None:
    assert directions(lower(generate("1f1b", 4, 4))) == [(0, 1), (1, 0), (1, 2), (2, 1),
                                                         (2, 3), (3, 2)]
    # interleaved: stage 3 (rank 3) feeds stage 4 (rank 0)
    assert (3, 0) in directions(lower(generate("interleaved", 4, 4)))
    # DualPipe: ranks 0 and 3 hold copies of one slice and exchange their gradients
    dp = directions(lower(generate("dualpipe", 4, 8)))
    assert (0, 3) in dp and (3, 0) in dp and (0, 2) not in dp
    # the same pairs from the compute-only schedule: the groups do not depend on lowering
    assert directions(generate("dualpipe", 4, 8)) == dp


def test_dualpipe_copies_hold_the_summed_gradient(r4_fp64: dict[str, dict]) -> None:
    # each slice has two copies (one per chain); each saw half the micro-batches, and both
    # are compared to the reference's full gradient: 2 x 4 slices x params per slice
    r = r4_fp64["dualpipe"]
    single = r4_fp64["1f1b"]
    assert r["tensors_checked"] == 2 * single["tensors_checked"]
    assert r["max_abs_grad_diff"] <= 1e-12


def test_weights_moved_and_still_match(r2_fp64: dict[str, dict]) -> None:
    r = r2_fp64["dualpipev"]
    # three different losses: the optimizer did change the weights between steps
    assert len(set(round(x, 9) for x in r["reference_losses"])) == 3
    assert r["max_abs_weight_diff"] <= 1e-12


def test_fp32_matches_to_relative_1e5() -> None:
    families = [("dualpipev", 4), ("zb-h1", 2)]
    res = _run(2, families, RunOptions(NetConfig(dtype="float32", hidden=64, expert_hidden=64),
                                       steps=3))
    for name, _ in families:
        assert res[name]["max_rel_grad_diff"] <= 1e-5, name
        assert res[name]["max_rel_weight_diff"] <= 1e-5, name
        assert abs(res[name]["loss"] - res[name]["reference_loss"]) <= 1e-5 * res[name]["loss"]


def _assert_close_fp32(r: dict) -> None:
    assert r["max_rel_grad_diff"] <= 1e-5 and r["max_rel_weight_diff"] <= 1e-5
    for got, want in zip(r["losses"], r["reference_losses"]):
        assert abs(got - want) <= 1e-5 * abs(want)
    assert r["a2a_bytes_per_step"] > 0  # token rows really moved between processes


@pytest.mark.parametrize("family", [f for f, _ in EP_R2])
def test_expert_parallel_matches_reference_on_2x2_processes(r2_ep2: dict[str, dict],
                                                           family: str) -> None:
    _assert_close_fp32(r2_ep2[family])


@pytest.mark.parametrize("family", [f for f, _ in EP_R4])
def test_expert_parallel_with_capacity_matches_reference_on_4x2_processes(
        r4_ep2: dict[str, dict], family: str) -> None:
    _assert_close_fp32(r4_ep2[family])


@pytest.mark.parametrize("family", [f for f, _ in EP_R2])
def test_a_step_reports_the_cpu_time_it_cost(r2_ep2: dict[str, dict], family: str) -> None:
    """Every thread's CPU time from the step's start to its end: some, and no more than every
    core of the machine busy for the step's wall time (a count since the process started,
    with its imports and start-up, would not be bounded so)."""
    for wall, cpu in r2_ep2[family]["steps"]:
        assert 0 < cpu <= wall * (os.cpu_count() or 1) * 1.05 + 0.01


def test_expert_parallel_processes_hold_half_the_experts_and_all_dense_weights(
        r2_ep2: dict[str, dict]) -> None:
    # per block 7 dense tensors and 2 x 4 expert tensors; per slice 2 more (embeddings or head).
    # 1F1B at R = 2 without EP: 2 x (7 + 8 + 2) = 34 tensors; with EP 2, each of the 4
    # processes checks its slice's dense tensors and its 2 experts: 4 x (7 + 4 + 2) = 52
    assert r2_ep2["1f1b"]["tensors_checked"] == 52
    # DualPipe: every process holds two copies of a slice
    assert r2_ep2["dualpipe"]["tensors_checked"] == 104
