"""Reference executor vs ONNX Runtime FP32 on small models, before and after optimize(),
at batch sizes 1 and 3 (the batch dim is the symbol "N" in every model)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from _graph_helpers import Builder, assert_matches_ort, gelu_erf, op_counts

MODELS = {}


def model(fn):
    MODELS[fn.__name__] = fn
    return fn


def _conv(b, x, cin, cout, k, group=1, bias=True, **attrs):
    ks = k if isinstance(k, list) else [k, k]
    ins = [x, b.weight(cout, cin // group, *ks)] + ([b.weight(cout, low=-1, high=1)] if bias else [])
    return b.op("Conv", ins, group=group, kernel_shape=ks, **attrs)


@model
def conv2d_stride_pads():
    b = Builder()
    y = _conv(b, "x", 3, 8, 3, strides=[2, 2], pads=[1, 0, 2, 1])
    return b.model([("x", ["N", 3, 9, 10])], [y]), {"x": (3, 9, 10)}


@model
def conv2d_no_kernel_shape_attr():
    b = Builder()
    y = b.op("Conv", ["x", b.weight(4, 3, 2, 3)])          # kernel_shape from the weight
    return b.model([("x", ["N", 3, 6, 6])], [y]), {"x": (3, 6, 6)}


@model
def conv1d_dilated():
    b = Builder()
    y = _conv(b, "x", 4, 6, [3], dilations=[2], pads=[2, 1], strides=[2])
    return b.model([("x", ["N", 4, 17])], [y]), {"x": (4, 17)}


@model
def conv2d_groups_dilation():
    b = Builder()
    y = _conv(b, "x", 4, 6, 3, group=2, dilations=[2, 1], pads=[1, 1, 1, 1])
    return b.model([("x", ["N", 4, 9, 8])], [y]), {"x": (4, 9, 8)}


@model
def prelu_per_channel_and_scalar():
    b = Builder()
    y = _conv(b, "x", 3, 6, 3, pads=[1, 1, 1, 1])
    y = b.op("PRelu", [y, b.weight(6, 1, 1, low=-0.5, high=0.5)])     # negative slopes too
    y = b.op("PRelu", [y, b.const([0.3])])
    y = b.op("PRelu", [y, b.weight(6, 1, 1, low=0.0, high=2.0)])      # slopes above 1
    return b.model([("x", ["N", 3, 6, 7])], [y]), {"x": (3, 6, 7)}


@model
def lrn_sizes():
    b = Builder()
    y = _conv(b, "x", 3, 7, 3, pads=[1, 1, 1, 1])
    y = b.op("LRN", [y], size=5, alpha=0.02, beta=0.75, bias=2.0)
    y = b.op("LRN", [y], size=1, alpha=0.5, beta=1.25, bias=1.0)
    y = b.op("LRN", [y], size=9, alpha=1e-4, beta=0.5, bias=1.0)       # window wider than C
    return b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)}


@model
def layernorm_axes_and_bias():
    """LayerNormalization (opset 17): over the last axis of a channels-last view (ConvNeXt's
    blocks), over C·H·W (axis 1), without bias, with a scale broadcast from [W]."""
    b = Builder(opset=17)
    y = _conv(b, "x", 3, 8, 3, pads=[1, 1, 1, 1])
    t = b.op("Transpose", [y], perm=[0, 2, 3, 1])
    t = b.op("LayerNormalization", [t, b.weight(8, low=0.5, high=1.5), b.weight(8)], axis=-1,
             epsilon=1e-6)
    y = b.op("Transpose", [t], perm=[0, 3, 1, 2])
    y = b.op("LayerNormalization", [y, b.weight(8, 5, 6)], axis=1)
    y = b.op("LayerNormalization", [y, b.weight(6), b.weight(1)], axis=-2)
    return b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)}


@model
def instancenorm_2d_and_1d():
    """InstanceNormalization on a 4-D and a 3-D tensor (lowered to LayerNormalization over the
    spatial axes + a channel affine)."""
    b = Builder()
    y = _conv(b, "x", 3, 5, 3, pads=[1, 1, 1, 1])
    y = b.op("InstanceNormalization", [y, b.weight(5, low=0.5, high=1.5), b.weight(5)], epsilon=1e-3)
    y = b.op("Reshape", [y, b.const([0, 5, -1], np.int64)])
    y = b.op("InstanceNormalization", [y, b.weight(5), b.weight(5)])
    return b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)}


@model
def dilated_convs_on_small_maps():
    """DeepLab's ASPP on a small map: dilation 6 / 9 with pads 6 / 9 on 5x5 (all but the centre
    tap read padding: 1x1), dilation 3 (some taps read x: unchanged), dilation 4 with
    asymmetric pads and stride 2 (one output pixel: its window's rows 1-2, columns 0-1)."""
    b = Builder()
    f = _conv(b, "x", 3, 4, 3, pads=[1, 1, 1, 1])
    a = _conv(b, f, 4, 3, 3, dilations=[6, 6], pads=[6, 6, 6, 6])
    c = _conv(b, f, 4, 3, 3, dilations=[9, 9], pads=[9, 9, 9, 9])
    e = _conv(b, f, 4, 3, 3, dilations=[3, 3], pads=[3, 3, 3, 3])
    s = _conv(b, f, 4, 3, 3, dilations=[4, 4], pads=[4, 0, 1, 5], strides=[2, 2])
    y = b.op("Concat", [a, c, e], axis=1)
    return b.model([("x", ["N", 3, 5, 5])], [y, s]), {"x": (3, 5, 5)}


@model
def anchor_grid_from_feature_shape():
    """A detection head's anchor points (YOLOv8 make_anchors): Range over the feature map's H
    and W (taken from its Shape), Expand to a grid, added to the activation; everything but
    the activation path folds to constants."""
    b = Builder(opset=17)
    f = _conv(b, "x", 3, 2, 3, pads=[1, 1, 1, 1])
    shp = b.op("Shape", [f])
    h = b.op("Cast", [b.op("Gather", [shp, b.const(2, np.int64)], axis=0)], to=1)
    w = b.op("Cast", [b.op("Gather", [shp, b.const(3, np.int64)], axis=0)], to=1)
    sy = b.op("Add", [b.op("Range", [b.const(0.0), h, b.const(1.0)]), b.const(0.5)])
    sx = b.op("Add", [b.op("Range", [b.const(0.0), w, b.const(1.0)]), b.const(0.5)])
    gy = b.op("Expand", [b.op("Unsqueeze", [sy, b.const([1], np.int64)]), b.const([5, 6], np.int64)])
    gx = b.op("Expand", [sx, b.const([5, 1], np.int64)])
    grid = b.op("Concat", [b.op("Unsqueeze", [gx, b.const([0], np.int64)]),
                           b.op("Unsqueeze", [gy, b.const([0], np.int64)])], axis=0)
    y = b.op("Add", [f, grid])
    return b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)}


