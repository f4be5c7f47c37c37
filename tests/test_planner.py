"""The planner: candidates, drop reasons (rules, layout, memory), ranking, CSV, Pareto, CLI."""

from __future__ import annotations

import csv
import io
import json

from typer.testing import CliRunner

from dualsim import planner
from dualsim.planner import Candidate, Outcome, Setting

SMALL = Setting("h800", "small-moe", 64, 80.0)


def test_candidates_cross_product_in_fixed_order():
    cs = planner.candidates(["dualpipe", "1f1b"], [4], None, [16, 20], [None, 100.0])
    assert len(cs) == 2 * 3 * 2 * 2  # default micro-batches 2R, 3R, 4R
    assert cs[0] == Candidate("dualpipe", 4, 8, 16, None, None)
    assert cs[1] == Candidate("dualpipe", 4, 8, 16, 100.0, None)
    assert [c.microbatches for c in cs[::4]] == [8, 12, 16, 8, 12, 16]


def test_rule_breakers_are_dropped_with_the_rule():
    o = planner.evaluate(Candidate("dualpipe", 4, 7, 20), SMALL)
    assert not o.kept and o.reason.startswith("rule: dualpipe needs an even number of micro")
    assert o.figures == {}


def test_impossible_layouts_are_dropped_with_the_reason():
    o = planner.evaluate(Candidate("1f1b", 3, 8, 20), SMALL)  # 64 GPUs not divisible by 3
    assert not o.kept and o.reason.startswith("layout: ") and "divisible" in o.reason


def test_memory_cap_drops_with_the_needed_amount():
    tight = Setting("h800", "small-moe", 64, 10.0)
    o = planner.evaluate(Candidate("gpipe", 4, 8, 20), tight)
    assert not o.kept and o.reason.startswith("memory: rank ")
    assert o.figures["peak_memory_gb"] > 10.0
    assert f"needs {o.figures['peak_memory_gb']:.1f} GB, over the 10 GB cap" in o.reason


def fake(name, tps, mem, order, kept=True):
    return Outcome(Candidate(name, 4, 8, 20), kept, "" if kept else "memory: x",
                   {"tokens_per_s_per_gpu": tps, "peak_memory_gb": mem, "step_time_s": 1.0,
                    "mfu": 0.3, "bubble_rate": 0.1}, order)


def test_ranking_by_throughput_then_memory_then_order():
    outs = [fake("a", 100, 50, 0), fake("b", 200, 60, 1), fake("c", 200, 40, 2),
            fake("d", 300, 90, 3, kept=False), fake("e", 100, 50, 4)]
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
    one = planner.sweep(cands, SMALL, workers=1, on_done=seen.append)
    two = planner.sweep(cands, SMALL, workers=2)
    assert len(seen) == 3 and one.evaluated == two.evaluated == 3
    assert [o.row() for o in one.ranked] == [o.row() for o in two.ranked]
    assert one.best.candidate.schedule == "dualpipe"  # overlapped all-to-all wins on MoE
    assert [o.kind for o in one.dropped] == ["rule"] and one.dropped_by_kind() == {"rule": 1}
    data = one.to_json()
    assert data["evaluated"] == 3 and data["best"]["rank"] == 1
    assert data["results"][0]["schedule"] == "dualpipe" and data["dropped"][0]["status"] == "dropped"
    rows = list(csv.DictReader(io.StringIO(planner.to_csv(one))))
    assert [r["rank"] for r in rows] == ["1", "2", ""]
    assert rows[2]["reason"].startswith("rule: ")
    planner.render_pareto(one, tmp_path / "p.png")
    planner.render_pareto(one, tmp_path / "q.png")
    assert (tmp_path / "p.png").read_bytes() == (tmp_path / "q.png").read_bytes()
    planner.render_pareto(one, tmp_path / "p.svg")
    best = one.best.candidate
    assert (f"<!-- best: dualpipe R=4, M=8, {best.comm_sms} comm SMs -->"
            in (tmp_path / "p.svg").read_text())


