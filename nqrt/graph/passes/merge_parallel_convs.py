"""Merge parallel Conv branches summed by an Add into one Conv (structural re-parameterization).

RepVGG, MobileOne and FastViT train blocks whose output is a sum of linear branches of one
input x: k×k conv-BN, 1×1 conv-BN, and a BN of x itself (the identity branch), followed by
the activation.  Exported without their `reparameterize()` call, every branch is a separate
Conv (fold_batchnorm has folded the BNs, and made the identity BN a depthwise 1×1 Conv), each
with its own quantized output, and the Adds between them: timm's mobileone_s0 ran 225 Convs
and 183 Adds, int8 as slow as ONNX Runtime FP32.  Convolution is linear in its weights, so

    Conv(x, W1, b1) + Conv(x, W2, b2) = Conv(x, W1' + W2', b1 + b2)

where Wi' is Wi zero-padded to a common kernel aligned on the input positions its taps read.
Add(Conv(x), x) is the same with x = Conv(x, identity) (a residual around a depthwise conv,
as in conditional position encodings).

A branch is a Conv with constant weights (and bias), no fused activation, whose output is read
only by the Add and is not a graph output.  Both branches must
  * read the same tensor x, have the same strides, spatial rank and output channels M;
  * use one dilation D on every axis where their kernel has more than one tap (a 1-tap axis
    reads one position whatever its dilation);
  * tap input offsets that fit one grid: along an axis, tap i of a branch (pad p, dilation d)
    reads o·s − p + i·d; the merged kernel (pad P = the larger p, dilation D) reads o·s − P + I·D,
    so tap i lands at I = (P − p + i·d) / D, which must be an integer for every branch;
  * give the same output length for any input length: the end pad E = e + (D·(K − 1) − P) −
    (d·(k − 1) − p) (the merged window's extra reach past the branch's) must be equal for both
    branches, so floor((L + P + E − D(K − 1) − 1) / s) equals the branch's for every L;
  * have equal groups.  So an identity or BN-only branch (a per-channel 1×1 Conv, group = C)
    merges into a depthwise conv but not into a dense one: there it would be one large tap in
    a kernel of C_in·k·k small ones, which sets that kernel's per-channel quantization step
    (measured, random-weight timm models: MobileOne-S1 32.1 dB unmerged, 31.6 with the
    depthwise merges only, 22.9 with the identity also merged into its 1×1 convs over up to
    512 channels; MobileOne-S0 30.9 / 34.9 / 28.8).  That identity stays a depthwise 1×1
    Conv and an Add.
The Add's fused activation (if any) moves to the merged Conv.  The sum is formed in float64
and stored in float32, like fold_batchnorm's folds; the merged Conv equals the Add up to float
rounding.  A chain Add(Add(a, b), c) merges in one sweep: the inner Add becomes a Conv, which
the outer Add then sees as a branch.

Quantization: the merged kernel is quantized per output channel as one kernel, so its largest
branch sets the step of all its taps; in exchange the branch outputs are no longer rounded to
8 bits each before the Add.  Trained weights may fare differently from the random ones
measured here (RepVGG's merged kernels are known to quantize worse than a plain conv's), so
the converter can keep the branches (convert(merge_branches=False), --keep-branches).
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import Inference, infer


class _Branch:
    """One summand as a Conv of x: weights [M, C_in/g, k...], bias [M], attributes."""

    def __init__(self, w, bias, group, strides, dilations, pads, node: Node | None):
        self.w, self.bias, self.group = w, bias, group
        self.strides, self.dilations, self.pads = list(strides), list(dilations), list(pads)
        self.node = node                      # the Conv to remove; None for the identity


def _conv_branch(t: str, add: Node, graph: Graph, producers, consumers, outputs) -> _Branch | None:
    p = producers.get(t)
    if p is None or p.op != "Conv" or "act" in p.attrs or t in outputs or len(p.outputs) != 1 \
            or len(p.inputs) < 2 or p.inputs[1] not in graph.constants \
            or (len(p.inputs) > 2 and p.inputs[2] and p.inputs[2] not in graph.constants) \
            or p.attrs.get("auto_pad", "NOTSET") != "NOTSET" \
            or [id(n) for n in consumers.get(t, [])] != [id(add)]:
        return None
    w = graph.constants[p.inputs[1]]
    if w.dtype != np.float32 or w.ndim < 3:
        return None
    m = w.shape[0]
    bias = graph.constants[p.inputs[2]] if len(p.inputs) > 2 and p.inputs[2] else np.zeros(m, np.float32)
    a = p.attrs
    return _Branch(w, bias, int(a.get("group", 1)), a["strides"], a["dilations"], a["pads"], p)


def _identity_branch(shape, nk: int) -> _Branch | None:
    """x itself as a per-channel 1×1 Conv of weight 1 (x of known channel count)."""
    c = shape[1] if shape is not None and len(shape) == nk + 2 else None
    if not isinstance(c, (int, np.integer)):
        return None
    w = np.ones((int(c), 1) + (1,) * nk, np.float32)
    return _Branch(w, np.zeros(int(c), np.float32), int(c), [1] * nk, [1] * nk, [0] * (2 * nk), None)


def _merge(b1: _Branch, b2: _Branch, c_in: int):
    """(weights, bias, group, dilations, pads) of the merged Conv, or None if not mergeable."""
    nk = b1.w.ndim - 2
    if b2.w.ndim - 2 != nk or b1.w.shape[0] != b2.w.shape[0] or b1.strides != b2.strides:
        return None
    m = b1.w.shape[0]
    group = b1.group
    if b2.group != group or c_in % group or m % group:
        return None
    k1, k2 = b1.w.shape[2:], b2.w.shape[2:]
    dil, begin, end, size, taps = [], [], [], [], []
    for j in range(nk):
        multi = [b.dilations[j] for b, k in ((b1, k1[j]), (b2, k2[j])) if k > 1]
        if len(set(multi)) > 1:
            return None
        d = multi[0] if multi else 1
        p = max(b1.pads[j], b2.pads[j])
        if any((p - b.pads[j]) % d for b in (b1, b2)):
            return None
        first = [(p - b.pads[j]) // d for b in (b1, b2)]          # merged index of tap 0
        k = max(f + kb for f, kb in zip(first, (k1[j], k2[j])))
        ends = {b.pads[nk + j] + (d * (k - 1) - p) - (b.dilations[j] * (kb - 1) - b.pads[j])
                for b, kb in ((b1, k1[j]), (b2, k2[j]))}
        if len(ends) != 1 or min(ends) < 0:
            return None
        dil.append(d)
        begin.append(p)
        end.append(ends.pop())
        size.append(k)
        taps.append(first)
    cg = c_in // group
    w = np.zeros((m, cg) + tuple(size), np.float64)
    for i, b in enumerate((b1, b2)):
        window = tuple(slice(taps[j][i], taps[j][i] + b.w.shape[2 + j]) for j in range(nk))
        w[(slice(None), slice(None)) + window] += b.w
    bias = b1.bias.astype(np.float64) + b2.bias.astype(np.float64)
    return w.astype(np.float32), bias.astype(np.float32), group, dil, begin + end


def run(graph: Graph) -> Graph:
    adds = [n for n in graph.nodes if n.op == "Add" and len(n.inputs) == 2 and n.inputs[0] != n.inputs[1]]
    if not adds:
        return graph
    inf: Inference | None = None
    names = NameGen(graph)
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = set(graph.output_names())
    removed: set[int] = set()
    for add in adds:
        branches = [_conv_branch(t, add, graph, producers, consumers, outputs) for t in add.inputs]
        convs = [b for b in branches if b is not None]
        if not convs:
            continue
        x = convs[0].node.inputs[0]
        if len(convs) == 1:                                   # Add(Conv(x), x)?
            if x not in add.inputs:
                continue
            inf = inf or infer(graph)
            xs, ys = inf.shapes.get(x), inf.shapes.get(add.outputs[0])
            if xs is None or xs != ys or inf.shapes.get(convs[0].node.outputs[0]) != xs:
                continue
            ident = _identity_branch(xs, convs[0].w.ndim - 2)
            if ident is None:
                continue
            convs.append(ident)
        elif convs[1].node.inputs[0] != x:
            continue
        inf = inf or infer(graph)
        xs = inf.shapes.get(x)
        if xs is None or len(xs) < 3 or not isinstance(xs[1], (int, np.integer)) \
                or inf.dtypes.get(x) != "float32":
            continue
        merged = _merge(convs[0], convs[1], int(xs[1]))
        if merged is None:
            continue
        w, bias, group, dil, pads = merged
        base = add.name or add.outputs[0]
        wn, bn = names(f"{base}_merged_W"), names(f"{base}_merged_bias")
        graph.constants[wn], graph.constants[bn] = w, bias
        attrs = {"auto_pad": "NOTSET", "kernel_shape": list(w.shape[2:]), "strides": list(convs[0].strides),
                 "pads": pads, "dilations": dil, "group": group}
        if "act" in add.attrs:
            attrs["act"] = add.attrs["act"]
        conv = Node("Conv", [x, wn, bn], list(add.outputs), attrs, add.name)
        graph.nodes[graph.nodes.index(add)] = conv
        producers[add.outputs[0]] = conv
        for b in convs:
            if b.node is not None:
                removed.add(id(b.node))
        consumers.setdefault(x, []).append(conv)
    if removed:
        graph.nodes = [n for n in graph.nodes if id(n) not in removed]
    return graph
