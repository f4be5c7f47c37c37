"""The schedule families: registry, legal-parameter checks and ``generate``.

Each family is a pure function ``(ranks, microbatches[, chunks]) -> Schedule`` in its own
module; this module names them, states their legal ranges and checks parameters with errors
that say which rule is broken and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dualsim.errors import ScheduleError
from dualsim.generators import dualpipe, gpipe, interleaved, one_f_one_b, zbv, zero_bubble
from dualsim.ir import Schedule

DEFAULT_CHUNKS = 2
#: Most (stage, micro-batch) pairs a schedule may have: a few actions and timeline rows each, so
#: beyond this a typo such as ``-r 100000 -m 100000`` would exhaust memory instead of failing.
MAX_PAIRS = 2_000_000


@dataclass(frozen=True)
class Family:
    """One schedule family as the CLI and the planner see it."""

    name: str
    summary: str
    rules: str
    takes_chunks: bool
    build: Callable[..., Schedule]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gpipe", "GPipe: all forwards, then all backwards",
               "R >= 1, M >= 1", False, gpipe.build),
        Family("1f1b", "1F1B (PipeDream-flush): warm-up, one forward one backward, cool-down",
               "R >= 1, M >= 1", False, one_f_one_b.build),
        Family("1f1b-overlap", "1F1B, each steady F with another micro-batch's B as one FB unit",
               "R >= 1, M >= 1", False, one_f_one_b.build_overlap),
        Family("interleaved", "interleaved 1F1B (Megatron virtual pipeline), v chunks per rank",
               "R >= 1, M >= R, chunks v >= 2 (default 2)", True,
               interleaved.build),
        Family("interleaved-overlap", "interleaved 1F1B with F&B overlap (Megatron-Core v0.14 "
               "EP overlap)",
               "R >= 1, M >= R, chunks v >= 2 (default 2)", True,
               interleaved.build_overlap),
        Family("zb-h1", "Zero Bubble H1: 1F1B with backward split into I and deferred W",
               "R >= 1, M >= 1", False, zero_bubble.build_h1),
        Family("zb-h2", "Zero Bubble H2: deeper warm-up, W fills the bubbles",
               "R >= 1, M >= 2R-1", False, zero_bubble.build_h2),
        Family("zb-v", "Zero Bubble V: two chunks per rank in a V, I/W split",
               "R >= 1, M >= 2R-1", False, zbv.build),
        Family("dualpipe", "DualPipe (DeepSeek-V3): two chains in both directions, overlapped F&B",
               "R even, M even, M >= 2R", False, dualpipe.build),
        Family("dualpipev", "DualPipeV: DualPipe cut in half, one V chain, overlapped F&B",
               "R >= 1, M >= 2R", False, dualpipe.build_v),
    )
}


class _Spelling:
    """How a message names a parameter: as the Python API does (``ranks=4``), or as the
    command line does (``--ranks 4``)."""

    def __init__(self, cli: bool) -> None:
        self.cli = cli

    def __call__(self, param: str, value: object = None) -> str:
        if value is None:
            return f"--{param}" if self.cli else param
        return f"--{param} {value}" if self.cli else f"{param}={value}"


_API, _CLI = _Spelling(False), _Spelling(True)


def _error(text: Callable[[_Spelling], str]) -> ScheduleError:
    """A ScheduleError in the API's words, with the command line's in ``.cli``."""
    return ScheduleError(text(_API), cli=text(_CLI))


def _positive_int(family: str, symbol: str, what: str, param: str, value: object) -> None:
    """Every family needs R >= 1 and M >= 1, as true integers (not bools, not floats)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _error(lambda p: f"{family} needs an integer number of {what}, got {value!r}: "
                               f"use {p(param, '1 or more')}")
    if value < 1:
        raise _error(lambda p: f"{family} needs {symbol} >= 1 {what}, got {value}: "
                               f"use {p(param, '1 or more')}")


def _even_choices(p: _Spelling, param: str, value: int, minimum: int) -> str:
    """'use PARAM a or b' with the even neighbours of an odd value that are >= minimum."""
    choices = [c for c in (value - 1, value + 1) if c >= minimum] or [minimum]
    return f"use {p(param, ' or '.join(str(c) for c in choices))}"


