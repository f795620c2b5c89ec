"""Remove pass-through nodes: Identity, Dropout (inference: identity), Cast to the input's own
dtype.  Graph output names are preserved (see edit.bypass); a pass-through between a graph
input and a graph output stays."""

from __future__ import annotations

from nqrt.graph.edit import bypass
from nqrt.graph.ir import Graph
from nqrt.graph.shapes import infer


def run(graph: Graph) -> Graph:
    dtypes = infer(graph).dtypes
    for node in list(graph.nodes):
        if node.op in ("Identity", "Dropout") or (
                node.op == "Cast" and dtypes.get(node.inputs[0]) == node.attrs["to"]):
            bypass(graph, node)
    return graph
