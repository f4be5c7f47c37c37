"""Per-layer GPU time of each model piece, from the piece ranges of a trace.

Piece ranges are named ``piece(pass)`` as in DeepSeek's trace: ``attn(F)``, ``mlp(B)``,
``dispatch(F)``, ``combine(B)``, ``attn(W)``, ... (F forward, B input gradient, W weight
gradient). The n-th range of a name is layer n. A piece's time is the summed duration of the
kernels launched inside its range (its GPU work; ``mlp(W)`` runs on two streams, so the sum is
its work, not its elapsed time), split by kernel class, so a row can take the attention core
alone or the data-moving all-to-all kernel without its notify/wait kernels.

Backward ranges launch the opposite all-to-all: ``combine(B)`` sends the gradient of the
combine's output back to the experts with a *dispatch* kernel (FP8, like a forward dispatch),
and ``dispatch(B)`` returns expert gradients with a *combine* kernel (BF16).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from dualsim.calibrate.trace import Range, Trace, kernel_union
from dualsim.errors import TraceError

PIECE_RE = re.compile(r"^([a-z][a-z0-9_]*)\((F|B|W)\)$")

#: kernel class -> pattern on the kernel name; the first match wins
KERNEL_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a2a_control", re.compile(r"::(notify_dispatch|cached_notify|notify_combine)\b|"
                               r"get_dispatch_layout")),
    ("a2a_data", re.compile(r"\b(internode|intranode|internode_ll)::(dispatch|combine)\b")),
    ("collective", re.compile(r"^nccl|\bnccl[A-Z]")),
    ("attention_core", re.compile(r"flash|fmha", re.IGNORECASE)),
    # GEMM kernels (DeepGEMM/CUTLASS GemmKernel, cuBLAS xmma), not the GEMM library's helper
    # kernels (dpsk::grouped_gemm::cuda::utils::transpose: a layout transpose, elementwise)
    ("gemm", re.compile(r"GemmKernel|xmma_gemm|cublas|[a-z0-9]_gemm_?kernel|cutlass.*gemm"
                        r"(?!.*::utils::)", re.IGNORECASE)),
)
OTHER = "other"


def kernel_class(name: str) -> str:
    """The class of a kernel by its name (see KERNEL_CLASSES), else "other"."""
    for cls, pattern in KERNEL_CLASSES:
        if pattern.search(name):
            return cls
    return OTHER


@dataclass(frozen=True)
class PieceSample:
    """One piece range: its kernels' summed time and span, and the sum per kernel class (s)."""

    piece: str
    phase: str
    layer: int
    total: float
    span: float
    by_class: dict[str, float]

    @property
    def key(self) -> str:
        return f"{self.piece}({self.phase})"


def sample(rng: Range, layer: int) -> PieceSample:
    m = PIECE_RE.match(rng.name)
    assert m is not None
    by: dict[str, float] = {}
    for k in rng.kernels:
        c = kernel_class(k.name)
        by[c] = by.get(c, 0.0) + k.dur * 1e-6
    return PieceSample(m.group(1), m.group(2), layer, rng.gpu_sum * 1e-6,
                       rng.gpu_span * 1e-6, by)


@dataclass(frozen=True)
class Pairs:
    """Matched compute kernels run with and without a communication kernel resident (s)."""

    positions: int  # kernel positions seen both ways
    alone: float    # sum over positions of the mean duration with no comm kernel resident
    shared: float   # ... and with one resident

    @property
    def slowdown(self) -> float:
        """shared / alone - 1 (0 without pairs)."""
        return self.shared / self.alone - 1 if self.alone > 0 else 0.0


#: a kernel counts as run with (without) a comm kernel resident when at least (at most) this
#: share of its duration overlaps one
PAIR_WITH, PAIR_WITHOUT = 0.9, 0.1


