"""Atomic file output and plan-file reading: nothing is ever half-written."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from dualsim.errors import DualsimError, PlanError


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    The temporary file is created with mode 0666, so the process umask applies as for any new
    file (no global umask is read or changed).
    """
    p = Path(path)
    check_writable_file(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = _create_temp(p)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _create_temp(p: Path) -> tuple[int, str]:
    """A new, exclusive temporary file beside ``p``: (descriptor, path)."""
    for _ in range(100):
        tmp = str(p.parent / f".{p.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {str(p)!r}")


def check_writable_file(path: Path) -> None:
    """DualsimError unless ``path`` can be a file: not a folder, no file among its parents."""
    if path.is_dir():
        raise DualsimError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DualsimError(f"cannot write {str(path)!r}: {str(parent)!r} is a file, "
                                   "not a folder")
            break


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text: keys keep the (fixed) order in which callers build their dicts."""
    return json.dumps(obj, indent=1) + "\n"


def read_json(path: str | os.PathLike[str], what: str = "plan") -> Any:
    """Load a JSON file, turning every I/O or syntax problem into one PlanError line."""
    p = Path(path)
    if not p.exists():
        raise PlanError(f"{what} file {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise PlanError(f"{what} file {str(p)!r} is a folder, not a file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise PlanError(f"cannot read {what} file {str(p)!r}: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PlanError(
            f"{what} file {str(p)!r} is not valid JSON (line {e.lineno}, column {e.colno}: "
            f"{e.msg}); it may be truncated: re-emit it with `dualsim emit`"
        ) from None
