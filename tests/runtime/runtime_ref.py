"""Spec-level integer reference of formats/nq-v1.md section 4, in numpy, logical NCHW.

Slow and obviously correct: int64 everywhere, windows by explicit index arithmetic, one
`requantize` (qmath.requantize_ref).  Independent of the runtime's planner and kernels.
"""

from __future__ import annotations

import numpy as np

from nqrt import qmath


def out_size(S, k, s, d, pb, pe, ceil):
    span = S + pb + pe - d * (k - 1) - 1
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= S + pb:
        o -= 1
    return o


def output(acc, m0, n, z_y, lo, hi):
    return np.clip(qmath.requantize_ref(acc, m0, n) + z_y, lo, hi).astype(np.uint8)


def _spatial(attrs, x, k):
    """(k, strides, dilations, pad_begin, pad_end) as 2-D lists; rank-3 x gets H = 1."""
    sp = x.ndim - 2
    st, pads = list(attrs["strides"]), list(attrs["pads"])
    dil = list(attrs.get("dilations") or [1] * sp)
    if sp == 1:
        return [1, k[0]], [1, st[0]], [1, dil[0]], [0, pads[0]], [0, pads[1]]
    return list(k), st, dil, pads[:2], pads[2:]


def _positions(o, k, s, d, pb, S):
    """Input indices of window `o` and whether each lies inside the input."""
    idx = o * s + np.arange(k) * d - pb
    return idx, (idx >= 0) & (idx < S)


