"""Lower ConvTranspose to a Conv followed by a depth-to-space and a crop (ops with int8 kernels).

Per spatial axis (stride s, dilation d, kernel k, input length L, pads p_b / p_e), tap t of a
transposed convolution adds x[i]·w[t] to the uncropped output at u = i·s + t·d.  Split u by
its phase r = u mod s: the taps with (t·d) mod s = r, at offsets m_t = (t·d) div s, give phase
r at position o = u div s the value Σ_t x[o − m_t]·w[t] — an ordinary stride-1 correlation
with that phase's taps placed at kernel index K' − 1 − m_t, K' = 1 + max_t m_t, and K' − 1 zeros
of begin padding.  All phases share the kernel size K' (a phase with fewer taps gets zero
taps), so the s (s_h·s_w in 2-D) phases are the output channels of ONE Conv:

  ConvTranspose(x, W[C_in, C_out/g, k...], B)
    -> Conv(x, V[phases·C_out, C_in/g, K'...], B repeated; strides 1, pads (P, P_end), group g)
       Reshape / Transpose / Reshape   depth-to-space: phase r of position o -> o·s + r
       Slice                            crop to the requested output (pads, output_shape)

Channel order: phase-major (DCR, channel = phase·C_out + c) for group 1, so that on a
channels-last tensor the depth-to-space moves runs of s·C_out contiguous bytes;
channel-major (CRD, c·phases + phase) with groups, which keeps each group's output channels
contiguous as a grouped Conv needs.  Begin padding beyond whole phase periods is dropped from
the Conv instead of computed and cropped (P = K' − 1 − q, q = min(p_b div s, K' − 1)); the end
padding P_end makes the Conv just long enough for the crop.

Exact in float up to summation order: every product x·w of the definition appears once, and
positions no tap reaches read only padding (bias only), as in ConvTranspose.  A BN / channel
affine after the ConvTranspose is folded into W and B first (fold_batchnorm) and a following
Relu / Clip into attrs["act"] (fuse_activation), which the Conv inherits: this pass runs after
both in the pipeline.  Nodes whose weight or bias is not a constant, or whose input's
channel and spatial sizes are unknown, are left alone (the converter reports them).
"""

from __future__ import annotations

import math

import numpy as np

from nqrt.errors import FormatError
from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import conv_transpose_output, conv_transpose_pads, infer, is_int


