"""Per-op quantizers: one function per float IR op, each emitting `.nq` nodes.

`QUANTIZERS` (below) is the registry: ONNX op type -> `fn(ctx, node)`.  A quantizer reads
the float node, the quantization parameters already chosen for its inputs (`ctx.qparams`),
picks its output's parameters (own calibrated range, or the input's for same-scale ops),
computes every float-derived constant (weights, biases, multipliers, lookup tables) and
emits integer nodes with `ctx.emit`.  Kernels never see a float scale.

`CHECKS` holds, per op, the reasons a node of a supported type still cannot be converted;
`check_supported` reports every unsupported node at once, before any work.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from nqrt import qmath
from nqrt.errors import ConversionError, UnsupportedOpError
from nqrt.format import schema
from nqrt.format.model import Quant
from nqrt.graph.ir import Graph, Node
from nqrt.quant import elementwise, movement
from nqrt.quant import qparams as qp
from nqrt.quant.context import (
    CONCAT_F32, FLATTEN, IDENTITY_PAIR, LAYERNORM, LRN, MAXPOOL, Q_AVGPOOL, Q_CLIP, Q_CONCAT, Q_CONV,
    Q_GEMM, Q_MATMUL, Q_REDUCEMEAN, Q_SOFTMAX, QUANTIZE, REDUCE_MAX, REDUCE_MIN, RESHAPE, SOFTMAX, TRANSPOSE, QContext, as_ints, fused_act, node_label,
    str_attr,
)

__all__ = ["IDENTITY_PAIR", "QUANTIZERS", "CHECKS", "check_supported", "find_unsupported"]

# ---------------------------------------------------------------------------------------
# Window geometry
# ---------------------------------------------------------------------------------------

def _window(ctx: QContext, node: Node, x: str, kernel: list[int]) -> tuple[list, list, list]:
    """(strides, pads [begin..., end...], dilations) with auto_pad resolved."""
    a = node.attrs
    r = len(kernel)
    strides = as_ints(a.get("strides") or [1] * r)
    dilations = as_ints(a.get("dilations") or [1] * r)
    mode = str_attr(a.get("auto_pad", "NOTSET"))
    if mode in ("NOTSET", ""):
        pads = as_ints(a.get("pads") or [0] * (2 * r))
    elif mode == "VALID":
        pads = [0] * (2 * r)
    else:
        shape = ctx.known_shape(x)
        spatial = shape[2:] if shape is not None else None
        if spatial is None or len(spatial) != r or not all(isinstance(d, int) for d in spatial):
            raise ConversionError(f"{node_label(node)}: auto_pad {mode} needs the input's spatial shape")
        begins, ends = [], []
        for i, size in enumerate(spatial):
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - size, 0)
            small, big = total // 2, total - total // 2
            b, e = (small, big) if mode == "SAME_UPPER" else (big, small)
            begins.append(b)
            ends.append(e)
        pads = begins + ends
    if len(strides) != r or len(dilations) != r or len(pads) != 2 * r:
        raise ConversionError(f"{node_label(node)}: window attributes do not match kernel rank {r}")
    return strides, pads, dilations


# ---------------------------------------------------------------------------------------
# Quantizers
# ---------------------------------------------------------------------------------------

def _weighted(ctx: QContext, node: Node, op: str, w: np.ndarray, b: np.ndarray | None,
              attrs: dict) -> None:
    """Shared tail of QConv / QGemm: weights, bias, multipliers, output, node."""
    label = node_label(node)
    x, y = node.inputs[0], node.outputs[0]
    act = fused_act(node)
    s_x, _ = ctx.qparams(x)
    # 7-bit weights (an opt-in) let the AVX2 kernel use vpmaddubsw exactly; depthwise convs
    # have their own kernel, which gains nothing from them, so they keep 8 bits.
    depthwise = op == Q_CONV and int(attrs.get("group", 1)) > 1 and int(attrs["group"]) == w.shape[0] \
        and w.shape[1] == 1
    qmax = qmath.WEIGHT_BITS[8 if depthwise else ctx.weight_bits]
    wq = qp.quantize_weights_and_bias(w, b, s_x, ctx.per_channel, what=label, qmax=qmax)
    for msg in wq.warnings:
        ctx.warnings.append(msg)
    ctx.new_u8_from_range(y, act, label)
    s_y, z_y = ctx.qparams(y)
    m0, n = qp.requant_multipliers(s_x, wq.w_scale, s_y, label)
    act_min, act_max = qp.act_clamp(act, s_y, z_y)
    base = node.name or y
    m_out = int(w.shape[0])
    w_name = ctx.const(base + ".weight", wq.w_q, "int8",
                       Quant([float(s) for s in wq.w_scale], [0] * len(wq.w_scale), wq.axis))
    b_name = ctx.const(base + ".bias", wq.bias_q, "int32",
                       Quant([float(s) for s in wq.bias_scale], [0] * m_out, 0))
    m_name = ctx.const(base + ".multiplier", m0, "int32")
    n_name = ctx.const(base + ".shift", n, "int32")
    ctx.emit(op, [ctx.x(x), w_name, b_name, m_name, n_name], [ctx.x(y)],
             {**attrs, "act_min": act_min, "act_max": act_max}, label)


def _dot_length(node: Node, k: int) -> None:
    if k > schema.MAX_DOT_LENGTH:
        raise ConversionError(f"{node_label(node)}: dot-product length {k} exceeds the v1 limit "
                              f"{schema.MAX_DOT_LENGTH}")


def quantize_conv(ctx: QContext, node: Node) -> None:
    g = ctx.graph
    w = np.asarray(g.constants[node.inputs[1]], np.float32)
    b = g.constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    kernel = list(w.shape[2:])
    strides, pads, dilations = _window(ctx, node, node.inputs[0], kernel)
    group = int(node.attrs.get("group", 1))
    _dot_length(node, int(np.prod(w.shape[1:])))
    _weighted(ctx, node, Q_CONV, w, b, {"strides": strides, "pads": pads, "dilations": dilations,
                                       "group": group})


def quantize_gemm(ctx: QContext, node: Node) -> None:
    g = ctx.graph
    a = node.attrs
    w = np.asarray(g.constants[node.inputs[1]], np.float32)
    if not int(a.get("transB", 0)):
        w = w.T                                   # ONNX semantics: B is K×N; QGemm wants M×K
    w = w * np.float32(a.get("alpha", 1.0))
    b = g.constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if b is not None:
        b = np.broadcast_to(np.asarray(b, np.float32).reshape(-1), (w.shape[0],)) * np.float32(a.get("beta", 1.0))
    _dot_length(node, int(w.shape[1]))
    _weighted(ctx, node, Q_GEMM, np.ascontiguousarray(w), b, {})


def quantize_concat(ctx: QContext, node: Node) -> None:
    """Output range = union of the inputs' ranges; identity pairs where qparams agree.

    In a graph output's tree of Concats (the output, read by no node, or a Concat read only by
    such Concats: ctx.concat_tree), inputs on different grids, or an input already in float,
    are concatenated in float instead (each dequantized with its own (s, z)): one shared
    uint8 grid would round the narrow-range inputs away (a detection head's class scores in
    [0, 1] concatenated with box coordinates in pixels: one grid step of 640/255 ≈ 2.5 sets
    every score to 0).  A float Concat inside the tree feeds the next one as float32."""
    label = node_label(node)
    xs, y = node.inputs, node.outputs[0]
    consts = [t for t in xs if t in ctx.graph.constants]
    for t in consts:                 # a constant input (ViT's class token): uint8 on its own grid
        ctx.constant_u8(t, label)
    axis = int(node.attrs.get("axis", 1))
    floats = [t for t in xs if ctx.is_float(t)]
    params = [ctx.qparams(t) for t in xs if t not in floats]
    if (not consts and y in ctx.concat_tree and fused_act(node) is None
            and (floats or any(p != params[0] for p in params))):
        ctx.float_tensor(y, ctx.tensor_shape(y))
        ctx.emit(CONCAT_F32, [t if t in floats else ctx.dequantized(t) for t in xs], [y],
                 {"axis": axis}, label)
        return
    if all(p == params[0] for p in params):
        ctx.same_scale_u8(y, xs[0])
    else:
        lo = min(ctx.qrange[ctx.x(t)][0] for t in xs)
        hi = max(ctx.qrange[ctx.x(t)][1] for t in xs)
        s, z = qp.activation_qparams(lo, hi, what=f"{label} output {y!r}")
        ctx.new_u8(y, s, z, (lo, hi))
    s_y, z_y = ctx.qparams(y)
    mults, shifts = [], []
    for s_i, z_i in params:
        if (np.float32(s_i), z_i) == (np.float32(s_y), z_y):
            m0, n = IDENTITY_PAIR
        else:
            m0, n = qp.multiplier(s_i / s_y, label)
        mults.append(int(m0))
        shifts.append(int(n))
    ctx.emit(Q_CONCAT, [ctx.x(t) for t in xs], [ctx.x(y)],
             {"axis": axis, "multipliers": mults, "shifts": shifts}, label)
    ctx.clip_after(node, y, fused_act(node))


def quantize_matmul(ctx: QContext, node: Node) -> None:
    """MatMul of two run-time tensors (attention: Q·Kᵀ, softmax·V): QMatMul with one
    per-tensor multiplier s_a·s_b / s_y (spec 4.19).  MatMul with a 2-D constant B is a Gemm;
    a batched constant B (rank >= 3: one matrix per head, e.g. relative-position tables) is a
    uint8 constant on its own per-tensor grid (min/max), the QMatMul's b."""
    label = node_label(node)
    a, b = node.inputs[:2]
    y = node.outputs[0]
    act = fused_act(node)
    ctx.new_u8_from_range(y, act, label)
    if b in ctx.graph.constants:
        b_ref, s_b, _ = elementwise.const_operand(ctx, node, ctx.graph.constants[b])
    else:
        b_ref, (s_b, _) = ctx.x(b), ctx.qparams(b)
    (s_a, _), (s_y, z_y) = ctx.qparams(a), ctx.qparams(y)
    m0, n = qp.multiplier(s_a * s_b / s_y, label)
    act_min, act_max = qp.act_clamp(act, s_y, z_y)
    ctx.emit(Q_MATMUL, [ctx.x(a), b_ref], [ctx.x(y)],
             {"multiplier": int(m0), "shift": int(n), "act_min": act_min, "act_max": act_max}, label)


