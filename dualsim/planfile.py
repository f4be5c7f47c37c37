"""Plan files (docs/formats.md): a validated, lowered schedule as deterministic JSON text.

A plan is validated as computed, lowered (SEND/RECV inserted), validated again and only then
written, atomically; nothing is written when a check fails. Reading accepts a lowered plan (its
transfers must be right) or a compute-only one (which is lowered on reading). A plan may carry
an optional ``world`` object (dualsim/world.py: the profile, model and layout knobs it was planned
for); it is written after the sizes and validated on reading.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dualsim.io import read_json, write_atomic
from dualsim.errors import PlanError
from dualsim.ir import Action, Schedule
from dualsim.lower import lower
from dualsim.world import World

_LIST_KEYS = ("stages", "chains", "actions")


def plan_to_json(schedule: Schedule, world: World | None = None) -> str:
    """The plan text of ``schedule`` (and its ``world``): the same inputs give the same bytes.

    Top-level fields one per line; each stage, chain and rank's action list on one line.
    """
    plan = lower(schedule)  # validates the input, and the lowered result
    d = plan.to_dict()
    if world is not None:  # after the sizes, before the long lists
        at = list(d).index("stages")
        items = list(d.items())
        d = dict(items[:at] + [("world", world.to_dict())] + items[at:])
    return _format(d)


def _format(d: dict[str, Any]) -> str:
    lines = []
    for key, value in d.items():
        if key in _LIST_KEYS:
            items = ",\n".join(f"  {_compact(v)}" for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {_compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), allow_nan=False)


def write_plan(schedule: Schedule, path: str, world: World | None = None) -> None:
    """Write ``schedule`` as a plan to ``path`` ("-" = stdout), atomically, after validation."""
    text = plan_to_json(schedule, world)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(path, text)


def read_plan(path: str) -> Schedule:
    """Load and validate a plan file; a compute-only plan is lowered. Raises PlanError for a
    missing, unreadable or malformed file, ValidationError for a plan that breaks the rules."""
    return read_plan_world(path)[0]


def read_plan_world(path: str) -> tuple[Schedule, World | None]:
    """Like read_plan, also returning the plan's validated ``world`` (None when it has none)."""
    data = read_json(path)
    try:
        schedule = Schedule.from_dict(data)
    except PlanError as e:
        where = _unparsable(data)
        if where is None:
            raise
        raise PlanError(f"rank {where[0]}, position {where[1]}: {e.message}") from None
    world = World.from_dict(data["world"]) if "world" in data else None
    return lower(schedule), world


def _unparsable(data: Any) -> tuple[int, int] | None:
    """(rank, position) of the first action text that does not parse, if any."""
    rows = data.get("actions") if isinstance(data, dict) else None
    for r, row in enumerate(rows if isinstance(rows, list) else []):
        for i, text in enumerate(row if isinstance(row, list) else []):
            try:
                Action.parse(str(text))
            except PlanError:
                return r, i
    return None
