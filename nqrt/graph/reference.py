"""Float reference executor of the IR, in numpy (float32 compute).

`run(graph, feeds, observe=None)` evaluates the nodes in order and returns the graph outputs.
`observe(name, array)` is called once for every graph input and every node output, right
after it is produced; intermediates are freed after their last consumer ran, so a
calibrator can stream ranges without holding every activation.

`OPS` maps an IR op name to `fn(attrs, *data_inputs) -> array | tuple of arrays`.  Attribute
inputs (shapes.ATTR_INPUTS) still fed at run time are merged into attrs before the call, so
functions only see data inputs; absent optional inputs are None.  A node's `attrs["act"] =
(lo, hi)` clamps its (first) output after the call.

Conv is im2col + one (batched over groups) matmul; pools use strided windows.  Agreement with
ONNX Runtime FP32 is within 1e-4 relative error on the test models.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nqrt.errors import InputError, NqrtError, UnsupportedOpError
from nqrt.graph.ir import Graph, Node
from nqrt.graph.normalize import attr_from_tensor
from nqrt.graph.shapes import (ATTR_INPUTS, conv_transpose_output, conv_transpose_pads, norm_axis, resize_params, resolve_auto_pad, shape_range,
                               slice_params, slice_range, split_sizes, window_output_dim)

# -- windows --------------------------------------------------------------------------------


def _window_geometry(attrs: dict, x: np.ndarray):
    k = list(attrs["kernel_shape"])
    nk = len(k)
    strides = list(attrs.get("strides") or [1] * nk)
    dil = list(attrs.get("dilations") or [1] * nk)
    pads = resolve_auto_pad(dict(attrs, strides=strides, dilations=dil,
                                 pads=attrs.get("pads") or [0] * (2 * nk)), x.shape[2:])
    ceil = attrs.get("ceil_mode", 0)
    out = [window_output_dim(x.shape[2 + i], k[i], strides[i], pads[i], pads[i + nk], dil[i], ceil)
           for i in range(nk)]
    return k, strides, dil, pads, out


def _windows(x: np.ndarray, k, strides, dil, pads, out, fill: float) -> np.ndarray:
    """View [N, C, *out, *k] of x padded with `fill` (extra end padding for ceil_mode)."""
    nk = len(k)
    widths = [(0, 0), (0, 0)]
    for i in range(nk):
        need = (out[i] - 1) * strides[i] + (k[i] - 1) * dil[i] + 1   # padded length used
        end = max(need - x.shape[2 + i] - pads[i], 0)
        widths.append((pads[i], end))
    xp = np.pad(x, widths, constant_values=fill) if any(w != (0, 0) for w in widths) else x
    st = xp.strides
    shape = xp.shape[:2] + tuple(out) + tuple(k)
    strd = st[:2] + tuple(st[2 + i] * strides[i] for i in range(nk)) + tuple(st[2 + i] * dil[i] for i in range(nk))
    return as_strided(xp, shape, strd, writeable=False)


def _valid_counts(size, k, stride, dil, pad_b, lo, hi, out) -> np.ndarray:
    """Per output index: how many window taps fall in [lo, hi) (coordinates of unpadded x)."""
    starts = np.arange(out) * stride - pad_b
    taps = starts[:, None] + np.arange(k)[None, :] * dil
    return ((taps >= lo) & (taps < hi)).sum(axis=1)


# -- ops ------------------------------------------------------------------------------------


def conv(attrs, x, w, b=None):
    k = attrs.get("kernel_shape") or list(w.shape[2:])
    k, strides, dil, pads, out = _window_geometry(dict(attrs, kernel_shape=k), x)
    n, c = x.shape[:2]
    m, g = w.shape[0], attrs.get("group", 1)
    cg, mg, nk = c // g, m // g, len(k)
    kk = math.prod(k)
    if kk == 1 and all(s == 1 for s in strides) and not any(pads):
        cols = x.reshape(n, g, cg, -1).transpose(1, 0, 3, 2)            # [G, N, P, Cg]
        cols = cols.reshape(g, -1, cg)
    else:
        win = _windows(x, k, strides, dil, pads, out, 0.0)            # [N, C, *out, *k]
        spatial = tuple(range(2, 2 + nk))
        win = win.reshape((n, g, cg) + tuple(out) + tuple(k))
        perm = (1, 0) + tuple(s + 1 for s in spatial) + (2,) + tuple(range(3 + nk, 3 + 2 * nk))
        cols = np.ascontiguousarray(win.transpose(perm)).reshape(g, -1, cg * kk)
    wm = w.reshape(g, mg, cg * kk).transpose(0, 2, 1)                   # [G, Cg*kk, Mg]
    y = np.matmul(cols, wm)                                             # [G, N*P, Mg]
    y = y.reshape((g, n) + tuple(out) + (mg,))
    y = y.transpose((1, 0, 2 + nk) + tuple(range(2, 2 + nk)))            # [N, G, Mg, *out]
    y = np.ascontiguousarray(y).reshape((n, m) + tuple(out))            # channel = g*Mg + j
    if b is not None:
        y += b.reshape((1, m) + (1,) * nk).astype(np.float32)
    return y


def conv_transpose(attrs, x, w, b=None):
    """ONNX ConvTranspose by its definition: every input pixel scatters x·w over the full
    output (tap t of axis i lands at i·s + t·d), which the pads then crop.  Float64
    accumulation; independent of the Conv + depth-to-space lowering the converter uses."""
    nk = x.ndim - 2
    k = [int(v) for v in w.shape[2:]]
    st = list(attrs.get("strides") or [1] * nk)
    dil = list(attrs.get("dilations") or [1] * nk)
    pads = conv_transpose_pads(attrs, x.shape[2:], k)
    out = conv_transpose_output(attrs, x.shape[2:], k)
    n, c = x.shape[:2]
    g = int(attrs.get("group", 1))
    cg, mg = c // g, w.shape[1]
    full = [max(st[i] * (x.shape[2 + i] - 1) + (k[i] - 1) * dil[i] + 1, pads[i] + out[i]) for i in range(nk)]
    y = np.zeros((n, g, mg) + tuple(full))
    xg = x.astype(np.float64).reshape((n, g, cg) + x.shape[2:])
    wg = w.astype(np.float64).reshape((g, cg, mg) + tuple(k))
    for taps in np.ndindex(*k):
        contrib = np.einsum("ngc...,gcm->ngm...", xg, wg[(Ellipsis,) + taps])
        at = tuple(slice(t * dil[i], t * dil[i] + (x.shape[2 + i] - 1) * st[i] + 1, st[i])
                   for i, t in enumerate(taps))
        y[(slice(None),) * 3 + at] += contrib
    y = y.reshape((n, g * mg) + tuple(full))
    y = y[(slice(None),) * 2 + tuple(slice(pads[i], pads[i] + out[i]) for i in range(nk))]
    if b is not None:
        y = y + b.astype(np.float64).reshape((1, g * mg) + (1,) * nk)
    return y.astype(np.float32)


def depth_to_space(attrs, x):
    """ONNX DepthToSpace, as the spec writes it (DCR: depth-column-row, CRD: column-row-depth)."""
    n, c, h, w = x.shape
    b = int(attrs["blocksize"])
    if attrs.get("mode", "DCR") == "DCR":
        t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(t).reshape(n, c // (b * b), h * b, w * b)


def space_to_depth(attrs, x):
    n, c, h, w = x.shape
    b = int(attrs["blocksize"])
    t = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return np.ascontiguousarray(t).reshape(n, c * b * b, h // b, w // b)


def max_pool(attrs, x):
    if attrs.get("storage_order", 0):
        raise UnsupportedOpError("MaxPool storage_order=1 is not supported", {"MaxPool": []})
    k, strides, dil, pads, out = _window_geometry(attrs, x)
    win = _windows(x, k, strides, dil, pads, out, -np.inf)
    return win.max(axis=tuple(range(-len(k), 0)))


def average_pool(attrs, x):
    k, strides, dil, pads, out = _window_geometry(attrs, x)
    nk = len(k)
    win = _windows(x, k, strides, dil, pads, out, 0.0)
    total = win.sum(axis=tuple(range(-nk, 0)), dtype=np.float32)
    count = np.ones((), np.float32)
    for i in range(nk):
        size = x.shape[2 + i]
        lo, hi = (-pads[i], size + pads[i + nk]) if attrs.get("count_include_pad", 0) else (0, size)
        c = _valid_counts(size, k[i], strides[i], dil[i], pads[i], lo, hi, out[i]).astype(np.float32)
        count = count[..., None] * c if i else c
    return (total / count).astype(np.float32)


def global_average_pool(attrs, x):
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float32)


def global_max_pool(attrs, x):
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


def _reduce_axes(attrs, x) -> tuple[int, ...]:
    axes = attrs.get("axes")
    if axes is None or (len(axes) == 0 and not attrs.get("noop_with_empty_axes", 0)):
        axes = list(range(x.ndim))
    return tuple(norm_axis(a, x.ndim) for a in axes)


def reduce_mean(attrs, x):
    axes = _reduce_axes(attrs, x)
    if len(axes) == 0:
        return x
    return np.mean(x, axis=axes, keepdims=bool(attrs.get("keepdims", 1)), dtype=np.float32).astype(x.dtype)


def reduce_sum(attrs, x):
    axes = _reduce_axes(attrs, x)
    if len(axes) == 0:
        return x
    return np.sum(x, axis=axes, keepdims=bool(attrs.get("keepdims", 1)), dtype=x.dtype)


def _reduce_extreme(fn):
    def run(attrs, x):
        axes = _reduce_axes(attrs, x)
        return x if len(axes) == 0 else fn(x, axis=axes, keepdims=bool(attrs.get("keepdims", 1)))
    return run


def gemm(attrs, a, b, c=None):
    """ONNX Gemm, extended: A may have rank >= 2 and is multiplied over its last axis."""
    if attrs.get("transA", 0):
        a = np.swapaxes(a, -1, -2)
    if attrs.get("transB", 0):
        b = b.T
    y = np.matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * np.float32(alpha)
    if c is not None:
        y = y + (c if beta == 1.0 else np.float32(beta) * c)
    return y.astype(np.float32, copy=False)


def softmax(attrs, x):
    ax = attrs.get("axis", -1)
    e = np.exp(x - x.max(axis=ax, keepdims=True))
    return e / e.sum(axis=ax, keepdims=True)


def lrn(attrs, x):
    """ONNX LRN across channels (axis 1), float64 sums."""
    size = int(attrs["size"])
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    sq = np.asarray(x, np.float64) ** 2
    C = x.shape[1]
    acc = np.zeros_like(sq)
    for c in range(C):
        acc[:, c] = sq[:, max(0, c - lo):min(C - 1, c + hi) + 1].sum(axis=1)
    d = (attrs["bias"] + attrs["alpha"] / size * acc) ** attrs["beta"]
    return (x / d).astype(np.float32)


def layer_normalization(attrs, x, scale, bias=None):
    """ONNX LayerNormalization (stash_type 1) over the axes from `axis`, float64 statistics."""
    ax = attrs.get("axis", -1) % x.ndim
    axes = tuple(range(ax, x.ndim))
    x64 = np.asarray(x, np.float64)
    d = x64 - x64.mean(axis=axes, keepdims=True)
    y = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + attrs.get("epsilon", 1e-5)) * scale
    if bias is not None:
        y = y + bias
    return y.astype(np.float32)


def rms_normalization(attrs, x, scale):
    """RMS normalization over the axes from `axis` (ONNX RMSNormalization-23, the IR op the
    converter makes of x / ‖x‖): x / sqrt(mean(x²) + epsilon) · scale, float64 statistics."""
    ax = attrs.get("axis", -1) % x.ndim
    axes = tuple(range(ax, x.ndim))
    x64 = np.asarray(x, np.float64)
    y = x64 / np.sqrt((x64 * x64).mean(axis=axes, keepdims=True) + attrs.get("epsilon", 1e-5)) * scale
    return y.astype(np.float32)


def lp_normalization(attrs, x):
    """ONNX LpNormalization (p = 2): x / ‖x‖_2 along axis."""
    n = np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=attrs.get("axis", -1), keepdims=True))
    return (x / n).astype(np.float32)


def reduce_prod(attrs, x):
    axes = _reduce_axes(attrs, x)
    return x if len(axes) == 0 else np.prod(x, axis=axes, keepdims=bool(attrs.get("keepdims", 1)), dtype=x.dtype)


def reduce_l2(attrs, x):
    axes = _reduce_axes(attrs, x)
    if len(axes) == 0:
        return x
    s = np.sum(np.asarray(x, np.float64) ** 2, axis=axes, keepdims=bool(attrs.get("keepdims", 1)))
    return np.sqrt(s).astype(x.dtype)


def instance_normalization(attrs, x, scale, bias):
    """ONNX InstanceNormalization: per (n, c) over the spatial axes, float64 statistics."""
    axes = tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x64 = np.asarray(x, np.float64)
    d = x64 - x64.mean(axis=axes, keepdims=True)
    y = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + attrs.get("epsilon", 1e-5))
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(np.float32)


def group_normalization(attrs, x, scale, bias):
    """ONNX GroupNormalization: per (n, group of C / G channels) over those channels and the
    spatial axes, float64 statistics; scale and bias per group (opset 18) or per channel."""
    g = int(attrs["num_groups"])
    n, c = x.shape[:2]
    x64 = np.asarray(x, np.float64).reshape(n, g, -1)
    d = x64 - x64.mean(axis=2, keepdims=True)
    y = (d / np.sqrt((d * d).mean(axis=2, keepdims=True) + attrs.get("epsilon", 1e-5))).reshape(x.shape)
    if attrs.get("per_group", 0):
        scale, bias = np.repeat(scale, c // g), np.repeat(bias, c // g)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(np.float32)


def batch_normalization(attrs, x, scale, bias, mean, var):
    """ONNX BatchNormalization; training_mode=1 uses x's own mean and (population) variance
    over every axis but 1 instead of the `mean` / `var` inputs."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if attrs.get("training_mode", 0):
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=np.float64).astype(np.float32)
        var = x.astype(np.float64).var(axis=axes).astype(np.float32)
    inv = (scale / np.sqrt(var + np.float32(attrs.get("epsilon", 1e-5)))).astype(np.float32)
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


