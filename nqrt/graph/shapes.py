"""Light shape, dtype and shape-value propagation over the float IR.

`infer_shapes(graph, input_shapes)` returns {tensor name: shape} for every tensor whose rank
is known.  Dims follow the IR: int, str (a symbol such as "N", kept as long as it passes
through an op unchanged) or None (unknown).  A tensor missing from the result has unknown
rank.  Nothing here raises on odd models: an op the rules cannot handle just yields no shape.

`infer(graph, input_shapes)` additionally returns
  * dtypes: numpy dtype names ("float32", "int64", ...);
  * values: for 0-D/1-D integer "shape-like" tensors, their entries as Dims (int, symbol,
    None).  `Shape(x)` of x with shape ("N", 3, 8, 8) has value ["N", 3, 8, 8]; Gather /
    Unsqueeze / Squeeze / Concat / Slice / Cast / Identity / integer Add-Sub-Mul-Div carry
    values on.  This is what lets fold_constants turn `x.view(x.size(0), -1)` chains into
    a constant Reshape with a symbolic batch dimension.

A symbolic dim may also be a product of symbols and a positive integer, written canonically as
the string "64*N" (coefficient first, then the symbol names sorted, joined by "*"; see
`sym_dim`): window-attention models reshape [N, 56, 56, C] into [N·64, 7, 7, C] windows and
back, and the batch must survive the round trip.  Such a string is an ordinary symbolic dim to
every other module (equal strings are equal sizes); only the rules here multiply and divide it.

Attributes are read in IR form (see onnx_import); an attribute that is None because its value
is still a run-time input is taken from `values` when known.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from nqrt.graph.ir import Dim, Graph, Node

Shape = tuple[Dim, ...]

# ONNX operators whose later-opset constant inputs become attributes in the IR:
# op -> {ONNX input position: attribute name}.  Positions are kept in Node.inputs ("" once
# the input has been moved to its attribute); data inputs are the other positions.
ATTR_INPUTS: dict[str, dict[int, str]] = {
    "Reshape": {1: "shape"},
    "Clip": {1: "min", 2: "max"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "ReduceMean": {1: "axes"},
    "ReduceSum": {1: "axes"},
    "ReduceL2": {1: "axes"},
    "ReduceProd": {1: "axes"},
    "ReduceMax": {1: "axes"},
    "ReduceMin": {1: "axes"},
    "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Dropout": {1: "ratio", 2: "training_mode"},
    "Split": {1: "split"},
    "Resize": {1: "roi", 2: "scales", 3: "sizes"},
    "Upsample": {1: "scales"},
}

# Elementwise unary ops (one data input, output shape = input shape); "Swish" is internal
# (x * Sigmoid(x), made by passes/fuse_swish.py).
UNARY_OPS = ("Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu", "Gelu",
             "Erf", "Softplus", "Softsign", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal",
             "Swish", "Mish", "Celu", "ThresholdedRelu")


@dataclass
class Inference:
    shapes: dict[str, Shape] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    values: dict[str, list[Dim]] = field(default_factory=dict)


# -- dim helpers ---------------------------------------------------------------------------

def is_int(d) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool)


def known(shape: Shape | None) -> bool:
    """True when every dim of `shape` is a concrete int."""
    return shape is not None and all(is_int(d) for d in shape)


def broadcast(a: Shape, b: Shape) -> Shape:
    """Numpy/ONNX multidirectional broadcast of two shapes with symbolic dims."""
    r = max(len(a), len(b))
    a = (1,) * (r - len(a)) + tuple(a)
    b = (1,) * (r - len(b)) + tuple(b)
    out: list[Dim] = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        elif is_int(x) and is_int(y):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        elif is_int(x) and not is_int(y):
            out.append(x)           # y must be x (or 1, in which case x wins anyway)
        elif is_int(y) and not is_int(x):
            out.append(y)
        else:
            out.append(None)
    return tuple(out)


def window_output_dim(size: Dim, kernel: int, stride: int, pad_begin: int, pad_end: int,
                      dilation: int = 1, ceil_mode: int = 0) -> Dim:
    """Output length of a conv/pool window sweep (ONNX; PyTorch-style ceil_mode rule).

    With ceil_mode a last window that would start inside the end padding only is dropped:
    (out - 1) * stride < size + pad_begin, as ONNX Runtime and PyTorch do.
    """
    if not is_int(size):
        return None
    span = size + pad_begin + pad_end - ((kernel - 1) * dilation + 1)
    if span < 0:
        raise ValueError(f"window of {(kernel - 1) * dilation + 1} larger than padded input {size + pad_begin + pad_end}")
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad_begin:
            out -= 1
    else:
        out = span // stride + 1
    return out


def same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """(pad_begin, pad_end) of auto_pad SAME_UPPER (extra pad at the end) / SAME_LOWER."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def resolve_auto_pad(attrs: dict, spatial: Shape) -> list[int] | None:
    """Explicit pads [b0, b1, ..., e0, e1, ...] for attrs["auto_pad"]; None if dims unknown."""
    mode = attrs.get("auto_pad", "NOTSET")
    k = attrs["kernel_shape"]
    if mode == "NOTSET":
        return list(attrs["pads"])
    if mode == "VALID":
        return [0] * (2 * len(k))
    if not known(spatial):
        return None
    dil = attrs.get("dilations") or [1] * len(k)
    begins, ends = [], []
    for i, size in enumerate(spatial):
        b, e = same_pads(size, k[i], attrs["strides"][i], dil[i], mode == "SAME_UPPER")
        begins.append(b)
        ends.append(e)
    return begins + ends


