"""Lowering: insert the SEND/RECV actions that carry a schedule's cross-rank dependencies.

The runtime posts sends asynchronously (isend) and blocks on receives, and on NCCL the messages
between one pair of ranks are matched in posting order (no tags). The rule implemented here:

1. each cross-rank output gets a SEND right after the action producing it (after the whole FB
   for an FB's halves); several SENDs after one action go in the order (destination rank,
   position of the consumer on that rank, half of the FB: forward first);
2. on each pair of ranks (a -> b) the messages are numbered in the order of a's SENDs; the RECV
   of message k goes right before the earliest consumer among messages k, k+1, ... on rank b
   (a suffix minimum), so the RECVs on b from a follow a's SEND order and each RECV sits as
   late as that order allows (it moves earlier only where an earlier-sent message is consumed
   later);
3. several RECVs before one action go in the order (source rank, message number).

Why this cannot deadlock when the compute schedule does not: a SEND waits only for the action
just before it (its producer), and a RECV placed before consumer c_j for message k <= j waits
for SEND k, which rank a posts no later than SEND j, which c_j waited for already. So the only
new waits are ones the consumers already had. The result is still validated (transfers, pair
order, cycle check), and a ValidationError says so if lowering ever fails.

Caveat: this assumes what the runtime contract says, that a posted send never holds up later
work on its rank. NCCL sends of large tensors are rendezvous operations: if one rank's sends
and receives for several peers share one stream, a send that waits for its receiver can hold
up a later receive on that rank, a hazard these plans do not rule out. Posting each direction
of each pair of ranks on its own communicator keeps the plans safe. A schedule that already holds transfers is
validated and returned as it is.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial

from dualsim.deps import Handoff, Key, Kind, action_of, handoffs
from dualsim.errors import ValidationError
from dualsim.ir import Action, Op, Schedule
from dualsim.validate import Plan, checked, node_of_key, validate


def lower(schedule: Schedule) -> Plan:
    """The schedule with SEND/RECV inserted (see the module docstring for the rule), validated:
    a Plan. A schedule that already holds its transfers is validated and returned as it is."""
    valid, ix = checked(schedule)
    if isinstance(valid, Plan):
        return valid
    node_of = partial(node_of_key, ix)

    def half(node: int, key: Key) -> int:
        """0 for the forward half (or a plain action), 1 for an FB's backward half."""
        return 1 if key.kind is not Kind.FORWARD and ix.action[node].op is Op.FB else 0

    # 1. the SENDs after each producing action, in a fixed order
    sends_after: dict[int, list[tuple[tuple[int, int, int], Handoff]]] = defaultdict(list)
    for t in handoffs(schedule):
        prod, cons = node_of(t.producer), node_of(t.consumer)
        sends_after[prod].append(((t.dst, ix.pos[cons], half(prod, t.producer)), t))
    for items in sends_after.values():
        items.sort(key=lambda item: item[0])

    # 2. per pair of ranks: messages in send order, RECV before the suffix-minimum consumer
    messages: dict[tuple[int, int], list[Handoff]] = defaultdict(list)
    for node in sorted(sends_after):
        for _, t in sends_after[node]:
            messages[(t.src, t.dst)].append(t)
    recvs_before: dict[int, list[tuple[tuple[int, int], Handoff]]] = defaultdict(list)
    for (src, _dst), seq in messages.items():
        anchor = None
        for k in range(len(seq) - 1, -1, -1):
            cons = node_of(seq[k].consumer)
            anchor = cons if anchor is None or ix.pos[cons] < ix.pos[anchor] else anchor
            recvs_before[anchor].append(((src, k), seq[k]))
    for items in recvs_before.values():
        items.sort(key=lambda item: item[0])

    # 3. the new per-rank lists
    rows: list[list[Action]] = []
    for r, row in enumerate(schedule.actions):
        out: list[Action] = []
        for i, a in enumerate(row):
            node = ix.base[r] + i
            out.extend(action_of(t.recv) for _, t in recvs_before.get(node, ()))
            out.append(a)
            out.extend(action_of(t.send) for _, t in sends_after.get(node, ()))
        rows.append(out)
    try:
        plan = validate(schedule.with_actions(rows))
    except ValidationError as e:
        raise ValidationError(f"cannot lower {schedule.name!r} to a deadlock-free plan with "
                              f"SEND/RECV: {e.message}", detail=e.detail) from None
    assert isinstance(plan, Plan)
    return plan
