"""The worklist engine of the abstract simulator: start and end time of every compute action.

It implements the timing rules written down in :mod:`dualsim.sim.abstract` for given integer
or float durations per op and one cross-rank latency, in O(actions + dependencies): a rank runs
its list while each next action's inputs are ready; a blocked rank parks on the one product it
lacks and is woken when the action making it ends. Whatever order ranks are taken in, every
start is max(rank free, inputs ready), so the times are unique. A bad action (unknown or
misplaced stage, unknown micro-batch, repeated op) or a deadlock raises ValidationError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from dualsim.errors import ValidationError
from dualsim.ir import Action, Op, Schedule


@dataclass
class EngineRun:
    """What the engine computes, per rank, over the rank's compute actions in list order."""

    rows: list[Sequence[Action]]  # compute actions (SEND/RECV dropped)
    starts: list[list[Any]]
    ends: list[list[Any]]
    busy: list[Any]
    allocs: list[list[Any]]  # forward starts (F, FB), rising
    frees: list[list[Any]]  # backward ends (B, I, FB), rising


def run(schedule: Schedule, op_time: dict[Op, Any], latency: Any) -> EngineRun:
    """Start and end of every compute action, with ``op_time[op]`` per action (already
    scaled by the stage size) and ``latency`` on cross-rank dependencies.

    Products (what an action makes available) live in one flat list ``ready`` of end times,
    indexed by kind offset + stage * M + micro-batch: the forward output of (s, m), its input
    gradient (made by B or I), an I-only mark (what W needs) and a W-done mark (to catch a
    repeated W). ``None`` means not made yet.
    """
    ranks, mbs = schedule.ranks, schedule.microbatches
    num = max((st.stage for st in schedule.stages), default=-1) + 1
    rank_of = {st.stage: st.rank for st in schedule.stages}
    prev = [-1] * num
    nxt = [-1] * num
    fwd_lat = [0] * num  # latency on F(prev, m) -> F(s, m)
    bwd_lat = [0] * num  # latency on backward(next, m) -> backward(s, m)
    for st in schedule.stages:
        p_, n_ = schedule.prev_stage(st.stage), schedule.next_stage(st.stage)
        if p_ is not None:
            prev[st.stage] = p_
            fwd_lat[st.stage] = latency if rank_of[p_] != st.rank else 0
        if n_ is not None:
            nxt[st.stage] = n_
            bwd_lat[st.stage] = latency if rank_of[n_] != st.rank else 0
    # kind offsets in ``ready``: forward output, input gradient, I done (for W), W done
    grad_at, wgrad_at, done_at = num * mbs, 2 * num * mbs, 3 * num * mbs
    ready: list[Any] = [None] * (4 * num * mbs)
    waiting: dict[int, list[int]] = {}
    blocked_on: dict[int, int] = {}

    actions = schedule.actions
    if len(actions) != ranks:
        raise ValidationError(f"schedule {schedule.name!r} has {len(actions)} action lists for "
                              f"{ranks} ranks: give one list per rank")
    own_stages = [frozenset(st.stage for st in schedule.stages if st.rank == r)
                  for r in range(ranks)]
    starts: list[list[Any]] = [[] for _ in range(ranks)]
    ends: list[list[Any]] = [[] for _ in range(ranks)]
    allocs: list[list[Any]] = [[] for _ in range(ranks)]
    frees: list[list[Any]] = [[] for _ in range(ranks)]
    busy: list[Any] = [0] * ranks
    pointer = [0] * ranks
    free: list[Any] = [0] * ranks
    dF, dI, dW, dB, dFB = (op_time[o] for o in (Op.F, Op.I, Op.W, Op.B, Op.FB))
    F_, I_, W_, B_, FB_ = Op.F, Op.I, Op.W, Op.B, Op.FB
    work = list(range(ranks - 1, -1, -1))

    def bad(r: int, p: int, why: str) -> ValidationError:
        return ValidationError(f"rank {r} position {p}: action {actions[r][p]} {why}",
                               schedule.grid(mark=(r, p), window=4))

    def misplaced(r: int, s: int, m: int) -> str:
        if s not in rank_of:
            return f"names unknown stage {s}"
        if rank_of[s] != r:
            return f"runs stage {s}, which is placed on rank {rank_of[s]}"
        return f"names unknown micro-batch {m} (there are {mbs})"

    def repeated(r: int, p: int) -> ValidationError:
        return bad(r, p, "runs again what an earlier action ran: each (stage, micro-batch) "
                   "gets one F and one B, or one I and one W")

    while work:
        r = work.pop()
        row = actions[r]
        p, n, t_free, t_busy = pointer[r], len(row), free[r], busy[r]
        mine, out_start, out_end = own_stages[r], starts[r], ends[r]
        out_alloc, out_free = allocs[r], frees[r]
        while p < n:
            a = row[p]
            op = a.op
            if op is F_:
                s, m = a.stage, a.microbatch
                if s not in mine or not 0 <= m < mbs:
                    raise bad(r, p, misplaced(r, s, m))
                t = t_free
                ps = prev[s]
                if ps >= 0:
                    e = ready[ps * mbs + m]
                    if e is None:
                        blocked_on[r] = ps * mbs + m
                        break
                    e += fwd_lat[s]
                    if e > t:
                        t = e
                t_free = t + dF
                made = s * mbs + m
                if ready[made] is not None:
                    raise repeated(r, p)
                ready[made] = t_free
                if made in waiting:
                    work.extend(waiting.pop(made))
                out_alloc.append(t)
                t_busy += dF
            elif op is I_ or op is B_:
                s, m = a.stage, a.microbatch
                if s not in mine or not 0 <= m < mbs:
                    raise bad(r, p, misplaced(r, s, m))
                own = s * mbs + m
                t = ready[own]
                if t is None:
                    blocked_on[r] = own
                    break
                if t_free > t:
                    t = t_free
                ns = nxt[s]
                if ns >= 0:
                    e = ready[grad_at + ns * mbs + m]
                    if e is None:
                        blocked_on[r] = grad_at + ns * mbs + m
                        break
                    e += bwd_lat[s]
                    if e > t:
                        t = e
                d = dI if op is I_ else dB
                t_free = t + d
                made = grad_at + own
                if ready[made] is not None:
                    raise repeated(r, p)
                ready[made] = t_free
                if made in waiting:
                    work.extend(waiting.pop(made))
                if op is I_:
                    ready[wgrad_at + own] = t_free
                    if wgrad_at + own in waiting:
                        work.extend(waiting.pop(wgrad_at + own))
                out_free.append(t_free)
                t_busy += d
            elif op is W_:
                s, m = a.stage, a.microbatch
                if s not in mine or not 0 <= m < mbs:
                    raise bad(r, p, misplaced(r, s, m))
                t = ready[wgrad_at + s * mbs + m]
                if t is None:
                    blocked_on[r] = wgrad_at + s * mbs + m
                    break
                if t_free > t:
                    t = t_free
                t_free = t + dW
                made = done_at + s * mbs + m
                if ready[made] is not None:
                    raise repeated(r, p)
                ready[made] = t_free
                t_busy += dW
            elif op is FB_:
                f, b = a.pair  # type: ignore[misc]
                s, m, bs, bm = f.stage, f.microbatch, b.stage, b.microbatch
                if s not in mine or not 0 <= m < mbs:
                    raise bad(r, p, misplaced(r, s, m))
                if bs not in mine or not 0 <= bm < mbs:
                    raise bad(r, p, misplaced(r, bs, bm))
                t = t_free
                ps = prev[s]
                if ps >= 0:
                    e = ready[ps * mbs + m]
                    if e is None:
                        blocked_on[r] = ps * mbs + m
                        break
                    e += fwd_lat[s]
                    if e > t:
                        t = e
                own = bs * mbs + bm
                e = ready[own]
                if e is None:
                    blocked_on[r] = own
                    break
                if e > t:
                    t = e
                ns = nxt[bs]
                if ns >= 0:
                    e = ready[grad_at + ns * mbs + bm]
                    if e is None:
                        blocked_on[r] = grad_at + ns * mbs + bm
                        break
                    e += bwd_lat[bs]
                    if e > t:
                        t = e
                t_free = t + dFB
                for made in (s * mbs + m, grad_at + own):
                    if ready[made] is not None:
                        raise repeated(r, p)
                    ready[made] = t_free
                    if made in waiting:
                        work.extend(waiting.pop(made))
                out_alloc.append(t)
                out_free.append(t_free)
                t_busy += dFB
            else:  # SEND/RECV of a lowered plan: the compute dependencies stand for them
                p += 1
                continue
            out_start.append(t)
            out_end.append(t_free)
            p += 1
        else:
            pointer[r], free[r], busy[r] = p, t_free, t_busy
            continue
        waiting.setdefault(blocked_on[r], []).append(r)
        pointer[r], free[r], busy[r] = p, t_free, t_busy
    stuck = [r for r in range(ranks) if pointer[r] < len(actions[r])]
    if stuck:
        raise _deadlock(schedule, stuck, pointer, blocked_on, num, mbs)
    rows = [row if len(row) == len(done) else [a for a in row if a.op.is_compute]
            for row, done in zip(actions, starts)]  # drop a lowered plan's transfers
    return EngineRun(rows, starts, ends, busy, allocs, frees)


