"""Fit the GEMM model's parameters to DeepGEMM's measured H800 FP8 table and report the errors.

The table (``dualsim/data/gemm/deepgemm-h800-fp8.csv``, from DeepGEMM's README) has 22 rows:
18 dense GEMMs (M = 64, 128, 4096 over six N x K shapes of DeepSeek-V3) and 4 grouped MoE
GEMMs. Every third row, starting with the second (rows 1, 4, 7, ...), is **held out**: the four
parameters of :class:`~dualsim.cluster.gemm.GemmParams` (FP8 main-loop fraction, HBM fraction,
per-SM load bandwidth, launch time) are fitted to the other 15 rows only, by a deterministic
pattern search minimising the squared log error of the time. The h800 profile's ``[gemm]``
values are this fit (rounded); ``dualsim profiles --gemm-fit`` prints it with the error of every
row, and with the leave-one-out error (each row predicted by a fit without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import pandas as pd

from dualsim.cluster.gemm import GemmParams, GemmShape, gemm_time

#: the GPU the table was measured on: H800 SXM5 (132 SMs, 1979 TFLOPS FP8, 3.35 TB/s HBM3)
H800_SMS, H800_FP8_PEAK, H800_HBM = 132, 1979e12, 3.35e12
#: rows held out of the fit: index % HELD_OUT_EVERY == HELD_OUT_OFFSET
HELD_OUT_EVERY, HELD_OUT_OFFSET = 3, 1
#: start of the search, and its stopping step (relative)
_START = (0.8, 0.8, 60e9, 2e-6)
_TOL = 1e-5


@dataclass(frozen=True)
class Measured:
    """One row of the table: a GEMM shape and its measured throughput."""

    index: int
    layout: str
    shape: GemmShape
    tflops: float

    @property
    def seconds(self) -> float:
        return self.shape.flops / (self.tflops * 1e12)

    @property
    def held_out(self) -> bool:
        return self.index % HELD_OUT_EVERY == HELD_OUT_OFFSET

    def label(self) -> str:
        s = self.shape
        head = f"{s.groups} x {s.m}" if s.grouped else f"{s.m}"
        return f"{head} x {s.n} x {s.k}"


@dataclass(frozen=True)
class RowFit:
    row: Measured
    model_tflops: float
    error: float           # model / measured - 1, with the fit the profile uses
    loo_error: float | None  # the same with a fit that left this row out


@dataclass(frozen=True)
class FitReport:
    params: GemmParams
    rows: tuple[RowFit, ...]

    def rms(self, held_out: bool) -> float:
        e = [r.error for r in self.rows if r.row.held_out == held_out]
        return math.sqrt(sum(x * x for x in e) / len(e))

    def max_abs(self, held_out: bool) -> float:
        return max(abs(r.error) for r in self.rows if r.row.held_out == held_out)


def table_path() -> Path:
    return Path(str(resources.files("dualsim") / "data" / "gemm" / "deepgemm-h800-fp8.csv"))


def load_table(path: Path | None = None) -> list[Measured]:
    df = pd.read_csv(path or table_path(), comment="#")
    return [Measured(i, str(r.layout),
                     GemmShape(int(r.groups), int(r.m_per_group), int(r.n), int(r.k),
                               grouped=r.layout != "normal"), float(r.tflops))
            for i, r in enumerate(df.itertuples(index=False))]


def params_of(x: Sequence[float], bf16_fraction: float = 0.0) -> GemmParams:
    """GemmParams from the search vector (fp8 fraction, hbm fraction, B/s per SM, launch s)."""
    return GemmParams({"fp8": x[0], "bf16": bf16_fraction or x[0]}, x[1], x[2], x[3])


def predict(row: Measured, params: GemmParams) -> float:
    """Modelled seconds of a table row on the H800."""
    return gemm_time(row.shape, "fp8", sms=H800_SMS, peak_flops=H800_FP8_PEAK,
                     hbm_bandwidth=H800_HBM, params=params)


def _loss(x: Sequence[float], rows: Sequence[Measured]) -> float:
    p = params_of(x)
    return sum(math.log(predict(r, p) / r.seconds) ** 2 for r in rows)


def fit(rows: Sequence[Measured]) -> GemmParams:
    """Deterministic pattern search in log space; fractions stay at most 1."""
    x = list(_START)
    step = [0.2] * len(x)
    best = _loss(x, rows)
    while max(step) > _TOL:
        improved = False
        for i in range(len(x)):
            for sign in (1.0, -1.0):
                y = list(x)
                y[i] = x[i] * math.exp(sign * step[i])
                if i < 2 and y[i] > 1.0:
                    continue
                v = _loss(y, rows)
                if v < best - 1e-15:
                    x, best, improved = y, v, True
        if not improved:
            step = [s / 2 for s in step]
    return params_of(x)


def fit_report(rows: Sequence[Measured] | None = None, *, loo: bool = True) -> FitReport:
    """The profile's fit (held-out rows excluded) and each row's error; ``loo`` adds the
    leave-one-out error of every row."""
    rows = list(rows or load_table())
    params = fit([r for r in rows if not r.held_out])
    out = []
    for r in rows:
        model = r.shape.flops / predict(r, params) / 1e12
        loo_err = None
        if loo:
            p = fit([o for o in rows if o.index != r.index])
            loo_err = r.seconds / predict(r, p) - 1
        out.append(RowFit(r, model, model / r.tflops - 1, loo_err))
    return FitReport(params, tuple(out))
