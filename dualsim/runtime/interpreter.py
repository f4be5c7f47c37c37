"""One rank's interpreter: runs its list of plan actions, one loop, and records each one's time.

Per step (phases named in the code):
  1. sync: a barrier aligns the ranks; its exit is the step's time zero on every rank.
  2. actions: F / I / W / B / FB compute on the rank's stage slices; SEND / RECV move
     activations and input gradients (consecutive transfers are posted together, on NCCL
     on one process group per direction of each pair of ranks: see ``p2p.py``).
  3. copies: a layer slice held by several stages (DualPipe's two chains) gets the sum of
     its copies' gradients on every copy.
  4. optimizer: SGD with momentum, identical on every copy and in the reference.

Data flow inside a step, keyed by (producing stage, micro-batch):
  F's output goes to ``local_f`` when the next stage of the chain is on this rank (the turn of a
  V), else to ``to_send_f`` for its SEND_F; RECV_F fills ``recv_f`` keyed by the receiving stage.
  Input gradients move the same way through ``local_b`` / ``to_send_b`` / ``recv_b``.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from dualsim.ir import Action, Op, Schedule
from dualsim.runtime import wgrad
from dualsim.runtime.p2p import PeerComm, Message
from dualsim.runtime.net import (NetConfig, StageNet, grad_or_zeros, loss_fn, make_batch,
                                   named_tensors)
from dualsim.runtime.reference import make_optimizer
from dualsim.timeline import action_fields

Stash = wgrad.WeightGradStash

# what a rank is doing, as the launcher's watchdog sees it
COMPUTING, WAITING, SYNCING, DONE = 1, 2, 3, 4


class Progress:
    """Where a rank is (step, action index, state); the launcher's version is shared memory."""

    def update(self, step: int, index: int, state: int) -> None:
        pass


@dataclass(frozen=True)
class Fault:
    """Test hook: on ``rank``, at action ``index`` of step 0, ``kill`` itself or ``hang``.

    Set by DUALSIM_TEST_FAULT="rank:index:kind"; DUALSIM_TEST_FAULT_MARK names a file written
    when the fault fires (so a test knows the run is mid-step).
    """

    rank: int
    index: int
    kind: str

    @staticmethod
    def from_env() -> "Fault | None":
        spec = os.environ.get("DUALSIM_TEST_FAULT")
        if not spec:
            return None
        rank, index, kind = spec.split(":")
        return Fault(int(rank), int(index), kind)

    def trigger(self) -> None:
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        mark = os.environ.get("DUALSIM_TEST_FAULT_MARK")
        if mark:  # tell the test where the run stands
            with open(mark, "w") as f:
                f.write(str(os.getpid()))
        while self.kind == "hang":
            time.sleep(3600)
        raise RuntimeError(f"injected fault {self.kind!r}")


@dataclass
class StepState:
    # (stage, mb) -> (input, output, weight-gradient stash if its backward is an I)
    saved: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, Stash | None]] = \
        field(default_factory=dict)
    pending_w: dict[tuple[int, int], wgrad.WeightGradStash] = field(default_factory=dict)
    local_f: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    local_b: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    to_send_f: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    to_send_b: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    recv_f: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    recv_b: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    loss: float = 0.0


@dataclass
class StepRecord:
    """One step of one rank; times in seconds from the step's aligned start."""

    rows: list[tuple[Any, ...]]
    loss: float
    actions_end: float
    step_end: float


