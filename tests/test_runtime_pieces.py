"""The MoE routing rule, dispatch plans, and passes run piece by piece, in one process.

With an expert-parallel group of one process the all-to-alls send nothing, so the piece
machinery (per-piece autograd, I/W split per piece, the FB order) is checked here against plain
autograd exactly; the multi-process runs are in test_runtime_correctness.py.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dualsim.overlap_order import fb_order  # noqa: E402
from dualsim.runtime.a2a import ExpertComm  # noqa: E402
from dualsim.runtime.clock import StepClock  # noqa: E402
from dualsim.runtime.moe import Dispatch, Routing, capacity, keep_mask  # noqa: E402
from dualsim.runtime.net import NetConfig, StageNet, grad_or_zeros, loss_fn, make_batch  # noqa: E402
from dualsim.runtime.stages import PieceStages  # noqa: E402

POSITIONS = 3
CFG = NetConfig(layers_per_slice=2, capacity_factor=1.0)


def test_capacity_rule_keeps_first_choices_first() -> None:
    assert capacity(8, 2, 4, 1.0) == 4 and capacity(8, 2, 4, None) is None
    experts = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0]])
    # choice-major order: first choices 0, 0, 0, 1 then second choices 1, 2, 1, 0; capacity 2
    keep = keep_mask(experts, 3, 2)
    assert keep.tolist() == [[True, True], [True, True], [False, False], [True, False]]
    assert keep_mask(experts, 3, None).all()


def test_dispatch_plan_sorts_copies_by_expert_and_counts_rows() -> None:
    experts = torch.tensor([[0, 3], [2, 1], [3, 0]])
    routing = Routing(torch.ones(3, 2) / 2, experts, torch.ones(3, 2, dtype=torch.bool))
    d = Dispatch.plan(routing, num_experts=4, ep=2)
    assert d.token.tolist() == [0, 2, 1, 1, 0, 2]  # experts 0, 0, 1, 2, 3, 3
    assert d.slot.tolist() == [0, 1, 1, 0, 1, 0]
    assert d.send_counts.tolist() == [[2, 1], [1, 2]] and d.send_splits == [3, 3]
    got = d.received(torch.tensor([[1, 0], [2, 1]]))
    assert got.recv_splits == [1, 3]
    assert got.local_experts().tolist() == [0, 0, 0, 1]


def test_capacity_factor_one_drops_copies_of_the_default_model() -> None:
    # the runs with --capacity-factor 1 below really exercise dropping
    net = StageNet(CFG, 1, POSITIONS, split=False)
    x = torch.randn(CFG.microbatch_size, CFG.seq, CFG.hidden, dtype=torch.float64)
    _, tokens, scores = net.blocks[0].attention_and_scores(x)
    weights, experts = scores.topk(CFG.top_k, -1)
    cap = capacity(tokens.shape[0], CFG.top_k, CFG.experts, 1.0)
    assert not keep_mask(experts, CFG.experts, cap).all()


def _reference(microbatches: int) -> tuple[list[StageNet], float]:
    nets = [StageNet(CFG, k, POSITIONS, split=False) for k in range(POSITIONS)]
    tokens, targets = make_batch(CFG, microbatches, 0)
    total = 0.0
    for m in range(microbatches):
        x = tokens[m]
        for n in nets:
            x = n(x)
        loss = loss_fn(x, targets[m]) / microbatches
        loss.backward()
        total += float(loss.detach())
    return nets, total


def _assert_grads_equal(ref: list[StageNet], run: list[StageNet]) -> None:
    checked = 0
    for a, b in zip(ref, run):
        named = dict(b.named_parameters())
        for name, p in a.named_parameters():
            torch.testing.assert_close(grad_or_zeros(named[name]), grad_or_zeros(p),
                                       rtol=0, atol=1e-14)
            checked += 1
    assert checked > 20


def _stages() -> tuple[list[StageNet], PieceStages]:
    nets = [StageNet(CFG, k, POSITIONS) for k in range(POSITIONS)]
    clock = StepClock(torch.device("cpu"))
    clock.start()
    comm = ExpertComm(None, 1, 0, torch.device("cpu"), False, clock)
    return nets, PieceStages(dict(enumerate(nets)), 0.5, comm)


def test_pieces_b_and_i_then_w_equal_plain_autograd() -> None:
    ref, ref_loss = _reference(2)
    nets, stages = _stages()
    tokens, targets = make_batch(CFG, 2, 0)
    passes, loss = {}, 0.0
    for m in range(2):
        x = tokens[m]
        for k in range(POSITIONS):
            p, times = stages.forward((k, x, targets[m] if k == POSITIONS - 1 else None, True))
            assert [t.name for t in times if t.stream == "compute"] == \
                ["attn", "mlp", "attn", "mlp", "head" if k == POSITIONS - 1 else "post"]
            passes[(k, m)] = p
            x = p.output.detach()
        loss += float(x)
    qkv = nets[1].blocks[0].qkv
    after_b = None
    for m, unit in ((0, "B"), (1, "I")):  # micro-batch 1: I now, W after both backwards
        grad = None
        for k in reversed(range(POSITIONS)):
            grad, _ = stages.backward(passes[(k, m)], grad, unit)
            assert (grad is None) == (k == 0)
        if m == 0:
            after_b = qkv.grad.clone()
    assert torch.equal(qkv.grad, after_b)  # I added no weight gradient
    for k in range(POSITIONS):
        stages.weights(passes[(k, 1)])
    assert loss == pytest.approx(ref_loss, abs=1e-14)
    _assert_grads_equal(ref, nets)


def test_fb_runs_pieces_in_the_shared_order_and_matches_plain_autograd() -> None:
    ref, _ = _reference(2)
    nets, stages = _stages()
    tokens, targets = make_batch(CFG, 2, 0)
    last = POSITIONS - 1

    def target(k: int, m: int) -> torch.Tensor | None:
        return targets[m] if k == last else None

    p0, x1 = {}, tokens[1]
    x = tokens[0]
    for k in range(POSITIONS):  # micro-batch 0 forward
        p0[k], _ = stages.forward((k, x, target(k, 0), True))
        x = p0[k].output.detach()
    p1 = {0: stages.forward((0, x1, None, True))[0]}
    grad = None
    # FB: forward of micro-batch 1 on slice j + 1 with the backward of micro-batch 0 on the
    # slice 2 - j
    for j in range(2):
        f = (j + 1, p1[j].output.detach(), target(j + 1, 1), True)
        pb = p0[last - j]
        p1[j + 1], grad, times = stages.fb(f, (pb, grad))
        order = fb_order([n for n, _ in p1[j + 1].chain("F")], [n for n, _ in pb.chain("B")])
        chains = [p1[j + 1].chain("F"), pb.chain("B")]
        expected = [(s.half, chains[s.half][s.node][0].name) for s in order.compute]
        assert [(t.half, t.name) for t in times if t.stream == "compute"] == expected
        assert {t.name for t in times if t.stream == "a2a"} == \
            {"dispatch", "combine", "combine_bwd", "dispatch_bwd"}
    stages.backward(p0[0], grad, "B")
    grad = None
    for k in reversed(range(POSITIONS)):
        grad, _ = stages.backward(p1[k], grad, "B")
    _assert_grads_equal(ref, nets)