@model
def conv1d_dead_taps():
    b = Builder()
    y = _conv(b, "x", 2, 3, [5], dilations=[4], pads=[8, 8])     # taps 0 and 4 read padding only
    return b.model([("x", ["N", 2, 6])], [y]), {"x": (2, 6)}


@model
def gelu_erf_patterns():
    b = Builder(opset=17)
    y = _conv(b, "x", 3, 6, 3, pads=[1, 1, 1, 1])
    for form in ("half_last", "half_first", "mul_div", "half_gate"):
        y = gelu_erf(b, y, form)
        y = _conv(b, y, 6, 6, 1)
    return b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)}


@model
def gelu_erf_shared_intermediate():
    """The erf gate is also a graph output: the pattern must stay unfused."""
    b = Builder(opset=17)
    y = _conv(b, "x", 3, 6, 3, pads=[1, 1, 1, 1])
    e = b.op("Erf", [b.op("Div", [y, b.const(np.float32(np.sqrt(2)))])])
    g = b.op("Add", [e, b.const(np.float32(1.0))])
    z = b.op("Mul", [b.op("Mul", [y, g]), b.const(np.float32(0.5))])
    return b.model([("x", ["N", 3, 5, 6])], [z, e]), {"x": (3, 5, 6)}


@model
def conv2d_depthwise():
    b = Builder()
    y = _conv(b, "x", 6, 6, 3, group=6, pads=[1, 1, 1, 1], strides=[2, 2])
    y = b.op("Relu", [y])
    y = _conv(b, y, 6, 5, 1, bias=False)
    return b.model([("x", ["N", 6, 8, 8])], [y]), {"x": (6, 8, 8)}