def quantize_maxpool(ctx: QContext, node: Node) -> None:
    label = node_label(node)
    x, y = node.inputs[0], node.outputs[0]
    kernel = as_ints(node.attrs["kernel_shape"])
    strides, pads, dilations = _window(ctx, node, x, kernel)
    ctx.same_scale_u8(y, x)
    s, z = ctx.qparams(y)
    act_min, act_max = qp.act_clamp(fused_act(node), s, z)
    ctx.emit(MAXPOOL, [ctx.x(x)], [ctx.x(y)],
             {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
              "ceil_mode": int(node.attrs.get("ceil_mode", 0)),
              "act_min": act_min, "act_max": act_max}, label)


def quantize_averagepool(ctx: QContext, node: Node) -> None:
    label = node_label(node)
    x, y = node.inputs[0], node.outputs[0]
    act = fused_act(node)
    kernel = as_ints(node.attrs["kernel_shape"])
    strides, pads, _ = _window(ctx, node, x, kernel)
    ctx.new_u8_from_range(y, act, label)
    (s_x, _), (s_y, z_y) = ctx.qparams(x), ctx.qparams(y)
    k = int(np.prod(kernel))
    m0, n = qp.average_tables(s_x, s_y, k, label)
    base = node.name or y
    act_min, act_max = qp.act_clamp(act, s_y, z_y)
    ctx.emit(Q_AVGPOOL, [ctx.x(x), ctx.const(base + ".multiplier", m0, "int32"),
                         ctx.const(base + ".shift", n, "int32")], [ctx.x(y)],
             {"kernel_shape": kernel, "strides": strides, "pads": pads,
              "ceil_mode": int(node.attrs.get("ceil_mode", 0)),
              "count_include_pad": int(node.attrs.get("count_include_pad", 0)),
              "act_min": act_min, "act_max": act_max}, label)