def comm_pairs(trace: Trace) -> dict[str, Pairs]:
    """Per kernel class, the same kernels with and without a comm kernel resident.

    "The same kernel" is the same position (n-th kernel, same name and stream) in the ranges of
    one compute piece name (``attn(F)`` of every layer...): each layer runs the same kernels, some
    while the other micro-batch's all-to-all is in flight and some not. A position counts when
    it was seen both ways; its mean durations are summed per class.
    """
    comm = sorted(((k.start, k.end) for k in trace.kernels
                   if kernel_class(k.name) in ("a2a_data", "a2a_control", "collective")))

    def shared(start: float, end: float) -> float:
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in comm
                   if a < end and b > start)

    seen: dict[tuple, tuple[list[float], list[float]]] = {}
    for rng in trace.ranges:
        m = PIECE_RE.match(rng.name)
        if m is None or m.group(1) in ("dispatch", "combine"):
            continue
        for i, k in enumerate(rng.kernels):
            if k.dur <= 0:
                continue
            frac = shared(k.start, k.end) / k.dur
            key = (rng.name, i, k.name, k.stream)
            w, wo = seen.setdefault(key, ([], []))
            if frac >= PAIR_WITH:
                w.append(k.dur * 1e-6)
            elif frac <= PAIR_WITHOUT:
                wo.append(k.dur * 1e-6)
    out: dict[str, list[float]] = {}
    for (_, _, name, _), (w, wo) in sorted(seen.items(), key=lambda kv: str(kv[0])):
        if w and wo:
            acc = out.setdefault(kernel_class(name), [0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += statistics.fmean(wo)
            acc[2] += statistics.fmean(w)
    return {c: Pairs(int(v[0]), v[1], v[2]) for c, v in sorted(out.items())}


@dataclass(frozen=True)
class PieceTimes:
    """Every piece range of a trace, with per-layer samples; times in seconds."""

    samples: tuple[PieceSample, ...]
    gpu_span: float  # first kernel start to last kernel end over the whole trace
    gpu_busy: dict[str, float]  # per kernel class: time during which one of them runs
    pairs: dict[str, Pairs]  # per kernel class: the same kernels with / without comm resident

    def of(self, key: str) -> list[PieceSample]:
        return [s for s in self.samples if s.key == key]

    @property
    def keys(self) -> list[str]:
        return sorted({s.key for s in self.samples})

    def mean(self, key: str, cls: str | None = None, exclude: str | None = None) -> float:
        """Mean over layers of a piece's time: all kernels, one class, or all but one class."""
        xs = self.of(key)
        if not xs:
            raise TraceError(f"the trace has no {key!r} ranges; calibration needs the pieces "
                             f"{', '.join(self.keys) or '(none found)'} named like attn(F)")
        if cls is not None:
            return statistics.fmean(s.by_class.get(cls, 0.0) for s in xs)
        if exclude is not None:
            return statistics.fmean(s.total - s.by_class.get(exclude, 0.0) for s in xs)
        return statistics.fmean(s.total for s in xs)

    def layers(self, key: str) -> int:
        return len(self.of(key))


def piece_times(trace: Trace) -> PieceTimes:
    """Samples of every ``piece(pass)`` range of a trace that launched kernels."""
    counts: dict[str, int] = {}
    samples = []
    for rng in trace.ranges:
        if not PIECE_RE.match(rng.name):
            continue
        layer = counts.get(rng.name, 0)
        counts[rng.name] = layer + 1
        samples.append(sample(rng, layer))
    if not samples:
        names = sorted({r.name for r in trace.ranges})
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise TraceError(f"{trace.path}: no piece ranges named like attn(F), mlp(B), "
                         f"dispatch(F) (found: {shown or 'none'}); name each model piece's "
                         "record_function range piece(F|B|W)")
    if not any(s.total > 0 for s in samples):
        raise TraceError(f"{trace.path}: its piece ranges launched no GPU kernels; record on a "
                         "GPU with ProfilerActivity.CUDA")
    ks = trace.kernels
    span = (max(k.end for k in ks) - min(k.start for k in ks)) * 1e-6 if ks else 0.0
    busy: dict[str, float] = {}
    for cls in {kernel_class(k.name) for k in ks}:
        busy[cls] = kernel_union(k for k in ks if kernel_class(k.name) == cls) * 1e-6
    return PieceTimes(tuple(samples), span, dict(sorted(busy.items())), comm_pairs(trace))
