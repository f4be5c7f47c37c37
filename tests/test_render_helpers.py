"""Hand-built Timelines shared by the renderer tests (no simulator needed), and their check."""

from __future__ import annotations

import pandas as pd

from dualsim.ir import Schedule
from dualsim.timeline import action_fields, from_rows


def row(rank, op, stage, mb, start, end, *, chain=0, stage2=-1, mb2=-1, chain2=-1,
        stream="compute", piece="", action=None):
    if action is None:
        action = f"{stage}{op}{mb}" if op != "FB" else f"({stage}F{mb};{stage2}B{mb2})"
    return (rank, stream, op, stage, mb, chain, stage2, mb2, chain2, piece, start, end, action)


def serial_timeline(schedule: Schedule, unit: float = 1.0) -> pd.DataFrame:
    """Each rank's actions back to back from t=0, one unit each (ignores dependencies)."""
    rows = []
    for r, actions in enumerate(schedule.actions):
        for i, a in enumerate(actions):
            op, st, mb, ch, st2, mb2, ch2, text = action_fields(schedule, a)
            rows.append((r, "compute", op, st, mb, ch, st2, mb2, ch2, "", i * unit,
                         (i + 1) * unit, text))
    return from_rows(rows)


def test_serial_timeline_puts_each_rank_back_to_back():
    from dualsim.generators import generate

    s = generate("1f1b", 2, 3)
    tl = serial_timeline(s)
    assert list(tl[tl["rank"] == 1]["start"]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(tl[tl["rank"] == 1]["action"]) == ["1F0", "1B0", "1F1", "1B1", "1F2", "1B2"]


def test_records_match_pandas_to_dict_with_plain_values():
    from dualsim.render.frames import records

    tl = from_rows([row(0, "F", 0, 3, 0.0, 1.5), row(1, "dispatch", 1, 3, 0.5, 2.0,
                                                     stream="comm", piece="attn")])
    got = records(tl)
    assert got == tl.to_dict("records")
    assert got[1]["op"] == "dispatch" and got[1]["start"] == 0.5 and got[0]["microbatch"] == 3
    assert [type(v) for v in got[0].values()] == [type(v) for v in tl.to_dict("records")[0].values()]
