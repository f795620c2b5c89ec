"""Slow, obviously-correct numpy references for every kernel, written from formats/nq-v1.md
(sections 3 and 4) in the *logical* ONNX layout (NCHW), with int64 arithmetic throughout.

They never call nqrt.kernels.  Tests transpose to the kernels' NHWC layout and compare with
np.array_equal.  Per-channel arrays (bias, multiplier, shift) are int arrays of length M.
"""

import numpy as np


def requantize(acc, m0, n):
    """Spec 3.3: (acc·M0 + 2^(n−1)) >> n, int64, floor shift (Python ints: exact)."""
    acc = np.asarray(acc, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    return (acc * m0 + (np.int64(1) << (n - 1))) >> n


def _finish(acc, m0, n, z_y, act_min, act_max):
    return np.clip(requantize(acc, m0, n) + z_y, act_min, act_max).astype(np.uint8)


def out_size(S, k, stride, pad_begin, pad_end, dilation=1, ceil_mode=0):
    """Spec 4 output size, with the ONNX rule that the last window starts inside S + pad_begin."""
    span = S + pad_begin + pad_end - dilation * (k - 1) - 1
    o = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (o - 1) * stride >= S + pad_begin:
        o -= 1
    return o


def qconv(x, z_x, w, bias, mult, shift, z_y, act_min, act_max, strides, pads, dilations, group,
          out_hw):
    """QConv, x uint8 [N, C, H, W], w int8 [M, C/g, kh, kw] -> y uint8 [N, M, OH, OW].
    pads = (top, left, bottom, right); out_hw = (OH, OW) as the planner gives them."""
    N, C, H, W = x.shape
    M, Cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    pt, pl, pb, pr = pads
    OH, OW = out_hw
    # x_pad is z_x outside the input; make it large enough for every window the shape allows
    big_h = max(H + pt + pb, (OH - 1) * sh + dh * (kh - 1) + 1)
    big_w = max(W + pl + pr, (OW - 1) * sw + dw * (kw - 1) + 1)
    xp = np.full((N, C, big_h, big_w), z_x, dtype=np.int64)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    xc = xp - z_x
    Mg = M // group
    acc = np.zeros((N, M, OH, OW), dtype=np.int64)
    for m in range(M):
        g = m // Mg
        for c in range(Cg):
            for i in range(kh):
                for j in range(kw):
                    win = xc[:, g * Cg + c, i * dh:i * dh + (OH - 1) * sh + 1:sh,
                             j * dw:j * dw + (OW - 1) * sw + 1:sw]
                    acc[:, m] += win * np.int64(w[m, c, i, j])
    acc += np.asarray(bias, np.int64)[None, :, None, None]
    return _finish(acc, np.asarray(mult)[None, :, None, None], np.asarray(shift)[None, :, None, None],
                   z_y, act_min, act_max)


def qgemm(x, z_x, w, bias, mult, shift, z_y, act_min, act_max):
    """QGemm, x uint8 [P, K], w int8 [M, K] -> y uint8 [P, M]."""
    acc = (x.astype(np.int64) - z_x) @ w.astype(np.int64).T + np.asarray(bias, np.int64)
    return _finish(acc, np.asarray(mult)[None], np.asarray(shift)[None], z_y, act_min, act_max)


def quantize(x, scale, z):
    """Spec 3.1: clamp(round_half_even(float32(x) / float32(s)) + z, 0, 255); NaN -> z."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(x / np.float32(scale)).astype(np.float64)  # float32 division, then exact
    q = np.where(np.isnan(q), 0.0, q) + z
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize(q, scale, z):
    """Spec 3.1: float32(q − z) × float32(s)."""
    return (q.astype(np.int64) - z).astype(np.float32) * np.float32(scale)


def qadd(a, b, z_a, z_b, m_a, m_b, shift, z_y, act_min, act_max):
    """Spec 4.3 with numpy broadcasting of a and b."""
    da = a.astype(np.int64) - z_a
    db = b.astype(np.int64) - z_b
    v = ((da * m_a + db * m_b + (1 << (shift - 1))) >> shift) + z_y
    return np.clip(v, act_min, act_max).astype(np.uint8)


def requant_copy(x, z_x, m0, n, z_y, act_min, act_max):
    """Spec 4.4 for one input: clamp(requantize(x − z_x) + z_y)."""
    return _finish(x.astype(np.int64) - z_x, m0, n, z_y, act_min, act_max)


def _windows(S, k, stride, dilation, pad_begin, OS):
    """Per output index: the input positions of its window that lie inside [0, S)."""
    out = []
    for o in range(OS):
        pos = [o * stride - pad_begin + i * dilation for i in range(k)]
        out.append([p for p in pos if 0 <= p < S])
    return out


def maxpool(x, kernel, strides, pads, dilations, act_min, act_max, out_hw):
    """Spec 4.5, x uint8 [N, C, H, W]; an empty window gives 0 before the clamp."""
    N, C, H, W = x.shape
    rows = _windows(H, kernel[0], strides[0], dilations[0], pads[0], out_hw[0])
    cols = _windows(W, kernel[1], strides[1], dilations[1], pads[1], out_hw[1])
    y = np.zeros((N, C, *out_hw), np.int64)
    for a, rr in enumerate(rows):
        for b, cc in enumerate(cols):
            if rr and cc:
                y[:, :, a, b] = x[:, :, rr][:, :, :, cc].max(axis=(2, 3))
    return np.clip(y, act_min, act_max).astype(np.uint8)


def avgpool(x, z_x, kernel, strides, pads, count_include_pad, mult, shift, z_y, act_min,
            act_max, out_hw):
    """Spec 4.6, x uint8 [N, C, H, W], pads = (top, left, bottom, right); ONNX count rule:
    with count_include_pad the window is clipped by the end of the padded input only."""
    N, C, H, W = x.shape
    y = np.zeros((N, C, *out_hw), np.uint8)
    for a in range(out_hw[0]):
        for b in range(out_hw[1]):
            hs, ws = a * strides[0] - pads[0], b * strides[1] - pads[1]
            rr = [p for p in range(hs, hs + kernel[0]) if 0 <= p < H]
            cc = [p for p in range(ws, ws + kernel[1]) if 0 <= p < W]
            if count_include_pad:
                count = (min(hs + kernel[0], H + pads[2]) - hs) * (min(ws + kernel[1], W + pads[3]) - ws)
            else:
                count = len(rr) * len(cc)
            s = (x[:, :, rr][:, :, :, cc].astype(np.int64) - z_x).sum(axis=(2, 3))
            y[:, :, a, b] = _finish(s, mult[count], shift[count], z_y, act_min, act_max)
    return y


def reduce_mean(x, axes, z_x, m0, n, z_y, act_min, act_max):
    """Spec 4.7 (keepdims 0): sum of (x − z_x) over axes, requantized."""
    s = (x.astype(np.int64) - z_x).sum(axis=tuple(axes))
    return _finish(s, m0, n, z_y, act_min, act_max)


def softmax(x, axis):
    """Float64 softmax (the accuracy reference for the float32 kernel)."""
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- CNN extension ops (spec 4.9-4.14) ------------------------------------------------------

def lut(x, table):
    """Spec 4.9: y = table[x]."""
    return np.asarray(table, np.uint8)[np.asarray(x, np.int64)]


def qmul(a, b, z_a, z_b, m0, n, z_y, act_min, act_max):
    """Spec 4.10 with numpy broadcasting of a and b."""
    acc = (a.astype(np.int64) - z_a) * (b.astype(np.int64) - z_b)
    return _finish(acc, m0, n, z_y, act_min, act_max)


def qmatmul(a, b, z_a, z_b, m0, n, z_y, act_min, act_max):
    """Spec 4.19: numpy matmul (batch dims broadcast) of the centered codes, then 3.3."""
    acc = np.matmul(a.astype(np.int64) - z_a, b.astype(np.int64) - z_b)
    return _finish(acc, m0, n, z_y, act_min, act_max)


def _slice_indices(start, end, step, d):
    """Spec 4.11, one axis: the list of input indices, by walking from the clamped start."""
    if start < 0:
        start += d
    if end < 0:
        end += d
    if step > 0:
        start, end = min(max(start, 0), d), min(max(end, 0), d)
        out, i = [], start
        while i < end:
            out.append(i)
            i += step
    else:
        start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)
        out, i = [], start
        while i > end:
            out.append(i)
            i += step
    return out


def slice_(x, starts, ends, axes, steps):
    """Spec 4.11 on x of any rank."""
    y = np.asarray(x)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = ax % y.ndim
        y = np.take(y, np.array(_slice_indices(st, en, sp, y.shape[ax]), np.int64), axis=ax)
    return y


def pad(x, pads, value):
    """Spec 4.13: constant pad with code `value`; pads = [begins..., ends...]."""
    r = x.ndim
    y = np.full([x.shape[d] + pads[d] + pads[d + r] for d in range(r)], value, np.uint8)
    y[tuple(slice(pads[d], pads[d] + x.shape[d]) for d in range(r))] = x
    return y


def _nearest_axis(L_in, L_out, s, coord, nearest):
    """Spec 4.14, one axis, every step a float32 operation."""
    f = np.float32
    s = f(s)
    out = []
    for o in range(L_out):
        xo = f(o)
        if coord == "asymmetric":
            c = xo / s
        elif coord == "half_pixel":
            c = (xo + f(0.5)) / s - f(0.5)
        elif coord == "pytorch_half_pixel":
            c = (xo + f(0.5)) / s - f(0.5) if L_out > 1 else f(0.0)
        elif coord == "tf_half_pixel_for_nn":
            c = (xo + f(0.5)) / s
        else:                                           # align_corners
            c = (xo * f(L_in - 1)) / f(L_out - 1) if L_out > 1 else f(0.0)
        c = float(c)
        away = np.sign(c) * np.floor(abs(c) + 0.5)     # round half away from zero (float64: exact)
        if nearest == "floor":
            i = np.floor(c)
        elif nearest == "ceil":
            i = np.ceil(c)
        elif nearest == "round_prefer_ceil":
            i = away
        else:                                           # round_prefer_floor
            i = np.floor(c) if c == float(f(np.trunc(c)) + f(0.5)) else away
        out.append(int(min(max(i, 0), L_in - 1)))
    return out


def resize_nearest(x, coord, nearest, scales=None, sizes=None):
    """Spec 4.14 on x of any rank (axis by axis)."""
    y = np.asarray(x)
    for ax in range(x.ndim):
        L_in = x.shape[ax]
        if sizes is not None:
            L_out = int(sizes[ax])
            s = np.float32(L_out) / np.float32(L_in)
        else:
            s = np.float32(scales[ax])
            L_out = int(np.floor(s * np.float32(L_in)))
        y = np.take(y, np.array(_nearest_axis(L_in, L_out, s, coord, nearest), np.int64), axis=ax)
    return y


def qsoftmax(x, axis, table, G, n, z_y, act_min, act_max):
    """Spec 4.21 with Python integers: m = max, S = Σ table[m − x], R = G // S,
    y = clamp(((table[m − x]·R + 2^(n−1)) >> n) + z_y)."""
    x = np.asarray(x, np.int64)
    t = [int(v) for v in np.asarray(table).reshape(-1)]
    xm = np.moveaxis(x, axis, -1)
    y = np.empty(xm.shape, np.uint8)
    for idx in np.ndindex(*xm.shape[:-1]):
        row = [int(v) for v in xm[idx]]
        m = max(row)
        e = [t[m - v] for v in row]
        r = int(G) // sum(e)
        y[idx] = [min(max(((ea * r + (1 << (n - 1))) >> n) + z_y, act_min), act_max) for ea in e]
    return np.moveaxis(y, -1, axis)


def reduce_extreme(x, axes, keepdims, minimum, act_min, act_max):
    """Spec 4.22: the max (min) code over `axes`, clamped."""
    fn = np.min if minimum else np.max
    y = fn(np.asarray(x), axis=tuple(axes), keepdims=bool(keepdims))
    return np.clip(y, act_min, act_max).astype(np.uint8)
