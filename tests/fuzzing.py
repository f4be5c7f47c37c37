"""Seeded, bounded fuzzing of the CLI: hostile plan files, profile/model TOML and options.

Every case is built from (kind, seed, index) alone, so a failure is reproduced by its index:
``python tests/fuzzing.py plan --seed 0 --start 1234 --count 1 --keep DIR`` rebuilds case 1234,
runs it and leaves its input files in DIR. Cases run in-process through typer's CliRunner, in a
worker process (this file's ``main``) that caps its own memory (RLIMIT_DATA) and counts each
case's CPU time with a profiling timer: a case past HANG_CPU_S is stopped and reported as a hang
(a bound on work, not a speed test; nothing here looks at the wall clock).

What every case must show (``check_result``): no traceback and no exception other than the
CLI's own exit, exit code 0, 1 or 2, at most MAX_STDERR_LINES lines on stderr, the first of
which is ``error: ...`` when the command failed (progress bars never precede it), at most
MAX_STDOUT_BYTES on stdout, and, for ``--json``, one strict JSON document (no NaN, no Infinity)
on stdout when the command succeeded.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import re
import resource
import signal
import string
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

HANG_CPU_S = 60.0  # CPU seconds one case may take before it counts as a hang
MEMORY_BYTES = 3 * 2**30  # the worker's data-segment cap: a runaway allocation fails fast
MAX_STDERR_LINES = 12  # an error line, its grid (one line per rank of a small plan), warnings
MAX_STDOUT_BYTES = 1 << 20
KINDS = ("plan", "toml", "cli")

# ---- hostile values ---------------------------------------------------------------------------


def _deep(depth: int) -> Any:
    v: Any = []
    for _ in range(depth):
        v = [v]
    return v


HOSTILE: tuple[Any, ...] = (
    0, -1, 1, 2, 3, 7, 10**6, 10**12, 2**31, 2**63, 10**18 - 1, -10**18, 1.5, -0.0, 1e308,
    5e-324, float("nan"), float("inf"), True, False, None, "", "x", "0F0", "(0F1;1B0)",
    "\n" * 1000, "9" * 5000, "0F" + "9" * 30, [], {}, _deep(60), list(range(300)),
    {"a": 1}, "é" * 50, "a" * 100_000,
)


NUMBERS = (0, -1, 1, 2, 1000, 10**6, 10**9, 10**12, 2**62, 2**63 - 1, 0.5, 1.5, 1e-300,
           5e-324, 1e308, float("nan"), float("inf"), float("-inf"), -0.0)


def hostile(rng: random.Random) -> Any:
    """A fresh copy of one hostile value (a shared one could end up inside itself)."""
    return copy.deepcopy(rng.choice(HOSTILE))


# ---- JSON tree mutation -----------------------------------------------------------------------

def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


ACTION = re.compile(r"^(\d+)(SEND_F|RECV_F|SEND_B|RECV_B|F|I|W|B)(\d+)$")
OPS = ("F", "I", "W", "B", "SEND_F", "RECV_F", "SEND_B", "RECV_B", "X", "FB", "")


def mutate_action(text: str, rng: random.Random) -> str:
    m = ACTION.match(text)
    if not m:
        return rng.choice(["0F0", "(0F0;0B0)", text + text, text[::-1], text.lower(), " " + text])
    stage, op, mb = m.groups()
    choice = rng.randrange(7)
    if choice == 0:
        op = rng.choice(OPS)
    elif choice == 1:
        stage = str(max(0, int(stage) + rng.choice((-1, 1, 2))))
    elif choice == 2:
        mb = str(max(0, int(mb) + rng.choice((-1, 1, 5))))
    elif choice == 3:
        mb = rng.choice(("9" * 12, "9" * 5000, "0" * 20 + mb, "-1"))
    elif choice == 4:
        return f"({stage}F{mb};{rng.randrange(8)}B{rng.randrange(8)})"
    elif choice == 5:
        stage = rng.choice(("99", "1000000", "0"))
    else:
        return f"{stage}{op}{mb}" + rng.choice((" ", ";", "F0", ")"))
    return f"{stage}{op}{mb}"


def mutate_tree(root: Any, rng: random.Random) -> Any:
    """One structural change somewhere in a parsed JSON/TOML document."""
    paths = list(_paths(root))
    path = rng.choice(paths)
    node = _get(root, path)
    op = rng.randrange(10)
    if op <= 2:  # replace the node
        return _set(root, path, hostile(rng))
    if op == 3 and isinstance(node, str):
        return _set(root, path, mutate_action(node, rng))
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        if op in (4, 5):
            del node[key]
        elif op == 6:
            node[rng.choice(("unknown", "world", "chunks", "x" * 70, key + "_"))] = hostile(rng)
        else:
            node[key] = hostile(rng)
        return root
    if isinstance(node, list) and node:
        i, j = rng.randrange(len(node)), rng.randrange(len(node))
        if op == 4:
            del node[i]
        elif op == 5:
            node.insert(i, node[j])
        elif op == 6:
            node[i], node[j] = node[j], node[i]
        elif op == 7:
            node.insert(i, hostile(rng))
        elif op == 8:
            del node[i:]
        else:
            node.reverse()
        return root
    return _set(root, path, hostile(rng))


def mutate_text(text: str, rng: random.Random) -> str | bytes:
    """A change to the text itself: truncation, junk, a number no reader expects, nesting."""
    op = rng.randrange(7)
    if op == 0:
        return text[: rng.randrange(len(text) + 1)]
    if op == 1:
        i = rng.randrange(len(text) + 1)
        return text[:i] + rng.choice(string.printable + "\x00\x7f\u2028") + text[i:]
    if op == 2:
        numbers = list(re.finditer(r"-?\d+(\.\d+)?", text))
        if numbers:
            m = rng.choice(numbers)
            new = rng.choice(("1e999", "9" * 5000, "NaN", "Infinity", "-0", "1.5", "2e-324",
                              "18446744073709551616", "0x10", "nan", "inf"))
            return text[: m.start()] + new + text[m.end():]
        return text
    if op == 3:
        depth = rng.choice((50, 5000, 100_000))
        return "[" * depth + text + "]" * depth
    if op == 4:
        raw = bytearray(text.encode())
        if raw:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if op == 5:
        return text * 2
    return text.replace("\n", "\r\n")


# ---- plan files -------------------------------------------------------------------------------

PLAN_SEEDS = (("1f1b", 4, 8, None), ("zb-v", 4, 8, None), ("dualpipe", 4, 8, None),
              ("interleaved", 4, 8, 2), ("zb-h2", 3, 6, None), ("dualpipev", 2, 4, None),
              ("gpipe", 2, 3, None), ("zb-h1", 2, 2, None))


def plan_seeds() -> list[dict[str, Any]]:
    """The emitted plans every plan mutant starts from (lowered, and compute-only)."""
    from dualsim.generators import generate
    from dualsim.planfile import plan_to_json

    out = []
    for name, r, m, v in PLAN_SEEDS:
        d = json.loads(plan_to_json(generate(name, r, m, v)))
        out.append(d)
        compute = dict(d)
        compute["actions"] = [[a for a in row if "SEND" not in a and "RECV" not in a]
                              for row in d["actions"]]
        out.append(compute)
    return out


def plan_case(index: int, seed: int, folder: Path, seeds: list[dict[str, Any]]) -> list[list[str]]:
    """Write plan mutant ``index`` into ``folder``; the command lines to run on it."""
    rng = random.Random(f"plan-{seed}-{index}")
    doc = json.loads(json.dumps(rng.choice(seeds)))
    for _ in range(rng.choice((1, 1, 2, 3))):
        doc = mutate_tree(doc, rng)
    text: str | bytes = json.dumps(doc, allow_nan=True)
    if rng.random() < 0.25:
        text = mutate_text(text, rng)
    path = folder / "plan.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    # check first; the rest (same reading code) on a valid mutant, or on every 8th one
    hardware = [["simulate", str(path), "--model", "small-moe", "--json"]] if index % 4 == 0 else []
    return [["check", str(path)] + (["--json"] if index % 2 else []),
            ["simulate", str(path), "--json"], ["simulate", str(path)], *hardware]


# ---- profile and model TOML -------------------------------------------------------------------

def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def toml_value(v: Any) -> str:
    """``v`` as TOML text (inline tables and arrays; NaN and infinities as TOML writes them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(x)}" for k, x in v.items()
                                if x is not None) + " }"
    return '""'  # None: TOML has no null


