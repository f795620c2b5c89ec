"""Float reference of the CNN extension ops vs ONNX Runtime FP32: the elementwise functions
that become QLut, Pow, Split (three opset forms), Slice with negative steps, Resize/Upsample
nearest in every coordinate/rounding mode, and the Swish / HardSwish fusion pass."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from _graph_helpers import Builder, assert_matches_ort, op_counts

UNARY = [
    ("Sigmoid", {}, 13), ("Tanh", {}, 13), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 13),
    ("HardSwish", {}, 14), ("LeakyRelu", {"alpha": 0.07}, 13), ("Elu", {"alpha": 0.8}, 13),
    ("Selu", {}, 13), ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 20), ("Erf", {}, 13),
    ("Softplus", {}, 13), ("Softsign", {}, 13), ("Abs", {}, 13), ("Neg", {}, 13), ("Exp", {}, 13),
    ("Mish", {}, 18), ("Celu", {"alpha": 0.7}, 13), ("ThresholdedRelu", {"alpha": 0.3}, 13),
]


@pytest.mark.parametrize("op, attrs, opset", UNARY, ids=[f"{u[0]}-{i}" for i, u in enumerate(UNARY)])
def test_unary_matches_ort(op, attrs, opset):
    b = Builder(opset=opset)
    y = b.op(op, ["x"], **attrs)
    g = assert_matches_ort(b.model([("x", ["N", 3, 5])], [y]), {"x": (3, 5)})
    assert op_counts(g) == {op: 1}


@pytest.mark.parametrize("op", ["Log", "Sqrt", "Reciprocal"])
def test_positive_domain_ops_match_ort(op):
    b = Builder()
    t = b.op("Add", [b.op("Abs", ["x"]), b.const(np.float32(0.25))])
    y = b.op(op, [t])
    assert_matches_ort(b.model([("x", ["N", 4])], [y]), {"x": (4,)})


def test_pow_and_scalar_arithmetic_match_ort():
    b = Builder()
    t = b.op("Pow", [b.op("Abs", ["x"]), b.const(np.float32(1.5))])
    t = b.op("Div", [t, b.const(np.float32(3.0))])
    t = b.op("Sub", [b.const(np.float32(2.0)), t])
    y = b.op("Pow", [t, b.const(np.float32(2.0))])
    assert_matches_ort(b.model([("x", ["N", 6])], [y]), {"x": (6,)})


@pytest.mark.parametrize("opset, kind", [(11, "attr"), (13, "input"), (13, "equal"), (18, "num_outputs")])
def test_split_matches_ort(opset, kind):
    b = Builder(opset=opset)
    if kind == "attr":
        ys = b.op("Split", ["x"], n_out=3, axis=1, split=[2, 4, 1])
    elif kind == "input":
        ys = b.op("Split", ["x", b.const([3, 4], np.int64)], n_out=2, axis=-2)
    elif kind == "equal":
        ys = b.op("Split", ["x"], n_out=7, axis=1)
    else:
        ys = b.op("Split", ["x"], n_out=3, axis=1, num_outputs=3)          # 7 = 3 + 3 + 1
    ys = ys if isinstance(ys, list) else [ys]
    g = assert_matches_ort(b.model([("x", ["N", 7, 7])], ys), {"x": (7, 7)})
    assert op_counts(g) == {"Split": 1}


def test_slice_negative_steps_matches_ort():
    b = Builder()
    c = lambda v: b.const(v, np.int64)  # noqa: E731
    y = b.op("Slice", ["x", c([-1, 5]), c([-(2**63), 0]), c([2, 1]), c([-2, -1])])
    z = b.op("Slice", ["x", c([-100]), c([-200]), c([3]), c([-1])])        # ONNX clamp of start to 0
    assert_matches_ort(b.model([("x", ["N", 6, 7, 4])], [y, z]), {"x": (6, 7, 4)})


COORDS = ["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel", "tf_half_pixel_for_nn"]
NEAREST = ["floor", "ceil", "round_prefer_floor", "round_prefer_ceil"]


@pytest.mark.parametrize("coord, nearest", list(itertools.product(COORDS, NEAREST)))
def test_resize_nearest_modes_match_ort(coord, nearest):
    b = Builder()
    scales = b.const(np.array([1, 1, 2.0, 0.6], np.float32))
    y = b.op("Resize", ["x", "", scales], mode="nearest", coordinate_transformation_mode=coord,
             nearest_mode=nearest)
    sizes = b.const([1, 2, 3, 11], np.int64)
    z = b.op("Resize", ["x", "", "", sizes], mode="nearest", coordinate_transformation_mode=coord,
             nearest_mode=nearest)
    g = assert_matches_ort(b.model([("x", [1, 2, 5, 7])], [y, z]), {"x": (2, 5, 7)}, batches=(1,))
    assert op_counts(g) == {"Resize": 2}


@pytest.mark.parametrize("coord", ["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"])
def test_resize_linear_modes_match_ort(coord):
    """Bilinear: up (integer and fractional factors), down, and a 1x1 map broadcast (DeepLab's
    image-pooling branch); ONNX Runtime's rule (the coordinate clamped to the input)."""
    b = Builder()
    y = b.op("Resize", ["x", "", b.const(np.array([1, 1, 2.0, 1.7], np.float32))], mode="linear",
             coordinate_transformation_mode=coord)
    z = b.op("Resize", ["x", "", "", b.const([1, 2, 3, 4], np.int64)], mode="linear",
             coordinate_transformation_mode=coord)
    p = b.op("GlobalAveragePool", ["x"])
    w = b.op("Resize", [p, "", "", b.const([1, 2, 5, 7], np.int64)], mode="linear",
             coordinate_transformation_mode=coord)
    g = assert_matches_ort(b.model([("x", [1, 2, 5, 7])], [y, z, w]), {"x": (2, 5, 7)}, batches=(1,))
    assert op_counts(g)["Resize"] == 3


