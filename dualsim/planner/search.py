"""The planner's search: screen every configuration, simulate the promising ones best first.

1. **Screen** every configuration (in chunks, on the executor): the family's rules, the layout
   and the memory cap drop what cannot run, each with its reason; the rest get an upper bound of
   their throughput (planner/evaluate.py ``screen``).
2. **Simulate** best-bound-first, in rounds of ``round_size``. Before a round, every
   configuration whose bound is below the ``keep``-th best throughput simulated so far is
   **pruned**: its throughput cannot exceed its bound, so it could not enter the top ``keep``
   (the ranking's first ``keep`` rows are those of an exhaustive sweep). The published layout
   (``reference``) is never pruned. Figures come from the SimPy engine: the best row is exactly
   what ``dualsim simulate`` prints for its plan.

Rounds are formed from the ordered results alone, so the same sweep gives the same outcome on
any executor and any number of workers. Ranking: tokens/s per GPU descending, then peak memory
ascending, then the configuration's place in the sweep.
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from dualsim.planner import evaluate as ev
from dualsim.planner.evaluate import Outcome
from dualsim.planner.executor import Executor, LocalExecutor
from dualsim.planner.space import Candidate, Setting, same_configuration

ROUND = 16  # configurations simulated per round between two prunings
SCREEN_CHUNK = 8  # configurations screened per task


@dataclass
class Tally:
    """Where the sweep stands, for the progress bar."""

    total: int
    screened: int = 0
    simulated: int = 0
    pruned: int = 0
    dropped: int = 0

    @property
    def evaluated(self) -> int:
        """Configurations decided: dropped, pruned or simulated."""
        return self.dropped + self.pruned + self.simulated


@dataclass
class SweepResult:
    """A finished sweep: survivors ranked best first, the dropped ones with reasons, the pruned
    ones with their bound, and the published layout's outcome."""

    setting: Setting
    ranked: list[Outcome]
    dropped: list[Outcome]
    pruned: list[Outcome] = field(default_factory=list)
    reference: Outcome | None = None

    @property
    def evaluated(self) -> int:
        return len(self.ranked) + len(self.dropped) + len(self.pruned)

    @property
    def simulated(self) -> int:
        return len(self.ranked)

    @property
    def best(self) -> Outcome | None:
        return self.ranked[0] if self.ranked else None

    def rank_of(self, o: Outcome) -> int | None:
        """1-based place of ``o`` in the ranking (None when it was not kept)."""
        for i, k in enumerate(self.ranked):
            if k is o:
                return i + 1
        return None

    def best_vs_reference(self) -> float | None:
        """Best throughput over the published layout's (None without both)."""
        if self.best is None or self.reference is None or not self.reference.kept:
            return None
        return (self.best.figures["tokens_per_s_per_gpu"]
                / self.reference.figures["tokens_per_s_per_gpu"])

    def dropped_by_kind(self) -> dict[str, int]:
        return ev.count_kinds(self.dropped)

    def to_json(self) -> dict[str, Any]:
        ref = None
        if self.reference is not None:
            ref = dict(self.reference.row(), rank=self.rank_of(self.reference))
        return {"setting": asdict(self.setting), "evaluated": self.evaluated,
                "simulated": self.simulated,
                "results": [dict(o.row(), rank=i + 1) for i, o in enumerate(self.ranked)],
                "dropped": [o.row() for o in self.dropped],
                "pruned": [o.row() for o in self.pruned],
                "best": dict(self.best.row(), rank=1) if self.best else None,
                "reference": ref, "best_vs_reference": self.best_vs_reference()}


def rank_key(o: Outcome) -> tuple:
    return (-o.figures["tokens_per_s_per_gpu"], o.figures["peak_memory_gb"], o.order)