@model
def conv2d_auto_pad_same():
    b = Builder()
    y = _conv(b, "x", 3, 4, 3, strides=[2, 2], auto_pad="SAME_UPPER")
    z = _conv(b, "x", 3, 4, [2, 4], strides=[2, 1], auto_pad="SAME_LOWER")
    v = _conv(b, "x", 3, 4, 3, auto_pad="VALID")
    return b.model([("x", ["N", 3, 7, 7])], [y, z, v]), {"x": (3, 7, 7)}


@model
def conv1d_auto_pad_same_upper():
    b = Builder()
    y = _conv(b, "x", 2, 3, [4], strides=[3], auto_pad="SAME_UPPER")
    return b.model([("x", ["N", 2, 11])], [y]), {"x": (2, 11)}


@model
def gemm_transb_alpha_beta():
    b = Builder()
    f = b.op("Flatten", ["x"], axis=1)
    y = b.op("Gemm", [f, b.weight(5, 24), b.weight(5, low=-1, high=1)], transB=1, alpha=0.5, beta=2.0)
    return b.model([("x", ["N", 2, 3, 4])], [y]), {"x": (2, 3, 4)}


@model
def gemm_scalar_bias_then_relu():
    b = Builder()
    y = b.op("Gemm", ["x", b.weight(6, 4), b.const([0.25])], alpha=2.0)
    y = b.op("Relu", [y])
    return b.model([("x", ["N", 6])], [y]), {"x": (6,)}


@model
def gemm_runtime_bias():
    b = Builder()
    h = b.op("Gemm", ["x", b.weight(6, 4)], transB=0)
    y = b.op("Gemm", ["x", b.weight(4, 6), h], transB=1)
    return b.model([("x", ["N", 6])], [y]), {"x": (6,)}


@model
def matmul_const_rank3():
    b = Builder()
    y = b.op("MatMul", ["x", b.weight(8, 5)])
    y = b.op("Add", [y, b.weight(5, low=-1, high=1)])
    return b.model([("x", ["N", 4, 8])], [y]), {"x": (4, 8)}


@model
def batchnorm_folded_and_standalone():
    b = Builder()
    c1 = _conv(b, "x", 3, 4, 3, pads=[1, 1, 1, 1])
    bn = lambda t: b.op("BatchNormalization", [t] + [b.weight(4, low=0.5, high=1.5) for _ in range(4)],
                        epsilon=1e-3)
    y1 = b.op("Relu", [bn(c1)])
    c2 = _conv(b, "x", 3, 4, 1)
    cat = b.op("Concat", [y1, c2], axis=1)
    y2 = b.op("BatchNormalization", [cat] + [b.weight(8, low=0.5, high=1.5) for _ in range(4)])
    return b.model([("x", ["N", 3, 6, 6])], [y2]), {"x": (3, 6, 6)}


@model
def caffe2_scale_after_bn():
    """DenseNet-style BN -> Mul(const [C,1,1]) -> Add(const [C,1,1]) after Concat and after Conv."""
    b = Builder(opset=9)
    c = _conv(b, "x", 3, 4, 3, pads=[1, 1, 1, 1])
    cat = b.op("Concat", [c, "x"], axis=1)

    def bn_scale(t, ch):
        y = b.op("BatchNormalization", [t] + [b.weight(ch, low=0.5, high=1.5) for _ in range(4)])
        s = b.op("Unsqueeze", [b.weight(ch, low=0.5, high=1.5)], axes=[1, 2])
        y = b.op("Mul", [y, s])
        y = b.op("Add", [y, b.const(np.linspace(-1, 1, ch).reshape(ch, 1, 1))])
        return b.op("Relu", [y])
    y = bn_scale(cat, 7)
    y = bn_scale(_conv(b, y, 7, 5, 1), 5)
    return b.model([("x", ["N", 3, 5, 5])], [y]), {"x": (3, 5, 5)}


