"""Walk the ranks through a schedule's dependencies: the one worklist behind the validator's
deadlock check and the abstract simulator's times.

Each rank runs its action list in order while the next action's inputs exist; a rank whose next
action lacks an input parks on that one product and is woken when the action making it ends.
An action starts at max(its rank's previous end, each input's end plus the latency on a
cross-rank input) and ends its op's duration later; all ranks start at 0. Whatever order the
ranks are taken in, every start is the same, so the times are unique. With zero durations the
walk is only the deadlock check: the ranks that cannot finish are left stalled, each parked on
the product it waits for. The rules are :mod:`dualsim.deps`'s, compiled to flat slots
(:func:`dualsim.deps.compile_rules`); O(actions + dependencies).

With ``check`` the walk also refuses an action that names a stage not on its rank or a
micro-batch not of that stage's chain, and a product made twice: it stops there and says where
(``Walk.bad``). The validator uses this as its fast pass and explains a refusal with its
ordered checks (``dualsim.validate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dualsim.deps import Kind, Rules
from dualsim.ir import Op, Schedule


@dataclass
class Walk:
    """How far each rank got, and the times of the actions it ran.

    ``starts[r]``/``ends[r]`` hold rank r's walked actions in list order (actions whose op the
    rules skip, such as a lowered plan's transfers in the compute view, are left out);
    ``allocs[r]`` the starts of those making a forward (F, FB) and ``frees[r]`` the ends of
    those making a backward (B, I, FB), both rising; ``busy[r]`` the sum of their durations;
    ``pointer[r]`` is the position rank r stopped at; ``blocked[r]`` the slot it waits for;
    ``ready[slot]`` the end of the action that made each product (None: not made); ``skipped``
    how many actions had no rules; ``bad`` the (rank, position) a checking walk stopped at.
    """

    starts: list[list[Any]]
    ends: list[list[Any]]
    allocs: list[list[Any]]
    frees: list[list[Any]]
    busy: list[Any]
    pointer: list[int]
    blocked: dict[int, int]
    ready: list[Any]
    skipped: int = 0
    bad: tuple[int, int] | None = None

    @property
    def stalled(self) -> list[int]:
        """The ranks that cannot finish (the schedule would deadlock), in rank order."""
        return sorted(self.blocked)


ZERO: dict[Op, int] = {op: 0 for op in Op}


def walk(schedule: Schedule, rules: Rules, durations: Mapping[Op, Any] = ZERO,
         latency: Any = 0, check: bool = False,
         unit_durations: Sequence[Sequence[Any]] | None = None) -> Walk:
    """Walk ``schedule`` under ``rules`` (see the module docstring).

    ``durations[op]`` is each op's duration (an FB's is ``durations[Op.FB]``), unless
    ``unit_durations[r][k]`` gives one per walked action (rank r's k-th action with rules);
    ops without rules are skipped. ``latency`` is one number, or a table ``latency[src][dst]``
    of ranks. Without ``check`` the schedule must have a sane placement and one list per rank,
    name known stages on their ranks and make each product once (a validated one).
    """
    ranks, S, M = schedule.ranks, schedule.num_stages, schedule.microbatches
    # with check: per rank and stage held, the micro-batches of the stage's chain (else None)
    allowed: list[list[bytes | None]] = [[None] * S for _ in range(ranks)]
    if check:
        masks = [bytearray(M) for _ in schedule.chains]
        for mask, mbs in zip(masks, schedule.chains):
            for m in mbs:
                if 0 <= m < M:
                    mask[m] = 1
        for st in schedule.stages:
            allowed[st.rank][st.stage] = bytes(masks[st.chain])
    # per op with rules: per stage its inputs (slot at micro-batch 0, latency) and its
    # products; its duration; whether it makes a forward (1) or a backward (2); None: skipped
    rank_of = {st.stage: st.rank for st in schedule.stages}

    def lat(slot: int, stage: int, cross: bool) -> Any:
        if not cross:
            return 0
        if isinstance(latency, (list, tuple)):
            return latency[rank_of[rules.key(slot).stage]][rank_of[stage]]
        return latency

    table: dict[Op, Any] = {op: None for op in Op}
    for op, rows in rules.needs.items():
        kinds = {rules.key(slot).kind for row in rules.makes[op] for slot in row}
        table[op] = (tuple(tuple((slot, lat(slot, st, cross)) for slot, cross in row)
                           for st, row in enumerate(rows)), rules.makes[op], durations.get(op, 0),
                     1 if Kind.FORWARD in kinds else 2 if Kind.BACKWARD in kinds else 0)
    ready: list[Any] = [None] * rules.size  # slot -> end time of the action making it
    waiting: dict[int, list[int]] = {}  # slot -> ranks parked on it
    parked_on = [-1] * ranks
    actions = schedule.actions
    starts: list[list[Any]] = [[] for _ in range(ranks)]
    ends: list[list[Any]] = [[] for _ in range(ranks)]
    allocs: list[list[Any]] = [[] for _ in range(ranks)]
    frees: list[list[Any]] = [[] for _ in range(ranks)]
    busy: list[Any] = [0] * ranks
    pointer = [0] * ranks
    free: list[Any] = [0] * ranks
    d_fb = durations.get(Op.FB, 0)
    skipped, bad = 0, None
    work = list(range(ranks - 1, -1, -1))
    while work:
        r = work.pop()
        row, mine = actions[r], allowed[r]
        own_durations = None if unit_durations is None else unit_durations[r]
        p, n, t_free, t_busy = pointer[r], len(row), free[r], busy[r]
        out_start, out_end, out_alloc, out_free = starts[r], ends[r], allocs[r], frees[r]
        wait = -1
        while p < n:
            a = row[p]
            pair = a.pair
            t = t_free
            if pair is None:
                rule = table[a.op]
                if rule is None:
                    skipped += 1
                    p += 1
                    continue
                m, s = a.microbatch, a.stage
                if check and not (0 <= s < S and 0 <= m < M and (ok := mine[s]) and ok[m]):
                    bad = (r, p)
                    break
                needs, makes, d, kind = rule
                for slot, lat in needs[s]:
                    e = ready[slot + m]
                    if e is None:
                        wait = slot + m
                        break
                    e += lat
                    if e > t:
                        t = e
                if wait >= 0:
                    break
                if own_durations is not None:
                    d = own_durations[len(out_start)]
                t_free = t + d
                for slot in makes[s]:
                    slot += m
                    if check and ready[slot] is not None:
                        bad = (r, p)
                        break
                    ready[slot] = t_free
                    if slot in waiting:
                        work.extend(waiting.pop(slot))
                if bad is not None:
                    break
                if kind == 1:
                    out_alloc.append(t)
                elif kind == 2:
                    out_free.append(t_free)
            else:  # an FB: what its halves need; what they make exists when it ends (the
                # single-action path above, repeated over the two halves: the hot loop avoids
                # a loop over parts for the common single action)
                for part in pair:
                    m, s = part.microbatch, part.stage
                    if check and not (0 <= s < S and 0 <= m < M and (ok := mine[s]) and ok[m]):
                        bad = (r, p)
                        break
                    for slot, lat in table[part.op][0][s]:
                        e = ready[slot + m]
                        if e is None:
                            wait = slot + m
                            break
                        e += lat
                        if e > t:
                            t = e
                    if wait >= 0:
                        break
                if wait >= 0 or bad is not None:
                    break
                d = d_fb if own_durations is None else own_durations[len(out_start)]
                t_free = t + d
                for part in pair:
                    m = part.microbatch
                    for slot in table[part.op][1][part.stage]:
                        slot += m
                        if check and ready[slot] is not None:
                            bad = (r, p)
                            break
                        ready[slot] = t_free
                        if slot in waiting:
                            work.extend(waiting.pop(slot))
                    if bad is not None:
                        break
                if bad is not None:
                    break
                out_alloc.append(t)
                out_free.append(t_free)
            t_busy += d
            out_start.append(t)
            out_end.append(t_free)
            p += 1
        pointer[r], free[r], busy[r] = p, t_free, t_busy
        if bad is not None:
            break
        if wait >= 0:
            waiting.setdefault(wait, []).append(r)
            parked_on[r] = wait
    blocked = {r: parked_on[r] for r in range(ranks)
               if bad is None and pointer[r] < len(actions[r])}
    return Walk(starts, ends, allocs, frees, busy, pointer, blocked, ready, skipped, bad)
