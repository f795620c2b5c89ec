"""Learned upsampling end to end: a small U-Net (ConvTranspose k2 s2, skip Concat), a
DCGAN-style generator stage (k4 s2 p1 -> BatchNormalization -> Relu, grouped k3 s2 p1 op1,
Tanh), a dilated transposed convolution whose odd phases get no taps (all-zero weight
channels), and an ESPCN-style super-resolution net (convs, then DepthToSpace CRD as
PyTorch's PixelShuffle exports it).
Converted with calibration, run in int8 and simulated mode against ONNX Runtime FP32; int8
identical to simulate and across thread counts; every ConvTranspose is one QConv."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from e2e_helpers import assert_int8_matches_float, convert, ops_of  # noqa: E402
from graph._graph_helpers import Builder  # noqa: E402


def _unet():
    b = Builder(opset=17)
    c1 = b.op("Relu", [b.op("Conv", ["x", b.weight(8, 3, 3, 3), b.weight(8)], pads=[1, 1, 1, 1])])
    d = b.op("MaxPool", [c1], kernel_shape=[2, 2], strides=[2, 2])
    c2 = b.op("Relu", [b.op("Conv", [d, b.weight(16, 8, 3, 3), b.weight(16)], pads=[1, 1, 1, 1])])
    u = b.op("ConvTranspose", [c2, b.weight(16, 8, 2, 2), b.weight(8)], strides=[2, 2])
    y = b.op("Concat", [u, c1], axis=1)
    y = b.op("Relu", [b.op("Conv", [y, b.weight(8, 16, 3, 3), b.weight(8)], pads=[1, 1, 1, 1])])
    y = b.op("Conv", [y, b.weight(2, 8, 1, 1), b.weight(2)])
    return b.model([("x", ["N", 3, 16, 16])], [y]), (3, 16, 16), 1


def _generator():
    b = Builder(opset=17)
    y = b.op("ConvTranspose", ["x", b.weight(8, 8, 4, 4)], strides=[2, 2], pads=[1, 1, 1, 1])
    y = b.op("BatchNormalization", [y, b.weight(8, low=0.5, high=1.5), b.weight(8), b.weight(8),
                                    b.weight(8, low=0.5, high=1.5)])
    y = b.op("Relu", [y])
    y = b.op("ConvTranspose", [y, b.weight(8, 2, 3, 3), b.weight(4)], strides=[2, 2],
             pads=[1, 1, 1, 1], output_padding=[1, 1], group=2)
    y = b.op("Tanh", [y])
    return b.model([("x", ["N", 8, 6, 6])], [y]), (8, 6, 6), 2


def _dilated():
    b = Builder(opset=17)
    y = b.op("Relu", [b.op("Conv", ["x", b.weight(6, 4, 3, 3), b.weight(6)], pads=[1, 1, 1, 1])])
    y = b.op("ConvTranspose", [y, b.weight(6, 5, 3, 3), b.weight(5)], strides=[2, 2], dilations=[2, 2])
    return b.model([("x", ["N", 4, 7, 7])], [y]), (4, 7, 7), 1


def _pixel_shuffle():
    b = Builder(opset=17)
    y = b.op("Relu", [b.op("Conv", ["x", b.weight(16, 1, 5, 5), b.weight(16)], pads=[2, 2, 2, 2])])
    y = b.op("Conv", [y, b.weight(9, 16, 3, 3), b.weight(9)], pads=[1, 1, 1, 1])
    y = b.op("DepthToSpace", [y], blocksize=3, mode="CRD")
    return b.model([("x", ["N", 1, 10, 12])], [y]), (1, 10, 12), 0


@pytest.mark.parametrize("build", [_unet, _generator, _dilated, _pixel_shuffle])
def test_convtranspose_model_int8_close_to_float(build, tmp_path):
    m, shape, n_convtranspose = build()
    xs = np.random.default_rng(0).standard_normal((12,) + shape).astype(np.float32)
    nq = convert(tmp_path, m, [{"x": xs[:8]}])
    ops = ops_of(nq)
    n_conv = sum(n.op_type == "Conv" for n in m.graph.node)
    assert ops.count("QConv") == n_conv + n_convtranspose
    assert "Dequantize" in ops and ops.count("Dequantize") == 1       # integer end to end
    assert_int8_matches_float(nq, m, {"x": xs[8:]})