def clip(attrs, x):
    lo, hi = attrs.get("min"), attrs.get("max")
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    return np.clip(x, lo, hi).astype(x.dtype, copy=False)


def reshape(attrs, x):
    shape = [int(d) for d in attrs["shape"]]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def flatten(attrs, x):
    ax = norm_axis(attrs.get("axis", 1), x.ndim)
    return x.reshape(math.prod(x.shape[:ax]), math.prod(x.shape[ax:]))


def shape(attrs, x):
    start, end = shape_range(attrs, x.ndim)
    return np.asarray(x.shape[start:end], dtype=np.int64)


def unsqueeze(attrs, x):
    r = x.ndim + len(attrs["axes"])
    for a in sorted(norm_axis(a, r) for a in attrs["axes"]):
        x = np.expand_dims(x, a)
    return x


def squeeze(attrs, x):
    axes = attrs.get("axes")
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(norm_axis(a, x.ndim) for a in axes))


def slice_(attrs, x):
    """ONNX clamping (shapes.slice_range), which differs from python slicing in one corner:
    a negative-step start below -d starts at index 0."""
    idx = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(*slice_params(attrs, x.ndim)):
        first, n = slice_range(st, en, sp, x.shape[ax])
        idx[ax] = slice(first, first + n * sp if first + n * sp >= 0 else None, sp)
    return x[tuple(idx)]


