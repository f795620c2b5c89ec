"""LayerNormalization end to end (a float op, Dequantize -> LayerNormalization -> Quantize):
a ConvNeXt block (channels-last LayerNorm between transposes, MatMul MLP with the exported
exact GELU, layer scale, residual), LayerNorm on the graph input and at a graph output,
InstanceNormalization and GroupNormalization (lowered to it: a dynamo-exported GroupNorm
conv block), and a transformer MLP block exported at opset 14 (its
LayerNorms decomposed into ReduceMean / Sub / Pow / Sqrt / Div / Mul / Add, fused back);
int8 and simulated runs against ONNX Runtime FP32, int8 identical to simulate and across
thread counts."""

from __future__ import annotations

import numpy as np
import pytest

import nqrt

ort = pytest.importorskip("onnxruntime")

from e2e_helpers import assert_int8_matches_float, convert, ops_of  # noqa: E402
from graph._graph_helpers import Builder, decomposed_layernorm, gelu_erf  # noqa: E402


def _convnext_block():
    b = Builder(opset=17)
    C = 16
    x = b.op("Conv", ["x", b.weight(C, 3, 4, 4), b.weight(C)], strides=[4, 4], kernel_shape=[4, 4])
    t = b.op("Transpose", [x], perm=[0, 2, 3, 1])
    t = b.op("LayerNormalization", [t, b.weight(C, low=0.5, high=1.5), b.weight(C)], epsilon=1e-6)
    t = b.op("Transpose", [t], perm=[0, 3, 1, 2])
    d = b.op("Conv", [t, b.weight(C, 1, 7, 7), b.weight(C)], group=C, pads=[3, 3, 3, 3],
             kernel_shape=[7, 7])
    d = b.op("Transpose", [d], perm=[0, 2, 3, 1])
    d = b.op("LayerNormalization", [d, b.weight(C, low=0.5, high=1.5), b.weight(C)], epsilon=1e-6)
    d = b.op("Add", [b.op("MatMul", [d, b.weight(C, 4 * C)]), b.weight(4 * C)])
    d = gelu_erf(b, d, "half_last")
    d = b.op("Add", [b.op("MatMul", [d, b.weight(4 * C, C)]), b.weight(C)])
    d = b.op("Transpose", [d], perm=[0, 3, 1, 2])
    d = b.op("Mul", [d, b.weight(C, 1, 1, low=0.5, high=1.0)])              # layer scale
    y = b.op("Add", [t, d])
    return b.model([("x", ["N", 3, 32, 32])], [y]), (3, 32, 32)


def _input_and_output():
    b = Builder(opset=17)
    y = b.op("LayerNormalization", ["x", b.weight(4, 6, 6)], axis=1)          # on the input
    y = b.op("Conv", [y, b.weight(5, 4, 3, 3)], pads=[1, 1, 1, 1])
    y = b.op("LayerNormalization", [y, b.weight(6), b.weight(6)], axis=-1)  # a graph output
    return b.model([("x", ["N", 4, 6, 6])], [y]), (4, 6, 6)


def _instancenorm():
    """Style-transfer style: conv -> InstanceNormalization -> Relu, twice (the second at the
    graph output); lowered to LayerNormalization over H, W + a depthwise 1x1 affine."""
    b = Builder()
    y = b.op("Conv", ["x", b.weight(6, 3, 3, 3)], pads=[1, 1, 1, 1])
    y = b.op("Relu", [b.op("InstanceNormalization", [y, b.weight(6, low=0.5, high=1.5), b.weight(6)])])
    y = b.op("Conv", [y, b.weight(4, 6, 3, 3)], pads=[1, 1, 1, 1], strides=[2, 2])
    y = b.op("InstanceNormalization", [y, b.weight(4, low=0.5, high=1.5), b.weight(4)])
    return b.model([("x", ["N", 3, 12, 12])], [y]), (3, 12, 12)


def _decomposed_transformer_mlp():
    b = Builder(opset=14)
    D = 24
    t = decomposed_layernorm(b, "x", D)
    h = b.op("Add", [b.op("MatMul", [t, b.weight(D, 2 * D)]), b.weight(2 * D)])
    h = b.op("Add", [b.op("MatMul", [gelu_erf(b, h, "half_last"), b.weight(2 * D, D)]), b.weight(D)])
    y = decomposed_layernorm(b, b.op("Add", ["x", h]), D, square="Mul", divide="Reciprocal")
    return b.model([("x", ["N", 10, D])], [y]), (10, 24)


