"""Drop the kernel taps of a Conv that read only padding.

With a known input size, tap i of a spatial axis (stride s, dilation d, pad p_begin, input
length L, output length L_out) reads input index o·s − p_begin + i·d for o < L_out; when that
is outside [0, L) for every o, the tap only ever multiplies padding (zeros in float; z_x − z_x
once quantized) and contributes exactly nothing.  The taps that can read x form one range
[i_lo, i_hi] per axis, so the Conv becomes one with the kernel cropped to it, the begin pad
reduced by i_lo·d and the end pad by (k − 1 − i_hi)·d: the same output, exactly, with fewer
multiply-adds.  DeepLab's ASPP convs (3x3, dilation 12 / 24 / 36 on 16x16..33x33 maps) are
the case: dilation 24 and 36 on a 16x16 map become 1x1 convs (a plain GEMM).  Only applied
when the new pads stay >= 0 (a tap range starting past the padding would need a crop of x).
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer, is_int


def _tap_range(L: int, L_out: int, k: int, s: int, d: int, p: int) -> tuple[int, int] | None:
    """[i_lo, i_hi]: the taps that read inside [0, L) for some output index, or None."""
    lo_pos, hi_pos = -p, (L_out - 1) * s - p           # window starts of the first / last output
    valid = [i for i in range(k) if hi_pos + i * d >= 0 and lo_pos + i * d <= L - 1]
    return (valid[0], valid[-1]) if valid else None


def run(graph: Graph) -> Graph:
    convs = [n for n in graph.nodes if n.op == "Conv" and len(n.inputs) > 1
             and n.inputs[1] in graph.constants]
    if not convs:
        return graph
    inf = infer(graph)
    names = NameGen(graph)
    for node in convs:
        xs, ys = inf.shapes.get(node.inputs[0]), inf.shapes.get(node.outputs[0])
        w = graph.constants[node.inputs[1]]
        nk = w.ndim - 2
        a = node.attrs
        if xs is None or ys is None or nk < 1 or not all(is_int(v) for v in list(xs[2:]) + list(ys[2:])) \
                or a.get("auto_pad", "NOTSET") != "NOTSET":     # pads not explicit yet
            continue
        k, st, dil, pads = list(w.shape[2:]), list(a["strides"]), list(a["dilations"]), list(a["pads"])
        ranges = [_tap_range(int(xs[2 + j]), int(ys[2 + j]), k[j], st[j], dil[j], pads[j]) for j in range(nk)]
        if any(r is None for r in ranges) or all(r == (0, k[j] - 1) for j, r in enumerate(ranges)):
            continue                # a tap-free output (padding only) or nothing to drop
        new_pads = ([pads[j] - ranges[j][0] * dil[j] for j in range(nk)]
                    + [pads[nk + j] - (k[j] - 1 - ranges[j][1]) * dil[j] for j in range(nk)])
        if min(new_pads) < 0:
            continue
        crop = w[(slice(None), slice(None)) + tuple(slice(r[0], r[1] + 1) for r in ranges)]
        wname = names(f"{node.inputs[1]}_cropped")
        graph.constants[wname] = np.ascontiguousarray(crop)
        node.inputs[1] = wname
        a["kernel_shape"] = [r[1] - r[0] + 1 for r in ranges]
        a["pads"] = new_pads
    return graph
