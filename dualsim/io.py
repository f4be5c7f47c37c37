"""Atomic file and folder output, strict JSON reading: nothing is ever half-written."""

from __future__ import annotations

import ctypes
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

from dualsim.errors import DualsimError, PlanError, clip

T = TypeVar("T")


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    The temporary file is created with mode 0666, so the process umask applies as for any new
    file (no global umask is read or changed).
    """
    p = Path(path)
    check_writable_file(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = _create_temp(p)
    except OSError as e:  # the error names the file asked for, not its temporary name
        e.filename = str(p)
        raise
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


def replace_folder(out: Path, fill: Callable[[Path], T]) -> T:
    """Make ``out`` a folder holding exactly what ``fill(folder)`` writes, never a mix of runs.

    ``fill`` writes into a fresh temporary folder beside ``out``; only when it succeeds does that
    folder take ``out``'s place, by one atomic exchange of the two names where the system has it
    (Linux renameat2), else by two renames; the old folder is then removed. When ``fill``
    fails, ``out`` is left as it was. The caller decides whether an existing ``out`` may be
    replaced (see ``render.report.foreign_files``).
    """
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_name(out, "tmp")
    tmp.mkdir()
    try:
        result = fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out.exists():
        os.rename(tmp, out)
        return result
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
        return result
    old = _fresh_name(out, "old")
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return result


def _fresh_name(p: Path, kind: str) -> Path:
    return p.parent / f".{p.name}.{secrets.token_hex(6)}.{kind}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically (Linux renameat2 RENAME_EXCHANGE); False where
    the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


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


#: the longest integer a dualsim JSON file may hold (int64 range is 19 digits; plan numbers are
#: counts and indices far below that)
MAX_INT_DIGITS = 18


class JSONValueError(ValueError):
    """A JSON number dualsim refuses: non-finite, or an integer too long to be a count."""


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text: keys keep the (fixed) order in which callers build their dicts.

    Strict JSON: a NaN or an infinity anywhere is a bug upstream (a value that should have been
    refused when read), so it raises ValueError instead of writing a bare ``NaN`` that no JSON
    reader accepts.
    """
    return json.dumps(obj, indent=1, allow_nan=False) + "\n"


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JSONValueError(f"it holds an integer of {digits} digits (at most "
                             f"{MAX_INT_DIGITS} allowed)")
    return int(text)


def _parse_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise JSONValueError(f"the number {clip(text)} is out of range")
    return v


def _refuse_constant(name: str) -> Any:
    raise JSONValueError(f"it holds {name}, which is not JSON (numbers must be finite)")


def loads_json(text: str) -> Any:
    """Parse strict JSON: no NaN/Infinity, integers of at most MAX_INT_DIGITS digits.

    Raises ValueError (json.JSONDecodeError for syntax, JSONValueError for refused numbers) or
    RecursionError for nesting deeper than Python's recursion limit.
    """
    return json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                      parse_constant=_refuse_constant)


def read_json(path: str | os.PathLike[str], what: str = "plan",
              fix: str = "re-emit it with `dualsim emit`") -> Any:
    """Load a JSON file, turning every I/O or syntax problem into one PlanError line;
    ``what`` names the file's kind, ``fix`` how to get a good one."""
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
        return loads_json(text)
    except json.JSONDecodeError as e:
        raise PlanError(
            f"{what} file {str(p)!r} is not valid JSON (line {e.lineno}, column {e.colno}: "
            f"{e.msg}); it may be truncated: {fix}"
        ) from None
    except JSONValueError as e:
        raise PlanError(f"{what} file {str(p)!r} is not a dualsim {what}: {e}; {fix}") from None
    except RecursionError:
        raise PlanError(f"{what} file {str(p)!r} nests lists or objects too deeply to be a "
                        f"dualsim {what}; {fix}") from None
