"""The README's two commands are the ones the project runs: CI's `.ci/run` is the test command
as written there, and the main command installs the package and runs `dualsim compare`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_has_the_main_command_then_the_test_command():
    main, tests = _quick_start_commands()
    assert main == "python3 -m venv .venv && . .venv/bin/activate && pip install . && dualsim compare"
    assert "pip install torch==2.13.0 && pip install -e '.[runtime,dev,ray]'" in tests
    assert tests.endswith("python -m pytest -q -p no:cacheprovider")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == _quick_start_commands()[1]
