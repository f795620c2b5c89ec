"""Quantizers of the same-scale data-movement ops of the CNN extension (formats/nq-v1.md
4.11-4.14): the output keeps the input's (s, z) and the bytes are moved, never recomputed.

  Slice -> Slice;  Split -> one Slice per output;  Squeeze / Unsqueeze -> Squeeze / Unsqueeze;
  Pad (constant) -> Pad with the pad value as a code of x's grid;  Resize / Upsample (nearest)
  -> ResizeNearest, (linear / cubic, over H and W of a 4-D tensor) -> ResizeLinear /
  ResizeCubic (integer interpolation weights, spec 4.17 / 4.24: the values are recomputed,
  the grid kept);  GlobalMaxPool -> MaxPool over the whole (known) spatial extent;
  Identity (left between a graph input and a graph output) -> QClip [0, 255] (a copy).
"""

from __future__ import annotations

import numpy as np

from nqrt import qmath
from nqrt.format import schema
from nqrt.format.schema import PAD_BORDER_MODES
from nqrt.format.validate import pad_border_limit
from nqrt.errors import ConversionError, UnsupportedOpError
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import is_int, norm_axis, resize_params, split_sizes
from nqrt.quant import qparams as qp
from nqrt.quant.context import (EXPAND, MAXPOOL, PAD, PAD_BORDER, Q_CLIP, Q_LUT, RESIZE_CUBIC, RESIZE_LINEAR, RESIZE_NEAREST, SLICE,
                                SQUEEZE, UNSQUEEZE, QContext, as_ints, fused_act, node_label)
from nqrt.quant.elementwise import lut_table

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _emit_same(ctx: QContext, node: Node, op: str, attrs: dict, y: str | None = None,
               label: str | None = None) -> None:
    x = node.inputs[0]
    y = y or node.outputs[0]
    ctx.same_scale_u8(y, x)
    ctx.emit(op, [ctx.x(x)], [ctx.x(y)], attrs, label or node_label(node))
    ctx.clip_after(node, y, fused_act(node))


def _int64(v) -> int:
    return int(min(max(int(v), INT64_MIN), INT64_MAX))


def quantize_slice(ctx: QContext, node: Node) -> None:
    a = node.attrs
    starts = [_int64(v) for v in a["starts"]]
    axes = as_ints(a["axes"]) if a.get("axes") is not None else list(range(len(starts)))
    steps = as_ints(a["steps"]) if a.get("steps") else [1] * len(starts)
    _emit_same(ctx, node, SLICE, {"starts": starts, "ends": [_int64(v) for v in a["ends"]],
                                  "axes": axes, "steps": steps})


def quantize_split(ctx: QContext, node: Node) -> None:
    x = node.inputs[0]
    label = node_label(node)
    shape = ctx.known_shape(x)
    if shape is None:
        raise ConversionError(f"{label}: rank of the Split input {x!r} is unknown")
    axis = norm_axis(int(node.attrs.get("axis", 0)), len(shape))
    sizes = split_sizes(node.attrs, shape[axis], len(node.outputs))
    if sizes is None:
        raise ConversionError(f"{label}: Split into equal parts of an axis of unknown length")
    begin = 0
    for i, (y, size) in enumerate(zip(node.outputs, sizes)):
        if y:
            _emit_same(ctx, node, SLICE, {"starts": [begin], "ends": [begin + size], "axes": [axis],
                                          "steps": [1]}, y=y, label=f"{label}/{i}")
        begin += size


def _squeeze_axes(ctx: QContext, node: Node) -> list[int]:
    axes = node.attrs.get("axes")
    if axes is not None:
        return as_ints(axes)
    shape = ctx.known_shape(node.inputs[0])
    if shape is None or not all(is_int(d) for d in shape):
        raise ConversionError(f"{node_label(node)}: Squeeze without axes needs the input's shape")
    return [i for i, d in enumerate(shape) if d == 1]


def quantize_squeeze(ctx: QContext, node: Node) -> None:
    _emit_same(ctx, node, SQUEEZE, {"axes": _squeeze_axes(ctx, node)})


