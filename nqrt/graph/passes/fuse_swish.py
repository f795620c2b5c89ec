"""Fuse gating products into one elementwise node:

  Mul(x, Sigmoid(x))                          -> Swish(x)      (SiLU; an internal IR op)
  Mul(x, HardSigmoid(x, alpha=1/6, beta=0.5)) -> HardSwish(x)
  Mul(x, Tanh(Softplus(x)))                   -> Mish(x)       (YOLOv4's activation before opset 18)
  the exported exact GELU, x·0.5·(1 + erf(x/√2)) -> Gelu(x):
      Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)    (PyTorch's export before opset 20)
      Mul(Mul(x, 0.5), Add(Erf(Div(x, √2)), 1))
      Mul(x, Mul(Add(Erf(Div(x, √2)), 1), 0.5))    (the dynamo exporter's)
  (Div(x, √2) may be Mul(x, 1/√2); Add and Mul in either operand order)
  Keras' hard sigmoid, Mul(Clip(Add(x, 3), 0, 6), 1/6) or Div(.., 6) -> HardSigmoid(x, 1/6, 0.5)
      (before the gating rule above, so x·hard_sigmoid(x) then becomes one HardSwish)

(EfficientNet / MobileNetV3's gates; ConvNeXt's and the Transformers' GELU).  Every
intermediate must be read by the pattern only and not be a graph output, so nothing else
needs it; the result is one QLut instead of several QLuts and a QMul (ConvNeXt-T at batch 1:
72 QLuts + 18 QMuls -> 18 QLuts), exact up to the one output rounding.  HardSigmoid's float32
alpha 1/6 counts as 1/6; the GELU constants count within a float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np

from nqrt.graph.edit import Matcher
from nqrt.graph.ir import Graph, Node

_ONE_SIXTH_TOLERANCE = 1e-6
_CONST_RTOL = 1e-6          # a float32 rounding of the GELU constants (√2, 1/√2, 1, 0.5)


def _gate_kind(gate: Node) -> str | None:
    if gate.op == "Sigmoid" and "act" not in gate.attrs:
        return "Swish"
    if gate.op == "HardSigmoid" and "act" not in gate.attrs \
            and abs(float(gate.attrs.get("alpha", 0.2)) - 1 / 6) < _ONE_SIXTH_TOLERANCE \
            and float(gate.attrs.get("beta", 0.5)) == 0.5:
        return "HardSwish"
    return None


def _scalar(graph: Graph, t: str, value: float) -> bool:
    c = graph.constants.get(t)
    return (c is not None and c.size == 1 and c.dtype.kind == "f"
            and math.isclose(float(np.asarray(c).reshape(-1)[0]), value, rel_tol=_CONST_RTOL))


def _other(node: Node, graph: Graph, value: float) -> str | None:
    """For a binary node with a scalar constant `value` operand: the other operand."""
    if len(node.inputs) != 2 or "act" in node.attrs:
        return None
    for k in (0, 1):
        if _scalar(graph, node.inputs[k], value):
            return node.inputs[1 - k]
    return None


class _Gelu(Matcher):
    """Matcher of the exported exact GELU (module docstring)."""

    def gate(self, t: str, x: str | None) -> tuple[str, list[Node]] | None:
        """t = Add(Erf(x/√2), 1) (x given or free): (x, the three nodes)."""
        add = self.private(t, "Add")
        e = add and _other(add, self.graph, 1.0)
        erf = e and self.private(e, "Erf")
        scaled = erf and erf.inputs[0]
        div = scaled and (self.private(scaled, "Div") or self.private(scaled, "Mul"))
        if div is None or "act" in div.attrs or len(div.inputs) != 2 or div.inputs[1] == div.inputs[0]:
            return None
        if div.op == "Div" and not _scalar(self.graph, div.inputs[1], math.sqrt(2.0)):
            return None
        xin = div.inputs[0] if div.op == "Div" else _other(div, self.graph, 1 / math.sqrt(2.0))
        if xin is None or (x is not None and xin != x):
            return None
        return xin, [div, erf, add]

    def match(self, top: Node) -> tuple[str, list[Node]] | None:
        """(x, the pattern's nodes other than top) when `top` ends an exact GELU."""
        if top.op != "Mul" or len(top.inputs) != 2 or "act" in top.attrs:
            return None
        half_input = _other(top, self.graph, 0.5)
        if half_input is not None:                   # Mul(Mul(x, gate), 0.5)
            inner = self.private(half_input, "Mul")
            if inner is None or "act" in inner.attrs or len(inner.inputs) != 2:
                return None
            for k in (0, 1):
                g = self.gate(inner.inputs[1 - k], inner.inputs[k])
                if g is not None:
                    return g[0], g[1] + [inner]
            return None
        for k in (0, 1):                             # Mul(Mul(x, 0.5), gate)
            half = self.private(top.inputs[k], "Mul")
            x = half and _other(half, self.graph, 0.5)
            g = x and self.gate(top.inputs[1 - k], x)
            if g is not None:
                return g[0], g[1] + [half]
        for k in (0, 1):                             # Mul(x, Mul(gate, 0.5))
            half = self.private(top.inputs[1 - k], "Mul")
            gate_t = half and _other(half, self.graph, 0.5)
            g = gate_t and self.gate(gate_t, top.inputs[k])
            if g is not None:
                return g[0], g[1] + [half]
        return None


def _fuse_gelu(graph: Graph) -> None:
    for top in list(graph.nodes):
        if top not in graph.nodes:
            continue
        m = _Gelu(graph).match(top)
        if m is None:
            continue
        x, inner = m
        graph.nodes[graph.nodes.index(top)] = Node("Gelu", [x], list(top.outputs),
                                                   {"approximate": "none"}, top.name)
        for n in inner:
            graph.nodes.remove(n)


def _fuse_hard_sigmoid(graph: Graph) -> None:
    """Clip(x + 3, 0, 6) / 6 = clamp(x/6 + 1/2, 0, 1) = HardSigmoid(x, alpha=1/6, beta=1/2)."""
    m = Matcher(graph)
    for top in list(graph.nodes):
        if top.op not in ("Mul", "Div") or top not in graph.nodes:
            continue
        t = _other(top, graph, 1 / 6) if top.op == "Mul" else (
            top.inputs[0] if len(top.inputs) == 2 and "act" not in top.attrs
            and _scalar(graph, top.inputs[1], 6.0) else None)
        clip = t and m.private(t, ("Clip",))
        if clip is None or float(clip.attrs.get("min", -np.inf)) != 0.0 or float(clip.attrs.get("max", np.inf)) != 6.0:
            continue
        add = m.private(clip.inputs[0], ("Add",))
        x = add and _other(add, graph, 3.0)
        if x is None:
            continue
        graph.nodes[graph.nodes.index(top)] = Node("HardSigmoid", [x], list(top.outputs),
                                                   {"alpha": 1 / 6, "beta": 0.5}, top.name)
        graph.nodes.remove(clip)
        graph.nodes.remove(add)
        m = Matcher(graph)


def run(graph: Graph) -> Graph:
    _fuse_gelu(graph)
    _fuse_hard_sigmoid(graph)
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = set(graph.output_names())
    for mul in list(graph.nodes):
        if mul.op != "Mul" or len(mul.inputs) != 2 or "act" in mul.attrs:
            continue
        for k in (0, 1):
            x, g = mul.inputs[k], mul.inputs[1 - k]
            gate = producers.get(g)
            if gate is None or g in outputs or len(consumers.get(g, [])) != 1:
                continue
            inner = None
            if gate.op == "Tanh" and "act" not in gate.attrs:        # Mish: Tanh(Softplus(x))
                inner = producers.get(gate.inputs[0])
                if inner is None or inner.op != "Softplus" or inner.inputs[:1] != [x] or "act" in inner.attrs \
                        or gate.inputs[0] in outputs or len(consumers.get(gate.inputs[0], [])) != 1:
                    continue
                kind = "Mish"
            elif gate.inputs[:1] != [x]:
                continue
            else:
                kind = _gate_kind(gate)
            if kind is None:
                continue
            fused = Node(kind, [x], list(mul.outputs), {}, mul.name or gate.name)
            graph.nodes[graph.nodes.index(mul)] = fused
            graph.nodes.remove(gate)
            if inner is not None:
                graph.nodes.remove(inner)
            for o in fused.outputs:
                producers[o] = fused
            break
    return graph