def _check_family_rules(name: str, ranks: int, mbs: int, chunks: int | None) -> None:
    if FAMILIES[name].takes_chunks:
        v = DEFAULT_CHUNKS if chunks is None else chunks
        if not isinstance(v, int) or isinstance(v, bool) or v < 2:
            raise _error(lambda p: f"{name} needs {p('chunks')} >= 2 (stages per rank), got "
                                   f"{v!r}: use {p('chunks', '2 or more')}")
        if mbs < ranks:
            raise _error(lambda p: f"{name} needs M >= R micro-batches (R={ranks} needs at least "
                                   f"{ranks}), got {mbs}: use "
                                   f"{p('microbatches', f'{ranks} or more')}")
    elif name in ("zb-h2", "zb-v"):
        need = 2 * ranks - 1
        if mbs < need:
            raise ScheduleError(f"{name} needs M >= 2R-1 micro-batches (R={ranks} needs at least "
                                f"{need}), got {mbs}")
    elif name == "dualpipe":
        if ranks % 2:
            raise _error(lambda p: f"dualpipe needs an even number of ranks, got {ranks}: "
                                   f"{_even_choices(p, 'ranks', ranks, 2)}")
        if mbs % 2:
            raise _error(lambda p: f"dualpipe needs an even number of micro-batches, got {mbs}: "
                                   f"{_even_choices(p, 'microbatches', mbs, 2 * ranks)}")
        if mbs < 2 * ranks:
            raise ScheduleError(f"dualpipe needs M >= 2R micro-batches (R={ranks} needs at least "
                                f"{2 * ranks}), got {mbs}")
    elif name == "dualpipev":
        if mbs < 2 * ranks:
            raise ScheduleError(f"dualpipev needs M >= 2R micro-batches (R={ranks} needs at "
                                f"least {2 * ranks}), got {mbs}")


def check(name: str, ranks: int, microbatches: int, chunks: int | None = None) -> None:
    """Raise ScheduleError naming the broken rule (and a fix) unless the parameters are legal.

    Its message names this function's parameters (``ranks=4``); its ``cli`` says the same
    with the command line's options (``--ranks 4``)."""
    family = FAMILIES.get(name)
    if family is None:
        raise ScheduleError(f"unknown schedule {name!r}: choose one of {', '.join(FAMILIES)}")
    _positive_int(name, "R", "ranks", "ranks", ranks)
    _positive_int(name, "M", "micro-batches", "microbatches", microbatches)
    if chunks is not None and not family.takes_chunks:
        takers = [n for n, f in FAMILIES.items() if f.takes_chunks]
        raise _error(lambda p: f"{name} does not take {p('chunks')}, got {chunks!r}: "
                               f"only {' and '.join(takers)} take {p('chunks')}")
    _check_family_rules(name, ranks, microbatches, chunks)
    if family.takes_chunks:
        per_rank = DEFAULT_CHUNKS if chunks is None else chunks
    else:
        per_rank = {"zb-v": 2, "dualpipev": 2}.get(name, 1)
    pairs = ranks * microbatches * per_rank
    if pairs > MAX_PAIRS:
        raise _error(lambda p: f"{name} at R={ranks}, M={microbatches} has {pairs:,} (stage, "
                               f"micro-batch) pairs, more than dualsim simulates "
                               f"({MAX_PAIRS:,}): use fewer {p('ranks')} or {p('microbatches')}")


def accepts(name: str, ranks: int, microbatches: int, chunks: int | None = None) -> bool:
    """Whether ``check`` passes."""
    try:
        check(name, ranks, microbatches, chunks)
    except ScheduleError:
        return False
    return True


def generate(name: str, ranks: int, microbatches: int, chunks: int | None = None) -> Schedule:
    """Check the parameters, then build the family's schedule."""
    check(name, ranks, microbatches, chunks)
    family = FAMILIES[name]
    if family.takes_chunks:
        return family.build(ranks, microbatches, DEFAULT_CHUNKS if chunks is None else chunks)
    return family.build(ranks, microbatches)


__all__ = ["DEFAULT_CHUNKS", "FAMILIES", "MAX_PAIRS", "Family", "check", "generate"]
