"""Shape-aware GEMM time: a roofline with tile and wave quantization.

A GEMM ``out[m, n] = A[m, k] @ B[k, n]`` (``groups`` of them with their own B for a grouped MoE
GEMM) is cut into output tiles of BLOCK_M x BLOCK_N; each SM computes one tile at a time, so the
tiles run in ``waves = ceil(tiles / SMs)``. The tile shape is chosen as DeepGEMM does (facts from
its April 2025 heuristic, docs/hardware-mode.md): BLOCK_M in {64, 128, 256} (128 for a grouped
GEMM), BLOCK_N in {16, 24, ..., 128, 144, 160}, fewest waves first, then the fullest last wave,
then the least padding. The time is

    launch + max(compute, operand bytes / (HBM x hbm_fraction), per-SM operand loads)
           + output bytes / (HBM x hbm_fraction)

* compute = waves x 2 BLOCK_M BLOCK_N k / (peak per SM x mainloop fraction): a partial last wave
  costs a full one, and padded tiles cost full tiles;
* operand bytes = unique A and B bytes read from HBM (FP8: 1 B/element, BF16: 2);
* per-SM operand loads = waves x (BLOCK_M + BLOCK_N) x k x element bytes / per-SM load
  bandwidth: every tile streams its own A and B panels, so few, long tiles are load-bound
  (small M, narrow N);
* the BF16 output is written after the main loop, not hidden under it (a weight gradient
  instead reads and writes its FP32 accumulator).

Its few parameters (:class:`GemmParams`) are fitted to DeepGEMM's measured H800 FP8 table by
``dualsim.cluster.gemm_fit``; they live in each profile's ``[gemm]`` section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

#: DeepGEMM's tile candidates (deep_gemm/jit_kernels/gemm.py, April 2025).
BLOCK_MS_DENSE = (64, 128, 256)
BLOCK_MS_GROUPED = (128,)  # the contiguous layout aligns every group to 128 rows
BLOCK_NS = tuple(range(16, 129, 8)) + (144, 160)
OUT_BYTES = 2.0  # BF16 output
WGRAD_OUT_BYTES = 8.0  # a weight gradient accumulates into FP32: read 4 B + write 4 B
IN_BYTES = {"fp8": 1.0, "bf16": 2.0}  # per A/B element (FP8's 1/128 scales neglected)


@dataclass(frozen=True)
class GemmShape:
    """``groups`` GEMMs ``[m, k] @ [k, n]`` (one kernel); a dense GEMM has ``groups == 1``."""

    groups: int
    m: int
    n: int
    k: int
    grouped: bool = False  # a grouped (MoE contiguous-layout) kernel: BLOCK_M is 128

    @property
    def flops(self) -> float:
        return 2.0 * self.groups * self.m * self.n * self.k

    def operand_bytes(self, dtype: str) -> float:
        """A and every group's B, read once from HBM."""
        return IN_BYTES[dtype] * self.groups * (self.m * self.k + self.n * self.k)

    def output_bytes(self, wgrad: bool = False) -> float:
        return (WGRAD_OUT_BYTES if wgrad else OUT_BYTES) * self.groups * self.m * self.n


@dataclass(frozen=True)
class GemmParams:
    """Fitted GEMM-kernel behaviour of a GPU (the profile's [gemm] section), SI units.

    ``mainloop_fraction``: share of the dtype's dense peak a full wave of tiles reaches;
    ``hbm_fraction``: share of HBM bandwidth a streaming kernel reaches; ``sm_load_bandwidth``:
    bytes/s one SM can pull for its tile's operands; ``launch``: fixed seconds per kernel;
    ``wgrad_fraction``: the main-loop fraction of weight-gradient GEMMs (which reduce over
    tokens and accumulate into FP32 gradients), per dtype; the forward one where absent.
    """

    mainloop_fraction: dict[str, float]
    hbm_fraction: float
    sm_load_bandwidth: float
    launch: float
    wgrad_fraction: dict[str, float] = field(default_factory=dict)

    def fraction(self, dtype: str, wgrad: bool = False) -> float:
        if wgrad and dtype in self.wgrad_fraction:
            return self.wgrad_fraction[dtype]
        return self.mainloop_fraction[dtype]


@dataclass(frozen=True)
class Tile:
    block_m: int
    block_n: int
    tiles: int
    waves: int


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@lru_cache(maxsize=4096)
def choose_tile(shape: GemmShape, sms: int) -> Tile:
    """The tile DeepGEMM's heuristic picks: fewest waves, fullest last wave, least padding."""
    best: tuple | None = None
    for bm in (BLOCK_MS_GROUPED if shape.grouped else BLOCK_MS_DENSE):
        for bn in BLOCK_NS:
            if bm > 128 and bn > 128:  # one of the two dims stays <= 128 (register budget)
                continue
            mt, nt = _cdiv(shape.m, bm), _cdiv(shape.n, bn)
            tiles = shape.groups * mt * nt
            waves = _cdiv(tiles, sms)
            last = tiles - (waves - 1) * sms
            padded = mt * bm * nt * bn
            key = (waves, -last, padded, -bn)
            if best is None or key < best[0]:
                best = (key, Tile(bm, bn, tiles, waves))
    assert best is not None
    return best[1]


def gemm_time(shape: GemmShape, dtype: str, *, sms: int, peak_flops: float,
              hbm_bandwidth: float, params: GemmParams, sms_used: int | None = None,
              wgrad: bool = False) -> float:
    """Seconds for one GEMM kernel of ``shape`` on a GPU with ``sms`` SMs and this peak.

    ``sms_used`` (default all) runs the kernel on fewer SMs: fewer tiles per wave, the same
    per-SM peak and load bandwidth, the whole HBM. ``wgrad``: a weight-gradient GEMM.
    """
    if shape.m <= 0 or shape.n <= 0 or shape.k <= 0 or shape.groups <= 0:
        return 0.0
    used = sms if sms_used is None else sms_used
    tile = choose_tile(shape, used)
    per_sm = peak_flops / sms * params.fraction(dtype, wgrad)
    compute = tile.waves * 2.0 * tile.block_m * tile.block_n * shape.k / per_sm
    hbm = hbm_bandwidth * params.hbm_fraction
    loads = tile.waves * (tile.block_m + tile.block_n) * shape.k * IN_BYTES[dtype]
    mainloop = max(compute, shape.operand_bytes(dtype) / hbm, loads / params.sm_load_bandwidth)
    return params.launch + mainloop + shape.output_bytes(wgrad) / hbm
