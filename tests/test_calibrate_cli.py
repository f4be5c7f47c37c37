"""`dualsim calibrate`: fitted and predicted tables, the profile file it writes, one-line errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualsim.cli import app
from dualsim.cluster.profile import load_profile

TRIMMED = Path(__file__).parent / "data" / "traces" / "deepseek-v3-train-trace.trimmed.json.gz"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "cal.toml"
    res = invoke("calibrate", TRIMMED, "--profile", "h800", "--model", "deepseek-v3", "-o", out,
                 "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout), out


def test_json_has_fitted_and_predicted_rows(calibrated) -> None:
    doc, out = calibrated
    assert set(doc) >= {"fitted", "predicted", "parameters", "pieces", "output"}
    assert len(doc["predicted"]) >= len(doc["fitted"]) > 0
    for row in doc["fitted"] + doc["predicted"]:
        assert set(row) == {"name", "measured_ms", "model_ms", "error"}
        assert row["error"] == pytest.approx(row["model_ms"] / row["measured_ms"] - 1, abs=2e-4)
    fitted = {r["name"] for r in doc["fitted"]}
    assert not fitted & {r["name"] for r in doc["predicted"]}
    # every parameter is set by fitted rows only
    assert all(set(p["rows"]) <= fitted for p in doc["parameters"])
    assert doc["output"] == str(out)


def test_written_profile_loads_and_holds_the_fitted_values(calibrated) -> None:
    doc, out = calibrated
    prof = load_profile(str(out))
    text = out.read_text()
    for p in doc["parameters"]:
        section, key = p["key"].split(".")
        got = prof.efficiency[key] if section == "efficiency" else None
        if got is not None:
            assert got == p["value"]
        assert f"rows {', '.join(p['rows'])}" in text  # the source names the fit
    assert prof.name == "cal"


def test_the_written_profile_simulates(calibrated) -> None:
    _, out = calibrated
    res = invoke("simulate", "dualpipe", "--profile", out, "--model", "deepseek-v3", "-r", "4",
                 "-m", "8", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["step_time_s"] > 0


def test_output_is_deterministic(tmp_path: Path, calibrated) -> None:
    _, first = calibrated
    again = tmp_path / "cal.toml"
    assert invoke("calibrate", TRIMMED, "-o", again).exit_code == 0
    assert again.read_bytes() == first.read_bytes()


def test_hold_out_chooses_the_predicted_rows() -> None:
    rows = ("attn_other_f,attn_other_i,mlp_gemm_w,attn_gemm_f,mlp_gemm_f,mlp_gemm_i,a2a_combine_f,"
            "pairs_other,attn_gemm_i")
    res = invoke("calibrate", TRIMMED, "--hold-out", rows, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {r["name"] for r in doc["predicted"]} == set(rows.split(","))
    fitted = [r["name"] for r in doc["fitted"]]
    assert "attn_gemm_w" in fitted and "a2a_dispatch_b" in fitted
    # the weight-gradient mainloop is then set by attention's weight gradient alone
    wgrad = next(p for p in doc["parameters"] if p["key"] == "gemm.fp8_wgrad_mainloop")
    assert wgrad["rows"] == ["attn_gemm_w"]


def test_table_output_names_both_tables() -> None:
    res = invoke("calibrate", TRIMMED)
    assert res.exit_code == 0, res.stderr
    assert "fitted (rows that set the parameters)" in res.stdout
    assert "predicted (rows held out of the fit)" in res.stdout


@pytest.mark.parametrize("hold_out,needles", [
    ("nope", ("unknown row 'nope'",)),
    ("mlp_other_i", ("fitted rows but only 1 predicted",)),
    (",", ("--hold-out was given no row names",)),
    ("attn_core_f,pairs_other,attn_gemm_f,attn_gemm_i,attn_other_i,attn_gemm_w,mlp_gemm_f,"
     "mlp_gemm_i,mlp_other_i,a2a_combine_b,a2a_dispatch_b",
     ("no fitted row determines efficiency.attention_fwd",)),
    # without the kernel pairs, every compute row moves with its efficiency and the
    # interference alike: the fit cannot tell them apart
    ("pairs_gemm,pairs_other,attn_gemm_f,attn_gemm_i,attn_other_i,attn_gemm_w,mlp_gemm_f,"
     "mlp_gemm_i,mlp_other_i,a2a_combine_b,a2a_dispatch_b",
     ("apart", "comm.interference")),
])
def test_bad_hold_out_is_one_error(hold_out: str, needles) -> None:
    one_line_error(invoke("calibrate", TRIMMED, "--hold-out", hold_out), *needles)


def _write(tmp_path: Path, name: str, doc) -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def test_malformed_and_unrelated_traces_are_one_error_each(tmp_path: Path) -> None:
    full = json.loads(gzip.decompress(TRIMMED.read_bytes()))
    text = json.dumps(full)
    cases = [
        (_write(tmp_path, "truncated.json", text[: len(text) // 2]),
         ("not valid JSON", "truncated")),
        (_write(tmp_path, "plan.json", {"format": "dualsim-plan", "version": 1}),
         ("not a profiler trace",)),
        (_write(tmp_path, "nokernels.json", dict(full, traceEvents=[
            e for e in full["traceEvents"] if e.get("cat") != "kernel"
            and e.get("cat") not in ("gpu_memcpy", "gpu_memset")])), ("no GPU kernels",)),
        (_write(tmp_path, "noranges.json", dict(full, traceEvents=[
            e for e in full["traceEvents"] if e.get("cat") != "user_annotation"])),
         ("no annotated ranges",)),
        (_write(tmp_path, "unrelated.json", {"traceEvents": [
            {"ph": "X", "cat": "kernel", "name": "k", "ts": 5, "dur": 1, "pid": 0, "tid": 7,
             "args": {"correlation": 1}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 2, "dur": 1,
             "pid": 1, "tid": 1, "args": {"correlation": 1}},
            {"ph": "X", "cat": "user_annotation", "name": "forward", "ts": 0, "dur": 9,
             "pid": 1, "tid": 1}]}), ("no piece ranges named like attn(F)", "forward")),
        (tmp_path / "missing.json", ("does not exist",)),
    ]
    for path, needles in cases:
        one_line_error(invoke("calibrate", path), *needles)


def test_bad_options_are_one_error(tmp_path: Path) -> None:
    one_line_error(invoke("calibrate", TRIMMED, "-o", tmp_path / "x.json"), "must end in .toml")
    (tmp_path / "file").write_text("")  # a file where the folder should be: refused before the fit
    one_line_error(invoke("calibrate", TRIMMED, "-o", tmp_path / "file" / "cal.toml"),
                   "is a file, not a folder")
    one_line_error(invoke("calibrate", TRIMMED, "--profile", "nope"), "unknown hardware profile")
    one_line_error(invoke("calibrate", TRIMMED, "--ep", "0"), "--ep must be a positive")
    one_line_error(invoke("calibrate", TRIMMED, "--model", "llama-70b"), "has no MoE layer")
