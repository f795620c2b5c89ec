"""Remove pass-through nodes: Identity, Dropout (inference: identity), Cast to the input's own
dtype, and arithmetic with a neutral constant that does not broadcast x to a larger shape:
x + 0, x − 0, 0 + x, x · 1, 1 · x, x / 1 (float x).  Such constants are what randomly
initialised or pruned models hold (LeViT's zero-initialised attention biases: quantizing
an all-zero operand would need a grid for a range of width 0).  Graph output names are
preserved (see edit.bypass); a pass-through between a graph input and a graph output stays."""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import bypass
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import Inference, infer

# op -> (neutral value, constant positions for which x op c == x)
_NEUTRAL = {"Add": (0.0, (0, 1)), "Sub": (0.0, (1,)), "Mul": (1.0, (0, 1)), "Div": (1.0, (1,))}


def _neutral_operand(node: Node, graph: Graph, inf: Inference) -> str | None:
    """x when node is x (op) c with c a neutral constant that leaves x's shape and dtype."""
    if node.op not in _NEUTRAL or len(node.inputs) != 2 or "act" in node.attrs:
        return None
    value, positions = _NEUTRAL[node.op]
    for k in positions:
        c = graph.constants.get(node.inputs[k])
        x = node.inputs[1 - k]
        if c is None or x in graph.constants:
            continue
        xs = inf.shapes.get(x)
        if xs is None or inf.dtypes.get(x) != "float32" or c.dtype.kind != "f" or c.ndim > len(xs):
            continue
        cs = (1,) * (len(xs) - c.ndim) + c.shape
        if any(d != 1 and d != s for d, s in zip(cs, xs)) or not np.all(c == value):
            continue
        return x
    return None


def run(graph: Graph) -> Graph:
    inf = infer(graph)
    dtypes = inf.dtypes
    for node in list(graph.nodes):
        if node.op in ("Identity", "Dropout") or (
                node.op == "Cast" and dtypes.get(node.inputs[0]) == node.attrs["to"]):
            bypass(graph, node)
            continue
        x = _neutral_operand(node, graph, inf)
        if x is not None:
            inputs, node.inputs = node.inputs, [x]      # bypass passes the first input through
            if not bypass(graph, node):
                node.inputs = inputs
    return graph
