"""Remove nodes none of whose outputs is used (by a node or as a graph output), and constants
no node reads (constants that are graph outputs stay)."""

from __future__ import annotations

from nqrt.graph.ir import Graph


def run(graph: Graph) -> Graph:
    needed = set(graph.output_names())
    kept = []
    for node in reversed(graph.nodes):
        if any(o in needed for o in node.outputs):
            kept.append(node)
            needed.update(i for i in node.inputs if i)
    graph.nodes = kept[::-1]
    graph.constants = {k: v for k, v in graph.constants.items() if k in needed}
    return graph
