"""Fast row access to the DataFrames the renderers read (Timeline, memory table)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as dicts of plain Python values (as ``to_dict("records")`` gives),
    built from one ``tolist`` per column: many times faster on long hardware timelines, where
    ``to_dict`` boxes every cell on its own."""
    cols = list(df.columns)
    columns = (df[c].to_numpy().tolist() for c in cols)  # numpy: fast for string columns too
    return [dict(zip(cols, vals)) for vals in zip(*columns)]