class RankRunner:
    """The stage slices, optimizer and action loop of one rank."""

    def __init__(self, plan: Schedule, rank: int, cfg: NetConfig, device: torch.device,
                 backend: str, progress: Progress | None = None, fault: Fault | None = None,
                 direction_groups: bool = False) -> None:
        """``direction_groups``: one process group per direction of each pair of ranks also on
        gloo (always on NCCL, see :mod:`comm`); creating them is collective."""
        self.plan, self.rank, self.cfg, self.device = plan, rank, cfg, device
        self.actions = plan.actions[rank]
        self.positions = plan.chain_length
        self.modules = {s: StageNet(cfg, plan.placement(s).position, self.positions).to(device)
                        for s in plan.stages_of_rank(rank)}
        self.optimizer = make_optimizer([p for m in self.modules.values() for p in m.parameters()])
        self.comm = PeerComm.for_plan(plan, rank, device,
                                      per_direction=backend == "nccl" or direction_groups)
        self.progress = progress or Progress()
        self.fault = fault if fault is not None and fault.rank == rank else None
        self.streams = (torch.cuda.Stream(device), torch.cuda.Stream(device)) \
            if device.type == "cuda" else None
        # the (stage, micro-batch) pairs whose backward is an I (the others run a full B)
        self.split_backward = {(a.stage, a.microbatch) for u in self.actions for a in u.parts
                               if a.op is Op.I}
        self.step_index = 0
        self.act_shape = (cfg.microbatch_size, cfg.seq, cfg.hidden)

    # ---- one step -----------------------------------------------------------------------
    def step(self, step: int) -> StepRecord:
        self.step_index = step
        tokens, targets = make_batch(self.cfg, self.plan.microbatches, step)
        self.tokens, self.targets = tokens.to(self.device), targets.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        state = StepState()
        rows: list[tuple[Any, ...]] = []

        # phase 1: sync, the step's time zero
        self.progress.update(step, -1, SYNCING)
        dist.barrier()
        t0 = time.perf_counter()
        clock: Callable[[], float] = lambda: time.perf_counter() - t0

        # phase 2: actions
        i = 0
        while i < len(self.actions):
            if self.actions[i].op.is_transfer:
                j = i
                while j < len(self.actions) and self.actions[j].op.is_transfer:
                    j += 1
                self._transfers(i, j, state, rows, clock)
                i = j
                continue
            self._enter(i, COMPUTING)
            start = clock()
            self._compute(self.actions[i], state)
            if self.device.type == "cuda":  # time the kernels, not their launch
                torch.cuda.synchronize(self.device)
            rows.append(self._row("compute", self.actions[i], start, clock()))
            i += 1
        self.progress.update(step, len(self.actions), SYNCING)
        self.comm.finish_sends()
        left = {name: sorted(d) for name, d in vars(state).items() if isinstance(d, dict) and d}
        if left:  # a valid plan consumes everything it produces
            raise RuntimeError(f"rank {self.rank} ended step {step} with unused {left}")
        actions_end = max((r[-2] for r in rows), default=0.0)

        # phase 3: copies; phase 4: optimizer
        self._sum_copies()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return StepRecord(rows, state.loss, actions_end, clock())

    def _enter(self, index: int, state: int) -> None:
        self.progress.update(self.step_index, index, state)
        if self.fault is not None and self.step_index == 0 and self.fault.index == index:
            self.fault.trigger()

    def _row(self, stream: str, a: Action, start: float, end: float) -> tuple[Any, ...]:
        op, stage, mb, chain, s2, m2, c2, text = action_fields(self.plan, a)
        if stream == "comm":
            op = "pp_send" if a.op in (Op.SEND_F, Op.SEND_B) else "pp_recv"
        return (self.rank, stream, op, stage, mb, chain, s2, m2, c2, "", start, end, text)

    # ---- transfers ----------------------------------------------------------------------
    def _transfers(self, lo: int, hi: int, state: StepState, rows: list[tuple[Any, ...]],
                   clock: Callable[[], float]) -> None:
        """Post actions lo..hi-1 (all SEND/RECV) together, then wait for the receives.

        Rows: a send spans the posting of the batch, a receive its wait after the posting.
        """
        self._enter(lo, COMPUTING)
        start = clock()
        batch: list[Message] = []
        for a in self.actions[lo:hi]:
            key = (a.stage, a.microbatch)
            if a.op is Op.SEND_F:
                batch.append(Message(True, self._rank_of(self.plan.next_stage(a.stage)),
                                      state.to_send_f.pop(key)))
            elif a.op is Op.SEND_B:
                batch.append(Message(True, self._rank_of(self.plan.prev_stage(a.stage)),
                                      state.to_send_b.pop(key)))
            else:
                buf = torch.empty(self.act_shape, dtype=self.cfg.torch_dtype, device=self.device)
                forward = a.op is Op.RECV_F
                peer = self.plan.prev_stage(a.stage) if forward else self.plan.next_stage(a.stage)
                (state.recv_f if forward else state.recv_b)[key] = buf
                batch.append(Message(False, self._rank_of(peer), buf))
        works = self.comm.post(batch)
        posted = clock()
        for k, (a, w) in enumerate(zip(self.actions[lo:hi], works)):
            if a.op in (Op.RECV_F, Op.RECV_B):
                self._enter(lo + k, WAITING)
                if w is not None:
                    w.wait()
                rows.append(self._row("comm", a, posted, clock()))
            else:
                rows.append(self._row("comm", a, start, posted))

    def _rank_of(self, stage: int | None) -> int:
        assert stage is not None
        return self.plan.rank_of(stage)

    # ---- compute ------------------------------------------------------------------------
    def _compute(self, a: Action, state: StepState) -> None:
        if a.op is Op.F:
            self._forward(a.stage, a.microbatch, state)
        elif a.op in (Op.B, Op.I):
            self._backward(a.stage, a.microbatch, state, defer_weights=a.op is Op.I)
        elif a.op is Op.W:
            state.pending_w.pop((a.stage, a.microbatch)).flush()
        elif a.op is Op.FB:
            self._overlapped(a, state)
        else:
            raise AssertionError(f"not a compute action: {a}")

    def _overlapped(self, a: Action, state: StepState) -> None:
        """FB: on CPU one half after the other; on CUDA each half on its own stream.

        On CUDA the forward's kernels go to one stream and the backward's to another, so the
        GPU may run them side by side. Autograd runs a backward op on the stream its forward
        op used, so the overlap is only as good as the streams the earlier forward ran on.
        """
        f, b = a.forward, a.backward
        if self.streams is None:
            self._forward(f.stage, f.microbatch, state)
            self._backward(b.stage, b.microbatch, state, defer_weights=False)
            return
        current = torch.cuda.current_stream(self.device)
        for s in self.streams:
            s.wait_stream(current)
        with torch.cuda.stream(self.streams[0]):
            self._forward(f.stage, f.microbatch, state)
        with torch.cuda.stream(self.streams[1]):
            self._backward(b.stage, b.microbatch, state, defer_weights=False)
        for s in self.streams:
            current.wait_stream(s)

    def _forward(self, stage: int, mb: int, state: StepState) -> None:
        place = self.plan.placement(stage)
        if place.position == 0:
            x = self.tokens[mb]
        else:
            prev = self._stage(self.plan.prev_stage(stage))
            src = state.local_f.pop((prev, mb)) if self.plan.rank_of(prev) == self.rank \
                else state.recv_f.pop((stage, mb))
            x = src.detach().requires_grad_()
        stash: wgrad.WeightGradStash | None = None
        if (stage, mb) in self.split_backward:  # its backward is an I: record for a later W
            stash = wgrad.WeightGradStash()
            with wgrad.recording(stash):
                out = self.modules[stage](x)
        else:
            out = self.modules[stage](x)
        if place.position == self.positions - 1:
            out = loss_fn(out, self.targets[mb]) / self.plan.microbatches
            state.loss += float(out.detach())
        else:
            nxt = self._stage(self.plan.next_stage(stage))
            target = state.local_f if self.plan.rank_of(nxt) == self.rank else state.to_send_f
            target[(stage, mb)] = out.detach()
        state.saved[(stage, mb)] = (x, out, stash)

    def _backward(self, stage: int, mb: int, state: StepState, defer_weights: bool) -> None:
        """B, or I when ``defer_weights`` (the weight gradients wait in the stash for W)."""
        x, out, stash = state.saved.pop((stage, mb))
        nxt = self.plan.next_stage(stage)
        if nxt is None:
            grad = None
        elif self.plan.rank_of(nxt) == self.rank:
            grad = state.local_b.pop((nxt, mb))
        else:
            grad = state.recv_b.pop((stage, mb))
        if stash is not None:
            stash.defer = defer_weights
        torch.autograd.backward(out, grad_tensors=grad)
        if defer_weights:
            assert stash is not None
            state.pending_w[(stage, mb)] = stash
        prev = self.plan.prev_stage(stage)
        if prev is not None:
            assert x.grad is not None
            target = state.local_b if self.plan.rank_of(prev) == self.rank else state.to_send_b
            target[(stage, mb)] = x.grad

    @staticmethod
    def _stage(stage: int | None) -> int:
        assert stage is not None
        return stage

    # ---- copies ---------------------------------------------------------------------------
    def _copies(self, stage: int) -> list[int]:
        pos = self.plan.placement(stage).position
        return [s.stage for s in self.plan.stages if s.position == pos and s.stage != stage]

    def _flat_grad(self, stage: int) -> torch.Tensor:
        return torch.cat([grad_or_zeros(p).reshape(-1) for p in self.modules[stage].parameters()])

    def _sum_copies(self) -> None:
        """Every copy of a layer slice gets the sum of all copies' gradients (DualPipe)."""
        copies = {stage: self._copies(stage) for stage in sorted(self.modules)}
        flat = {stage: self._flat_grad(stage) for stage, others in copies.items() if others}
        if not flat:
            return
        sends = [Message(True, self.plan.rank_of(other), flat[stage])
                 for stage in flat for other in copies[stage]]
        recvs = [(stage, Message(False, peer, torch.empty_like(flat[stage])))
                 for peer in range(self.plan.ranks) if peer != self.rank
                 for other in self.plan.stages_of_rank(peer)
                 for stage in flat if other in copies[stage]]
        self.progress.update(self.step_index, len(self.actions), SYNCING)
        self.comm.exchange(sends, [t for _, t in recvs])
        for stage, t in recvs:
            offset = 0
            for p in self.modules[stage].parameters():
                n = p.numel()
                g = t.tensor[offset:offset + n].view_as(p)
                p.grad = g.clone() if p.grad is None else p.grad + g
                offset += n

    # ---- results ----------------------------------------------------------------------------
    def named_tensors(self, grads: bool) -> dict[tuple[int, int, str], torch.Tensor]:
        """(stage, position, name) -> gradient or weight, on the CPU."""
        return named_tensors(self.modules, grads)
