"""Up-front memory estimate of a run, so a model that cannot fit is refused before any spawn.

Counted per process: the parameters of its layer slices (its share of the routed experts) with
their gradients and momentum, the float64 draws that initialise them (every expert is drawn, so
that each copy starts identical), and the activations of the micro-batches in flight (at most
all of them); plus the parent's single-process reference (the whole model, one micro-batch of
every expert-parallel process at a time). Sizes are element counts times the dtype's bytes; the
estimate is meant to catch sizes that are off by orders of magnitude, not to be exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dualsim.ir import Schedule

TENSOR_OVERHEAD = 1024  # bytes of Python and allocator bookkeeping per parameter tensor
DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2}


@dataclass(frozen=True)
class Estimate:
    per_process: int  # bytes of the largest process
    reference: int  # bytes of the parent's reference run
    total: int  # bytes of every process and the reference together


def _block_params(cfg: Any, experts_held: int) -> tuple[int, int]:
    """(elements, tensors) of one transformer block holding ``experts_held`` routed experts."""
    d, h = cfg.hidden, cfg.expert_hidden
    elements = 2 * d + 4 * d * d + cfg.experts * d + (experts_held + 1) * 2 * d * h
    return elements, 6 + 2 * experts_held + 2


def slice_params(cfg: Any, position: int, positions: int, experts_held: int) -> tuple[int, int]:
    """(elements, tensors) of layer slice ``position``."""
    e, t = _block_params(cfg, experts_held)
    elements, tensors = e * cfg.layers_per_slice, t * cfg.layers_per_slice
    if position == 0:
        elements += (cfg.vocab + cfg.seq) * cfg.hidden
        tensors += 2
    if position == positions - 1:
        elements += cfg.hidden + cfg.vocab * cfg.hidden
        tensors += 2
    return elements, tensors


def activation_elements(cfg: Any, layers: int, last: bool, sequences: int) -> int:
    """Elements a forward keeps for its backward, for ``sequences`` sequences."""
    tokens = sequences * cfg.seq
    per_layer = (24 * tokens * cfg.hidden + 4 * cfg.top_k * tokens * cfg.expert_hidden
                 + 4 * tokens * cfg.expert_hidden + 3 * sequences * cfg.heads * cfg.seq ** 2
                 + 4 * tokens * cfg.experts)
    return layers * per_layer + (3 * tokens * cfg.vocab if last else 0)


def estimate(plan: Schedule, cfg: Any, ep: int) -> Estimate:
    """Memory of running ``plan`` with model ``cfg`` on ``plan.ranks`` x ``ep`` processes."""
    item = DTYPE_BYTES.get(cfg.dtype, 8)
    positions = plan.chain_length
    worst = 0
    total = 0
    for rank in range(plan.ranks):
        stages = plan.stages_of_rank(rank)
        params = tensors = acts = drawn = 0
        for s in stages:
            pos = plan.placement(s).position
            e, t = slice_params(cfg, pos, positions, cfg.experts // ep)
            params, tensors = params + e, tensors + t
            drawn = max(drawn, slice_params(cfg, pos, positions, cfg.experts)[0])
            acts += activation_elements(cfg, cfg.layers_per_slice, pos == positions - 1,
                                        cfg.microbatch_size) * plan.microbatches
        size = 3 * params * item + drawn * 8 + tensors * 3 * TENSOR_OVERHEAD + acts * item
        worst = max(worst, size)
        total += ep * size
    ref_params = ref_tensors = 0
    for pos in range(positions):
        e, t = slice_params(cfg, pos, positions, cfg.experts)
        ref_params, ref_tensors = ref_params + e, ref_tensors + t
    ref_acts = activation_elements(cfg, cfg.layers_per_slice * positions, True,
                                   ep * cfg.microbatch_size)
    reference = (3 * ref_params + ref_acts) * item + ref_tensors * 3 * TENSOR_OVERHEAD
    return Estimate(worst, reference, total + reference)


def available_bytes() -> int | None:
    """Memory the machine can still give (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