@pytest.mark.parametrize("coord, a, exclude", [
    ("half_pixel", -0.75, 0), ("pytorch_half_pixel", -0.75, 0), ("align_corners", -0.5, 0),
    ("asymmetric", -0.75, 1), ("half_pixel", -0.5, 1), ("half_pixel", -1.0, 0)])
def test_resize_cubic_modes_match_ort(coord, a, exclude):
    """Bicubic: up, down (CrossViT's 240 -> 224 as 30 -> 28), a 2x2 map (every tap at the edge),
    ONNX's rules: the coordinate unclamped, edge replication, exclude_outside renormalizing."""
    b = Builder()
    kw = dict(mode="cubic", coordinate_transformation_mode=coord, cubic_coeff_a=a, exclude_outside=exclude)
    y = b.op("Resize", ["x", "", b.const(np.array([1, 1, 2.0, 1.7], np.float32))], **kw)
    z = b.op("Resize", ["x", "", "", b.const([1, 2, 4, 3], np.int64)], **kw)
    s = b.op("Slice", ["x", b.const([0, 0], np.int64), b.const([2, 2], np.int64), b.const([2, 3], np.int64)])
    w = b.op("Resize", [s, "", "", b.const([1, 2, 5, 7], np.int64)], **kw)
    g = assert_matches_ort(b.model([("x", [1, 2, 5, 7])], [y, z, w]), {"x": (2, 5, 7)}, batches=(1,))
    assert op_counts(g)["Resize"] == 3


