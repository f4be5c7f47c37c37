"""The runtime's model and I/W split, in one process (no ranks spawned)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dualsim.runtime import wgrad  # noqa: E402
from dualsim.runtime.net import NetConfig, StageNet, loss_fn, make_batch  # noqa: E402

CFG = NetConfig(layers_per_slice=2)


def _slices(split: bool, positions: int = 3) -> list[StageNet]:
    return [StageNet(CFG, k, positions, split=split) for k in range(positions)]


def test_copies_of_a_slice_start_identical_and_slices_differ() -> None:
    a, b = StageNet(CFG, 1, 3), StageNet(CFG, 1, 3, split=False)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    c = StageNet(CFG, 2, 3)
    assert not torch.equal(a.blocks[0].qkv, c.blocks[0].qkv)
    other_seed = StageNet(NetConfig(layers_per_slice=2, seed=1), 1, 3)
    assert not torch.equal(a.blocks[0].qkv, other_seed.blocks[0].qkv)


def test_slices_hold_embedding_blocks_and_head() -> None:
    first, mid, last = _slices(True)
    assert hasattr(first, "tok_emb") and not hasattr(first, "head")
    assert not hasattr(mid, "tok_emb") and not hasattr(mid, "head")
    assert hasattr(last, "head") and len(last.blocks) == 2
    tokens, _ = make_batch(CFG, 1, 0)
    x = tokens[0]
    for s in (first, mid, last):
        x = s(x)
    assert x.shape == (CFG.microbatch_size, CFG.seq, CFG.vocab)


def test_moe_routes_tokens_to_several_experts() -> None:
    block = StageNet(CFG, 1, 3).blocks[0]
    x = torch.randn(4, CFG.seq, CFG.hidden, dtype=torch.float64)
    scores = torch.nn.functional.linear(x.reshape(-1, CFG.hidden), block.router).softmax(-1)
    used = scores.topk(CFG.top_k, -1).indices.unique()
    assert len(used) > 1  # the router really spreads tokens


def _grads(slices: list[StageNet]) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for s in slices for p in s.parameters()]


def _step(slices: list[StageNet], defer: bool) -> tuple[list[torch.Tensor], list[object]]:
    """Forward + backward of one micro-batch; with defer, I then W on each slice."""
    tokens, targets = make_batch(CFG, 1, 0)
    stashes, outs = [], []
    x = tokens[0]
    inputs = []
    for s in slices:
        x_in = x if s.first else x.detach().requires_grad_()
        inputs.append(x_in)
        st = wgrad.WeightGradStash()
        with s.ops.recording(st):
            x = s(x_in)
        stashes.append(st)
        outs.append(x)
    grad = None
    after_i = []
    for k in reversed(range(len(slices))):
        out = loss_fn(outs[k], targets[0]) if k == len(slices) - 1 else outs[k]
        stashes[k].defer = defer
        torch.autograd.backward(out, grad_tensors=grad)
        after_i.append([p.grad for p in slices[k].parameters()])
        grad = inputs[k].grad
    for st in stashes:
        st.flush()
    return _grads(slices), after_i


def test_i_then_w_equals_full_backward_equals_plain_autograd() -> None:
    plain, _ = _step(_slices(False), defer=False)
    full, _ = _step(_slices(True), defer=False)
    split, after_i = _step(_slices(True), defer=True)
    assert all(g is None for grads in after_i for g in grads)  # I computed no weight gradient
    for a, b, c in zip(plain, full, split):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-14)
        torch.testing.assert_close(c, a, rtol=0, atol=1e-14)
    assert sum(float(g.abs().sum()) for g in plain) > 0


def test_w_runs_only_weight_closures() -> None:
    s = StageNet(CFG, 1, 3)
    x = torch.randn(2, CFG.seq, CFG.hidden, dtype=torch.float64, requires_grad=True)
    st = wgrad.WeightGradStash()
    with s.ops.recording(st):
        y = s(x)
    st.defer = True
    y.sum().backward()
    assert x.grad is not None and len(st.pending) > 0
    assert all(p.grad is None for p in s.parameters())
    n_params = sum(1 for _ in s.parameters())
    assert len(st.pending) <= n_params  # one closure per parameter op (biases share one)
    st.flush()
    assert st.pending == []
    block = s.blocks[0]
    for p in (block.qkv, block.proj, block.router, block.shared_up, block.attn_norm):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_bad_model_options_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of heads"):
        NetConfig(hidden=30, heads=4)
    with pytest.raises(ValueError, match="top_k"):
        NetConfig(experts=2, top_k=3)
