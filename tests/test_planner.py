"""The planner: candidates, drop reasons (rules, layout, memory), ranking, CSV, Pareto, CLI."""

from __future__ import annotations

import csv
import io
import json
import socket

import pytest

import typer
from typer.testing import CliRunner

from dualsim import planner
from dualsim.errors import DualsimError
from dualsim.cli.plan import plan_command
from dualsim.planner import Candidate, Outcome, Setting
from dualsim.sim.hardware_mode import simulate_hardware
from dualsim.generators import generate

SMALL = Setting("h800", "small-moe", 64, 80.0)


def app() -> typer.Typer:
    a = typer.Typer()
    a.command()(plan_command)
    return a


def test_candidates_cross_product_in_fixed_order():
    cs = planner.candidates(["dualpipe", "1f1b"], [4], None, [16, 20], [None, 100.0],
                            eps=[8, 16], precisions=["fp8"])
    assert len(cs) == 2 * 2 * 2 * 2
    assert cs[0] == Candidate("dualpipe", 4, None, 16, None, None, 8, None, "fp8")
    assert cs[1] == Candidate("dualpipe", 4, None, 16, 100.0, None, 8, None, "fp8")
    assert [(c.ep, c.comm_sms) for c in cs[:8:2]] == [(8, 16), (8, 20), (16, 16), (16, 20)]
    assert [c.microbatches for c in planner.candidates(["1f1b"], [4], [8, 12], [20])] == [8, 12]


