"""Gantt charts of a Timeline: one row per rank (rank 0 on top), PNG or SVG.

The look follows DeepSeek's DualPipe figure: forward orange, full backward green, input-only
backward (I) a lighter teal-green, weight gradient (W) blue; an overlapped FB is a split cell
(forward colour above with its micro-batch id, backward colour below with its id). Micro-batches
of DualPipe's reverse direction (chain 1) are drawn in a darker shade with hatching. In hardware
mode every rank gets a second, thinner lane for its communication stream; its boxes are coloured
by kind (dispatch, combine, pp_send, dp_sync) and split into the parts that overlap compute on
the same rank ("hidden", pale) and the parts that do not ("exposed": full colour over a red bar).
The runtime's measured all-to-all (stream ``a2a``) gets a third lane, drawn the same way. A thin
dark band on top of a compute lane marks where compute shared the GPU's SMs with a resident
communication kernel (and ran slower).
The way back of a V (ZB-V, DualPipeV: the second stage each rank holds, whose data flows from the
last rank back to rank 0) is drawn like DualPipe's reverse direction, so the two chunks of a rank
are told apart. Hatching is dropped on boxes too narrow to show it (their darker shade still tells
them apart); white borders only separate boxes wide enough to keep their colour, and gaps of less
than a pixel between pieces of one action are closed (a dense hardware chart would otherwise be
washed out by antialiased slivers of white; the exposed communication behind such gaps is in the
comm lane). Micro-batch ids shrink to fit narrow cells (ids of two or three digits included) down
to MIN_LABEL_PT, below which a cell stays unlabelled.

``gantt_layout`` computes every box (position, colour, label) without matplotlib, so tests can
assert what the picture shows; ``render_gantt``/``render_gantt_grid`` only draw that layout.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import pandas as pd

from dualsim.render.figure import PNG_DPI
from dualsim.render.frames import records
from dualsim.timeline import intervals_union, sm_shared_intervals

# --- palette ----------------------------------------------------------------------------------
#: (colour of chain 0, colour of chain 1 = the reverse direction) per compute op
COMPUTE_COLORS: dict[str, tuple[str, str]] = {
    "F": ("#F7B26A", "#D97B22"),
    "B": ("#8FD18B", "#4F9E4B"),
    "I": ("#B4E4D8", "#5DB3A0"),
    "W": ("#8DBAEA", "#4A84C4"),
}
OTHER_COMPUTE = ("#CFCFCF", "#9A9A9A")
COMM_COLORS: dict[str, str] = {
    "dispatch": "#A98BD6",
    "combine": "#D4A373",
    "pp_send": "#E58FC8",
    "pp_recv": "#F2C4E3",
    "dp_sync": "#8C8C8C",
}
OTHER_COMM = "#C7C76A"
REVERSE_HATCH = "///"
EXPOSED_RED = "#D62728"
EXPOSED_BAR = 0.6  # the red bar of an exposed part fills its lane from here to the bottom
SM_BAND = 0.14  # the band marking shared SMs covers the top of a compute lane down to here
SM_SHARED_COLOR = "#3B1F5C"
MIN_HATCH_PTS = 5.0  # narrower boxes are drawn without hatching
MIN_EDGE_PTS = 8.0  # narrower boxes are drawn without a white border (it would wash them out)
MIN_GAP_PX = 1.0  # gaps narrower than this between pieces of one action are not drawn
MIN_LABEL_PT = 4.0  # smallest font size of a micro-batch id
DIGIT_EM = 0.636  # width of a DejaVu Sans digit, in em
RASTERIZE_ABOVE = 4000  # boxes per panel above which an SVG embeds the boxes as an image
OP_NAMES = {"F": "forward (F)", "B": "backward (B)", "I": "backward for input (I)",
            "W": "backward for weights (W)"}

#: streams drawn as thinner lanes under a rank's compute lane, with their labels: "comm"
#: (transfers; in hardware mode also the all-to-all) and "a2a" (the runtime's all-to-all)
EXTRA_LANES = {"comm": "comm", "a2a": "all-to-all"}
COMPUTE_HEIGHT = 1.0  # row heights in layout units (one unit ~ 0.3 inch)
COMM_HEIGHT = 0.6
RANK_GAP = 0.22


class Box(NamedTuple):
    """One drawn rectangle. ``y0``/``y1`` are fractions of its row from the top (0) down (1).

    A NamedTuple: a hardware chart has ~10^5 boxes and tuples are the cheapest to build."""

    rank: int
    lane: str  # "compute", "comm", "a2a", or "sm" (the shared-SM band over a compute lane)
    row: int  # index into GanttLayout.rows, 0 = top
    x0: float
    x1: float
    y0: float
    y1: float
    color: str
    hatch: str
    label: str
    kind: str  # its legend entry: "F", "B", "I", "W", "dispatch", ..., "hidden", "exposed"
    chain: int = 0  # 1: the reverse direction (DualPipe's second chain, a V's way back)
    action: str = ""  # the action it draws (pieces of one action share its label)


@dataclass(frozen=True)
class GanttLayout:
    """Rows top to bottom as (rank, lane), the boxes, the time extent and the legend."""

    rows: tuple[tuple[int, str], ...]
    boxes: tuple[Box, ...]
    end: float
    legend: tuple[str, ...]  # keys of LEGEND_STYLES in display order
    has_comm: bool
    two_directions: bool

    def boxes_of(self, rank: int, lane: str = "compute") -> list[Box]:
        return [b for b in self.boxes if b.rank == rank and b.lane == lane]

    def row_heights(self) -> list[float]:
        return [COMPUTE_HEIGHT if lane == "compute" else COMM_HEIGHT for _, lane in self.rows]

    def row_tops(self) -> list[float]:
        """y of each row's top edge in layout units (a gap separates ranks)."""
        tops, y, prev = [], 0.0, None
        for (rank, _), h in zip(self.rows, self.row_heights()):
            if prev is not None and rank != prev:
                y += RANK_GAP
            tops.append(y)
            y += h
            prev = rank
        return tops

    def total_height(self) -> float:
        tops = self.row_tops()
        return tops[-1] + self.row_heights()[-1] if tops else 0.0