def split(attrs, x):
    ax = norm_axis(attrs.get("axis", 0), x.ndim)
    sizes = split_sizes(attrs, x.shape[ax], attrs["_n_outputs"])
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=ax))


# -- elementwise unary functions (dtype-preserving: the quantizer evaluates them in float64
#    to build QLut tables) -------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _erf_kernel():
    """libm's erf over a float64 array, compiled on first use (numba is a dependency; scipy
    is not, so a plain `pip install .` converts Erf/Gelu models too)."""
    import nqrt.numba_config  # noqa: F401,PLC0415 - the cache dir, before the decorator runs
    from numba import njit      # noqa: PLC0415 - only models with Erf/Gelu need it

    @njit(cache=True, nogil=True)
    def erf_f64(a, out):
        for i in range(a.size):
            out[i] = math.erf(a[i])
    return erf_f64


def _erf(x):
    a = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(a)
    _erf_kernel()(a, out)
    return out.reshape(np.shape(x)).astype(x.dtype, copy=False)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype, copy=False)


def _hard_sigmoid(x, alpha, beta):
    t = x.dtype.type
    return np.clip(t(alpha) * x + t(beta), t(0), t(1))


def gelu(attrs, x):
    t = x.dtype.type
    if attrs.get("approximate", "none") == "tanh":
        inner = t(math.sqrt(2 / math.pi)) * (x + t(0.044715) * x * x * x)
        return t(0.5) * x * (t(1) + np.tanh(inner))
    return t(0.5) * x * (t(1) + _erf(x / t(math.sqrt(2))))