def rank_outcomes(outcomes: Sequence[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """Survivors best first (throughput, then memory, then sweep order); dropped in sweep order."""
    kept = sorted((o for o in outcomes if o.kept), key=rank_key)
    dropped = sorted((o for o in outcomes if o.status == "dropped"), key=lambda o: o.order)
    return kept, dropped


def _screen_chunk(cands: list[Candidate], setting: Setting) -> list[Outcome]:
    return [ev.screen(c, setting) for c in cands]


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def sweep(cands: Sequence[Candidate], setting: Setting, *, workers: int | None = None,
          executor: Executor | None = None, keep: int = 10, round_size: int = ROUND, reference: Candidate | None = None,
          prune: bool = True,
          on_progress: Callable[[Tally], None] | None = None) -> SweepResult:
    """Search ``cands`` (and the ``reference`` layout) as the module docstring says.

    ``executor``: where evaluations run (default: a LocalExecutor of ``workers`` processes,
    closed at the end). ``keep``: how many leading rows pruning must keep exact (at least 1).
    ``prune=False`` simulates every configuration that passes the screen (the exhaustive
    baseline the pruning is tested against).
    """
    own = executor is None
    ex: Executor = LocalExecutor(workers) if executor is None else executor
    try:
        return _search(list(cands), setting, ex, max(1, keep), max(1, round_size), reference,
                       prune, on_progress)
    finally:
        if own:
            ex.close()


def _search(cands: list[Candidate], setting: Setting, ex: Executor, keep: int, round_size: int, reference: Candidate | None, prune: bool,
            on_progress: Callable[[Tally], None] | None) -> SweepResult:
    ref_at = None
    if reference is not None:
        ref_at = next((i for i, c in enumerate(cands)
                       if same_configuration(c, reference, setting)), None)
        if ref_at is None:
            cands.append(reference)
            ref_at = len(cands) - 1
    tally = Tally(len(cands))

    def tell() -> None:
        if on_progress is not None:
            on_progress(tally)

    # 1. screen
    chunks = [cands[i:i + SCREEN_CHUNK] for i in range(0, len(cands), SCREEN_CHUNK)]
    outcomes: list[Outcome] = []
    for part in ex.map(_screen_chunk, [(chunk, setting) for chunk in chunks]):
        for o in part:
            o.order = len(outcomes)
            o.reference = o.order == ref_at
            outcomes.append(o)
            tally.screened += 1
            tally.dropped += o.status == "dropped"
        tell()
    # 2. best bound first: refine a bound, or simulate a refined one; prune below the cut
    heap = [(-(o.bound or 0.0), o.order, o) for o in outcomes if o.status == "open"]
    heapq.heapify(heap)
    refined: set[int] = set()
    kept: list[Outcome] = []
    threshold = float("-inf")
    while heap:
        refine: list[Outcome] = []
        run: list[Outcome] = []
        while heap and len(refine) + len(run) < round_size:
            o = heapq.heappop(heap)[2]
            if prune and not o.reference and (o.bound or 0.0) < threshold:
                o.status = "pruned"
                o.reason = (f"pruned: at most {o.bound:.0f} tokens/s/GPU, below the "
                            f"{_ordinal(keep)} best simulated ({threshold:.0f})")
                tally.pruned += 1
            elif o.order in refined or not prune:
                run.append(o)
            else:
                refine.append(o)
        jobs = [(ev.refine, o.candidate, setting) for o in refine] + [
            (ev.simulate, o.candidate, setting) for o in run]
        results = list(ex.map(_call, jobs))
        for o, bound in zip(refine, results):
            o.bound = min(o.bound or bound, bound)
            refined.add(o.order)
            heapq.heappush(heap, (-o.bound, o.order, o))
        for o, figures in zip(run, results[len(refine):]):
            o.figures.update(figures)
            o.status = "kept"
            kept.append(o)
            tally.simulated += 1
        if len(kept) >= keep:
            threshold = sorted(o.figures["tokens_per_s_per_gpu"] for o in kept)[-keep]
        tell()
    ranked, dropped = rank_outcomes(outcomes)
    pruned = [o for o in outcomes if o.status == "pruned"]
    ref = outcomes[ref_at] if ref_at is not None else None
    return SweepResult(setting, ranked, dropped, pruned, ref)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