def dumps_toml(doc: dict[str, Any]) -> str:
    """A document of top-level keys and one level of [sections] as TOML text."""
    lines = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and v is not None]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{_toml_key(k)}]")
            lines.extend(f"{_toml_key(kk)} = {toml_value(vv)}" for kk, vv in v.items()
                         if vv is not None)
    return "\n".join(lines) + "\n"


HF_SEEDS = ("qwen2.5-0.5b", "mixtral-8x7b", "deepseek-v2-lite")  # Hugging Face config.json


def toml_seeds() -> list[tuple[str, dict[str, Any]]]:
    """Built-in profiles and model presets (TOML), and a few Hugging Face configs (JSON)."""
    from dualsim.datafiles import builtin_files, data_dir

    out = []
    for kind in ("profiles", "models"):
        for name, path in builtin_files(kind).items():
            if kind == "profiles" and name not in ("h800", "a100"):
                continue
            out.append((kind, tomllib.loads(path.read_text())))
    for name in HF_SEEDS:
        path = data_dir("hf_configs") / f"{name}.json"
        if path.is_file():
            out.append(("hf", json.loads(path.read_text())))
    return out


def toml_case(index: int, seed: int, folder: Path,
              seeds: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    rng = random.Random(f"toml-{seed}-{index}")
    kind, doc = rng.choice(seeds)
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.choice((1, 1, 2))):
        if rng.random() < 0.5:  # most fields are numbers: hit them often
            numbers = [p for p in _paths(doc) if isinstance(_get(doc, p), (int, float))
                       and not isinstance(_get(doc, p), bool)]
            doc = _set(doc, rng.choice(numbers), rng.choice(NUMBERS)) if numbers else doc
        else:
            doc = mutate_tree(doc, rng)
        if not isinstance(doc, dict):
            doc = {"x": doc}
    text: str | bytes = json.dumps(doc) if kind == "hf" else dumps_toml(doc)
    if rng.random() < 0.2:
        text = mutate_text(text, rng)
    elif rng.random() < 0.05 and kind != "hf":
        text = text + rng.choice(("y = " + "[" * 5000 + "]" * 5000, "z = " + "9" * 5000)) + "\n"
    path = folder / {"profiles": "profile.toml", "models": "model.toml", "hf": "config.json"}[kind]
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    size = ["-r", "2", "-m", "4"] if rng.random() < 0.8 else []
    if kind == "profiles":
        what = ["--profile", str(path), "--model", "small-moe"]
    else:
        what = ["--profile", "h800", "--model", str(path)]
    return [["simulate", "1f1b", *what, *size, "--json"],
            ["simulate", "zb-h1", *what, *size]]