def _elu(x, alpha):
    t = x.dtype.type
    with np.errstate(over="ignore"):
        return np.where(x < 0, t(alpha) * (np.exp(np.minimum(x, t(0))) - t(1)), x).astype(x.dtype, copy=False)


def _celu(x, alpha):
    """max(0, x) + min(0, alpha·(exp(x / alpha) − 1))."""
    t = x.dtype.type
    with np.errstate(over="ignore"):
        neg = t(alpha) * (np.exp(np.minimum(x, t(0)) / t(alpha)) - t(1))
    return (np.maximum(x, t(0)) + np.minimum(neg, t(0))).astype(x.dtype, copy=False)


def _domain(fn):
    def op(attrs, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return fn(x)
    return op


UNARY: dict[str, Callable] = {
    "Sigmoid": lambda attrs, x: _sigmoid(x),
    "Tanh": lambda attrs, x: np.tanh(x),
    "HardSigmoid": lambda attrs, x: _hard_sigmoid(x, attrs.get("alpha", 0.2), attrs.get("beta", 0.5)),
    "HardSwish": lambda attrs, x: x * _hard_sigmoid(x, 1 / 6, 0.5),
    "Swish": lambda attrs, x: x * _sigmoid(x),
    "LeakyRelu": lambda attrs, x: np.where(x < 0, x.dtype.type(attrs.get("alpha", 0.01)) * x, x),
    "Elu": lambda attrs, x: _elu(x, attrs.get("alpha", 1.0)),
    "Selu": lambda attrs, x: x.dtype.type(attrs.get("gamma", 1.0507009873554805)) * _elu(
        x, attrs.get("alpha", 1.6732632423543772)),
    "Gelu": gelu,
    "Erf": lambda attrs, x: _erf(x),
    "Softplus": lambda attrs, x: np.logaddexp(x.dtype.type(0), x),
    "Mish": lambda attrs, x: x * np.tanh(np.logaddexp(x.dtype.type(0), x)),
    "Celu": lambda attrs, x: _celu(x, attrs.get("alpha", 1.0)),
    "ThresholdedRelu": lambda attrs, x: np.where(x > x.dtype.type(attrs.get("alpha", 1.0)), x,
                                                 x.dtype.type(0)),
    "Softsign": lambda attrs, x: x / (x.dtype.type(1) + np.abs(x)),
    "Abs": lambda attrs, x: np.abs(x),
    "Neg": lambda attrs, x: -x,
    "Exp": _domain(np.exp),
    "Log": _domain(np.log),
    "Sqrt": _domain(np.sqrt),
    "Reciprocal": _domain(lambda x: x.dtype.type(1) / x),
}


# -- Resize (nearest) -------------------------------------------------------------------------

def _round_half_away(x: np.ndarray) -> np.ndarray:
    a = np.floor(np.abs(x.astype(np.float64)) + 0.5)     # exact for float32 x
    return np.where(x < 0, -a, a)


def _source_coordinates(length_in: int, length_out: int, scale, coordinate_mode: str) -> np.ndarray:
    """float32 [length_out]: ONNX Resize's coordinate transform, in float32."""
    f = np.float32
    s, half = f(scale), f(0.5)
    xr = np.arange(length_out, dtype=np.float32)
    if coordinate_mode == "asymmetric":
        x = xr / s
    elif coordinate_mode in ("half_pixel", "pytorch_half_pixel"):
        x = (xr + half) / s - half
        if coordinate_mode == "pytorch_half_pixel" and length_out <= 1:
            x = np.zeros_like(xr)
    elif coordinate_mode == "tf_half_pixel_for_nn":
        x = (xr + half) / s
    elif coordinate_mode == "align_corners":
        x = xr * f(length_in - 1) / f(length_out - 1) if length_out > 1 else np.zeros_like(xr)
    else:
        raise UnsupportedOpError(f"Resize coordinate_transformation_mode {coordinate_mode!r} is not supported",
                                 {"Resize": []})
    return x


def nearest_index(length_in: int, length_out: int, scale, coordinate_mode: str, nearest_mode: str) -> np.ndarray:
    """Input index of every output index along one axis, as ONNX Runtime computes it: the
    coordinate transform in float32, then the rounding rule, then a clamp to [0, L_in - 1].
    nearest_mode "simple" is the opset <= 10 rule: truncate, or ceil when downsampling."""
    s, half = np.float32(scale), np.float32(0.5)
    x = _source_coordinates(length_in, length_out, scale, coordinate_mode)
    if nearest_mode == "floor":
        i = np.floor(x)
    elif nearest_mode == "ceil":
        i = np.ceil(x)
    elif nearest_mode == "round_prefer_ceil":
        i = _round_half_away(x)
    elif nearest_mode == "round_prefer_floor":
        tie = x == np.trunc(x).astype(np.float32) + half
        i = np.where(tie, np.floor(x), _round_half_away(x))
    elif nearest_mode == "simple":
        i = np.ceil(x) if s < 1 else np.trunc(x)
    else:
        raise UnsupportedOpError(f"Resize nearest_mode {nearest_mode!r} is not supported", {"Resize": []})
    return np.clip(i, 0, length_in - 1).astype(np.int64)


def _linear_along(x, axis: int, length_out: int, scale, coordinate_mode: str) -> np.ndarray:
    """ONNX Resize mode "linear" along one axis (ONNX Runtime's rule: the coordinate clamped
    to [0, L_in − 1], then the two neighbours), float64 interpolation."""
    d = x.shape[axis]
    c = np.clip(_source_coordinates(d, length_out, scale, coordinate_mode), 0, d - 1).astype(np.float64)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, d - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    lam = (c - i0).reshape(shape)
    x64 = np.asarray(x, np.float64)
    return np.take(x64, i0, axis=axis) * (1 - lam) + np.take(x64, i1, axis=axis) * lam


def _cubic_coefficient(s, a):
    """The cubic convolution kernel (Keys) at distances s (float64 array), coefficient a."""
    s = np.abs(s)
    inner = ((a + 2) * s - (a + 3)) * s * s + 1
    outer = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return np.where(s <= 1, inner, np.where(s < 2, outer, 0.0))


def _cubic_along(x, axis: int, length_out: int, scale, coordinate_mode: str, a: float,
                 exclude_outside: bool) -> np.ndarray:
    """ONNX Resize mode "cubic" along one axis: the coordinate unclamped, the four taps
    ⌊x⌋ − 1 .. ⌊x⌋ + 2 read with edge replication, float64 weights (renormalized over the
    taps inside the input with exclude_outside)."""
    d = x.shape[axis]
    c = _source_coordinates(d, length_out, scale, coordinate_mode).astype(np.float64)
    i = np.floor(c)
    t = c - i
    taps = i.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    w = _cubic_coefficient(np.stack([1 + t, t, 1 - t, 2 - t], axis=1), a)
    if exclude_outside:
        w = np.where((taps >= 0) & (taps < d), w, 0.0)
        w = w / w.sum(axis=1, keepdims=True)
    taps = np.clip(taps, 0, d - 1)
    x64 = np.asarray(x, np.float64)
    shape = [1] * x.ndim
    shape[axis] = -1
    return sum(np.take(x64, taps[:, j], axis=axis) * w[:, j].reshape(shape) for j in range(4))


def resize(attrs, x):
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise UnsupportedOpError(f"Resize mode {mode!r} is not supported", {"Resize": []})
    scales, sizes = resize_params(attrs, x.shape)
    if scales is None and sizes is None:
        raise UnsupportedOpError("Resize without scales or sizes", {"Resize": []})
    y = x
    for ax, d in enumerate(x.shape):
        if sizes is not None:
            n = int(sizes[ax])
            s = np.float32(n) / np.float32(d)
        else:
            s = np.float32(scales[ax])
            n = int(s * np.float32(d))
        if n == d and s == 1:
            continue
        if mode == "linear":
            y = _linear_along(y, ax, n, s, attrs["coordinate_transformation_mode"])
            continue
        if mode == "cubic":
            y = _cubic_along(y, ax, n, s, attrs["coordinate_transformation_mode"],
                             float(attrs.get("cubic_coeff_a", -0.75)), bool(attrs.get("exclude_outside", 0)))
            continue
        idx = nearest_index(d, n, s, attrs["coordinate_transformation_mode"], attrs["nearest_mode"])
        y = np.take(y, idx, axis=ax)
    return y.astype(x.dtype, copy=False)


def pad(attrs, x):
    """ONNX Pad; reflect / edge / wrap are numpy.pad's modes of the same names."""
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise UnsupportedOpError(f"Pad mode {mode!r} is not supported", {"Pad": []})
    r = x.ndim
    axes = attrs.get("axes")
    axes = list(range(r)) if axes is None else [norm_axis(a, r) for a in axes]
    p = attrs["pads"]
    widths = [(0, 0)] * r
    for j, ax in enumerate(axes):
        widths[ax] = (p[j], p[j + len(axes)])
    if any(b < 0 or e < 0 for b, e in widths):                       # negative pads crop
        idx = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(widths))
        x = x[idx]
        widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode != "constant":
        return np.pad(x, widths, mode=mode)
    cv = attrs.get("constant_value") or 0.0
    return np.pad(x, widths, constant_values=np.asarray(cv, x.dtype))