def quantize_unsqueeze(ctx: QContext, node: Node) -> None:
    _emit_same(ctx, node, UNSQUEEZE, {"axes": as_ints(node.attrs["axes"])})


def quantize_pad(ctx: QContext, node: Node) -> None:
    x = node.inputs[0]
    r = ctx.rank(x, node_label(node))
    pads = as_ints(node.attrs["pads"])
    axes = node.attrs.get("axes")
    if axes is not None:                               # opset-18 axes (fill_shape_attrs missed it)
        full = [0] * (2 * r)
        for j, ax in enumerate(as_ints(axes)):
            ax = norm_axis(ax, r)
            full[ax], full[ax + r] = pads[j], pads[j + len(axes)]
        pads = full
    mode = node.attrs.get("mode", "constant")
    if mode != "constant":              # reflect / edge / wrap copy elements of x: x's grid
        _emit_same(ctx, node, PAD_BORDER, {"pads": pads, "mode": mode})
        return
    s, z = ctx.qparams(x)
    v = float(node.attrs.get("constant_value") or 0.0)
    code = z if v == 0.0 else int(np.rint(v / s)) + z
    if qmath.UINT8_MIN <= code <= qmath.UINT8_MAX:
        _emit_same(ctx, node, PAD, {"pads": pads, "value": int(code)})
        return
    # The value lies outside x's grid (EfficientViT pads its values with a row of ones to get
    # the attention's normalizer from the same product): x is first moved by a table onto a
    # grid that also holds v (the calibrated range of x and v), then padded on that grid.
    label = node_label(node)
    lo, hi = ctx.qrange[ctx.x(x)]
    lo, hi = min(lo, v), max(hi, v)
    s2, z2 = qp.activation_qparams(lo, hi, what=f"{label} padded input")
    mid = ctx.unique(x + ".padgrid")
    ctx.alias_shape(mid, x)
    ctx.new_u8(mid, s2, z2, (lo, hi))
    table = lut_table(lambda r: r, s, z, s2, z2, qmath.UINT8_MIN, qmath.UINT8_MAX)
    t = ctx.const(mid + ".table", table, "uint8")
    ctx.emit(Q_LUT, [ctx.x(x), t], [ctx.x(mid)], {}, label + ".regrid")
    code = int(np.rint(v / s2)) + z2
    y = node.outputs[0]
    ctx.same_scale_u8(y, mid)
    ctx.emit(PAD, [ctx.x(mid)], [ctx.x(y)], {"pads": pads, "value": code}, label)
    ctx.clip_after(node, y, fused_act(node))


def quantize_resize(ctx: QContext, node: Node) -> None:
    label = node_label(node)
    shape = ctx.known_shape(node.inputs[0])
    if shape is None:
        raise ConversionError(f"{label}: rank of the Resize input is unknown")
    scales, sizes = resize_params(node.attrs, shape)
    mode = node.attrs.get("mode", "nearest")
    if mode in ("linear", "cubic"):
        _quantize_resize_hw(ctx, node, mode, scales, sizes)
        return
    nearest = node.attrs["nearest_mode"]
    if nearest == "simple":                            # opset <= 10: truncation when upsampling
        up = all(sc >= 1.0 for sc in scales) if scales is not None else \
            all(is_int(d) and n >= d for n, d in zip(sizes, shape))
        if not up:
            raise UnsupportedOpError(f"cannot convert {label}: opset<11 nearest Resize/Upsample that "
                                     "downsamples", {"Resize": [label]})
        nearest = "floor"
    attrs = {"coordinate_transformation_mode": node.attrs["coordinate_transformation_mode"],
             "nearest_mode": nearest}
    _emit_same(ctx, node, RESIZE_NEAREST, attrs | _resize_size_attrs(label, scales, sizes))


def _resize_size_attrs(label: str, scales, sizes) -> dict:
    """The `.nq` scales (float32 values) or sizes (ints) attribute of a ResizeNearest /
    ResizeLinear."""
    if sizes is None:
        return {"scales": [float(np.float32(v)) for v in scales]}
    if not all(is_int(d) for d in sizes):
        raise ConversionError(f"{label}: Resize sizes with an unknown dim: {sizes}")
    return {"sizes": [int(d) for d in sizes]}


