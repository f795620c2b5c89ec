"""Fold per-channel affine nodes (BatchNormalization, Mul/Add/Sub/Div by a per-channel
constant) into their producer, or rewrite them as a depthwise 1x1 Conv.

A node is a *channel affine* y = a * x + b when a, b are constants that vary at most along
one axis of x (the channel axis) and y has x's shape:
  BatchNormalization:  a = gamma / sqrt(var + eps), b = beta - mean * a       (axis 1)
  Mul(x, c): a = c, b = 0;  Add(x, c): a = 1, b = c;  Sub(x, c): a = 1, b = -c;
  Sub(c, x): a = -1, b = c;  Div(x, c): a = 1 / c, b = 0     (c of one non-1 axis, or scalar)
One forward sweep, for each channel affine node:
  1. if its producer P is Conv or ConvTranspose (axis 1), canonical Gemm (axis = last) or
     BatchNormalization (axis 1), P's output is read by this node only and is not a graph
     output: fold into P (W[m] *= a[m], for ConvTranspose W[:, m] per group; bias = bias * a
     + b, or gamma *= a; beta = beta * a + b) — exact up to float rounding;
     The producer may also be a Reshape / Flatten of a canonical Gemm's output that keeps its
     last dim (the channels): LeViT's Linear -> flatten(0, 1) -> BatchNorm1d -> reshape;
     row-major, element [.., c] stays channel c, so the affine folds into the Gemm and the
     Reshape stays; or a Transpose of a Conv's output that moves the channels to the affine's
     axis (tf2onnx's Keras graphs: Conv, Transpose to NHWC, BatchNorm's Mul / Add);
  2. otherwise, if x has rank 3 or 4 and the affine acts on axis 1 with C = x.shape[1] known:
     rewrite as Conv(group=C, W[C, 1, 1(, 1)] = a, bias = b), so standalone BNs (DenseNet's
     BN after Concat) still map to an integer kernel; a following affine then folds into it;
     a BN of a rank-2 [M, C] tensor becomes Reshape [M, C, 1] -> that 1-D Conv -> Reshape [M, C];
  3. otherwise leave it: a uniform
     affine (a scalar constant), which the converter turns into a 256-entry QLut (exact, and
     one table lookup per element instead of a depthwise conv's requantize: the scalar
     Div / Add / Mul of ConvNeXt's exported GELU on 56x56x384 took 0.24 ms each as convs).
Requires canonical Gemm (run canonicalize first); new constants get fresh names, so shared
constants are never modified in place.
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.passes.canonicalize import is_canonical_gemm
from nqrt.graph.shapes import Inference, infer, is_int


def channel_affine(node: Node, graph: Graph, inf: Inference):
    """(a, b, axis, x) with node(x) = a * x + b along `axis` (None: uniform), or None."""
    consts = graph.constants
    if node.op == "BatchNormalization":
        if len(node.inputs) != 5 or not all(i in consts for i in node.inputs[1:]) \
                or node.attrs.get("training_mode", 0):
            return None
        gamma, beta, mean, var = (consts[i].astype(np.float64) for i in node.inputs[1:])
        with np.errstate(all="ignore"):
            a = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
        if not np.all(np.isfinite(a)):
            return None                     # a negative or zero variance: not a finite affine
        return a, beta - mean * a, 1, node.inputs[0]
    if node.op not in ("Mul", "Add", "Sub", "Div") or len(node.inputs) != 2 or "act" in node.attrs:
        return None
    c_pos = [i for i, t in enumerate(node.inputs) if t in consts]
    if len(c_pos) != 1:
        return None
    x = node.inputs[1 - c_pos[0]]
    c = consts[node.inputs[c_pos[0]]]
    xs = inf.shapes.get(x)
    if xs is None or c.dtype.kind != "f" or inf.dtypes.get(x) != "float32" or c.ndim > len(xs):
        return None
    cs = (1,) * (len(xs) - c.ndim) + c.shape
    axes = [i for i, d in enumerate(cs) if d != 1]
    if len(axes) > 1 or (axes and xs[axes[0]] != cs[axes[0]]):
        return None
    axis = axes[0] if axes else None
    v = c.astype(np.float64).reshape(-1) if axes else c.astype(np.float64).reshape(())
    if node.op == "Mul":
        return v, np.zeros_like(v), axis, x
    if node.op == "Add":
        return np.ones_like(v), v, axis, x
    if node.op == "Sub":
        return (np.ones_like(v), -v, axis, x) if c_pos[0] == 1 else (-np.ones_like(v), v, axis, x)
    if c_pos[0] == 1 and np.all(v != 0):   # Div(x, c); Div(c, x) is not affine, and a
        return 1.0 / v, np.zeros_like(v), axis, x      # zero divisor is no scale (inf / nan)
    return None


def _channel_axis(p: Node, inf: Inference) -> int | None:
    if p.op in ("Conv", "ConvTranspose", "BatchNormalization"):
        return 1
    shape = inf.shapes.get(p.outputs[0])
    return None if shape is None else len(shape) - 1


def _fold(p: Node, a, b, graph: Graph, names: NameGen) -> None:
    c = graph.constants
    base = p.name or p.outputs[0]
    if p.op == "BatchNormalization":
        gamma, beta = c[p.inputs[1]].astype(np.float64), c[p.inputs[2]].astype(np.float64)
        n = gamma.shape[0]
        a, b = np.broadcast_to(a, (n,)), np.broadcast_to(b, (n,))
        p.inputs[1] = names(f"{base}_scale")
        p.inputs[2] = names(f"{base}_B")
        c[p.inputs[1]] = (gamma * a).astype(np.float32)
        c[p.inputs[2]] = (beta * a + b).astype(np.float32)
        return
    w = c[p.inputs[1]]
    if p.op == "ConvTranspose":       # W[C_in, M/g, k...]: output channel gi·M/g + j is W[gi·C_in/g :, j]
        g = int(p.attrs.get("group", 1))
        m = w.shape[1] * g
        per_out = np.broadcast_to(a, (m,)).reshape((g, 1, w.shape[1]) + (1,) * (w.ndim - 2))
        new_w = (w.astype(np.float64).reshape((g, w.shape[0] // g) + w.shape[1:]) * per_out).reshape(w.shape)
    else:
        m = w.shape[0]
        new_w = w.astype(np.float64) * np.broadcast_to(a, (m,)).reshape((m,) + (1,) * (w.ndim - 1))
    new_w = new_w.astype(np.float32)
    a, b = np.broadcast_to(a, (m,)), np.broadcast_to(b, (m,))
    bias = c[p.inputs[2]].astype(np.float64) if len(p.inputs) > 2 and p.inputs[2] else np.zeros(m)
    p.inputs = [p.inputs[0], names(f"{base}_W"), names(f"{base}_bias")]
    c[p.inputs[1]] = new_w
    c[p.inputs[2]] = (bias * a + b).astype(np.float32)


def _depthwise(node: Node, x: str, a, b, channels: int, rank: int, graph: Graph, names: NameGen) -> Node:
    nk = rank - 2
    base = node.name or node.outputs[0]
    w = np.broadcast_to(a, (channels,)).astype(np.float32).reshape((channels, 1) + (1,) * nk)
    bias = np.broadcast_to(b, (channels,)).astype(np.float32).copy()
    w_name, b_name = names(f"{base}_dw_W"), names(f"{base}_dw_bias")
    graph.constants[w_name] = w
    graph.constants[b_name] = bias
    attrs = {"auto_pad": "NOTSET", "kernel_shape": [1] * nk, "strides": [1] * nk,
             "pads": [0] * (2 * nk), "dilations": [1] * nk, "group": channels}
    return Node("Conv", [x, w_name, b_name], list(node.outputs), attrs, node.name)


def run(graph: Graph) -> Graph:
    inf = infer(graph)
    names = NameGen(graph)
    outputs = set(graph.output_names())
    # A Shape node reads only the shape, which a fold keeps: it does not count as a reader
    # (exports read `x.shape` beside the BN: LeViT's reshape_as after its BatchNorm1d).
    readers = graph.consumers()
    consumers = {k: sum(n.op != "Shape" for n in v) for k, v in readers.items()}
    producers = graph.producers()
    kept: list[Node] = []
    for node in graph.nodes:
        aff = channel_affine(node, graph, inf)
        if aff is None:
            kept.append(node)
            continue
        a, b, axis, x = aff
        p = producers.get(x)
        foldable = (p is not None and consumers.get(x, 0) == 1
                    and x not in outputs and len(p.outputs) == 1
                    and (p.op in ("Conv", "ConvTranspose") and p.inputs[1] in graph.constants
                         and (len(p.inputs) < 3 or not p.inputs[2] or p.inputs[2] in graph.constants)
                         or p.op == "BatchNormalization" and aff_ok(p, graph)
                         or is_canonical_gemm(p, graph))
                    and (axis is None or axis == _channel_axis(p, inf)))
        if foldable:
            _fold(p, a, b, graph, names)
            p.outputs[0] = node.outputs[0]
            producers[node.outputs[0]] = p
            for s in readers.get(x, []):
                if s.op == "Shape":                 # x is gone; y has its shape
                    s.inputs = [node.outputs[0] if t == x else t for t in s.inputs]
            continue
        q = _gemm_through_reshape(p, x, axis, graph, inf, producers, consumers, outputs) \
            or _conv_through_transpose(p, x, axis, graph, producers, consumers, outputs)
        if q is not None:
            _fold(q, a, b, graph, names)
            p.outputs[0] = node.outputs[0]
            producers[node.outputs[0]] = p
            continue
        xs = inf.shapes.get(x)
        if xs is not None and len(xs) == 2 and axis == 1 and is_int(xs[1]) \
                and inf.dtypes.get(x) == "float32" and node.op == "BatchNormalization":
            c = int(xs[1])
            x3, y3 = names(f"{x}_3d"), names(f"{node.outputs[0]}_3d")
            conv = _depthwise(node, x3, a, b, c, 3, graph, names)
            conv.outputs = [y3]
            kept += [Node("Reshape", [x], [x3], {"shape": [0, c, 1], "allowzero": 0}, names(f"{node.name}_to3d")),
                     conv,
                     Node("Reshape", [y3], list(node.outputs), {"shape": [0, c], "allowzero": 0},
                          names(f"{node.name}_to2d"))]
            for n in kept[-3:]:
                producers[n.outputs[0]] = n
            continue
        if xs is not None and len(xs) in (3, 4) and axis == 1 and is_int(xs[1]) \
                and inf.dtypes.get(x) == "float32":
            conv = _depthwise(node, x, a, b, int(xs[1]), len(xs), graph, names)
            kept.append(conv)
            for o in conv.outputs:
                producers[o] = conv
            continue
        kept.append(node)
    graph.nodes = kept
    return graph


def _gemm_through_reshape(p: Node | None, x: str, axis, graph: Graph, inf: Inference, producers,
                          consumers, outputs) -> Node | None:
    """The canonical Gemm q when x = Reshape / Flatten(q's output) keeps q's last dim (the
    channels) as its own last dim, the affine acts on that dim (or is uniform), and both
    tensors are read once and are no graph outputs; else None."""
    if p is None or p.op not in ("Reshape", "Flatten") or consumers.get(x, 0) != 1 or x in outputs:
        return None
    g = p.inputs[0]
    q = producers.get(g)
    if q is None or not is_canonical_gemm(q, graph) or len(q.outputs) != 1 \
            or consumers.get(g, 0) != 1 or g in outputs:
        return None
    xs, gs = inf.shapes.get(x), inf.shapes.get(g)
    if not xs or not gs or not is_int(xs[-1]) or xs[-1] != gs[-1]:
        return None
    return q if axis is None or axis == len(xs) - 1 else None


def _conv_through_transpose(p: Node | None, x: str, axis, graph: Graph, producers, consumers,
                            outputs) -> Node | None:
    """The Conv q when x = Transpose(q's output) moves q's channel axis 1 to the affine's axis
    (tf2onnx's Keras models: Conv in NCHW, Transpose to NHWC, the BatchNorm's Mul / Add on the
    last axis); both tensors read once, no graph outputs.  The affine folds into q's weights and
    bias; the Transpose stays."""
    if p is None or p.op != "Transpose" or consumers.get(x, 0) != 1 or x in outputs or axis is None:
        return None
    g = p.inputs[0]
    q = producers.get(g)
    perm = p.attrs.get("perm")
    if q is None or q.op not in ("Conv", "ConvTranspose") or len(q.outputs) != 1 or perm is None \
            or consumers.get(g, 0) != 1 or g in outputs or q.inputs[1] not in graph.constants \
            or (len(q.inputs) > 2 and q.inputs[2] and q.inputs[2] not in graph.constants):
        return None
    return q if axis < len(perm) and int(perm[axis]) == 1 else None


def aff_ok(p: Node, graph: Graph) -> bool:
    """A BatchNormalization producer can absorb an affine when its parameters are constants
    (and it uses them: not in training mode)."""
    return len(p.inputs) == 5 and all(i in graph.constants for i in p.inputs[1:]) \
        and not p.attrs.get("training_mode", 0)