def test_resize_sizes_from_a_symbolic_shape_fold_to_scales():
    """F.interpolate(y, size=x.shape[-2:]) exported with a symbolic batch: the sizes come from
    Shape(x) at run time; they fold into constant scales (1 on N and C), and the Shape chain
    goes.  A ratio whose float32 scale would not give the size back is left alone."""
    b = Builder()
    y = b.op("Conv", ["x", b.weight(4, 3, 3, 3)], strides=[2, 2], pads=[1, 1, 1, 1])
    hw = b.op("Slice", [b.op("Shape", ["x"]), b.const([2], np.int64), b.const([4], np.int64)])
    nc = b.op("Slice", [b.op("Shape", [y]), b.const([0], np.int64), b.const([2], np.int64)])
    sizes = b.op("Concat", [nc, hw], axis=0)
    z = b.op("Resize", [y, "", "", sizes], mode="linear", coordinate_transformation_mode="half_pixel")
    g = assert_matches_ort(b.model([("x", ["N", 3, 12, 10])], [z]), {"x": (3, 12, 10)})
    assert op_counts(g) == {"Conv": 1, "Resize": 1}
    (r,) = [n for n in g.nodes if n.op == "Resize"]
    assert r.attrs["scales"] == [1.0, 1.0, 2.0, 2.0] and r.inputs == [y]
    from nqrt.graph.passes.fold_constants import _symbolic_resize_scales
    from nqrt.graph.shapes import Inference
    inf = Inference(shapes={"x": ("N", 3, 3, 49)}, values={"s": ["N", 3, 7, 50]})
    node = type(r)("Resize", ["x", "", "", "s"], ["o"], {"mode": "linear"}, "r")
    assert _symbolic_resize_scales(node, inf) == [1.0, 1.0, float(np.float32(7) / np.float32(3)),
                                                  float(np.float32(50) / np.float32(49))]
    inf.values["s"] = ["N", 3, 31, 50]
    inf.shapes["x"] = ("N", 3, 7, 49)                 # float32(31 / 7)·7 truncates to 30
    assert _symbolic_resize_scales(node, inf) is None
    inf.values["s"] = ["N", 4, 7, 50]                 # C changes with no int to compute a ratio from
    inf.shapes["x"] = ("N", "C", 3, 49)
    assert _symbolic_resize_scales(node, inf) is None


