"""Lower InstanceNormalization to ops the converter has:

  InstanceNormalization(x, scale[C], B[C])  (x: [N, C, D1, ...], rank >= 3)
    -> LayerNormalization(x, 1, 0, axis=2)      per (n, c): over the spatial dims, in float
       Mul(·, scale[C, 1, ...]); Add(·, B[C, 1, ...])   a channel affine: fold_batchnorm makes
                                                        it one depthwise 1x1 conv (integer)

ONNX's InstanceNormalization is exactly LayerNormalization over axes 2.. with a per-channel
scale and bias applied afterwards (ONNX: y = scale · (x − mean) / sqrt(var + epsilon) + B).
Applying them after the normalization (on its quantized output, once converted) changes only
roundings.  Nodes whose scale or B is not a constant, or whose input rank is unknown, are left
alone (the converter then reports them as unsupported).
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer


def run(graph: Graph) -> Graph:
    if not any(n.op == "InstanceNormalization" for n in graph.nodes):
        return graph
    inf = infer(graph)
    names = NameGen(graph)
    out: list[Node] = []
    for node in graph.nodes:
        xs = inf.shapes.get(node.inputs[0]) if node.inputs else None
        if (node.op != "InstanceNormalization" or len(node.inputs) != 3
                or any(t not in graph.constants for t in node.inputs[1:]) or xs is None or len(xs) < 3):
            out.append(node)
            continue
        x, y = node.inputs[0], node.outputs[0]
        base = node.name or y
        per_channel = (-1,) + (1,) * (len(xs) - 2)
        one, zero, sc, bc = (names(f"{base}_{k}") for k in ("one", "zero", "scale", "bias"))
        graph.constants[one] = np.ones(1, np.float32)
        graph.constants[zero] = np.zeros(1, np.float32)
        graph.constants[sc] = np.asarray(graph.constants[node.inputs[1]], np.float32).reshape(per_channel)
        graph.constants[bc] = np.asarray(graph.constants[node.inputs[2]], np.float32).reshape(per_channel)
        t, u = names(f"{y}_normalized"), names(f"{y}_scaled")
        eps = float(node.attrs.get("epsilon", 1e-5))
        out += [Node("LayerNormalization", [x, one, zero], [t], {"axis": 2, "epsilon": eps},
                     f"{base}/normalize"),
                Node("Mul", [t, sc], [u], {}, f"{base}/scale"),
                Node("Add", [u, bc], [y], {}, base)]
    graph.nodes = out
    return graph
