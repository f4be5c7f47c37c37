"""The report folder: every file, the table's figures and formula checks, determinism."""

from __future__ import annotations

import json

import pandas as pd

from dualsim.generators import generate
from dualsim.render.report import assumptions, hbm_gb, write_report
from dualsim.render.table import comparison_rows, readme_formula
from dualsim.sim.abstract import simulate

COSTS = {"F": 1, "I": 1, "W": 1, "B": 2, "FB": 3}
CONFIG = {"mode": "abstract", "ranks": 4, "microbatches": 8, "costs": COSTS, "comm": 0.0}


def run_all(names=("dualpipe", "dualpipev", "zb-v", "1f1b")):
    schedules = {n: generate(n, 4, 8) for n in names}
    results = [(n, simulate(s, costs=COSTS, comm=0.0)) for n, s in schedules.items()]
    return results, schedules


def test_readme_formulas_match_design_closed_forms():
    # docs/schedules.md's worked example, R=4, M=8
    assert readme_formula(generate("dualpipe", 4, 8), COSTS)["value"] == 2
    assert readme_formula(generate("dualpipev", 4, 8), COSTS)["value"] == 3
    f1 = {"F": 1, "I": 1, "W": 1}
    assert readme_formula(generate("1f1b", 4, 8), f1)["value"] == 9  # 33 - 8*3
    assert readme_formula(generate("zb-h1", 4, 8), f1)["value"] == 3  # 27 - 24
    assert readme_formula(generate("interleaved", 4, 8), f1)["value"] == 4.5  # 28.5 - 24
    assert readme_formula(generate("zb-v", 4, 8), f1)["value"] == 1.5  # 25.5 - 24
    assert readme_formula(generate("zb-h2", 4, 8), f1)["value"] is None  # span-only form


def test_table_rows_show_simulated_figures_and_formula_check():
    results, schedules = run_all()
    header, rows = comparison_rows(results, schedules, CONFIG)
    assert header[0] == "schedule" and "bubble rate" in header
    by = {r[0]: dict(zip(header, r)) for r in rows}
    dp = by["dualpipe"]
    assert dp["step time (cost units)"] == "26"
    assert dp["idle per rank (cost units)"] == "2 (all ranks)"
    assert dp["peak activations per rank (units)"] == "5 (all ranks)"
    assert dp["parameters per device"] == "2x" and dp["devices used"] == "4"
    assert dp["README formula (bubble; params; act.)"].startswith("(R/2-1)(F&B+B-3W) = 2 ✓")
    assert by["dualpipev"]["step time (cost units)"] == "27"
    assert by["1f1b"]["peak activations per rank (units)"] == "4, 3, 2, 1"
    assert all("✓" in r[-1] for r in rows)


def test_formula_mismatch_is_flagged_with_latency():
    schedules = {"1f1b": generate("1f1b", 4, 8)}
    results = [("1f1b", simulate(schedules["1f1b"], costs=COSTS, comm=0.5))]
    _, rows = comparison_rows(results, schedules, dict(CONFIG, comm=0.5))
    assert "✓" not in rows[0][-1] and "(simulated" in rows[0][-1]


def test_report_folder_has_every_file(tmp_path):
    results, schedules = run_all()
    write_report(tmp_path, results, schedules=schedules, config=CONFIG,
                 skipped=[("zb-h2", "zb-h2 needs M >= 2R-1")])
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = {"report.md", "summary.json", "timeline.csv", "gantt_compare.png",
                "gantt_compare.svg"}
    for n in schedules:
        expected |= {f"gantt_{n}.png", f"gantt_{n}.svg", f"trace_{n}.json"}
    assert set(names) == expected
    md = (tmp_path / "report.md").read_text()
    assert md.count("\n| dualpipe ") == 1 and "## Assumptions" in md
    assert "**zb-h2**: zb-h2 needs M >= 2R-1" in md
    assert "![all schedules](gantt_compare.png)" in md
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["schedule"] for r in summary["results"]] == list(schedules)
    assert summary["results"][0]["makespan"] == 26
    assert summary["results"][0]["readme_formula"]["value"] == 2
    assert summary["skipped"] == [{"schedule": "zb-h2", "reason": "zb-h2 needs M >= 2R-1"}]
    tl = pd.read_csv(tmp_path / "timeline.csv")
    assert list(tl.columns[:3]) == ["schedule", "rank", "stream"]
    assert len(tl) == sum(len(r.timeline) for _, r in results)
    trace = json.loads((tmp_path / "trace_1f1b.json").read_text())
    assert sum(e["ph"] == "s" for e in trace["traceEvents"]) == 2 * 3 * 8


def test_report_is_byte_identical_when_rewritten(tmp_path):
    results, schedules = run_all(("dualpipe", "1f1b"))
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        write_report(d, results, schedules=schedules, config=CONFIG, skipped=[])
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


HARDWARE_FILES = sorted(["gantt_1f1b.png", "gantt_1f1b.svg", "gantt_compare.png",
                         "gantt_compare.svg", "memory.csv", "memory_1f1b.png", "memory_1f1b.svg",
                         "report.md", "summary.json", "timeline.csv", "trace_1f1b.json"])