def phase_geometry(L: int, k: int, s: int, d: int, pad_b: int, out_len: int):
    """One axis: (K', taps, P, P_end, L', crop_b, crop_e).

    taps[t] = (phase r, kernel index a) of ConvTranspose tap t; the Conv has kernel K', pads
    (P, P_end) and output length L'; the depth-to-space result (L'·s long) is cropped by crop_b
    at the start and crop_e at the end.  Invariants: crop_b + out_len + crop_e = L'·s, all >= 0.
    """
    m = [(t * d) // s for t in range(k)]
    k2 = max(m) + 1
    taps = [((t * d) % s, k2 - 1 - m[t]) for t in range(k)]
    q = min(pad_b // s, k2 - 1)
    p_begin, crop_b = k2 - 1 - q, pad_b - q * s
    p_end = max(0, -(-(crop_b + out_len) // s) - L + q)
    l2 = L + p_begin + p_end - k2 + 1
    return k2, taps, p_begin, p_end, l2, crop_b, l2 * s - crop_b - out_len


def _label(node: Node) -> str:
    return node.name or node.outputs[0]


def _lower(node: Node, graph: Graph, xs, names: NameGen) -> list[Node]:
    a = node.attrs
    w = np.asarray(graph.constants[node.inputs[1]], np.float32)
    nk = w.ndim - 2
    label = _label(node)
    k = [int(v) for v in w.shape[2:]]
    if a.get("kernel_shape") is not None and [int(v) for v in a["kernel_shape"]] != k:
        raise FormatError(f"ConvTranspose node {label}: kernel_shape {list(a['kernel_shape'])} "
                          f"does not match the weight's {k}")
    g = int(a.get("group", 1))
    c_in = int(xs[1])
    if w.shape[0] != c_in:
        raise FormatError(f"ConvTranspose node {label}: weight has {w.shape[0]} input channels, "
                          f"the input {c_in}")
    cg, mg = c_in // g, int(w.shape[1])
    st = [int(v) for v in a.get("strides") or [1] * nk]
    dil = [int(v) for v in a.get("dilations") or [1] * nk]
    spatial = [int(v) for v in xs[2:]]
    try:
        pads = conv_transpose_pads(a, spatial, k)
    except ValueError as e:
        raise FormatError(f"ConvTranspose node {label}: {e}") from None
    out = conv_transpose_output(dict(a, pads=pads, auto_pad="NOTSET", output_shape=None), spatial, k)
    if min(out) < 1:
        raise FormatError(f"ConvTranspose node {label}: pads {pads} leave an empty output {list(out)}")
    geo = [phase_geometry(spatial[i], k[i], st[i], dil[i], pads[i], out[i]) for i in range(nk)]
    k2 = [gi[0] for gi in geo]

    # V in channel-major order [g, C_out/g, phases..., C_in/g, K'...]; tap (r, a) <- W[.., t]
    wg = w.reshape((g, cg, mg) + tuple(k))
    v = np.zeros((g, mg) + tuple(st) + (cg,) + tuple(k2), np.float32)
    for taps in np.ndindex(*k):
        r = tuple(geo[i][1][t][0] for i, t in enumerate(taps))
        at = tuple(geo[i][1][t][1] for i, t in enumerate(taps))
        v[(slice(None), slice(None)) + r + (slice(None),) + at] = wg[(Ellipsis,) + taps].transpose(0, 2, 1)
    phases = math.prod(st)
    dcr = g == 1
    if dcr:       # phase-major: [phases..., C_out, C_in, K'...]
        v = v[0].transpose(tuple(range(1, 1 + nk)) + (0,) + tuple(range(1 + nk, 2 + 2 * nk)))
    v = np.ascontiguousarray(v).reshape((phases * g * mg, cg) + tuple(k2))
    if len(node.inputs) > 2 and node.inputs[2]:
        b = np.asarray(graph.constants[node.inputs[2]], np.float32).reshape(-1)
    else:
        b = np.zeros(g * mg, np.float32)
    b = np.tile(b, phases) if dcr else np.repeat(b, phases)

    y = node.outputs[0]
    conv_attrs = {"auto_pad": "NOTSET", "kernel_shape": k2, "strides": [1] * nk, "dilations": [1] * nk,
                  "pads": [gi[2] for gi in geo] + [gi[3] for gi in geo], "group": g}
    if "act" in a:
        conv_attrs["act"] = a["act"]
    w_name, b_name = names(f"{label}_phase_W"), names(f"{label}_phase_bias")
    graph.constants[w_name], graph.constants[b_name] = v, b.astype(np.float32)
    crop = any(gi[5] or gi[6] for gi in geo)
    spread = phases > 1
    conv_out = names(f"{y}_phases") if spread or crop else y
    nodes = [Node("Conv", [node.inputs[0], w_name, b_name], [conv_out], conv_attrs, f"{label}/phases")]
    cur = conv_out
    l2 = [gi[4] for gi in geo]
    c_out = g * mg
    if spread:
        if dcr:       # [N, s..., C, L'...] -> [N, C, (L'_i, s_i)...]
            split = [-1] + st + [c_out] + l2
            perm = [0, 1 + nk] + [p for i in range(nk) for p in (2 + nk + i, 1 + i)]
        else:         # [N, C, s..., L'...] -> [N, C, (L'_i, s_i)...]
            split = [-1, c_out] + st + l2
            perm = [0, 1] + [p for i in range(nk) for p in (2 + nk + i, 2 + i)]
        t1, t2 = names(f"{y}_split"), names(f"{y}_interleaved")
        t3 = names(f"{y}_uncropped") if crop else y
        nodes += [Node("Reshape", [cur], [t1], {"shape": split, "allowzero": 0}, f"{label}/split_phases"),
                  Node("Transpose", [t1], [t2], {"perm": perm}, f"{label}/interleave"),
                  Node("Reshape", [t2], [t3], {"shape": [-1, c_out] + [l2[i] * st[i] for i in range(nk)],
                                                "allowzero": 0}, f"{label}/merge_phases")]
        cur = t3
    if crop:
        axes = [2 + i for i in range(nk) if geo[i][5] or geo[i][6]]
        nodes.append(Node("Slice", [cur], [y], {
            "starts": [geo[ax - 2][5] for ax in axes],
            "ends": [l2[ax - 2] * st[ax - 2] - geo[ax - 2][6] for ax in axes],
            "axes": axes, "steps": [1] * len(axes)}, f"{label}/crop"))
    return nodes


def _lowerable(node: Node, graph: Graph, xs) -> bool:
    if len(node.inputs) < 2 or node.inputs[1] not in graph.constants:
        return False
    if len(node.inputs) > 2 and node.inputs[2] and node.inputs[2] not in graph.constants:
        return False
    nk = np.ndim(graph.constants[node.inputs[1]]) - 2
    return (xs is not None and len(xs) == nk + 2 and nk in (1, 2)
            and all(is_int(d) for d in xs[1:]))


def run(graph: Graph) -> Graph:
    if not any(n.op == "ConvTranspose" for n in graph.nodes):
        return graph
    inf = infer(graph)
    names = NameGen(graph)
    out: list[Node] = []
    for node in graph.nodes:
        xs = inf.shapes.get(node.inputs[0]) if node.inputs else None
        if node.op == "ConvTranspose" and _lowerable(node, graph, xs):
            out += _lower(node, graph, xs, names)
        else:
            out.append(node)
    graph.nodes = out
    return graph