@model
def add_mul_sub_div_broadcast():
    b = Builder()
    y = b.op("Add", ["x", b.const(np.arange(3).reshape(3, 1, 1))])      # standalone per-channel
    y = b.op("Mul", [y, b.const(0.5)])
    y = _conv(b, y, 3, 4, 1)
    y = b.op("Sub", [y, b.const(np.arange(4).reshape(1, 4, 1, 1))])      # folds into the conv
    y = b.op("Div", [y, b.const(np.array([1, 2, 4, 8]).reshape(4, 1, 1))])
    z = b.op("Add", [y, b.op("Relu", ["x2"])])                              # broadcast of two run-time
    w = b.op("Sub", [b.const(1.0), z])
    return b.model([("x", ["N", 3, 4, 4]), ("x2", ["N", 1, 4, 4])], [w]), {"x": (3, 4, 4), "x2": (1, 4, 4)}


@model
def sum_concat():
    b = Builder(opset=9)
    c1, c2, c3 = (_conv(b, "x", 2, 3, 1) for _ in range(3))
    s3 = b.op("Sum", [c1, c2, c3])
    s2 = b.op("Sum", [c1, c2])
    y = b.op("Concat", [s3, s2, c3], axis=1)
    return b.model([("x", ["N", 2, 3, 3])], [y]), {"x": (2, 3, 3)}


