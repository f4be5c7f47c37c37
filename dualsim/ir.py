"""The one IR of dualsim: actions, stage placement, schedules and their string/JSON forms.

Every other part (generators, validator, lowering, simulators, runtime, renderers) speaks these
types. The string form of an action is the one of docs/schedules.md (Actions), compatible with
torch.distributed.pipelining where torch has the op: ``0F3``, ``7I12``, ``5W0``, ``3SEND_F1``,
and an overlapped pair ``(0F7;7B3)``. ``str(Action.parse(s)) == s`` for every valid ``s``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from dualsim.errors import PlanError, clip

PLAN_FORMAT = "dualsim-plan"
PLAN_VERSION = 1
#: digits of a stage or micro-batch number in an action's text (numbers below 10**9)
MAX_NUMBER_DIGITS = 9
#: longest schedule name a plan may carry (it is printed in tables and chart titles)
MAX_NAME_LENGTH = 64


class Op(str, Enum):
    """What an action does. F/I/W/B/FB compute; the rest move data between ranks."""

    F = "F"
    I = "I"  # noqa: E741 - the paper's name: backward for the input only
    W = "W"
    B = "B"
    FB = "FB"
    SEND_F = "SEND_F"
    RECV_F = "RECV_F"
    SEND_B = "SEND_B"
    RECV_B = "RECV_B"

    @property
    def is_compute(self) -> bool:
        return self.value in _COMPUTE

    @property
    def is_transfer(self) -> bool:
        return self.value not in _COMPUTE

    @property
    def is_backward(self) -> bool:
        """True for the ops that produce the input gradient (B or I)."""
        return self.value in _BACKWARD


_COMPUTE = frozenset({"F", "I", "W", "B", "FB"})
_BACKWARD = frozenset({"B", "I"})


_SINGLE = re.compile(r"^(\d+)(SEND_F|RECV_F|SEND_B|RECV_B|F|I|W|B)(\d+)$")
_PAIR = re.compile(r"^\((\d+F\d+);(\d+B\d+)\)$")


class Action(NamedTuple):
    """One step of one rank: ``op`` on ``stage`` for ``microbatch``.

    An FB action has ``stage``/``microbatch`` of its forward half and carries both halves in
    ``pair`` = (forward F action, backward B action). Immutable and hashable; a NamedTuple
    because schedules hold ~10^5 of them and tuple construction is the cheapest in Python.
    """

    op: Op
    stage: int
    microbatch: int
    pair: tuple["Action", "Action"] | None = None

    @staticmethod
    def fb(forward: "Action", backward: "Action") -> "Action":
        """The overlapped unit of a forward and a full backward."""
        if forward.op is not Op.F or backward.op is not Op.B:
            raise ValueError(f"an FB pairs an F with a B, not {forward} and {backward}")
        return Action(Op.FB, forward.stage, forward.microbatch, (forward, backward))

    @property
    def parts(self) -> tuple["Action", ...]:
        """The compute actions this unit runs: both halves of an FB, else itself."""
        return self.pair if self.pair is not None else (self,)

    @property
    def forward(self) -> "Action":
        assert self.pair is not None
        return self.pair[0]

    @property
    def backward(self) -> "Action":
        assert self.pair is not None
        return self.pair[1]

    def __str__(self) -> str:
        if self.pair is not None:
            return f"({self.pair[0]};{self.pair[1]})"
        return f"{self.stage}{self.op.value}{self.microbatch}"

    def __repr__(self) -> str:
        return f"Action({self})"

    @staticmethod
    def parse(text: str) -> "Action":
        """Parse the string form; raises PlanError naming the text on failure."""
        s = text.strip()
        m = _PAIR.match(s)
        if m:
            return Action.fb(Action.parse(m.group(1)), Action.parse(m.group(2)))
        m = _SINGLE.match(s)
        if not m:
            raise PlanError(
                f"cannot parse action {clip(text)}: expected <stage><op><microbatch> such as "
                "0F3, 7I12, 3SEND_F1, or an overlapped pair such as (0F7;7B3)"
            )
        if max(len(m.group(1)), len(m.group(3))) > MAX_NUMBER_DIGITS:
            raise PlanError(
                f"cannot parse action {clip(text)}: its stage or micro-batch number has more "
                f"than {MAX_NUMBER_DIGITS} digits"
            )
        return Action(Op(m.group(2)), int(m.group(1)), int(m.group(3)))


def F(stage: int, mb: int) -> Action:
    return Action(Op.F, stage, mb)


def I(stage: int, mb: int) -> Action:  # noqa: E743
    return Action(Op.I, stage, mb)


def W(stage: int, mb: int) -> Action:
    return Action(Op.W, stage, mb)


def B(stage: int, mb: int) -> Action:
    return Action(Op.B, stage, mb)


@dataclass(frozen=True)
class Stage:
    """Placement of one stage: which rank holds it, in which chain, at which position."""

    stage: int
    rank: int
    chain: int
    position: int


@dataclass(frozen=True)
class Schedule:
    """A pipeline schedule: placement table, chains and the per-rank ordered action lists.

    ``actions[r]`` is rank r's list, run in order. A *lowered* schedule (a Plan) also holds
    SEND/RECV actions; ``compute_only()`` strips them.
    """

    name: str
    ranks: int
    microbatches: int
    stages: tuple[Stage, ...]
    chains: tuple[tuple[int, ...], ...]  # chain -> its micro-batches
    actions: tuple[tuple[Action, ...], ...]
    chunks: int | None = None  # interleaved only: stages per rank

    # ---- placement helpers -------------------------------------------------
    @cached_property
    def _by_stage(self) -> dict[int, Stage]:
        return {s.stage: s for s in self.stages}

    @cached_property
    def _by_chain_pos(self) -> dict[tuple[int, int], int]:
        return {(s.chain, s.position): s.stage for s in self.stages}

    @cached_property
    def _chain_of_mb(self) -> dict[int, int]:
        return {m: c for c, mbs in enumerate(self.chains) for m in mbs}

    @cached_property
    def chain_length(self) -> int:
        """Stages per chain (the same for every chain)."""
        return max(s.position for s in self.stages) + 1

    @property
    def stage_size(self) -> float:
        """Fraction of a rank-worth of layers one stage holds (1, 1/2 for a V, 1/v interleaved)."""
        return self.ranks / self.chain_length

    def placement(self, stage: int) -> Stage:
        return self._by_stage[stage]

    def has_stage(self, stage: int) -> bool:
        return stage in self._by_stage

    def rank_of(self, stage: int) -> int:
        return self._by_stage[stage].rank

    def chain_of_microbatch(self, mb: int) -> int | None:
        return self._chain_of_mb.get(mb)

    def next_stage(self, stage: int) -> int | None:
        """The stage after ``stage`` in its chain, or None at the chain's end (the loss)."""
        p = self._by_stage[stage]
        return self._by_chain_pos.get((p.chain, p.position + 1))

    def prev_stage(self, stage: int) -> int | None:
        """The stage before ``stage`` in its chain, or None at the chain's start."""
        p = self._by_stage[stage]
        return self._by_chain_pos.get((p.chain, p.position - 1))

    def stages_of_rank(self, rank: int) -> list[int]:
        return sorted(s.stage for s in self.stages if s.rank == rank)

    def chain_stages(self, chain: int) -> list[int]:
        return [self._by_chain_pos[(chain, k)] for k in range(self.chain_length)]

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def is_lowered(self) -> bool:
        return any(a.op.is_transfer for row in self.actions for a in row)

    def compute_only(self) -> "Schedule":
        """The same schedule without SEND/RECV actions."""
        rows = tuple(tuple(a for a in row if a.op.is_compute) for row in self.actions)
        return Schedule(self.name, self.ranks, self.microbatches, self.stages, self.chains,
                        rows, self.chunks)

    def with_actions(self, actions: Sequence[Sequence[Action]]) -> "Schedule":
        return Schedule(self.name, self.ranks, self.microbatches, self.stages, self.chains,
                        tuple(tuple(r) for r in actions), self.chunks)

    def iter_actions(self) -> Iterator[tuple[int, int, Action]]:
        """(rank, position, action) for every action."""
        for r, row in enumerate(self.actions):
            for i, a in enumerate(row):
                yield r, i, a

    # ---- string and JSON forms --------------------------------------------
    def action_strings(self) -> list[list[str]]:
        return [[str(a) for a in row] for row in self.actions]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "schedule": self.name,
            "ranks": self.ranks,
            "microbatches": self.microbatches,
        }
        if self.chunks is not None:
            d["chunks"] = self.chunks
        d["stages"] = [
            {"stage": s.stage, "rank": s.rank, "chain": s.chain, "position": s.position}
            for s in self.stages
        ]
        d["chains"] = [{"chain": c, "microbatches": list(m)} for c, m in enumerate(self.chains)]
        d["actions"] = self.action_strings()
        return d

    @staticmethod
    def from_dict(d: Any) -> "Schedule":
        """Parse a plan's JSON object (format and structure only; see validate for meaning)."""
        if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT:
            raise PlanError(
                f"not a dualsim plan (expected \"format\": \"{PLAN_FORMAT}\"); "
                "write one with `dualsim emit`"
            )
        if d.get("version") != PLAN_VERSION:
            raise PlanError(
                f"unsupported plan version {clip(d.get('version'))}: this dualsim reads version "
                f"{PLAN_VERSION}; re-emit the plan with this dualsim"
            )
        try:
            ranks = _int(d, "ranks")
            mbs = _int(d, "microbatches")
            stages = tuple(
                Stage(_int(s, "stage"), _int(s, "rank"), _int(s, "chain"), _int(s, "position"))
                for s in _list(d, "stages")
            )
            chains_raw = sorted(_list(d, "chains"), key=lambda c: _int(c, "chain"))
            numbers = [_int(c, "chain") for c in chains_raw]
            if numbers != list(range(len(numbers))):
                raise ValueError(f"chains must be numbered 0..{len(numbers) - 1} once each, "
                                 f"got {clip(numbers)}")
            chains = tuple(tuple(_item(m, "micro-batch") for m in _list(c, "microbatches"))
                           for c in chains_raw)
            rows = _list(d, "actions")
            actions = tuple(tuple(Action.parse(_str(a)) for a in _seq(row)) for row in rows)
            chunks = d.get("chunks")
            if chunks is not None:
                chunks = _item(chunks, "field 'chunks'")
            name = _name(d.get("schedule", "custom"))
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise PlanError(f"malformed plan: {what}; re-emit it with `dualsim emit`") from None
        return Schedule(name, ranks, mbs, stages, chains, actions, chunks)

    def grid(self, mark: tuple[int, int] | None = None, window: int | None = None,
             ranks: Iterable[int] | None = None) -> str:
        """The per-rank action grid, one row per rank, with ``mark`` = (rank, position) flagged.

        With ``window``, only columns within that distance of the marked position are drawn.
        """
        rows = list(ranks) if ranks is not None else list(range(self.ranks))
        strs = self.action_strings()
        lo, hi = 0, max((len(r) for r in strs), default=0)
        if mark is not None and window is not None:
            lo, hi = max(0, mark[1] - window), min(hi, mark[1] + window + 1)
        width = max([len(a) for r in strs for a in r[lo:hi]] + [3]) + 3  # room for >a<
        lines = ["rank | " + "".join(f"{i:<{width}}" for i in range(lo, hi))]
        for r in rows:
            cells = []
            for i in range(lo, hi):
                a = strs[r][i] if i < len(strs[r]) else ""
                if mark == (r, i):
                    a = f">{a}<"
                cells.append(f"{a:<{width}}")
            lines.append(f"{r:>4} | " + "".join(cells).rstrip())
        return "\n".join(lines)


def _int(d: Any, key: str) -> int:
    return _item(_field(d, key), f"field {key!r}")


def _item(v: Any, what: str) -> int:
    """``v`` if it is an integer (not a bool, not a float such as 1.5 or Infinity)."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{what} must be an integer, got {clip(v)}")
    return v


def _field(d: Any, key: str) -> Any:
    if not isinstance(d, dict):
        raise TypeError(f"expected an object holding {key!r}, got {clip(d)}")
    return d[key]


def _name(v: Any) -> str:
    """The schedule name: printable, one line, short (it lands in tables and chart titles)."""
    if not (isinstance(v, str) and 0 < len(v) <= MAX_NAME_LENGTH and v.isprintable()):
        raise ValueError(f"field 'schedule' must be a one-line printable name of 1.."
                         f"{MAX_NAME_LENGTH} characters, got {clip(v)}")
    return v


def _list(d: Any, key: str) -> list[Any]:
    v = _field(d, key)
    if not isinstance(v, list):
        raise TypeError(f"field {key!r} must be a list")
    return v


def _seq(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise TypeError("each rank's actions must be a list of strings")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"action {clip(v)} must be a string")
    return v