def conv_acc(xq, z_x, w, bias, attrs):
    """int64 acc[n, m, *S'] = Σ (x_pad − z_x)·w + bias (spec 4.1)."""
    x4 = xq[:, :, None, :] if xq.ndim == 3 else xq
    w4 = w[:, :, None, :] if w.ndim == 3 else w
    k, st, dil, pb, pe = _spatial(attrs, xq, w.shape[2:])
    N, C, H, W = x4.shape
    M, cg = w4.shape[:2]
    g = attrs["group"]
    mg = M // g
    OH = out_size(H, k[0], st[0], dil[0], pb[0], pe[0], 0)
    OW = out_size(W, k[1], st[1], dil[1], pb[1], pe[1], 0)
    xd = x4.astype(np.int64) - z_x
    acc = np.zeros((N, M, OH, OW), np.int64)
    for oh in range(OH):
        hi, hin = _positions(oh, k[0], st[0], dil[0], pb[0], H)
        for ow in range(OW):
            wi, win = _positions(ow, k[1], st[1], dil[1], pb[1], W)
            for m in range(M):
                c0 = (m // mg) * cg
                for a in range(k[0]):
                    for b in range(k[1]):
                        if hin[a] and win[b]:
                            acc[:, m, oh, ow] += xd[:, c0:c0 + cg, hi[a], wi[b]] @ w4[m, :, a, b].astype(np.int64)
    acc += bias.astype(np.int64)[None, :, None, None]
    return acc[:, :, 0, :] if xq.ndim == 3 else acc


def gemm_acc(xq, z_x, w, bias):
    return (xq.astype(np.int64) - z_x) @ w.astype(np.int64).T + bias.astype(np.int64)


def pool(xq, attrs, kind, z_x=0):
    """MaxPool: max over inside positions.  Avg: (sum of x − z_x, count) per spec 4.6."""
    x4 = xq[:, :, None, :] if xq.ndim == 3 else xq
    k, st, dil, pb, pe = _spatial(attrs, xq, attrs["kernel_shape"])
    if kind == "avg":
        dil = [1, 1]
    N, C, H, W = x4.shape
    ceil = attrs["ceil_mode"]
    OH = out_size(H, k[0], st[0], dil[0], pb[0], pe[0], ceil)
    OW = out_size(W, k[1], st[1], dil[1], pb[1], pe[1], ceil)
    val = np.zeros((N, C, OH, OW), np.int64)
    cnt = np.zeros((OH, OW), np.int64)
    for oh in range(OH):
        hi, hin = _positions(oh, k[0], st[0], dil[0], pb[0], H)
        for ow in range(OW):
            wi, win = _positions(ow, k[1], st[1], dil[1], pb[1], W)
            cells = [(hi[a], wi[b]) for a in range(k[0]) for b in range(k[1]) if hin[a] and win[b]]
            vals = np.stack([x4[:, :, h, w].astype(np.int64) for h, w in cells], axis=-1)
            if kind == "max":
                val[:, :, oh, ow] = vals.max(axis=-1)
            else:
                val[:, :, oh, ow] = (vals - z_x).sum(axis=-1)
                if attrs["count_include_pad"]:
                    hp = ((hi >= -pb[0]) & (hi < H + pe[0])).sum()
                    wp = ((wi >= -pb[1]) & (wi < W + pe[1])).sum()
                    cnt[oh, ow] = hp * wp
                else:
                    cnt[oh, ow] = len(cells)
    if xq.ndim == 3:
        return val[:, :, 0, :], cnt[0]
    return val, cnt


def run(model, feeds):
    """Every run-time tensor of `model` on `feeds` (uint8 codes / float32)."""
    env = {io.name: np.asarray(feeds[io.name], np.float32) for io in model.graph_inputs}
    for node in model.nodes:
        env[node.outputs[0]] = OPS[node.op](model, node, env)
    return env


def _c(model, name):
    return model.tensor(name).data


def _op_quantize(model, node, env):
    return qmath.quantize_float_ref(env[node.inputs[0]], *model.qparams(node.outputs[0]))


def _op_dequantize(model, node, env):
    return qmath.dequantize_ref(env[node.inputs[0]], *model.qparams(node.inputs[0]))


def _op_softmax(model, node, env):
    x = env[node.inputs[0]].astype(np.float64)
    e = np.exp(x - x.max(axis=node.attrs["axis"], keepdims=True))
    return (e / e.sum(axis=node.attrs["axis"], keepdims=True)).astype(np.float32)


def _mult_shift(model, node, first, m):
    mult = _c(model, node.inputs[first]).astype(np.int64).ravel()
    shift = _c(model, node.inputs[first + 1]).astype(np.int64).ravel()
    return np.broadcast_to(mult, (m,)), np.broadcast_to(shift, (m,))


def _op_qconv(model, node, env):
    x = node.inputs[0]
    _, z_x = model.qparams(x)
    _, z_y = model.qparams(node.outputs[0])
    w = _c(model, node.inputs[1])
    acc = conv_acc(env[x], z_x, w, _c(model, node.inputs[2]), node.attrs)
    m0, n = _mult_shift(model, node, 3, w.shape[0])
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    return output(acc, m0.reshape(shape), n.reshape(shape), z_y, node.attrs["act_min"], node.attrs["act_max"])


def _op_qgemm(model, node, env):
    _, z_x = model.qparams(node.inputs[0])
    _, z_y = model.qparams(node.outputs[0])
    w = _c(model, node.inputs[1])
    acc = gemm_acc(env[node.inputs[0]], z_x, w, _c(model, node.inputs[2]))
    m0, n = _mult_shift(model, node, 3, w.shape[0])
    return output(acc, m0, n, z_y, node.attrs["act_min"], node.attrs["act_max"])


def _codes(model, env, name):
    """uint8 codes of a run-time tensor or of a uint8 constant (QAdd/QMul b, spec 2.1)."""
    return env[name] if name in env else model.tensor(name).data


def _op_qadd(model, node, env):
    a, b = node.inputs
    (_, za), (_, zb), (_, zy) = model.qparams(a), model.qparams(b), model.qparams(node.outputs[0])
    at = node.attrs
    da, db = _codes(model, env, a).astype(np.int64) - za, _codes(model, env, b).astype(np.int64) - zb
    s = at["shift"]
    v = (da * at["multiplier_a"] + db * at["multiplier_b"] + (1 << (s - 1))) >> s
    return np.clip(v + zy, at["act_min"], at["act_max"]).astype(np.uint8)


def _op_qconcat(model, node, env):
    _, zy = model.qparams(node.outputs[0])
    parts = [output(env[x].astype(np.int64) - model.qparams(x)[1], m, n, zy, 0, 255)
             for x, m, n in zip(node.inputs, node.attrs["multipliers"], node.attrs["shifts"])]
    return np.concatenate(parts, axis=node.attrs["axis"])


def _op_maxpool(model, node, env):
    v, _ = pool(env[node.inputs[0]], node.attrs, "max")
    return np.clip(v, node.attrs["act_min"], node.attrs["act_max"]).astype(np.uint8)


def _op_qaveragepool(model, node, env):
    _, z_x = model.qparams(node.inputs[0])
    _, z_y = model.qparams(node.outputs[0])
    s, cnt = pool(env[node.inputs[0]], node.attrs, "avg", z_x)
    mult = _c(model, node.inputs[1]).astype(np.int64)
    shift = _c(model, node.inputs[2]).astype(np.int64)
    return output(s, mult[cnt], shift[cnt], z_y, node.attrs["act_min"], node.attrs["act_max"])


def _op_qreducemean(model, node, env):
    x = node.inputs[0]
    (s_x, z_x), (s_y, z_y) = model.qparams(x), model.qparams(node.outputs[0])
    xq = env[x]
    axes = tuple(sorted(a % xq.ndim for a in node.attrs["axes"]))
    total = (xq.astype(np.int64) - z_x).sum(axis=axes, keepdims=bool(node.attrs["keepdims"]))
    count = int(np.prod([xq.shape[a] for a in axes]))
    if count == node.attrs["count"] or node.attrs.get("sum", 0):
        m0, n = int(_c(model, node.inputs[1])[0]), int(_c(model, node.inputs[2])[0])
    else:
        m0, n = qmath.quantize_multiplier(s_x / (s_y * count))
    return output(total, m0, n, z_y, node.attrs["act_min"], node.attrs["act_max"])


def _op_qclip(model, node, env):
    return np.clip(env[node.inputs[0]], node.attrs["act_min"], node.attrs["act_max"]).astype(np.uint8)


def _op_reshape(model, node, env):
    x = env[node.inputs[0]]
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(node.attrs["shape"])])


