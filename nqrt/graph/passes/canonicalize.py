"""Canonical forms the quantizer relies on.

* Gemm (and MatMul with a constant 2-D B) -> canonical Gemm: inputs [A, W, bias] with W the
  constant [N, K] matrix (transB=1 layout) and bias a constant [N] (zeros if absent); alpha and
  beta folded into W / bias; attrs transA=0, transB=1, alpha=1.0, beta=1.0.  Canonical Gemm
  accepts A of rank >= 2 and multiplies over A's last axis (y[..., n] = sum_k A[..., k] W[n, k]
  + bias[n]), which is MatMul's semantics for a 2-D B.  A run-time bias C (beta = 1) becomes a
  following Add.
* MatMul of two run-time tensors stays MatMul (the converter's QMatMul); Gemm whose B is
  computed at run time, or MatMul of a constant A and a run-time B -> UnsupportedOpError.
* Conv always has a constant bias input (zeros if absent) and explicit pads (auto_pad
  resolved once shapes are known).  1-D convolutions stay rank 3.
* Sum -> chain of Add.
GlobalAveragePool and ReduceMean are left as they are.
"""

from __future__ import annotations

import numpy as np

from nqrt.errors import UnsupportedOpError
from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.normalize import fill_shape_attrs
from nqrt.graph.shapes import annotate


def _unsupported(node: Node, what: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"unsupported {node.op} node {node.name or node.outputs[0]}: {what}",
                              {node.op: [node.name or node.outputs[0]]})


def is_canonical_gemm(node: Node, graph: Graph) -> bool:
    a = node.attrs
    if node.op != "Gemm" or len(node.inputs) != 3:
        return False
    w, b = graph.constants.get(node.inputs[1]), graph.constants.get(node.inputs[2])
    return (w is not None and b is not None and w.ndim == 2 and b.shape == (w.shape[0],)
            and a.get("transA", 0) == 0 and a.get("transB", 0) == 1
            and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0)


def _gemm(node: Node, graph: Graph, names: NameGen, shapes) -> list[Node]:
    if is_canonical_gemm(node, graph):
        return [node]
    a_name, b_name = node.inputs[0], node.inputs[1]
    if node.op == "MatMul":
        attrs = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
        c_name = ""
        a_shape = shapes.get(a_name)
        if a_shape is not None and len(a_shape) < 2:
            raise _unsupported(node, "MatMul with a 1-D left operand")
    else:
        attrs = node.attrs
        c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if b_name not in graph.constants:
        if node.op == "MatMul" and a_name not in graph.constants:
            return [node]                     # two activations: QMatMul (attention)
        raise _unsupported(node, f"{node.op} with a run-time B")
    if attrs.get("transA", 0):
        raise _unsupported(node, "attribute transA=1 with a run-time A")
    b = graph.constants[b_name]
    if b.ndim > 2 and node.op == "MatMul" and a_name not in graph.constants:
        return [node]              # batched constant B (one matrix per head): QMatMul, B uint8
    if b.ndim != 2:
        raise _unsupported(node, f"{node.op} with a constant B of rank {b.ndim} (only 2-D)")
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    w = b if attrs.get("transB", 0) else b.T                          # [N, K]
    if alpha != 1.0:
        w = w * np.float32(alpha)
    w = np.ascontiguousarray(w, dtype=np.float32)
    n_out = w.shape[0]
    extra: list[Node] = []
    y = node.outputs[0]
    if not c_name:
        bias = np.zeros(n_out, np.float32)
    elif c_name in graph.constants:
        c = np.asarray(graph.constants[c_name], np.float32) * np.float32(beta)
        if c.size == 1:
            bias = np.full(n_out, c.reshape(-1)[0], np.float32)
        elif c.shape in ((n_out,), (1, n_out)):
            bias = c.reshape(n_out).copy()
        else:
            raise _unsupported(node, f"bias C of shape {c.shape} varies along rows (only [N] or [1, N])")
    elif beta == 1.0:
        bias = np.zeros(n_out, np.float32)
        y = names(f"{node.outputs[0]}_gemm")
        extra.append(Node("Add", [y, c_name], [node.outputs[0]], {}, f"{node.name}/bias"))
    else:
        raise _unsupported(node, f"run-time bias C with beta={beta}")
    w_name = names(f"{node.name or node.outputs[0]}_W")
    b_name2 = names(f"{node.name or node.outputs[0]}_bias")
    graph.constants[w_name] = w
    graph.constants[b_name2] = bias
    gemm = Node("Gemm", [a_name, w_name, b_name2], [y],
                {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}, node.name)
    if "act" in node.attrs:
        if extra:
            extra[0].attrs["act"] = node.attrs["act"]
        else:
            gemm.attrs["act"] = node.attrs["act"]
    return [gemm] + extra


def run(graph: Graph) -> Graph:
    inf = annotate(graph)
    fill_shape_attrs(graph, inf)
    names = NameGen(graph)
    nodes: list[Node] = []
    for node in graph.nodes:
        if node.op in ("Gemm", "MatMul"):
            if all(i in graph.constants for i in node.inputs if i):
                nodes.append(node)                 # fold_constants evaluates it
            else:
                nodes.extend(_gemm(node, graph, names, inf.shapes))
        elif node.op == "Conv":
            if node.inputs[1] not in graph.constants:
                if node.inputs[0] in graph.constants:
                    nodes.append(node)
                    continue
                raise _unsupported(node, "Conv with a run-time weight")
            if len(node.inputs) < 3 or not node.inputs[2]:
                m = graph.constants[node.inputs[1]].shape[0]
                node.inputs = node.inputs[:2] + [names(f"{node.name or node.outputs[0]}_bias")]
                graph.constants[node.inputs[2]] = np.zeros(m, np.float32)
            nodes.append(node)
        elif node.op == "Sum":
            xs = [x for x in node.inputs if x]
            acc = xs[0]
            for i, x in enumerate(xs[1:], start=1):
                out = node.outputs[0] if i == len(xs) - 1 else names(f"{node.outputs[0]}_sum{i}")
                nodes.append(Node("Add", [acc, x], [out], {}, f"{node.name}/add{i}"))
                acc = out
            if len(xs) == 1:
                nodes.append(Node("Identity", xs, node.outputs, {}, node.name))
        else:
            nodes.append(node)
    graph.nodes = nodes
    return graph
