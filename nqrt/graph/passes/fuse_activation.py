"""Fuse Relu / Clip into the producer: producer.attrs["act"] = (lo, hi).

A Relu is (0, +inf), Clip(min, max) is (min, max) (Relu6 = (0, 6)); an existing act is
intersected.  Fusion needs: the producer op in FUSABLE, its output read by this activation
only, and not a graph output.  Between the producer and the activation there may be pure
data movement (MOVES: Reshape, Transpose, ... — a PixelShuffle's depth-to-space): a clamp
commutes with moving values, so Relu(Move(Conv(x))) = Move(Conv(x) clamped), provided each
moved tensor is read once and is not a graph output.  Otherwise the activation stays a node.
"""

from __future__ import annotations

from nqrt.graph.ir import Graph

FUSABLE = frozenset({"Conv", "ConvTranspose", "Gemm", "Add", "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum", "MaxPool"})
MOVES = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice"})


def _bounds(node) -> tuple[float, float]:
    if node.op == "Relu":
        return 0.0, float("inf")
    return float(node.attrs["min"]), float(node.attrs["max"])


def run(graph: Graph) -> Graph:
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = set(graph.output_names())
    for node in list(graph.nodes):
        if node.op not in ("Relu", "Clip"):
            continue
        x = node.inputs[0]
        p = producers.get(x)
        moves = []                     # movement nodes between the producer and the activation
        while p is not None and p.op in MOVES and x not in outputs and len(consumers.get(x, [])) == 1:
            moves.append(p)
            x = p.inputs[0]
            p = producers.get(x)
        if p is None or p.op not in FUSABLE or x in outputs or len(consumers.get(x, [])) != 1:
            continue
        lo, hi = _bounds(node)
        if "act" in p.attrs:
            lo, hi = max(lo, p.attrs["act"][0]), min(hi, p.attrs["act"][1])
        p.attrs["act"] = (lo, hi)
        last = moves[0] if moves else p        # the node whose output the activation read
        last.outputs[0] = node.outputs[0]
        producers[node.outputs[0]] = last
        graph.nodes.remove(node)
    return graph
