"""Layouts: a model placed on a pipeline, with its layers spread over the layer slices.

A layout holds the parallel sizes (pipeline ranks, EP, GPUs, micro-batch tokens) and, per chain
position, the ``LayerSlice`` of units placed there. Layers are assigned to balance the ranks'
compute (a rank may hold several positions: a V or DualPipe's two chains); the first slice also
holds the embedding, the last the head and MTP modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

from dualsim.errors import DualsimError, ProfileError
from dualsim.workload.model import Model
from dualsim.workload.units import Elementwise, Unit, model_units


@dataclass(frozen=True)
class LayerSlice:
    """The units at one chain position (the same layer slice in every chain)."""

    position: int
    units: tuple[Unit, ...]

    @property
    def layers(self) -> int:
        return sum(1 for u in self.units if u.name.startswith("layer"))


@dataclass(frozen=True)
class Layout:
    """A model placed on a cluster: parallel sizes and the layer slices of the pipeline."""

    model: Model
    ranks: int
    microbatches: int
    ep: int
    gpus: int
    microbatch_tokens: int
    sequence: int
    slices: tuple[LayerSlice, ...]
    holders: tuple[tuple[int, ...], ...] = field(default=())  # position -> ranks holding it

    @property
    def pipelines(self) -> int:
        """Data-parallel replicas of the whole pipeline (gpus / ranks)."""
        return self.gpus // self.ranks

    @property
    def tokens_per_step(self) -> int:
        return self.microbatches * self.microbatch_tokens * self.pipelines

    @property
    def model_flops_per_token(self) -> float:
        """Forward + backward model FLOPs per token (3x forward, no recomputation)."""
        return 3 * sum(u.model_flops for s in self.slices for u in s.units)


def check_parallel(model: Model, ranks: int, ep: int, gpus: int, microbatch_tokens: int, *,
                   preset: Collection[str] = ()) -> None:
    """One clear ProfileError line for a layout that cannot exist.

    ``preset`` names the values ("ep", "gpus", "microbatch_tokens") the user did not pass, which
    came from the model preset's layout: the message then says so and which flag fixes it.
    """
    def said(key: str, flag: str, value: int, what: str) -> str:
        return (f"the model preset's {what} {value}" if key in preset else f"{flag} {value}")

    check_pipelines(gpus, ranks, preset=preset)
    for flag, value in (("--ep", ep), ("--microbatch-tokens", microbatch_tokens)):
        if value <= 0:
            raise ProfileError(f"{flag} must be a positive integer, got {value}")
    choices = ep_choices(model, gpus // ranks)
    if ep > gpus or (gpus // ranks) % ep:
        why = (f"is larger than the {gpus} GPUs" if ep > gpus else
               f"does not divide the {gpus // ranks} data-parallel GPUs per pipeline stage "
               f"(gpus / ranks = {gpus} / {ranks})")
        raise ProfileError(f"{said('ep', '--ep', ep, 'EP degree')} {why}; "
                           f"{'pass --ep' if 'ep' in preset else 'use --ep'} {choices}")
    # a dense model has no all-to-all: --ep N then only groups N data-parallel GPUs innermost
    # (the GPU order, hence which pipeline ranks share a node)
    if model.is_moe and model.routed_experts % ep:
        raise ProfileError(f"{said('ep', '--ep', ep, 'EP degree')} must divide the "
                           f"{model.routed_experts} routed experts; use --ep {choices}")


def check_pipelines(gpus: int, ranks: int, *, preset: Collection[str] = ()) -> None:
    """ProfileError unless the ``ranks`` pipeline ranks divide the ``gpus`` (``preset`` as in
    check_parallel); --gpus and --ranks must be positive."""
    for flag, value in (("--gpus", gpus), ("--ranks", ranks)):
        if value <= 0:
            raise ProfileError(f"{flag} must be a positive integer, got {value}")
    if gpus % ranks:
        gpus_said = f"the model preset's GPU count {gpus}" if "gpus" in preset else f"--gpus {gpus}"
        fix = ("pass --gpus with" if "gpus" in preset else "use") + f" a multiple of {ranks}"
        raise ProfileError(f"{gpus_said} is not divisible by the {ranks} pipeline ranks; {fix}, "
                           "or other --ranks")


def ep_choices(model: Model, dp: int) -> str:
    """The EP degrees that fit ``dp`` GPUs per stage (and the routed experts), as text."""
    experts = model.routed_experts if model.is_moe else 0  # dense: any divisor of dp
    small = [d for d in range(1, math.isqrt(dp) + 1) if dp % d == 0]
    fits = sorted({x for d in small for x in (d, dp // d) if experts % x == 0})
    shown = ", ".join(map(str, fits[:12])) + (", ..." if len(fits) > 12 else "")
    return f"{shown} (dividing {dp} GPUs per stage" + (
        f" and {experts} routed experts)" if model.is_moe else ")")


#: loads within this fraction of the best count as a tie when placing a layer
LOAD_TIE = 0.02


def _weight(u: Unit) -> float:
    """Balancing weight of a unit: forward FLOPs, BF16 ones counted double (half the peak)."""
    return sum(g.flops * (2 if g.dtype == "bf16" else 1) for p in u.pieces for g in p.fwd
               if not isinstance(g, Elementwise))


def assign_layers(units: Sequence[Unit], layers: int, holders: Sequence[Sequence[int]],
                  ranks: int, weight: Callable[[Unit], float] = _weight) -> list[int]:
    """Layers per chain position, balancing the load of the ranks (which hold positions).

    The first position carries the embedding, the last the head and MTP modules, so those get
    fewer layers. Greedy water-filling with the mean layer weight: each layer goes to the slice
    whose ranks' highest load grows least; loads within LOAD_TIE of that count as a tie, and
    ties go to the slice whose ranks hold the fewest layers (less activation memory), then to
    the emptier slice.
    """
    n = len(holders)
    per_layer = sum(weight(u) for u in units if u.name.startswith("layer")) / max(1, layers)
    extra = [0.0] * n
    extra[0] += sum(weight(u) for u in units if u.name == "embed")
    extra[-1] += sum(weight(u) for u in units if not u.name.startswith(("layer", "embed")))
    load = [0.0] * ranks
    for p, hs in enumerate(holders):
        for r in hs:
            load[r] += extra[p]
    counts = [0] * n
    held = [0] * ranks  # layers per rank
    for _ in range(layers):
        grown = [max(load[r] + per_layer for r in holders[p]) for p in range(n)]
        limit = min(grown) * (1 + LOAD_TIE)
        best = min((p for p in range(n) if grown[p] <= limit),
                   key=lambda p: (max(held[r] for r in holders[p]), counts[p], p))
        counts[best] += 1
        for r in holders[best]:
            load[r] += per_layer
            held[r] += 1
    return counts


def build_layout(model: Model, ranks: int, microbatches: int, holders: Sequence[Sequence[int]],
                 *, ep: int, gpus: int, microbatch_tokens: int, sequence: int | None = None,
                 layers_per_stage: Sequence[int] | None = None,
                 weight: Callable[[Unit], float] = _weight,
                 preset: Collection[str] = ()) -> Layout:
    """Place ``model`` on a pipeline whose chain position p is held by ranks ``holders[p]``.

    ``weight`` (a unit's cost, e.g. its F+I+W seconds on a profile) balances the layers;
    ``preset`` names the values the user did not pass (see check_parallel).
    """
    check_parallel(model, ranks, ep, gpus, microbatch_tokens, preset=preset)
    seq = min(sequence or model.layout["sequence"], microbatch_tokens)
    units = model_units(model, seq, ep)
    n = len(holders)
    if layers_per_stage is None:
        counts = assign_layers(units, model.layers, holders, ranks, weight)
    else:
        counts = list(layers_per_stage)
        if len(counts) != n or sum(counts) != model.layers or min(counts) < 0:
            raise ProfileError(f"layers per stage {counts} must be {n} non-negative numbers "
                               f"summing to the model's {model.layers} layers")
    layer_units = [u for u in units if u.name.startswith("layer")]
    tail = tuple(u for u in units if not u.name.startswith(("layer", "embed")))
    slices, at = [], 0
    for p, c in enumerate(counts):
        us = tuple(layer_units[at:at + c])
        at += c
        if p == 0:
            us = (units[0],) + us
        if p == n - 1:
            us = us + tail
        slices.append(LayerSlice(p, us))
    return Layout(model, ranks, microbatches, ep, gpus, microbatch_tokens, seq, tuple(slices),
                  tuple(tuple(h) for h in holders))


def microbatches_for_global_batch(global_batch: int, *, sequence: int, microbatch_tokens: int,
                                  ranks: int, gpus: int, preset: Collection[str] = ()) -> int:
    """Micro-batches per pipeline for a fixed global batch (``--global-batch``, sequences/step).

    M = global_batch x sequence / (microbatch_tokens x pipelines), pipelines = gpus / ranks; one
    ProfileError line naming the nearest global batches that divide when it is not whole.
    ``preset`` names the values ("global_batch", "gpus") the user did not pass: the message then
    says they are the model preset's.
    """
    if global_batch <= 0:
        raise ProfileError(f"--global-batch must be a positive number of sequences, "
                           f"got {global_batch}")
    check_pipelines(gpus, ranks, preset=preset)
    pipelines = gpus // ranks
    per_step = microbatch_tokens * pipelines  # tokens of one micro-batch on every pipeline
    tokens = global_batch * sequence
    if tokens % per_step:
        unit = per_step // math.gcd(per_step, sequence)  # sequences that make whole micro-batches
        lower, upper = global_batch // unit * unit, (global_batch // unit + 1) * unit
        near = f"{lower} or {upper}" if lower else f"{upper}"
        said, fix = (("the model preset's global batch", "pass --global-batch with")
                     if "global_batch" in preset else ("--global-batch", "use"))
        raise ProfileError(
            f"{said} {global_batch} ({global_batch} x {sequence} tokens) does not split "
            f"into whole micro-batches of {microbatch_tokens} tokens on each of the {pipelines} "
            f"pipelines ({gpus} GPUs / {ranks} ranks): {fix} a multiple of {unit} sequences, "
            f"e.g. {near}")
    return tokens // per_step


#: how many global batches on each side global_batch_rule looks at for one a family accepts
RULE_SEARCH = 4096


def global_batch_rule(error: DualsimError, legal: Callable[[int], bool], global_batch: int, *,
                      sequence: int, microbatch_tokens: int, ranks: int, gpus: int,
                      preset: Collection[str] = ()) -> DualsimError:
    """``error``, a family's rule broken by the M that ``global_batch`` gives (see
    microbatches_for_global_batch), in the words of the global batch: the user gave no M, so
    the fix names the nearest global batches whose M passes ``legal`` (the family's check).
    ``error`` itself when no M near it would (e.g. a rule on the ranks)."""
    pipelines = gpus // ranks
    per_step = microbatch_tokens * pipelines
    unit = per_step // math.gcd(per_step, sequence)  # sequences per step of whole micro-batches
    m_unit = unit * sequence // per_step  # micro-batches they add
    k = global_batch // unit
    below = next((j for j in range(k - 1, max(0, k - RULE_SEARCH), -1) if legal(j * m_unit)),
                 None)
    above = next((j for j in range(k + 1, k + RULE_SEARCH) if legal(j * m_unit)), None)
    found = [j for j in (below, above) if j is not None]
    if not found:
        return error
    rule = error.cli
    if "--microbatches" in rule and ": use " in rule:  # its fix names M, which was not given
        rule = rule[:rule.rfind(": use ")]
    said, verb = (("the model preset's global batch", "pass --global-batch")
                  if "global_batch" in preset else ("--global-batch", "use --global-batch"))
    choices = " or ".join(f"{j * unit} (M={j * m_unit})" for j in found)
    return type(error)(f"{rule} (M from {said} {global_batch} on {pipelines} pipelines): "
                       f"{verb} {choices}")
