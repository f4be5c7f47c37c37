"""Fluid links and fluid compute (sim/links.py): exact rates, and no hang where the clock is coarse."""

from __future__ import annotations

import simpy

from dualsim.sim.links import Gpu, Link


def _transfer(link: Link, nbytes: float, **caps: float) -> simpy.Event:
    """An event that succeeds when ``nbytes`` have crossed ``link``."""
    done = link.env.event()
    link.transfer(nbytes, done.succeed, **caps)
    return done


def _steps_until(env: simpy.Environment, done: simpy.Event, limit: int = 1000) -> int:
    """Step the simulation until ``done`` fires; the step count (bounded: no hang in CI)."""
    for n in range(limit):
        if done.processed:
            return n
        env.step()
    raise AssertionError(f"transfer not done after {limit} events (timer re-armed forever?)")


def test_transfer_late_in_a_long_run_finishes() -> None:
    # At t = 1e8 s one clock tick is ~1.5e-8 s, i.e. ~750 bytes at 50 GB/s: a fixed one-byte
    # "done" threshold never triggers there and the link re-armed a zero-length timer forever
    # (`--microbatch-tokens 100000000` hung).
    env = simpy.Environment(initial_time=1.0e8)
    link = Link(env, Gpu(env), bandwidth=50e9)
    done = _transfer(link, 123_456_789.0)
    _steps_until(env, done)
    assert abs(env.now - (1.0e8 + 123_456_789.0 / 50e9)) < 1e-6


def test_tiny_transfer_below_clock_resolution_finishes() -> None:
    # 100 bytes at 50 GB/s take 2e-9 s, less than half a tick at t = 1e8 s: now + dt == now.
    env = simpy.Environment(initial_time=1.0e8)
    link = Link(env, Gpu(env), bandwidth=50e9)
    done = _transfer(link, 100.0, cap=40e9, busy_cap=24e9)
    _steps_until(env, done)
    assert env.now == 1.0e8


def test_two_flows_share_the_link_and_finish_in_order() -> None:
    env = simpy.Environment()
    link = Link(env, Gpu(env), bandwidth=100.0)
    ends: dict[str, float] = {}
    small, big = _transfer(link, 100.0), _transfer(link, 300.0)
    small.callbacks.append(lambda _e: ends.setdefault("small", env.now))
    big.callbacks.append(lambda _e: ends.setdefault("big", env.now))
    _steps_until(env, big)
    # 50/s each until the small one is done at t=2; then the big one alone: 200 bytes at 100/s
    assert ends["small"] == 2.0
    assert abs(ends["big"] - 4.0) < 1e-12


def test_capped_flows_share_max_min_fairly_and_slow_while_computing() -> None:
    env = simpy.Environment()
    gpu = Gpu(env)
    link = Link(env, gpu, bandwidth=100.0)
    ends: dict[str, float] = {}
    # a flow capped at 20 (its SMs) and an uncapped one: 20 + 80, not 50 + 50
    for name, nbytes, cap in (("capped", 200.0, 20.0), ("free", 800.0, float("inf"))):
        link.transfer(nbytes, lambda n=name: ends.__setitem__(n, env.now), cap)
    env.run()
    assert ends == {"capped": 10.0, "free": 10.0}
    # while the GPU computes, a flow with a lower busy cap moves at that cap
    env2 = simpy.Environment()
    gpu2 = Gpu(env2)
    link2 = Link(env2, gpu2, 100.0)
    gpu2.set_active(True)
    done = _transfer(link2, 400.0, cap=80.0, busy_cap=40.0)
    env2.run(until=done)
    assert env2.now == 10.0


S, HELD, INTERFERENCE = 132, 20, 0.011


def _piece_end(hold_at: float | None, release_at: float | None, work: float = 1.0) -> float:
    """End time of ``work`` s of compute when a kernel holding HELD SMs runs in
    [hold_at, release_at)."""
    env = simpy.Environment()
    gpu = Gpu(env, S, INTERFERENCE)
    ends = []

    def piece():  # noqa: ANN202
        yield gpu.compute(work)
        gpu.computed()
        ends.append(env.now)

    def kernel():  # noqa: ANN202
        yield env.timeout(hold_at)
        gpu.hold(HELD)
        yield env.timeout(release_at - hold_at)
        gpu.release(HELD)

    env.process(piece())
    if hold_at is not None:
        env.process(kernel())
    env.run()
    return ends[0]


def test_compute_alone_runs_on_all_sms_at_full_speed() -> None:
    assert _piece_end(None, None, work=0.75) == 0.75
    env = simpy.Environment()
    gpu = Gpu(env, S, INTERFERENCE)
    assert gpu.compute_rate() == 1.0


def test_compute_beside_a_comm_kernel_runs_on_the_rest_slowed_by_interference() -> None:
    rate = (S - HELD) / S * (1 - INTERFERENCE)
    env = simpy.Environment()
    gpu = Gpu(env, S, INTERFERENCE)
    gpu.hold(HELD)
    assert gpu.compute_rate() == rate
    gpu.hold(4)  # a second kernel (e.g. a PP receive) takes its SMs too
    assert gpu.compute_rate() == (S - HELD - 4) / S * (1 - INTERFERENCE)
    # 1 s of work; a kernel resident in [0.25, 0.5): 0.25 done alone, 0.25 x rate beside it,
    # the rest alone again
    end = _piece_end(0.25, 0.5)
    assert abs(end - (0.5 + (1.0 - 0.25 - 0.25 * rate))) < 1e-12
    # resident for the whole piece: work / rate
    assert abs(_piece_end(0.0, 100.0) - 1.0 / rate) < 1e-12


def test_static_partition_never_gives_compute_the_reserved_sms() -> None:
    env = simpy.Environment()
    gpu = Gpu(env, S, INTERFERENCE, reserved=HELD)
    assert gpu.compute_rate() == (S - HELD) / S  # alone: still only S - reserved, no interference
    gpu.hold(2)  # a PP kernel inside the reserved SMs
    assert gpu.compute_rate() == (S - HELD) / S * (1 - INTERFERENCE)
    gpu.hold(HELD)  # and the all-to-all beside it
    assert gpu.compute_rate() == (S - HELD - 2) / S * (1 - INTERFERENCE)
