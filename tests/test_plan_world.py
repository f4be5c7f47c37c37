"""Plans remember their world: the planner records it, `simulate` reproduces the planner's
figures from the plan alone, flags override it (and say so), `check` and `run` accept it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualsim.cli import app
from dualsim.errors import PlanError
from dualsim.generators import generate
from dualsim.planfile import plan_to_json, read_plan, read_plan_world, write_plan
from dualsim.sim.hardware_mode import simulate_hardware
from dualsim.world import World

runner = CliRunner()
WORLD = World("h800", "small-moe", ep=8, gpus=64, comm_sms=12, microbatch_tokens=4096,
              ib_gbps=25.0)


def test_world_is_written_after_the_sizes_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    write_plan(generate("1f1b", 2, 2), str(path), WORLD)
    lines = path.read_text().splitlines()
    assert lines[6] == (' "world": {"profile": "h800", "model": "small-moe", "ep": 8, "gpus": 64, '
                        '"comm_sms": 12, "microbatch_tokens": 4096, "ib_gbps": 25.0},')
    s, w = read_plan_world(str(path))
    assert w == WORLD and s == read_plan(str(path))
    # without a world the plan text is the version-1 text it always was
    assert "world" not in plan_to_json(generate("1f1b", 2, 2))
    assert read_plan_world(str(tmp_path / "p.json"))[0].ranks == 2


@pytest.mark.parametrize("world, message", [
    ([1], "plan field 'world' must be an object, got [1]; re-emit the plan with "
          "`dualsim plan --emit`"),
    ({"profile": "h800"}, "plan field world.model is missing: a world names its profile and model"),
    ({"profile": "h800", "model": "m", "sms": 3},
     "plan field world.sms is unknown; a world records profile, model, ep, gpus, comm_sms, "
     "microbatch_tokens, global_batch, precision, seq_len, recompute, ib_gbps, nvlink_gbps, "
     "routing_imbalance"),
    ({"profile": "h800", "model": "m", "comm_sms": 0},
     "plan field world.comm_sms must be a positive integer, got 0"),
    ({"profile": "h800", "model": "m", "ep": True},
     "plan field world.ep must be a positive integer, got True"),
    ({"profile": "h800", "model": "m", "precision": "fp4"},
     "plan field world.precision must be \"fp8\" or \"bf16\", got 'fp4'"),
    ({"profile": "h800", "model": "m", "ib_gbps": "fast"},
     "plan field world.ib_gbps must be a positive number of GB/s, got 'fast'"),
    ({"profile": "h800", "model": "m", "routing_imbalance": 0.5},
     "plan field world.routing_imbalance must be a number >= 1, got 0.5"),
])
def test_a_bad_world_is_one_clear_error(tmp_path: Path, world, message) -> None:
    d = json.loads(plan_to_json(generate("1f1b", 2, 2)))
    d["world"] = world
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PlanError) as info:
        read_plan_world(str(path))
    assert info.value.message == message
    res = runner.invoke(app, ["simulate", str(path)])
    assert res.exit_code == 1 and res.stderr.strip() == f"error: {message}"


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> tuple[dict, Path]:
    """A plan emitted by `dualsim plan` with a comm-SM count that is not the profile's."""
    out = tmp_path_factory.mktemp("plan")
    res = runner.invoke(app, ["plan", "--model", "small-moe", "--gpus", "64", "--schedules",
                              "dualpipe,zb-v", "--ranks", "4", "--ep", "8", "--precision", "fp8",
                              "--microbatch-tokens", "4096", "--comm-sms", "32",
                              "--nvlink-gbps", "400", "--workers", "1",
                              "--json", "--out", str(out), "--emit", str(out / "best.json")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    # the published layout (20 comm SMs, 160 GB/s NVLink) must not win here, or this test
    # could not tell whether simulate used the recorded world
    assert data["best"]["reference"] is False
    return data, out / "best.json"


def test_simulate_reproduces_the_planners_figures_from_the_plan_alone(planned) -> None:
    data, best = planned
    res = runner.invoke(app, ["simulate", str(best), "--json"])
    assert res.exit_code == 0, res.output
    sim = json.loads(res.stdout)
    for key in ("tokens_per_s_per_gpu", "step_time_s", "mfu", "peak_memory_gb"):
        assert sim[key] == data["best"][key]
    assert (sim["comm_sms"], sim["ep"], sim["gpus"]) == (32, 8, 64)
    assert res.stderr == ""
    # the profile's own 20 SMs and NVLink give another number: the world mattered
    plain = simulate_hardware(generate("dualpipe", 4, 32), "h800", "small-moe", gpus=64)
    assert plain.extra["tokens_per_s_per_gpu"] != sim["tokens_per_s_per_gpu"]


def test_a_flag_overrides_the_recorded_value_and_says_so(planned) -> None:
    data, best = planned
    res = runner.invoke(app, ["simulate", str(best), "--comm-sms", "24", "--gpus", "64", "--json"])
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == ("note: the command line overrides the plan's recorded world: "
                                  "--comm-sms 24 (recorded 32)")
    b = data["best"]
    direct = simulate_hardware(generate(b["schedule"], b["ranks"], b["microbatches"]), "h800",
                               "small-moe", gpus=64, ep=8, comm_sms=24, nvlink_gbps=400.0)
    assert json.loads(res.stdout)["tokens_per_s_per_gpu"] == direct.extra["tokens_per_s_per_gpu"]


def test_abstract_costs_leave_the_world_aside_and_say_so(planned) -> None:
    _, best = planned
    res = runner.invoke(app, ["simulate", str(best), "--costs", "F=1,I=1,W=1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["mode"] == "abstract"
    assert res.stderr.strip() == ("note: --costs/--comm simulate the plan in abstract mode; its "
                                  "recorded world (h800 / small-moe) is not used")


def test_check_accepts_a_plan_with_a_world(planned) -> None:
    _, best = planned
    res = runner.invoke(app, ["check", str(best), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["valid"] is True


@pytest.mark.runtime
def test_run_accepts_a_plan_with_a_world(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "p.json"
    write_plan(generate("1f1b", 2, 2), str(path), WORLD)
    proc = subprocess.run([sys.executable, "-m", "dualsim.cli", "run", str(path), "--json",
                           "--steps", "1"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["matches_reference"] is True


@pytest.mark.parametrize("key, value, message", [
    ("gpus", 6, "records gpus=6 in its world, which is not divisible by the 4 pipeline ranks; "
                "re-emit the plan for a world that fits, or override it with --gpus: use a "
                "multiple of 4"),
    ("ep", 7, "records ep=7 in its world, which does not divide the 16 data-parallel GPUs per "
              "pipeline stage (gpus / ranks = 64 / 4); re-emit the plan for a world that fits, "
              "or override it with --ep: use --ep 1, 2, 4, 8, 16 (dividing 16 GPUs per stage "
              "and 64 routed experts)"),
    ("comm_sms", 200, "records comm_sms=200 in its world, which is out of range: profile h800 "
                      "has 132 SMs; re-emit the plan for a world that fits, or override it with "
                      "--comm-sms: choose 1..131"),
    ("ib_gbps", 1e9, "records ib_gbps=1000000000.0 in its world, which must be between 0.001 "
                     "and 1e+06 GB/s, got 1000000000.0; re-emit the plan for a world that fits, "
                     "or override it with --ib-gbps"),
    ("recompute", "foo", "records recompute=\"foo\" in its world: unknown option 'foo'; re-emit "
                         "the plan for a world that fits, or override it with --recompute: give "
                         "none or a comma-separated list of rmsnorm, mla_up_proj, swiglu_output, "
                         "full"),
    ("model", "bogus", "records model=\"bogus\" in its world: unknown model 'bogus': choose one "
                       "of deepseek-v3, llama-70b, small-moe or give a .toml file path (`dualsim "
                       "profiles` lists them); re-emit the plan for a world that fits, or "
                       "override it with --model"),
])
def test_a_recorded_value_that_does_not_fit_is_blamed_on_the_plan(tmp_path: Path, key, value,
                                                                  message) -> None:
    """Not '--gpus 6 is not divisible ...': the user passed no --gpus, the plan recorded it."""
    path = tmp_path / "p.json"
    write_plan(generate("1f1b", 4, 8), str(path), World(**{**WORLD.to_dict(), key: value}))
    res = runner.invoke(app, ["simulate", str(path)])
    assert (res.exit_code, res.stdout) == (1, "")
    assert res.stderr == f"error: plan {path} {message}\n"
    if key == "gpus":  # a flag that overrides it is the user's value: named as the flag
        res = runner.invoke(app, ["simulate", str(path), "--gpus", "6"])
        assert res.stderr.splitlines()[-1] == ("error: --gpus 6 is not divisible by the 4 "
                                               "pipeline ranks; use a multiple of 4, or other "
                                               "--ranks")
        res = runner.invoke(app, ["simulate", str(path), "--gpus", "64", "--json"])
        assert res.exit_code == 0 and json.loads(res.stdout)["gpus"] == 64


def test_a_recorded_global_batch_that_the_plan_does_not_hold_is_refused(tmp_path: Path) -> None:
    """1F1B, M = 4 on 64 GPUs / 2 ranks = 32 pipelines of 4096-token micro-batches: 4 x 32 x
    4096 / 4096 (small-moe's sequence) = 128 sequences per step. A world that says 100 is
    refused before any output is written; 128 is accepted; a flag that changes the batch on
    purpose (--gpus) skips the comparison."""
    path, trace = tmp_path / "p.json", tmp_path / "t.json"

    def plan(global_batch: int) -> None:
        write_plan(generate("1f1b", 2, 4), str(path),
                   World("h800", "small-moe", ep=8, gpus=64, microbatch_tokens=4096,
                         global_batch=global_batch))

    plan(100)
    r = runner.invoke(app, ["simulate", str(path), "--trace", str(trace)])
    assert r.exit_code == 1 and not trace.exists()
    assert r.output.strip().splitlines()[-1] == (
        f"error: plan {path} records global_batch=100 in its world, but its 4 micro-batches "
        "on every pipeline hold 128 sequences per step; re-emit the plan with `dualsim plan "
        "--emit`, or delete world.global_batch")
    assert runner.invoke(app, ["simulate", str(path), "--gpus", "128"]).exit_code == 0
    plan(128)
    assert runner.invoke(app, ["simulate", str(path)]).exit_code == 0
