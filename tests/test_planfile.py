"""Plan files: deterministic text, atomic writes, round trips and every way a file can be bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualsim.errors import DualsimError, PlanError, ValidationError
from dualsim.generators import FAMILIES, generate
from dualsim.ir import Schedule
from dualsim.lower import lower
from dualsim.planfile import plan_to_json, read_plan, write_plan

FIX = "re-emit the plan with `dualsim emit`"

PLAN_1F1B_R2_M2 = """\
{
 "format": "dualsim-plan",
 "version": 1,
 "schedule": "1f1b",
 "ranks": 2,
 "microbatches": 2,
 "stages": [
  {"stage": 0, "rank": 0, "chain": 0, "position": 0},
  {"stage": 1, "rank": 1, "chain": 0, "position": 1}
 ],
 "chains": [
  {"chain": 0, "microbatches": [0, 1]}
 ],
 "actions": [
  ["0F0", "0SEND_F0", "0F1", "0SEND_F1", "0RECV_B0", "0B0", "0RECV_B1", "0B1"],
  ["1RECV_F0", "1F0", "1B0", "1SEND_B0", "1RECV_F1", "1F1", "1B1", "1SEND_B1"]
 ]
}
"""


def plan_dict() -> dict:
    return json.loads(PLAN_1F1B_R2_M2)


def write(tmp_path: Path, obj: dict | str, name: str = "plan.json") -> str:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def read_error(path: str) -> DualsimError:
    with pytest.raises(DualsimError) as info:
        read_plan(path)
    return info.value


# ---- writing --------------------------------------------------------------------------------


def test_plan_text_is_exact() -> None:
    assert plan_to_json(generate("1f1b", 2, 2)) == PLAN_1F1B_R2_M2


def test_interleaved_plan_keeps_chunks() -> None:
    d = json.loads(plan_to_json(generate("interleaved", 2, 4, chunks=3)))
    assert d["chunks"] == 3 and len(d["stages"]) == 6


@pytest.mark.parametrize("name", list(FAMILIES))
def test_round_trip(tmp_path: Path, name: str) -> None:
    s = generate(name, 4, 8)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_plan(s, str(first))
    write_plan(s, str(second))
    assert first.read_bytes() == second.read_bytes()
    assert read_plan(str(first)) == lower(s)
    assert json.loads(first.read_text()) == lower(s).to_dict()
    # one line per rank's action list
    lines = first.read_text().splitlines()
    assert sum(line.startswith('  ["') for line in lines) == 4


def test_write_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    write_plan(generate("1f1b", 2, 2), "-")
    assert capsys.readouterr().out == PLAN_1F1B_R2_M2


def test_nothing_is_written_when_validation_fails(tmp_path: Path) -> None:
    s = generate("1f1b", 2, 2)
    bad = s.with_actions([s.actions[0], s.actions[1][1:]])
    path = tmp_path / "out" / "plan.json"
    with pytest.raises(ValidationError):
        write_plan(bad, str(path))
    assert not (tmp_path / "out").exists()


def test_compute_only_plan_is_read_and_lowered(tmp_path: Path) -> None:
    s = generate("dualpipev", 3, 6)
    assert read_plan(write(tmp_path, s.to_dict())) == lower(s)


# ---- bad files ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    e = read_error(path)
    assert isinstance(e, PlanError)
    assert e.message == f"plan file {path!r} does not exist; check the path"


def test_truncated_file(tmp_path: Path) -> None:
    path = write(tmp_path, PLAN_1F1B_R2_M2[: len(PLAN_1F1B_R2_M2) // 2])
    assert read_error(path).message == (
        f"plan file {path!r} is not valid JSON (line 11, column 2: Unterminated string starting "
        "at); it may be truncated: re-emit it with `dualsim emit`")


def test_json_that_is_not_a_plan(tmp_path: Path) -> None:
    assert read_error(write(tmp_path, {"hello": 1})).message == (
        'not a dualsim plan (expected "format": "dualsim-plan"); write one with `dualsim emit`')


def test_unknown_version(tmp_path: Path) -> None:
    d = plan_dict()
    d["version"] = 2
    assert read_error(write(tmp_path, d)).message == (
        "unsupported plan version 2: this dualsim reads version 1; re-emit the plan with this "
        "dualsim")


def test_unparsable_action(tmp_path: Path) -> None:
    d = plan_dict()
    d["actions"][1][2] = "1X0"
    e = read_error(write(tmp_path, d))
    assert isinstance(e, PlanError)
    assert e.message == (
        "rank 1, position 2: cannot parse action '1X0': expected <stage><op><microbatch> such as "
        "0F3, 7I12, 3SEND_F1, or an overlapped pair such as (0F7;7B3)")


@pytest.mark.parametrize(("rank", "pos", "text", "expected"), [
    (1, 2, None, "rank 1, position 5: 1F1 never gets a backward: 1B1 (or 1I1 and 1W1) is "
                 "missing; "),
    (1, 2, "1F0", "rank 1, position 2: 1F0 is a second 1F0 (the first is 1F0 at position 1): "
                  "each (stage, micro-batch) runs each op once; "),
    (1, 2, "5B0", "rank 1, position 2: 5B0 names stage 5, but the plan has stages 0..1; "),
    (1, 2, "1B7", "rank 1, position 2: 1B7 names micro-batch 7, which is not in stage 1's "
                  "chain (chain 0: micro-batches 0..1); "),
])
def test_missing_duplicate_or_unknown_action(tmp_path: Path, rank: int, pos: int,
                                             text: str | None, expected: str) -> None:
    d = plan_dict()
    row = d["actions"][rank]
    if text is None:  # drop 1B1 (position 6)
        del row[6]
    else:  # replace 1B0 (position 2)
        row[pos] = text
    e = read_error(write(tmp_path, d))
    assert isinstance(e, ValidationError)
    assert e.message == expected + FIX


def test_ranks_disagree_with_action_lists(tmp_path: Path) -> None:
    d = plan_dict()
    d["ranks"] = 3
    assert read_error(write(tmp_path, d)).message == (
        "plan says ranks=3 but has action lists for 2 ranks; " + FIX)


def test_reordered_plan_deadlocks_on_one_rank(tmp_path: Path) -> None:
    d = plan_dict()
    row = d["actions"][1]
    row[5], row[6] = row[6], row[5]  # 1B1 before 1F1
    e = read_error(write(tmp_path, d))
    assert e.message == ("rank 1, position 5: 1B1 runs before its forward 1F1 at position 6: "
                         "the plan deadlocks (cycle: rank 1 waits at 1B1 for 1F1 on rank 1, "
                         "position 6); reorder rank 1's actions or " + FIX)
    assert e.detail == (
        "rank | 0          1          2          3          4          5          6          7          \n"
        "   0 | 0F0        0SEND_F0   0F1        0SEND_F1   0RECV_B0   0B0        0RECV_B1   0B1\n"
        "   1 | 1RECV_F0   1F0        1B0        1SEND_B0   1RECV_F1   >1B1<      1F1        1SEND_B1")


def test_reordered_plan_deadlocks_across_ranks(tmp_path: Path) -> None:
    d = plan_dict()
    d["actions"] = [
        ["0F0", "0SEND_F0", "0RECV_B0", "0B0", "0F1", "0SEND_F1", "0RECV_B1", "0B1"],
        ["1RECV_F0", "1F0", "1RECV_F1", "1F1", "1B0", "1SEND_B0", "1B1", "1SEND_B1"],
    ]
    e = read_error(write(tmp_path, d))
    assert e.message == (
        "rank 0, position 2: 0RECV_B0 waits for 1SEND_B0 on rank 1, position 5, which cannot be "
        "posted before it: the plan deadlocks (cycle: rank 0 waits at 0RECV_B0 for 1SEND_B0 on "
        "rank 1, position 5; rank 1 waits at 1RECV_F1 for 0SEND_F1 on rank 0, position 5); "
        "reorder rank 0's actions or " + FIX)
    assert ">0RECV_B0<" in (e.detail or "")


def test_compute_only_plan_that_deadlocks(tmp_path: Path) -> None:
    s = generate("1f1b", 2, 2)
    d = s.to_dict()
    d["actions"] = [["0F0", "0B0", "0F1", "0B1"], ["1F0", "1F1", "1B0", "1B1"]]
    assert read_error(write(tmp_path, d)).message.startswith(
        "rank 0, position 1: 0B0 runs before its input gradient from stage 1 (1B0 on rank 1, "
        "position 2) can exist: the plan deadlocks")


def test_schedule_from_read_plan_is_lowered_schedule(tmp_path: Path) -> None:
    s = read_plan(write(tmp_path, PLAN_1F1B_R2_M2))
    assert isinstance(s, Schedule) and s.is_lowered and s.name == "1f1b"


def test_write_atomic_files_follow_the_umask_and_leave_no_temporary(tmp_path):
    import os

    from dualsim.io import write_atomic

    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "out.json", "{}\n")
        assert os.umask(0o027) == 0o027  # writing did not change the process umask
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_emit_into_an_unwritable_folder_names_the_file_not_its_temporary(tmp_path):
    from typer.testing import CliRunner

    from dualsim.cli import app

    from dualsim.io import write_atomic

    with pytest.raises(OSError) as e:
        write_atomic("/proc/dualsim-plan.json", "{}")
    assert e.value.filename == "/proc/dualsim-plan.json"
    # the command refuses it before writing, as every output (cli/common.check_output)
    res = CliRunner().invoke(app, ["emit", "dualpipe", "-r", "4", "-m", "8",
                                   "-o", "/proc/dualsim-plan.json"])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["error: -o '/proc/dualsim-plan.json': cannot write in "
                                       "'/proc' (No such file or directory); choose another "
                                       "folder"]


# ---- hostile files: each ends in one short PlanError/ValidationError, fast ----------------


def test_deeply_nested_json(tmp_path: Path) -> None:
    path = write(tmp_path, "[" * 100_000 + "]" * 100_000)
    assert read_error(path).message == (
        f"plan file {path!r} nests lists or objects too deeply to be a dualsim plan; re-emit "
        "it with `dualsim emit`")


@pytest.mark.parametrize("number, why", [
    ("9" * 5000, "it holds an integer of 5000 digits (at most 18 allowed)"),
    ("-" + "9" * 19, "it holds an integer of 19 digits (at most 18 allowed)"),
    ("Infinity", "it holds Infinity, which is not JSON (numbers must be finite)"),
    ("NaN", "it holds NaN, which is not JSON (numbers must be finite)"),
    ("1e999", "the number '1e999' is out of range"),
])
def test_numbers_json_cannot_hold_or_a_plan_never_has(tmp_path: Path, number: str,
                                                      why: str) -> None:
    text = PLAN_1F1B_R2_M2.replace('"microbatches": [0, 1]', f'"microbatches": [{number}, 1]')
    path = write(tmp_path, text)
    assert read_error(path).message == (
        f"plan file {path!r} is not a dualsim plan: {why}; re-emit it with `dualsim emit`")


@pytest.mark.parametrize("value, shown", [(1.5, "1.5"), (True, "True"), ("0", "'0'")])
def test_a_micro_batch_that_is_not_an_integer(tmp_path: Path, value, shown: str) -> None:
    d = plan_dict()
    d["chains"][0]["microbatches"][0] = value
    assert read_error(write(tmp_path, d)).message == (
        f"malformed plan: micro-batch must be an integer, got {shown}; re-emit it with "
        "`dualsim emit`")


def test_action_with_a_huge_number_is_one_error(tmp_path: Path) -> None:
    d = plan_dict()
    d["actions"][0][0] = "0F" + "9" * 5000
    e = read_error(write(tmp_path, d))
    assert isinstance(e, PlanError)
    assert e.message == (
        "rank 0, position 0: cannot parse action '0F" + "9" * 57 + "... (5002 characters): "
        "its stage or micro-batch number has more than 9 digits")


@pytest.mark.parametrize("field, value, expected", [
    ("microbatches", 10**12, "plan says microbatches=1000000000000 but its chains list 2 "
                             "micro-batches; "),
    ("microbatches", 10**18 - 1, f"plan says microbatches={10**18 - 1} but its chains list 2 "
                                 "micro-batches; "),
    ("position", 10**12, "stage 0 is at position 1000000000000, but a plan of 2 stages has "
                         "positions 0..1; "),
    ("position", -1, "stage 0 is at position -1, but a plan of 2 stages has positions 0..1; "),
])
def test_sizes_claimed_beyond_what_the_plan_lists(tmp_path: Path, field: str, value: int,
                                                  expected: str) -> None:
    d = plan_dict()
    if field == "position":
        d["stages"][0]["position"] = value
    else:
        d[field] = value
    e = read_error(write(tmp_path, d))
    assert isinstance(e, ValidationError)
    assert e.message == expected + FIX


def test_sizes_of_2_to_the_63_in_a_schedule_object() -> None:
    # what JSON refuses (19 digits) can still come from Python: validation checks before sizing
    from dataclasses import replace

    from dualsim.validate import validate

    s = generate("1f1b", 2, 2)
    with pytest.raises(ValidationError, match="plan says microbatches=9223372036854775808 but"):
        validate(replace(s, microbatches=2**63))
    stages = (replace(s.stages[0], position=2**63),) + s.stages[1:]
    with pytest.raises(ValidationError, match="stage 0 is at position 922337203685477580"):
        validate(replace(s, stages=stages))


@pytest.mark.parametrize("name", ["\n" * 100_000, "", "x" * 65, "a\tb", 7])
def test_schedule_name_must_be_a_short_printable_line(tmp_path: Path, name) -> None:
    d = plan_dict()
    d["schedule"] = name
    e = read_error(write(tmp_path, d))
    assert e.message.startswith("malformed plan: field 'schedule' must be a one-line printable "
                                "name of 1..64 characters, got ")
    assert len(e.message) < 210
    if isinstance(name, str) and len(name) > 60:
        assert e.message.endswith(f"... ({len(name)} characters); re-emit it with `dualsim emit`")


def test_chains_must_be_numbered_from_zero(tmp_path: Path) -> None:
    d = plan_dict()
    d["chains"][0]["chain"] = 5
    assert read_error(write(tmp_path, d)).message == (
        "malformed plan: chains must be numbered 0..0 once each, got [5]; re-emit it with "
        "`dualsim emit`")


def test_long_lists_in_messages_are_clipped(tmp_path: Path) -> None:
    d = plan_dict()
    d["microbatches"] = 5000
    d["chains"][0]["microbatches"] = list(range(1, 5001))
    e = read_error(write(tmp_path, d))
    assert e.message.startswith("the chains must split micro-batches 0..4999 among them, each "
                                "once; got [1, 2, 3")
    assert e.message.endswith(f"... (5000 items); {FIX}")


def test_json_output_refuses_nan_and_infinity() -> None:
    from dualsim.io import dumps_json, loads_json

    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
            dumps_json({"step": bad})
    assert loads_json(dumps_json({"step": 1.5, "n": [1, 2]})) == {"step": 1.5, "n": [1, 2]}