_KIND = ("the forward", "the input gradient (B or I)", "the I")


def _deadlock(schedule: Schedule, stuck: list[int], pointer: list[int],
              blocked_on: dict[int, int], num: int, mbs: int) -> ValidationError:
    """The error for ranks that can never start their next action."""
    producers: dict[int, str] = {}
    for r, p, a in schedule.iter_actions():
        for part in a.parts:
            k = part.stage * mbs + part.microbatch
            if part.op is Op.F:
                producers[k] = f"{a} on rank {r}"
            elif part.op.is_backward:
                producers[num * mbs + k] = f"{a} on rank {r}"
                if part.op is Op.I:
                    producers[2 * num * mbs + k] = f"{a} on rank {r}"
    lines = []
    for r in stuck:
        key = blocked_on[r]
        kind, rest = divmod(key, num * mbs)
        stage, mb = divmod(rest, mbs)
        who = producers.get(key, "which no rank runs")
        lines.append(f"rank {r} at position {pointer[r]} ({schedule.actions[r][pointer[r]]}) "
                     f"waits for {_KIND[kind]} of stage {stage} micro-batch {mb}: {who}")
    r0 = stuck[0]
    return ValidationError("schedule deadlocks: " + "; ".join(lines),
                           schedule.grid(mark=(r0, pointer[r0]), window=4))
