"""Where the planner's evaluations run: this process, a local process pool, or a Ray cluster.

An executor maps a plain function over a list of argument tuples and yields the results in the
order of the list, whatever order they finish in; the search decides everything from those
ordered results, so every executor gives the same sweep (same ranking, same JSON).

- ``LocalExecutor(workers)``: in this process for one worker, else a ``spawn`` process pool
  kept for the whole sweep (each worker parses the profile and model once).
- ``RayExecutor(address)``: Ray tasks (``pip install 'dualsim[ray]'``). Without an address a
  local Ray is started for the run and stopped after it; with one (``ray://host:10001`` or
  ``host:6379``) the tasks run on that cluster, which needs the same dualsim installed, or gets
  this one shipped with the job (``ship_code=True``, the CLI's default for an address).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from dualsim.errors import DualsimError

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs ``fn(*args)`` for every args tuple; results in the order of ``jobs``."""

    workers: int

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple]) -> Iterator[Any]: ...

    def close(self) -> None: ...


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(*args)


class LocalExecutor:
    """This process (``workers`` <= 1) or a spawn process pool of ``workers`` processes."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple]) -> Iterator[Any]:
        if self.workers <= 1 or len(jobs) <= 1:
            return (fn(*args) for args in jobs)
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool.map(_call, [fn] * len(jobs), jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class RayExecutor:
    """Ray tasks on a cluster at ``address``, or on a local Ray started for this run."""

    def __init__(self, address: str | None = None, workers: int | None = None,
                 ship_code: bool = False) -> None:
        try:
            import ray
        except ImportError:
            raise DualsimError("--executor ray needs Ray: pip install 'dualsim[ray]'") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            if address is None:
                kw["num_cpus"] = max(1, workers if workers is not None else (os.cpu_count() or 1))
                kw["object_store_memory"] = 96 * 1024 * 1024  # the sweep ships kilobytes
            else:
                check_reachable(address)
                kw["address"] = address
                if ship_code:  # the cluster runs this dualsim, not whatever it has installed
                    import dualsim

                    kw["runtime_env"] = {"py_modules": [str(Path(dualsim.__file__).parent)]}
            try:
                ray.init(**kw)
            except (ConnectionError, ValueError, RuntimeError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise DualsimError(f"cannot start {where}: {e}; check --ray-address (e.g. "
                                   "ray://head:10001) or run without it for a local Ray") from None
            self._started = True
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._remote = ray.remote(_call)

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple]) -> Iterator[Any]:
        refs = [self._remote.remote(fn, args) for args in jobs]
        return (self._ray.get(ref) for ref in refs)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


#: seconds to wait for the head node's port before saying it cannot be reached
CONNECT_TIMEOUT = 5.0


def check_reachable(address: str) -> None:
    """DualsimError unless ``address`` (``host:port`` or ``ray://host:port``; ``auto`` left to
    Ray) names a host and port that accept a connection. Ray itself retries an unreachable
    address for minutes, logging warnings, before it fails."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DualsimError(f"bad --ray-address {address!r}: give host:port (the head's GCS, "
                           "e.g. head:6379) or ray://host:port (Ray Client, e.g. "
                           "ray://head:10001)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT).close()
    except OSError as e:
        raise DualsimError(f"cannot reach the Ray cluster at {address}: "
                           f"{e.strerror or e}; start it (`ray start --head`), check "
                           "--ray-address, or leave it out for a local Ray") from None


def make_executor(kind: str, workers: int | None = None, address: str | None = None) -> Executor:
    """The executor named ``kind`` ("local" or "ray")."""
    if kind == "local":
        if address is not None:
            raise DualsimError("--ray-address is for --executor ray; add --executor ray or drop "
                               "--ray-address")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address, workers, ship_code=address is not None)
    raise DualsimError(f"unknown --executor {kind!r}: use {' or '.join(EXECUTORS)}")