def conv_transpose_pads(attrs: dict, spatial: Shape, kernel) -> list[int] | None:
    """Pads [b0, b1, ..., e0, e1, ...] of a ConvTranspose (ONNX, as ONNX Runtime resolves them);
    None when they depend on unknown input dims.

    The full (uncropped) output of axis i is s·(L − 1) + output_padding + (k − 1)·d + 1 long;
    the pads crop it.  With output_shape (spatial dims) or auto_pad SAME_* (output L·s) the
    total crop is that length minus the requested one, split with the odd unit at the end for
    SAME_UPPER and at the beginning otherwise (SAME_LOWER, or NOTSET with output_shape).
    ValueError if output_shape asks for more than the full output.
    """
    mode = attrs.get("auto_pad", "NOTSET")
    k = [int(v) for v in kernel]
    nk = len(k)
    out_shape = attrs.get("output_shape")
    if not out_shape and mode == "NOTSET":
        return [int(v) for v in attrs.get("pads") or [0] * (2 * nk)]
    if not out_shape and mode == "VALID":
        return [0] * (2 * nk)
    if not known(spatial):
        return None
    st, dil = attrs.get("strides") or [1] * nk, attrs.get("dilations") or [1] * nk
    op = attrs.get("output_padding") or [0] * nk
    begins, ends = [], []
    for i, size in enumerate(spatial):
        full = st[i] * (int(size) - 1) + op[i] + (k[i] - 1) * dil[i] + 1
        want = int(out_shape[i]) if out_shape else int(size) * st[i]
        total = full - want
        if total < 0:
            raise ValueError(f"output_shape {list(out_shape)} larger than the full transposed "
                             f"convolution ({full} on axis {i})")
        small = total // 2
        b = small if mode == "SAME_UPPER" else total - small
        begins.append(b)
        ends.append(total - b)
    return begins + ends


def conv_transpose_output(attrs: dict, spatial: Shape, kernel) -> Shape:
    """Spatial output dims of a ConvTranspose (None where unknown)."""
    nk = len(kernel)
    pads = conv_transpose_pads(attrs, spatial, kernel)
    st, dil = attrs.get("strides") or [1] * nk, attrs.get("dilations") or [1] * nk
    op = attrs.get("output_padding") or [0] * nk
    if pads is None:
        return (None,) * nk
    return tuple(st[i] * (int(L) - 1) + op[i] + (int(kernel[i]) - 1) * dil[i] + 1 - pads[i] - pads[nk + i]
                 if is_int(L) else None for i, L in enumerate(spatial))


def sym_parts(d: str) -> tuple[int, Counter]:
    """(coefficient, symbol counts) of a symbolic dim: "N" -> (1, {N: 1}), "64*N" -> (64, {N: 1}).
    A part that is all digits is a factor of the coefficient; any other part is a symbol name."""
    num, syms = 1, Counter()
    for part in d.split("*"):
        if part.isdigit():
            num *= int(part)
        else:
            syms[part] += 1
    return num, syms


def sym_dim(num: int, syms: Counter) -> Dim:
    """The canonical dim for num · Π syms: an int without symbols, the bare name for one symbol
    times 1, else "num*A*B" (symbols sorted, coefficient omitted when 1); None for num <= 0
    with symbols (a symbolic size is at least 1, so such a product is not a size)."""
    names = sorted(syms.elements())
    if not names:
        return num
    if num <= 0:
        return None
    return "*".join(([str(num)] if num != 1 else []) + names)


