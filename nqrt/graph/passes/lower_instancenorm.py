"""Lower InstanceNormalization and GroupNormalization to ops the converter has:

  InstanceNormalization(x, scale[C], B[C])  (x: [N, C, D1, ...], rank >= 3)
    -> LayerNormalization(x, 1, 0, axis=2)      per (n, c): over the spatial dims, in float
       Mul(·, scale[C, 1, ...]); Add(·, B[C, 1, ...])   a channel affine: fold_batchnorm makes
                                                        it one depthwise 1x1 conv (integer)

ONNX's InstanceNormalization is exactly LayerNormalization over axes 2.. with a per-channel
scale and bias applied afterwards (ONNX: y = scale · (x − mean) / sqrt(var + epsilon) + B).
Applying them after the normalization (on its quantized output, once converted) changes only
roundings.

  GroupNormalization(x, scale, B, num_groups=G)   (x: [N, C, D1, ...], C and the Di known)
    -> Reshape(x, [0, G, -1]); LayerNormalization(·, 1, 0, axis=2); Reshape(·, x.shape);
       Mul(·, scale[C, 1, ...]); Add(·, B[C, 1, ...])

the statistics of each group of C/G channels over those channels and the spatial dims (ONNX
GroupNormalization; opset 18's per-group scale and B are repeated per channel).  PyTorch's
dynamo exporter writes nn.GroupNorm this way at opset 21 (earlier exports already use an
InstanceNormalization between two Reshapes).  G = C is an InstanceNormalization.

Nodes whose scale or B is not a constant, or whose input rank (GroupNormalization: C and the
spatial dims) is unknown, are left alone (the converter then reports them as unsupported).
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer, is_int


def _group_norm_ok(node: Node, xs) -> bool:
    g = int(node.attrs["num_groups"])
    return all(is_int(d) for d in xs[1:]) and int(xs[1]) % g == 0


def run(graph: Graph) -> Graph:
    if not any(n.op in ("InstanceNormalization", "GroupNormalization") for n in graph.nodes):
        return graph
    inf = infer(graph)
    names = NameGen(graph)
    out: list[Node] = []
    for node in graph.nodes:
        xs = inf.shapes.get(node.inputs[0]) if node.inputs else None
        if (node.op not in ("InstanceNormalization", "GroupNormalization") or len(node.inputs) != 3
                or any(t not in graph.constants for t in node.inputs[1:]) or xs is None or len(xs) < 3
                or (node.op == "GroupNormalization" and not _group_norm_ok(node, xs))):
            out.append(node)
            continue
        x, y = node.inputs[0], node.outputs[0]
        base = node.name or y
        per_channel = (-1,) + (1,) * (len(xs) - 2)
        one, zero, sc, bc = (names(f"{base}_{k}") for k in ("one", "zero", "scale", "bias"))
        graph.constants[one] = np.ones(1, np.float32)
        graph.constants[zero] = np.zeros(1, np.float32)
        scale = np.asarray(graph.constants[node.inputs[1]], np.float32).reshape(-1)
        bias = np.asarray(graph.constants[node.inputs[2]], np.float32).reshape(-1)
        groups = int(node.attrs.get("num_groups", 0)) if node.op == "GroupNormalization" else 0
        if groups and node.attrs.get("per_group", 0):
            scale, bias = np.repeat(scale, int(xs[1]) // groups), np.repeat(bias, int(xs[1]) // groups)
        graph.constants[sc] = scale.reshape(per_channel)
        graph.constants[bc] = bias.reshape(per_channel)
        t, u = names(f"{y}_normalized"), names(f"{y}_scaled")
        eps = float(node.attrs.get("epsilon", 1e-5))
        if groups and groups != int(xs[1]):
            grouped, back = names(f"{y}_groups"), names(f"{y}_ungrouped")
            out += [Node("Reshape", [x], [grouped], {"shape": [0, groups, -1], "allowzero": 0},
                         f"{base}/group"),
                    Node("LayerNormalization", [grouped, one, zero], [back], {"axis": 2, "epsilon": eps},
                         f"{base}/normalize"),
                    Node("Reshape", [back], [t], {"shape": [0] + [int(d) for d in xs[1:]], "allowzero": 0},
                         f"{base}/ungroup")]
        else:
            out.append(Node("LayerNormalization", [x, one, zero], [t], {"axis": 2, "epsilon": eps},
                            f"{base}/normalize"))
        out += [Node("Mul", [t, sc], [u], {}, f"{base}/scale"),
                Node("Add", [u, bc], [y], {}, base)]
    graph.nodes = out
    return graph
