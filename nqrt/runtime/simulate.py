"""Simulated (fake-quant) execution of an NqModel in numpy float64, logical NCHW.

Every uint8 tensor is carried as its integer codes q (with its own (s, z)); an op reads the
real values r = s·(q − z), computes in float64 from the *real scales* (weights q_w·s_w,
biases q_b·s_x·s_w; never M0/n), and re-quantizes its result with the output's (s, z):
q = clamp(round_half_even(r / s_y) + z_y, act_min, act_max) (clamping q is the spec's clamp
in real terms).  Quantize, Dequantize and Softmax follow the spec in float32 exactly as the
integer mode does.

How far it may differ from the integer mode (paragraph for the README/spec):

    Simulated mode computes each operator's exact real-valued result and rounds it once to
    the output grid, while the integer mode multiplies the same integer accumulator by the
    fixed-point multiplier M0·2^-n (relative error <= 2^-31 vs. the real multiplier; for
    QAdd the smaller of the two multipliers is rounded at the shared shift) and rounds half
    toward +inf, where simulation rounds half to even in float64.  So each requantized tensor
    agrees code for code except where the real value lies within about 2^-31 (relative) of a
    rounding tie, or exactly on a tie: there the two modes differ by one quantization step.
    For one operator with identical inputs, |q_int - q_sim| <= 1; MaxPool, ReduceMax,
    ReduceMin, QClip, Reshape,
    Flatten, Transpose, Slice, Squeeze, Unsqueeze, Pad, ResizeNearest, QLut (the table is the
    op), Quantize and Dequantize are exact.  Across layers the differences
    propagate (a one-step input difference can move later outputs by more than one step),
    so whole-model outputs agree closely but not bit for bit; the integer mode is the
    reference semantics.  Softmax may differ in the last float32 bits (exp implementations).
"""

from __future__ import annotations

import math

import numpy as np

from nqrt import qmath
from nqrt.format import schema
from nqrt.format.model import NqModel
from nqrt.kernels import movement, resize_cubic, resize_linear
from nqrt.runtime.limits import check_resize


def run(model: NqModel, feeds: dict) -> dict[str, np.ndarray]:
    """Graph outputs (float32) for `feeds` (graph input name -> float32 array)."""
    env = run_all(model, feeds)
    return {io.name: np.asarray(env[io.name], dtype=np.float32) for io in model.graph_outputs}


def run_all(model: NqModel, feeds: dict) -> dict[str, np.ndarray]:
    """Every run-time tensor: uint8 codes for quantized tensors, float32 for float ones."""
    env: dict[str, np.ndarray] = {io.name: np.asarray(feeds[io.name], np.float32) for io in model.graph_inputs}
    for node in model.nodes:
        env[node.outputs[0]] = _OPS[node.op](model, node, env)
    return env


# -- helpers -------------------------------------------------------------------------------

def _codes(model, name, env) -> np.ndarray:
    """uint8 codes of a run-time tensor, or of a uint8 constant operand (QAdd/QMul b)."""
    return env[name] if name in env else model.tensor(name).data


def _real(model, name, env) -> np.ndarray:
    s, z = model.qparams(name)
    return (_codes(model, name, env).astype(np.float64) - z) * s


def _requant(model, name, r, lo=0, hi=255) -> np.ndarray:
    s, z = model.qparams(name)
    q = np.rint(r / s) + z
    return np.clip(q, lo, hi).astype(np.uint8)


def _act(node):
    return node.attrs["act_min"], node.attrs["act_max"]


def _weight_real(model, name) -> np.ndarray:
    t = model.tensor(name)
    s = np.asarray(t.quant.scale, np.float64)
    w = t.data.astype(np.float64)
    return w * (s.reshape((-1,) + (1,) * (w.ndim - 1)) if s.size > 1 else s[0])


def _bias_real(model, node, s_x) -> np.ndarray:
    s_w = np.asarray(model.tensor(node.inputs[1]).quant.scale, np.float64)
    return model.tensor(node.inputs[2]).data.astype(np.float64) * s_x * s_w


def _as2d(x):
    """View rank-3 [N,C,L] as [N,C,1,L]."""
    return x[:, :, None, :] if x.ndim == 3 else x