def _reduce_mean(ctx: QContext, node: Node, axes: list[int], keepdims: int, total: bool = False) -> None:
    """QReduceMean; with total=True the sum itself (ReduceSum: QReduceMean's `sum` flag, no
    division by the count)."""
    label = node_label(node)
    x, y = node.inputs[0], node.outputs[0]
    act = fused_act(node)
    shape = ctx.known_shape(x)
    dims = [shape[a] for a in axes] if shape is not None else []
    # The count the converter assumes; the runtime recomputes (M0, n) if the shape differs.
    count = int(np.prod(dims)) if dims and all(isinstance(d, int) and d > 0 for d in dims) else 1
    if count * qmath.UINT8_MAX >= 2**31:
        raise ConversionError(f"{label}: reduces {count} elements (limit 8 421 504)")
    ctx.new_u8_from_range(y, act, label)
    (s_x, _), (s_y, z_y) = ctx.qparams(x), ctx.qparams(y)
    m0, n = qp.multiplier(s_x / s_y if total else s_x / (s_y * count), label)
    base = node.name or y
    act_min, act_max = qp.act_clamp(act, s_y, z_y)
    attrs = {"axes": axes, "keepdims": int(keepdims), "count": count,
             "act_min": act_min, "act_max": act_max}
    if total:
        attrs["sum"] = 1
    ctx.emit(Q_REDUCEMEAN, [ctx.x(x), ctx.const(base + ".multiplier", np.array([m0]), "int32"),
                            ctx.const(base + ".shift", np.array([n]), "int32")], [ctx.x(y)],
             attrs, label)


