"""Where each process of a run is: the layout of processes, and the states the watchdog reads.

A run has ``ranks x ep`` processes: pipeline rank p's expert-parallel processes are the global
ranks p * ep ... p * ep + ep - 1 (consecutive, so on a GPU node an EP group shares NVLink).
Each process publishes (plan, step, action index, state, time, piece) into a shared array that
the parent's watchdog reads; under torchrun :class:`LastPosition` keeps it for the error
message. Nothing here imports torch: a child publishes "starting" before it imports torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# states
COMPUTING, WAITING, SYNCING, DONE, STARTING, CONNECTING = 1, 2, 3, 4, 5, 6
FIELDS = 6  # plan, step, action index, state, last update (monotonic seconds), piece code
#: pieces a process may wait in (code = index + 1 in the shared array; 0: none)
PIECES = ("dispatch(F)", "combine(F)", "combine(B)", "dispatch(B)")


@dataclass(frozen=True)
class World:
    """The processes of a run: ``ranks`` pipeline ranks times ``ep`` expert-parallel ones."""

    ranks: int
    ep: int = 1

    @property
    def size(self) -> int:
        return self.ranks * self.ep

    def process(self, rank: int, ep_index: int) -> int:
        return rank * self.ep + ep_index

    def rank_of(self, process: int) -> int:
        return process // self.ep

    def ep_index(self, process: int) -> int:
        return process % self.ep

    def describe(self, process: int) -> str:
        """``rank 3``, or with expert parallelism ``rank 3 (pipeline rank 1, ep 1)``."""
        if self.ep == 1:
            return f"rank {process}"
        return f"rank {process} (pipeline rank {self.rank_of(process)}, ep {self.ep_index(process)})"


class Progress:
    """Where a process is; the base class forgets it (single-process use)."""

    def update(self, step: int, index: int, state: int, piece: str = "") -> None:
        pass


class LastPosition(Progress):
    """Under torchrun: remembers the last position, for the error message."""

    step, index, piece = 0, -1, ""

    def update(self, step: int, index: int, state: int, piece: str = "") -> None:
        self.step, self.index, self.piece = step, index, piece

    def snapshot(self) -> list[float]:
        code = PIECES.index(self.piece) + 1 if self.piece in PIECES else 0
        return [0, self.step, self.index, COMPUTING, 1.0, code]


class SharedProgress(Progress):
    """Writes a process's position into the launcher's shared array."""

    def __init__(self, status: Any, process: int, plan: int = 0) -> None:
        self.status, self.base, self.plan = status, process * FIELDS, plan

    def update(self, step: int, index: int, state: int, piece: str = "") -> None:
        code = PIECES.index(piece) + 1 if piece in PIECES else 0
        self.status[self.base:self.base + FIELDS] = [self.plan, step, index, state,
                                                     time.monotonic(), code]