def test_plan_command_json_and_emit(tmp_path):
    import typer

    from dualsim.cli.plan import plan_command

    app = typer.Typer()
    app.command()(plan_command)
    emit = tmp_path / "best.json"
    res = CliRunner().invoke(app, [
        "--model", "small-moe", "--gpus", "64", "--schedules", "dualpipe,1f1b",
        "--ranks", "4", "--microbatches", "8,9", "--comm-sms", "20", "--workers", "1",
        "--out", str(tmp_path / "out"), "--json", "--emit", str(emit)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["evaluated"] == 4
    assert sorted((r["schedule"], r["microbatches"]) for r in data["results"]) == [
        ("1f1b", 8), ("1f1b", 9), ("dualpipe", 8)]
    tps = [r["tokens_per_s_per_gpu"] for r in data["results"]]
    assert tps == sorted(tps, reverse=True) and [r["rank"] for r in data["results"]] == [1, 2, 3]
    assert len(data["dropped"]) == 1
    assert data["best"]["schedule"] == "dualpipe" and data["best"]["microbatches"] == 8
    assert data["dropped"][0]["reason"].startswith("rule: dualpipe needs an even number")
    plan = json.loads(emit.read_text())
    assert plan["format"] == "dualsim-plan" and plan["schedule"] == "dualpipe"
    assert plan["ranks"] == 4 and plan["microbatches"] == 8
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "pareto.png", "pareto.svg", "plan.csv"]


def test_plan_command_rejects_bad_lists(tmp_path):
    import typer

    from dualsim.cli.plan import plan_command

    app = typer.Typer()
    app.command()(plan_command)
    res = CliRunner().invoke(app, ["--model", "small-moe", "--ranks", "4,x",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert res.stderr.strip() == ("error: bad --ranks value 'x': expected a number, e.g. "
                                  "--ranks 8,16")
    for flag in ("--schedules", "--ranks", "--ib-gbps"):
        res = CliRunner().invoke(app, ["--model", "small-moe", flag, " , ", "--out",
                                       str(tmp_path)])
        assert res.exit_code == 1
        assert res.stderr.strip() == (f"error: {flag} was given no values; leave it out for "
                                      "the default sweep")


def test_plan_command_rejects_non_positive_sizes_before_sweeping(tmp_path):
    import typer

    from dualsim.cli.plan import plan_command

    app = typer.Typer()
    app.command()(plan_command)
    for flag, val in (("--gpus", "0"), ("--ep", "-1"), ("--microbatch-tokens", "0")):
        out = tmp_path / flag.strip("-")
        res = CliRunner().invoke(app, ["--model", "small-moe", flag, val, "--out", str(out),
                                       "--json"])
        assert res.exit_code == 1
        assert res.stdout == ""
        assert res.stderr.strip() == f"error: {flag} must be 1 or more, got {val}"
        assert not out.exists()  # nothing swept, nothing written
    for flag, val in (("--ib-gbps", "0"), ("--nvlink-gbps", "nan"), ("--ib-gbps", "50,inf")):
        out = tmp_path / flag.strip("-")
        res = CliRunner().invoke(app, ["--model", "small-moe", flag, val, "--out", str(out),
                                       "--json"])
        assert res.exit_code == 1
        assert res.stdout == ""
        assert res.stderr.strip() == (f"error: {flag} must be a positive number of GB/s, got "
                                      f"{val.split(',')[-1]}")
        assert not out.exists()


def test_plan_command_refuses_bad_out_and_emit_before_sweeping(tmp_path):
    import typer

    from dualsim.cli.plan import plan_command

    app = typer.Typer()
    app.command()(plan_command)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for extra, msg in (
            (["--out", str(blocker)],
             f"error: cannot write '{blocker / 'plan.csv'}': '{blocker}' is a file, not a folder"),
            (["--out", str(tmp_path / "o"), "--emit", str(tmp_path)],
             f"error: cannot write '{tmp_path}': it is a folder; give a file name")):
        res = CliRunner().invoke(app, ["--model", "small-moe", "--workers", "1"] + extra)
        assert res.exit_code == 1
        assert res.stderr.strip() == msg
        assert not (tmp_path / "o").exists()  # nothing swept, nothing written


def test_plan_command_with_emit_and_no_survivor_says_why(tmp_path):
    import typer

    from dualsim.cli.plan import plan_command

    app = typer.Typer()
    app.command()(plan_command)
    emit = tmp_path / "best.json"
    res = CliRunner().invoke(app, [
        "--model", "small-moe", "--gpus", "64", "--schedules", "dualpipe", "--ranks", "4",
        "--microbatches", "9", "--comm-sms", "20", "--workers", "1", "--json",
        "--out", str(tmp_path / "out"), "--emit", str(emit)])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["files"] == [str(tmp_path / "out" / n) for n in
                                               ("plan.csv", "pareto.png", "pareto.svg")]
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: none of the 1 configurations survived (rule); see {tmp_path / 'out'}/plan.csv "
        "for each reason, or raise --memory-gb / change the sweep")
    assert not emit.exists()