def quantize_globalaveragepool(ctx: QContext, node: Node) -> None:
    rank = ctx.rank(node.inputs[0], node_label(node))
    _reduce_mean(ctx, node, list(range(2, rank)), 1)


def quantize_reducemean(ctx: QContext, node: Node) -> None:
    rank = ctx.rank(node.inputs[0], node_label(node))
    axes = node.attrs.get("axes")
    # ONNX: no axes (and noop_with_empty_axes = 0, checked in CHECKS) reduces over every axis
    axes = sorted({a % rank for a in as_ints(axes)}) if axes else list(range(rank))
    _reduce_mean(ctx, node, axes, int(node.attrs.get("keepdims", 1)), total=node.op == "ReduceSum")


def quantize_reduce_extreme(ctx: QContext, node: Node) -> None:
    """ReduceMax / ReduceMin: the extreme code is the extreme value (same (s, z) as x), so the
    op moves codes exactly (CBAM's channel max, a max over tokens)."""
    label = node_label(node)
    x, y = node.inputs[0], node.outputs[0]
    rank = ctx.rank(x, label)
    axes = node.attrs.get("axes")
    axes = sorted({a % rank for a in as_ints(axes)}) if axes else list(range(rank))
    ctx.same_scale_u8(y, x)
    s, z = ctx.qparams(y)
    act_min, act_max = qp.act_clamp(fused_act(node), s, z)
    ctx.emit(REDUCE_MAX if node.op == "ReduceMax" else REDUCE_MIN, [ctx.x(x)], [ctx.x(y)],
             {"axes": axes, "keepdims": int(node.attrs.get("keepdims", 1)),
              "act_min": act_min, "act_max": act_max}, label)


def _standalone_clip(ctx: QContext, node: Node, lo: float, hi: float) -> None:
    """Relu / Clip not fused into a producer: QClip at the input's (s, z)."""
    x, y = node.inputs[0], node.outputs[0]
    act = fused_act(node)
    if act is not None:
        lo, hi = max(lo, act[0]), min(hi, act[1])
    ctx.same_scale_u8(y, x)
    s, z = ctx.qparams(y)
    act_min, act_max = qp.act_clamp((lo, hi), s, z)
    ctx.emit(Q_CLIP, [ctx.x(x)], [ctx.x(y)], {"act_min": act_min, "act_max": act_max},
             node_label(node))


def quantize_relu(ctx: QContext, node: Node) -> None:
    _standalone_clip(ctx, node, 0.0, math.inf)


def quantize_clip(ctx: QContext, node: Node) -> None:
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    _standalone_clip(ctx, node, -math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))


def _same_scale(op: str, attrs_of: Callable[[QContext, Node], dict]):
    def quantize(ctx: QContext, node: Node) -> None:
        x, y = node.inputs[0], node.outputs[0]
        ctx.same_scale_u8(y, x)
        ctx.emit(op, [ctx.x(x)], [ctx.x(y)], attrs_of(ctx, node), node_label(node))
        ctx.clip_after(node, y, fused_act(node))
    quantize.__name__ = f"quantize_{op.lower()}"
    return quantize


def _transpose_perm(ctx: QContext, node: Node) -> dict:
    perm = node.attrs.get("perm")
    if perm is None:
        perm = list(reversed(range(ctx.rank(node.inputs[0], node_label(node)))))
    return {"perm": as_ints(perm)}