def constant_of_shape(attrs, shape_t):
    value = np.asarray(attrs.get("value", np.zeros(1, np.float32)))
    return np.full([int(d) for d in shape_t], value.reshape(-1)[0], dtype=value.dtype)


def range_(attrs, start, limit, delta):
    """ONNX Range: max(ceil((limit − start) / delta), 0) elements start + i·delta."""
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if delta == 0:
        raise InputError("Range with delta 0")
    count = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    return (start + np.arange(count, dtype=start.dtype) * delta).astype(start.dtype)


def scatter_nd(attrs, data, indices, updates):
    """ONNX ScatterND (reduction none): a copy of data with data[indices[i]] = updates[i]."""
    out = np.array(data)
    idx = np.asarray(indices, np.int64)
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    upd = np.asarray(updates).reshape((flat.shape[0],) + out.shape[k:])
    for i, ix in enumerate(flat):
        out[tuple(int(v) for v in ix)] = upd[i]
    return out


def mod(attrs, a, b):
    """ONNX Mod: integer remainder with the divisor's sign (fmod=0, Python's %), or C fmod
    with the dividend's sign (fmod=1, required for floats)."""
    if attrs.get("fmod", 0):
        return np.fmod(a, b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        raise InputError("Mod of floats needs fmod=1")
    return np.mod(a, b)


def cumsum(attrs, x, axis):
    """ONNX CumSum along the scalar `axis` input (exclusive: shifted by one; reverse: from the end)."""
    ax = int(np.asarray(axis).reshape(-1)[0]) % x.ndim
    y = np.flip(x, ax) if attrs.get("reverse", 0) else x
    y = np.cumsum(y, axis=ax, dtype=x.dtype)
    if attrs.get("exclusive", 0):
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis=ax)), np.delete(y, -1, axis=ax)], axis=ax)
    return np.flip(y, ax) if attrs.get("reverse", 0) else y


