"""ONNX -> float IR (`load_onnx`).

The result satisfies the IR invariants (nqrt/graph/ir.py):
  * initializers and `Constant` node values are `graph.constants` (initializers also listed
    as graph inputs, as IR-3 exporters do, are constants, not inputs);
  * every node has all its attributes, ONNX spec defaults filled in (shape-dependent ones such
    as Conv kernel_shape or auto_pad SAME_* pads once shapes are known);
  * attribute-like inputs (shapes.ATTR_INPUTS: Reshape shape, Clip min/max, Squeeze/Unsqueeze/
    ReduceMean axes, Pad pads, Slice starts/ends/axes/steps, ...) are attributes when constant;
    a run-time one keeps its input slot and the attribute is None until fold_constants;
  * Clip min/max are floats (+-inf when absent); Sum becomes a chain of Add; Softmax has
    opset-13 semantics (opset < 13 softmax over a non-last axis becomes Flatten/Softmax/Reshape);
    BatchNormalization and Dropout keep only their first output; Cast `to` is a numpy dtype
    name; ConstantOfShape `value` is a numpy array.
`graph.opset` is the model's default-domain opset (9..21; a model of another opset is first
converted to 9 or 21 by onnx.version_converter); graph.metadata["source_sha256"] is the sha256
of the serialized model bytes as given.

Errors: unreadable / malformed input -> FormatError; operators outside IMPORTERS (all of them
collected first) or unsupported attribute values -> UnsupportedOpError.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nqrt.errors import FormatError, UnsupportedOpError, name_list
from nqrt.graph.ir import Graph, Node, ValueInfo
from nqrt.graph.normalize import fill_shape_attrs, promote_const_inputs
from nqrt.graph.shapes import annotate

MIN_OPSET, MAX_OPSET = 9, 21


@dataclass
class _Src:
    """One ONNX node as seen by an importer function."""
    op: str
    inputs: list[str]
    outputs: list[str]
    name: str


class _Ctx:
    def __init__(self, opset: int, constants: dict[str, np.ndarray], used: set[str]):
        self.opset = opset
        self.constants = constants
        self.used = used              # tensors read by some node or a graph output
        self.counter = 0

    def node(self, n: _Src, op: str | None = None, attrs: dict | None = None,
             inputs: list[str] | None = None, outputs: list[str] | None = None) -> Node:
        node = Node(op or n.op, list(n.inputs if inputs is None else inputs),
                    list(n.outputs if outputs is None else outputs), dict(attrs or {}), n.name)
        promote_const_inputs(node, self.constants)
        return node

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}__nqrt{self.counter}"

    def unsupported(self, n: _Src, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"unsupported {n.op} node {n.name}: {what}", {n.op: [n.name]})

    def only_first_output(self, n: _Src, what: str) -> list[str]:
        extra = [o for o in n.outputs[1:] if o and o in self.used]
        if extra:
            raise self.unsupported(n, f"{what} output {extra[0]!r} is used")
        return n.outputs[:1]


# -- importers: one per ONNX op, attributes as keyword arguments with the spec defaults ------

_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def _window_attrs(ctx, n, auto_pad, kernel_shape, strides, pads, dilations):
    if auto_pad not in _AUTO_PADS:
        raise ctx.unsupported(n, f"attribute auto_pad={auto_pad!r}")
    if kernel_shape is not None and len(kernel_shape) not in (1, 2):
        raise ctx.unsupported(n, f"attribute kernel_shape={kernel_shape} ({len(kernel_shape)}-D; only 1-D and 2-D)")
    nk = len(kernel_shape) if kernel_shape is not None else None
    return {
        "auto_pad": auto_pad,
        "kernel_shape": kernel_shape,
        "strides": strides or ([1] * nk if nk else None),
        "pads": pads or ([0] * (2 * nk) if nk else None),
        "dilations": dilations or ([1] * nk if nk else None),
    }


def Conv(ctx, n, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    attrs = _window_attrs(ctx, n, auto_pad, kernel_shape, strides, pads, dilations)
    w = ctx.constants.get(n.inputs[1])
    if w is not None and w.ndim not in (3, 4):
        raise ctx.unsupported(n, f"weight of rank {w.ndim} (only 1-D and 2-D convolution)")
    attrs["group"] = group
    return [ctx.node(n, attrs=attrs)]


def ConvTranspose(ctx, n, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                  output_padding=None, output_shape=None, pads=None, strides=None):
    """Kept as a node until graph/passes/lower_convtranspose.py rewrites it as a Conv plus a
    depth-to-space; here only the attributes are checked and their defaults filled."""
    w = ctx.constants.get(n.inputs[1]) if len(n.inputs) > 1 else None
    if w is not None and w.ndim not in (3, 4):
        raise ctx.unsupported(n, f"weight of rank {w.ndim} (only 1-D and 2-D transposed convolution)")
    if kernel_shape is None and w is not None:
        kernel_shape = list(w.shape[2:])
    attrs = _window_attrs(ctx, n, auto_pad, kernel_shape, strides, pads, dilations)
    nk = len(kernel_shape) if kernel_shape is not None else None
    attrs["output_padding"] = list(output_padding) if output_padding else ([0] * nk if nk else None)
    attrs["output_shape"] = list(output_shape) if output_shape else None
    attrs["group"] = int(group)
    for key in ("strides", "dilations"):
        if attrs[key] is not None and min(attrs[key]) < 1:
            raise FormatError(f"ConvTranspose node {n.name}: {key}={attrs[key]} (must be >= 1)")
    for key in ("pads", "output_padding"):
        if attrs[key] is not None and min(attrs[key]) < 0:
            raise FormatError(f"ConvTranspose node {n.name}: {key}={attrs[key]} (must be >= 0)")
    if int(group) < 1 or (w is not None and w.shape[0] % int(group)):
        raise FormatError(f"ConvTranspose node {n.name}: group={group} does not divide the "
                          f"{w.shape[0] if w is not None else '?'} input channels of the weight")
    return [ctx.node(n, attrs=attrs)]


def Gemm(ctx, n, alpha=1.0, beta=1.0, transA=0, transB=0):
    if transA and n.inputs[0] not in ctx.constants:
        raise ctx.unsupported(n, "attribute transA=1 with a non-constant A")
    return [ctx.node(n, attrs=dict(alpha=alpha, beta=beta, transA=transA, transB=transB))]


def _plain(ctx, n):
    return [ctx.node(n)]


def MatMul(ctx, n):
    return _plain(ctx, n)


def Add(ctx, n):
    return _plain(ctx, n)


def Sub(ctx, n):
    return _plain(ctx, n)


def Mul(ctx, n):
    return _plain(ctx, n)


def Div(ctx, n):
    return _plain(ctx, n)


def Relu(ctx, n):
    return _plain(ctx, n)


def GlobalAveragePool(ctx, n):
    return _plain(ctx, n)


def GlobalMaxPool(ctx, n):
    return _plain(ctx, n)


def Identity(ctx, n):
    return _plain(ctx, n)


def Sum(ctx, n):
    """Sum(x) -> Identity; Sum(a, b, c, ...) -> Add(Add(a, b), c) ..."""
    xs = [x for x in n.inputs if x]
    if len(xs) == 1:
        return [ctx.node(n, op="Identity", inputs=xs)]
    nodes, acc = [], xs[0]
    for i, x in enumerate(xs[1:], start=1):
        out = n.outputs[0] if i == len(xs) - 1 else ctx.fresh(n.outputs[0])
        nodes.append(Node("Add", [acc, x], [out], {}, n.name if len(xs) == 2 else f"{n.name}/add{i}"))
        acc = out
    return nodes


def Concat(ctx, n, axis=None):
    if axis is None:
        raise FormatError(f"Concat node {n.name} has no axis attribute")
    return [ctx.node(n, attrs={"axis": axis})]


def MaxPool(ctx, n, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
            storage_order=0, strides=None):
    if kernel_shape is None:
        raise FormatError(f"MaxPool node {n.name} has no kernel_shape attribute")
    if storage_order != 0:
        raise ctx.unsupported(n, f"attribute storage_order={storage_order}")
    attrs = _window_attrs(ctx, n, auto_pad, kernel_shape, strides, pads, dilations)
    attrs.update(ceil_mode=ceil_mode, storage_order=0)
    return [ctx.node(n, attrs=attrs, outputs=ctx.only_first_output(n, "Indices"))]


def AveragePool(ctx, n, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                kernel_shape=None, pads=None, strides=None):
    if kernel_shape is None:
        raise FormatError(f"AveragePool node {n.name} has no kernel_shape attribute")
    attrs = _window_attrs(ctx, n, auto_pad, kernel_shape, strides, pads, dilations)
    attrs.update(ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    return [ctx.node(n, attrs=attrs)]


def ReduceMean(ctx, n, axes=None, keepdims=1, noop_with_empty_axes=0):
    """ReduceMean, ReduceSum, ReduceMax, ReduceMin (the same attributes)."""
    node = ctx.node(n, attrs={"axes": axes, "keepdims": keepdims,
                              "noop_with_empty_axes": noop_with_empty_axes})
    if node.attrs["axes"] == [] and not noop_with_empty_axes:
        node.attrs["axes"] = None          # empty axes = reduce all (filled once rank is known)
    return [node]


def Clip(ctx, n, min=None, max=None):     # noqa: A002 - ONNX attribute names
    node = ctx.node(n, attrs={"min": min, "max": max})
    if node.attrs["min"] is None and len(node.inputs) > 1 or node.attrs["max"] is None and len(node.inputs) > 2:
        raise ctx.unsupported(n, "min/max given as run-time tensors")
    node.attrs["min"] = float("-inf") if node.attrs["min"] is None else float(node.attrs["min"])
    node.attrs["max"] = float("inf") if node.attrs["max"] is None else float(node.attrs["max"])
    return [node]


def Flatten(ctx, n, axis=1):
    return [ctx.node(n, attrs={"axis": axis})]


def Reshape(ctx, n, allowzero=0, shape=None):
    # opset < 5 had a `shape` attribute; opsets 9+ pass it as input 1.
    return [ctx.node(n, attrs={"allowzero": allowzero} | ({"shape": shape} if shape is not None else {}))]


def Transpose(ctx, n, perm=None):
    return [ctx.node(n, attrs={"perm": perm})]


def Softmax(ctx, n, axis=None):
    if ctx.opset >= 13:
        return [ctx.node(n, attrs={"axis": -1 if axis is None else axis})]
    # opset < 13: softmax over the 2-D coercion [prod(:axis), prod(axis:)]; decided in _finish
    return [ctx.node(n, attrs={"axis": 1 if axis is None else axis, "_coerce_2d": True})]


def LRN(ctx, n, alpha=0.0001, beta=0.75, bias=1.0, size=None):
    if size is None or int(size) < 1:
        raise FormatError(f"LRN node {n.name} needs a size attribute >= 1")
    return [ctx.node(n, attrs={"alpha": float(alpha), "beta": float(beta), "bias": float(bias),
                               "size": int(size)})]


def LayerNormalization(ctx, n, axis=-1, epsilon=1e-5, stash_type=1):
    # stash_type 1 (the default) computes in float32, as the spec's float op does
    if int(stash_type) != 1:
        raise ctx.unsupported(n, f"attribute stash_type={stash_type} (only 1: float32)")
    if not (math.isfinite(float(epsilon)) and float(epsilon) >= 0):
        raise FormatError(f"LayerNormalization node {n.name}: epsilon={epsilon} (must be finite and >= 0)")
    return [ctx.node(n, attrs={"axis": int(axis), "epsilon": float(epsilon)},
                     outputs=ctx.only_first_output(n, "Mean / InvStdDev"))]


def GroupNormalization(ctx, n, num_groups=None, epsilon=1e-5, stash_type=1):
    # lowered like InstanceNormalization (graph/passes/lower_instancenorm.py); opset 18's
    # scale and bias are per group, opset 21's per channel ("per_group" records which)
    if num_groups is None or int(num_groups) < 1:
        raise FormatError(f"GroupNormalization node {n.name}: num_groups={num_groups} (must be >= 1)")
    if int(stash_type) != 1:
        raise ctx.unsupported(n, f"attribute stash_type={stash_type} (only 1: float32)")
    if not (math.isfinite(float(epsilon)) and float(epsilon) >= 0):
        raise FormatError(f"GroupNormalization node {n.name}: epsilon={epsilon} (must be finite and >= 0)")
    return [ctx.node(n, attrs={"num_groups": int(num_groups), "epsilon": float(epsilon),
                               "per_group": int(ctx.opset < 21)})]


def InstanceNormalization(ctx, n, epsilon=1e-5):
    # lowered to LayerNormalization + a channel affine by graph/passes/lower_instancenorm.py
    if not (math.isfinite(float(epsilon)) and float(epsilon) >= 0):
        raise FormatError(f"InstanceNormalization node {n.name}: epsilon={epsilon} (must be finite and >= 0)")
    return [ctx.node(n, attrs={"epsilon": float(epsilon)})]


def LpNormalization(ctx, n, axis=-1, p=2):
    """x / ‖x‖_p along `axis`; p = 2 becomes an RMSNormalization (passes/fuse_l2norm)."""
    if int(p) != 2:
        raise ctx.unsupported(n, f"attribute p={p} (only 2)")
    return [ctx.node(n, attrs={"axis": int(axis), "p": 2})]


def BatchNormalization(ctx, n, epsilon=1e-5, momentum=0.9, spatial=1, training_mode=0):
    """training_mode=1 normalizes with the statistics of its own input (NF-Nets standardize
    their constant weights that way): kept for constant folding; the quantizer rejects one
    that is left on a run-time tensor.  Only the normalized output may be used."""
    if spatial != 1:
        raise ctx.unsupported(n, f"attribute spatial={spatial}")
    return [ctx.node(n, attrs={"epsilon": epsilon, "momentum": momentum, "training_mode": int(bool(training_mode))},
                     inputs=n.inputs[:5], outputs=ctx.only_first_output(n, "running statistics"))]


def Dropout(ctx, n, ratio=0.5, seed=None, is_test=None):
    node = ctx.node(n, attrs={"ratio": ratio, "training_mode": False},
                    outputs=ctx.only_first_output(n, "mask"))
    if node.attrs.get("training_mode") is None or node.attrs["training_mode"]:
        raise ctx.unsupported(n, "training_mode is true or computed at run time")
    node.attrs.pop("seed", None)
    return [node]


def Shape(ctx, n, start=0, end=None):
    return [ctx.node(n, attrs={"start": start, "end": end})]


def Gather(ctx, n, axis=0):
    return [ctx.node(n, attrs={"axis": axis})]


def Unsqueeze(ctx, n, axes=None):
    node = ctx.node(n, attrs={"axes": axes})
    if node.attrs["axes"] is None and len(node.inputs) < 2:
        raise FormatError(f"Unsqueeze node {n.name} has no axes")
    return [node]


def Squeeze(ctx, n, axes=None):
    return [ctx.node(n, attrs={"axes": axes})]


def Cast(ctx, n, to=None, saturate=1):
    if to is None:
        raise FormatError(f"Cast node {n.name} has no 'to' attribute")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(to)).name
    except Exception:
        raise ctx.unsupported(n, f"attribute to={to}") from None
    if dtype not in ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool"):
        raise ctx.unsupported(n, f"cast to {dtype}")
    return [ctx.node(n, attrs={"to": dtype})]


def Slice(ctx, n, starts=None, ends=None, axes=None):
    attrs = {"starts": starts, "ends": ends, "axes": axes, "steps": None}
    node = ctx.node(n, attrs=attrs)
    if node.attrs["steps"] is None and len(node.inputs) < 5 and node.attrs["starts"] is not None:
        node.attrs["steps"] = [1] * len(node.attrs["starts"])
    return [node]


def ConstantOfShape(ctx, n, value=None):
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(1)
    return [ctx.node(n, attrs={"value": value})]


def Pad(ctx, n, mode="constant", pads=None, value=0.0):
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ctx.unsupported(n, f"attribute mode={mode!r} (constant, reflect, edge or wrap)")
    node = ctx.node(n, attrs={"mode": mode, "pads": pads, "constant_value": value, "axes": None})
    if node.attrs["constant_value"] is None:
        node.attrs["constant_value"] = 0.0
    return [node]


# -- elementwise unary ops (converted to QLut) ------------------------------------------------

def _unary(ctx, n, **attrs):
    return [ctx.node(n, attrs=attrs)]


def Sigmoid(ctx, n):
    return _unary(ctx, n)


def Tanh(ctx, n):
    return _unary(ctx, n)


def HardSigmoid(ctx, n, alpha=0.2, beta=0.5):
    return _unary(ctx, n, alpha=float(alpha), beta=float(beta))


def HardSwish(ctx, n):
    return _unary(ctx, n)


def LeakyRelu(ctx, n, alpha=0.01):
    return _unary(ctx, n, alpha=float(alpha))


def PRelu(ctx, n):
    """PRelu(x, slope) = x where x >= 0, slope·x elsewhere (slope broadcast to x).  A constant
    slope with one value is LeakyRelu(alpha=slope) (one table lookup once quantized); another
    constant slope (per channel, [C, 1, 1]) becomes Relu(x) − slope·Relu(−x), ops that all have
    integer kernels (Relu, Neg, a Mul by a constant, Sub), and equal to PRelu bit for bit in
    float32: slope·(−x) = −(slope·x) exactly and 0 − (−v) = v."""
    x, slope = n.inputs[0], n.inputs[1]
    s = ctx.constants.get(slope)
    if s is None:
        raise ctx.unsupported(n, "a slope that is not a constant")
    if s.size == 1:
        return [ctx.node(n, op="LeakyRelu", inputs=[x], attrs={"alpha": float(s.reshape(-1)[0])})]
    pos, neg, negr, scaled = (ctx.fresh(n.outputs[0]) for _ in range(4))
    return [Node("Relu", [x], [pos], {}, f"{n.name}/pos"),
            Node("Neg", [x], [neg], {}, f"{n.name}/neg"),
            Node("Relu", [neg], [negr], {}, f"{n.name}/negrelu"),
            Node("Mul", [negr, slope], [scaled], {}, f"{n.name}/slope"),
            Node("Sub", [pos, scaled], [n.outputs[0]], {}, n.name)]


def Elu(ctx, n, alpha=1.0):
    return _unary(ctx, n, alpha=float(alpha))


def Selu(ctx, n, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return _unary(ctx, n, alpha=float(alpha), gamma=float(gamma))


def Gelu(ctx, n, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ctx.unsupported(n, f"attribute approximate={approximate!r}")
    return _unary(ctx, n, approximate=approximate)


def Erf(ctx, n):
    return _unary(ctx, n)


def Softplus(ctx, n):
    return _unary(ctx, n)


def Mish(ctx, n):
    return _unary(ctx, n)


def Celu(ctx, n, alpha=1.0):
    if not (math.isfinite(float(alpha)) and float(alpha) != 0):
        raise FormatError(f"Celu node {n.name}: alpha={alpha} (must be finite and non-zero)")
    return _unary(ctx, n, alpha=float(alpha))


def ThresholdedRelu(ctx, n, alpha=1.0):
    if not math.isfinite(float(alpha)):
        raise FormatError(f"ThresholdedRelu node {n.name}: alpha={alpha} (must be finite)")
    return _unary(ctx, n, alpha=float(alpha))


def Softsign(ctx, n):
    return _unary(ctx, n)


def Abs(ctx, n):
    return _unary(ctx, n)


def Neg(ctx, n):
    return _unary(ctx, n)


def Exp(ctx, n):
    return _unary(ctx, n)


def Log(ctx, n):
    return _unary(ctx, n)


def Sqrt(ctx, n):
    return _unary(ctx, n)


def Reciprocal(ctx, n):
    return _unary(ctx, n)


def Pow(ctx, n):
    return _plain(ctx, n)


# -- data movement ------------------------------------------------------------------------

def Split(ctx, n, axis=0, split=None, num_outputs=None):
    return [ctx.node(n, attrs={"axis": axis, "split": split, "num_outputs": num_outputs})]


def Range(ctx, n):
    # evaluated by fold_constants when start / limit / delta are known (anchor grids of
    # detection heads, computed from feature-map sizes); a run-time Range stays unsupported
    return _plain(ctx, n)


def Expand(ctx, n):
    return _plain(ctx, n)


# Shape arithmetic that exporters emit around Reshape / Expand targets; folded when known.
def Equal(ctx, n):
    return _plain(ctx, n)


def Where(ctx, n):
    return _plain(ctx, n)


def Not(ctx, n):
    return _plain(ctx, n)


def ScatterND(ctx, n, reduction="none"):
    # folded when all inputs are constants (Swin's shifted-window masks); never run at run time
    if reduction != "none":
        raise ctx.unsupported(n, f"attribute reduction={reduction!r}")
    return _plain(ctx, n)


def Mod(ctx, n, fmod=0):
    return [ctx.node(n, attrs={"fmod": int(fmod)})]


# Computed from constants and shapes only, in the exports seen: TF-"same" padding sizes
# (Ceil of float shape arithmetic: timm's tf_* models), sinusoidal position encodings (Sin,
# Cos, CumSum, Tile: XCiT, EdgeNeXt), clamps of shape values (Max, Min).  Folded by
# fold_constants; one left on a run-time tensor is reported as unsupported.
FOLD_ONLY_UNARY = ("Ceil", "Floor", "Round", "Sin", "Cos", "Sign")
FOLD_ONLY = FOLD_ONLY_UNARY + ("Max", "Min", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And",
                               "Or", "Tile")


def GatherND(ctx, n, batch_dims=0):
    """Folded when data and indices are constants (the dynamo exporter's relative-position
    tables: CoAtNet); batch_dims 0 only."""
    if int(batch_dims) != 0:
        raise ctx.unsupported(n, f"attribute batch_dims={batch_dims} (only 0)")
    return [ctx.node(n, attrs={})]


def CumSum(ctx, n, exclusive=0, reverse=0):
    return [ctx.node(n, attrs={"exclusive": int(exclusive), "reverse": int(reverse)})]


def _blocksize(ctx, n, blocksize):
    if blocksize is None or int(blocksize) < 1:
        raise FormatError(f"{n.op} node {n.name} needs a blocksize attribute >= 1")
    return int(blocksize)


def DepthToSpace(ctx, n, blocksize=None, mode="DCR"):
    # lowered to Reshape / Transpose / Reshape by graph/passes/lower_space_depth.py
    if mode not in ("DCR", "CRD"):
        raise ctx.unsupported(n, f"attribute mode={mode!r}")
    return [ctx.node(n, attrs={"blocksize": _blocksize(ctx, n, blocksize), "mode": mode})]


def SpaceToDepth(ctx, n, blocksize=None):
    return [ctx.node(n, attrs={"blocksize": _blocksize(ctx, n, blocksize)})]


def _resize_mode(ctx, n, mode, antialias=0):
    """"nearest", "linear" (Upsample-7's "bilinear" is "linear") or "cubic"; without antialias."""
    mode = "linear" if mode == "bilinear" else mode
    if mode not in ("nearest", "linear", "cubic"):
        raise ctx.unsupported(n, f"attribute mode={mode!r} (only 'nearest', 'linear' and 'cubic')")
    if mode != "nearest" and int(antialias):
        raise ctx.unsupported(n, "attribute antialias=1")
    return mode


def Resize(ctx, n, mode="nearest", coordinate_transformation_mode="half_pixel",
           nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0,
           extrapolation_value=0.0, antialias=0, axes=None, keep_aspect_ratio_policy="stretch"):
    """Nearest, linear and cubic modes.  Opset 10 (X, scales) behaves like Upsample: asymmetric
    (and for nearest "simple": truncate when upsampling, ceil when downsampling, ONNX Runtime's
    legacy rule)."""
    mode = _resize_mode(ctx, n, mode, antialias)
    if keep_aspect_ratio_policy != "stretch":
        raise ctx.unsupported(n, f"attribute keep_aspect_ratio_policy={keep_aspect_ratio_policy!r}")
    if ctx.opset < 11:
        inputs = [n.inputs[0], "", n.inputs[1] if len(n.inputs) > 1 else ""]
        coordinate_transformation_mode, nearest_mode = "asymmetric", "simple"
    else:
        inputs = list(n.inputs)
    if coordinate_transformation_mode == "tf_crop_and_resize":
        raise ctx.unsupported(n, "coordinate_transformation_mode 'tf_crop_and_resize'")
    cubic = {"cubic_coeff_a": float(cubic_coeff_a), "exclude_outside": int(exclude_outside)} \
        if mode == "cubic" else {}
    node = ctx.node(n, inputs=inputs, attrs={
        "mode": mode, "coordinate_transformation_mode": coordinate_transformation_mode,
        "nearest_mode": nearest_mode, "axes": axes} | cubic)
    node.attrs.pop("roi", None)              # roi matters only for tf_crop_and_resize
    if len(node.inputs) > 1:
        node.inputs[1] = ""
        while node.inputs and not node.inputs[-1]:
            node.inputs.pop()
    return [node]


def Einsum(ctx, n, equation=""):
    """Kept as is; lower_einsum turns the two-operand batched-product form into a MatMul."""
    return [ctx.node(n, attrs={"equation": equation.decode() if isinstance(equation, bytes) else str(equation)})]


def Upsample(ctx, n, mode="nearest", scales=None):
    mode = _resize_mode(ctx, n, mode)
    return [ctx.node(n, op="Resize", inputs=[n.inputs[0], "", n.inputs[1]] if len(n.inputs) > 1 else n.inputs[:1],
                     attrs={"mode": mode, "coordinate_transformation_mode": "asymmetric",
                            "nearest_mode": "simple", "axes": None}
                     | ({"scales": [float(np.float32(v)) for v in scales]} if scales is not None else {}))]


IMPORTERS = {
    "Conv": Conv, "ConvTranspose": ConvTranspose, "Gemm": Gemm, "MatMul": MatMul, "Einsum": Einsum,
    "Add": Add, "Sub": Sub, "Mul": Mul, "Div": Div, "Sum": Sum, "Concat": Concat,
    "MaxPool": MaxPool, "AveragePool": AveragePool,
    "GlobalAveragePool": GlobalAveragePool, "GlobalMaxPool": GlobalMaxPool,
    "ReduceMean": ReduceMean, "ReduceSum": ReduceMean, "ReduceMax": ReduceMean, "ReduceMin": ReduceMean, "Relu": Relu, "Clip": Clip,
    "Flatten": Flatten, "Reshape": Reshape, "Transpose": Transpose, "Softmax": Softmax, "LRN": LRN,
    "LayerNormalization": LayerNormalization, "InstanceNormalization": InstanceNormalization,
    "GroupNormalization": GroupNormalization,
    "BatchNormalization": BatchNormalization, "Dropout": Dropout, "Identity": Identity,
    "Shape": Shape, "Gather": Gather, "Unsqueeze": Unsqueeze, "Squeeze": Squeeze,
    "Cast": Cast, "Slice": Slice, "ConstantOfShape": ConstantOfShape, "Pad": Pad,
    "Sigmoid": Sigmoid, "Tanh": Tanh, "HardSigmoid": HardSigmoid, "HardSwish": HardSwish,
    "LeakyRelu": LeakyRelu, "PRelu": PRelu, "Elu": Elu, "Selu": Selu, "Gelu": Gelu, "Erf": Erf,
    "Softplus": Softplus, "Mish": Mish, "Celu": Celu, "ThresholdedRelu": ThresholdedRelu,
    "Softsign": Softsign, "Abs": Abs, "Neg": Neg, "Exp": Exp, "Log": Log,
    "Sqrt": Sqrt, "Reciprocal": Reciprocal, "Pow": Pow,
    "Split": Split, "Resize": Resize, "Upsample": Upsample,
    "DepthToSpace": DepthToSpace, "SpaceToDepth": SpaceToDepth, "Range": Range, "Expand": Expand,
    "Equal": Equal, "Where": Where, "Not": Not, "Mod": Mod, "ScatterND": ScatterND,
    "CumSum": CumSum, "GatherND": GatherND, **{op: _plain for op in FOLD_ONLY},
    "LpNormalization": LpNormalization, "ReduceL2": ReduceMean, "ReduceProd": ReduceMean,
}
_KWARGS = {op: set(inspect.signature(fn).parameters) - {"ctx", "n"} for op, fn in IMPORTERS.items()}


# -- reading ---------------------------------------------------------------------------------

def _parse(data: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:
        raise FormatError(f"not an ONNX model: protobuf parse failed ({type(e).__name__})") from None
    return model


def _read(model) -> tuple[onnx.ModelProto, bytes, str | None]:
    if isinstance(model, onnx.ModelProto):
        return model, model.SerializeToString(), None
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        return _parse(data), data, None
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(model, "rb") as f:
                data = f.read()
        except OSError as e:
            raise FormatError(f"cannot read model file {os.fspath(model)!r}: {e.strerror}") from None
        return _parse(data), data, os.path.dirname(os.path.abspath(model))
    raise FormatError(f"expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")


def _check_model(m: onnx.ModelProto) -> int:
    if m.ir_version <= 0 or not m.HasField("graph"):
        raise FormatError("not an ONNX model: missing ir_version or graph")
    opsets = {o.domain: o.version for o in m.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx"))
    if opset is None:
        if m.ir_version >= 3:
            raise FormatError("ONNX model declares no opset for the default domain")
        opset = 1
    if not m.graph.output:
        raise FormatError("ONNX graph has no outputs")
    return opset


def _tensor(t: onnx.TensorProto, base_dir: str | None) -> np.ndarray:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        if base_dir is None:
            raise FormatError(f"tensor {t.name!r} uses external data; load the model from its file path")
        try:
            onnx.external_data_helper.load_external_data_for_tensor(t, base_dir)
        except Exception as e:        # OSError, onnx ValidationError (missing/irregular file), ...
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FormatError(f"cannot load external data of tensor {t.name!r}: {reason}") from None
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise FormatError(f"malformed tensor {t.name!r}: {e}") from None
    return np.array(arr, copy=True)


def _sparse(s: onnx.SparseTensorProto, base_dir) -> np.ndarray:
    values = _tensor(s.values, base_dir)
    idx = _tensor(s.indices, base_dir).astype(np.int64)
    dense = np.zeros(tuple(s.dims), values.dtype)
    if idx.ndim == 1:
        dense.reshape(-1)[idx] = values
    else:
        dense[tuple(idx.T)] = values
    return dense


def _constant_value(n: onnx.NodeProto, base_dir) -> np.ndarray:
    a = n.attribute[0] if len(n.attribute) == 1 else None
    if a is None:
        raise FormatError(f"Constant node {n.name or n.output[0]} must have exactly one value attribute")
    if a.name == "value":
        return _tensor(a.t, base_dir)
    if a.name == "sparse_value":
        return _sparse(a.sparse_tensor, base_dir)
    if a.name == "value_float":
        return np.array(a.f, np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), np.float32)
    if a.name == "value_int":
        return np.array(a.i, np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), np.int64)
    if a.name in ("value_string", "value_strings"):
        raise UnsupportedOpError(f"unsupported Constant node {n.name or n.output[0]}: string value", {"Constant": [n.name]})
    raise FormatError(f"Constant node {n.name or n.output[0]} has unknown attribute {a.name!r}")


def _attr(a: onnx.AttributeProto, base_dir):
    if a.type == onnx.AttributeProto.TENSOR:
        return _tensor(a.t, base_dir)
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
    return v


def _value_info(v: onnx.ValueInfoProto) -> ValueInfo:
    tt = v.type.tensor_type
    dtype = "float32"
    if tt.elem_type:
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except Exception:
            dtype = f"onnx:{tt.elem_type}"
    shape = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    return ValueInfo(v.name, shape, dtype)


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    done, order, pending = set(available), [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all((not i) or i in done for i in n.input):
                order.append(n)
                done.update(o for o in n.output if o)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            bad = rest[0]
            missing = [i for i in bad.input if i and i not in done]
            raise FormatError(f"node {bad.name or bad.op_type} reads undefined tensor {missing[0]!r} (or the graph has a cycle)")
        pending = rest
    return order


# -- the importer ------------------------------------------------------------------------------

def _node_name(n: onnx.NodeProto, i: int) -> str:
    return n.name or (n.output[0] if n.output and n.output[0] else f"{n.op_type}_{i}")


def _check_supported(nodes: list[onnx.NodeProto]) -> None:
    bad: dict[str, list[str]] = {}
    for i, n in enumerate(nodes):
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        if key not in IMPORTERS and key != "Constant":
            bad.setdefault(key, []).append(_node_name(n, i))
    if bad:
        parts = [f"{op} ({len(v)} node{'s' if len(v) != 1 else ''}: {name_list(v)})" for op, v in bad.items()]
        raise UnsupportedOpError(f"unsupported operators: {'; '.join(parts)}", bad)


def _to_supported_opset(m: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """A model outside MIN_OPSET..MAX_OPSET converted to the nearest supported opset by the
    ONNX project's own version converter, then imported like any model of that opset:
      * opset < MIN_OPSET (e.g. the ONNX Model Zoo's opset-7 and -8 CNNs) up to MIN_OPSET, by
        its per-operator adapters (Upsample scales to an input, BatchNormalization's
        `spatial`, Dropout's `is_test`, Gemm's `broadcast`, ...);
      * opset > MAX_OPSET (what a newer exporter or onnx.helper writes by default) down to
        MAX_OPSET: the CNN operators' later versions only add element types, which its
        adapters accept when the model does not use them; anything else (a new operator such
        as Attention-23, a new attribute) has no adapter and stops here.
    Either failure is a one-line UnsupportedOpError saying why."""
    target = MIN_OPSET if opset < MIN_OPSET else MAX_OPSET
    try:
        from onnx import version_converter
        out = version_converter.convert_version(m, target)
    except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors/asserts
        why = (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()
        why = why.split("failed:", 1)[-1].strip() or type(e).__name__   # drop the C++ location
        raise UnsupportedOpError(f"ONNX opset {opset} model (supported: {MIN_OPSET}..{MAX_OPSET}):"
                                 f" the ONNX version converter cannot convert it to opset {target}"
                                 f" ({why})") from None
    return out


def load_onnx(model: str | os.PathLike | bytes | onnx.ModelProto) -> Graph:
    """Import an ONNX model (path, serialized bytes or ModelProto) into the float IR."""
    proto, data, base_dir = _read(model)
    opset = _check_model(proto)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        _check_supported(list(proto.graph.node))       # name unsupported ops before converting
        proto = _to_supported_opset(proto, opset)
        opset = _check_model(proto)
    g = proto.graph
    _check_supported(list(g.node))

    constants: dict[str, np.ndarray] = {t.name: _tensor(t, base_dir) for t in g.initializer}
    for s in g.sparse_initializer:
        constants[s.values.name] = _sparse(s, base_dir)
    inputs = []
    for v in g.input:
        if v.name in constants:
            continue                  # IR 3 lists initializers as inputs: they are constants
        vi = _value_info(v)
        if vi.dtype != "float32":
            raise UnsupportedOpError(f"graph input {v.name!r} has dtype {vi.dtype}; only float32 inputs are supported")
        inputs.append(vi)
    order = _topological(list(g.node), {v.name for v in inputs} | set(constants))
    used = {i for n in order for i in n.input if i} | {o.name for o in g.output}
    ctx = _Ctx(opset, constants, used)

    nodes: list[Node] = []
    for i, on in enumerate(order):
        name = _node_name(on, i)
        if on.op_type == "Constant":
            constants[on.output[0]] = _constant_value(on, base_dir)
            continue
        attrs = {a.name: _attr(a, base_dir) for a in on.attribute}
        unknown = sorted(set(attrs) - _KWARGS[on.op_type])
        if unknown:
            raise UnsupportedOpError(f"unsupported {on.op_type} node {name}: unknown attribute {unknown[0]!r}",
                                     {on.op_type: [name]})
        src = _Src(on.op_type, list(on.input), list(on.output), name)
        nodes.extend(IMPORTERS[on.op_type](ctx, src, **attrs))

    outputs = [_value_info(v) for v in g.output]
    graph = Graph(nodes, inputs, outputs, constants, opset=opset,
                  metadata={"source_sha256": hashlib.sha256(data).hexdigest(),
                            "producer": proto.producer_name, "ir_version": proto.ir_version})
    _finish(graph)
    return graph


def _finish(graph: Graph) -> None:
    """Shape-dependent normalization: fill attrs, rewrite opset<13 Softmax, output shapes."""
    inf = annotate(graph)
    fill_shape_attrs(graph, inf)
    nodes = []
    for n in graph.nodes:
        if n.op == "Softmax" and n.attrs.pop("_coerce_2d", False):
            x = inf.shapes.get(n.inputs[0])
            axis = n.attrs["axis"]
            if x is not None and (axis + len(x) if axis < 0 else axis) == len(x) - 1:
                n.attrs["axis"] = -1
            else:
                nodes.extend(_legacy_softmax(n, graph))
                continue
        nodes.append(n)
    graph.nodes = nodes
    inf = annotate(graph)
    for n in graph.nodes:
        if n.op == "Conv" and n.attrs.get("kernel_shape") is None:
            raise UnsupportedOpError(f"unsupported Conv node {n.name}: kernel shape unknown (weight shape not inferable)",
                                     {"Conv": [n.name]})
        if n.op == "Conv" and len(n.attrs["kernel_shape"]) not in (1, 2):
            raise UnsupportedOpError(f"unsupported Conv node {n.name}: {len(n.attrs['kernel_shape'])}-D convolution "
                                     "(only 1-D and 2-D)", {"Conv": [n.name]})
    for v in graph.outputs:
        if (v.shape is None or any(d is None for d in v.shape)) and v.name in inf.shapes:
            v.shape = inf.shapes[v.name]
    try:
        graph.validate()
    except ValueError as e:
        raise FormatError(f"invalid ONNX graph: {e}") from None


def _legacy_softmax(n: Node, graph: Graph) -> list[Node]:
    """Opset<13 Softmax(axis) = Reshape(Softmax(Flatten(x, axis), -1), Shape(x))."""
    x, y = n.inputs[0], n.outputs[0]
    flat, sm, shp = (f"{y}__nqrt_{s}" for s in ("flat", "softmax", "shape"))
    return [
        Node("Flatten", [x], [flat], {"axis": n.attrs["axis"]}, f"{n.name}/flatten"),
        Node("Softmax", [flat], [sm], {"axis": -1}, n.name),
        Node("Shape", [x], [shp], {"start": 0, "end": None}, f"{n.name}/shape"),
        Node("Reshape", [sm, shp], [y], {"allowzero": 0, "shape": None}, f"{n.name}/reshape"),
    ]


__all__ = ["load_onnx", "IMPORTERS"]