def _quantize_resize_hw(ctx: QContext, node: Node, mode: str, scales, sizes) -> None:
    """Linear -> ResizeLinear on the input's grid (its weights are convex: the result stays
    inside the input's range); cubic -> ResizeCubic, requantized to the output's calibrated
    range (the negative lobes overshoot the input's range: spec 4.24)."""
    label = node_label(node)
    attrs = {"coordinate_transformation_mode": node.attrs["coordinate_transformation_mode"]}
    attrs |= _resize_size_attrs(label, scales, sizes)
    if mode == "linear":
        _emit_same(ctx, node, RESIZE_LINEAR, attrs)
        return
    x, y = node.inputs[0], node.outputs[0]
    ctx.new_u8_from_range(y, None, label)
    (s_x, _), (s_y, _) = ctx.qparams(x), ctx.qparams(y)
    m0, n = qp.multiplier(s_x / (s_y * 2.0 ** (2 * qmath.CUBIC_BITS)), label, bits=qmath.CUBIC_MULTIPLIER_BITS)
    attrs |= {"cubic_coeff_a": float(node.attrs["cubic_coeff_a"]),
              "exclude_outside": int(node.attrs["exclude_outside"]), "multiplier": m0, "shift": n}
    ctx.emit(RESIZE_CUBIC, [ctx.x(x)], [ctx.x(y)], attrs, label)


def quantize_globalmaxpool(ctx: QContext, node: Node) -> None:
    label = node_label(node)
    shape = ctx.known_shape(node.inputs[0])
    spatial = list(shape[2:]) if shape is not None else []
    if len(spatial) not in (1, 2) or not all(is_int(d) and d > 0 for d in spatial):
        raise ConversionError(f"{label}: GlobalMaxPool needs a 1-D or 2-D input with known spatial "
                              f"dims (got {shape})")
    x, y = node.inputs[0], node.outputs[0]
    ctx.same_scale_u8(y, x)
    s, z = ctx.qparams(y)
    act_min, act_max = qp.act_clamp(fused_act(node), s, z)
    k = [int(d) for d in spatial]
    ctx.emit(MAXPOOL, [ctx.x(x)], [ctx.x(y)],
             {"kernel_shape": k, "strides": [1] * len(k), "pads": [0] * (2 * len(k)),
              "dilations": [1] * len(k), "ceil_mode": 0, "act_min": act_min, "act_max": act_max}, label)


def quantize_identity(ctx: QContext, node: Node) -> None:
    _emit_same(ctx, node, Q_CLIP, {"act_min": qmath.UINT8_MIN, "act_max": qmath.UINT8_MAX})


# ---------------------------------------------------------------------------------------
# Support checks
# ---------------------------------------------------------------------------------------

def _runtime_params(graph: Graph, node: Node, consumers) -> str | None:
    """Attribute-like inputs (Slice starts/ends/axes/steps, Split split, Squeeze/Unsqueeze
    axes, Resize scales/sizes) still fed at run time keep their input slot (normalize.py)."""
    if len(node.inputs) > 1 and any(node.inputs[1:]):
        return f"{node.op} with run-time parameters"
    return None


def _check_pad(graph: Graph, node: Node, consumers) -> str | None:
    if node.attrs.get("pads") is None or len(node.inputs) > 1 and any(node.inputs[1:]):
        return "Pad with run-time pads, value or axes"
    if any(int(p) < 0 for p in node.attrs["pads"]):
        return "Pad with negative pads"
    mode = node.attrs.get("mode", "constant")
    if mode != "constant":
        if mode not in PAD_BORDER_MODES:
            return f"Pad mode {mode!r}"
        shape = graph.value_info.get(node.inputs[0])
        shape = None if shape is None else shape.shape
        pads, r = [int(p) for p in node.attrs["pads"]], len(node.attrs["pads"]) // 2
        axes = node.attrs.get("axes")
        if shape is not None and axes is None and len(shape) == r:
            for d in range(r):
                if isinstance(shape[d], (int, np.integer)) and (pads[d] or pads[d + r]):
                    msg = pad_border_limit(mode, int(shape[d]), pads[d], pads[d + r])
                    if msg:
                        return f"Pad ({msg})"
    return None


