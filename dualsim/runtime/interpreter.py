"""One process's interpreter: runs its rank's list of plan actions, one loop, and times them.

Per step (phases named in the code):
  1. sync: a barrier aligns the processes; its exit is the step's time zero everywhere.
  2. actions: F / I / W / B / FB compute on the rank's stage slices (:mod:`stages`: whole
     slices, or pieces with all-to-all under expert parallelism); SEND / RECV move activations
     and input gradients (consecutive transfers are posted together; on NCCL on one process
     group per direction of each pair of processes: see ``p2p.py``).
  3. sums: a layer slice held by several stages (DualPipe's two chains) gets the sum of its
     copies' gradients on every copy; with expert parallelism the processes of a pipeline rank
     then sum their dense (non-expert) gradients, as data-parallel replicas would.
  4. optimizer: SGD with momentum, identical on every copy and in the reference.

With expert parallelism (``ep`` processes per pipeline rank) every process of rank r runs r's
action list on its own share of every micro-batch's sequences, holds 1/ep of the routed experts
and exchanges token rows with its group's processes inside each MoE layer; process i of rank r
sends and receives pipeline messages only to and from process i of the other ranks.

Data flow inside a step, keyed by (producing stage, micro-batch), where :mod:`dualsim.deps` says
each product goes and each input comes from:
  F's output goes to ``local_f`` when the stage that needs it is on this rank (the turn of a
  V), else to ``to_send_f`` for its SEND_F; RECV_F fills ``recv_f`` keyed by the receiving stage.
  Input gradients move the same way through ``local_b`` / ``to_send_b`` / ``recv_b``.
The plan is a :class:`~dualsim.validate.Plan` (validated, with its transfers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from dualsim.deps import Key, Kind, Neighbours, destination, needs
from dualsim.ir import Action, Op
from dualsim.overlap_order import Node
from dualsim.runtime.a2a import ExpertComm
from dualsim.runtime.clock import Mark, StepClock
from dualsim.runtime.net import (NetConfig, StageNet, grad_or_zeros, make_batch, named_tensors,
                                 sum_dense_grads)
from dualsim.runtime.options import Fault
from dualsim.runtime.chains import trace_name
from dualsim.runtime.overlap import PieceTime
from dualsim.runtime.p2p import Message, PeerComm, ProcessGroups
from dualsim.runtime.profiling import span
from dualsim.validate import Plan
from dualsim.runtime.progress import COMPUTING, SYNCING, WAITING, Progress, World
from dualsim.runtime.records import StepRecord
from dualsim.runtime.reference import make_optimizer
from dualsim.runtime.stages import PieceStages, Stages, WholeStages
from dualsim.timeline import action_fields


@dataclass
class StepState:
    # (stage, mb) -> what its backward needs (stages.Saved or pieces.Pass)
    saved: dict[tuple[int, int], Any] = field(default_factory=dict)
    pending_w: dict[tuple[int, int], Any] = field(default_factory=dict)
    local_f: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    local_b: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    to_send_f: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    to_send_b: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    recv_f: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    recv_b: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    loss: float = 0.0


@dataclass(frozen=True)
class Placement:
    """Where this process runs: device, backend and whether GPU data goes through the host."""

    device: torch.device
    backend: str
    staging: bool = False  # gloo with GPU tensors (more processes than GPUs)


class RankRunner:
    """The stage slices, optimizer and action loop of one process."""

    def __init__(self, plan: Plan, process: int, world: World, cfg: NetConfig,
                 where: Placement, groups: ProcessGroups, progress: Progress | None = None,
                 fault: Fault | None = None, direction_groups: bool = False) -> None:
        """``direction_groups``: one process group per direction of each pair of processes
        also on gloo (always on NCCL, see :mod:`p2p`); creating them is collective."""
        if not isinstance(plan, Plan):
            raise TypeError("the runtime runs a Plan: pass dualsim.lower.lower(schedule)")
        self.plan, self.process, self.world, self.cfg = plan, process, world, cfg
        self.nb = Neighbours.of(plan)
        self.rank, self.ep_index = world.rank_of(process), world.ep_index(process)
        self.device = where.device
        self.actions = plan.actions[self.rank]
        self.positions = plan.chain_length
        share = cfg.experts // world.ep
        held = range(self.ep_index * share, (self.ep_index + 1) * share)
        self.modules = {s: StageNet(cfg, plan.placement(s).position, self.positions,
                                    experts=held).to(self.device)
                        for s in plan.stages_of_rank(self.rank)}
        self.optimizer = make_optimizer([p for m in self.modules.values() for p in m.parameters()])
        self.comm = PeerComm.for_plan(plan, process, groups,
                                      where.backend == "nccl" or direction_groups, where.staging)
        self.clock = StepClock(self.device)
        scale = 1.0 / (plan.microbatches * world.ep)
        self.ep_group = groups.expert_group(self.rank) if world.ep > 1 else None
        self.staging = where.staging
        self.stages: Stages
        if world.ep > 1:
            self.expert_comm = ExpertComm(self.ep_group, world.ep, self.ep_index, self.device,
                                          where.staging, self.clock)
            stages = PieceStages(self.modules, scale, self.expert_comm)
            stages.on_wait = self._on_wait
            stages.before_post = self._before_post
            self.stages = stages
        else:
            self.stages = WholeStages(self.modules, scale, self.device)
        self.progress = progress or Progress()
        self.fault = fault if fault is not None and fault.process == process else None
        # the (stage, micro-batch) pairs whose backward is an I (the others run a full B)
        self.split_backward = {(a.stage, a.microbatch) for u in self.actions for a in u.parts
                               if a.op is Op.I}
        self.step_index, self.index = 0, -1
        self.act_shape = (cfg.microbatch_size, cfg.seq, cfg.hidden)

    # ---- one step -----------------------------------------------------------------------
    def step(self, step: int) -> StepRecord:
        self.step_index = step
        tokens, targets = make_batch(self.cfg, self.plan.microbatches, step, self.world.ep)
        mine = slice(self.ep_index * self.cfg.microbatch_size,
                     (self.ep_index + 1) * self.cfg.microbatch_size)
        self.tokens = tokens[:, mine].contiguous().to(self.device)
        self.targets = targets[:, mine].contiguous().to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        state = StepState()
        self.marks: list[tuple[tuple[Any, ...], Mark, Mark]] = []  # rows resolved at the end
        self.a2a_bytes = 0

        # phase 1: sync, the step's time zero
        self.progress.update(step, -1, SYNCING)
        dist.barrier()
        self.clock.start()
        cpu0 = time.process_time()

        # phase 2: actions
        i = 0
        while i < len(self.actions):
            if self.actions[i].op.is_transfer:
                j = i
                while j < len(self.actions) and self.actions[j].op.is_transfer:
                    j += 1
                self._transfers(i, j, state)
                i = j
                continue
            self._enter(i, COMPUTING)
            a = self.actions[i]
            # on a GPU an event on the compute stream: the action starts once that stream has
            # passed the receive waits before it (NCCL's wait() does not block the host)
            start = self.clock.mark()
            with span(str(a)):
                pieces = self._compute(a, state)
            if self.device.type == "cuda":  # time the kernels, not their launch
                # the compute stream only (what the action ran, all-to-alls included: each
                # unit's compute stream waits for them): a device-wide synchronize would also
                # wait for this process's pending NCCL sends, which finish only once the peer
                # posts the receive; two ranks whose sends cross would wait for each other
                torch.cuda.current_stream(self.device).synchronize()
            self._rows(a, start, self.clock.host_mark(), pieces)
            i += 1
        self.progress.update(step, len(self.actions), SYNCING)
        self.comm.finish_sends()
        left = {name: sorted(d) for name, d in vars(state).items() if isinstance(d, dict) and d}
        if left:  # a valid plan consumes everything it produces
            raise RuntimeError(f"rank {self.rank} ended step {step} with unused {left}")

        # phase 3: sums of copies and of expert-parallel replicas; phase 4: optimizer
        self._sum_copies()
        self._sum_dense()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        end = self.clock.host()
        rows = [fields[:-1] + (self.clock.seconds(s), self.clock.seconds(e), fields[-1])
                for fields, s, e in self.marks]
        actions_end = max((r[-2] for r in rows if r[1] != "a2a"), default=0.0)
        return StepRecord(rows, state.loss, actions_end, end, self.a2a_bytes,
                          time.process_time() - cpu0)

    def _enter(self, index: int, state: int) -> None:
        self.index = index
        self.progress.update(self.step_index, index, state)
        f = self.fault
        if f is not None and f.piece is None and self.step_index == 0 and f.index == index:
            f.trigger()

    def _on_wait(self, node: Node | None) -> None:
        """Inside a unit: waiting for an all-to-all (``node``) or computing again (None)."""
        if node is None:
            self.progress.update(self.step_index, self.index, COMPUTING)
        else:
            self.progress.update(self.step_index, self.index, WAITING, trace_name(node))

    def _before_post(self, node: Node) -> None:
        f = self.fault
        if f is not None and f.piece == trace_name(node) and self.step_index == 0 \
                and f.index == self.index:
            f.trigger()

    # ---- timeline rows --------------------------------------------------------------------
    def _fields(self, a: Action) -> tuple[Any, ...]:
        return action_fields(self.plan, a)

    def _rows(self, a: Action, start: Mark, end: Mark, pieces: list[PieceTime]) -> None:
        op, stage, mb, chain, s2, m2, c2, text = self._fields(a)
        if not pieces:
            self.marks.append(((self.rank, "compute", op, stage, mb, chain, s2, m2, c2, "",
                                text), start, end))
            return
        for p in pieces:
            if p.stream == "compute":
                self.marks.append(((self.rank, "compute", op, stage, mb, chain, s2, m2, c2,
                                    p.name, text), p.start, p.end))
            else:
                self.a2a_bytes += p.nbytes
                self.marks.append(((self.rank, "a2a", p.name, stage, mb, chain, s2, m2, c2,
                                    p.name, text), p.start, p.end))

    def _comm_row(self, a: Action, start: Mark, end: Mark) -> None:
        op, stage, mb, chain, s2, m2, c2, text = self._fields(a)
        op = "pp_send" if a.op in (Op.SEND_F, Op.SEND_B) else "pp_recv"
        self.marks.append(((self.rank, "comm", op, stage, mb, chain, s2, m2, c2, "", text),
                           start, end))

    # ---- transfers ----------------------------------------------------------------------
    def _peer(self, stage: int) -> int:
        """The process of ``stage``'s rank with this process's expert-parallel index."""
        return self.world.process(self.nb.rank[stage], self.ep_index)

    def _transfers(self, lo: int, hi: int, state: StepState) -> None:
        """Post actions lo..hi-1 (all SEND/RECV) together, then wait for the receives.

        Rows: a send spans the posting of the batch, a receive its wait after the posting.
        """
        self._enter(lo, COMPUTING)
        start = self.clock.host_mark()
        batch: list[Message] = []
        for a in self.actions[lo:hi]:
            key = (a.stage, a.microbatch)
            # a SEND needs the product it carries, a RECV the SEND on the other end
            carried = needs(a, self.nb, lowered=True)[0].key
            if a.op is Op.SEND_F or a.op is Op.SEND_B:
                sent = state.to_send_f if a.op is Op.SEND_F else state.to_send_b
                batch.append(Message(True, self._peer(destination(carried, self.nb)),
                                     sent.pop(key)))
            else:
                buf = torch.empty(self.act_shape, dtype=self.cfg.torch_dtype, device=self.device)
                (state.recv_f if a.op is Op.RECV_F else state.recv_b)[key] = buf
                batch.append(Message(False, self._peer(carried.stage), buf))
        with span(" ".join(str(a) for a in self.actions[lo:hi])):
            works = self.comm.post(batch)
        posted = self.clock.host_mark()
        for k, (a, w) in enumerate(zip(self.actions[lo:hi], works)):
            if a.op in (Op.RECV_F, Op.RECV_B):
                self._enter(lo + k, WAITING)
                if w is not None:
                    with span(str(a)):
                        w.wait()
                # on a GPU an event after the wait: NCCL's wait() only makes the compute
                # stream wait, so a host mark here would end the row before the data arrived
                self._comm_row(a, posted, self.clock.mark())
            else:
                self._comm_row(a, start, posted)

    # ---- compute ------------------------------------------------------------------------
    def _compute(self, a: Action, state: StepState) -> list[PieceTime]:
        if a.op is Op.F:
            saved, pieces = self.stages.forward(self._forward_args(a.stage, a.microbatch, state))
            self._forwarded(a.stage, a.microbatch, saved, state)
            return pieces
        if a.op in (Op.B, Op.I):
            saved, grad = self._backward_args(a.stage, a.microbatch, state)
            x_grad, pieces = self.stages.backward(saved, grad, a.op.value)
            if a.op is Op.I:
                state.pending_w[(a.stage, a.microbatch)] = saved
            self._backwarded(a.stage, a.microbatch, x_grad, state)
            return pieces
        if a.op is Op.W:
            return self.stages.weights(state.pending_w.pop((a.stage, a.microbatch)))
        if a.op is Op.FB:
            f, b = a.forward, a.backward
            fargs = self._forward_args(f.stage, f.microbatch, state)
            bargs = self._backward_args(b.stage, b.microbatch, state)
            saved, x_grad, pieces = self.stages.fb(fargs, bargs)
            self._forwarded(f.stage, f.microbatch, saved, state)
            self._backwarded(b.stage, b.microbatch, x_grad, state)
            return pieces
        raise AssertionError(f"not a compute action: {a}")

    def _forward_args(self, stage: int, mb: int, state: StepState) -> tuple[Any, ...]:
        src = self._input(Action(Op.F, stage, mb), state.local_f, state.recv_f)
        x = self.tokens[mb] if src is None else src.detach().requires_grad_()
        last = destination(Key(Kind.FORWARD, stage, mb), self.nb) < 0  # the chain's end: loss
        targets = self.targets[mb] if last else None
        return stage, x, targets, (stage, mb) in self.split_backward

    def _forwarded(self, stage: int, mb: int, saved: Any, state: StepState) -> None:
        out = self.stages.output(saved)
        target = self._output(Key(Kind.FORWARD, stage, mb), state.local_f, state.to_send_f)
        if target is None:  # the chain's end: the loss
            state.loss += float(out.detach())
        else:
            target[(stage, mb)] = out.detach()
        state.saved[(stage, mb)] = saved

    def _backward_args(self, stage: int, mb: int, state: StepState) -> tuple[Any, Any]:
        saved = state.saved.pop((stage, mb))
        return saved, self._input(Action(Op.B, stage, mb), state.local_b, state.recv_b)

    def _backwarded(self, stage: int, mb: int, x_grad: torch.Tensor | None,
                    state: StepState) -> None:
        target = self._output(Key(Kind.BACKWARD, stage, mb), state.local_b, state.to_send_b)
        if target is not None:
            assert x_grad is not None
            target[(stage, mb)] = x_grad

    def _input(self, part: Action, local: dict[tuple[int, int], torch.Tensor],
               received: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor | None:
        """What ``part`` needs from a neighbour stage (:func:`dualsim.deps.needs`): received by
        a RECV, or left by that stage on this rank; None when its chain has no such stage."""
        for need in needs(part, self.nb, lowered=True):
            if need.rule == "recv":
                return received.pop((part.stage, part.microbatch))
            if need.key.stage != part.stage:
                return local.pop((need.key.stage, part.microbatch))
        return None

    def _output(self, key: Key, local: dict[tuple[int, int], torch.Tensor],
                to_send: dict[tuple[int, int], torch.Tensor]
                ) -> dict[tuple[int, int], torch.Tensor] | None:
        """Where product ``key`` goes (:func:`dualsim.deps.destination`): None when no stage
        needs it, ``local`` when the stage needing it is on this rank, else ``to_send``."""
        stage = destination(key, self.nb)
        if stage < 0:
            return None
        return local if self.nb.rank[stage] == self.rank else to_send

    # ---- sums ---------------------------------------------------------------------------
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
        sends = [Message(True, self._peer(other), flat[stage])
                 for stage in flat for other in copies[stage]]
        recvs = [(stage, Message(False, self.world.process(peer, self.ep_index),
                                 torch.empty_like(flat[stage])))
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

    def _sum_dense(self) -> None:
        """Expert parallelism: the rank's processes sum their non-expert gradients."""
        if self.ep_group is None:
            return
        self.progress.update(self.step_index, len(self.actions), SYNCING)
        sum_dense_grads(self.modules, self.ep_group, staging=self.staging)

    # ---- results ----------------------------------------------------------------------------
    def named_tensors(self, grads: bool) -> dict[tuple[int, int, str], torch.Tensor]:
        """(stage, position, name) -> gradient or weight, on the CPU."""
        return named_tensors(self.modules, grads)

