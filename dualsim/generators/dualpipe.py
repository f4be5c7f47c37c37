"""DualPipe (DeepSeek-V3) and DualPipeV ("cut-in-half" DualPipe), docs/schedules.md.

One rank's DualPipe order only depends on h = min(r, R-1-r) and on which stage and micro-batches
are "near" (the chain entering on this rank's half) and "far". DualPipeV rank r is DualPipe(2R, 2M)
rank r with the far stage 4R-1-r renamed 2R-1-r and the far micro-batch M+k renamed k; the
relabelling is done by handing the renamed stages and micro-batch offsets to ``rank_order``.
"""

from __future__ import annotations

from collections import deque

from dualsim.generators import placement
from dualsim.ir import Action, B, F, I, Schedule, W

NEAR, FAR = 0, 1


def rank_order(ranks: int, microbatches: int, h: int, stages: tuple[int, int],
               first_mb: tuple[int, int]) -> list[Action]:
    """The order of a DualPipe(ranks, microbatches) rank at distance h from the nearer end.

    ``stages`` = (near stage, far stage) and ``first_mb`` = (first micro-batch of the near
    chain, of the far chain) are the labels to use, so DualPipeV can reuse this unchanged.
    """
    half = ranks // 2
    per_chain = microbatches // 2
    fwd = [first_mb[NEAR], first_mb[FAR]]
    bwd = [first_mb[NEAR], first_mb[FAR]]
    pending_w: deque[tuple[int, int]] = deque()  # (stage, mb) of each I, oldest first
    order: list[Action] = []

    def forward(side: int) -> Action:
        m = fwd[side]
        fwd[side] = m + 1
        return F(stages[side], m)

    def backward(side: int) -> Action:
        m = bwd[side]
        bwd[side] = m + 1
        return B(stages[side], m)

    def input_grad(side: int) -> None:
        m = bwd[side]
        bwd[side] = m + 1
        order.append(I(stages[side], m))
        pending_w.append((stages[side], m))

    def weight_grad() -> None:
        order.append(W(*pending_w.popleft()))

    outer = half - h - 1  # repeats of steps 1 (halved), 3, 5 and 7
    # step 1: near forwards
    for _ in range(2 * outer):
        order.append(forward(NEAR))
    # step 2: near and far forwards alternating
    for _ in range(h + 1):
        order.append(forward(NEAR))
        order.append(forward(FAR))
    # step 3: first far backwards, split, and far forwards
    for _ in range(outer):
        input_grad(FAR)
        weight_grad()
        order.append(forward(FAR))
    # step 4: main phase, overlapped pairs; the middle ranks start with a plain F and B
    for i in range(per_chain - ranks + h + 1):
        if i == 0 and h == half - 1:
            order.append(forward(NEAR))
            order.append(backward(FAR))
        else:
            order.append(Action.fb(forward(NEAR), backward(FAR)))
        order.append(Action.fb(forward(FAR), backward(NEAR)))
    # step 5: far backwards interleaved with the last far forwards
    for _ in range(outer):
        order.append(backward(FAR))
        order.append(Action.fb(forward(FAR), backward(NEAR)))
    # step 6: far and near backwards alternating, the first h+1 full, the last h+1 input-only
    for j in range(2 * (h + 1)):
        side = FAR if j % 2 == 0 else NEAR
        if j < h + 1:
            order.append(backward(side))
        else:
            input_grad(side)
    # step 7: weight gradients interleaved with the last near backwards
    for _ in range(outer):
        weight_grad()
        input_grad(NEAR)
    # step 8: the remaining weight gradients
    while pending_w:
        weight_grad()
    return order


def build(ranks: int, microbatches: int) -> Schedule:
    """DualPipe: R even, M even, M >= 2R."""
    half_m = microbatches // 2
    rows = []
    for r in range(ranks):
        chain0, chain1 = r, 2 * ranks - 1 - r  # this rank's stages of chain 0 and chain 1
        if r < ranks // 2:
            labels, first = (chain0, chain1), (0, half_m)
        else:
            labels, first = (chain1, chain0), (half_m, 0)
        rows.append(tuple(rank_order(ranks, microbatches, min(r, ranks - 1 - r), labels, first)))
    chains = (tuple(range(half_m)), tuple(range(half_m, microbatches)))
    return Schedule("dualpipe", ranks, microbatches, placement.dualpipe(ranks), chains,
                    tuple(rows))


def build_v(ranks: int, microbatches: int) -> Schedule:
    """DualPipeV: rank r of DualPipe(2R, 2M), relabelled onto a V of 2R stages. M >= 2R."""
    rows = tuple(
        tuple(rank_order(2 * ranks, 2 * microbatches, r, (r, 2 * ranks - 1 - r), (0, 0)))
        for r in range(ranks)
    )
    return Schedule("dualpipev", ranks, microbatches, placement.vshape(ranks),
                    (tuple(range(microbatches)),), rows)
