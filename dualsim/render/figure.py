"""Deterministic, atomic saving of matplotlib figures (PNG and SVG), shared by the renderers.

The same figure saved twice gives the same bytes: PNG without the Software/date metadata, SVG
with a fixed ``svg.hashsalt`` and no Date. Files are written through ``io.write_atomic``.
"""

from __future__ import annotations

import contextlib
import io as _io
from pathlib import Path
from typing import Any, Iterator

from dualsim.io import write_atomic

FORMATS = (".png", ".svg")


def check_path(path: str | Path) -> Path:
    """The path as a Path; ValueError unless it ends in .png or .svg."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot render to {str(p)!r}: the file name must end in .png or .svg")
    return p


def rc_params() -> dict[str, Any]:
    """matplotlib settings every dualsim figure uses (paper-like, deterministic)."""
    return {
        "svg.hashsalt": "dualsim",
        "svg.fonttype": "path",
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "path.simplify": False,
    }


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply ``rc_params`` while a figure is built and saved (fonts resolve at creation)."""
    import matplotlib

    with matplotlib.rc_context(rc_params()):
        yield


def new_figure(width: float, height: float) -> Any:
    """A figure that is not registered with pyplot (no global state, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


#: resolution of PNG files (SVG is vector)
PNG_DPI = 150


def save_figure(fig: Any, path: str | Path, *, dpi: int = PNG_DPI) -> None:
    """Save ``fig`` to ``path`` (.png or .svg) atomically and byte-reproducibly."""
    p = check_path(path)
    buf = _io.BytesIO()
    with style():
        if p.suffix.lower() == ".png":
            fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        else:
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    write_atomic(p, buf.getvalue())