def _geom(a, x, k):
    sp = x.ndim - 2
    pads = list(a["pads"])
    st = list(a["strides"])
    dil = list(a.get("dilations") or [1] * sp)
    if sp == 1:
        return [1, k[0]], [1, st[0]], [1, dil[0]], [0, pads[0]], [0, pads[1]]
    return list(k), st, dil, pads[:2], pads[2:]


def _out_size(S, k, s, d, pb, pe, ceil):
    span = S + pb + pe - d * (k - 1) - 1
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= S + pb:
        o -= 1
    return o


def _windows(x4, k, st, dil, pb, pe, ceil, fill):
    """Yield, for each kernel offset, the [N,C,OH,OW] slice of the padded input."""
    N, C, H, W = x4.shape
    O = [_out_size((H, W)[i], k[i], st[i], dil[i], pb[i], pe[i], ceil) for i in range(2)]
    ext = [max(pe[i], (O[i] - 1) * st[i] + dil[i] * (k[i] - 1) + 1 - (H, W)[i] - pb[i]) for i in range(2)]
    xp = np.pad(x4, ((0, 0), (0, 0), (pb[0], ext[0]), (pb[1], ext[1])), constant_values=fill)
    for i in range(k[0]):
        for j in range(k[1]):
            h0, w0 = i * dil[0], j * dil[1]
            yield (i, j), xp[:, :, h0:h0 + st[0] * (O[0] - 1) + 1:st[0], w0:w0 + st[1] * (O[1] - 1) + 1:st[1]]


def _restore(y4, x):
    return y4[:, :, 0, :] if x.ndim == 3 else y4


# -- ops -------------------------------------------------------------------------------------

def _quantize(model, node, env):
    s, z = model.qparams(node.outputs[0])
    return qmath.quantize_float_ref(env[node.inputs[0]], s, z)


def _dequantize(model, node, env):
    s, z = model.qparams(node.inputs[0])
    return qmath.dequantize_ref(env[node.inputs[0]], s, z)


def _softmax(model, node, env):
    x = env[node.inputs[0]].astype(np.float32)
    e = np.exp(x - x.max(axis=node.attrs["axis"], keepdims=True))
    return (e / e.sum(axis=node.attrs["axis"], keepdims=True, dtype=np.float32)).astype(np.float32)


def _lrn(model, node, env):
    """LRN in float32 as the kernel (nqrt/kernels/lrn.py) computes it, in numpy."""
    x = env[node.inputs[0]].astype(np.float32)
    a = node.attrs
    size = int(a["size"])
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.zeros_like(x)
    C = x.shape[1]
    for c in range(C):
        for j in range(max(0, c - lo), min(C - 1, c + hi) + 1):
            sq[:, c] += x[:, j] * x[:, j]
    k = np.float32(a["alpha"]) / np.float32(size)
    return (x / (np.float32(a["bias"]) + k * sq) ** np.float32(a["beta"])).astype(np.float32)


def _layernorm(model, node, env):
    """LayerNormalization in float32 as the kernel (nqrt/kernels/layernorm.py) computes it, in
    numpy: the spec's fixed-order sums (eight partial sums, then the tree)."""
    x = env[node.inputs[0]].astype(np.float32)
    axis = int(node.attrs["axis"])
    rows = x.reshape(math.prod(x.shape[:axis]), -1)
    scale = model.tensor(node.inputs[1]).data.astype(np.float32).reshape(-1)
    bias = model.tensor(node.inputs[2]).data.astype(np.float32).reshape(-1)

    def fixed_sum(v):
        n = v.shape[1]
        p = np.zeros((v.shape[0], 8), np.float32)
        n8 = n - n % 8
        for i in range(0, n8, 8):
            p = p + v[:, i:i + 8]
        for lane in range(n - n8):
            p[:, lane] = p[:, lane] + v[:, n8 + lane]
        return ((p[:, 0] + p[:, 1]) + (p[:, 2] + p[:, 3])) + ((p[:, 4] + p[:, 5]) + (p[:, 6] + p[:, 7]))

    n = np.float32(rows.shape[1])
    mean = np.zeros(rows.shape[0], np.float32) if node.attrs.get("rms", 0) else fixed_sum(rows) / n
    d = rows - mean[:, None]
    inv = np.float32(1.0) / np.sqrt(fixed_sum(d * d) / n + np.float32(node.attrs["epsilon"]))
    return ((d * inv[:, None]) * scale + bias).reshape(x.shape).astype(np.float32)


