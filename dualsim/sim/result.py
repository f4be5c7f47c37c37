"""SimResult: what a simulation reports (definitions in docs/schedules.md), in either mode."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class RankStats:
    """One rank's figures. Times are in the result's time unit."""

    rank: int
    busy: Any
    idle: Any
    first_start: Any
    last_end: Any
    peak_activations: int
    # hardware mode only
    peak_memory_gb: float | None = None
    memory_breakdown_gb: dict[str, float] | None = None


@dataclass
class SimResult:
    """makespan, span, ideal, bubble rates, per-rank stats and the Timeline.

    Scalars keep the arithmetic type of the costs (Fraction in, Fraction out), so tests can
    compare against the closed forms of docs/schedules.md exactly.
    """

    schedule: str
    ranks: int
    stages: int
    microbatches: int
    makespan: Any
    span: Any
    ideal: Any
    per_rank: list[RankStats]
    timeline: pd.DataFrame
    time_unit: str = "cost units"
    extra: dict[str, Any] = field(default_factory=dict)  # hardware mode: step_time_s, mfu, ...
    memory: pd.DataFrame | None = None  # hardware mode: rank, time, <component>_gb columns

    @property
    def bubble_rate(self) -> float:
        return 1 - self.ideal / self.makespan

    @property
    def span_bubble_rate(self) -> float:
        return 1 - self.ideal / self.span

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of docs/formats.md (numbers as floats/ints)."""
        d: dict[str, Any] = {
            "schedule": self.schedule,
            "ranks": self.ranks,
            "stages": self.stages,
            "microbatches": self.microbatches,
            "makespan": json_number(self.makespan),
            "span": json_number(self.span),
            "ideal": json_number(self.ideal),
            "bubble_rate": json_number(self.bubble_rate),
            "span_bubble_rate": json_number(self.span_bubble_rate),
            "time_unit": self.time_unit,
        }
        d.update({k: json_number(v) for k, v in self.extra.items()})
        d["per_rank"] = [
            {k: json_number(v) for k, v in asdict(r).items() if v is not None} for r in self.per_rank
        ]
        return d


def json_number(v: Any) -> Any:
    """A number as JSON output shows it everywhere (simulate, compare, plan): ints stay ints,
    integral floats become ints, other floats are rounded to 12 decimals."""
    if isinstance(v, bool) or v is None or isinstance(v, (str, list, dict)):
        return v
    if isinstance(v, int):
        return v
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else round(f, 12)