def _op_flatten(model, node, env):
    x = env[node.inputs[0]]
    a = node.attrs["axis"]
    a = a + x.ndim if a < 0 else a
    return x.reshape(int(np.prod(x.shape[:a])), -1)


def _op_transpose(model, node, env):
    return np.ascontiguousarray(env[node.inputs[0]].transpose(node.attrs["perm"]))


# -- CNN extension ops (spec 4.9-4.14), written from the spec text ----------------------------

def _op_qlut(model, node, env):
    """4.9: y = table[x]."""
    table = _c(model, node.inputs[1])
    x = env[node.inputs[0]]
    y = np.empty(x.shape, np.uint8)
    for idx in np.ndindex(*x.shape):
        y[idx] = table[int(x[idx])]
    return y


def _op_qmul(model, node, env):
    """4.10: clamp(requantize((a − z_a)·(b − z_b), multiplier, shift) + z_y)."""
    a, b = node.inputs
    (_, za), (_, zb), (_, zy) = model.qparams(a), model.qparams(b), model.qparams(node.outputs[0])
    at = node.attrs
    prod = (_codes(model, env, a).astype(np.int64) - za) * (_codes(model, env, b).astype(np.int64) - zb)
    return output(prod, at["multiplier"], at["shift"], zy, at["act_min"], at["act_max"])