def test_resize_opset10_and_upsample_match_ort():
    b = Builder(opset=10)
    y = b.op("Resize", ["x", b.const(np.array([1, 1, 2, 3], np.float32))], mode="nearest")
    assert_matches_ort(b.model([("x", ["N", 2, 3, 4])], [y]), {"x": (2, 3, 4)})
    b = Builder(opset=9)
    y = b.op("Upsample", ["x", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    assert_matches_ort(b.model([("x", ["N", 2, 3, 4])], [y]), {"x": (2, 3, 4)})
    for opset, op, inputs in ((9, "Upsample", []), (10, "Resize", [])):     # linear: asymmetric
        b = Builder(opset=opset)
        y = b.op(op, ["x", b.const(np.array([1, 1, 2, 1.5], np.float32))], mode="linear")
        assert_matches_ort(b.model([("x", ["N", 2, 3, 4])], [y]), {"x": (2, 3, 4)})


def test_swish_and_hardswish_fusion():
    b = Builder(opset=14)
    s = b.op("Mul", ["x", b.op("Sigmoid", ["x"])])
    h = b.op("Mul", [b.op("HardSigmoid", [s], alpha=1 / 6, beta=0.5), s])
    keep = b.op("Sigmoid", [h])                      # the gate is also an output: not fused
    m2 = b.op("Mul", [h, keep])
    g = assert_matches_ort(b.model([("x", ["N", 3, 4])], [m2, keep]), {"x": (3, 4)})
    assert op_counts(g) == {"Swish": 1, "HardSwish": 1, "Sigmoid": 1, "Mul": 1}
    b = Builder()
    t = b.op("HardSigmoid", ["x"], alpha=0.2, beta=0.5)          # not HardSwish's gate
    g = assert_matches_ort(b.model([("x", ["N", 5])], [b.op("Mul", ["x", t])]), {"x": (5,)})
    assert op_counts(g) == {"HardSigmoid": 1, "Mul": 1}


def test_mish_fusion():
    """Mul(x, Tanh(Softplus(x))) (YOLOv4 before opset 18) -> Mish; with the Softplus also
    read elsewhere it stays."""
    b = Builder(opset=14)
    m = b.op("Mul", ["x", b.op("Tanh", [b.op("Softplus", ["x"])])])
    sp = b.op("Softplus", [m])
    kept = b.op("Mul", [m, b.op("Tanh", [sp])])
    g = assert_matches_ort(b.model([("x", ["N", 3, 4])], [b.op("Add", [kept, sp])]), {"x": (3, 4)})
    assert op_counts(g) == {"Mish": 1, "Softplus": 1, "Tanh": 1, "Mul": 1, "Add": 1}


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("opset, axes, keepdims", [(13, [1], 1), (13, [2, -1], 0), (13, None, 1),
                                                   (18, [1], 0)])
def test_reduce_max_min_match_ort(op, opset, axes, keepdims):
    b = Builder(opset=opset)
    if opset >= 18 and axes is not None:
        y = b.op(op, ["x", b.const(axes, np.int64)], keepdims=keepdims)
    else:
        y = b.op(op, ["x"], keepdims=keepdims, **({"axes": axes} if axes is not None else {}))
    g = assert_matches_ort(b.model([("x", ["N", 4, 3, 5])], [y]), {"x": (4, 3, 5)})
    assert op_counts(g) == {op: 1}


@pytest.mark.parametrize("opset, axes, keepdims", [(11, [1], 1), (11, None, 0), (13, [2, -1], 0),
                                                   (13, [1], 1)])
def test_reduce_sum_matches_ort(opset, axes, keepdims):
    """ReduceSum: axes an attribute before opset 13, an input from 13; absent = every axis."""
    b = Builder(opset=opset)
    if opset >= 13 and axes is not None:
        y = b.op("ReduceSum", ["x", b.const(axes, np.int64)], keepdims=keepdims)
    else:
        y = b.op("ReduceSum", ["x"], keepdims=keepdims, **({"axes": axes} if axes is not None else {}))
    g = assert_matches_ort(b.model([("x", ["N", 4, 3, 5])], [y]), {"x": (4, 3, 5)})
    assert op_counts(g) == {"ReduceSum": 1}


@pytest.mark.parametrize("opset, groups", [(21, 2), (21, 1), (21, 6), (18, 3)])
def test_group_normalization_lowered_matches_ort(opset, groups):
    """GroupNormalization (opset 21: per-channel scale/bias; 18: per group) -> Reshape,
    LayerNormalization, Reshape and a channel affine; G = C is an InstanceNormalization."""
    b = Builder(opset=opset)
    n = 6 if opset >= 21 else groups
    f = b.op("Conv", ["x", b.weight(6, 3, 3, 3), b.weight(6)], pads=[1, 1, 1, 1])
    y = b.op("GroupNormalization", [f, b.weight(n, low=0.5, high=1.5), b.weight(n)], num_groups=groups,
             epsilon=1e-4)
    g = assert_matches_ort(b.model([("x", ["N", 3, 5, 4])], [y]), {"x": (3, 5, 4)})
    counts = op_counts(g)
    assert "GroupNormalization" not in counts and counts["LayerNormalization"] == 1
    assert counts.get("Reshape", 0) == (0 if groups == 6 else 2)


def _tf_same_pad(b, x, k, s):
    """timm's Conv2dSame padding, as the TorchScript exporter writes it: float shape arithmetic
    pad = max((ceil(i / s) − 1)·s + k − i, 0) on Shape(x), Ceil, Clip, Div, Cast, then Pad."""
    pads = []
    for axis in (2, 3):
        i = b.op("Cast", [b.op("Gather", [b.op("Shape", [x]), b.const(axis, np.int64)], axis=0)], to=1)
        o = b.op("Ceil", [b.op("Div", [i, b.const(float(s))])])
        t = b.op("Sub", [b.op("Add", [b.op("Mul", [b.op("Sub", [o, b.const(1.0)]), b.const(float(s))]),
                                      b.const(float(k))]), i])
        t = b.op("Max", [t, b.const(0.0)])
        lo = b.op("Cast", [b.op("Floor", [b.op("Div", [t, b.const(2.0)])])], to=7)
        hi = b.op("Sub", [b.op("Cast", [t], to=7), lo])
        pads.append((lo, hi))
    u = [b.op("Unsqueeze", [p, b.const([0], np.int64)]) for p in (pads[0][0], pads[1][0], pads[0][1], pads[1][1])]
    pv = b.op("Concat", [b.const([0, 0], np.int64), u[0], u[1], b.const([0, 0], np.int64), u[2], u[3]], axis=0)
    return b.op("Pad", [x, pv])


def test_fold_only_ops_fold_tf_same_padding():
    """Ceil / Floor / Max of shape values fold (no unsupported op left): the padded conv
    matches ORT at batches 1 and 3, odd and even sizes."""
    b = Builder(opset=13)
    y = b.op("Conv", [_tf_same_pad(b, "x", 3, 2), b.weight(4, 3, 3, 3)], strides=[2, 2])
    g = assert_matches_ort(b.model([("x", ["N", 3, 7, 8])], [y]), {"x": (3, 7, 8)})
    assert op_counts(g) == {"Conv": 1, "Pad": 1}
    assert list(g.nodes[0].attrs["pads"]) == [0, 0, 1, 0, 0, 0, 1, 1]   # H 7: 1 + 1, W 8: 0 + 1


def test_position_encoding_arithmetic_folds_and_tile_over_the_batch_is_an_expand():
    """XCiT's Fourier position encoding: Range, CumSum, Sin, Cos, Concat and a conv of
    constants fold; Tile(pe, [N, 1, 1, 1]) repeats only a size-1 dim, so it becomes an Expand
    over the run-time batch, which the Add then broadcasts itself (batch_constants.absorb);
    Sign / Round / Less / Where / Min fold too."""
    b = Builder(opset=13)
    r = b.op("Cast", [b.op("CumSum", [b.const(np.ones((1, 4, 5), np.float32)), b.const(1, np.int64)])], to=1)
    ang = b.op("Mul", [r, b.const(np.float32(0.7))])
    pe = b.op("Concat", [b.op("Sin", [ang]), b.op("Cos", [ang])], axis=0)
    pe = b.op("Unsqueeze", [b.op("Add", [b.op("Round", [pe]), b.op("Sign", [pe])]), b.const([0], np.int64)])
    pe = b.op("Where", [b.op("Less", [pe, b.const(np.float32(0.5))]), pe,
                        b.op("Min", [pe, b.const(np.float32(0.25))])])          # [1, 2, 4, 5]
    n = b.op("Gather", [b.op("Shape", ["x"]), b.const([0], np.int64)], axis=0)
    reps = b.op("Concat", [n, b.const([1, 1, 1], np.int64)], axis=0)
    y = b.op("Add", [b.op("Conv", ["x", b.weight(2, 3, 1, 1)]), b.op("Tile", [pe, reps])])
    g = assert_matches_ort(b.model([("x", ["N", 3, 4, 5])], [y]), {"x": (3, 4, 5)})
    assert op_counts(g) == {"Conv": 1, "Add": 1}


@pytest.mark.parametrize("form", ["clip_expand", "max", "plain", "lpnorm"])
def test_l2_normalize_becomes_rms_normalization(form):
    """F.normalize(x, dim=-1) as exported (ReduceL2 -> Clip(min=eps) -> Expand(Shape(x)) ->
    Div), with Max instead of Clip, without a clamp, and ONNX LpNormalization(p=2): one
    RMSNormalization with scale 1/sqrt(n), matching ORT."""
    b = Builder(opset=13)
    x = b.op("Conv", ["x", b.weight(6, 3, 1)])                 # [N, 6, 7]
    if form == "lpnorm":
        y = b.op("LpNormalization", [x], axis=-1, p=2)
    else:
        r = b.op("ReduceL2", [x], axes=[-1], keepdims=1)
        if form == "clip_expand":
            r = b.op("Expand", [b.op("Clip", [r, b.const(np.float32(1e-12))]), b.op("Shape", [x])])
        elif form == "max":
            r = b.op("Max", [r, b.const(np.float32(1e-12))])
        y = b.op("Div", [x, r])
    g = assert_matches_ort(b.model([("x", ["N", 3, 7])], [y]), {"x": (3, 7)})
    assert op_counts(g) == {"Conv": 1, "RMSNormalization": 1}


def test_reduce_l2_that_is_no_normalization_is_lowered():
    """ConvNeXt V2's GRN (ReduceL2 over H, W, then a division by its channel mean) is not an
    L2 normalization along the last axis: its ReduceL2 becomes Sqrt(ReduceSum(x·x))."""
    b = Builder(opset=13)
    x = b.op("Conv", ["x", b.weight(4, 3, 1, 1)])
    g = b.op("ReduceL2", [x], axes=[2, 3], keepdims=1)
    y = b.op("Div", [g, b.op("Add", [b.op("ReduceMean", [g], axes=[1]), b.const(np.float32(1e-6))])])
    m = b.model([("x", ["N", 3, 4, 4])], [b.op("Add", [b.op("Mul", [x, y]), x])])
    counts = op_counts(assert_matches_ort(m, {"x": (3, 4, 4)}))
    assert "ReduceL2" not in counts and counts["ReduceSum"] == 1 and counts["Sqrt"] == 1


def test_tile_of_an_activation_becomes_an_expand_or_a_concat():
    """Keras' nearest UpSampling2D (Unsqueeze, Tile by a constant [1, 1, 1, 2, 1] over a size-1
    dim, Reshape) is an Expand; a Tile repeating a dim of size > 1 is a Concat of copies."""
    b = Builder(opset=13)
    x = b.op("Transpose", [b.op("Conv", ["x", b.weight(4, 3, 1, 1)])], perm=[0, 2, 3, 1])   # NHWC
    u = b.op("Tile", [b.op("Unsqueeze", [x, b.const([3], np.int64)]), b.const([1, 1, 1, 2, 1], np.int64)])
    up = b.op("Reshape", [u, b.const([-1, 5, 12, 4], np.int64)])
    rep = b.op("Tile", [x, b.const([1, 3, 1, 1], np.int64)])
    g = assert_matches_ort(b.model([("x", ["N", 3, 5, 6])], [up, rep]), {"x": (3, 5, 6)})
    counts = op_counts(g)
    assert "Tile" not in counts and counts["Expand"] == 1 and counts["Concat"] == 1


def test_reduce_prod_and_max_of_shape_values_fold():
    """Keras MultiHeadAttention's shape arithmetic: ReduceProd of Shape(q)[0:2] (N·heads) and a
    Max of two gathered dims (max(N, 1) = N) feed a Reshape target, which folds."""
    b = Builder(opset=13)
    q = b.op("Conv", ["x", b.weight(4, 3, 1)])                               # [N, 4, 6]
    s = b.op("Shape", [q])
    nh = b.op("ReduceProd", [b.op("Slice", [s, b.const([0], np.int64), b.const([2], np.int64)])], keepdims=1)
    n = b.op("Max", [b.op("Gather", [s, b.const([0], np.int64)], axis=0), b.const([1], np.int64)])
    r = b.op("Reshape", [q, b.op("Concat", [nh, b.const([6], np.int64)], axis=0)])
    r2 = b.op("Reshape", [q, b.op("Concat", [n, b.const([-1], np.int64)], axis=0)])
    g = assert_matches_ort(b.model([("x", ["N", 3, 6])], [r, r2]), {"x": (3, 6)})
    assert op_counts(g) == {"Conv": 1, "Reshape": 2}


def test_gather_nd_of_constants_folds():
    """The dynamo exporter's relative-position bias: GatherND(table, indices) of two constants
    (negative indices included), reshaped and added to attention logits, folds to a constant;
    batch_dims != 0 is refused by name."""
    from nqrt import UnsupportedOpError
    from nqrt.graph.onnx_import import load_onnx
    b = Builder(opset=13)
    table = b.weight(9, 2)
    idx = np.array([[[0], [4], [-1]], [[2], [2], [8]]], np.int64)                # [2, 3, 1]
    bias = b.op("Reshape", [b.op("GatherND", [table, b.const(idx, np.int64)]), b.const([1, 2, 3, 2], np.int64)])
    y = b.op("Add", [b.op("Conv", ["x", b.weight(2, 3, 1, 1)]), bias])
    g = assert_matches_ort(b.model([("x", ["N", 3, 3, 2])], [y]), {"x": (3, 3, 2)})
    assert op_counts(g) == {"Conv": 1, "Add": 1}
    b = Builder(opset=13)
    y = b.op("GatherND", ["x", b.const(np.zeros((2, 1), np.int64), np.int64)], batch_dims=1)
    with pytest.raises(UnsupportedOpError, match="batch_dims=1"):
        load_onnx(b.model([("x", ["N", 3])], [y]))
