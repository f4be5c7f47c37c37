"""The checked-in plans in schedules/ are exactly what this dualsim emits (byte for byte)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualsim.generators import FAMILIES, generate
from dualsim.planfile import plan_to_json, read_plan

SCHEDULES = Path(__file__).resolve().parents[1] / "schedules"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_golden_plan_bytes(family: str) -> None:
    golden = SCHEDULES / f"{family}.json"
    assert golden.is_file(), f"missing {golden}: run bash schedules/regenerate.sh"
    assert plan_to_json(generate(family, 4, 8)) == golden.read_text(), (
        f"{golden.name} is stale: run bash schedules/regenerate.sh")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_golden_plan_reads_back(family: str) -> None:
    s = read_plan(str(SCHEDULES / f"{family}.json"))
    assert (s.name, s.ranks, s.microbatches) == (family, 4, 8)
    assert s.compute_only().actions == generate(family, 4, 8).actions