def _qconv(model, node, env):
    x_name = node.inputs[0]
    s_x, _ = model.qparams(x_name)
    x = _real(model, x_name, env)
    w = _weight_real(model, node.inputs[1])
    w4 = w[:, :, None, :] if w.ndim == 3 else w
    k, st, dil, pb, pe = _geom(node.attrs, x, w4.shape[2:] if x.ndim == 4 else w.shape[2:])
    group = node.attrs["group"]
    M, cg = w4.shape[:2]
    mg = M // group
    x4 = _as2d(x)
    y = None
    for (i, j), patch in _windows(x4, k, st, dil, pb, pe, 0, 0.0):
        for g in range(group):
            part = np.einsum("nchw,mc->nmhw", patch[:, g * cg:(g + 1) * cg], w4[g * mg:(g + 1) * mg, :, i, j])
            if y is None:
                y = np.zeros((x4.shape[0], M) + part.shape[2:])
            y[:, g * mg:(g + 1) * mg] += part
    y += _bias_real(model, node, s_x)[None, :, None, None]
    return _requant(model, node.outputs[0], _restore(y, x), *_act(node))


def _qgemm(model, node, env):
    s_x, _ = model.qparams(node.inputs[0])
    x = _real(model, node.inputs[0], env)
    w = _weight_real(model, node.inputs[1])
    y = x @ w.T + _bias_real(model, node, s_x)
    return _requant(model, node.outputs[0], y, *_act(node))


def _qadd(model, node, env):
    # signed multipliers (spec 4.3): Sub is a + (−1)·b, c − x is (−1)·x + c
    sa = -1.0 if node.attrs["multiplier_a"] < 0 else 1.0
    sb = -1.0 if node.attrs["multiplier_b"] < 0 else 1.0
    y = sa * _real(model, node.inputs[0], env) + sb * _real(model, node.inputs[1], env)
    return _requant(model, node.outputs[0], y, *_act(node))


def _qmul(model, node, env):
    y = _real(model, node.inputs[0], env) * _real(model, node.inputs[1], env)
    return _requant(model, node.outputs[0], y, *_act(node))


def _qmatmul(model, node, env):
    y = np.matmul(_real(model, node.inputs[0], env), _real(model, node.inputs[1], env))
    return _requant(model, node.outputs[0], y, *_act(node))


def _qsoftmax(model, node, env):
    """The real softmax (float64) of the input's real values, rounded once to the output grid
    (the integer op's fixed-point exponentials and reciprocal stay within a small fraction of
    a step of it: spec 4.21)."""
    x = _real(model, node.inputs[0], env)
    axis = int(node.attrs["axis"])
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return _requant(model, node.outputs[0], e / e.sum(axis=axis, keepdims=True), *_act(node))


def _reduce_extreme(model, node, env):
    x = _codes(model, node.inputs[0], env)
    axes = tuple(int(a) % x.ndim for a in node.attrs["axes"])
    fn = np.max if node.op == "ReduceMax" else np.min
    y = fn(x, axis=axes, keepdims=bool(node.attrs["keepdims"]))
    return np.clip(y, node.attrs["act_min"], node.attrs["act_max"]).astype(np.uint8)


def _expand(model, node, env):
    x = _codes(model, node.inputs[0], env)
    spec = [int(v) for v in node.attrs["shape"]]
    if -1 in spec:
        like = env[node.inputs[1]]
        spec = [like.shape[k] if v == -1 else v for k, v in enumerate(spec)]
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(spec))))


def _qlut(model, node, env):
    return model.tensor(node.inputs[1]).data[env[node.inputs[0]]]


def _qlut2(model, node, env):
    """The table, as the integer op reads it (exact by construction, spec 4.23)."""
    a, b = env[node.inputs[0]], _codes(model, node.inputs[1], env)
    t = model.tensor(node.inputs[2]).data
    return t[(a.astype(np.int64) << 8) | b.astype(np.int64)]