def gather_nd(attrs, data, indices):
    """ONNX GatherND with batch_dims 0: out[i...] = data[indices[i..., :]] (negative indices
    count from the end)."""
    idx = np.asarray(indices, np.int64)
    k = idx.shape[-1]
    idx = np.where(idx < 0, idx + np.asarray(data.shape[:k], np.int64), idx)
    return np.asarray(data[tuple(np.moveaxis(idx, -1, 0))])


def _variadic(fn):
    def run(attrs, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return run


def expand(attrs, x, shape):
    """ONNX Expand; with attrs["like_shape"] the second input is a tensor whose dims replace
    the −1 entries (fold_constants' form of a shape computed from the batch)."""
    if "like_shape" in attrs:
        shape = [shape.shape[i] if v == -1 else v for i, v in enumerate(attrs["like_shape"])]
    target = np.broadcast_shapes(x.shape, tuple(int(d) for d in shape))
    return np.array(np.broadcast_to(x, target))


def _binary(fn):
    def op(attrs, a, b):
        out = fn(a, b)
        if a.dtype.kind in "iu" and b.dtype.kind in "iu" and fn is np.divide:
            out = np.trunc(out).astype(a.dtype)
        return out.astype(np.result_type(a.dtype, b.dtype), copy=False)
    return op


def _sum(attrs, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


OPS: dict[str, Callable] = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": lambda attrs, a, b: np.matmul(a, b),
    "Einsum": lambda attrs, *xs: np.einsum(attrs["equation"], *xs),
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Sum": _sum,
    "Concat": lambda attrs, *xs: np.concatenate(xs, axis=attrs["axis"]),
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": global_average_pool,
    "GlobalMaxPool": global_max_pool,
    "ReduceMean": reduce_mean,
    "ReduceSum": reduce_sum,
    "ReduceMax": _reduce_extreme(np.max),
    "ReduceMin": _reduce_extreme(np.min),
    "Relu": lambda attrs, x: np.maximum(x, np.zeros((), x.dtype)),
    "Clip": clip,
    "Flatten": flatten,
    "Reshape": reshape,
    "Transpose": lambda attrs, x: np.transpose(x, attrs.get("perm")),
    "Softmax": softmax,
    "LRN": lrn,
    "LayerNormalization": layer_normalization,
    "RMSNormalization": rms_normalization,
    "LpNormalization": lp_normalization,
    "ReduceL2": reduce_l2,
    "ReduceProd": reduce_prod,
    "InstanceNormalization": instance_normalization,
    "GroupNormalization": group_normalization,
    "BatchNormalization": batch_normalization,
    "Dropout": lambda attrs, x: x,
    "Identity": lambda attrs, x: x,
    "Shape": shape,
    "Gather": lambda attrs, x, i: np.take(x, i.astype(np.int64), axis=attrs.get("axis", 0)),
    "Unsqueeze": unsqueeze,
    "Squeeze": squeeze,
    "Cast": lambda attrs, x: x.astype(attrs["to"]),
    "Slice": slice_,
    "ConstantOfShape": constant_of_shape,
    "Pad": pad,
    "Pow": lambda attrs, a, b: np.power(a, b.astype(a.dtype)) if a.dtype.kind == "f" else np.power(a, b),
    "Split": split,
    "Resize": resize,
    "DepthToSpace": depth_to_space,
    "Range": range_,
    "Expand": expand,
    "Mod": mod,
    "ScatterND": scatter_nd,
    "Equal": lambda attrs, a, b: np.equal(a, b),
    "Not": lambda attrs, x: np.logical_not(x),
    "Where": lambda attrs, c, a, b: np.where(c, a, b),
    "SpaceToDepth": space_to_depth,
    # fold-only (onnx_import.FOLD_ONLY): shape and position-encoding arithmetic on constants
    "Ceil": lambda attrs, x: np.ceil(x),
    "Floor": lambda attrs, x: np.floor(x),
    "Round": lambda attrs, x: np.round(x),          # ONNX Round: half to even, as numpy
    "Sin": lambda attrs, x: np.sin(x),
    "Cos": lambda attrs, x: np.cos(x),
    "Sign": lambda attrs, x: np.sign(x),
    "Max": _variadic(np.maximum),
    "Min": _variadic(np.minimum),
    "Less": lambda attrs, a, b: np.less(a, b),
    "Greater": lambda attrs, a, b: np.greater(a, b),
    "LessOrEqual": lambda attrs, a, b: np.less_equal(a, b),
    "GreaterOrEqual": lambda attrs, a, b: np.greater_equal(a, b),
    "And": lambda attrs, a, b: np.logical_and(a, b),
    "Or": lambda attrs, a, b: np.logical_or(a, b),
    "Tile": lambda attrs, x, reps: np.tile(x, [int(r) for r in np.asarray(reps).reshape(-1)]),
    "CumSum": cumsum,
    "GatherND": gather_nd,
    **UNARY,
}


def eval_node(node: Node, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Evaluate one node on its input arrays (None for absent optional inputs)."""
    fn = OPS.get(node.op)
    if fn is None:
        raise UnsupportedOpError(f"reference executor has no op {node.op} (node {node.name or node.outputs[0]})",
                                 {node.op: [node.name]})
    attrs = node.attrs
    table = ATTR_INPUTS.get(node.op)
    if table:
        attrs = dict(attrs)
        for pos, attr in table.items():
            if pos < len(inputs) and inputs[pos] is not None:
                attrs[attr] = attr_from_tensor(attr, inputs[pos])
        inputs = [v for p, v in enumerate(inputs) if p not in table]
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    if node.op == "Split":
        attrs = dict(attrs, _n_outputs=len(node.outputs))
    out = fn(attrs, *inputs)
    outs = list(out) if isinstance(out, tuple) else [out]
    act = attrs.get("act")
    if act is not None:
        outs[0] = np.clip(outs[0], act[0], act[1]).astype(outs[0].dtype, copy=False)
    return outs


def run(graph: Graph, feeds: dict[str, np.ndarray],
        observe: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Evaluate `graph` on `feeds` (one array per graph input); return {output name: array}."""
    missing = [v.name for v in graph.inputs if v.name not in feeds]
    if missing:
        raise InputError(f"missing feeds for graph inputs: {', '.join(missing)}")
    outputs = set(graph.output_names())
    last_use: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            if t:
                last_use[t] = i
    env: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        arr = np.asarray(feeds[v.name])
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        env[v.name] = arr
        if observe is not None:
            observe(v.name, arr)
    consts = graph.constants
    for i, n in enumerate(graph.nodes):
        args = [(env[t] if t in env else consts[t]) if t else None for t in n.inputs]
        try:
            outs = eval_node(n, args)
        except NqrtError:
            raise
        except (ValueError, IndexError, TypeError) as e:
            # Inputs inconsistent with the model (e.g. a Reshape that does not fit the fed
            # shape): name the node instead of surfacing numpy's message alone.
            shapes = ", ".join(str(list(np.shape(a))) for a in args if a is not None)
            raise InputError(f"node {n.name or n.outputs[0]!r} ({n.op}) cannot run on inputs of "
                             f"shape {shapes}: {e}") from None
        for name, arr in zip(n.outputs, outs):
            if name:
                env[name] = arr
                if observe is not None:
                    observe(name, arr)
        for t in set(n.inputs) | set(n.outputs):
            if t in env and t not in outputs and last_use.get(t, -1) <= i:
                del env[t]
    return {name: env[name] if name in env else consts[name] for name in graph.output_names()}
