"""Checking a run against the single-process reference: loss, every gradient, final weights.

Relative differences are norm-wise per tensor: max|run - ref| / max|ref| (element-wise ratios
blow up on entries that are zero in the reference). DualPipe's two copies of a slice are each
checked against the reference, after their gradients were summed; with expert parallelism so
is every process's copy of the dense parameters, and each routed expert on the process that
holds it.
"""

from __future__ import annotations

from typing import Any

import torch

from dualsim.ir import Schedule
from dualsim.runtime.options import RunOptions
from dualsim.runtime.records import RankReport
from dualsim.runtime.reference import ReferenceResult, run_reference


def _diffs(run: list[dict[tuple[int, int, str], torch.Tensor]],
           ref: dict[tuple[int, str], torch.Tensor]) -> tuple[float, float, int]:
    """(max abs diff, max norm-wise relative diff, number of tensors compared)."""
    worst_abs, worst_rel = 0.0, 0.0
    for (_, position, name), t in ((k, t) for tensors in run for k, t in tensors.items()):
        r = ref[(position, name)].to(torch.float64)
        d = float((t.to(torch.float64) - r).abs().max()) if t.numel() else 0.0
        scale = float(r.abs().max()) if r.numel() else 0.0
        worst_abs = max(worst_abs, d)
        worst_rel = max(worst_rel, d / scale if scale > 0 else d)
    return worst_abs, worst_rel, sum(len(tensors) for tensors in run)


def check_against_reference(plan: Schedule, options: RunOptions, reports: list[RankReport],
                            reference: ReferenceResult | None = None) -> dict[str, Any]:
    """The correctness part of ``dualsim run --json``."""
    ref = reference or run_reference(options.model, plan.chain_length, plan.microbatches,
                                     options.steps, options.ep)
    grads = [rep.grads for rep in reports]
    weights = [rep.weights for rep in reports]
    covered = {(pos, name) for g in grads for (_, pos, name) in g}
    if covered != set(ref.grads):
        raise AssertionError("the processes' slices do not cover the model exactly")
    g_abs, g_rel, n = _diffs(grads, ref.grads)
    w_abs, w_rel, _ = _diffs(weights, ref.weights)
    losses = [sum(rep.steps[k].loss for rep in reports) for k in range(options.steps)]
    return {
        "loss": losses[-1],
        "reference_loss": ref.losses[-1],
        "loss_diff": abs(losses[-1] - ref.losses[-1]),
        "losses": losses,
        "reference_losses": ref.losses,
        "max_abs_grad_diff": g_abs,
        "max_rel_grad_diff": g_rel,
        "max_abs_weight_diff": w_abs,
        "max_rel_weight_diff": w_rel,
        "tensors_checked": n,
    }


def tolerance(dtype: str) -> tuple[float, float]:
    """(abs tolerance, relative tolerance) a correct run meets in this dtype."""
    return {"float64": (1e-12, 1e-10), "float32": (1e-4, 1e-5)}.get(dtype, (1e-1, 5e-2))


def passed(result: dict[str, Any], dtype: str) -> bool:
    """Whether the gradients and weights match the reference to the dtype's tolerance."""
    atol, rtol = tolerance(dtype)
    if dtype == "float64":
        return result["max_abs_grad_diff"] <= atol and result["max_abs_weight_diff"] <= atol
    return result["max_rel_grad_diff"] <= rtol and result["max_rel_weight_diff"] <= rtol