def symbolic_product(dims) -> tuple[int, Counter, bool]:
    num, syms, unknown = 1, Counter(), False
    for d in dims:
        if is_int(d):
            num *= int(d)
        elif isinstance(d, str):
            k, ss = sym_parts(d)
            num *= k
            syms += ss
        else:
            unknown = True
    return num, syms, unknown


def _product_dim(dims) -> Dim:
    """Product of dims: an int, a symbolic product (see sym_dim), or None."""
    num, syms, unknown = symbolic_product(dims)
    if unknown:
        return None
    return sym_dim(num, syms)


def reshape_shape(in_shape: Shape, target: list[Dim], allowzero: int = 0) -> Shape:
    """Output shape of ONNX Reshape (0 copies the input dim unless allowzero, -1 is inferred)."""
    out: list[Dim] = []
    infer_at = None
    for i, t in enumerate(target):
        if is_int(t) and t == 0 and not allowzero:
            out.append(in_shape[i] if i < len(in_shape) else None)
        elif is_int(t) and t == -1:
            infer_at = i
            out.append(None)
        else:
            out.append(t)
    if infer_at is not None:
        in_num, in_syms, in_unk = symbolic_product(in_shape)
        rest = out[:infer_at] + out[infer_at + 1:]
        o_num, o_syms, o_unk = symbolic_product(rest)
        if not (in_unk or o_unk) and o_num != 0 and in_num % o_num == 0 and not (o_syms - in_syms):
            out[infer_at] = sym_dim(in_num // o_num, in_syms - o_syms)
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# -- per-op rules: (node, input shapes, inference) -> list of output shapes (None = unknown) --

def _same(n, s, inf):
    return [s[0]]


def _elementwise(n, s, inf):
    if any(x is None for x in s):
        return [None]
    out = s[0]
    for x in s[1:]:
        out = broadcast(out, x)
    return [out]


def _tile(n, s, inf):
    """Tile: dim i times repeats[i] (repeats from the second input's value)."""
    reps = inf.values.get(n.inputs[1]) if len(n.inputs) > 1 else None
    if s[0] is None or reps is None or len(reps) != len(s[0]):
        return [None if s[0] is None else (None,) * len(s[0])]
    return [tuple(d if r == 1 else _int_binary("Mul", d, r) for d, r in zip(s[0], reps))]


def _conv(n, s, inf):
    x, w = s[0], s[1]
    a = n.attrs
    if x is None:
        return [None]
    k = a.get("kernel_shape") or (list(w[2:]) if w is not None else None)
    if k is None or not all(is_int(d) for d in k):
        return [(x[0],) + (None,) * (len(x) - 1)]
    m = w[0] if w is not None else None
    return [(x[0], m) + _window_dims(a, x[2:], k)]


def _conv_transpose(n, s, inf):
    x, w = s[0], s[1]
    if x is None:
        return [None]
    k = n.attrs.get("kernel_shape") or (list(w[2:]) if w is not None else None)
    m = w[1] * int(n.attrs.get("group", 1)) if w is not None and is_int(w[1]) else None
    if k is None or not all(is_int(d) for d in k):
        return [(x[0], m) + (None,) * (len(x) - 2)]
    return [(x[0], m) + conv_transpose_output(n.attrs, x[2:], k)]


def _space_depth(n, s, inf):
    """DepthToSpace: [N, C, H, W] -> [N, C/b², H·b, W·b]; SpaceToDepth the inverse."""
    x = s[0]
    if x is None or len(x) != 4:
        return [None]
    b = int(n.attrs["blocksize"])
    up = n.op == "DepthToSpace"
    c = (x[1] // (b * b) if up else x[1] * b * b) if is_int(x[1]) else None
    hw = tuple((d * b if up else d // b) if is_int(d) else None for d in x[2:])
    return [(x[0], c) + hw]


def _range(n, s, inf):
    """Range: 1-D, max(ceil((limit − start) / delta), 0) elements when all three are known."""
    v = [inf.values.get(i) for i in n.inputs[:3]]
    if all(x is not None and len(x) == 1 for x in v) and v[0][0] == 0 and v[2][0] == 1 \
            and isinstance(v[1][0], str):
        return [(v[1][0],)]                    # arange(N) over a symbolic size: N elements
    if any(x is None or len(x) != 1 or not is_int(x[0]) for x in v):
        return [(None,)]
    start, limit, delta = (int(x[0]) for x in v)
    return [(max(-(-(limit - start) // delta), 0) if delta else None,)]


def _expand(n, s, inf):
    """Expand: x broadcast with the shape value (ONNX: both directions)."""
    x = s[0]
    if "like_shape" in n.attrs:                 # -1: that dim of the second input (fold_constants)
        like = s[1] if len(s) > 1 else None
        if x is None or like is None:
            return [None]
        shape = [like[i] if v == -1 else v for i, v in enumerate(n.attrs["like_shape"])]
    else:
        shape = inf.values.get(n.inputs[1]) if len(n.inputs) > 1 else None
    if x is None or shape is None:
        return [None]
    return [broadcast(x, tuple(shape))]


def _window_dims(a, spatial, k) -> Shape:
    attrs = dict(a, kernel_shape=list(k))
    attrs.setdefault("strides", [1] * len(k))
    if attrs.get("strides") is None:
        attrs["strides"] = [1] * len(k)
    if attrs.get("pads") is None:
        attrs["pads"] = [0] * (2 * len(k))
    pads = resolve_auto_pad(attrs, spatial)
    if pads is None:
        return (None,) * len(k)
    dil = attrs.get("dilations") or [1] * len(k)
    return tuple(window_output_dim(spatial[i], k[i], attrs["strides"][i], pads[i], pads[i + len(k)],
                                   dil[i], attrs.get("ceil_mode", 0)) for i in range(len(k)))


def _pool(n, s, inf):
    x = s[0]
    if x is None:
        return [None]
    return [tuple(x[:2]) + _window_dims(n.attrs, x[2:], n.attrs["kernel_shape"])]


def _global_pool(n, s, inf):
    x = s[0]
    return [None if x is None else tuple(x[:2]) + (1,) * (len(x) - 2)]


def _reduce(n, s, inf):
    x = s[0]
    if x is None:
        return [None]
    axes = n.attrs.get("axes")
    if axes is None:
        axes = list(range(len(x))) if not n.attrs.get("noop_with_empty_axes", 0) else []
    axes = {norm_axis(a, len(x)) for a in axes}
    if n.attrs.get("keepdims", 1):
        return [tuple(1 if i in axes else d for i, d in enumerate(x))]
    return [tuple(d for i, d in enumerate(x) if i not in axes)]


def _gemm(n, s, inf):
    a, b = s[0], s[1]
    if a is None or b is None:
        return [None]
    t = n.attrs
    m = a[-1] if t.get("transA", 0) else a[-2]
    nn = b[-2] if t.get("transB", 0) else b[-1]
    return [tuple(a[:-2]) + (m, nn)]


def _matmul(n, s, inf):
    a, b = s[0], s[1]
    if a is None or b is None:
        return [None]
    if len(b) == 1:
        return [tuple(a[:-1])]
    if len(a) == 1:
        return [tuple(b[:-2]) + (b[-1],)]
    batch = broadcast(tuple(a[:-2]), tuple(b[:-2]))
    return [batch + (a[-2], b[-1])]


def _concat(n, s, inf):
    if any(x is None for x in s):
        return [None]
    r = len(s[0])
    ax = norm_axis(n.attrs["axis"], r)
    out = list(s[0])
    for x in s[1:]:
        for i in range(r):
            if i == ax:
                out[i] = out[i] + x[i] if is_int(out[i]) and is_int(x[i]) else None
            elif not is_int(out[i]) and is_int(x[i]):
                out[i] = x[i]
    return [tuple(out)]


def _flatten(n, s, inf):
    x = s[0]
    if x is None:
        return [None]
    ax = norm_axis(n.attrs.get("axis", 1), len(x))
    return [(_product_dim(x[:ax]), _product_dim(x[ax:]))]


def _reshape(n, s, inf):
    x = s[0]
    target = n.attrs.get("shape")
    if target is None and len(n.inputs) > 1:
        target = inf.values.get(n.inputs[1])
    if target is None:
        sh = s[1] if len(s) > 1 else None
        return [None if sh is None or not is_int(sh[0]) else (None,) * sh[0]]
    if x is None:
        return [tuple(d if is_int(d) and d > 0 else None for d in target)]
    return [reshape_shape(x, list(target), n.attrs.get("allowzero", 0))]


def _transpose(n, s, inf):
    x = s[0]
    if x is None:
        return [None]
    perm = n.attrs.get("perm") or list(range(len(x)))[::-1]
    return [tuple(x[p] for p in perm)]


def _bn(n, s, inf):
    return [s[0]] + [None] * (len(n.outputs) - 1)


def _dropout(n, s, inf):
    return [s[0]] + [s[0]] * (len(n.outputs) - 1)


def _shape(n, s, inf):
    x = s[0]
    if x is None:
        return [None]
    start, end = shape_range(n.attrs, len(x))
    return [(end - start,)]


def shape_range(attrs, rank):
    start = attrs.get("start", 0) or 0
    end = attrs.get("end")
    end = rank if end is None else end
    start = min(max(norm_axis(start, rank), 0), rank)
    end = min(max(norm_axis(end, rank), 0), rank)
    return start, max(start, end)


def _gather(n, s, inf):
    x, idx = s[0], s[1]
    if x is None or idx is None:
        return [None]
    ax = norm_axis(n.attrs.get("axis", 0), len(x))
    return [tuple(x[:ax]) + tuple(idx) + tuple(x[ax + 1:])]


def _unsqueeze(n, s, inf):
    x = s[0]
    axes = n.attrs.get("axes")
    if axes is None and len(n.inputs) > 1:
        axes = inf.values.get(n.inputs[1])
    if x is None or axes is None or not all(is_int(a) for a in axes):
        return [None]
    r = len(x) + len(axes)
    axes = sorted(norm_axis(a, r) for a in axes)
    out = list(x)
    for a in axes:
        out.insert(a, 1)
    return [tuple(out)]


def _squeeze(n, s, inf):
    x = s[0]
    if x is None:
        return [None]
    axes = n.attrs.get("axes")
    if axes is None and len(n.inputs) > 1 and n.inputs[1]:
        axes = inf.values.get(n.inputs[1])
        if axes is None:
            return [None]
    if axes is None:
        if not known(x):
            return [None]
        return [tuple(d for d in x if d != 1)]
    axes = {norm_axis(a, len(x)) for a in axes}
    return [tuple(d for i, d in enumerate(x) if i not in axes)]


def _slice(n, s, inf):
    x = s[0]
    if x is None:
        return [None]
    a = n.attrs
    if a.get("starts") is None or a.get("ends") is None:
        if a.get("axes") is not None:
            axes = {norm_axis(ax, len(x)) for ax in a["axes"]}
            return [tuple(None if i in axes else d for i, d in enumerate(x))]
        return [(None,) * len(x)]
    out = list(x)
    for st, en, ax, sp in zip(*slice_params(a, len(x))):
        # only the sliced axes need a known length (x.chunk(2, 1) on an (N, C, H, W) tensor)
        out[ax] = slice_range(st, en, sp, x[ax])[1] if is_int(x[ax]) else None
    return [tuple(out)]


def slice_range(start: int, end: int, step: int, d: int) -> tuple[int, int]:
    """ONNX Slice on one axis of length d: (first index, output length).  Unlike python
    slicing, a negative-step start below -d clamps to 0 (ONNX: start in [0, d-1])."""
    start = start + d if start < 0 else start
    end = end + d if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), d), min(max(end, 0), d)
        return start, max(0, -(-(end - start) // step))
    start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)
    return start, max(0, -(-(start - end) // -step))


def slice_params(a, rank):
    starts, ends = list(a["starts"]), list(a["ends"])
    axes = a.get("axes")
    axes = list(range(len(starts))) if axes is None else [norm_axis(v, rank) for v in axes]
    steps = a.get("steps") or [1] * len(starts)
    big = 2**62          # ONNX uses INT64_MAX/MIN as "to the end"; python slicing clamps
    starts = [max(min(v, big), -big) for v in starts]
    ends = [max(min(v, big), -big) for v in ends]
    return starts, ends, axes, steps


def _constant_of_shape(n, s, inf):
    v = inf.values.get(n.inputs[0])
    if v is not None:
        return [tuple(v)]
    sh = s[0]
    return [None if sh is None or not is_int(sh[0]) else (None,) * sh[0]]


def _pad(n, s, inf):
    x = s[0]
    pads = n.attrs.get("pads")
    if x is None or pads is None:
        return [None]
    r = len(x)
    axes = n.attrs.get("axes")
    axes = list(range(r)) if axes is None else [norm_axis(a, r) for a in axes]
    out = list(x)
    for j, ax in enumerate(axes):
        extra = pads[j] + pads[j + len(axes)]
        out[ax] = x[ax] + extra if is_int(x[ax]) else (x[ax] if extra == 0 else None)
    return [tuple(out)]


def split_sizes(attrs, dim, n_outputs: int) -> list[int] | None:
    """Sizes of Split's outputs along its axis (explicit `split`, opset-18 `num_outputs`, or
    equal parts: the last part is smaller when the dim does not divide); None if unknown."""
    split = attrs.get("split")
    if split:
        return [int(v) for v in split]
    if not is_int(dim):
        return None
    n = attrs.get("num_outputs") or n_outputs
    part = -(-int(dim) // n)
    return [min(part, max(int(dim) - i * part, 0)) for i in range(n)]


def _split(n, s, inf):
    x = s[0]
    if x is None:
        return [None] * len(n.outputs)
    ax = norm_axis(n.attrs.get("axis", 0), len(x))
    sizes = split_sizes(n.attrs, x[ax], len(n.outputs))
    if sizes is None:
        return [tuple(None if i == ax else d for i, d in enumerate(x))] * len(n.outputs)
    return [tuple(sz if i == ax else d for i, d in enumerate(x)) for sz in sizes]


def resize_params(attrs, shape) -> tuple[list | None, list | None]:
    """(scales, sizes) of Resize/Upsample expanded to every axis (opset-18 `axes`): scales are
    float32 values, sizes ints; exactly one is not None (None, None when not constant)."""
    r = len(shape)
    axes = attrs.get("axes")
    axes = list(range(r)) if axes is None else [norm_axis(a, r) for a in axes]
    scales, sizes = attrs.get("scales"), attrs.get("sizes")
    if sizes:
        full = list(shape)
        for a, v in zip(axes, sizes):
            full[a] = int(v)
        return None, full
    if scales:
        full = [1.0] * r
        for a, v in zip(axes, scales):
            full[a] = float(np.float32(v))
        return full, None
    return None, None


def _resize(n, s, inf):
    x = s[0]
    if x is None:
        return [None]
    scales, sizes = resize_params(n.attrs, x)
    if sizes is not None:
        return [tuple(sizes)]
    if scales is None:
        return [(None,) * len(x)]
    return [tuple(int(np.float32(sc) * np.float32(d)) if is_int(d) else (d if sc == 1.0 else None)
                  for sc, d in zip(scales, x))]


RULES = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul,
    "Add": _elementwise, "Sub": _elementwise, "Mul": _elementwise, "Div": _elementwise,
    "Sum": _elementwise, "Concat": _concat,
    "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool, "ReduceMean": _reduce, "ReduceSum": _reduce, "ReduceL2": _reduce, "ReduceProd": _reduce,
    "RMSNormalization": _same, "LpNormalization": _same,
    "ReduceMax": _reduce, "ReduceMin": _reduce,
    "Relu": _same, "Clip": _same, "Softmax": _same, "LRN": _same, "LayerNormalization": _same, "InstanceNormalization": _same, "GroupNormalization": _same, "Cast": _same, "Identity": _same,
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose,
    "BatchNormalization": _bn, "Dropout": _dropout,
    "Shape": _shape, "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Slice": _slice, "ConstantOfShape": _constant_of_shape, "Pad": _pad,
    "Pow": _elementwise, "Split": _split, "Resize": _resize, "Upsample": _resize,
    "DepthToSpace": _space_depth, "SpaceToDepth": _space_depth, "Range": _range, "Expand": _expand,
    "Equal": _elementwise, "Mod": _elementwise, "Not": _same, "Where": _elementwise,
    "ScatterND": _same,
    **{op: _same for op in UNARY_OPS},
    # fold-only ops (onnx_import.FOLD_ONLY)
    **{op: _same for op in ("Ceil", "Floor", "Round", "Sin", "Cos", "Sign", "CumSum")},
    **{op: _elementwise for op in ("Max", "Min", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                                   "And", "Or")},
    "Tile": _tile,
    "GatherND": lambda n, s, inf: [None if s[0] is None or s[1] is None or not is_int(s[1][-1])
                                   else tuple(s[1][:-1]) + tuple(s[0][int(s[1][-1]):])],
}


# -- values of shape-like tensors -----------------------------------------------------------

def _sym_binary(op, a: Dim, b: Dim) -> Dim:
    """Mul, Div and Mod where a symbolic dim is involved: exact on monomials (64·N / 8 = 8·N,
    64·N mod 8 = 0), None when the result is not one (N / 2, N mod 2, N + 1)."""
    if a is None or b is None:
        return None
    pa = (int(a), Counter()) if is_int(a) else sym_parts(a)
    pb = (int(b), Counter()) if is_int(b) else sym_parts(b)
    if op == "Mul":
        return sym_dim(pa[0] * pb[0], pa[1] + pb[1])
    if op == "Div" and pb[0] > 0 and pa[0] >= 0 and pa[0] % pb[0] == 0 and not (pb[1] - pa[1]):
        return sym_dim(pa[0] // pb[0], pa[1] - pb[1])
    if op == "Mod" and is_int(b) and int(b) > 0 and pa[0] % int(b) == 0:
        return 0                    # a multiple of b, whatever the symbols' sizes
    return None


def _int_binary(op, a: Dim, b: Dim, fmod: int = 0) -> Dim:
    if not (is_int(a) and is_int(b)):
        if op == "Mul" and (a == 1 or b == 1):
            return b if a == 1 else a
        if op in ("Add", "Sub") and b == 0:
            return a
        if op in ("Mul", "Div", "Mod"):
            return _sym_binary(op, a, b)
        return None
    a, b = int(a), int(b)
    if op == "Add":
        return a + b
    if op == "Sub":
        return a - b
    if op == "Mul":
        return a * b
    if op == "Mod":                         # fmod 0: the divisor's sign (Python's %); 1: the dividend's
        if not b:
            return None
        return a % b if not fmod else (abs(a) % abs(b)) * (1 if a >= 0 else -1)
    return int(a / b) if b else None        # ONNX integer Div truncates toward zero


def _dim_equal(p: Dim, q: Dim) -> Dim:
    """Equal of two shape entries: 1 / 0, or None when unknown.  A symbolic dim is a size,
    never negative: it differs from a negative int (the −1 of a Reshape / Expand target)."""
    if is_int(p) and is_int(q):
        return int(int(p) == int(q))
    if isinstance(p, str) and isinstance(q, str) and p == q:
        return 1
    if (is_int(p) and int(p) < 0) or (is_int(q) and int(q) < 0):
        return 0
    return None


def _dim_extreme(op: str, p: Dim, q: Dim) -> Dim:
    """Max / Min of two shape entries; a symbolic size is >= 1 (Keras' broadcast of batch
    dims: max(N, 1) = N)."""
    if is_int(p) and is_int(q):
        return max(int(p), int(q)) if op == "Max" else min(int(p), int(q))
    if p is not None and p == q:
        return p
    for s, c in ((p, q), (q, p)):
        if isinstance(s, str) and is_int(c) and int(c) <= 1:
            return s if op == "Max" else int(c)
    return None


def _pairwise(x: list, y: list, fn) -> list | None:
    if len(x) != len(y) and 1 not in (len(x), len(y)):
        return None
    m = max(len(x), len(y))
    x = x * m if len(x) == 1 else x
    y = y * m if len(y) == 1 else y
    return [fn(p, q) for p, q in zip(x, y)]


def _node_values(n: Node, inf: Inference) -> list[Dim] | None:
    v = [inf.values.get(i) if i else None for i in n.inputs]
    op, a = n.op, n.attrs
    if op == "Shape":
        x = inf.shapes.get(n.inputs[0])
        if x is None:
            return None
        start, end = shape_range(a, len(x))
        return list(x[start:end])
    if op in ("Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten") and v[0] is not None:
        out_shape = inf.shapes.get(n.outputs[0])
        return list(v[0]) if out_shape is not None and len(out_shape) <= 1 else None
    if op == "Gather" and v[0] is not None and v[1] is not None and a.get("axis", 0) == 0:
        if not all(is_int(i) for i in v[1]):
            return None
        return [v[0][int(i)] for i in v[1]]
    if op == "Concat" and all(x is not None for x in v):
        return [d for x in v for d in x]
    if op == "Slice" and v[0] is not None and a.get("starts") is not None and a.get("ends") is not None:
        starts, ends, axes, steps = slice_params(a, 1)
        if axes != [0]:
            return None
        return list(v[0])[slice(starts[0], ends[0], steps[0])]
    if op == "Equal" and v[0] is not None and v[1] is not None:
        return _pairwise(v[0], v[1], _dim_equal)
    if op == "Where" and all(x is not None for x in v[:3]):
        m = max(len(x) for x in v[:3])
        if any(len(x) not in (1, m) for x in v[:3]):
            return None
        c, a, b = (x * m if len(x) == 1 else x for x in v[:3])
        if any(not is_int(t) for t in c):
            return None
        return [p if int(t) else q for t, p, q in zip(c, a, b)]
    if op == "ReduceProd" and v[0] is not None and len(v[0]) >= 1:
        axes = a.get("axes")
        if axes not in (None, [0], [-1]):       # a 1-D value: its one axis
            return None
        out = v[0][0]
        for d in v[0][1:]:
            out = _int_binary("Mul", out, d)
        return [out]
    if op in ("Max", "Min") and len(v) == 2 and v[0] is not None and v[1] is not None:
        return _pairwise(v[0], v[1], lambda p, q: _dim_extreme(op, p, q))
    if op in ("Add", "Sub", "Mul", "Div", "Mod") and v[0] is not None and v[1] is not None:
        x, y = v[0], v[1]
        if len(x) != len(y) and 1 not in (len(x), len(y)):
            return None
        m = max(len(x), len(y))
        x = x * m if len(x) == 1 else x
        y = y * m if len(y) == 1 else y
        return [_int_binary(op, p, q, int(a.get("fmod", 0) or 0)) for p, q in zip(x, y)]
    return None


# -- driver ---------------------------------------------------------------------------------

def infer(graph: Graph, input_shapes: dict | None = None) -> Inference:
    """Propagate shapes, dtypes and shape values from the graph inputs and constants."""
    inf = Inference()
    for vi in graph.inputs:
        shape = (input_shapes or {}).get(vi.name, vi.shape)
        if shape is not None:
            inf.shapes[vi.name] = tuple(shape)
        inf.dtypes[vi.name] = vi.dtype
    for name, arr in graph.constants.items():
        inf.shapes[name] = tuple(int(d) for d in arr.shape)
        inf.dtypes[name] = arr.dtype.name
        if arr.dtype.kind in "iu" and arr.ndim <= 1 and arr.size <= 64:
            inf.values[name] = [int(x) for x in arr.reshape(-1)]
    for n in graph.nodes:
        rule = RULES.get(n.op)
        outs: list = [None] * len(n.outputs)
        if rule is not None:
            try:
                outs = rule(n, [inf.shapes.get(i) if i else None for i in n.inputs], inf)
            except (ValueError, IndexError, KeyError, TypeError):
                outs = [None] * len(n.outputs)
        for o, sh in zip(n.outputs, outs):
            if sh is not None and o:
                inf.shapes[o] = tuple(int(d) if is_int(d) else d for d in sh)
        for o, dt in zip(n.outputs, _node_dtypes(n, inf)):
            if o and dt:
                inf.dtypes[o] = dt
        if len(n.outputs) == 1:
            try:
                val = _node_values(n, inf)
            except (ValueError, IndexError, TypeError):
                val = None
            if val is not None:
                inf.values[n.outputs[0]] = val
    return inf


def _node_dtypes(n: Node, inf: Inference) -> list[str | None]:
    first = inf.dtypes.get(n.inputs[0]) if n.inputs and n.inputs[0] else None
    if n.op == "Shape":
        return ["int64"]
    if n.op == "Cast":
        return [n.attrs["to"]]
    if n.op == "ConstantOfShape":
        return [np.asarray(n.attrs["value"]).dtype.name]
    if n.op == "MaxPool":
        return ["float32", "int64"]
    if n.op == "Dropout":
        return [first, "bool"]
    if n.op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Not"):
        return ["bool"]
    return [first] + [first] * (len(n.outputs) - 1)


def infer_shapes(graph: Graph, input_shapes: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """Shapes of every tensor with known rank (dims: int, symbol str, or None)."""
    return infer(graph, input_shapes).shapes


def annotate(graph: Graph, input_shapes: dict | None = None) -> Inference:
    """Run `infer` and store shapes and dtypes in `graph.value_info`."""
    from nqrt.graph.ir import ValueInfo

    inf = infer(graph, input_shapes)
    graph.value_info = {name: ValueInfo(name, shape, inf.dtypes.get(name, "float32"))
                        for name, shape in inf.shapes.items()}
    return inf


def numel(shape: Shape) -> int | None:
    return math.prod(shape) if known(shape) else None
