"""Seeded, bounded fuzzing (tests/fuzzing.py): hostile plan files, profile/model TOML and CLI
options end in 0, 1 or 2 with at most a few stderr lines, never a traceback or a hang.

The normal run takes DUALSIM_FUZZ_N = 1200 plan mutants, 6% as many TOML mutants and 5% as many
option cases (a few thousand commands, well under a minute of CPU). Set DUALSIM_FUZZ_N=10000 for
the long run (10,000 plan mutants, 600 TOML mutants, 500 option cases) and DUALSIM_FUZZ_SEED for
other cases. Each kind runs in a worker process that caps its memory and stops a case after
fuzzing.HANG_CPU_S of CPU time; a failure names the case index that rebuilds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dualsim

HERE = Path(__file__).resolve().parent
N = int(os.environ.get("DUALSIM_FUZZ_N", "1200"))
SEED = int(os.environ.get("DUALSIM_FUZZ_SEED", "0"))
COUNTS = {"plan": N, "toml": max(30, N * 6 // 100), "cli": max(25, N * 5 // 100)}


def run_worker(kind: str, count: int, seed: int = SEED) -> dict:
    env = dict(os.environ)
    src = str(Path(dualsim.__file__).resolve().parents[1])  # the checkout under test
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, str(HERE / "fuzzing.py"), kind, "--seed", str(seed),
                           "--count", str(count)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def describe(summary: dict) -> str:
    lines = [f"{len(summary['failures'])} of {summary['cases']} {summary['kind']} cases failed "
             f"(seed {summary['seed']}; rebuild one with `python tests/fuzzing.py "
             f"{summary['kind']} --seed {summary['seed']} --start INDEX --count 1 --keep DIR`):"]
    for f in summary["failures"][:10]:
        lines.append(f"  case {f['index']}: {f['problem']}: dualsim {' '.join(f['args'])}")
        lines.append("    stderr: " + f["stderr"].strip().replace("\n", "\n            "))
    return "\n".join(lines)


@pytest.mark.parametrize("kind", ["plan", "toml", "cli"])
def test_fuzzed_inputs_end_in_one_clear_outcome(kind: str) -> None:
    summary = run_worker(kind, COUNTS[kind])
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}))
    assert summary["failures"] == [], describe(summary)
    assert summary["cases"] == COUNTS[kind]
    # the cases reach past the first check: some commands succeed, some are refused
    codes = summary["exit_codes"]
    assert codes.get("0", 0) > 0 and codes.get("1", 0) > 0, codes


def test_the_checks_catch_what_they_promise() -> None:
    """check_result flags a traceback, a hang, a bad exit code, a wordy stderr, an error that
    is not first, and JSON that is not strict (each a failure the fuzzer must be able to see)."""
    from types import SimpleNamespace

    from fuzzing import Hang, check_result

    def result(code=0, out="", err="", exc=None):
        return SimpleNamespace(exit_code=code, stdout=out, stderr=err, exception=exc)

    ok = check_result(["simulate", "1f1b", "--json"], result(0, '{"a": 1}\n'))
    assert ok is None
    assert check_result(["check", "p"], result(1, err="error: bad\n",
                                               exc=SystemExit(1))) is None
    cases = [
        (result(1, exc=ValueError("x")), "traceback: ValueError: x"),
        (result(1, exc=Hang("over 60 s")), "hang: over 60 s"),
        (result(3, exc=SystemExit(3)), "exit code 3"),
        (result(1, err="x\n" * 13, exc=SystemExit(1)), "13 lines on stderr"),
        (result(1, err="simulating ━━ 1/1\nerror: late\n", exc=SystemExit(1)),
         "failed without an error: first line: ['simulating ━━ 1/1']"),
        (result(0, out='{"step": NaN}'), "--json output is not strict JSON: NaN in JSON output"),
        (result(0, out="x" * (1 << 21)), f"{1 << 21} characters on stdout"),
    ]
    for res, problem in cases:
        assert check_result(["simulate", "p.json", "--json"], res) == problem


def test_cases_are_rebuilt_from_their_index(tmp_path: Path) -> None:
    from fuzzing import cli_case, plan_case, plan_seeds

    seeds = plan_seeds()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert plan_case(7, 0, tmp_path / "a", seeds)[0][0] == "check"
    plan_case(7, 0, tmp_path / "b", seeds)
    assert (tmp_path / "a" / "plan.json").read_bytes() == (tmp_path / "b" / "plan.json").read_bytes()
    assert cli_case(3, 0, tmp_path / "a") == [
        [a.replace(str(tmp_path / "b"), str(tmp_path / "a")) for a in args]
        for args in cli_case(3, 0, tmp_path / "b")]
