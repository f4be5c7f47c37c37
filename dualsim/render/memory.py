"""Memory over time per rank (hardware mode): stacked components and the HBM capacity line.

Reads the ``SimResult.memory`` DataFrame: columns ``rank``, ``time`` and one ``<component>_gb``
column per component (params, grads, optimizer, activations; ``total_gb`` is not stacked). Each
rank gets a small panel; memory is a step function of time (it changes at action boundaries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

COMPONENT_COLORS = {
    "params": "#4C72B0",
    "grads": "#55A868",
    "optimizer": "#8172B3",
    "activations": "#DD8452",
}
OTHER_COLORS = ("#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD", "#C44E52")
RASTERIZE_ABOVE = 500  # time points per rank above which the stacked areas are an image in SVG


def components(memory: pd.DataFrame) -> list[str]:
    """The stacked components, in the order params, grads, optimizer, activations, others."""
    cols = [c[:-3] for c in memory.columns if c.endswith("_gb") and c != "total_gb"]
    known = [c for c in COMPONENT_COLORS if c in cols]
    return known + sorted(c for c in cols if c not in known)


def colors(comps: Sequence[str]) -> list[str]:
    """One colour per stacked component: the fixed ones for the known components, the others
    from OTHER_COLORS in turn (distinct while there are at most len(OTHER_COLORS) of them)."""
    others = [c for c in comps if c not in COMPONENT_COLORS]
    return [COMPONENT_COLORS.get(c) or OTHER_COLORS[others.index(c) % len(OTHER_COLORS)]
            for c in comps]


def render_memory(memory: pd.DataFrame, path: str | Path, *, hbm_gb: float | None = None,
                  time_unit: str = "s", title: str = "") -> None:
    """Write the memory-over-time figure (.png or .svg) to ``path``, atomically."""
    render_memory_files(memory, [path], hbm_gb=hbm_gb, time_unit=time_unit, title=title)


def render_memory_files(memory: pd.DataFrame, paths: Sequence[str | Path], *,
                        hbm_gb: float | None = None, time_unit: str = "s",
                        title: str = "") -> None:
    """Build the memory-over-time figure once and save it to every path (.png and/or .svg)."""
    from dualsim.render.figure import check_path, new_figure, save_figure, style

    for path in paths:
        check_path(path)
    if memory is None or len(memory) == 0:
        raise ValueError("render_memory needs a non-empty memory table (hardware mode)")
    comps = components(memory)
    ranks = sorted(int(r) for r in memory["rank"].unique())
    ncols = 1 if len(ranks) == 1 else (2 if len(ranks) <= 4 else 4)
    nrows = -(-len(ranks) // ncols)
    t_end = float(memory["time"].max())
    peak = float(memory[[f"{c}_gb" for c in comps]].sum(axis=1).max())
    top = max(peak, hbm_gb or 0.0) * 1.08 or 1.0
    with style():
        width, height = 3.2 * ncols + 0.6, 1.9 * nrows + 1.1
        fig = new_figure(width, height)
        # fixed margins in inches (a layout engine costs seconds on 16 panels): y label and
        # ticks on the left, the title on top, x label and legend at the bottom
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False,
                            gridspec_kw={"left": 0.72 / width, "right": 1 - 0.12 / width,
                                         "top": 1 - (0.62 if title else 0.3) / height,
                                         "bottom": 0.78 / height, "wspace": 0.06,
                                         "hspace": 0.34 if nrows > 1 else 0.0})
        for i, ax in enumerate(axes.flat):
            if i >= len(ranks):
                ax.set_visible(False)
                continue
            rank = ranks[i]
            mine = memory[memory["rank"] == rank].sort_values("time", kind="stable")
            t = mine["time"].astype(float).tolist()
            ys = [mine[f"{c}_gb"].astype(float).tolist() for c in comps]
            if t and t[-1] < t_end:  # hold the last value to the end of the step
                t.append(t_end)
                ys = [y + [y[-1]] for y in ys]
            polys = ax.stackplot(t, ys, colors=colors(comps),
                                 labels=comps, step="post", linewidth=0)
            if len(t) > RASTERIZE_ABOVE:  # keep SVGs of long hardware runs small
                for poly in polys:
                    poly.set_rasterized(True)
            if hbm_gb is not None:
                ax.axhline(hbm_gb, color="#C44E52", linestyle="--", linewidth=1.0,
                           label=f"HBM {hbm_gb:g} GB")
            rank_peak = max((sum(v) for v in zip(*ys)), default=0.0)
            ax.set_title(f"rank {rank}  (peak {rank_peak:.1f} GB)", fontsize=8.5, loc="left")
            ax.set_xlim(0, t_end or 1.0)
            ax.set_ylim(0, top)
            ax.grid(axis="y", color="#E5E5E5", linewidth=0.5)
        for ax in axes[-1, :]:
            ax.set_xlabel(f"time ({time_unit})")
        for ax in axes[:, 0]:
            ax.set_ylabel("memory (GB)")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels),
                   frameon=False, fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10, fontweight="bold", x=0.1 / width, ha="left",
                         y=1 - 0.08 / height, va="top")
        for path in paths:
            save_figure(fig, path)
