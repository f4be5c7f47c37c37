"""The runtime's piece chains: what :mod:`dualsim.overlap_order` orders, and their names.

A layer slice of the runtime's model, seen as the hardware model's units: each MoE layer is
``attn`` (then the ``dispatch`` all-to-all) and ``mlp`` (then ``combine``), and the slice ends
with one more compute piece, ``head`` on the last slice (final norm, LM head, loss) or ``post``
elsewhere (the last combine added to the residual stream). Nothing here imports torch: the
runtime (:mod:`pieces`) runs these chains, :mod:`measure` replays them with measured durations.
"""

from __future__ import annotations

from dualsim.overlap_order import Node, backward_chain, forward_chain


def units(layers: int, last: bool) -> list[list[tuple[str, str | None]]]:
    """The slice's units for :mod:`dualsim.overlap_order`: its MoE layers, then head or post."""
    return [[("attn", "dispatch"), ("mlp", "combine")]] * layers + \
        [[("head" if last else "post", None)]]


def slice_chains(layers: int, last: bool) -> tuple[list[Node], list[Node]]:
    """(forward chain, backward chain) of a slice with ``layers`` MoE layers."""
    u = units(layers, last)
    return forward_chain(u), backward_chain(u)


def with_layers(chain: list[Node], layers: int, backward: bool) -> list[tuple[Node, int]]:
    """Each node of a chain with its layer (block index in the slice; -1 for head/post).

    A name repeats once per layer: in model order in a forward chain, reversed in a backward one.
    """
    seen: dict[str, int] = {}
    out = []
    for n in chain:
        if n.name.split("_")[0] in ("head", "post"):
            out.append((n, -1))
            continue
        k = seen.get(n.name, 0)
        seen[n.name] = k + 1
        out.append((n, layers - 1 - k if backward else k))
    return out


def trace_name(node: Node) -> str:
    """A piece's profiler range name, as in DeepSeek's trace: ``attn(F)``, ``mlp(B)`` (the
    input-gradient piece), ``attn(W)``, ``combine(B)`` (the backward of the combine)."""
    if node.name.endswith("_bwd"):
        return f"{node.name[:-4]}(B)"
    if node.name.endswith("_w"):
        return f"{node.name[:-2]}(W)"
    return f"{node.name}(F)"