# ---- command-line options ---------------------------------------------------------------------

INTS = ("0", "-1", "1", "2", "3", "4", "7", "8", "16", "1000000000", "9223372036854775808",
        "abc", "1e3", "", "nan", "2.5")
FLOATS = ("nan", "inf", "-inf", "1e308", "5e-324", "-1", "0", "abc", "0.5", "50", "1e-300")
COSTS = ("F=1,I=1,W=1", "F=1,I=1,W=1,B=5", "F=1,I=1,W=1,B=5,FB=10", "F=nan,I=1,W=1",
         "F=1e308,I=1,W=1", "F=5e-324,I=1,W=1", "X=1", "F=", ",,,", "F=1,F=1,I=1,W=1",
         "F=1/0,I=1,W=1", "F=" + "9" * 5000 + ",I=1,W=1", "F=1/3,I=2/3,W=1/7", "F=-1,I=1,W=1",
         "F=1,I=1", "F=1e-300,I=1,W=1", "F=1e15,I=1e15,W=1e15")
FAMILIES = ("1f1b", "zb-v", "dualpipe", "dualpipev", "interleaved", "zb-h1", "zb-h2", "gpipe",
            "1f1b-overlap", "bogus", "DualPipe", "")


def _path_choice(rng: random.Random, folder: Path) -> str:
    junk = folder / "junk.bin"
    junk.write_bytes(b"\x7fELF\x00\xff\xfe")
    (folder / "empty.toml").write_text("")
    afile = folder / "afile.txt"
    afile.write_text("x")
    return rng.choice((str(folder / "nope.toml"), str(folder), str(junk),
                       str(folder / "empty.toml"), str(afile / "sub.json"), "h900", "",
                       "small-moe", "h800", "deepseek-v3", "../" * 40 + "x.toml"))


