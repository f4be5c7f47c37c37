"""DualPipe and DualPipeV reproduce DeepSeek's recorded per-rank orders exactly (R=4, M=8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualsim.generators import generate

#: the repository's copy of shared/reference (see tests/data/reference/README.md)
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
#: the team's shared folder, beside the checkout (present on developer machines and in CI)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"


def _reference(name: str) -> list[list[str]]:
    path = REFERENCE / f"{name}_r4_m8.txt"
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["dualpipe", "dualpipev"])
def test_repository_copy_equals_shared_reference(name: str) -> None:
    shared = SHARED / f"{name}_r4_m8.txt"
    if not shared.exists():
        pytest.skip(f"{shared} not beside this checkout; the repository copy is used")
    assert (REFERENCE / shared.name).read_text() == shared.read_text()


@pytest.mark.parametrize("name", ["dualpipe", "dualpipev"])
def test_matches_deepseek_reference(name: str) -> None:
    assert generate(name, 4, 8).action_strings() == _reference(name)


def test_dualpipe_reference_rank0_literal() -> None:
    """Rank 0 written out, so the check holds even without the shared folder."""
    assert " ".join(generate("dualpipe", 4, 8).action_strings()[0]) == (
        "0F0 0F1 0F2 7F4 7I4 7W4 7F5 (0F3;7B5) (7F6;0B0) 7B6 (7F7;0B1) 7B7 0I2 0W2 0I3 0W3"
    )


def test_dualpipev_reference_last_rank_literal() -> None:
    assert " ".join(generate("dualpipev", 4, 8).action_strings()[3]) == (
        "3F0 4F0 3F1 4F1 3F2 4F2 3F3 4F3 3F4 4B0 (4F4;3B0) (3F5;4B1) (4F5;3B1) (3F6;4B2) "
        "(4F6;3B2) (3F7;4B3) (4F7;3B3) 4B4 3B4 4B5 3B5 4I6 3I6 4I7 3I7 4W6 3W6 4W7 3W7"
    )