quantize_flatten = _same_scale(FLATTEN, lambda ctx, n: {"axis": int(n.attrs.get("axis", 1))})
quantize_reshape = _same_scale(RESHAPE, lambda ctx, n: {"shape": as_ints(n.attrs["shape"])})
quantize_transpose = _same_scale(TRANSPOSE, _transpose_perm)


def _float_op(ctx: QContext, node: Node, op: str, attrs: dict, out_range=None,
              consts: tuple = ()) -> None:
    """An op with no integer kernel runs in float32: Dequantize its input, then `op` (with the
    constant tensors `consts` as its further inputs).  At a graph output with no consumer the
    float result is the output; anywhere else it is a float fallback `Dequantize → op →
    Quantize`, quantized again with its calibrated range (clamped to out_range when the op
    bounds it)."""
    x, y = node.inputs[0], node.outputs[0]
    xf = ctx.dequantized(x)
    if y in ctx.output_names and not ctx.graph.consumers().get(y):
        ctx.float_tensor(y, ctx.tensor_shape(y))
        ctx.emit(op, [xf, *consts], [y], attrs, node_label(node))
        return
    yf = ctx.float_tensor(ctx.unique(y + ".float"), ctx.tensor_shape(y))
    ctx.emit(op, [xf, *consts], [yf], attrs, node_label(node))
    yq = ctx.new_u8_from_range(y, out_range, node_label(node))
    ctx.emit(QUANTIZE, [yf], [yq], {}, node_label(node) + ".quantize")


def quantize_softmax(ctx: QContext, node: Node) -> None:
    """Softmax feeding other ops (attention's probabilities): QSoftmax, in integers from the
    uint8 input (spec 4.21; a table of exponentials of the code differences and one integer
    division per row), its output on the calibrated range within [0, 1].  A Softmax that is a
    graph output read by no node stays float32 (_float_op): the probabilities leave the model
    unrounded."""
    axis = int(node.attrs.get("axis", -1))
    x, y = node.inputs[0], node.outputs[0]
    if y in ctx.output_names and not ctx.graph.consumers().get(y):
        _float_op(ctx, node, SOFTMAX, {"axis": axis}, (0.0, 1.0))
        return
    label = node_label(node)
    ctx.new_u8_from_range(y, (0.0, 1.0), label)
    (s_x, _), (s_y, z_y) = ctx.qparams(x), ctx.qparams(y)
    table, numerator, shift = qp.softmax_constants(s_x, s_y, label)
    act_min, act_max = qp.act_clamp(None, s_y, z_y)
    ctx.emit(Q_SOFTMAX, [ctx.x(x), ctx.const((node.name or y) + ".table", table, "int32")],
             [ctx.x(y)], {"axis": axis, "numerator": numerator, "shift": shift,
                          "act_min": act_min, "act_max": act_max}, label)


def quantize_lrn(ctx: QContext, node: Node) -> None:
    """LRN in float32 (_float_op)."""
    attrs = {k: float(node.attrs[k]) for k in ("alpha", "beta", "bias")}
    _float_op(ctx, node, LRN, attrs | {"size": int(node.attrs["size"])})


def quantize_layernorm(ctx: QContext, node: Node) -> None:
    """LayerNormalization in float32 (_float_op): axis made non-negative, scale and bias
    (zeros when absent) broadcast to the normalized shape x.shape[axis:] and stored as float32
    constants.  RMSNormalization (no bias input) is the same op with rms = 1 (spec 4.16)."""
    g = ctx.graph
    shape = ctx.tensor_shape(node.inputs[0])
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    norm = tuple(int(d) for d in shape[axis:])
    has_bias = len(node.inputs) > 2 and node.inputs[2]
    vals = []
    for t in (node.inputs[1], node.inputs[2] if has_bias else None):
        v = np.asarray(g.constants[t], np.float32) if t else np.zeros((), np.float32)
        try:
            vals.append(np.broadcast_to(v, norm))
        except ValueError:
            raise ConversionError(f"{node_label(node)}: {t!r} of shape {list(v.shape)} does not "
                                  f"broadcast to the normalized shape {list(norm)}") from None
    y = node.outputs[0]
    consts = (ctx.const(y + ".ln_scale", vals[0], "float32"), ctx.const(y + ".ln_bias", vals[1], "float32"))
    attrs = {"axis": axis, "epsilon": float(node.attrs.get("epsilon", 1e-5))}
    if node.op == "RMSNormalization":
        attrs["rms"] = 1
    _float_op(ctx, node, LAYERNORM, attrs, consts=consts)


