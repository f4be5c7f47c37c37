"""What a run's processes report back: per step, timeline rows and totals; at the end, tensors.

Plain data, no torch import, so measurement and calibration can read reports without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepRecord:
    """One step of one process; times in seconds from the step's aligned start.

    ``rows``: Timeline rows (see :mod:`dualsim.timeline`): compute actions on ``compute`` (with
    expert parallelism one row per piece, ``piece`` naming it), pipeline transfers on
    ``comm``, all-to-alls on ``a2a``. ``a2a_bytes``: bytes this process sent to the other
    processes of its expert-parallel group. ``cpu_s``: CPU seconds the process used from the
    step's start to its end, in every thread (the main one, gloo's, the communication thread):
    the work the step cost, which unlike its wall time hardly depends on what else the machine
    runs.
    """

    rows: list[tuple[Any, ...]]
    loss: float
    actions_end: float
    step_end: float
    a2a_bytes: int = 0
    cpu_s: float = 0.0


@dataclass
class RankReport:
    """Everything one process measured and ends with, for one plan.

    ``process``: its global rank; ``rank``: its pipeline rank (the plan's rank); ``ep_index``:
    its place in the pipeline rank's expert-parallel group. ``grads``/``weights``: keyed by
    (stage, position, parameter name), on the CPU.
    """

    rank: int
    steps: list[StepRecord]
    grads: dict[tuple[int, int, str], Any]
    weights: dict[tuple[int, int, str], Any]
    process: int = 0
    ep_index: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
