"""User-facing errors: each carries one line saying what is wrong and how to fix it.

The CLI prints the error's ``cli`` form on stderr and exits 1; anything that is not a
DualsimError is a bug and keeps its traceback.
"""

from __future__ import annotations


class DualsimError(Exception):
    """Base of every error caused by user input (bad names, parameters, files)."""

    exit_code = 1

    def __init__(self, message: str, detail: str | None = None, cli: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: optional multi-line context (e.g. the per-rank grid) shown after the message
        self.detail = detail
        #: the message as the command line puts it: its options (``--ranks 4``) where the
        #: message names the Python API's parameters (``ranks=4``); the message itself if the
        #: two read the same
        self.cli = message if cli is None else cli


class ScheduleError(DualsimError):
    """Unknown schedule family, or ranks/micro-batches/chunks that break its rules."""


class PlanError(DualsimError):
    """A plan file that is missing, unreadable, malformed, or of another format/version."""


class ValidationError(DualsimError):
    """A schedule that breaks the dependency rules or would deadlock."""


class CostError(DualsimError):
    """Bad abstract costs (syntax, non-positive values, unknown names)."""


class ProfileError(DualsimError):
    """A hardware profile or workload file that is missing or invalid."""


class TraceError(DualsimError):
    """A profiler trace that is missing, malformed, truncated, or lacks what calibration needs."""


class RuntimeRunError(DualsimError):
    """A run of a plan that failed: a rank died, hung, or the plan does not fit."""


def clip(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for quoting user input in one line.

    A hostile file can hold a 5,000-digit action or a name of 100,000 newlines; an error line
    quotes only its start and says how long it was.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, (list, tuple, dict, set)):
        size = f"{len(value)} items"
    else:
        size = f"{len(value) if isinstance(value, str) else len(text)} characters"
    return f"{text[:limit]}... ({size})"
