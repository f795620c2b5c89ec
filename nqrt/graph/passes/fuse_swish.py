"""Fuse the gating products of EfficientNet / MobileNetV3 into one elementwise node:

  Mul(x, Sigmoid(x))                          -> Swish(x)      (SiLU; an internal IR op)
  Mul(x, HardSigmoid(x, alpha=1/6, beta=0.5)) -> HardSwish(x)

(either operand order).  The gate must be read by this Mul only and not be a graph output,
so nothing else needs the intermediate; the result is one QLut instead of a QLut + QMul, and
exact up to the output rounding.  HardSigmoid's float32 alpha 1/6 counts as 1/6.
"""

from __future__ import annotations

from nqrt.graph.ir import Graph, Node

_ONE_SIXTH_TOLERANCE = 1e-6


def _gate_kind(gate: Node) -> str | None:
    if gate.op == "Sigmoid" and "act" not in gate.attrs:
        return "Swish"
    if gate.op == "HardSigmoid" and "act" not in gate.attrs \
            and abs(float(gate.attrs.get("alpha", 0.2)) - 1 / 6) < _ONE_SIXTH_TOLERANCE \
            and float(gate.attrs.get("beta", 0.5)) == 0.5:
        return "HardSwish"
    return None


def run(graph: Graph) -> Graph:
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = set(graph.output_names())
    for mul in list(graph.nodes):
        if mul.op != "Mul" or len(mul.inputs) != 2 or "act" in mul.attrs:
            continue
        for k in (0, 1):
            x, g = mul.inputs[k], mul.inputs[1 - k]
            gate = producers.get(g)
            if gate is None or gate.inputs[:1] != [x] or g in outputs or len(consumers.get(g, [])) != 1:
                continue
            kind = _gate_kind(gate)
            if kind is None:
                continue
            fused = Node(kind, [x], list(mul.outputs), {}, mul.name or gate.name)
            graph.nodes[graph.nodes.index(mul)] = fused
            graph.nodes.remove(gate)
            for o in fused.outputs:
                producers[o] = fused
            break
    return graph
