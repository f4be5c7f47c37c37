"""The options of a run, shared by the launcher, the interpreter and the torch baseline.

:class:`Fault` is the tests' way to make a process fail at a chosen point; it is an option
like any other (nothing reads the environment), built by the tests and never by the CLI.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from dualsim.runtime.net import NetConfig
from dualsim.runtime.progress import World


@dataclass(frozen=True)
class Fault:
    """On ``process``, at action ``index`` of step 0 (or, with ``piece``, when that action posts
    that all-to-all, e.g. "dispatch(F)"): ``kill`` itself (SIGKILL), ``hang``, ``raise``, or
    only ``mark`` (go on). ``mark``: a file written when it fires, so a test knows where the
    run is."""

    process: int
    index: int
    kind: str
    piece: str | None = None
    mark: str | None = None

    def trigger(self) -> None:
        if self.mark:
            Path(self.mark).write_text(str(os.getpid()))
        if self.kind == "mark":
            return
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        while self.kind == "hang":
            time.sleep(3600)
        raise RuntimeError(f"injected fault {self.kind!r}")


@dataclass(frozen=True)
class RunOptions:
    model: NetConfig = field(default_factory=NetConfig)
    steps: int = 3
    backend: str = "gloo"  # "gloo" or "nccl" (session.choose_backend picks it for --device)
    device: str = "cpu"  # "cpu" or "cuda"
    ep: int = 1  # expert-parallel processes per pipeline rank
    timeout: float = 60.0
    engine: str = "dualsim"  # or "torch": torch.distributed.pipelining on the CSV export
    # one process group per direction of each pair of ranks also on gloo (always on NCCL);
    # not a CLI option: the tests use it to run the NCCL transfer path on CPU
    direction_groups: bool = False
    profile_trace: bool = False  # record the last step with torch.profiler
    fault: Fault | None = None

    def world(self, ranks: int) -> World:
        return World(ranks, self.ep)
