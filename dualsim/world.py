"""The world a plan was made for: hardware profile, model preset and the layout knobs around it.

A plan file says *what* runs (ranks, micro-batches, actions); its optional ``world`` object says
*where*: the profile and model, EP degree, GPUs, communication SMs, micro-batch tokens, global
batch, precision, sequence length and recomputation, link what-ifs and routing imbalance.
``dualsim plan --emit`` records the world of the configuration it picked, so ``dualsim simulate
best.json`` alone reproduces the planner's figures; a flag given on the command line overrides
the recorded value (and says so). A recorded value that does not fit (GPUs the plan's ranks do
not divide, an EP degree or comm-SM count out of range, ...) is refused naming the plan and the
value, not a flag the user never gave (cli/simulation.py ``world_errors``), and so is a
recorded global batch that the plan's micro-batches do not hold
(``check_recorded_global_batch``).

The object is optional and plan format version 1 is unchanged: ``check`` and ``run`` ignore it.
Only the keys of ``WORLD_KEYS`` are allowed, each of its type; anything else is a PlanError
naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from dualsim.errors import PlanError

#: key -> (type, what it must be); the order is the order written to the plan file
WORLD_KEYS: dict[str, tuple[type, str]] = {
    "profile": (str, "a profile name or TOML path"),
    "model": (str, "a model preset name or TOML path"),
    "ep": (int, "a positive integer"),
    "gpus": (int, "a positive integer"),
    "comm_sms": (int, "a positive integer"),
    "microbatch_tokens": (int, "a positive integer"),
    "global_batch": (int, "a positive integer"),
    "precision": (str, '"fp8" or "bf16"'),
    "seq_len": (int, "a positive integer"),
    "recompute": (str, "a list of recompute options (see --recompute)"),
    "ib_gbps": (float, "a positive number of GB/s"),
    "nvlink_gbps": (float, "a positive number of GB/s"),
    "routing_imbalance": (float, "a number >= 1"),
}


@dataclass(frozen=True)
class World:
    """Where a plan runs; None = not recorded (the profile's or model's default applies)."""

    profile: str
    model: str
    ep: int | None = None
    gpus: int | None = None
    comm_sms: int | None = None
    microbatch_tokens: int | None = None
    global_batch: int | None = None
    precision: str | None = None
    seq_len: int | None = None
    recompute: str | None = None
    ib_gbps: float | None = None
    nvlink_gbps: float | None = None
    routing_imbalance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The recorded keys in ``WORLD_KEYS`` order (unrecorded ones left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    @staticmethod
    def from_dict(d: Any) -> "World":
        """Validate a plan's ``world`` object; PlanError names the first bad field."""
        if not isinstance(d, Mapping):
            raise PlanError(f"plan field 'world' must be an object, got {d!r}; re-emit the plan "
                            "with `dualsim plan --emit`")
        unknown = [k for k in d if k not in WORLD_KEYS]
        if unknown:
            raise PlanError(f"plan field world.{unknown[0]} is unknown; a world records "
                            f"{', '.join(WORLD_KEYS)}")
        for key in ("profile", "model"):
            if key not in d:
                raise PlanError(f"plan field world.{key} is missing: a world names its profile "
                                "and model")
        return World(**{k: _checked(k, v) for k, v in d.items()})


def _checked(key: str, value: Any) -> Any:
    typ, what = WORLD_KEYS[key]
    bad = PlanError(f"plan field world.{key} must be {what}, got {value!r}")
    if isinstance(value, bool):
        raise bad
    if typ is str:
        if not isinstance(value, str) or not value.strip():
            raise bad
        if key == "precision" and value not in ("fp8", "bf16"):
            raise bad
        return value
    if typ is int:
        if not isinstance(value, int) or value < 1:
            raise bad
        return value
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise bad
    if key == "routing_imbalance" and value < 1:
        raise bad
    return float(value)
