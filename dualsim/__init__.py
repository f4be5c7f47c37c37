"""dualsim: generate, simulate, compare and run pipeline-parallel schedules (DualPipe & co.).

Python API::

    from dualsim import generate, simulate
    s = generate("zb-v", ranks=4, microbatches=8)
    r = simulate(s, costs={"F": 1, "I": 1, "W": 1}, comm=0.0)
"""

from __future__ import annotations

from dualsim.errors import DualsimError
from dualsim.ir import Action, Op, Schedule, Stage

__all__ = ["Action", "DualsimError", "Op", "Schedule", "Stage", "generate", "simulate",
           "validate", "lower"]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import dualsim` cheap
    if name == "generate":
        from dualsim.generators import generate
        return generate
    if name == "simulate":
        from dualsim.sim.abstract import simulate
        return simulate
    if name == "validate":
        from dualsim.validate import validate
        return validate
    if name == "lower":
        from dualsim.lower import lower
        return lower
    raise AttributeError(name)