# ONNX op -> quantizer.  The only registry of what the converter supports.
QUANTIZERS: dict[str, Callable[[QContext, Node], None]] = {
    "Conv": quantize_conv,
    "Gemm": quantize_gemm,
    "MatMul": quantize_matmul,
    "Concat": quantize_concat,
    "MaxPool": quantize_maxpool,
    "AveragePool": quantize_averagepool,
    "GlobalAveragePool": quantize_globalaveragepool,
    "ReduceMean": quantize_reducemean,
    "ReduceSum": quantize_reducemean,
    "ReduceMax": quantize_reduce_extreme,
    "ReduceMin": quantize_reduce_extreme,
    "Relu": quantize_relu,
    "Clip": quantize_clip,
    "Flatten": quantize_flatten,
    "Reshape": quantize_reshape,
    "Transpose": quantize_transpose,
    "Softmax": quantize_softmax,
    "LRN": quantize_lrn,
    "LayerNormalization": quantize_layernorm,
    "RMSNormalization": quantize_layernorm,
    **elementwise.QUANTIZERS,       # Add/Sub/Mul/Div/Pow, unary functions (QAdd, QMul, QLut)
    **movement.QUANTIZERS,          # Slice, Split, Squeeze, Unsqueeze, Pad, Resize, GlobalMaxPool, Identity
}


# ---------------------------------------------------------------------------------------
# Support check: every reason a node cannot be converted, found before any work
# ---------------------------------------------------------------------------------------

def _spatial_rank_ok(node: Node, r: int) -> str | None:
    return None if r in (1, 2) else f"{r}-D {node.op} (only 1-D and 2-D)"


def _check_conv(graph: Graph, node: Node, consumers) -> str | None:
    if len(node.inputs) < 2 or node.inputs[1] not in graph.constants:
        return "Conv with non-constant weights"
    if len(node.inputs) > 2 and node.inputs[2] and node.inputs[2] not in graph.constants:
        return "Conv with non-constant bias"
    return _spatial_rank_ok(node, np.ndim(graph.constants[node.inputs[1]]) - 2)


def _check_gemm(graph: Graph, node: Node, consumers) -> str | None:
    a = node.attrs
    if len(node.inputs) < 2 or node.inputs[1] not in graph.constants:
        return "Gemm with non-constant weights"
    if np.ndim(graph.constants[node.inputs[1]]) != 2:
        return "Gemm with non-2-D weights"
    if len(node.inputs) > 2 and node.inputs[2] and node.inputs[2] not in graph.constants:
        return "Gemm with non-constant bias"
    if int(a.get("transA", 0)):
        return "Gemm with transA=1"
    return None


def _check_matmul(graph: Graph, node: Node, consumers) -> str | None:
    if not all(node.inputs[:2]) or node.inputs[0] in graph.constants:
        return "MatMul with a constant left operand (a constant right operand is a Gemm)"
    shapes = [graph.value_info.get(t) for t in node.inputs[:2]]
    if any(v is None or v.shape is None or len(v.shape) < 2 for v in shapes):
        return "MatMul of two run-time tensors of rank < 2 or unknown rank"
    k = shapes[0].shape[-1]
    if isinstance(k, int) and k > schema.MATMUL_K_MAX:
        return f"MatMul of two run-time tensors with K = {k} > {schema.MATMUL_K_MAX}"
    return None


def _check_concat(graph: Graph, node: Node, consumers) -> str | None:
    if not node.inputs or any(not t for t in node.inputs):
        return "Concat with an empty input"
    if all(t in graph.constants for t in node.inputs):
        return None                                  # folded by fold_constants
    if any(t in graph.constants and np.asarray(graph.constants[t]).dtype.kind != "f"
           for t in node.inputs):
        return "Concat with a non-float constant"
    return None


