"""The piece order shared by the simulator and the runtime (dualsim/overlap_order.py)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from dualsim.overlap_order import (COMM, Node, Order, backward_chain, fb_order, forward_chain,
                                   only_w, plain_order, without_w)

MOE = [("attn", "dispatch"), ("mlp", "combine")]
DENSE = [("attn", None), ("mlp", None)]
HEAD = [("head", None)]


def _names(order: Order, chains: list[list[Node]]) -> tuple[list, list]:
    """(compute [(name, waits-for name)], comm [(name, after name)]) of an order."""
    comp = [chains[s.half][s.node].name for s in order.compute]
    comm = [chains[s.half][s.node].name for s in order.comm]
    return ([(n, comm[s.waits] if s.waits >= 0 else None) for n, s in zip(comp, order.compute)],
            [(n, comp[s.after] if s.after >= 0 else None) for n, s in zip(comm, order.comm)])


def test_chains_of_a_moe_stage() -> None:
    fwd = forward_chain([MOE, HEAD])
    assert [(n.stream, n.name) for n in fwd] == [
        ("compute", "attn"), ("comm", "dispatch"), ("compute", "mlp"), ("comm", "combine"),
        ("compute", "head")]
    bwd = backward_chain([MOE, HEAD])
    assert [n.name for n in bwd] == ["head_bwd", "head_w", "combine_bwd", "mlp_bwd", "mlp_w",
                                     "dispatch_bwd", "attn_bwd", "attn_w"]
    assert [n.name for n in bwd if n.is_w] == ["head_w", "mlp_w", "attn_w"]
    assert [n.name for n in without_w(bwd)] == ["head_bwd", "combine_bwd", "mlp_bwd",
                                                "dispatch_bwd", "attn_bwd"]
    assert [n.name for n in only_w(bwd)] == ["head_w", "mlp_w", "attn_w"]


def test_plain_b_all_to_all_waits_for_the_input_gradient_only() -> None:
    bwd = backward_chain([MOE, HEAD])
    comp, comm = _names(plain_order(bwd), [bwd])
    assert comp == [("head_bwd", None), ("head_w", None), ("mlp_bwd", "combine_bwd"),
                    ("mlp_w", None), ("attn_bwd", "dispatch_bwd"), ("attn_w", None)]
    # combine_bwd follows head_bwd (not head_w); dispatch_bwd follows mlp_bwd (not mlp_w):
    # the W piece after each I runs while that all-to-all is in flight
    assert comm == [("combine_bwd", "head_bwd"), ("dispatch_bwd", "mlp_bwd")]


def test_plain_forward_is_strictly_sequential() -> None:
    fwd = forward_chain([MOE, MOE])
    comp, comm = _names(plain_order(fwd), [fwd])
    assert comp == [("attn", None), ("mlp", "dispatch"), ("attn", "combine"), ("mlp", "dispatch")]
    assert comm == [("dispatch", "attn"), ("combine", "mlp"), ("dispatch", "attn"),
                    ("combine", "mlp")]


def test_fb_interleaves_like_deepseek_and_megatron() -> None:
    # One MoE layer on each half: Megatron-Core's TransformerLayerSchedulePlan.run order,
    # comm: combine_bwd | dispatch -> dispatch_bwd | combine;
    # compute: attn | mlp_bwd -> mlp_w -> mlp | attn_bwd -> attn_w
    fwd, bwd = forward_chain([MOE]), backward_chain([MOE])
    order = fb_order(fwd, bwd)
    comp, comm = _names(order, [fwd, bwd])
    assert comp == [("attn", None), ("mlp_bwd", "combine_bwd"), ("mlp_w", None),
                    ("mlp", "dispatch"), ("attn_bwd", "dispatch_bwd"), ("attn_w", None)]
    assert comm == [("combine_bwd", None), ("dispatch", "attn"), ("dispatch_bwd", "mlp_bwd"),
                    ("combine", "mlp")]
    assert [s.half for s in order.compute] == [0, 1, 1, 0, 1, 1]
    assert order.signals == frozenset({0, 1, 3})


def test_fb_with_unequal_halves_runs_the_longer_half_to_the_end() -> None:
    fwd, bwd = forward_chain([MOE, MOE, HEAD]), backward_chain([DENSE])
    order = fb_order(fwd, bwd)
    comp, _ = _names(order, [fwd, bwd])
    assert [n for n, _ in comp] == ["attn", "mlp_bwd", "mlp_w", "mlp", "attn_bwd", "attn_w",
                                    "attn", "mlp", "head"]


def _check_no_deadlock(order: Order, chains: list[list[Node]]) -> None:
    """Every wait points backwards in the other stream's order; each chain keeps its order."""
    for i, s in enumerate(order.compute):
        if s.waits >= 0:
            after = order.comm[s.waits].after
            assert after < i
    afters = [s.after for s in order.comm]
    assert afters == sorted(afters)
    for h, chain in enumerate(chains):
        seen = [s.node for s in order.compute if s.half == h]
        assert seen == sorted(seen)
        assert sorted(seen + [s.node for s in order.comm if s.half == h]) == list(range(len(chain)))


PIECE = st.tuples(st.sampled_from(["attn", "mlp", "head"]),
                  st.sampled_from([None, "dispatch", "combine"]))
UNITS = st.lists(st.lists(PIECE, min_size=1, max_size=3), min_size=0, max_size=4)


@settings(max_examples=80, deadline=None)
@given(f=UNITS, b=UNITS)
def test_orders_never_deadlock(f, b) -> None:
    fwd, bwd = forward_chain(f), backward_chain(b)
    _check_no_deadlock(fb_order(fwd, bwd), [fwd, bwd])
    for chain in (fwd, bwd, without_w(bwd), only_w(bwd)):
        order = plain_order(chain)
        _check_no_deadlock(order, [chain])
        assert all(chain[s.node].stream == COMM for s in order.comm)