def _check_resize(graph: Graph, node: Node, consumers) -> str | None:
    if len(node.inputs) > 1 and any(node.inputs[1:]):
        return "Resize with run-time parameters"
    if not node.attrs.get("scales") and not node.attrs.get("sizes"):
        return "Resize without scales or sizes"
    mode = node.attrs.get("mode", "nearest")
    if mode in ("linear", "cubic"):
        return _check_resize_hw(graph, node, mode)
    return None


def _check_resize_hw(graph: Graph, node: Node, mode: str) -> str | None:
    """ResizeLinear / ResizeCubic interpolate H and W of a 4-D (NCHW) tensor: N and C keep
    their length."""
    shape = graph.value_info.get(node.inputs[0])
    shape = None if shape is None else shape.shape
    if shape is None or len(shape) != 4:
        return f"{mode} Resize of a tensor that is not 4-D (N, C, H, W)"
    scales, sizes = node.attrs.get("scales"), node.attrs.get("sizes")
    if scales and any(float(v) != 1.0 for v in list(scales)[:2]):
        return f"{mode} Resize that scales N or C"
    if sizes and any(not is_int(d) or int(n) != int(d) for n, d in zip(list(sizes)[:2], shape[:2])):
        return f"{mode} Resize that resizes N or C"
    if node.attrs.get("coordinate_transformation_mode") == "tf_half_pixel_for_nn":
        return f"{mode} Resize with coordinate_transformation_mode tf_half_pixel_for_nn"
    if mode == "cubic":
        a, (lo, hi) = float(node.attrs["cubic_coeff_a"]), schema.CUBIC_COEFF_A_RANGE
        if not lo <= a <= hi:
            return f"cubic Resize with cubic_coeff_a {a} outside [{lo}, {hi}]"
    return None


def quantize_expand(ctx: QContext, node: Node) -> None:
    """Expand -> Expand (same scale).  A constant x (a class token) is quantized on its own
    grid first.  The target shape is a constant, or fold_constants' like_shape with the
    second input a run-time tensor whose dims fill the −1 entries (the batch)."""
    label = node_label(node)
    x, y = node.inputs[0], node.outputs[0]
    if x in ctx.graph.constants:
        ctx.constant_u8(x, label)
    if "like_shape" in node.attrs:
        inputs, shape = [ctx.x(x), ctx.x(node.inputs[1])], as_ints(node.attrs["like_shape"])
    else:
        inputs = [ctx.x(x)]
        shape = [int(v) for v in np.asarray(ctx.graph.constants[node.inputs[1]]).reshape(-1)]
    ctx.same_scale_u8(y, x)
    ctx.emit(EXPAND, inputs, [ctx.x(y)], {"shape": shape}, label)


QUANTIZERS = {
    "Expand": quantize_expand,
    "Slice": quantize_slice, "Split": quantize_split, "Squeeze": quantize_squeeze,
    "Unsqueeze": quantize_unsqueeze, "Pad": quantize_pad, "Resize": quantize_resize,
    "GlobalMaxPool": quantize_globalmaxpool, "Identity": quantize_identity,
}
def _check_expand(graph: Graph, node: Node, consumers) -> str | None:
    if "like_shape" in node.attrs:
        return None if node.inputs[1] in {v.name for v in graph.inputs} else "Expand with an unquantized shape source"
    if len(node.inputs) < 2 or node.inputs[1] not in graph.constants:
        return "Expand with a shape computed at run time"
    return None


CHECKS = {
    "Expand": _check_expand,
    "Slice": _runtime_params, "Split": _runtime_params, "Squeeze": _runtime_params,
    "Unsqueeze": _runtime_params, "Pad": _check_pad, "Resize": _check_resize,
}
