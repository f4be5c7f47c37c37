"""Write a complete hardware profile TOML: every section of the schema, each number with its
value, unit and source, in a fixed order (deterministic bytes), validated before it is written.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from dualsim.cluster.profile import PROFILE_SCHEMA, parse_profile


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def _entry(e: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_scalar(e[k])}" for k in ("value", "unit", "source")) + " }"


def profile_text(raw: dict[str, Any], header: Iterable[str] = ()) -> str:
    """The TOML text of a profile table (``raw`` as read from a profile file)."""
    lines = [f"# {h}" for h in header]
    lines.append(f"name = {_scalar(raw.get('name', 'calibrated'))}")
    lines.append(f"description = {_scalar(raw.get('description', ''))}")
    for section, keys in PROFILE_SCHEMA.items():
        lines.append("")
        lines.append(f"[{section}]")
        for key in keys:
            entry = raw.get(section, {}).get(key)
            if entry is not None:
                lines.append(f"{key} = {_entry(entry)}")
    text = "\n".join(lines) + "\n"
    import tomllib

    parse_profile(tomllib.loads(text), "(calibrated profile)")  # never write an unloadable file
    return text
