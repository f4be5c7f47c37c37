"""`python -m dualsim` is the `dualsim` console script: same output, same one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dualsim.cli import app

ROOT = Path(__file__).resolve().parent.parent


def python_m_dualsim(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "dualsim", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False)


def test_python_m_dualsim_prints_what_the_app_prints():
    args = ("simulate", "zb-h2", "-r", "4", "-m", "8", "--costs", "F=1,I=1,W=1", "--json")
    proc = python_m_dualsim(*args)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["makespan"], data["span"], data["ideal"]) == (27, 24, 24)   # ZB-H2's closed form
    assert proc.stdout == CliRunner().invoke(app, list(args)).stdout


def test_python_m_dualsim_bad_input_is_one_error_line():
    proc = python_m_dualsim("simulate", "nope")
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown schedule 'nope'"), proc.stderr