def cli_case(index: int, seed: int, folder: Path, _seeds: Any = None) -> list[list[str]]:
    rng = random.Random(f"cli-{seed}-{index}")
    cmd = rng.choice(("simulate", "simulate", "simulate", "emit", "emit", "check", "compare",
                      "schedules", "profiles", "plan", "calibrate"))
    args: list[str] = [cmd]
    small = lambda: rng.choice(("1", "2", "3", "4", "6", "8"))  # noqa: E731
    if cmd in ("simulate", "emit"):
        args.append(rng.choice(FAMILIES))
    if cmd == "compare":
        args.extend(rng.sample(FAMILIES[:9], rng.choice((1, 2))))
    if cmd in ("check", "calibrate"):
        args.append(_path_choice(rng, folder))
    if cmd == "calibrate":
        for flag, pool in (("--ep", INTS), ("--microbatch-tokens", INTS),
                           ("--hold-out", ("bogus", ",", "attn_gemm_w", "")),
                           ("--model", ("small-moe", "bogus")), ("-o", ("x.txt", "-"))):
            if rng.random() < 0.2:
                args += [flag, rng.choice(pool)]
    if cmd in ("simulate", "emit", "compare", "plan"):
        args += ["--ranks", rng.choice(INTS) if rng.random() < 0.3 else small()]
        args += ["--microbatches", rng.choice(INTS) if rng.random() < 0.3 else
                 rng.choice(("2", "4", "8", "12"))]
        if rng.random() < 0.3:
            args += ["--chunks", rng.choice(INTS)]
    if cmd in ("simulate", "compare"):
        mode = rng.random()
        if mode < 0.5:
            if rng.random() < 0.6:
                args += ["--costs", rng.choice(COSTS)]
            if rng.random() < 0.3:
                args += ["--comm", rng.choice(FLOATS)]
        else:
            args += ["--model", rng.choice(("small-moe", "small-moe", _path_choice(rng, folder)))]
            if rng.random() < 0.5:
                args += ["--profile", rng.choice(("h800", "a100", _path_choice(rng, folder)))]
            for flag, pool in (("--ep", INTS), ("--gpus", INTS), ("--comm-sms", INTS),
                               ("--microbatch-tokens", INTS), ("--ib-gbps", FLOATS),
                               ("--nvlink-gbps", FLOATS), ("--global-batch", INTS),
                               ("--precision", ("fp8", "bf16", "fp4", ""))):
                if rng.random() < 0.15:
                    args += [flag, rng.choice(pool)]
    if cmd == "plan":
        args += ["--model", "small-moe", "--workers", "1", "--schedules",
                 rng.choice(("1f1b", "zb-h1,dualpipe", "bogus", ",", "dualpipe"))]
        for flag, pool in (("--gpus", INTS), ("--ep", INTS), ("--memory-gb", FLOATS),
                           ("--comm-sms", INTS), ("--top", INTS), ("--ib-gbps", FLOATS)):
            if rng.random() < 0.2:
                args += [flag, rng.choice(pool)]
    if cmd == "emit":
        if rng.random() < 0.4:
            args += ["--format", rng.choice(("json", "torch-csv", "yaml", ""))]
        args += ["-o", rng.choice(("-", str(folder / "p.json"), str(folder / "afile.txt" / "x"),
                                   str(folder)))]
    if cmd == "simulate" and rng.random() < 0.15:
        args += [rng.choice(("--gantt", "--trace")),
                 rng.choice((str(folder / "g.png"), str(folder / "g.pdf"), str(folder),
                             str(folder / "t.json")))]
    if cmd in ("compare", "plan"):
        out = rng.choice(("new", "new", "afile.txt", "foreign", "."))
        if out == "foreign":
            (folder / "foreign").mkdir(exist_ok=True)
            (folder / "foreign" / "notes.txt").write_text("mine")
        args += ["--out", str(folder / out)]
    if cmd not in ("emit", "profiles") and rng.random() < 0.6:
        args.append("--json")
    if rng.random() < 0.05:
        args.append(rng.choice(("--bogus", "--ranks", "-x")))
    return [args]


