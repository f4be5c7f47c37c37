"""`dualsim calibrate TRACE --profile P --model M`: fit a hardware profile to a GPU trace.

Reads the trace (trace.py), measures each piece per layer (pieces.py), builds the rows
(rows.py), fits the profile's parameters on the fitted rows and predicts the held-out ones
(fit.py), and renders the fitted profile as a complete TOML file (profile_toml.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dualsim.calibrate.fit import FitResult, fit
from dualsim.calibrate.pieces import PieceTimes, piece_times
from dualsim.calibrate.profile_toml import profile_text
from dualsim.calibrate.rows import DEFAULT_FITTED, FITTED_KEYS, Setting, build_rows
from dualsim.calibrate.trace import Trace, read_trace, require
from dualsim.cluster.profile import parse_profile
from dualsim.datafiles import read_toml, resolve
from dualsim.workload.model import Model, default_layout, load_model


@dataclass(frozen=True)
class Calibration:
    """The outcome of one calibration: what was measured, the fit, and the profile's text."""

    trace: str
    device: str | None
    profile: str
    model: Model
    ep: int
    tokens: int
    times: PieceTimes
    result: FitResult
    text: str

    def as_json(self, out: str | None) -> dict[str, Any]:
        r = self.result
        return {
            "trace": self.trace, "device": self.device, "profile": self.profile,
            "model": self.model.name, "ep": self.ep, "microbatch_tokens": self.tokens,
            "output": out,
            "parameters": [{"key": p.key, "value": p.value, "unit": p.unit,
                            "previous": p.previous, "rows": list(p.rows)} for p in r.params],
            "fitted": [row.as_dict() for row in r.fitted],
            "predicted": [row.as_dict() for row in r.predicted],
            "unmodelled": [{"name": row.name, "measured_ms": round(row.measured_ms, 4)}
                           for row in r.unmodelled],
            "pieces": {k: {"layers": self.times.layers(k),
                           "kernel_ms": round(self.times.mean(k) * 1e3, 4),
                           "span_ms": round(sum(s.span for s in self.times.of(k))
                                            / self.times.layers(k) * 1e3, 4)}
                       for k in self.times.keys},
            "gpu_span_ms": round(self.times.gpu_span * 1e3, 4),
        }


def calibrate_profile(trace: str | Path | Trace, profile: str, model: str | Model, *,
                      ep: int | None = None, tokens: int | None = None,
                      hold_out: Sequence[str] | None = None,
                      name: str | None = None) -> Calibration:
    """Fit ``profile``'s parameters to the trace of ``model``; ``hold_out`` rows are predicted.
    ``name`` names the written profile (default: the base profile's name)."""
    path = resolve(profile, "profiles", "hardware profile")
    raw = read_toml(path, "hardware profile")
    base = parse_profile(raw, str(path))  # a broken base profile fails here, naming the field
    mdl = load_model(model) if isinstance(model, str) else model
    lay = default_layout(mdl)
    ep = lay["ep"] if ep is None else ep
    tokens = lay["microbatch_tokens"] if tokens is None else tokens
    if not isinstance(trace, Trace):
        trace = read_trace(trace)
    require(trace)
    times = piece_times(trace)
    rows = build_rows(times, Setting(mdl, ep, tokens, min(lay["sequence"], tokens)))
    if hold_out is None:
        held = tuple(r.name for r in rows if r.name not in DEFAULT_FITTED and r.model)
    else:
        held = tuple(hold_out)
    result = fit(rows, raw, str(path), FITTED_KEYS, held)
    if name is not None:
        result.raw["name"] = name
    file = Path(trace.path).name
    for p in result.params:
        section, key = p.key.split(".", 1)
        result.raw[section][key]["source"] = (
            f"dualsim calibrate: fit to {file} ({trace.device or 'GPU'}, {mdl.name} EP{ep}, "
            f"{tokens} tokens per micro-batch), rows {', '.join(p.rows)}")
    header = [f"{base.name} profile calibrated by `dualsim calibrate {file} --profile "
              f"{profile} --model {mdl.name}`",
              "fitted: " + ", ".join(p.key for p in result.params),
              "every other number is the base profile's, with its source"]
    return Calibration(trace.path, trace.device, base.name, mdl, ep, tokens, times,
                       result, profile_text(result.raw, header))
