"""Abstract-mode costs: the durations F, I, W, B, FB and the CLI's ``--costs`` text form.

Costs are per rank-worth of layers (docs/schedules.md): the simulator multiplies them by a stage's
size. ``B`` defaults to ``I + W`` and ``FB`` to ``F + B``. Every cost must be a positive, finite
real number; ints and Fractions stay exact (no conversion to float), floats stay floats.

``parse_costs("F=1,I=1,W=1,B=2,FB=3")`` reads the CLI form: integers become ``int``, decimals
(``1.5``, ``2e-3``) and ratios (``1/3``) become exact ``Fraction``. When ``--costs`` is absent the
CLI uses ``DEFAULT_COSTS`` (F = I = W = 1); when it is given, F, I and W are all required.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping

from dualsim.errors import CostError

#: the cost names, in the order they are printed
COST_NAMES: tuple[str, ...] = ("F", "I", "W", "B", "FB")
REQUIRED: tuple[str, ...] = ("F", "I", "W")
DEFAULT_COSTS: dict[str, int] = {"F": 1, "I": 1, "W": 1}

#: how to give costs, as (the Python API says it, the command line says it)
_EXAMPLE = ("e.g. costs={'F': 1, 'I': 1, 'W': 1} or {'F': 1, 'I': 1, 'W': 1, 'B': 2, 'FB': 3}",
            "e.g. --costs F=1,I=1,W=1 or F=1,I=1,W=1,B=2,FB=3")
#: how to give the cross-rank latency, likewise
COMM_EXAMPLE = ("e.g. comm=0.5", "e.g. --comm 0.5")


def _error(text: str, hint: tuple[str, str]) -> CostError:
    """``text``, then the hint: in the API's words, with the command line's in ``.cli``."""
    return CostError(f"{text}; {hint[0]}", cli=f"{text}; {hint[1]}")
#: largest cost or latency accepted: times sum to far more, and must still fit a float in JSON
MAX_COST = 10**15
#: smallest positive cost or latency: a float below it underflows to 0 once scaled by a stage's
#: size (then a step takes no time), an exact one gives time bases too large for a float
MIN_COST = Fraction(1, 10**9)
#: largest denominator of an exact cost (1/3 and 12 decimal places are fine): the common time
#: base of five costs is the lcm of their denominators
MAX_DENOMINATOR = 10**12


def check_number(name: str, value: Any, *, allow_zero: bool = False,
                 hint: tuple[str, str] = _EXAMPLE) -> int | Fraction | float:
    """``value`` as an int, Fraction or float; CostError if it is not a positive finite real
    (or zero, with ``allow_zero``). ``hint`` (API form, command-line form) ends the message."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _error(f"{name} must be a number, got {value!r}", hint)
    number: int | Fraction | float
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Rational):
        number = Fraction(int(value.numerator), int(value.denominator))
    else:
        number = float(value)
        if not math.isfinite(number):
            raise _error(f"{name} must be finite, got {value!r}", hint)
    if number < 0 or (number == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise _error(f"{name} must be {bound}, got {value!r}", hint)
    if number > MAX_COST:
        raise _error(f"{name} must be at most {MAX_COST:.0e}, got {_show(number)}; scale all "
                     "costs down together", hint)
    if 0 < number < MIN_COST:
        least = f"at least {float(MIN_COST):g}" + (" (or 0)" if allow_zero else "")
        raise _error(f"{name} must be {least}, got {_show(number)}; scale all costs up together",
                     hint)
    if isinstance(number, Fraction) and number.denominator > MAX_DENOMINATOR:
        raise _error(f"{name} must have at most 12 decimal places (or a denominator of at most "
                     f"10^12), got {_show(number)}", hint)
    return number


def _show(number: int | Fraction | float) -> str:
    """A short form of a possibly huge exact number for an error line."""
    try:
        return f"{float(number):g}"
    except OverflowError:
        return "a number too large for a float"


@dataclass(frozen=True)
class Costs:
    """Validated abstract costs per rank-worth of layers (all five given; ``Costs.of`` fills
    B and FB from a mapping). Every value is checked and kept as an int, Fraction or float."""

    F: int | Fraction | float
    I: int | Fraction | float  # noqa: E741 - the paper's name
    W: int | Fraction | float
    B: int | Fraction | float
    FB: int | Fraction | float

    def __post_init__(self) -> None:
        for name in COST_NAMES:
            object.__setattr__(self, name, check_number(f"cost {name}", getattr(self, name)))

    @staticmethod
    def of(costs: "Costs | Mapping[str, Any] | None" = None) -> "Costs":
        """Validate ``costs``: None means F = I = W = 1; a mapping needs F, I and W."""
        if isinstance(costs, Costs):
            return costs
        if costs is None:
            costs = DEFAULT_COSTS
        if not isinstance(costs, Mapping):
            raise _error(f"costs must be a mapping of names to numbers, got {costs!r}",
                         _EXAMPLE)
        unknown = [k for k in costs if k not in COST_NAMES]
        if unknown:
            raise _error(f"unknown cost name {unknown[0]!r}: use F, I, W and optionally B, FB",
                         _EXAMPLE)
        missing = [k for k in REQUIRED if k not in costs]
        if missing:
            raise _error(f"missing cost {', '.join(missing)}: F, I and W are required",
                         _EXAMPLE)
        f, i, w = (check_number(f"cost {k}", costs[k]) for k in REQUIRED)
        b = costs.get("B", i + w)
        return Costs(f, i, w, b, costs.get("FB", f + check_number("cost B", b)))

    def as_dict(self) -> dict[str, int | Fraction | float]:
        return {k: getattr(self, k) for k in COST_NAMES}

    @property
    def exact(self) -> bool:
        """True when no cost is a float (the simulation can then be exact)."""
        return not any(isinstance(getattr(self, k), float) for k in COST_NAMES)


def parse_number(name: str, text: str) -> int | Fraction:
    """One cost value of the CLI form: ``2``, ``1.5``, ``2e-3`` or ``1/3``, exactly."""
    t = text.strip()
    try:
        value: int | Fraction = int(t) if t.lstrip("+-").isdigit() else Fraction(t)
    except (ValueError, ZeroDivisionError):
        raise CostError(f"bad value {text!r} for cost {name}: expected a number such as 1, 1.5 "
                        f"or 1/3; {_EXAMPLE[1]}") from None
    return value


def parse_costs(text: str) -> dict[str, int | Fraction]:
    """Parse ``F=1,I=1,W=1[,B=..][,FB=..]``; CostError with one line for any mistake."""
    out: dict[str, int | Fraction] = {}
    items = [p.strip() for p in text.split(",")]
    if not any(items):
        raise CostError(f"empty --costs: {_EXAMPLE[1]}")
    for item in items:
        if not item:
            raise CostError(f"bad --costs {text!r}: empty entry between commas; {_EXAMPLE[1]}")
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not name or not value:
            raise CostError(f"bad --costs entry {item!r}: expected NAME=VALUE; {_EXAMPLE[1]}")
        if name not in COST_NAMES:
            raise CostError(f"unknown cost name {name!r} in --costs: use F, I, W and optionally "
                            f"B, FB; {_EXAMPLE[1]}")
        if name in out:
            raise CostError(f"cost {name} given twice in --costs {text!r}; {_EXAMPLE[1]}")
        out[name] = parse_number(name, value)
    Costs.of(out)  # required names, positive values
    return out


@dataclass(frozen=True)
class TimeBase:
    """Per-op durations of one schedule on a common time base, shared by both abstract engines.

    With exact costs (ints/Fractions) and an exact latency, durations are integers scaled by the
    common denominator ``scale`` of every duration (cost x stage size) and the latency, so the
    engines add integers; ``out`` turns an engine time back into the caller's type (int, or
    Fraction when anything was fractional). Float inputs give float durations and ``out`` = float.
    """

    durations: dict[Any, Any]  # Op -> duration
    latency: Any
    scale: int
    fractional: bool

    @staticmethod
    def of(costs: Costs, stage_size: Fraction, comm: Any) -> "TimeBase":
        from dualsim.ir import Op

        if comm == 0:
            comm = 0  # no latency keeps exact costs exact, whatever zero's type
        per_rank_worth = {Op.F: costs.F, Op.I: costs.I, Op.W: costs.W, Op.B: costs.B,
                          Op.FB: costs.FB}
        if costs.exact and not isinstance(comm, float):
            scale = math.lcm(*(Fraction(x * stage_size).denominator
                               for x in per_rank_worth.values()), Fraction(comm).denominator)
            fractional = scale != 1 or isinstance(comm, Fraction) or any(
                isinstance(x, Fraction) for x in per_rank_worth.values())
            return TimeBase({op: int(x * stage_size * scale) for op, x in per_rank_worth.items()},
                            int(comm * scale), scale, fractional)
        return TimeBase({op: float(x) * float(stage_size) for op, x in per_rank_worth.items()},
                        float(comm), 1, False)

    @property
    def exact(self) -> bool:
        return not isinstance(self.latency, float)

    def out(self, t: Any) -> Any:
        if not self.exact:
            return float(t)
        return Fraction(t, self.scale) if self.fractional else t