def test_micro_batches_follow_from_the_fixed_global_batch():
    """M = global batch x sequence / (tokens per micro-batch x pipelines): small-moe's 512
    sequences of 4096 tokens on 64 GPUs."""
    s = Setting("h800", "small-moe", 64, 80.0, global_batch=512)
    for ranks, tokens, m in ((4, 4096, 32), (4, 8192, 16), (2, 4096, 16), (8, 16384, 16)):
        c = planner.with_microbatches(Candidate("1f1b", ranks, None, 20, microbatch_tokens=tokens),
                                      s)
        assert c.microbatches == m
        assert m * tokens * (64 // ranks) == 512 * 4096  # the same tokens per step
    o = planner.screen(Candidate("1f1b", 4, None, 20, microbatch_tokens=8192), s)
    assert o.status == "open" and o.candidate.microbatches == 16
    assert o.figures["global_batch"] == 512


def test_a_configuration_that_cannot_hold_the_batch_is_dropped_with_the_reason():
    s = Setting("h800", "small-moe", 64, 80.0, global_batch=100)
    o = planner.screen(Candidate("1f1b", 4, None, 20), s)
    assert o.status == "dropped" and o.kind == "batch"
    assert o.reason == (
        "batch: --global-batch 100 (100 x 4096 tokens) does not split into whole micro-batches "
        "of 4096 tokens on each of the 16 pipelines (64 GPUs / 4 ranks): use a multiple of 16 "
        "sequences, e.g. 96 or 112")


def test_rule_breakers_are_dropped_with_the_rule():
    o = planner.screen(Candidate("dualpipe", 4, 7, 20), SMALL)
    assert o.status == "dropped" and o.reason.startswith("rule: dualpipe needs an even number")
    assert o.figures == {} and o.bound is None and o.kind == "rule"


def test_impossible_layouts_are_dropped_with_the_reason():
    o = planner.screen(Candidate("1f1b", 3, 8, 20), SMALL)  # 64 GPUs not divisible by 3
    assert o.status == "dropped" and o.reason.startswith("layout: ") and "divisible" in o.reason


def test_drop_reasons_name_where_m_and_the_gpus_came_from():
    """M from the global batch: the fix is a global batch (no --microbatches was given); the
    GPUs or the batch from the model preset: the reason says so, not '--gpus 64'."""
    given = Setting("h800", "small-moe", 64, 80.0, global_batch=144)  # M = 144 / 16 = 9
    o = planner.screen(Candidate("dualpipe", 4, None, 20), given)
    assert o.reason == ("rule: dualpipe needs an even number of micro-batches, got 9 (M from "
                        "--global-batch 144 on 16 pipelines): use --global-batch 128 (M=8) or "
                        "160 (M=10)")
    assert o.candidate.microbatches == 9
    o = planner.screen(Candidate("dualpipe", 4, 9, 20), given)  # M given: its own flag
    assert o.reason == ("rule: dualpipe needs an even number of micro-batches, got 9: use "
                        "--microbatches 8 or 10")
    preset = Setting("h800", "small-moe", 64, 80.0, global_batch=512,
                     preset=("gpus", "global_batch"))
    o = planner.screen(Candidate("dualpipe", 4, None, 20, microbatch_tokens=65536), preset)
    assert o.reason == ("rule: dualpipe needs M >= 2R micro-batches (R=4 needs at least 8), got "
                        "2 (M from the model preset's global batch 512 on 16 pipelines): pass "
                        "--global-batch 2048 (M=8)")
    o = planner.screen(Candidate("1f1b", 3, None, 20), preset)
    assert o.reason == ("layout: the model preset's GPU count 64 is not divisible by the 3 "
                        "pipeline ranks; pass --gpus with a multiple of 3, or other --ranks")
    o = planner.screen(Candidate("1f1b", 3, None, 20), given)
    assert o.reason == ("layout: --gpus 64 is not divisible by the 3 pipeline ranks; use a "
                        "multiple of 3, or other --ranks")


def test_plan_command_names_the_batch_and_gpus_the_user_gave(tmp_path):
    sweep = ["--model", "small-moe", "--schedules", "dualpipe", "--ep", "8", "--comm-sms", "20",
             "--precision", "fp8", "--workers", "1", "--out", str(tmp_path / "o")]
    for extra, msg in (
            (["--ranks", "4", "--global-batch", "144", "--microbatch-tokens", "4096"],
             "dualpipe needs an even number of micro-batches, got 9 (M from --global-batch 144 "
             "on 16 pipelines): use --global-batch 128 (M=8) or 160 (M=10)"),
            (["--ranks", "4", "--microbatch-tokens", "65536"],
             "dualpipe needs M >= 2R micro-batches (R=4 needs at least 8), got 2 (M from the "
             "model preset's global batch 512 on 16 pipelines): pass --global-batch 2048 (M=8)"),
            (["--ranks", "4", "--gpus", "48", "--microbatch-tokens", "4096"],
             "the model preset's global batch 512 (512 x 4096 tokens) does not split into whole "
             "micro-batches of 4096 tokens on each of the 12 pipelines (48 GPUs / 4 ranks): pass "
             "--global-batch with a multiple of 12 sequences, e.g. 504 or 516"),
            (["--ranks", "3", "--microbatch-tokens", "4096"],
             "the model preset's GPU count 64 is not divisible by the 3 pipeline ranks; pass "
             "--gpus with a multiple of 3, or other --ranks")):
        res = CliRunner().invoke(app(), sweep + extra)
        assert (res.exit_code, res.stdout) == (1, ""), res.output
        assert res.stderr == f"error: none of the 1 configurations can run: {msg}\n"
        assert not (tmp_path / "o").exists()


def test_memory_cap_drops_with_the_needed_amount_which_the_simulation_confirms():
    full = simulate_hardware(generate("gpipe", 4, 8), "h800", "small-moe", gpus=64, comm_sms=20)
    peak = full.extra["peak_memory_gb"]  # 25.9 GB on rank 3; its static state is 10.7 GB
    o = planner.screen(Candidate("gpipe", 4, 8, 20), Setting("h800", "small-moe", 64, 20.0))
    assert o.status == "dropped" and o.reason.startswith("memory: rank 3 needs ")
    # the screen's memory does not depend on timing: it is the simulation's, exactly
    assert o.figures["peak_memory_gb"] == peak > 20.0
    assert f"needs {peak:.1f} GB, over the 20 GB cap" in o.reason
    # below the weights, gradients and optimizer state alone, it says so without the rest
    o = planner.screen(Candidate("gpipe", 4, 8, 20), Setting("h800", "small-moe", 64, 10.0))
    assert o.reason == ("memory: rank 0 needs at least 10.7 GB (weights, gradients, optimizer "
                        "state, buffers), over the 10 GB cap")


def test_screen_bound_is_above_the_simulated_throughput():
    c = Candidate("zb-v", 4, 8, 20)
    o = planner.screen(c, SMALL)
    full = planner.simulate(c, SMALL)
    assert o.status == "open"
    assert o.bound >= full["tokens_per_s_per_gpu"]


def fake(name, tps, mem, order, status="kept"):
    return Outcome(Candidate(name, 4, 8, 20), status, "" if status == "kept" else "memory: x",
                   {"tokens_per_s_per_gpu": tps, "peak_memory_gb": mem, "step_time_s": 1.0,
                    "mfu": 0.3, "bubble_rate": 0.1}, order)


def test_ranking_by_throughput_then_memory_then_order():
    outs = [fake("a", 100, 50, 0), fake("b", 200, 60, 1), fake("c", 200, 40, 2),
            fake("d", 300, 90, 3, status="dropped"), fake("e", 100, 50, 4)]
    kept, dropped = planner.rank_outcomes(outs)
    assert [o.candidate.schedule for o in kept] == ["c", "b", "a", "e"]
    assert [o.candidate.schedule for o in dropped] == ["d"]


def test_pareto_front_keeps_points_not_beaten_on_both_axes():
    pts = [(10, 100), (20, 150), (15, 90), (30, 140), (25, 200)]
    assert planner.pareto_front(pts) == [0, 1, 4]


def test_sweep_in_a_pool_matches_in_process(tmp_path):
    cands = planner.candidates(["dualpipe", "zb-v"], [4], [8], [20]) + [
        Candidate("dualpipe", 4, 9, 20)]
    seen = []
    one = planner.sweep(cands, SMALL, workers=1, on_progress=lambda t: seen.append(t.evaluated))
    two = planner.sweep(cands, SMALL, workers=2)
    assert seen[-1] == 3 and one.evaluated == two.evaluated == 3
    assert [o.row() for o in one.ranked] == [o.row() for o in two.ranked]
    assert one.to_json() == two.to_json()
    assert [o.kind for o in one.dropped] == ["rule"] and one.dropped_by_kind() == {"rule": 1}
    data = one.to_json()
    assert data["evaluated"] == 3 and data["best"]["rank"] == 1 and data["pruned"] == []
    assert data["dropped"][0]["status"] == "dropped"
    rows = list(csv.DictReader(io.StringIO(planner.to_csv(one))))
    assert [r["rank"] for r in rows] == ["1", "2", ""]
    assert rows[2]["reason"].startswith("rule: ")
    planner.render_pareto(one, tmp_path / "p.png")
    planner.render_pareto(one, tmp_path / "q.png")
    assert (tmp_path / "p.png").read_bytes() == (tmp_path / "q.png").read_bytes()
    planner.render_pareto(one, tmp_path / "p.svg")
    best = one.best.candidate
    assert f"<!-- best: {best.describe()} -->" in (tmp_path / "p.svg").read_text()



def test_plan_csv_has_a_column_for_every_axis_of_the_sweep():
    from dataclasses import fields

    from dualsim.planner.output import CSV_COLUMNS

    assert {f.name for f in fields(Candidate)} <= set(CSV_COLUMNS)
    cands = planner.candidates(["dualpipe"], [4], [8], [20], precisions=["fp8", "bf16"])
    rows = list(csv.DictReader(io.StringIO(planner.to_csv(planner.sweep(cands, SMALL,
                                                                        workers=1)))))
    assert sorted(r["precision"] for r in rows) == ["bf16", "fp8"]  # two rows, told apart

def test_the_reference_layout_is_always_simulated_and_verified():
    ref = Candidate("1f1b", 4, 8, 20)
    res = planner.sweep(planner.candidates(["dualpipe"], [4], [8, 16], [20]), SMALL, workers=1,
                        keep=1, reference=ref)
    assert res.reference is not None and res.reference.kept
    assert res.reference.candidate == ref and res.evaluated == 3
    full = simulate_hardware(generate("1f1b", 4, 8), "h800", "small-moe", gpus=64, comm_sms=20)
    assert res.reference.figures["tokens_per_s_per_gpu"] == full.extra["tokens_per_s_per_gpu"]
    d = res.to_json()
    assert d["reference"]["reference"] is True and d["reference"]["rank"] == res.rank_of(
        res.reference)
    assert d["best_vs_reference"] == (res.best.figures["tokens_per_s_per_gpu"]
                                      / full.extra["tokens_per_s_per_gpu"])
    # a reference that is also in the grid is that configuration, not a second one
    res2 = planner.sweep([ref, Candidate("dualpipe", 4, 8, 20)], SMALL, workers=1,
                         reference=ref)
    assert res2.evaluated == 2 and res2.reference.order == 0


def test_plan_command_json_and_emit(tmp_path):
    emit = tmp_path / "best.json"
    res = CliRunner().invoke(app(), [
        "--model", "small-moe", "--gpus", "64", "--schedules", "dualpipe,1f1b",
        "--ranks", "4", "--microbatches", "8,9", "--comm-sms", "20", "--workers", "1",
        "--ep", "8", "--microbatch-tokens", "4096", "--precision", "fp8",
        "--out", str(tmp_path / "out"), "--json", "--emit", str(emit)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["evaluated"] == 5  # 4 in the grid + the published layout (dualpipe R=4, M=32)
    assert data["reference"]["schedule"] == "dualpipe" and data["reference"]["microbatches"] == 32
    assert sorted((r["schedule"], r["microbatches"]) for r in data["results"]) == [
        ("1f1b", 8), ("1f1b", 9), ("dualpipe", 8), ("dualpipe", 32)]
    tps = [r["tokens_per_s_per_gpu"] for r in data["results"]]
    assert tps == sorted(tps, reverse=True) and [r["rank"] for r in data["results"]] == [1, 2, 3, 4]
    assert len(data["dropped"]) == 1 and data["pruned"] == []
    assert data["dropped"][0]["reason"].startswith("rule: dualpipe needs an even number")
    best = data["best"]
    plan = json.loads(emit.read_text())
    assert plan["format"] == "dualsim-plan" and plan["version"] == 1
    assert (plan["schedule"], plan["ranks"], plan["microbatches"]) == (
        best["schedule"], best["ranks"], best["microbatches"])
    assert plan["world"] == {"profile": "h800", "model": "small-moe", "ep": best["ep"],
                             "gpus": 64, "comm_sms": 20, "microbatch_tokens": 4096,
                             "global_batch": best["microbatches"] * 64 // 4, "precision": "fp8"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "pareto.png", "pareto.svg", "plan.csv"]


def test_plan_command_rejects_bad_lists(tmp_path):
    res = CliRunner().invoke(app(), ["--model", "small-moe", "--ranks", "4,x",
                                     "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert res.stderr.strip() == ("error: bad --ranks value 'x': expected a number or a range, "
                                  "e.g. --ranks 8,16 or --ranks 8..32:4")
    for flag in ("--schedules", "--ranks", "--ib-gbps"):
        res = CliRunner().invoke(app(), ["--model", "small-moe", flag, " , ", "--out",
                                         str(tmp_path)])
        assert res.exit_code == 1
        assert res.stderr.strip() == (f"error: {flag} was given no values; leave it out for "
                                      "the default sweep")


def test_plan_command_holds_the_global_batch_and_takes_ranges(tmp_path):
    res = CliRunner().invoke(app(), [
        "--model", "small-moe", "--global-batch", "256", "--schedules", "1f1b,dualpipev",
        "--ranks", "2..4:2", "--ep", "8", "--microbatch-tokens", "4096,8192", "--precision",
        "fp8", "--comm-sms", "16..24:8", "--workers", "1", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    rows = data["results"] + data["pruned"] + data["dropped"]
    grid = [r for r in rows if not r["reference"]]
    assert len(grid) == 2 * 2 * 2 * 2  # families x R in {2, 4} x tokens x comm SMs {16, 24}
    assert {(r["ranks"], r["comm_sms"]) for r in grid} == {(2, 16), (2, 24), (4, 16), (4, 24)}
    for r in data["results"]:
        assert r["global_batch"] == 256
        assert r["microbatches"] * r["microbatch_tokens"] * (64 // r["ranks"]) == 256 * 4096
    assert data["setting"]["global_batch"] == 256
    assert data["reference"]["microbatches"] == 16  # dualpipe R=4: 256 sequences / 16 pipelines


def test_plan_command_rejects_conflicting_batch_options_and_bad_ranges(tmp_path):
    for extra, msg in (
            (["--global-batch", "256", "--microbatches", "8"],
             "error: --global-batch and --microbatches both set the micro-batches; give one of "
             "them"),
            (["--comm-sms", "32..8"],
             "error: bad --comm-sms range '32..8': give A..B with A <= B and a step of 1 or more, "
             "e.g. --comm-sms 8..32:4"),
            (["--precision", "fp16"], "error: bad --precision value 'fp16': use fp8 and/or bf16"),
            (["--global-batch", "0"], "error: --global-batch must be 1 or more, got 0")):
        res = CliRunner().invoke(app(), ["--model", "small-moe", "--out", str(tmp_path / "o")]
                                 + extra)
        assert res.exit_code == 1
        assert res.stderr.strip() == msg
        assert not (tmp_path / "o").exists()


def test_plan_command_rejects_non_positive_sizes_before_sweeping(tmp_path):
    for flag, val, msg in (("--gpus", "0", "must be 1 or more, got 0"),
                           ("--ep", "-1", "values must be 1 or more, got [-1]"),
                           ("--microbatch-tokens", "0", "values must be 1 or more, got [0]"),
                           ("--workers", "0", "must be 1 or more, got 0")):
        out = tmp_path / flag.strip("-")
        res = CliRunner().invoke(app(), ["--model", "small-moe", flag, val, "--out", str(out),
                                         "--json"])
        assert res.exit_code == 1
        assert res.stdout == ""
        assert res.stderr.strip() == f"error: {flag} {msg}"
        assert not out.exists()  # nothing swept, nothing written
    for flag, val in (("--ib-gbps", "0"), ("--nvlink-gbps", "nan"), ("--ib-gbps", "50,inf")):
        out = tmp_path / flag.strip("-")
        res = CliRunner().invoke(app(), ["--model", "small-moe", flag, val, "--out", str(out),
                                         "--json"])
        assert res.exit_code == 1
        assert res.stdout == ""
        assert res.stderr.strip() == (f"error: {flag} must be a positive number of GB/s, got "
                                      f"{val.split(',')[-1]}")
        assert not out.exists()


def test_plan_command_refuses_bad_executor_choices_before_sweeping(tmp_path):
    out = tmp_path / "o"
    for extra, msg in ((["--executor", "dask"], "error: unknown --executor 'dask': use local or ray"),
                       (["--ray-address", "ray://x:1"],
                        "error: --ray-address is for --executor ray; add --executor ray or drop "
                        "--ray-address")):
        res = CliRunner().invoke(app(), ["--model", "small-moe", "--out", str(out)] + extra)
        assert res.exit_code == 1
        assert res.stderr.strip() == msg
        assert not out.exists()


def test_a_simulation_without_its_timeline_has_every_figure_of_one_with_it():
    """The planner simulates with timeline=False (the DataFrame is a quarter of the time)."""
    s = generate("dualpipe", 4, 8)
    full = simulate_hardware(s, "h800", "small-moe", gpus=64, comm_sms=12)
    bare = simulate_hardware(s, "h800", "small-moe", gpus=64, comm_sms=12, timeline=False)
    assert len(full.timeline) > 0 and len(bare.timeline) == 0
    assert list(bare.timeline.columns) == list(full.timeline.columns)
    assert bare.to_dict() == full.to_dict() and bare.extra == full.extra
    assert bare.per_rank == full.per_rank and bare.memory.equals(full.memory)


def test_a_dense_model_sweeps_one_comm_sm_count_which_nothing_of_it_uses():
    from dualsim.cluster.profile import load_profile
    from dualsim.workload.model import load_model

    h800 = load_profile("h800")
    assert planner.default_axes(load_model("deepseek-v3"), h800)["comm_sms"] == [
        8, 12, 16, 20, 24, 32]
    axes = planner.default_axes(load_model("llama-70b"), h800)
    assert axes["comm_sms"] == [20] and axes["eps"] == [1]
    # why: without an all-to-all, the comm SMs change nothing of a dense model's step
    s = generate("1f1b", 4, 8)
    steps = {simulate_hardware(s, "h800", "llama-70b", gpus=64, comm_sms=n).extra["step_time_s"]
             for n in (8, 32)}
    assert len(steps) == 1


def test_an_unreachable_or_malformed_ray_address_is_one_error_line_at_once():
    """Ray retries an unreachable address for minutes, logging warnings; the planner checks
    the head's port first."""
    from dualsim.planner.executor import check_reachable

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(DualsimError) as e:
            check_reachable(address)
        assert str(e.value) == (f"cannot reach the Ray cluster at {address}: Connection "
                                "refused; start it (`ray start --head`), check --ray-address, "
                                "or leave it out for a local Ray")
    for address in ("head", "head:", "ray://:10001", "head:port"):
        with pytest.raises(DualsimError, match=f"^bad --ray-address '{address}': give "
                                               "host:port"):
            check_reachable(address)
    with socket.socket() as s:  # a listening port passes
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_reachable(f"127.0.0.1:{s.getsockname()[1]}")


def test_plan_command_refuses_bad_out_and_emit_before_sweeping(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    folder = tmp_path / "best.json"
    folder.mkdir()
    for extra, msg in (
            (["--out", str(blocker)],
             f"error: cannot write '{blocker / 'plan.csv'}': '{blocker}' is a file, not a folder"),
            (["--out", str(tmp_path / "o"), "--emit", str(folder)],
             f"error: cannot write '{folder}': it is a folder; give a file name"),
            (["--out", str(tmp_path / "o"), "--emit", str(tmp_path / "best.txt")],
             f"error: --emit '{tmp_path / 'best.txt'}': the file name must end in .json")):
        res = CliRunner().invoke(app(), ["--model", "small-moe", "--workers", "1"] + extra)
        assert res.exit_code == 1
        assert res.stderr.strip() == msg
        assert not (tmp_path / "o").exists()  # nothing swept, nothing written


def test_plan_command_with_emit_and_no_survivor_says_why(tmp_path):
    emit = tmp_path / "best.json"
    res = CliRunner().invoke(app(), [
        "--model", "small-moe", "--gpus", "64", "--schedules", "dualpipe", "--ranks", "4",
        "--microbatches", "9", "--comm-sms", "20", "--workers", "1", "--json", "--ep", "8",
        "--microbatch-tokens", "4096", "--precision", "fp8",
        "--out", str(tmp_path / "out"), "--emit", str(emit)])
    # every configuration breaks a rule: refused before the sweep, with the rule itself
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == ("error: none of the 1 configurations can run: dualpipe needs an even "
                          "number of micro-batches, got 9: use --microbatches 8 or 10\n")
    assert not emit.exists() and not (tmp_path / "out").exists()


def test_plan_command_with_emit_and_nothing_fitting_says_why(tmp_path):
    emit = tmp_path / "best.json"
    res = CliRunner().invoke(app(), [
        "--model", "small-moe", "--gpus", "64", "--schedules", "dualpipe", "--ranks", "4",
        "--microbatches", "8", "--comm-sms", "20", "--workers", "1", "--json", "--ep", "8",
        "--microbatch-tokens", "4096", "--precision", "fp8",
        "--memory-gb", "1", "--out", str(tmp_path / "out"), "--emit", str(emit)])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["files"] == [str(tmp_path / "out" / n) for n in
                             ("plan.csv", "pareto.png", "pareto.svg")]
    assert data["reference"]["status"] == "dropped"
    assert data["reference"]["reason"].startswith("memory: ")
    assert res.stderr == (
        f"error: none of the 2 configurations survived (memory); see "
        f"{tmp_path / 'out'}/plan.csv for each reason, or raise --memory-gb / change the sweep\n")
    assert not emit.exists()