# ---- running and checking ---------------------------------------------------------------------

class Hang(Exception):
    """A case ran past HANG_CPU_S of CPU time."""


def _on_prof(signum: int, frame: Any) -> None:
    raise Hang(f"over {HANG_CPU_S:g} s of CPU time")


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def check_result(args: list[str], result: Any) -> str | None:
    """What is wrong with one command's result, or None."""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        if isinstance(exc, Hang):
            return f"hang: {exc}"
        return f"traceback: {type(exc).__name__}: {str(exc)[:300]}"
    out, err = result.stdout, result.stderr
    if "Traceback" in err or "Traceback" in out:
        return "traceback text in the output"
    if result.exit_code not in (0, 1, 2):
        return f"exit code {result.exit_code}"
    lines = err.splitlines()
    if len(lines) > MAX_STDERR_LINES:
        return f"{len(lines)} lines on stderr"
    if result.exit_code != 0:
        usage = result.exit_code == 2 and (err.startswith("Usage:") or "Error" in err)
        if not usage and not (lines and lines[0].startswith("error: ")):
            return f"failed without an error: first line: {lines[:1]}"
    if len(out.encode()) > MAX_STDOUT_BYTES:
        return f"{len(out)} characters on stdout"
    if result.exit_code == 0 and "--json" in args and args[0] != "emit":
        try:
            _strict_json(out)
        except ValueError as e:
            return f"--json output is not strict JSON: {e}"
    return None


CASES: dict[str, Callable[..., list[list[str]]]] = {"plan": plan_case, "toml": toml_case,
                                                      "cli": cli_case}
SEEDS: dict[str, Callable[[], Any]] = {"plan": plan_seeds, "toml": toml_seeds,
                                       "cli": lambda: None}


def run_cases(kind: str, seed: int, start: int, count: int,
              keep: Path | None = None) -> dict[str, Any]:
    """Run cases start..start+count-1 of ``kind``; a summary with every failure."""
    import warnings

    from typer.testing import CliRunner

    from dualsim.cli import app

    warnings.simplefilter("ignore")
    runner = CliRunner()
    seeds = SEEDS[kind]()
    failures: list[dict[str, Any]] = []
    worst = (0.0, -1)
    commands = 0
    codes: dict[int, int] = {}
    signal.signal(signal.SIGPROF, _on_prof)
    for index in range(start, start + count):
        with tempfile.TemporaryDirectory(prefix="dualsim-fuzz-") as tmp:
            folder = Path(tmp)
            cwd = Path.cwd()
            os.chdir(folder)  # default output folders land here, never in the checkout
            try:
                for args in CASES[kind](index, seed, folder, seeds):
                    t0 = time.process_time()
                    signal.setitimer(signal.ITIMER_PROF, HANG_CPU_S)
                    try:
                        result = runner.invoke(app, args)
                    finally:
                        signal.setitimer(signal.ITIMER_PROF, 0)
                    cpu = time.process_time() - t0
                    worst = max(worst, (cpu, index))
                    commands += 1
                    codes[result.exit_code] = codes.get(result.exit_code, 0) + 1
                    problem = check_result(args, result)
                    if problem:
                        failures.append({"index": index, "args": [a[:120] for a in args],
                                         "problem": problem,
                                         "stderr": result.stderr[-600:]})
                        break
                    if kind == "plan" and result.exit_code != 0 and index % 8:
                        break  # a refused plan: the other commands read it the same way
            finally:
                os.chdir(cwd)
                if keep is not None:
                    import shutil

                    shutil.copytree(folder, keep / f"{kind}-{index}", dirs_exist_ok=True)
    return {"kind": kind, "seed": seed, "cases": count, "commands": commands,
            "exit_codes": {str(k): v for k, v in sorted(codes.items())},
            "failures": failures, "max_cpu_s": round(worst[0], 2), "max_cpu_case": worst[1]}


def limit_memory(nbytes: int = MEMORY_BYTES) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = nbytes if hard == resource.RLIM_INFINITY else min(nbytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--keep", type=Path, default=None, help="copy each case's files here")
    a = p.parse_args(argv)
    limit_memory()
    summary = run_cases(a.kind, a.seed, a.start, a.count, a.keep)
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
