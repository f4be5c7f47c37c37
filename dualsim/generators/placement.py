"""Stage placement tables (docs/schedules.md, placement), shared by the generators."""

from __future__ import annotations

from dualsim.ir import Stage


def linear(ranks: int) -> tuple[Stage, ...]:
    """GPipe, 1F1B, ZB-H1, ZB-H2: stage s on rank s, one chain."""
    return tuple(Stage(s, s, 0, s) for s in range(ranks))


def interleaved(ranks: int, chunks: int) -> tuple[Stage, ...]:
    """Interleaved 1F1B: vR stages, stage s on rank s mod R, one chain."""
    return tuple(Stage(s, s % ranks, 0, s) for s in range(chunks * ranks))


def vshape(ranks: int) -> tuple[Stage, ...]:
    """ZB-V and DualPipeV: 2R stages in a V, stage s on rank s (s < R) else 2R-1-s."""
    return tuple(Stage(s, s if s < ranks else 2 * ranks - 1 - s, 0, s) for s in range(2 * ranks))


def dualpipe(ranks: int) -> tuple[Stage, ...]:
    """DualPipe: chain 0 = stages 0..R-1 on ranks 0..R-1; chain 1 = stage R+k on rank R-1-k."""
    return tuple(Stage(k, k, 0, k) for k in range(ranks)) + tuple(
        Stage(ranks + k, ranks - 1 - k, 1, k) for k in range(ranks)
    )