def _check_pool(graph: Graph, node: Node, consumers) -> str | None:
    a = node.attrs
    if "kernel_shape" not in a:
        return f"{node.op} without kernel_shape"
    if node.op == "MaxPool" and int(a.get("storage_order", 0)):
        return "MaxPool with storage_order=1"
    if node.op == "MaxPool" and len([o for o in node.outputs if o]) > 1:
        return "MaxPool with an Indices output"
    if node.op == "AveragePool" and any(int(d) != 1 for d in (a.get("dilations") or [])):
        return "AveragePool with dilations"
    k = as_ints(a["kernel_shape"])
    pads = as_ints(a.get("pads") or [])
    if any(p >= k[i % len(k)] for i, p in enumerate(pads)):
        return f"{node.op} with a pad not smaller than the kernel"
    return _spatial_rank_ok(node, len(a["kernel_shape"]))


def _check_reducemean(graph: Graph, node: Node, consumers) -> str | None:
    if not node.attrs.get("axes") and int(node.attrs.get("noop_with_empty_axes", 0)):
        return f"{node.op} with noop_with_empty_axes=1 and no axes"
    return None


def _check_layernorm(graph: Graph, node: Node, consumers) -> str | None:
    if len(node.inputs) < 2 or node.inputs[1] not in graph.constants:
        return f"{node.op} with a non-constant scale"
    if len(node.inputs) > 2 and node.inputs[2] and node.inputs[2] not in graph.constants:
        return "LayerNormalization with a non-constant bias"
    return None


def _check_reshape(graph: Graph, node: Node, consumers) -> str | None:
    a = node.attrs
    if "shape" not in a:
        return "Reshape with a run-time shape"
    if int(a.get("allowzero", 0)) and 0 in as_ints(a["shape"]):
        return "Reshape with allowzero=1"
    return None


CHECKS: dict[str, Callable] = {
    "Conv": _check_conv,
    "Gemm": _check_gemm,
    "MatMul": _check_matmul,
    "Concat": _check_concat,
    "MaxPool": _check_pool,
    "AveragePool": _check_pool,
    "ReduceMean": _check_reducemean,
    "ReduceSum": _check_reducemean,
    "ReduceMax": _check_reducemean,
    "ReduceMin": _check_reducemean,
    "Reshape": _check_reshape,
    "LayerNormalization": _check_layernorm,
    "RMSNormalization": _check_layernorm,
    **elementwise.CHECKS,
    **movement.CHECKS,
}


# Ops that graph passes lower to others (graph/passes); one left in the graph was not lowered.
NOT_LOWERED: dict[str, str] = {
    "ConvTranspose": "ConvTranspose with a non-constant weight or bias, or an input whose "
                     "channel count or spatial size is unknown",
    "InstanceNormalization": "InstanceNormalization with a non-constant scale or bias, or an "
                             "input of unknown rank",
    "DepthToSpace": "DepthToSpace of an input that is not 4-D with known C, H, W",
    "SpaceToDepth": "SpaceToDepth of an input that is not 4-D with known C, H, W",
    "BatchNormalization": "BatchNormalization with non-constant parameters, in training mode "
                          "(statistics of a run-time tensor), or of an input whose channel "
                          "count is unknown",
}


def find_unsupported(graph: Graph) -> dict[str, list[str]]:
    """{op type or reason: [node labels]} for every node that cannot be converted."""
    consumers = graph.consumers()
    bad: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.op not in QUANTIZERS:
            reason = NOT_LOWERED.get(node.op, node.op)
        else:
            check = CHECKS.get(node.op)
            reason = check(graph, node, consumers) if check else None
        if reason is not None:
            bad.setdefault(reason, []).append(node_label(node))
    for v in graph.inputs:
        if v.dtype != "float32":
            bad.setdefault(f"{v.dtype} graph input", []).append(v.name)
    return bad


def check_supported(graph: Graph) -> None:
    """Raise one UnsupportedOpError listing every unsupported op and the nodes using it."""
    bad = find_unsupported(graph)
    if not bad:
        return
    parts = [f"{reason} (nodes: {', '.join(names)})" for reason, names in bad.items()]
    by_op: dict[str, list[str]] = {}
    labels = {node_label(n): n.op for n in graph.nodes}
    for reason, names in bad.items():
        for nm in names:
            by_op.setdefault(labels.get(nm, reason), []).append(nm)
    raise UnsupportedOpError(
        f"cannot convert {sum(len(v) for v in bad.values())} node(s); unsupported: " + "; ".join(parts),
        by_op)