@model
def maxpool_ceil_dilation():
    b = Builder()
    y1 = b.op("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    y2 = b.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    y3 = b.op("MaxPool", ["x"], kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 1])
    return b.model([("x", ["N", 2, 5, 8])], [y1, y2, y3]), {"x": (2, 5, 8)}


@model
def averagepool_count_include_pad():
    b = Builder()
    outs = []
    for cip in (0, 1):
        outs.append(b.op("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=cip))
        outs.append(b.op("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 0, 1, 0],
                         ceil_mode=1, count_include_pad=cip))
    outs.append(b.op("AveragePool", ["x"], kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]))
    return b.model([("x", ["N", 3, 7, 6])], outs), {"x": (3, 7, 6)}


@model
def global_pools_reduce_mean():
    b = Builder()
    c = b.op("Relu", [_conv(b, "x", 3, 4, 3)])
    g = b.op("GlobalAveragePool", [c])
    m = b.op("GlobalMaxPool", [c])
    r = b.op("ReduceMean", [c], axes=[2, 3], keepdims=1)
    y = b.op("Add", [b.op("Add", [g, m]), r])
    f = b.op("Flatten", [y])
    return b.model([("x", ["N", 3, 6, 6])], [f]), {"x": (3, 6, 6)}


@model
def reduce_mean_opset18_input_axes():
    b = Builder(opset=18)
    r = b.op("ReduceMean", ["x", b.const([-1, 2], np.int64)], keepdims=0)
    return b.model([("x", ["N", 3, 4, 5])], [r]), {"x": (3, 4, 5)}


@model
def reshape_shape_chain_symbolic_batch():
    """x.view(x.size(0), -1) as exported by PyTorch: Shape->Gather->Unsqueeze->Concat->Reshape."""
    b = Builder()
    c = _conv(b, "x", 3, 4, 3)
    s = b.op("Shape", [c])
    n = b.op("Gather", [s, b.const(0, np.int64)], axis=0)
    u = b.op("Unsqueeze", [n, b.const([0], np.int64)])
    shape = b.op("Concat", [u, b.const([-1], np.int64)], axis=0)
    r = b.op("Reshape", [c, shape])
    y = b.op("Gemm", [r, b.weight(5, 16), b.weight(5, low=-1, high=1)], transB=1)
    return b.model([("x", ["N", 3, 4, 4])], [y]), {"x": (3, 4, 4)}


@model
def transpose_softmax():
    b = Builder()
    t = b.op("Transpose", ["x"], perm=[0, 2, 3, 1])
    s = b.op("Softmax", [t], axis=-1)
    s2 = b.op("Softmax", [b.op("Transpose", ["x"])], axis=1)       # default perm: reversed
    return b.model([("x", ["N", 3, 4, 5])], [s, s2]), {"x": (3, 4, 5)}


@model
def softmax_opset11_coerced_2d():
    b = Builder(opset=11)
    s = b.op("Softmax", ["x"], axis=1)          # opset < 13: softmax over the flattened [C*H*W]
    s2 = b.op("Softmax", ["x"])                 # default axis 1
    s3 = b.op("Softmax", ["x"], axis=3)
    return b.model([("x", ["N", 3, 2, 4])], [s, s2, s3]), {"x": (3, 2, 4)}


@model
def clip_opset9_attrs():
    b = Builder(opset=9)
    c = b.op("Clip", [_conv(b, "x", 2, 3, 3, pads=[1, 1, 1, 1])], min=0.0, max=0.5)
    d = b.op("Clip", [b.op("Dropout", [c], ratio=0.3)], min=-0.1)
    return b.model([("x", ["N", 2, 5, 5])], [d]), {"x": (2, 5, 5)}


@model
def clip_opset13_inputs():
    b = Builder(opset=13)
    c = b.op("Clip", [_conv(b, "x", 2, 3, 3), b.const(0.0), b.const(0.4)])
    d = b.op("Clip", [_conv(b, "x", 2, 3, 3), b.const(-0.2)])          # max absent
    e = b.op("Clip", [_conv(b, "x", 2, 3, 3), "", b.const(0.3)])       # min absent
    return b.model([("x", ["N", 2, 5, 5])], [c, d, e]), {"x": (2, 5, 5)}


@model
def constant_node_weights():
    b = Builder()
    w = b.rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b.nodes.append(helper.make_node("Constant", [], ["w"], value=helper.make_tensor("w", 1, w.shape, w.ravel())))
    b.nodes.append(helper.make_node("Constant", [], ["bias"], value_floats=[0.1, -0.2, 0.3, 0.0]))
    b.nodes.append(helper.make_node("Constant", [], ["scale"], value_float=1.5))
    b.nodes.append(helper.make_node("Constant", [], ["shape"], value_ints=[0, -1]))
    y = b.op("Conv", ["x", "w", "bias"])
    y = b.op("Mul", [y, "scale"])
    y = b.op("Reshape", [y, "shape"])
    return b.model([("x", ["N", 3, 5, 5])], [y]), {"x": (3, 5, 5)}


@model
def pad_slice_squeeze_identity_cast():
    b = Builder(opset=13)
    p = b.op("Pad", ["x", b.const([0, 0, 1, 2, 0, 0, 2, 1], np.int64), b.const(0.5)])
    s = b.op("Slice", [p, b.const([1, 0], np.int64), b.const([-1, 100], np.int64),
                       b.const([2, 3], np.int64), b.const([1, 2], np.int64)])
    c = b.op("Cast", [b.op("Identity", [s])], to=1)
    g = b.op("GlobalAveragePool", [c])
    q = b.op("Squeeze", [g, b.const([2, 3], np.int64)])
    u = b.op("Unsqueeze", [q, b.const([1], np.int64)])
    return b.model([("x", ["N", 3, 4, 5])], [u, c]), {"x": (3, 4, 5)}


@model
def pad_opset9_attrs_gather():
    b = Builder(opset=9)
    p = b.op("Pad", ["x"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=-1.0)
    g = b.op("Gather", [p, b.const([2, 0], np.int64)], axis=1)
    return b.model([("x", ["N", 3, 4, 4])], [g]), {"x": (3, 4, 4)}


@model
def initializers_as_inputs_ir3():
    b = Builder(opset=9)
    y = b.op("Relu", [_conv(b, "x", 3, 4, 3)])
    m = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    r = b.op("Reshape", [m, b.const([0, -1], np.int64)])
    z = b.op("Gemm", [r, b.weight(16, 8), b.weight(8, low=-1, high=1)])
    return b.model([("x", ["N", 3, 6, 6])], [z], ir_version=3, initializers_as_inputs=True), {"x": (3, 6, 6)}


@model
def opset21_pad_axes_reduce_mean_noop():
    b = Builder(opset=21)
    p = b.op("Pad", ["x", b.const([1, 2, 0, 1], np.int64), b.const(0.25), b.const([2, -1], np.int64)])
    c = b.op("Conv", [p, b.weight(4, 3, 3, 3)], auto_pad="SAME_LOWER", strides=[2, 2])
    r = b.op("ReduceMean", [c, b.const([2, 3], np.int64)], keepdims=1)
    r2 = b.op("ReduceMean", [c], keepdims=0)                                # axes absent: all axes
    s = b.op("Softmax", [b.op("Flatten", [r])])
    return b.model([("x", ["N", 3, 5, 6])], [s, r2]), {"x": (3, 5, 6)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_matches_onnxruntime(name):
    m, shapes = MODELS[name]()
    assert_matches_ort(m, shapes)


def test_symbolic_shape_chain_folds_to_plain_reshape():
    m, shapes = MODELS["reshape_shape_chain_symbolic_batch"]()
    g = assert_matches_ort(m, shapes)
    assert op_counts(g) == {"Conv": 1, "Reshape": 1, "Gemm": 1}
    (r,) = [n for n in g.nodes if n.op == "Reshape"]
    assert r.attrs["shape"] == [0, -1] and len(r.inputs) == 1
    assert g.value_info[r.outputs[0]].shape == ("N", 16)


def test_caffe2_scale_chain_becomes_convs_only():
    m, shapes = MODELS["caffe2_scale_after_bn"]()
    g = assert_matches_ort(m, shapes)
    # BN after Concat -> depthwise conv (+ Mul/Add folded into it); BN after conv -> folded.
    assert op_counts(g) == {"Conv": 3, "Concat": 1}
    dw = [n for n in g.nodes if n.op == "Conv" and n.attrs["group"] > 1]
    assert len(dw) == 1 and dw[0].attrs["group"] == 7 and g.constants[dw[0].inputs[1]].shape == (7, 1, 1, 1)
    assert all(n.attrs.get("act") == (0.0, float("inf")) for n in g.nodes if n.op == "Conv" and n is not g.nodes[0])


def test_add_mul_sub_div_fold_structure():
    m, shapes = MODELS["add_mul_sub_div_broadcast"]()
    g = assert_matches_ort(m, shapes)
    # Add(x,[3,1,1]) and Mul(.,0.5) -> one depthwise conv; Sub/Div fold into the 1x1 conv.
    # Sub(1, z) of a run-time z is a uniform affine (a = -1) with no producer to fold into:
    # it stays a Sub, which the converter makes a QLut (not a depthwise conv).
    assert op_counts(g) == {"Conv": 2, "Relu": 1, "Add": 1, "Sub": 1}


def test_gelu_erf_patterns_fuse_to_gelu():
    g = assert_matches_ort(*MODELS["gelu_erf_patterns"]())
    assert op_counts(g) == {"Conv": 5, "Gelu": 4}
    g = assert_matches_ort(*MODELS["gelu_erf_shared_intermediate"]())
    assert "Gelu" not in op_counts(g) and op_counts(g)["Erf"] == 1


def test_instancenorm_lowered_to_layernorm_and_depthwise_affine():
    g = assert_matches_ort(*MODELS["instancenorm_2d_and_1d"]())
    counts = op_counts(g)
    assert counts.get("InstanceNormalization", 0) == 0 and counts["LayerNormalization"] == 2
    assert all(n.attrs["axis"] == 2 for n in g.nodes if n.op == "LayerNormalization")
    dw = [n for n in g.nodes if n.op == "Conv" and n.attrs["group"] == 5]
    assert len(dw) == 2                   # each affine: one depthwise 1x1 conv (Add folded in)


@pytest.mark.parametrize("idx,axis,want", [(0, 1, {"Slice": 1, "Squeeze": 1}),
                                           (-1, 2, {"Slice": 1, "Squeeze": 1}),
                                           ([1, 2], 1, {"Slice": 1}),
                                           ([2, 0], 1, {"Gather": 1}),
                                           ([[[1, 2]], [[3, 4]]], 3, {"Slice": 1, "Reshape": 1}),
                                           ([[0, 1], [2, 3]], 1, {"Slice": 1, "Reshape": 1}),
                                           ([[0, 1], [3, 2]], 1, {"Gather": 1})])
def test_gather_of_an_activation_becomes_slice(idx, axis, want):
    """x[:, 0] / x[..., -1] -> Slice + Squeeze; consecutive indices -> Slice; consecutive in a
    rank >= 2 index tensor (dynamo's as_strided) -> Slice + Reshape; others stay."""
    b = Builder(opset=13)
    f = _conv(b, "x", 3, 4, 1)
    y = b.op("Gather", [f, b.const(idx, np.int64)], axis=axis)
    g = assert_matches_ort(b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)})
    counts = op_counts(g)
    counts.pop("Conv")
    assert counts == want


def test_constant_mask_arithmetic_folds():
    """Swin-style masks built from constants (ScatterND, Mod, Equal, Not, Where) fold into
    one constant the activation is added to."""
    b = Builder(opset=17)
    f = _conv(b, "x", 3, 2, 1)
    base = b.const(np.zeros((5, 6), np.float32))
    filled = b.op("ScatterND", [base, b.const([[1], [3]], np.int64), b.const(np.ones((2, 6), np.float32))])
    odd = b.op("Equal", [b.op("Mod", [b.const(np.arange(6), np.int64), b.const(2, np.int64)]),
                         b.const(1, np.int64)])
    mask = b.op("Where", [b.op("Not", [odd]), filled, b.const(np.float32(-3.0))])
    y = b.op("Add", [f, mask])
    g = assert_matches_ort(b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)})
    assert op_counts(g) == {"Conv": 1, "Add": 1}