def _shade(op: str, chain: int) -> str:
    pair = COMPUTE_COLORS.get(op, OTHER_COMPUTE)
    return pair[1] if chain == 1 else pair[0]


@functools.lru_cache(maxsize=None)
def lighten(color: str, amount: float = 0.6) -> str:
    """``color`` mixed with white (amount 0 = unchanged, 1 = white), as #rrggbb."""
    c = color.lstrip("#")
    rgb = [int(c[i:i + 2], 16) for i in (0, 2, 4)]
    out = [round(v + (255 - v) * amount) for v in rgb]
    return "#" + "".join(f"{v:02x}" for v in out)


@functools.lru_cache(maxsize=None)
def darken(color: str, amount: float = 0.2) -> str:
    """``color`` mixed with black (amount 0 = unchanged), as #rrggbb."""
    c = color.lstrip("#")
    return "#" + "".join(f"{round(int(c[i:i + 2], 16) * (1 - amount)):02x}" for i in (0, 2, 4))


@functools.lru_cache(maxsize=None)
def comm_color(op: str) -> str:
    """Colour of a communication kind; its backward variant (``<kind>_bwd``) a darker shade."""
    if op.endswith("_bwd") and op[:-4] in COMM_COLORS:
        return darken(COMM_COLORS[op[:-4]], 0.25)
    return COMM_COLORS.get(op, OTHER_COMM)


