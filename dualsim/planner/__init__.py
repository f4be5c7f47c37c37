"""The planner: search schedules x layouts x comm SMs (x what-ifs) for the fastest configuration
that fits in memory, and say how it compares with the model's published layout.

- space.py: Candidate (one configuration), Setting (what a sweep shares), the default axes.
- evaluate.py: screen (global batch, rules, layout, exact memory, a throughput bound), refine
  the bound, and simulate one configuration.
- search.py: the sweep (screen all, simulate best-bound-first, prune by the bound).
- executor.py: where evaluations run (this process, a process pool, Ray).
- output.py: plan.csv, the Pareto chart, the best configuration's plan and world.
"""

from __future__ import annotations

from dualsim.planner.evaluate import Outcome, refine, screen, simulate, with_microbatches
from dualsim.planner.executor import LocalExecutor, RayExecutor, make_executor
from dualsim.planner.output import (best_schedule, best_world, pareto_front, render_pareto,
                                    to_csv, write_outputs)
from dualsim.planner.search import SweepResult, Tally, rank_outcomes, sweep
from dualsim.planner.space import (DEFAULT_COMM_SMS, DEFAULT_EP, DEFAULT_MICROBATCH_SEQUENCES,
                                   DEFAULT_RANKS, DEFAULT_SCHEDULES, Candidate, Setting,
                                   candidates, default_axes, reference)

__all__ = ["DEFAULT_COMM_SMS", "DEFAULT_EP", "DEFAULT_MICROBATCH_SEQUENCES", "DEFAULT_RANKS",
           "DEFAULT_SCHEDULES", "Candidate", "LocalExecutor", "Outcome", "RayExecutor", "Setting",
           "SweepResult", "Tally", "best_schedule", "best_world", "candidates", "default_axes",
           "make_executor",
           "pareto_front", "rank_outcomes", "reference", "refine", "render_pareto", "screen",
           "simulate", "sweep", "to_csv", "with_microbatches", "write_outputs"]
