"""Data files: the built-in profiles and models shipped in the package, and TOML reading.

Built-ins live in ``dualsim/data/<kind>/*.toml`` (``kind`` = ``profiles`` or ``models``), so they
are found after a non-editable install; a user's own file path is accepted wherever a name is.
Every I/O or syntax problem becomes one ProfileError line naming the file.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from dualsim.errors import ProfileError, clip


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file, turning I/O and syntax problems into one ProfileError line."""
    if not path.exists():
        raise ProfileError(f"{what} file {str(path)!r} does not exist; check the path")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{what} file {str(path)!r} is not valid TOML: {e}") from None
    except RecursionError:
        raise ProfileError(f"{what} file {str(path)!r} nests arrays or tables too deeply to be "
                           f"a {what}; check the file") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{what} file {str(path)!r} is not a text (UTF-8) TOML file; "
                           "check the path") from None
    except OSError as e:
        raise ProfileError(f"cannot read {what} file {str(path)!r}: {e}") from None
    except ValueError:  # tomllib's int() of more than 4300 digits
        raise ProfileError(f"{what} file {str(path)!r} holds an integer too long to read (over "
                           "4300 digits); check the file") from None


#: longest name a profile or model may carry (it lands in tables and chart titles)
MAX_NAME_LENGTH = 64


def check_name(name: Any, file: str) -> str:
    """A profile's or model's ``name``: a one-line printable string of 1..64 characters."""
    if not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH and name.isprintable()):
        raise ProfileError(f"{file}: field name must be a one-line printable string of "
                           f"1..{MAX_NAME_LENGTH} characters, got {clip(name)}")
    return name


def check_description(text: Any, file: str) -> str:
    """A profile's or model's ``description``: one printable line of at most 300 characters."""
    if not (isinstance(text, str) and len(text) <= 300 and (text == "" or text.isprintable())):
        raise ProfileError(f"{file}: field description must be a one-line printable string of "
                           f"at most 300 characters, got {clip(text)}")
    return text


def data_dir(kind: str) -> Path:
    """The package folder holding built-in ``profiles`` or ``models``."""
    return Path(str(resources.files("dualsim") / "data" / kind))


def builtin_files(kind: str) -> dict[str, Path]:
    folder = data_dir(kind)
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve(name_or_path: str, kind: str, what: str) -> Path:
    """A built-in name, or a path to a user's file; a clear error listing the names otherwise."""
    builtins = builtin_files(kind)
    if name_or_path in builtins:
        return builtins[name_or_path]
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or "/" in name_or_path:
        return p
    raise ProfileError(
        f"unknown {what} {name_or_path!r}: choose one of {', '.join(builtins)} or give a .toml "
        "file path (`dualsim profiles` lists them)")