def _merge_pieces(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Consecutive rows of the same action that touch become one box (hardware pieces)."""
    out: list[dict[str, Any]] = []
    for rec in records(rows):
        last = out[-1] if out else None
        if (last is not None and last["action"] == rec["action"] and last["op"] == rec["op"]
                and abs(float(rec["start"]) - float(last["end"])) <= 1e-12 * max(1.0, abs(rec["start"]))):
            last["end"] = rec["end"]
        else:
            out.append(dict(rec))
    return out


def split_hidden(start: float, end: float,
                 busy: Sequence[tuple[float, float]]) -> list[tuple[float, float, bool]]:
    """Split [start, end) into (s, e, hidden) parts: hidden where it overlaps ``busy`` compute.

    ``busy`` is sorted and disjoint (see timeline.intervals_union); found by bisection.
    """
    parts: list[tuple[float, float, bool]] = []
    t = start
    k = max(0, bisect.bisect_right(busy, (start, math.inf)) - 1)
    for s, e in busy[k:]:
        if s >= end:
            break
        if e <= t:
            continue
        if s > t:
            parts.append((t, s, False))
        hs, he = max(s, t), min(e, end)
        if he > hs:
            parts.append((hs, he, True))
        t = max(t, he)
        if t >= end:
            break
    if t < end:
        parts.append((t, end, False))
    return parts


def way_back(tl: pd.DataFrame) -> frozenset[int]:
    """Stages on the way back of a V: in a chain whose ranks, in stage order, rise to the last
    rank and then fall (ZB-V, DualPipeV), the stages after the turn."""
    comp = tl[tl["stream"] == "compute"]
    pairs = set(zip(comp["stage"].astype(int), comp["chain"].astype(int), comp["rank"].astype(int)))
    pairs |= set(zip(comp["stage2"].astype(int), comp["chain2"].astype(int),
                     comp["rank"].astype(int)))
    chains: dict[int, dict[int, int]] = {}
    for stage, chain, rank in pairs:
        if stage >= 0:
            chains.setdefault(chain, {})[stage] = rank
    back: set[int] = set()
    for by_stage in chains.values():
        stages = sorted(by_stage)
        seq = [by_stage[st] for st in stages]
        k = seq.index(max(seq))
        rises = all(a <= b for a, b in zip(seq[:k], seq[1:k + 1]))
        falls = all(a >= b for a, b in zip(seq[k:], seq[k + 1:]))
        if k > 0 and rises and falls and seq[-1] < seq[k]:
            back.update(stages[k + 1:])
    return frozenset(back)


def _compute_boxes(rank: int, row: int, df: pd.DataFrame,
                   back: frozenset[int] = frozenset()) -> list[Box]:
    boxes: list[Box] = []
    for rec in _merge_pieces(df):
        x0, x1, op = float(rec["start"]), float(rec["end"]), str(rec["op"])
        if op == "FB":
            c1 = 1 if int(rec["chain"]) == 1 or int(rec["stage"]) in back else 0
            c2 = 1 if int(rec["chain2"]) == 1 or int(rec["stage2"]) in back else 0
            boxes.append(Box(rank, "compute", row, x0, x1, 0.0, 0.5, _shade("F", c1),
                             REVERSE_HATCH if c1 == 1 else "", str(rec["microbatch"]), "F", c1,
                             str(rec["action"])))
            boxes.append(Box(rank, "compute", row, x0, x1, 0.5, 1.0, _shade("B", c2),
                             REVERSE_HATCH if c2 == 1 else "", str(rec["microbatch2"]), "B", c2,
                             str(rec["action"])))
        else:
            c = 1 if int(rec["chain"]) == 1 or int(rec["stage"]) in back else 0
            mb = int(rec["microbatch"])
            boxes.append(Box(rank, "compute", row, x0, x1, 0.0, 1.0, _shade(op, c),
                             REVERSE_HATCH if c == 1 else "", str(mb) if mb >= 0 else "", op, c,
                             str(rec["action"])))
    return boxes


def _comm_boxes(rank: int, row: int, df: pd.DataFrame,
                busy: Sequence[tuple[float, float]], lane: str = "comm") -> list[Box]:
    boxes: list[Box] = []
    for rec in records(df):
        op = str(rec["op"])
        color = comm_color(op)
        for s, e, hidden in split_hidden(float(rec["start"]), float(rec["end"]), busy):
            if hidden:
                boxes.append(Box(rank, lane, row, s, e, 0.0, 1.0, lighten(color, 0.55), "", "",
                                 "hidden"))
            else:
                boxes.append(Box(rank, lane, row, s, e, 0.0, EXPOSED_BAR, color, "", "",
                                 "exposed"))
                boxes.append(Box(rank, lane, row, s, e, EXPOSED_BAR, 1.0, EXPOSED_RED, "", "",
                                 "exposed"))
    return boxes


def gantt_layout(timeline: pd.DataFrame) -> GanttLayout:
    """Every box of the Gantt chart of ``timeline``, without drawing anything."""
    tl = timeline.sort_values(["rank", "stream", "start", "end"], kind="stable")
    lanes = [lane for lane in EXTRA_LANES if bool((tl["stream"] == lane).any())]
    has_comm = bool(lanes)
    ranks = sorted(int(r) for r in tl["rank"].unique())
    rows: list[tuple[int, str]] = []
    boxes: list[Box] = []
    back = way_back(tl)
    for rank in ranks:
        mine = tl[tl["rank"] == rank]
        comp = mine[mine["stream"] == "compute"]
        rows.append((rank, "compute"))
        boxes.extend(_compute_boxes(rank, len(rows) - 1, comp, back))
        boxes.extend(Box(rank, "sm", len(rows) - 1, s, e, 0.0, SM_BAND, SM_SHARED_COLOR, "",
                         "", "sm_shared") for s, e in sm_shared_intervals(mine, rank))
        busy = intervals_union(zip(comp["start"].astype(float), comp["end"].astype(float)))
        for lane in lanes:
            rows.append((rank, lane))
            boxes.extend(_comm_boxes(rank, len(rows) - 1, mine[mine["stream"] == lane], busy,
                                     lane))
    two = any(b.chain == 1 for b in boxes)
    end = float(tl["end"].max()) if len(tl) else 1.0
    return GanttLayout(tuple(rows), tuple(boxes), end, _legend_keys(tl, boxes, two), has_comm, two)


def _legend_keys(tl: pd.DataFrame, boxes: list[Box], two: bool) -> tuple[str, ...]:
    ops = set(tl.loc[tl["stream"] == "compute", "op"].astype(str))
    keys = [k for k in ("F", "B", "I", "W") if k in ops or (k in "FB" and "FB" in ops)]
    if "FB" in ops:
        keys.append("FB")
    if two:
        keys.append("reverse")
    kinds = {b.kind for b in boxes if b.lane != "compute"}
    known = list(COMM_COLORS)
    comm_ops = sorted(set(tl.loc[tl["stream"].isin(EXTRA_LANES), "op"].astype(str)),
                      key=lambda o: (known.index(o.removesuffix("_bwd"))
                                     if o.removesuffix("_bwd") in known else 99, o))
    keys.extend(f"comm:{o}" for o in comm_ops)
    keys.extend(k for k in ("hidden", "exposed") if k in kinds)
    if any(b.lane == "sm" for b in boxes):
        keys.append("sm_shared")
    return tuple(keys)


# --- drawing ----------------------------------------------------------------------------------

def _legend_handles(keys: Sequence[str]) -> tuple[list[Any], list[str], dict[Any, Any]]:
    from matplotlib.legend_handler import HandlerBase
    from matplotlib.patches import Patch, Rectangle

    class SplitCell:
        """Legend proxy of a cell split in two colours (FB; exposed communication)."""

        def __init__(self, top: str, bottom: str) -> None:
            self.top, self.bottom = top, bottom

    class SplitHandler(HandlerBase):
        def create_artists(self, legend, orig, xd, yd, width, height, fontsize, trans):
            top = Rectangle((xd, yd + height / 2), width, height / 2, facecolor=orig.top,
                            edgecolor="white", lw=0.5, transform=trans)
            bottom = Rectangle((xd, yd), width, height / 2, facecolor=orig.bottom,
                               edgecolor="white", lw=0.5, transform=trans)
            return [top, bottom]

    handles: list[Any] = []
    labels: list[str] = []
    split = SplitCell(COMPUTE_COLORS["F"][0], COMPUTE_COLORS["B"][0])
    for k in keys:
        if k in OP_NAMES:
            handles.append(Patch(facecolor=COMPUTE_COLORS[k][0], edgecolor="white"))
            labels.append(OP_NAMES[k])
        elif k == "FB":
            handles.append(split)
            labels.append("overlapped F (top) + B (bottom)")
        elif k == "reverse":
            handles.append(Patch(facecolor="#8A8A8A", edgecolor="white", hatch=REVERSE_HATCH))
            labels.append("reverse direction: 2nd chain or a V's way back (darker, hatched)")
        elif k.startswith("comm:"):
            op = k[5:]
            handles.append(Patch(facecolor=comm_color(op), edgecolor="white"))
            labels.append(f"comm: {op}")
        elif k == "hidden":
            handles.append(Patch(facecolor=lighten("#8C8C8C", 0.55), edgecolor="white"))
            labels.append("comm hidden under compute (pale)")
        elif k == "exposed":
            handles.append(SplitCell("#8C8C8C", EXPOSED_RED))
            labels.append("comm exposed (red bar below)")
        elif k == "sm_shared":
            handles.append(Patch(facecolor=SM_SHARED_COLOR, edgecolor="white"))
            labels.append("SMs shared with a comm kernel (band on top)")
    return handles, labels, {SplitCell: SplitHandler()}


def _boxes(ax: Any, layout: GanttLayout, *, pts_per_unit: float) -> None:
    """Draw ``layout``'s boxes on ``ax`` (once the figure's layout is fixed).

    Boxes of one look (lane, colour, hatch, edge) become one compound path: a hardware chart has
    tens of thousands of boxes, and one path per look draws them in a fraction of the time of one
    path per box (and writes one SVG element per look). Dense charts are rasterized inside an
    SVG so the file stays small; text, axes and legend stay vector.
    """
    import numpy as np
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    rasterize = len(layout.boxes) > RASTERIZE_ABOVE
    tops = layout.row_tops()
    heights = layout.row_heights()
    groups: dict[tuple[str, str, str, float], list[tuple[float, float, float, float]]] = {}
    for b in close_gaps(layout.boxes, MIN_GAP_PX * 72.0 / PNG_DPI / pts_per_unit):
        width_pts = (b.x1 - b.x0) * pts_per_unit
        hatch = b.hatch if width_pts >= MIN_HATCH_PTS else ""
        lw = (0.6 if b.lane == "compute" else 0.3) if width_pts >= MIN_EDGE_PTS and b.lane != "sm" \
            else 0.0
        h = heights[b.row]
        groups.setdefault((b.lane, hatch, b.color, lw), []).append(
            (b.x0, b.x1, tops[b.row] + b.y0 * h, tops[b.row] + b.y1 * h))
    # compute before comm, plain before hatched, narrow (no edge) before edged: a fixed order
    for (lane, hatch, color, lw), rects in sorted(groups.items()):
        r = np.asarray(rects, dtype=float)
        x0, x1, y0, y1 = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
        verts = np.stack([np.stack(p, axis=1) for p in
                          ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))], axis=1)
        codes = np.tile(np.array([MplPath.MOVETO] + [MplPath.LINETO] * 3 + [MplPath.CLOSEPOLY],
                                 dtype=MplPath.code_type), len(r))
        kw: dict[str, Any] = {}
        if hatch:
            kw["hatch"] = hatch
            kw["hatchcolor"] = (1.0, 1.0, 1.0, 0.55)
        # add_artist, not add_patch: the limits are set already, and add_patch would walk
        # every vertex to update them
        ax.add_artist(PathPatch(MplPath(verts.reshape(-1, 2), codes), facecolor=color,
                                edgecolor="white" if lw else "none", linewidth=lw,
                                rasterized=rasterize, **kw))


def close_gaps(boxes: Sequence[Box], gap: float) -> list[Box]:
    """``boxes`` with the pieces of one action that are less than ``gap`` apart drawn as one
    box (in layout order: pieces of an action follow one another in their lane)."""
    out: list[Box] = []
    last: dict[tuple[str, int, float], int] = {}  # (lane, row, y0) -> index of its last box
    for b in boxes:
        key = (b.lane, b.row, b.y0)
        i = last.get(key)
        prev = out[i] if i is not None else None
        if (prev is not None and b.action and prev.action == b.action
                and prev.color == b.color and 0 <= b.x0 - prev.x1 < gap):
            out[i] = prev._replace(x1=max(prev.x1, b.x1))
        else:
            last[key] = len(out)
            out.append(b)
    return out


def _axes(ax: Any, layout: GanttLayout, *, end: float) -> None:
    """Limits, rank labels and grid of one panel."""
    tops = layout.row_tops()
    heights = layout.row_heights()
    ax.set_xlim(0, end)
    ax.set_ylim(layout.total_height(), 0)
    ticks = [t + h / 2 for t, h in zip(tops, heights)]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"rank {r}" if lane == "compute" else EXTRA_LANES[lane]
                        for r, lane in layout.rows])
    for lab, (_, lane) in zip(ax.get_yticklabels(), layout.rows):
        if lane != "compute":
            lab.set_fontsize(6.5)
            lab.set_color("#555555")
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    ax.grid(axis="x", color="#E5E5E5", linewidth=0.5)
    ax.set_axisbelow(True)


def _points_per_unit(ax: Any) -> tuple[float, float]:
    """Typographic points per data unit along x and y of ``ax`` as laid out."""
    box = ax.get_window_extent()
    x_lo, x_hi = ax.get_xlim()
    y_lo, y_hi = ax.get_ylim()
    to_pt = 72.0 / ax.figure.dpi
    return box.width * to_pt / (x_hi - x_lo), box.height * to_pt / abs(y_hi - y_lo)


@functools.lru_cache(maxsize=4096)
def _glyphs(text: str, size: float) -> tuple[Any, Any]:
    """The outline of ``text`` at ``size`` points (DejaVu Sans), centred on (0, 0): vertices in
    points (y up) and path codes. Digits all have the height of "0", so ids line up."""
    import numpy as np
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    prop = FontProperties(family="DejaVu Sans")
    path = TextPath((0, 0), text, size=size, prop=prop)
    zero = TextPath((0, 0), "0", size=size, prop=prop).vertices
    v = np.array(path.vertices, dtype=float)
    v[:, 0] -= (v[:, 0].min() + v[:, 0].max()) / 2
    v[:, 1] -= (zero[:, 1].min() + zero[:, 1].max()) / 2
    return v, np.array(path.codes)


def _label(ax: Any, layout: GanttLayout, *, rasterize: bool = False) -> None:
    """Write micro-batch ids on the boxes wide enough for them (after the layout is fixed).

    The ids are glyph outlines gathered into one path per colour rather than one Text artist
    each: a hardware chart has thousands of them, and Text artists cost seconds per file.
    """
    import numpy as np
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    pts_x, pts_y = _points_per_unit(ax)
    tops = layout.row_tops()
    heights = layout.row_heights()
    parts: dict[str, tuple[list[Any], list[Any]]] = {}
    for b, x0, x1 in label_spans(layout):
        h = heights[b.row]
        y = tops[b.row] + b.y0 * h
        bh = (b.y1 - b.y0) * h
        size = label_size(b.label, (x1 - x0) * pts_x, bh * pts_y)
        if size is not None:
            v, codes = _glyphs(b.label, size)
            # points to data units; the y axis points down (rank 0 on top)
            xy = np.column_stack(((x0 + x1) / 2 + v[:, 0] / pts_x, y + bh / 2 - v[:, 1] / pts_y))
            verts, cs = parts.setdefault("white" if b.chain == 1 else "black", ([], []))
            verts.append(xy)
            cs.append(codes)
    for color, (verts, cs) in sorted(parts.items()):
        ax.add_artist(PathPatch(MplPath(np.concatenate(verts), np.concatenate(cs)),
                                facecolor=color, edgecolor="none", linewidth=0,
                                in_layout=False, rasterized=rasterize))


def label_size(label: str, width_pts: float, height_pts: float) -> float | None:
    """Font size (points) of ``label`` in a cell of that size: up to 8 pt and 60% of the cell's
    height, shrunk to fit its width with a 1 pt margin; None below MIN_LABEL_PT."""
    size = min(8.0, max(4.5, 0.6 * height_pts), (width_pts - 1.0) / (DIGIT_EM * len(label)))
    return None if size < MIN_LABEL_PT else math.floor(size * 4) / 4  # few sizes: glyph cache


def label_spans(layout: GanttLayout) -> list[tuple[Box, float, float]]:
    """One (box, x0, x1) per labelled action half: the pieces of an action share one label,
    centred on their envelope."""
    spans: dict[tuple[int, float, str, str], list[Any]] = {}
    for b in layout.boxes:
        if not b.label:
            continue
        key = (b.row, b.y0, b.action or f"{b.x0}", b.label)
        if key in spans:
            spans[key][1] = min(spans[key][1], b.x0)
            spans[key][2] = max(spans[key][2], b.x1)
        else:
            spans[key] = [b, b.x0, b.x1]
    return [(b, x0, x1) for b, x0, x1 in spans.values()]


def _width_inches(layouts: Sequence[GanttLayout], end: float) -> float:
    durations = sorted(b.x1 - b.x0 for lay in layouts for b in lay.boxes
                       if b.lane == "compute" and b.x1 > b.x0)
    typical = durations[len(durations) // 4] if durations else end
    return min(26.0, max(7.5, 1.6 + 0.24 * end / max(typical, 1e-30)))


ROW_INCH = 0.36


def _legend_columns(labels: Sequence[str], width: float) -> int:
    """As many legend columns as fit in ``width`` inches, balanced over the rows."""
    if not labels:
        return 1
    entry = 0.75 + 0.068 * max(len(t) for t in labels)
    fit = max(1, min(len(labels), int((width - 0.3) // entry)))
    rows = -(-len(labels) // fit)
    return -(-len(labels) // rows)


def render_gantt(timeline: pd.DataFrame, path: str | Path, *, title: str = "",
                 time_unit: str = "cost units") -> None:
    """Write the Gantt chart of ``timeline`` to ``path`` (.png or .svg), atomically."""
    render_gantt_files([(title, timeline)], [path], time_unit=time_unit)


def render_gantt_grid(panels: list[tuple[str, pd.DataFrame]], path: str | Path, *,
                      time_unit: str = "cost units") -> None:
    """One panel per (title, timeline), stacked vertically on one time scale."""
    render_gantt_files(panels, [path], time_unit=time_unit)


def render_gantt_files(panels: list[tuple[str, pd.DataFrame]], paths: Sequence[str | Path], *,
                       time_unit: str = "cost units") -> None:
    """Build the figure of ``panels`` once and save it to every path (e.g. a .png and a .svg)."""
    from dualsim.render.figure import check_path, new_figure, save_figure, style

    for path in paths:
        check_path(path)
    if not panels:
        raise ValueError("a Gantt chart needs at least one panel")
    layouts = [gantt_layout(tl) for _, tl in panels]
    end = max(lay.end for lay in layouts)
    width = _width_inches(layouts, end)
    heights = [lay.total_height() for lay in layouts]
    keys: list[str] = []
    for lay in layouts:
        keys.extend(k for k in lay.legend if k not in keys)
    order = ["F", "B", "I", "W", "FB", "reverse"]
    keys.sort(key=lambda k: order.index(k) if k in order else len(order))
    titled = sum(1 for t, _ in panels if t)
    plot_h = sum(h * ROW_INCH for h in heights) + 0.35 * len(panels)
    handles, labels, hmap = _legend_handles(keys)
    ncol = _legend_columns(labels, width)
    legend_rows = -(-len(labels) // ncol)
    fig_h = plot_h + 0.45 * titled + 0.55 + 0.28 * legend_rows + 0.2
    with style():
        fig = new_figure(width, fig_h)
        fig.set_layout_engine("constrained", h_pad=0.04, w_pad=0.04)
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": [max(h, 0.5) for h in heights]})[:, 0]
        for ax, (ttl, _), lay in zip(axes, panels, layouts):
            _axes(ax, lay, end=end)
            if ttl:
                ax.set_title(ttl, loc="left", fontsize=10, fontweight="bold")
        for ax in axes[:-1]:
            ax.tick_params(axis="x", labelbottom=False)
        axes[-1].set_xlabel(f"time ({time_unit})")
        fig.legend(handles, labels, handler_map=hmap, loc="outside lower center",
                   ncol=ncol, frameon=False, fontsize=8)
        fig.draw_without_rendering()
        fig.set_layout_engine("none")  # positions are final: labels must not move them
        for ax, lay in zip(axes, layouts):
            _boxes(ax, lay, pts_per_unit=_points_per_unit(ax)[0])
            _label(ax, lay, rasterize=len(lay.boxes) > RASTERIZE_ABOVE)
        for path in paths:
            save_figure(fig, path)
