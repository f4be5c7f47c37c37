"""The CLI contract of docs/formats.md and the README: commands, JSON keys, exact numbers,
one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualsim.cli import app

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"  # copy of shared/reference
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, code: int, *needles: str) -> None:
    """Exit code as asked, stdout empty, one 'error: ...' line on stderr, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: ")
    assert "Traceback" not in result.stderr
    for n in needles:
        assert n in first, (n, first)


def emit_plan(tmp_path: Path, name: str = "1f1b", r: int = 4, m: int = 8) -> tuple[Path, dict]:
    p = tmp_path / f"{name}.json"
    res = invoke("emit", name, "--ranks", str(r), "--microbatches", str(m), "-o", str(p))
    assert res.exit_code == 0, res.stderr
    return p, json.loads(p.read_text())


# ---- happy paths --------------------------------------------------------------------------

def test_simulate_zb_h2_json_matches_design_worked_example() -> None:
    res = invoke("simulate", "zb-h2", "--ranks", "4", "--microbatches", "8",
                 "--costs", "F=1,I=1,W=1", "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert (d["makespan"], d["span"], d["ideal"]) == (27, 24, 24)
    assert d["bubble_rate"] == pytest.approx(1 - 24 / 27)
    assert d["span_bubble_rate"] == 0
    for key in ("schedule", "ranks", "stages", "microbatches"):
        assert key in d
    assert [p["rank"] for p in d["per_rank"]] == [0, 1, 2, 3]
    assert set(d["per_rank"][0]) >= {"rank", "busy", "idle", "first_start", "last_end",
                                     "peak_activations"}
    assert d["per_rank"][0]["peak_activations"] == 7  # ZB-H2 rank 0: 2R-1


def test_emit_dualpipe_to_stdout_has_reference_compute_order() -> None:
    res = invoke("emit", "dualpipe", "--ranks", "4", "--microbatches", "8", "-o", "-")
    assert res.exit_code == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["format"] == "dualsim-plan" and plan["version"] == 1
    ref = (REFERENCE / "dualpipe_r4_m8.txt").read_text().split("\n")
    for rank, row in enumerate(plan["actions"]):
        compute = [a for a in row if "SEND" not in a and "RECV" not in a]
        assert compute == ref[rank].split()
    assert any("SEND_F" in a for a in plan["actions"][0])


def test_emit_then_check_and_simulate_the_plan_file(tmp_path: Path) -> None:
    p, _ = emit_plan(tmp_path, "zb-v", 4, 8)
    res = invoke("check", str(p))
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith(f"ok: {p} is a valid zb-v plan: R=4, M=8, 8 stages")
    res = invoke("simulate", str(p), "--json")
    d = json.loads(res.stdout)
    assert (d["makespan"], d["span"]) == (25.5, 24)


def test_emit_is_byte_identical_twice(tmp_path: Path) -> None:
    a = invoke("emit", "dualpipev", "-r", "4", "-m", "10").stdout
    b = invoke("emit", "dualpipev", "-r", "4", "-m", "10").stdout
    assert a == b and a


def test_schedules_lists_every_family_with_rules() -> None:
    res = invoke("schedules", "--json")
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == ["gpipe", "1f1b", "1f1b-overlap", "interleaved",
                                         "interleaved-overlap", "zb-h1", "zb-h2", "zb-v",
                                         "dualpipe", "dualpipev"]
    assert rows[3]["parameters"] == rows[4]["parameters"] == ["ranks", "microbatches", "chunks"]


def test_compare_table_charts_and_skips(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    res = invoke("compare", "--ranks", "8", "--microbatches", "20", "--out", str(out), "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    names = [r["schedule"] for r in d["results"]]
    assert names == ["gpipe", "1f1b", "1f1b-overlap", "interleaved", "interleaved-overlap",
                     "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipev"]
    assert d["skipped"] == []
    pngs = sorted(p.name for p in out.rglob("*.png"))
    assert len(pngs) >= len(names) + 1
    for p in out.rglob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by = {r["schedule"]: r for r in d["results"]}
    assert by["1f1b"]["makespan"] == (20 + 8 - 1) * 3


def test_compare_prints_table_with_skip_line(tmp_path: Path) -> None:
    res = invoke("compare", "1f1b", "dualpipe", "-r", "3", "-m", "6", "--out", str(tmp_path))
    assert res.exit_code == 0, res.stderr
    assert "1f1b" in res.stdout
    assert "skipped dualpipe: dualpipe needs an even number of ranks" in res.stdout


def test_simulate_writes_trace_and_gantt(tmp_path: Path) -> None:
    trace, gantt = tmp_path / "t.json", tmp_path / "g.svg"
    res = invoke("simulate", "1f1b", "-r", "2", "-m", "2", "--trace", str(trace),
                 "--gantt", str(gantt))
    assert res.exit_code == 0, res.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(1 for e in events if e.get("ph") == "X") == 2 * 2 * 2
    assert gantt.read_text().lstrip().startswith("<?xml")


# ---- bad input: one line, exit 1 (2 for usage), no traceback ------------------------------

@pytest.mark.parametrize("args,needles", [
    (("simulate", "dualpipo", "-r", "4", "-m", "8"), ("unknown schedule 'dualpipo'",)),
    (("emit", "dualpipe", "-r", "3", "-m", "8"), ("even number of ranks",)),
    (("emit", "dualpipe", "-r", "4", "-m", "6"), ("dualpipe",)),
    (("emit", "1f1b", "-r", "0", "-m", "8"), ("1f1b",)),
    (("emit", "1f1b", "-r", "4", "-m", "-2"), ("1f1b",)),
    (("emit", "interleaved", "-r", "4", "-m", "8", "--chunks", "1"), ("chunks",)),
    (("emit", "zb-v", "-r", "4", "-m", "8", "--chunks", "2"), ("chunks",)),
    (("simulate", "1f1b", "--costs", "F=1;I=1"), ("1;I=1", "cost F")),
    (("simulate", "1f1b", "--costs", "F=1,I=-1,W=1"), ("I",)),
    (("simulate", "1f1b", "--costs", "F=0,I=1,W=1"), ("F",)),
    (("simulate", "1f1b", "--costs", "F=1,I=1,W=1,X=3"), ("X",)),
    (("simulate", "1f1b", "--comm", "-1"), ("--comm",)),
    (("emit", "1f1b", "-r", "2", "-m", "2", "--format", "yaml"), ("--format",)),
])
def test_bad_parameters(args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    assert_one_line_error(invoke(*args), 1, *needles)


def test_non_integer_ranks_is_a_usage_error() -> None:
    res = invoke("emit", "1f1b", "-r", "four", "-m", "8")
    assert res.exit_code == 2
    assert "Traceback" not in res.stderr


def test_missing_plan_file(tmp_path: Path) -> None:
    assert_one_line_error(invoke("check", str(tmp_path / "nope.json")), 1, "does not exist")


def test_truncated_plan_file(tmp_path: Path) -> None:
    p, _ = emit_plan(tmp_path)
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    assert_one_line_error(invoke("check", str(p)), 1, "not valid JSON")


def test_non_plan_file(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"hello": "world"}))
    assert_one_line_error(invoke("check", str(p)), 1, "not a dualsim plan")


def test_unknown_version(tmp_path: Path) -> None:
    p, d = emit_plan(tmp_path)
    d["version"] = 7
    p.write_text(json.dumps(d))
    assert_one_line_error(invoke("check", str(p)), 1, "version 7")


def _tamper(tmp_path: Path, edit) -> Path:
    p, d = emit_plan(tmp_path)
    edit(d)
    p.write_text(json.dumps(d))
    return p


def test_missing_action(tmp_path: Path) -> None:
    p = _tamper(tmp_path, lambda d: d["actions"][3].remove("3W5") if "3W5" in d["actions"][3]
                else d["actions"][3].remove("3B5"))
    res = invoke("check", str(p))
    assert_one_line_error(res, 1, "3")
    assert "missing" in res.stderr.splitlines()[0]


def test_duplicated_action(tmp_path: Path) -> None:
    def dup(d: dict) -> None:
        d["actions"][0].append("0B0")
    res = invoke("check", str(_tamper(tmp_path, dup)))
    assert_one_line_error(res, 1, "0B0")
    assert "second 0B0" in res.stderr.splitlines()[0]


def test_unknown_action(tmp_path: Path) -> None:
    def bad(d: dict) -> None:
        d["actions"][1][0] = "9F0"
    assert_one_line_error(invoke("check", str(_tamper(tmp_path, bad))), 1, "9F0")


def test_unparsable_action(tmp_path: Path) -> None:
    def bad(d: dict) -> None:
        d["actions"][1][0] = "1X0"
    assert_one_line_error(invoke("check", str(_tamper(tmp_path, bad))), 1, "1X0")


def test_ranks_disagree_with_action_lists(tmp_path: Path) -> None:
    def bad(d: dict) -> None:
        d["ranks"] = 3
    assert_one_line_error(invoke("check", str(_tamper(tmp_path, bad))), 1, "ranks")


def test_deadlocking_order_shows_marked_grid(tmp_path: Path) -> None:
    def swap(d: dict) -> None:  # rank 0 waits for 0B0 before it has sent 0F1..: a cycle
        row = d["actions"][0]
        i, j = row.index("0F0"), row.index("0B0")
        row[i], row[j] = row[j], row[i]
    res = invoke("check", str(_tamper(tmp_path, swap)))
    assert_one_line_error(res, 1, "rank 0")
    assert ">" in res.stderr and "<" in res.stderr  # the marked grid


def test_simulate_refuses_tampered_plan(tmp_path: Path) -> None:
    def bad(d: dict) -> None:
        d["microbatches"] = "eight"
    assert_one_line_error(invoke("simulate", str(_tamper(tmp_path, bad))), 1, "microbatches")


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = invoke("emit", "1f1b", "-r", "2", "-m", "2", "-o", str(blocker / "p.json"))
    assert_one_line_error(res, 1)
    assert not (blocker / "p.json").exists()


# ---- QA regressions (#2/#3 as a new user) --------------------------------------------------

@pytest.mark.parametrize("cmd", ["simulate", "compare"])
@pytest.mark.parametrize("flag", ["--ranks", "--microbatches"])
def test_zero_ranks_or_microbatches_is_an_error_not_the_default(cmd: str, flag: str,
                                                                tmp_path: Path) -> None:
    args = [cmd, "1f1b", flag, "0"] + (["-o", str(tmp_path / "out")] if cmd == "compare" else [])
    assert_one_line_error(invoke(*args), 1, flag, "got 0")
    assert not (tmp_path / "out").exists()


def test_zero_microbatches_in_hardware_mode_is_an_error() -> None:
    res = invoke("simulate", "dualpipe", "--profile", "h800", "--model", "small-moe",
                 "--microbatches", "0", "--json")
    assert_one_line_error(res, 1, "--microbatches", "got 0")


def test_comm_latency_is_rejected_in_hardware_mode_not_ignored() -> None:
    res = invoke("simulate", "dualpipe", "--profile", "h800", "--model", "small-moe",
                 "--comm", "1", "--json")
    assert_one_line_error(res, 1, "--comm is for abstract mode")


def test_gantt_with_unknown_extension_is_a_one_line_error_and_writes_nothing(
        tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    res = invoke("simulate", "1f1b", "-r", "4", "-m", "8", "--trace", str(trace),
                 "--gantt", str(tmp_path / "chart.txt"))
    assert_one_line_error(res, 1, "--gantt", ".png or .svg")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, name", [("--gantt", "g.png"), ("--trace", "t.json")])
def test_simulate_checks_its_outputs_as_run_does(tmp_path: Path, flag: str, name: str) -> None:
    """common.check_output, before the simulation: a folder that cannot take the file (here
    /proc, where no file can be created) and a wrong suffix are refused in one line."""
    res = invoke("simulate", "1f1b", "-r", "4", "-m", "8", flag, f"/proc/dualsim-test/{name}")
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == (f"error: {flag} '/proc/dualsim-test/{name}': cannot write in '/proc' "
                          "(No such file or directory); choose another folder\n")
    res = invoke("simulate", "1f1b", "-r", "4", "-m", "8", flag, str(tmp_path / "out.pdf"))
    kinds = ".png or .svg" if flag == "--gantt" else ".json"
    assert res.stderr == (f"error: {flag} '{tmp_path / 'out.pdf'}': the file name must end in "
                          f"{kinds}\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("as_json", [False, True])
def test_memory_over_hbm_is_warned_on_stderr_in_table_and_json_mode(as_json: bool) -> None:
    # GPipe on R=2 keeps all 64 micro-batches of small-moe alive: well over the 80 GB of an
    # H800. The warning must reach a table-mode user too, and never pollute --json's stdout.
    args = ["simulate", "gpipe", "--profile", "h800", "--model", "small-moe", "-r", "2",
            "-m", "64"] + (["--json"] if as_json else [])
    res = invoke(*args)
    assert res.exit_code == 0, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: gpipe: rank ")]
    assert len(warned) == 2 and "more than the 80 GB of h800" in warned[0]
    if as_json:
        d = json.loads(res.stdout)  # stdout stays one JSON document
        assert len(d["warnings"]) == len(warned)
        assert d["peak_memory_gb"] > 80


def test_many_warnings_are_capped_on_stderr_but_all_in_json() -> None:
    res = invoke("simulate", "gpipe", "--profile", "h800", "--model", "small-moe", "-r", "4",
                 "-m", "256", "--json")
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: gpipe: ")]
    assert len(json.loads(res.stdout)["warnings"]) == 4
    assert len(lines) == 4 and lines[-1] == ('warning: gpipe: ... and 1 more (all in --json\'s '
                                             '"warnings")')


@pytest.mark.parametrize("flag", ["--ep", "--gpus", "--microbatch-tokens"])
@pytest.mark.parametrize("value", ["0", "-4"])
def test_non_positive_layout_override_names_the_option(flag: str, value: str) -> None:
    res = invoke("simulate", "dualpipe", "--profile", "h800", "--model", "small-moe",
                 flag, value, "--json")
    assert_one_line_error(res, 1, f"{flag} must be a positive integer, got {value}")


def test_huge_ranks_and_microbatches_fail_fast_with_one_line() -> None:
    res = invoke("simulate", "1f1b", "-r", "100000", "-m", "100000", "--json")
    assert_one_line_error(res, 1, "10,000,000,000", "use fewer --ranks or --microbatches")


@pytest.mark.parametrize(("extra", "needle"), [
    (["--ranks", "8"], "--ranks 8 disagrees with the plan file, which has ranks=4"),
    (["--microbatches", "16"], "--microbatches 16 disagrees"),
    (["--chunks", "3"], "--chunks 3 disagrees"),
])
def test_simulate_plan_file_rejects_options_that_disagree_with_it(
        tmp_path: Path, extra: list[str], needle: str) -> None:
    plan, _ = emit_plan(tmp_path, "1f1b", 4, 8)
    assert_one_line_error(invoke("simulate", str(plan), *extra, "--json"), 1, needle)
    same = invoke("simulate", str(plan), "--ranks", "4", "--microbatches", "8", "--json")
    assert same.exit_code == 0, same.stderr
    assert json.loads(same.stdout)["makespan"] == 33  # (M+R-1)(F+B), F=I=W=1


def test_output_paths_that_cannot_be_files_give_a_clear_line(tmp_path: Path) -> None:
    folder, afile = tmp_path / "adir.json", tmp_path / "afile"
    folder.mkdir()
    afile.write_text("keep me")
    res = invoke("emit", "1f1b", "-r", "4", "-m", "8", "-o", str(folder))
    assert_one_line_error(res, 1, "it is a folder; give a file name")
    (tmp_path / "t.json").mkdir()
    res = invoke("simulate", "1f1b", "-r", "4", "-m", "8", "--trace", str(tmp_path / "t.json"))
    assert_one_line_error(res, 1, "it is a folder")
    res = invoke("emit", "1f1b", "-r", "4", "-m", "8", "-o", str(afile / "plan.json"))
    assert_one_line_error(res, 1, "is a file, not a folder")
    res = invoke("compare", "1f1b", "-r", "4", "-m", "8", "-o", str(afile))
    assert_one_line_error(res, 1, "--out", "is a file; give a folder")
    assert afile.read_text() == "keep me"
    assert list(folder.iterdir()) == []


# ---- refusals are one error: line, with no progress bar above it ------------------------------

def test_compare_refusal_inside_the_progress_bar_is_one_line(tmp_path: Path) -> None:
    res = invoke("compare", "dualpipe", "zb-h1", "--profile", "h800", "--ep", "7",
                 "--out", str(tmp_path / "c"))
    assert_one_line_error(res, 1, "--ep 7 does not divide the 128 data-parallel GPUs")
    assert len(res.stderr.splitlines()) == 1


def test_compare_with_no_legal_schedule_is_refused_before_the_bar(tmp_path: Path) -> None:
    res = invoke("compare", "dualpipe", "--ranks", "7", "--out", str(tmp_path / "c"))
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == ("error: no schedule is legal at R=7, M=24: dualpipe: dualpipe needs an "
                          "even number of ranks, got 7: use --ranks 6 or 8\n")
    assert not (tmp_path / "c").exists()


def test_plan_names_the_real_reason_when_no_configuration_can_run(tmp_path: Path) -> None:
    # 7 ranks divide neither the preset's 2048 GPUs nor DualPipe's rule; the first reason found
    res = invoke("plan", "--ranks", "7", "--schedules", "dualpipe", "--out", str(tmp_path / "p"))
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == ("error: none of the 144 configurations can run: the model preset's GPU "
                          "count 2048 is not divisible by the 7 pipeline ranks; pass --gpus with "
                          "a multiple of 7, or other --ranks\n")
    # on 1792 = 7 x 256 GPUs the batch splits: the family's rule is what refuses
    res = invoke("plan", "--ranks", "7", "--gpus", "1792", "--schedules", "dualpipe",
                 "--out", str(tmp_path / "p"))
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == ("error: none of the 144 configurations can run: dualpipe needs an even "
                          "number of ranks, got 7: use --ranks 6 or 8\n")
    assert not (tmp_path / "p").exists()  # refused before the sweep: nothing written


def test_plan_lists_rule_and_layout_reasons_together(tmp_path: Path) -> None:
    res = invoke("plan", "--ranks", "7,8", "--schedules", "dualpipe,zb-h1", "--ep", "7",
                 "--out", str(tmp_path / "p"))
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == (
        "error: none of the 144 configurations can run: the model preset's GPU count 2048 is "
        "not divisible by the 7 pipeline ranks; pass --gpus with a multiple of 7, or other "
        "--ranks; --ep 7 does not divide the 256 data-parallel GPUs per pipeline stage (gpus / "
        "ranks = 2048 / 8); use --ep 1, 2, 4, 8, 16, 32, 64, 128, 256 (dividing 256 GPUs per "
        "stage and 256 routed experts); dualpipe needs an even number of micro-batches, got 15 "
        "(M from the model preset's global batch 15360 on 256 pipelines): pass --global-batch "
        "16384 (M=16)\n")


def test_costs_help_says_what_b_and_fb_mean() -> None:
    res = invoke("simulate", "--help")
    text = " ".join(res.stdout.split())
    assert "B a full (unsplit) backward, default I+W" in text
    assert "FB an overlapped forward+backward pair, default F+B" in text


def test_an_unused_b_is_a_warning_line_and_in_json() -> None:
    res = invoke("simulate", "zb-h1", "-r", "4", "-m", "8", "--costs", "F=1,I=1,W=1,B=5",
                 "--json")
    assert res.exit_code == 0
    d = json.loads(res.stdout)
    assert (d["makespan"], d["ideal"]) == (27, 24)
    assert d["warnings"] == ["cost B=5 is not used: the schedule runs no full backward B on its "
                             "own (it splits every backward into I and W)"]
    assert res.stderr == f"warning: zb-h1: {d['warnings'][0]}\n"
    res = invoke("simulate", "1f1b", "-r", "4", "-m", "8", "--costs", "F=1,I=1,W=1,B=5",
                 "--json")
    d = json.loads(res.stdout)
    assert (d["makespan"], d["ideal"]) == (66, 48) and "warnings" not in d
    assert d["bubble_rate"] == pytest.approx(3 / 11)  # (R-1)/(M+R-1), not 63.6%


# ---- a report folder holds exactly one report ----------------------------------------------

def test_compare_twice_into_one_folder_leaves_only_the_second_report(tmp_path: Path) -> None:
    out = tmp_path / "d1"
    assert invoke("compare", "1f1b", "zb-v", "-r", "4", "-m", "8", "-o", str(out)).exit_code == 0
    assert (out / "gantt_zb-v.png").is_file()
    res = invoke("compare", "1f1b", "-r", "4", "-m", "8", "-o", str(out), "--json")
    assert res.exit_code == 0, res.stderr
    files = json.loads(res.stdout)["files"]
    assert files == ["gantt_1f1b.png", "gantt_1f1b.svg", "gantt_compare.png",
                     "gantt_compare.svg", "report.md", "summary.json", "timeline.csv",
                     "trace_1f1b.json"]
    assert sorted(p.name for p in out.iterdir()) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d1"]  # no temporary left beside it


def test_compare_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = invoke("compare", "1f1b", "-r", "4", "-m", "8", "-o", str(out))
    assert_one_line_error(res, 1, f"--out {str(out)!r} holds files dualsim did not write "
                                  "('notes.txt'); the report replaces its folder as a whole")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert "simulating" not in res.stderr  # refused before any work


def test_compare_refuses_a_symbolic_link_to_a_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    res = invoke("compare", "1f1b", "-r", "4", "-m", "8", "-o", str(tmp_path / "link"))
    assert_one_line_error(res, 1, "is a symbolic link; give the folder itself")


def test_compare_refuses_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for out in (".", ".."):
        res = invoke("compare", "1f1b", "-r", "4", "-m", "8", "-o", out)
        assert_one_line_error(res, 1, f"--out {out!r} is the current folder or holds it")


def test_replace_folder_keeps_the_old_folder_when_writing_fails(tmp_path: Path) -> None:
    from dualsim.io import replace_folder

    out = tmp_path / "r"
    replace_folder(out, lambda d: (d / "a.txt").write_text("one"))
    assert [p.name for p in out.iterdir()] == ["a.txt"]

    def half_then_fail(d: Path) -> None:
        (d / "b.txt").write_text("two")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_folder(out, half_then_fail)
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    assert replace_folder(out, lambda d: (d / "b.txt").write_text("two")) == 3
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_replace_folder_without_an_atomic_exchange_uses_two_renames(tmp_path: Path,
                                                                    monkeypatch) -> None:
    import dualsim.io as io

    out = tmp_path / "r"
    io.replace_folder(out, lambda d: (d / "a.txt").write_text("one"))
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    io.replace_folder(out, lambda d: (d / "b.txt").write_text("two"))
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


@pytest.mark.parametrize("flag", ["--trace", "--gantt"])
def test_simulate_refuses_an_output_path_that_is_a_folder_before_simulating(tmp_path: Path,
                                                                           flag: str) -> None:
    # found by the fuzzer: the hardware run's warnings came first, the error after them
    folder = tmp_path / ("out.png" if flag == "--gantt" else "out.json")
    folder.mkdir()
    res = invoke("simulate", "1f1b", "-r", "1", "-m", "12", "--model", "small-moe",
                 "--microbatch-tokens", "1000000000", flag, str(folder), "--json")
    assert_one_line_error(res, 1, f"cannot write {str(folder)!r}: it is a folder")
    assert len(res.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--ib-gbps", "1e308"], "--ib-gbps must be between 0.001 and 1e+06 GB/s, got 1e+308"),
    (["--nvlink-gbps", "50,1e-300"], "--nvlink-gbps must be between 0.001 and 1e+06 GB/s, "
                                     "got 1e-300"),
    (["--comm-sms", "20,500"], "--comm-sms 500 is out of range: profile h800 has 132 SMs; "
                               "choose 1..131"),
])
def test_plan_refuses_what_if_values_the_profile_refuses(tmp_path: Path, args: list[str],
                                                         message: str) -> None:
    # found by the fuzzer: every configuration was dropped as "layout" after the sweep
    res = invoke("plan", "--model", "small-moe", "--schedules", "1f1b", "--ranks", "8",
                 "--workers", "1", *args, "--out", str(tmp_path / "p"))
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == f"error: {message}\n"


def test_plan_with_no_survivor_puts_its_error_first(tmp_path: Path) -> None:
    # the sweep runs (every configuration is legal) but none fits 1 GB: no bar, no empty table
    res = invoke("plan", "--model", "small-moe", "--schedules", "1f1b", "--ranks", "8",
                 "--workers", "1", "--memory-gb", "1", "--ep", "8", "--microbatch-tokens", "4096",
                 "--precision", "fp8", "--out", str(tmp_path / "p"))
    assert res.exit_code == 1 and res.stdout == ""
    # 6 comm-SM counts and the published layout (the planner always evaluates it)
    assert res.stderr.startswith("error: none of the 7 configurations survived (memory); see ")
    assert len(res.stderr.splitlines()) == 1
    assert (tmp_path / "p" / "plan.csv").is_file()  # the reasons, one per configuration


def test_plan_refuses_a_memory_cap_below_one_gb(tmp_path: Path) -> None:
    res = invoke("plan", "--model", "small-moe", "--memory-gb", "5e-324", "--out",
                 str(tmp_path / "p"))
    assert_one_line_error(res, 1, "--memory-gb must be between 1 and 1e+06 GB, got 4.94066e-324")


# ---- output paths: the same rules in every command (cli/common.check_output) --------------

def _outputs(tmp_path: Path) -> list[tuple[list[str], str, str]]:
    """(the command up to its output flag, that flag, a file or folder name) of every output
    the planning commands write (`dualsim run`'s and calibrate's: test_runtime_failures.py,
    test_calibrate_cli.py)."""
    sweep = ["plan", "--model", "small-moe", "--gpus", "64", "--schedules", "1f1b", "--ranks",
             "4", "--ep", "8", "--comm-sms", "20", "--precision", "fp8", "--microbatch-tokens",
             "4096", "--workers", "1", "--json"]
    return [(["emit", "1f1b", "-r", "2", "-m", "4", "-o"], "-o", "p.json"),
            (["emit", "1f1b", "-r", "2", "-m", "4", "--format", "torch-csv", "-o"], "-o", "p.csv"),
            (["simulate", "1f1b", "-r", "2", "-m", "4", "--trace"], "--trace", "t.json"),
            (["simulate", "1f1b", "-r", "2", "-m", "4", "--gantt"], "--gantt", "g.svg"),
            (["compare", "1f1b", "-r", "2", "-m", "4", "--json", "--out"], "--out", "report"),
            ([*sweep, "-o", str(tmp_path / "sweep"), "--emit"], "--emit", "best.json"),
            ([*sweep, "--out"], "--out", "sweep")]


def test_outputs_create_missing_folders_in_every_command(tmp_path: Path) -> None:
    for args, flag, name in _outputs(tmp_path):
        path = tmp_path / flag.strip("-") / "new" / name
        res = invoke(*args, str(path))
        assert res.exit_code == 0, (args, res.stderr)
        written = {"report": path / "report.md", "sweep": path / "plan.csv"}.get(name, path)
        assert written.is_file(), (args, written)


def test_outputs_in_a_folder_that_cannot_be_written_are_refused_before_the_work(
        tmp_path: Path) -> None:
    """/proc/dualsim-test does not exist and nothing can be created in /proc: every command
    says so in the same line before it simulates or sweeps (no progress line before it)."""
    for args, flag, name in _outputs(tmp_path):
        path = f"/proc/dualsim-test/{name}"
        res = invoke(*args, path)
        assert (res.exit_code, res.stdout) == (1, ""), args
        assert res.stderr == (f"error: {flag} {path!r}: cannot write in '/proc' (No such file "
                              "or directory); choose another folder\n"), args