def _slice(model, node, env):
    x = env[node.inputs[0]]
    a = node.attrs
    for st, en, ax, sp in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        ax = ax % x.ndim
        first, n = movement.slice_range(st, en, sp, x.shape[ax])
        x = np.take(x, first + sp * np.arange(n, dtype=np.int64), axis=ax)
    return np.ascontiguousarray(x)


def _squeeze(model, node, env):
    x = env[node.inputs[0]]
    return x.reshape([d for i, d in enumerate(x.shape) if i not in {a % x.ndim for a in node.attrs["axes"]}])


def _unsqueeze(model, node, env):
    x = env[node.inputs[0]]
    r = x.ndim + len(node.attrs["axes"])
    axes = {a % r for a in node.attrs["axes"]}
    dims = iter(x.shape)
    return x.reshape([1 if i in axes else next(dims) for i in range(r)])


def _pad(model, node, env):
    x = env[node.inputs[0]]
    p, r = node.attrs["pads"], x.ndim
    return np.pad(x, [(p[d], p[d + r]) for d in range(r)], constant_values=np.uint8(node.attrs["value"]))


def _pad_border(model, node, env):
    x = env[node.inputs[0]]
    p, r = node.attrs["pads"], x.ndim
    return np.pad(x, [(p[d], p[d + r]) for d in range(r)], mode=node.attrs["mode"])


def _resize_nearest(model, node, env):
    x = env[node.inputs[0]]
    a = node.attrs
    geo = movement.resize_geometry(x.shape, a.get("scales"), a.get("sizes"))
    check_resize(node, x.shape, [n for n, _ in geo])
    for ax, (n, s) in enumerate(geo):
        idx = movement.resize_nearest_index(x.shape[ax], n, s, a["coordinate_transformation_mode"],
                                            a["nearest_mode"])
        x = np.take(x, idx, axis=ax)
    return np.ascontiguousarray(x)


def _resize_linear(model, node, env):
    """ResizeLinear in float64 with the spec's integer weights w / 2^11 (4.17), re-quantized:
    the integer mode's value before its rounding shift, rounded half to even here."""
    x = _real(model, node.inputs[0], env)
    a = node.attrs
    check_resize(node, x.shape, [n for n, _ in movement.resize_geometry(x.shape, a.get("scales"),
                                                                        a.get("sizes"))])
    OH, OW, tab = resize_linear.resize_linear_args(x.shape, a["coordinate_transformation_mode"],
                                                   a.get("scales"), a.get("sizes"))
    one = float(1 << resize_linear.LINEAR_BITS)
    for axis, t in ((2, tab[:3 * OH]), (3, tab[3 * OH:])):
        i0, i1, w = np.split(t, 3)
        lam = (w / one).reshape((-1, 1) if axis == 2 else (-1,))
        x = np.take(x, i0, axis=axis) * (1 - lam) + np.take(x, i1, axis=axis) * lam
    return _requant(model, node.outputs[0], x)


def _resize_cubic(model, node, env):
    """ResizeCubic in float64 with the spec's integer weights w / 2^11 (4.24), re-quantized
    (the overshoot of the negative lobes saturates there, as in the integer mode)."""
    x = _real(model, node.inputs[0], env)
    a = node.attrs
    check_resize(node, x.shape, [n for n, _ in movement.resize_geometry(x.shape, a.get("scales"),
                                                                        a.get("sizes"))])
    OH, OW, tab = resize_cubic.resize_cubic_args(x.shape, a["coordinate_transformation_mode"],
                                                 float(a["cubic_coeff_a"]), bool(a["exclude_outside"]),
                                                 a.get("scales"), a.get("sizes"))
    one = float(1 << resize_cubic.CUBIC_BITS)
    taps = resize_cubic.TAPS
    for axis, t in ((2, tab[:2 * taps * OH]), (3, tab[2 * taps * OH:])):
        index, weight = t.reshape(2, -1, taps)
        y = 0.0
        for j in range(taps):
            w = (weight[:, j] / one).reshape((-1, 1) if axis == 2 else (-1,))
            y = y + np.take(x, index[:, j], axis=axis) * w
        x = y
    return _requant(model, node.outputs[0], x)


