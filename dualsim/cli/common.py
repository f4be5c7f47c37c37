"""Shared CLI plumbing: one-line errors with exit codes, JSON to stdout, progress on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dualsim.errors import DualsimError
from dualsim.io import check_writable_file, dumps_json

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    """Console for tables on stdout; wide when piped so tables are not squeezed to 80 columns."""
    return Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 200)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    err_console.print(f"error: {message}", markup=False)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors(show_detail: bool = True) -> Iterator[None]:
    """Turn a DualsimError into 'error: <one line>' (+ optional detail) and exit code 1."""
    try:
        yield
    except DualsimError as e:
        err_console.print(f"error: {e.cli}", markup=False)
        if show_detail and e.detail:
            err_console.print(e.detail, markup=False)
        raise typer.Exit(e.exit_code) from None
    except OSError as e:  # unwritable output folder, disk full, ...
        where = f" {e.filename!r}" if e.filename else ""
        err_console.print(f"error: cannot access{where}: {e.strerror or e}; check the path "
                          "and its permissions", markup=False)
        raise typer.Exit(1) from None


def print_json(obj: Any) -> None:
    """The one JSON document of --json, alone on stdout."""
    sys.stdout.write(dumps_json(obj))
    sys.stdout.flush()


class _Progress(Progress):
    """A Progress that leaves nothing behind when its block fails (or ``discard()`` was
    called, for work that ended in an error raised after the block): the ``error:`` line is then
    the first line on stderr, with no half-drawn bar (or blank line) above it."""

    _discarded = False

    def discard(self) -> None:
        """Draw nothing of this bar when its block ends."""
        self._discarded = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and not self._discarded:
            return super().__exit__(exc_type, exc, tb)
        if not self.disable:
            self.live.transient = True  # a terminal clears the bar; a file never gets it
            self.live.stop()
        return None


def progress() -> _Progress:
    """A rich progress bar on stderr, never on stdout (so --json output stays clean)."""
    return _Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def check_output(flag: str, path: Path | None, kinds: tuple[str, ...]) -> None:
    """Refuse, before the work, an output path with a wrong suffix or that cannot be written.

    Missing folders above the file are fine: the write creates them (io.write_atomic), so the
    probe is made in the nearest folder that exists."""
    if path is None:
        return
    if path.suffix.lower() not in kinds:
        raise DualsimError(f"{flag} {str(path)!r}: the file name must end in "
                           f"{' or '.join(kinds)}")
    check_writable_file(path)
    _probe(flag, path, path.absolute().parents)


def check_output_folder(flag: str, folder: Path) -> None:
    """check_output for an output folder (``--out DIR``): refused before the work when it
    cannot be created or written in; missing folders are created, as for files. The caller
    refuses a ``folder`` that is a file first, in its own words."""
    _probe(flag, folder, (folder.absolute(), *folder.absolute().parents))


def _probe(flag: str, path: Path, folders: Iterable[Path]) -> None:
    folder = next(p for p in folders if p.exists())
    try:  # a probe file in the nearest existing folder: what the final write will need
        fd, probe = tempfile.mkstemp(prefix=".dualsim-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DualsimError(f"{flag} {str(path)!r}: cannot write in {str(folder)!r} "
                           f"({e.strerror or e}); choose another folder") from None