def test_range_and_expand_of_known_sizes_fold_to_constants():
    g = assert_matches_ort(*MODELS["anchor_grid_from_feature_shape"]())
    assert op_counts(g) == {"Conv": 1, "Add": 1}


def test_expand_over_the_symbolic_batch_reads_the_batch_from_the_input():
    """ViT's class token expanded to the batch: the Shape chain folds away and the Expand
    takes its -1 entries from the graph input carrying the batch symbol (a Concat with the
    patch tokens needs it; an Add would broadcast the token itself: test_batch_constants)."""
    b = Builder(opset=17)
    f = _conv(b, "x", 3, 2, 1)
    n = b.op("Gather", [b.op("Shape", ["x"]), b.const([0], np.int64)], axis=0)
    shape = b.op("Concat", [n, b.const([2, 5, 6], np.int64)], axis=0)
    y = b.op("Concat", [b.op("Expand", [b.weight(1, 2, 5, 6), shape]), f], axis=1)
    g = assert_matches_ort(b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)})
    (e,) = [n for n in g.nodes if n.op == "Expand"]
    assert e.inputs[1] == "x" and e.attrs["like_shape"] == [-1, 2, 5, 6] and "Shape" not in op_counts(g)


def test_dead_conv_taps_are_cropped():
    g = assert_matches_ort(*MODELS["dilated_convs_on_small_maps"]())
    ks = sorted(tuple(n.attrs["kernel_shape"]) for n in g.nodes if n.op == "Conv")
    # the stem and dilation 3 keep 3x3; 6 and 9 become 1x1; the strided dilation-4 conv keeps
    # rows 1..2 (row 0 reads only the top padding) and columns 0..1 (column 2 the right one)
    assert ks == [(1, 1), (1, 1), (2, 2), (3, 3), (3, 3)]
    (s,) = [n for n in g.nodes if n.op == "Conv" and n.attrs["kernel_shape"] == [2, 2]]
    assert s.attrs["pads"] == [0, 0, 1, 1]
    ones = [n for n in g.nodes if n.op == "Conv" and n.attrs["kernel_shape"] == [1, 1]]
    assert all(n.attrs["pads"] == [0, 0, 0, 0] for n in ones)
    g = assert_matches_ort(*MODELS["conv1d_dead_taps"]())
    (c,) = [n for n in g.nodes if n.op == "Conv"]
    assert c.attrs["kernel_shape"] == [3] and c.attrs["pads"] == [4, 4]


def test_scalar_affine_is_not_a_depthwise_conv():
    """A uniform Mul / Add with no producer to fold into stays elementwise (a QLut later);
    a per-channel one becomes a depthwise 1x1 conv."""
    b = Builder()
    y = b.op("Relu", ["x"])
    y = b.op("Add", [b.op("Mul", [y, b.const(np.float32(3.0))]), b.const(np.float32(-1.0))])
    y = b.op("Mul", [y, b.weight(4, 1, 1)])
    g = assert_matches_ort(b.model([("x", ["N", 4, 3, 3])], [y]), {"x": (4, 3, 3)})
    assert op_counts(g) == {"Relu": 1, "Mul": 1, "Add": 1, "Conv": 1}


def test_matmul_rank3_becomes_canonical_gemm_with_folded_bias():
    m, shapes = MODELS["matmul_const_rank3"]()
    g = assert_matches_ort(m, shapes)
    assert op_counts(g) == {"Gemm": 1}
    (n,) = g.nodes
    assert g.constants[n.inputs[1]].shape == (5, 8) and np.any(g.constants[n.inputs[2]] != 0)
    assert g.value_info[n.outputs[0]].shape == ("N", 4, 5)

