"""Generators against torch.distributed.pipelining's stored orders (R=4, M=8), an extra check.

``get_schedule_ops`` (private API) builds a schedule's per-rank order without a process group.
Its lists hold ``None`` for idle slots; we compare compute actions only. torch numbers stages
as we do (interleaved chunk c of rank r = stage cR + r; a V puts stages r and 2R-1-r on rank r)
and writes an overlapped pair as ``(0F7;7B3)OVERLAP_F_B``, which maps onto our FB.
Its stored 1F1B order is wrong on the last rank (docs/schedules.md, reference orders), so 1F1B
is not compared.
"""

from __future__ import annotations

import pytest

from dualsim.generators import generate

torch_visualizer = pytest.importorskip("torch.distributed.pipelining._schedule_visualizer")


def torch_orders(schedule: str, ranks: int, microbatches: int,
                 chunks: int | None = None) -> list[list[str]]:
    ops = torch_visualizer.get_schedule_ops(schedule, ranks, microbatches, chunks)
    return [[str(a).removesuffix("OVERLAP_F_B") for a in row if a is not None] for row in ops]


@pytest.mark.parametrize(("torch_name", "ours"), [
    ("ZBVZeroBubble", "zb-v"),
    ("DualPipeV", "dualpipev"),
    ("Interleaved1F1B", "interleaved"),
])
def test_matches_torch_r4_m8(torch_name: str, ours: str) -> None:
    assert generate(ours, 4, 8).action_strings() == torch_orders(torch_name, 4, 8)


def test_interleaved_differs_from_torch_when_m_equals_r() -> None:
    """M == R: §4 (like Megatron) makes every slot a warm-up slot; torch does not."""
    ours = generate("interleaved", 4, 4).action_strings()
    assert ours[0][:8] == "0F0 0F1 0F2 0F3 4F0 4F1 4F2 4F3".split()
    assert ours != torch_orders("Interleaved1F1B", 4, 4)


@pytest.mark.parametrize(("torch_name", "ours", "r", "m", "v"), [
    ("ZBVZeroBubble", "zb-v", 3, 5, None),
    ("ZBVZeroBubble", "zb-v", 4, 10, None),
    ("DualPipeV", "dualpipev", 1, 2, None),
    ("DualPipeV", "dualpipev", 3, 7, None),
    ("DualPipeV", "dualpipev", 5, 13, None),
    ("Interleaved1F1B", "interleaved", 3, 6, None),
    ("Interleaved1F1B", "interleaved", 2, 4, 3),
])
def test_matches_torch_other_sizes(torch_name: str, ours: str, r: int, m: int,
                                   v: int | None) -> None:
    assert generate(ours, r, m, v).action_strings() == torch_orders(torch_name, r, m, v)