def slice_indices(start, end, step, d):
    """4.11, one axis: the input index read by each output index."""
    if start < 0:
        start += d
    if end < 0:
        end += d
    if step > 0:
        start, end = min(max(start, 0), d), min(max(end, 0), d)
    else:
        start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)
    length = max(0, -(-(end - start) // step))         # ceil((end − start) / step)
    return [start + i * step for i in range(length)]


def _op_slice(model, node, env):
    x = env[node.inputs[0]]
    a = node.attrs
    index = [list(range(d)) for d in x.shape]
    for st, en, ax, sp in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        ax = ax + x.ndim if ax < 0 else ax
        index[ax] = slice_indices(st, en, sp, x.shape[ax])
    return x[np.ix_(*[np.array(i, np.int64) for i in index])]


def _op_squeeze(model, node, env):
    x = env[node.inputs[0]]
    axes = {a + x.ndim if a < 0 else a for a in node.attrs["axes"]}
    assert all(x.shape[a] == 1 for a in axes)
    return x.reshape([d for k, d in enumerate(x.shape) if k not in axes])


def _op_unsqueeze(model, node, env):
    x = env[node.inputs[0]]
    r = x.ndim + len(node.attrs["axes"])
    axes = {a + r if a < 0 else a for a in node.attrs["axes"]}
    dims = list(x.shape)
    return x.reshape([1 if k in axes else dims.pop(0) for k in range(r)])


def _op_pad(model, node, env):
    x = env[node.inputs[0]]
    p, r = node.attrs["pads"], x.ndim
    y = np.full([x.shape[d] + p[d] + p[d + r] for d in range(r)], node.attrs["value"], np.uint8)
    for idx in np.ndindex(*x.shape):
        y[tuple(i + p[d] for d, i in enumerate(idx))] = x[idx]
    return y


def nearest_indices(L_in, L_out, s, coord, nearest):
    """4.14, one axis: float32 arithmetic in the order written, then the nearest_mode rounding
    (done on the exact float32 value) and the clamp."""
    f = np.float32
    idx = []
    for o in range(L_out):
        xr = f(o)
        if coord == "asymmetric":
            x = f(xr / s)
        elif coord == "half_pixel":
            x = f(f(f(xr + f(0.5)) / s) - f(0.5))
        elif coord == "pytorch_half_pixel":
            x = f(f(f(xr + f(0.5)) / s) - f(0.5)) if L_out > 1 else f(0)
        elif coord == "tf_half_pixel_for_nn":
            x = f(f(xr + f(0.5)) / s)
        elif coord == "align_corners":
            x = f(f(xr * f(L_in - 1)) / f(L_out - 1)) if L_out > 1 else f(0)
        else:
            raise ValueError(coord)
        x = float(x)
        fl = np.floor(x)
        frac = x - fl
        half_away = fl + 1 if (frac > 0.5 or (frac == 0.5 and x >= 0)) else fl   # −2.5 -> −3
        if nearest == "floor":
            i = fl
        elif nearest == "ceil":
            i = np.ceil(x)
        elif nearest == "round_prefer_ceil":
            i = half_away
        elif nearest == "round_prefer_floor":
            i = fl if frac == 0.5 else half_away
        else:
            raise ValueError(nearest)
        idx.append(int(min(max(i, 0), L_in - 1)))
    return idx


def resize_out_shape(shape, scales=None, sizes=None):
    """4.14: [(L_out, float32 scale)] per axis."""
    f = np.float32
    if sizes is not None:
        return [(int(n), f(f(n) / f(d))) for n, d in zip(sizes, shape)]
    return [(int(f(sc) * f(d)), f(sc)) for sc, d in zip(scales, shape)]


def _op_resize_nearest(model, node, env):
    x = env[node.inputs[0]]
    a = node.attrs
    geo = resize_out_shape(x.shape, a.get("scales"), a.get("sizes"))
    index = [nearest_indices(d, n, s, a["coordinate_transformation_mode"], a["nearest_mode"])
             for d, (n, s) in zip(x.shape, geo)]
    return x[np.ix_(*[np.array(i, np.int64) for i in index])]


OPS = {
    "Quantize": _op_quantize, "Dequantize": _op_dequantize, "Softmax": _op_softmax,
    "QConv": _op_qconv, "QGemm": _op_qgemm, "QAdd": _op_qadd, "QConcat": _op_qconcat,
    "MaxPool": _op_maxpool, "QAveragePool": _op_qaveragepool, "QReduceMean": _op_qreducemean,
    "QClip": _op_qclip, "Reshape": _op_reshape, "Flatten": _op_flatten, "Transpose": _op_transpose,
    "QLut": _op_qlut, "QMul": _op_qmul, "Slice": _op_slice, "Squeeze": _op_squeeze,
    "Unsqueeze": _op_unsqueeze, "Pad": _op_pad, "ResizeNearest": _op_resize_nearest,
}
