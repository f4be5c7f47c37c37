"""Fit a profile's parameters to the fitted rows; predict the held-out rows.

The parameters are profile fields (``section.key`` of the TOML, in the file's units), so the fit
works on the raw TOML table and any field the cost model reads can be fitted without code here
knowing what it means. The objective is the relative error of each fitted row,
``model / measured - 1``, minimised in the least-squares sense within each field's legal range
(scipy.optimize.least_squares, trust region reflective, deterministic). A parameter that no
fitted row depends on cannot be fitted: that is an error naming the rows that would determine it.

Fitted values are rounded to ``DIGITS`` significant digits (what the written profile holds), and
both tables are computed from the rounded profile, so they describe the file that was written.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

from dualsim.calibrate.rows import Row
from dualsim.errors import TraceError
from dualsim.cluster.profile import PROFILE_SCHEMA, Profile, parse_profile

DIGITS = 3
#: a row depends on a parameter when its elasticity (relative change of the row per relative
#: change of the parameter) exceeds this: the router's BF16 GEMM (0.5% of mlp_f) does not make
#: mlp_f a row that could fit the BF16 GEMM efficiency
MATERIAL = 0.05


@dataclass(frozen=True)
class RowResult:
    """One line of the fitted or predicted table (milliseconds; error = model/measured - 1)."""

    name: str
    measured_ms: float
    model_ms: float
    error: float
    what: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured_ms": round(self.measured_ms, 4),
                "model_ms": round(self.model_ms, 4), "error": round(self.error, 4)}


@dataclass(frozen=True)
class ParamResult:
    """A fitted profile field: its new and previous value and the rows that set it."""

    key: str
    unit: str
    value: float
    previous: float
    rows: tuple[str, ...]


@dataclass(frozen=True)
class FitResult:
    raw: dict[str, Any]  # the fitted profile's TOML table (values rounded)
    profile: Profile
    params: tuple[ParamResult, ...]
    fitted: tuple[RowResult, ...]
    predicted: tuple[RowResult, ...]
    unmodelled: tuple[RowResult, ...]  # measured kernels the cost model has no term for


def _bounds(key: str) -> tuple[float, float]:
    section, name = key.split(".", 1)
    rule = PROFILE_SCHEMA[section][name][1]
    return {"frac": (1e-6, 1.0), "share": (0.0, 1.0 - 1e-6), "nonneg": (0.0, math.inf),
            "pos": (1e-9, math.inf)}[rule]


def _round(x: float) -> float:
    if x == 0:
        return 0.0
    return round(x, DIGITS - 1 - int(math.floor(math.log10(abs(x)))))


def with_values(raw: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    """A copy of a profile table with ``section.key`` values replaced."""
    out = copy.deepcopy(raw)
    for key, v in values.items():
        section, name = key.split(".", 1)
        out[section][name]["value"] = float(v)
    return out


def _value(raw: dict[str, Any], key: str) -> float:
    section, name = key.split(".", 1)
    return float(raw[section][name]["value"])


def dependencies(rows: Sequence[Row], raw: dict[str, Any], file: str,
                 keys: Sequence[str]) -> dict[str, list[str]]:
    """For each parameter, the rows that depend on it materially (at the start values)."""
    base = parse_profile(raw, file)
    at = {r.name: r.model(base) for r in rows}
    deps: dict[str, list[str]] = {}
    for key in keys:
        v = _value(raw, key)
        lo, hi = _bounds(key)
        if hi <= 1.0:  # fractions: an absolute step, so a small one (interference) moves too
            step = v - 0.1 if v - 0.1 >= lo else min(hi, v + 0.1)
        else:
            step = v * 0.9 if v * 0.9 >= lo and v > 0 else min(hi, v * 1.1 + 1e-3)
        rel = abs(step - v) / max(abs(v), abs(step))
        prof = parse_profile(with_values(raw, {key: step}), file)
        deps[key] = [r.name for r in rows
                     if abs(r.model(prof) / at[r.name] - 1) > MATERIAL * rel]
    return deps


def _check_determined(jac: Any, x: Sequence[float], keys: Sequence[str],
                      fitted: Sequence[Row]) -> None:
    """TraceError when the fitted rows cannot set the parameters independently (rank)."""
    import numpy as np

    scale = np.asarray(x, dtype=float)
    scale = np.where(np.abs(scale) > 1e-9, scale, 1.0)  # a value at 0 still has a direction
    j = np.asarray(jac, dtype=float) * scale  # per relative change
    _, sv, vt = np.linalg.svd(j)
    if len(sv) == len(keys) and sv[-1] > 1e-6 * max(sv[0], 1e-300):
        return
    tied = [k for k, v in zip(keys, vt[-1]) if abs(v) > 1e-6]
    raise TraceError(f"the fitted rows ({', '.join(r.name for r in fitted)}) cannot set "
                     f"{' and '.join(tied)} apart; keep in the fit a row that moves one of them "
                     "without the other (--hold-out)")


def fit(rows: Sequence[Row], raw: dict[str, Any], file: str, keys: Sequence[str],
        held_out: Sequence[str]) -> FitResult:
    """Fit ``keys`` to the rows not in ``held_out``; the held-out rows are predicted."""
    from scipy.optimize import least_squares

    unmodelled = tuple(RowResult(r.name, r.measured * 1e3, 0.0, -1.0, r.what) for r in rows
                       if r.model is None)
    rows = [r for r in rows if r.model is not None]
    names = [r.name for r in rows]
    unknown = [h for h in held_out if h not in names]
    if unknown:
        raise TraceError(f"--hold-out names unknown row {unknown[0]!r}; rows of this trace: "
                         f"{', '.join(names)}")
    deps = dependencies(rows, raw, file, keys)
    keys = [k for k in keys if deps[k]]  # parameters no row of this trace depends on stay put
    # a row that depends on no fitted parameter sets nothing: it is a prediction either way
    setting = {n for k in keys for n in deps[k]}
    fitted = [r for r in rows if r.name not in held_out and r.name in setting]
    predicted = [r for r in rows if r.name in held_out or r.name not in setting]
    for key in keys:
        if not any(n not in held_out for n in deps[key]):
            raise TraceError(f"no fitted row determines {key}: its rows {', '.join(deps[key])} "
                             "are all held out; keep one of them in the fit (--hold-out)")
    if len(fitted) < len(keys):
        raise TraceError(f"{len(keys)} parameters ({', '.join(keys)}) need at least as many "
                         f"fitted rows, got {len(fitted)}; hold out fewer rows")
    if len(predicted) < len(fitted):
        raise TraceError(f"{len(fitted)} fitted rows but only {len(predicted)} predicted: hold "
                         "out more rows, so the table of predictions is at least as large as "
                         f"the fit (--hold-out; rows: {', '.join(names)})")

    lo = [_bounds(k)[0] for k in keys]
    hi = [_bounds(k)[1] for k in keys]
    x0 = [min(max(_value(raw, k), a), b) for k, a, b in zip(keys, lo, hi)]

    def residuals(x: Sequence[float]) -> list[float]:
        prof = parse_profile(with_values(raw, dict(zip(keys, x))), file)
        return [r.model(prof) / r.measured - 1.0 for r in fitted]

    if keys:
        sol = least_squares(residuals, x0, bounds=(lo, hi), method="trf", x_scale="jac",
                            xtol=1e-12, ftol=1e-12, gtol=1e-12)
        _check_determined(sol.jac, sol.x, keys, fitted)
        values = {k: max(a, min(b, _round(float(v))))
                  for k, v, a, b in zip(keys, sol.x, lo, hi)}
    else:
        values = {}
    new_raw = with_values(raw, values)
    prof = parse_profile(new_raw, file)

    def table(rs: Sequence[Row]) -> tuple[RowResult, ...]:
        out = []
        for r in rs:
            m = r.model(prof)
            out.append(RowResult(r.name, r.measured * 1e3, m * 1e3, m / r.measured - 1.0, r.what))
        return tuple(out)

    params = tuple(ParamResult(k, new_raw[k.split(".")[0]][k.split(".")[1]]["unit"], values[k],
                               _value(raw, k), tuple(n for n in deps[k] if n not in held_out))
                   for k in keys)
    return FitResult(new_raw, prof, params, table(fitted), table(predicted), unmodelled)
