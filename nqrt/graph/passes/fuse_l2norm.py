"""Rewrite L2 normalization along the last axis as an RMSNormalization, a row operation the
runtime has a float kernel for (the layer norm's, without the mean: formats/nq-v1.md 4.16):

  Div(x, [Expand(] [Clip(min=eps) | Max(., eps)] ReduceL2(x, axes=[last], keepdims=1) [, shape)])
      (PyTorch's F.normalize(x, dim=-1): XCiT, EdgeNeXt's cross-covariance attention, Swin V2's
       cosine attention)
  LpNormalization(x, axis=last, p=2)
      -> RMSNormalization(x, scale = 1/sqrt(n) (n copies), axis = last, epsilon = eps² / n)

since x / sqrt(Σx² + eps²) = (x · 1/sqrt(n)) / sqrt(Σx²/n + eps²/n).  That equals
x / max(‖x‖, eps) except for rows whose norm is within a factor ~2 of eps (1e-12 in
PyTorch): only (near-)zero rows, which both map to (near-)zero.  Without it the pattern would
run on 8-bit codes (ReduceL2 has no integer kernel; the division would be a QLut2).  The reduction (and the clamp / expand) must be
read only inside the pattern; x must have a known last dim.

Any other ReduceL2 of a run-time tensor (ConvNeXt V2's global response norm over H, W) is
lowered to Sqrt(ReduceSum(Mul(x, x))): a QMul, an integer sum (QReduceMean with sum = 1) and
a table.
"""

from __future__ import annotations

import math

import numpy as np

from nqrt.graph.edit import Matcher, NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer, is_int, norm_axis


def _clamp_min(m: Matcher, node: Node) -> float | None:
    """eps of Clip(r, min=eps) without max, or of Max(r, eps) with a scalar constant eps."""
    if node.op == "Clip":
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        if lo is None or (hi is not None and hi != float("inf")) or len([i for i in node.inputs if i]) > 1:
            return None
        return float(lo)
    consts = [m.graph.constants.get(i) for i in node.inputs]
    if len(node.inputs) != 2 or sum(c is not None for c in consts) != 1:
        return None
    c = next(c for c in consts if c is not None)
    return float(np.asarray(c).reshape(-1)[0]) if c.size == 1 and c.dtype.kind == "f" else None


def _match_div(m: Matcher, div: Node, shapes) -> tuple[str, float, int] | None:
    """(x, eps, n) for the F.normalize pattern ending at `div`."""
    if div.op != "Div" or len(div.inputs) != 2 or "act" in div.attrs:
        return None
    x, t = div.inputs
    nodes = []
    node = m.private(t, ("Expand",))
    if node is not None:
        nodes.append(node)
        t = node.inputs[0]
    eps = 0.0
    node = m.private(t, ("Clip", "Max"))
    if node is not None:
        eps = _clamp_min(m, node)
        if eps is None or eps < 0:
            return None
        nodes.append(node)
        t = next(i for i in node.inputs if i and i not in m.graph.constants)
    red = m.private(t, ("ReduceL2",))
    xs = shapes.get(x)
    if red is None or red.inputs[0] != x or not xs or not is_int(xs[-1]) \
            or not int(red.attrs.get("keepdims", 1)) or red.attrs.get("axes") is None:
        return None
    axes = [norm_axis(int(a), len(xs)) for a in red.attrs["axes"]]
    if axes != [len(xs) - 1]:
        return None
    return x, eps, int(xs[-1])


def run(graph: Graph) -> Graph:
    if not any(n.op in ("ReduceL2", "LpNormalization") for n in graph.nodes):
        return graph
    shapes = infer(graph).shapes
    m = Matcher(graph)
    names = NameGen(graph)
    replace: dict[int, Node] = {}
    for node in graph.nodes:
        if node.op == "LpNormalization":
            xs = shapes.get(node.inputs[0])
            if not xs or not is_int(xs[-1]) or norm_axis(int(node.attrs["axis"]), len(xs)) != len(xs) - 1:
                continue
            x, eps, n = node.inputs[0], 0.0, int(xs[-1])
        else:
            got = _match_div(m, node, shapes)
            if got is None:
                continue
            x, eps, n = got
        scale = names(f"{node.outputs[0]}__l2_scale")
        graph.constants[scale] = np.full(n, 1.0 / math.sqrt(n), np.float32)
        replace[id(node)] = Node("RMSNormalization", [x, scale], list(node.outputs),
                                 {"axis": -1, "epsilon": eps * eps / n}, node.name)
    graph.nodes = [replace.get(id(n), n) for n in graph.nodes]
    _lower_reduce_l2(graph, names)
    return graph     # the reduction, clamp and expand are now unread: dead_code removes them


def _lower_reduce_l2(graph: Graph, names: NameGen) -> None:
    """A ReduceL2 still read (not an L2 normalization's: ConvNeXt V2's global response norm
    over H, W) -> Sqrt(ReduceSum(Mul(x, x))): a QMul, an integer sum and a table."""
    read = {i for n in graph.nodes for i in n.inputs} | set(graph.output_names())
    out = []
    for node in graph.nodes:
        if node.op != "ReduceL2" or node.outputs[0] not in read or node.inputs[0] in graph.constants:
            out.append(node)
            continue
        x, y = node.inputs[0], node.outputs[0]
        sq, sm = names(f"{y}_squares"), names(f"{y}_sum_squares")
        out += [Node("Mul", [x, x], [sq], {}, names(f"{node.name}_square")),
                Node("ReduceSum", [sq], [sm], dict(node.attrs), names(f"{node.name}_sum")),
                Node("Sqrt", [sm], [y], {}, node.name)]
    graph.nodes = out