def test_hardware_style_results_get_memory_plots(tmp_path):
    s = generate("1f1b", 2, 2)
    r = simulate(s, costs={"F": 1, "I": 1, "W": 1}, comm=0.0)
    r.time_unit = "s"
    r.extra = {"step_time_s": 8.0, "tokens_per_s_per_gpu": 1234.5, "mfu": 0.25,
               "peak_memory_gb": 30.0}
    for p in r.per_rank:
        p.peak_memory_gb = 30.0 - p.rank
        p.memory_breakdown_gb = {"params": 10.0, "activations": 20.0 - p.rank}
    r.memory = pd.DataFrame({"rank": [0, 0, 1, 1], "time": [0.0, 2.0, 0.0, 3.0],
                             "params_gb": [10.0] * 4, "activations_gb": [5.0, 20.0, 4.0, 19.0],
                             "total_gb": [15.0, 30.0, 14.0, 29.0]})
    cfg = {"mode": "hardware", "ranks": 2, "microbatches": 2, "profile": "h800",
           "model": "deepseek-v3", "gpus": 16}
    write_report(tmp_path, [("1f1b", r)], schedules={"1f1b": s}, config=cfg, skipped=[])
    assert sorted(p.name for p in tmp_path.iterdir()) == HARDWARE_FILES
    md = (tmp_path / "report.md").read_text()
    assert "- **profile**: h800" in md and "- **model**: deepseek-v3" in md
    header, rows = comparison_rows([("1f1b", r)], {"1f1b": s}, cfg)
    row = dict(zip(header, rows[0]))
    assert row["peak memory per rank (GB)"] == "30, 29"
    assert row["MFU"] == "25.0%" and row["devices used"] == "16"
    assert row["parameters per device"] == "10.0 GB (max)"
    trace = json.loads((tmp_path / "trace_1f1b.json").read_text())
    assert sum(e["ph"] == "C" for e in trace["traceEvents"]) == 4


def test_real_hardware_report_has_memory_flows_and_counters(tmp_path):
    from dualsim.sim.hardware_mode import simulate_hardware

    from dualsim.cluster.profile import load_profile
    from dualsim.workload.model import load_model

    s = generate("1f1b", 4, 8)
    prof, mdl = load_profile("h800"), load_model("small-moe")
    r = simulate_hardware(s, prof, mdl)
    cfg = {"mode": "hardware", "ranks": 4, "microbatches": 8, "profile": "h800",
           "model": "small-moe"}
    write_report(tmp_path, [("1f1b", r)], schedules={"1f1b": s}, config=cfg, skipped=[],
                 profile=prof, model=mdl)
    assert sorted(p.name for p in tmp_path.iterdir()) == HARDWARE_FILES
    trace = json.loads((tmp_path / "trace_1f1b.json").read_text())
    ev = trace["traceEvents"]
    flows = [e for e in ev if e["ph"] == "s"]
    assert len(flows) == 2 * 3 * 8
    assert all(e["tid"] >= 1 for e in flows)  # each arrow leaves from its pp_send (a comm thread)
    assert sum(e["ph"] == "C" for e in ev) == len(r.memory)
    threads = {(e["pid"], e["args"]["name"]) for e in ev if e["name"] == "thread_name"}
    assert {(p, n) for p in range(4) for n in ("compute", "comm")} <= threads
    md = (tmp_path / "report.md").read_text()
    assert "HBM 80 GB" in md and "- **calibration**: an all-to-all SM moves 7.19 GB/s" in md


def test_the_report_states_the_profile_and_model_it_is_given_and_reloads_nothing(tmp_path):
    from dataclasses import replace

    from dualsim.cluster.profile import load_profile
    from dualsim.workload.model import load_model

    s = generate("1f1b", 2, 2)
    r = simulate(s, costs={"F": 1, "I": 1, "W": 1}, comm=0.0)
    # names no file holds: a renderer that reloaded them would fail or drop the details
    cfg = {"mode": "hardware", "ranks": 2, "microbatches": 2, "profile": "my-cluster",
           "model": "my-model"}
    prof = replace(load_profile("h800"), name="my-cluster", comm_sms=24)
    mdl = load_model("small-moe")
    given = "\n".join(assumptions(cfg, [("1f1b", r)], prof, mdl))
    assert "- **profile**: my-cluster (" in given and "of which 24 for an all-to-all while it runs" in given
    assert f"- **model**: {mdl.name} ({mdl.description}); GEMMs {mdl.gemm_dtype}" in given
    assert hbm_gb(cfg, prof) == 80.0
    bare = assumptions(cfg, [("1f1b", r)])
    assert "- **profile**: my-cluster" in bare and "- **model**: my-model" in bare
    assert not any(line.startswith("- **calibration**") for line in bare)
    assert hbm_gb(cfg, None) is None and hbm_gb({**cfg, "hbm_gb": 96}, None) == 96.0


def test_table_helpers_format_per_rank_values_and_escape_pipes():
    from dualsim.render.table import fmt, markdown_table, per_rank_text

    assert per_rank_text([2, 2, 2]) == "2 (all ranks)"
    assert per_rank_text([1.5, 2.25, 3]) == "1.5, 2.25, 3"
    assert fmt(None) == "—" and fmt(0.123456789) == "0.1235" and fmt(6.0) == "6"
    assert markdown_table(["a|b", "c"], [["x", "y|z"]]).splitlines() == [
        "| a\\|b | c |", "|---|---|", "| x | y\\|z |"]


def test_parallel_workers_write_the_same_files(tmp_path):
    results, schedules = run_all(("dualpipe", "zb-v"))
    a, b = tmp_path / "serial", tmp_path / "parallel"
    write_report(a, results, schedules=schedules, config=CONFIG, skipped=[], workers=1)
    done = []
    write_report(b, results, schedules=schedules, config=CONFIG, skipped=[], workers=2,
                 progress=lambda: done.append(1))
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert len(done) == 1 + 2 * 2  # combined Gantt; Gantt and trace per schedule