def _qconcat(model, node, env):
    y = np.concatenate([_real(model, n, env) for n in node.inputs], axis=node.attrs["axis"])
    return _requant(model, node.outputs[0], y)


def _maxpool(model, node, env):
    x = _real(model, node.inputs[0], env)
    k, st, dil, pb, pe = _geom(node.attrs, x, node.attrs["kernel_shape"])
    y = None
    for _, patch in _windows(_as2d(x), k, st, dil, pb, pe, node.attrs["ceil_mode"], -np.inf):
        y = patch.copy() if y is None else np.maximum(y, patch)
    return _requant(model, node.outputs[0], _restore(y, x), *_act(node))


def _qaveragepool(model, node, env):
    x = _real(model, node.inputs[0], env)
    a = node.attrs
    k, st, dil, pb, pe = _geom(a, x, a["kernel_shape"])
    x4 = _as2d(x)
    ones = np.ones((1, 1) + x4.shape[2:])
    # count_include_pad: padded positions count (ones padded with ones), ceil extras do not.
    inside = np.pad(ones, ((0, 0), (0, 0), (pb[0], pe[0]), (pb[1], pe[1])), constant_values=1.0) \
        if a["count_include_pad"] else ones
    pb_c, pe_c = ([0, 0], [0, 0]) if a["count_include_pad"] else (pb, pe)
    total = cnt = None
    for _, patch in _windows(x4, k, st, dil, pb, pe, a["ceil_mode"], 0.0):
        total = patch.copy() if total is None else total + patch
    for _, patch in _windows(inside, k, st, dil, pb_c, pe_c, a["ceil_mode"], 0.0):
        cnt = patch.copy() if cnt is None else cnt + patch
    return _requant(model, node.outputs[0], _restore(total / cnt, x), *_act(node))


def _qreducemean(model, node, env):
    x = _real(model, node.inputs[0], env)
    axes = tuple(int(a) % x.ndim for a in node.attrs["axes"])
    keep = bool(node.attrs["keepdims"])
    y = x.sum(axis=axes, keepdims=keep) if node.attrs.get("sum", 0) else x.mean(axis=axes, keepdims=keep)
    return _requant(model, node.outputs[0], y, *_act(node))


def _qclip(model, node, env):
    return np.clip(env[node.inputs[0]], *_act(node)).astype(np.uint8)


def _reshape(model, node, env):
    x = env[node.inputs[0]]
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(node.attrs["shape"])]
    return x.reshape(shape)


def _flatten(model, node, env):
    x = env[node.inputs[0]]
    axis = node.attrs["axis"]
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _concat(model, node, env):
    """Float Concat: the float32 values, moved (no rounding)."""
    return np.concatenate([env[t].astype(np.float32) for t in node.inputs], axis=int(node.attrs["axis"]))


def _transpose(model, node, env):
    return np.ascontiguousarray(env[node.inputs[0]].transpose(node.attrs["perm"]))


_OPS = {
    "Quantize": _quantize, "Dequantize": _dequantize, "Softmax": _softmax, "LRN": _lrn,
    "LayerNormalization": _layernorm, "Concat": _concat,
    "QConv": _qconv, "QGemm": _qgemm, "QAdd": _qadd, "QConcat": _qconcat,
    "MaxPool": _maxpool, "QAveragePool": _qaveragepool, "QReduceMean": _qreducemean,
    "QClip": _qclip, "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose,
    "QLut": _qlut, "QLut2": _qlut2, "QMul": _qmul, "Slice": _slice, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Pad": _pad, "PadBorder": _pad_border, "ResizeNearest": _resize_nearest,
    "ResizeLinear": _resize_linear, "ResizeCubic": _resize_cubic, "QMatMul": _qmatmul, "QSoftmax": _qsoftmax,
    "ReduceMax": _reduce_extreme, "ReduceMin": _reduce_extreme, "Expand": _expand,
}
assert set(_OPS) == set(schema.ALL_OPS), "simulated mode must cover the schema's op table"
