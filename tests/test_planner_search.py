"""The planner's search: its bound, its pruning against an exhaustive sweep, its executors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dualsim import planner
from dualsim.cli import app
from dualsim.generators import check, generate
from dualsim.errors import DualsimError
from dualsim.planner import Candidate, Setting
from dualsim.sim.hardware_mode import simulate_hardware

SMALL = Setting("h800", "small-moe", 64, 80.0)
# small enough to simulate every configuration: every family, two depths, two sizes of step,
# two comm-SM counts (80 configurations, a few break a family's rule)
GRID = planner.candidates(list(planner.DEFAULT_SCHEDULES), [2, 4], [8, 16], [8, 24])


@pytest.fixture(scope="module")
def exhaustive() -> dict[Candidate, float | None]:
    """tokens/s per GPU of every legal configuration of GRID, straight from the SimPy engine
    (None: over the memory cap)."""
    out: dict[Candidate, float | None] = {}
    for c in GRID:
        try:
            check(c.schedule, c.ranks, c.microbatches)
        except DualsimError:
            continue
        r = simulate_hardware(generate(c.schedule, c.ranks, c.microbatches), "h800",
                              "small-moe", gpus=64, comm_sms=c.comm_sms)
        fits = r.extra["peak_memory_gb"] <= SMALL.memory_gb
        out[c] = r.extra["tokens_per_s_per_gpu"] if fits else None
    return out


def ranking(exhaustive: dict[Candidate, float | None]) -> list[Candidate]:
    order = {c: i for i, c in enumerate(GRID)}
    return sorted((c for c, t in exhaustive.items() if t is not None),
                  key=lambda c: (-exhaustive[c], order[c]))


def test_the_bound_is_above_every_configurations_throughput(exhaustive) -> None:
    for c, tps in exhaustive.items():
        o = planner.screen(c, SMALL)
        assert (o.status == "dropped") == (tps is None)  # memory is decided exactly up front
        if tps is not None:
            assert o.bound >= tps, (c, o.bound, tps)


@pytest.mark.parametrize("keep", [1, 5])
def test_pruning_never_drops_what_an_exhaustive_sweep_ranks_first(exhaustive, keep) -> None:
    res = planner.sweep(GRID, SMALL, workers=1, keep=keep, round_size=4)
    best = ranking(exhaustive)
    # the first `keep` rows are the exhaustive sweep's, with the same figures
    assert [o.candidate for o in res.ranked[:keep]] == best[:keep]
    assert [o.figures["tokens_per_s_per_gpu"] for o in res.ranked[:keep]] == [
        exhaustive[c] for c in best[:keep]]
    # and the search did skip simulations: what it pruned could not have made the top
    assert res.pruned
    cut = exhaustive[best[keep - 1]]
    for o in res.pruned:
        assert exhaustive[o.candidate] <= o.bound < cut
    assert res.evaluated == len(GRID)
    assert res.simulated + len(res.pruned) == len(exhaustive)


def test_without_pruning_the_sweep_simulates_every_legal_configuration(exhaustive) -> None:
    res = planner.sweep(GRID, SMALL, workers=1, prune=False)
    assert res.pruned == [] and res.simulated == sum(1 for t in exhaustive.values() if t)
    assert [o.candidate for o in res.ranked] == ranking(exhaustive)


@pytest.mark.ray
def test_ray_executor_gives_the_local_executors_json(tmp_path) -> None:
    pytest.importorskip("ray")
    runner = CliRunner()
    args = ["plan", "--model", "small-moe", "--gpus", "64", "--ranks", "2,4", "--ep", "8",
            "--microbatch-tokens", "4096,8192", "--precision", "fp8", "--comm-sms", "8,24",
            "--json", "--top", "3"]
    local = runner.invoke(app, args + ["--workers", "1", "--out", str(tmp_path / "a")])
    ray = runner.invoke(app, args + ["--executor", "ray", "--workers", "2",
                                     "--out", str(tmp_path / "b")])
    assert local.exit_code == 0, local.output
    assert ray.exit_code == 0, ray.output
    a, b = json.loads(local.stdout), json.loads(ray.stdout)
    a.pop("files"), b.pop("files")
    assert a == b and a["pruned"]  # same ranking, same figures, same pruning
    assert (tmp_path / "a" / "plan.csv").read_bytes() == (tmp_path / "b" / "plan.csv").read_bytes()
