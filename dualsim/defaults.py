"""Defaults shared by the CLI, the simulators and the planner, defined once.

Hardware mode runs on ``DEFAULT_PROFILE`` / ``DEFAULT_MODEL`` when the user names only one of
them (or only an override such as ``--ib-gbps``); the model preset's published layout supplies
the parallel sizes. Abstract mode defaults to R = 8, M = 24 and unit costs.
"""

from __future__ import annotations

DEFAULT_PROFILE = "h800"
DEFAULT_MODEL = "deepseek-v3"
ABSTRACT_RANKS = 8
ABSTRACT_MICROBATCHES = 24