def _groupnorm_block():
    """Conv -> GroupNorm(4 groups of 2 channels) -> Relu -> Conv -> GroupNorm at the output, as
    PyTorch's dynamo exporter writes nn.GroupNorm at opset 21."""
    b = Builder(opset=21)
    y = b.op("Conv", ["x", b.weight(8, 3, 3, 3), b.weight(8)], pads=[1, 1, 1, 1])
    y = b.op("Relu", [b.op("GroupNormalization", [y, b.weight(8, low=0.5, high=1.5), b.weight(8)],
                           num_groups=4)])
    y = b.op("Conv", [y, b.weight(6, 8, 3, 3), b.weight(6)], pads=[1, 1, 1, 1], strides=[2, 2])
    y = b.op("GroupNormalization", [y, b.weight(6, low=0.5, high=1.5), b.weight(6)], num_groups=3)
    return b.model([("x", ["N", 3, 10, 10])], [y]), (3, 10, 10)


def _layernorm_large_eps():
    """A channels-last LayerNorm whose eps (0.5) is not negligible against its variance: its
    output depends on the input's scale, not only on its shape (a fused LayerNorm that used
    the wrong scale would show)."""
    b = Builder(opset=17)
    C = 8
    x = b.op("Conv", ["x", b.weight(C, 3, 3, 3), b.weight(C)], pads=[1, 1, 1, 1])
    t = b.op("Transpose", [x], perm=[0, 2, 3, 1])
    t = b.op("LayerNormalization", [t, b.weight(C, low=0.5, high=1.5), b.weight(C)], epsilon=0.5)
    t = b.op("Transpose", [t], perm=[0, 3, 1, 2])
    return b.model([("x", ["N", 3, 8, 8])], [b.op("Conv", [t, b.weight(4, C, 1, 1)])]), (3, 8, 8)


def _cosine_attention():
    """Swin V2 / XCiT style: q and k L2-normalized along the last axis (F.normalize as
    exported: ReduceL2, Clip, Expand, Div), a scaled Q·Kᵀ, softmax, ·V: the normalizations
    become RMSNormalization (the float layer-norm op with rms = 1)."""
    b = Builder(opset=17)
    D = 16

    def normalize(t):
        r = b.op("ReduceL2", [t], axes=[-1], keepdims=1)
        return b.op("Div", [t, b.op("Expand", [b.op("Clip", [r, b.const(np.float32(1e-12))]),
                                                 b.op("Shape", [t])])])

    q = normalize(b.op("MatMul", ["x", b.weight(D, D)]))
    k = normalize(b.op("MatMul", ["x", b.weight(D, D)]))
    v = b.op("MatMul", ["x", b.weight(D, D)])
    a = b.op("Mul", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])]), b.const(np.float32(10.0))])
    y = b.op("MatMul", [b.op("Softmax", [a], axis=-1), v])
    return b.model([("x", ["N", 12, D])], [y]), (12, D)


@pytest.mark.parametrize("build", [_convnext_block, _input_and_output, _instancenorm,
                                   _decomposed_transformer_mlp, _groupnorm_block, _cosine_attention,
                                   _layernorm_large_eps])
def test_layernorm_model_int8_close_to_float(build, tmp_path):
    m, shape = build()
    xs = np.random.default_rng(0).standard_normal((12,) + shape).astype(np.float32)
    nq = convert(tmp_path, m, [{"x": xs[:8]}])
    ops = ops_of(nq)
    assert ops.count("LayerNormalization") == sum(
        n.op_type in ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "Sqrt", "ReduceL2")
        for n in m.graph.node)
    if build is _cosine_attention:
        from nqrt.format.reader import read_nq
        assert [n.attrs.get("rms") for n in read_nq(nq).nodes if n.op == "LayerNormalization"] == [1, 1]
    if build is _convnext_block:
        assert "QMul" not in ops and ops.count("QLut") == 1      # the GELU: one table
    # Dequantize -> LayerNormalization -> Quantize run as one fused instruction; a LayerNorm
    # on the float graph input or at a graph output keeps the float op, and so does the
    # GroupNorm's first (it normalizes in NCHW order: the transposes out of and back into the
    # runtime's NHWC fuse with its Dequantize and Quantize instead)
    from nqrt.runtime import encoding as E
    sess = nqrt.load(nq)
    code = sess.plan_for({"x": (4,) + shape}).code[:, 0].tolist()
    fused = {_convnext_block: 2, _input_and_output: 0, _groupnorm_block: 0,
             _layernorm_large_eps: 1}.get(build)
    if fused is not None:
        assert code.count(E.OP_QLAYERNORM) == fused
        assert code.count(E.OP_LAYERNORM) == ops.count("LayerNormalization") - fused
    # cosine attention multiplies the logits of unit vectors (8-bit codes over [-1, 1]) by its
    # temperature 10 before the softmax: 27 dB where the other blocks reach 30
    assert_int8_matches_float(nq, m, {"x": xs[8:]}, min_db=25.0 if build is _cosine_attention else 30.0)
