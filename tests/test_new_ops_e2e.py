"""End to end on small blocks of the CNNs the extension ops are for: ONNX -> convert ->
simulated (fake-quant) run vs the float reference, and the integer run vs the simulated one
and vs float.

  * MobileNetV3 block: conv -> HardSwish -> depthwise -> SE (GAP -> conv -> ReLU -> conv ->
    HardSigmoid -> Mul) -> conv + residual
  * EfficientNet block: conv -> Swish (x·Sigmoid(x), fused) -> depthwise -> Swish -> SE with
    Sigmoid -> conv
  * ShuffleNetV2 block: Split -> branch convs -> Concat -> Reshape/Transpose/Reshape channel
    shuffle
  * FPN neck: stride-2 conv -> Resize nearest x2 -> Add a lateral conv
  * PRelu block (face nets): conv -> PRelu per channel -> depthwise -> PRelu -> conv + residual
  * segmentation head: image pooling broadcast back bilinearly, classifier, bilinear x4
  * bicubic: an input resized bicubically into a conv (CrossViT), a bicubic x2 upsample

INTEGER_WIRED: the runtime executes the new ops (schema.PENDING_OPS merged into schema.OPS), so
the integer-mode assertions run; the thresholds are the original ones (no tuning needed).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nqrt.converter import build_model, load_graph
from nqrt.format import schema
from nqrt.graph import reference
from nqrt.runtime.session import Session

INTEGER_WIRED = True
integer_only = pytest.mark.skipif(not INTEGER_WIRED, reason="runtime wiring pending")


class B:
    def __init__(self, opset=14, seed=0):
        self.nodes, self.inits, self.opset, self.k = [], [], opset, 0
        self.rng = np.random.default_rng(seed)

    def const(self, v, dtype=np.float32):
        self.k += 1
        self.inits.append(numpy_helper.from_array(np.asarray(v, dtype), f"k{self.k}"))
        return f"k{self.k}"

    def op(self, op, inputs, n_out=1, **attrs):
        self.k += 1
        outs = [f"{op.lower()}{self.k}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}{self.k}", **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k=1, stride=1, group=1):
        w = self.rng.normal(size=(cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))
        b = self.rng.normal(size=cout) * 0.1
        return self.op("Conv", [x, self.const(w), self.const(b)], kernel_shape=[k, k], strides=[stride, stride],
                       pads=[k // 2] * 4, group=group)

    def model(self, c, hw, outputs):
        g = helper.make_graph(self.nodes, "block",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, hw, hw])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        return m


def mobilenetv3_block():
    b = B(seed=1)
    t = b.op("HardSwish", [b.conv("x", 8, 16)])
    t = b.op("HardSwish", [b.conv(t, 16, 16, k=3, group=16)])
    s = b.op("Relu", [b.conv(b.op("GlobalAveragePool", [t]), 16, 4)])
    s = b.op("HardSigmoid", [b.conv(s, 4, 16)], alpha=1 / 6, beta=0.5)
    t = b.op("Mul", [t, s])
    y = b.op("Add", [b.conv(t, 16, 8), "x"])
    return b.model(8, 10, [y]), {"QLut": 3, "QMul": 1, "QAdd": 1, "QReduceMean": 1}


def efficientnet_block():
    b = B(seed=2)
    t = b.conv("x", 8, 24)
    t = b.op("Mul", [t, b.op("Sigmoid", [t])])
    t = b.conv(t, 24, 24, k=3, group=24)
    t = b.op("Mul", [b.op("Sigmoid", [t]), t])
    s = b.conv(b.op("GlobalAveragePool", [t]), 24, 6)
    s = b.op("Mul", [s, b.op("Sigmoid", [s])])
    s = b.op("Sigmoid", [b.conv(s, 6, 24)])
    y = b.conv(b.op("Mul", [t, s]), 24, 8)
    return b.model(8, 9, [y]), {"QLut": 4, "QMul": 1}


def yolov4_block():
    """CSPDarknet's conv -> Mish, with Mish as exported before opset 18 (x·tanh(softplus(x)),
    fused to one table) and as the opset-18 op, plus Celu; a residual."""
    b = B(opset=18, seed=7)
    t = b.conv("x", 8, 16)
    t = b.op("Mul", [t, b.op("Tanh", [b.op("Softplus", [t])])])
    t = b.op("Mish", [b.conv(t, 16, 16, k=3)])
    y = b.op("Add", [b.op("Celu", [b.conv(t, 16, 8)], alpha=0.5), "x"])
    return b.model(8, 8, [y]), {"QLut": 3, "QMul": 0, "QAdd": 1}


def cbam_block():
    """CBAM attention: a channel gate from the spatial max (ReduceMax over H, W), a spatial
    gate from the channel mean and max (ReduceMean / ReduceMax over C), and a channel min
    (ReduceMin) in a residual."""
    b = B(seed=8)
    f = b.op("Relu", [b.conv("x", 8, 16)])
    ch = b.op("Sigmoid", [b.conv(b.op("ReduceMax", [f], axes=[2, 3]), 16, 16)])
    f = b.op("Mul", [f, ch])
    sp = b.op("Concat", [b.op("ReduceMean", [f], axes=[1]), b.op("ReduceMax", [f], axes=[1])], axis=1)
    sp = b.op("Sigmoid", [b.conv(sp, 2, 1, k=7)])
    y = b.op("Add", [b.op("Mul", [f, sp]), b.op("ReduceMin", [f], axes=[1])])
    return b.model(8, 10, [y]), {"ReduceMax": 2, "ReduceMin": 1, "QReduceMean": 1, "QMul": 2}


def shufflenetv2_block():
    b = B(seed=3)
    c = 16
    left, right = b.op("Split", [b.conv("x", 8, c), b.const([c // 2, c // 2], np.int64)], n_out=2, axis=1)
    r = b.op("Relu", [b.conv(right, c // 2, c // 2)])
    r = b.conv(r, c // 2, c // 2, k=3, group=c // 2)
    r = b.op("Relu", [b.conv(r, c // 2, c // 2)])
    t = b.op("Concat", [left, r], axis=1)
    t = b.op("Reshape", [t, b.const([-1, 2, c // 2, 8, 8], np.int64)])
    t = b.op("Transpose", [t], perm=[0, 2, 1, 3, 4])
    y = b.op("Reshape", [t, b.const([-1, c, 8, 8], np.int64)])
    return b.model(8, 8, [y]), {"Slice": 2, "QConcat": 1, "Transpose": 1, "Reshape": 2}


def fpn_neck():
    b = B(opset=13, seed=4)
    c2 = b.op("Relu", [b.conv("x", 8, 16, k=3, stride=2)])
    top = b.conv(c2, 16, 8)
    up = b.op("Resize", [top, "", b.const([1, 1, 2, 2])], mode="nearest",
              coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    y = b.op("Add", [up, b.conv("x", 8, 8)])
    up2 = b.op("Resize", [y, "", "", b.const([1, 8, 24, 20], np.int64)], mode="nearest")
    return b.model(8, 12, [y, up2]), {"ResizeNearest": 2, "QAdd": 1}


def segmentation_head():
    """DeepLab / FCN / LRASPP style: an image-pooling branch (global pool -> 1x1 conv ->
    bilinear broadcast back to the map), a classifier, and a bilinear x4 upsample to the input
    size (half_pixel, PyTorch's align_corners=False); the last one at the graph output."""
    b = B(opset=13, seed=6)
    f = b.op("Relu", [b.conv("x", 8, 16, k=3, stride=2)])
    f = b.op("Relu", [b.conv(f, 16, 16, k=3, stride=2)])
    p = b.op("Relu", [b.conv(b.op("GlobalAveragePool", [f]), 16, 16)])
    p = b.op("Resize", [p, "", b.const([1, 1, 3, 3])], mode="linear",
             coordinate_transformation_mode="half_pixel")
    y = b.conv(b.op("Concat", [f, p], axis=1), 32, 5)
    y = b.op("Resize", [y, "", b.const([1, 1, 4, 4])], mode="linear",
             coordinate_transformation_mode="half_pixel")
    return b.model(8, 12, [y]), {"ResizeLinear": 2}


def prelu_block():
    """Face-recognition style (ArcFace / MobileFaceNet): conv -> PRelu with a slope per channel
    -> depthwise -> PRelu with one slope -> conv + residual."""
    b = B(opset=13, seed=5)
    slope = b.const(b.rng.uniform(0.05, 0.4, (16, 1, 1)))
    t = b.op("PRelu", [b.conv("x", 8, 16), slope])
    t = b.op("PRelu", [b.conv(t, 16, 16, k=3, group=16), b.const([0.25])])
    y = b.op("Add", [b.conv(t, 16, 8), "x"])
    # per channel: Relu(x) - slope·Relu(-x) (Neg a table, the slope a depthwise 1x1 conv, the
    # subtraction a QAdd); one slope: LeakyRelu, a table
    return b.model(8, 10, [y]), {"QLut": 2, "QAdd": 2}


def split_attention_block():
    """ResNeSt's split attention (radix 2): a conv to 2·C channels seen as [N, 2, C, H, W],
    summed over the radix (ReduceSum, opset 13: axes as an input), pooled, a two-layer gate,
    a softmax over the radix, and the gated branches summed again."""
    b = B(opset=13, seed=9)
    c = 8
    f = b.op("Relu", [b.conv("x", 8, 2 * c, k=3)])
    s = b.op("Reshape", [f, b.const([0, 2, c, 10, 10], np.int64)])
    g = b.op("ReduceMean", [b.op("ReduceSum", [s, b.const([1], np.int64)], keepdims=0)], axes=[2, 3])
    a = b.conv(b.op("Relu", [b.conv(g, c, 16)]), 16, 2 * c)
    a = b.op("Softmax", [b.op("Reshape", [a, b.const([0, 2, c, 1, 1], np.int64)])], axis=1)
    y = b.op("ReduceSum", [b.op("Mul", [s, a]), b.const([1], np.int64)], keepdims=0)
    return b.model(8, 10, [y]), {"QReduceMean": 3, "QSoftmax": 1, "QMul": 1}


def linear_attention_block():
    """EfficientViT's ReLU linear attention in small: v padded with a row of ones (a Pad value
    outside v's range: v is moved to a grid holding 1 first), (v·kᵀ)·q, the last row the
    normalizer, out = rows / (last row + eps): a Div of two activations (QLut2); plus a Max of
    two activations and a non-scalar constant divided by an activation."""
    b = B(opset=13, seed=12)
    f = b.op("Relu", [b.conv("x", 8, 8)])
    q = b.op("Reshape", [b.op("Relu", [b.conv(f, 8, 4)]), b.const([0, 4, 64], np.int64)])
    k = b.op("Reshape", [b.op("Relu", [b.conv(f, 8, 4)]), b.const([0, 4, 64], np.int64)])
    v = b.op("Reshape", [b.conv(f, 8, 4), b.const([0, 4, 64], np.int64)])
    v = b.op("Pad", [v, b.const([0, 0, 0, 0, 1, 0], np.int64), b.const(np.float32(1.0))])
    vk = b.op("MatMul", [v, b.op("Transpose", [k], perm=[0, 2, 1])])         # [N, 5, 4]
    out = b.op("MatMul", [vk, q])                                            # [N, 5, 64]
    num = b.op("Slice", [out, b.const([0], np.int64), b.const([4], np.int64), b.const([1], np.int64)])
    den = b.op("Slice", [out, b.const([4], np.int64), b.const([5], np.int64), b.const([1], np.int64)])
    y = b.op("Div", [num, b.op("Add", [den, b.const(np.float32(1e-3))])])
    y = b.op("Max", [y, b.op("Reshape", [b.conv(f, 8, 4), b.const([0, 4, 64], np.int64)])])
    c = b.const(b.rng.uniform(0.5, 2.0, (4, 1)))
    y = b.op("Add", [y, b.op("Div", [c, b.op("Add", [b.op("Sigmoid", [y]), b.const(np.float32(0.5))])])])
    y = b.op("Reshape", [y, b.const([0, 4, 8, 8], np.int64)])
    return b.model(8, 8, [y]), {"QLut2": 3, "Pad": 1, "QMatMul": 2}


def grn_block():
    """ConvNeXt V2's global response normalization: Gx = ‖x‖ over H, W (ReduceL2, lowered to
    Sqrt(ReduceSum(x·x))), Nx = Gx / (mean over C of Gx + eps) (a QLut2 division),
    y = gamma·(x·Nx) + beta + x with non-zero gamma and beta."""
    b = B(opset=13, seed=14)
    x = b.op("Relu", [b.conv("x", 8, 16, k=3)])
    gx = b.op("ReduceL2", [x], axes=[2, 3], keepdims=1)
    nx = b.op("Div", [gx, b.op("Add", [b.op("ReduceMean", [gx], axes=[1]), b.const(np.float32(1e-6))])])
    y = b.op("Mul", [b.const(b.rng.uniform(0.2, 1.0, (16, 1, 1))), b.op("Mul", [x, nx])])
    y = b.op("Add", [b.op("Add", [y, b.const(b.rng.normal(0, 0.1, (16, 1, 1)))]), x])
    return b.model(8, 10, [b.conv(y, 16, 8)]), {"QLut2": 1, "QMul": 2}


def bicubic_block():
    """CrossViT's input branch and a super-resolution tail: the image resized bicubically
    (12 -> 10, PyTorch's a = -0.75, half_pixel) into a conv, and a bicubic x2 upsample of a
    feature map (TF's a = -0.5 with exclude_outside)."""
    b = B(opset=13, seed=15)
    r = b.op("Resize", ["x", "", b.const([1, 1, 0.84, 0.84])], mode="cubic",
             cubic_coeff_a=-0.75, coordinate_transformation_mode="pytorch_half_pixel")
    f = b.op("Relu", [b.conv(r, 8, 16, k=3)])
    y = b.op("Resize", [f, "", b.const([1, 1, 2, 2])], mode="cubic", cubic_coeff_a=-0.5,
             exclude_outside=1, coordinate_transformation_mode="half_pixel")
    return b.model(8, 12, [b.conv(y, 16, 4)]), {"ResizeCubic": 2}


BLOCKS = {"mobilenetv3": mobilenetv3_block, "efficientnet": efficientnet_block,
          "shufflenetv2": shufflenetv2_block, "fpn": fpn_neck, "prelu": prelu_block,
          "segmentation": segmentation_head, "yolov4": yolov4_block, "cbam": cbam_block,
          "split_attention": split_attention_block, "linear_attention": linear_attention_block,
          "grn": grn_block, "bicubic": bicubic_block}
SQNR_DB = {"mobilenetv3": 25.0, "efficientnet": 25.0, "shufflenetv2": 30.0, "fpn": 30.0,
           "prelu": 30.0, "segmentation": 30.0, "yolov4": 30.0, "cbam": 25.0, "split_attention": 25.0,
           # a quotient of two 8-bit operands: both roundings add to its relative error
           # (22.5 dB measured for this block)
           "linear_attention": 20.0, "grn": 25.0, "bicubic": 30.0}


def sqnr_db(got, ref) -> float:
    ref = np.asarray(ref, np.float64)
    err = np.asarray(got, np.float64) - ref
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum(err ** 2), 1e-30)))


_CACHE: dict = {}


def converted(name):
    """(onnx model, float graph, nq model, test feeds), built once per block."""
    if name not in _CACHE:
        model, expected_ops = BLOCKS[name]()
        rng = np.random.default_rng(10)
        shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
        calib = {"x": rng.standard_normal((32, *shape)).astype(np.float32)}
        nq = build_model(model, calib)
        feeds = {"x": rng.standard_normal((3, *shape)).astype(np.float32)}
        _CACHE[name] = (model, load_graph(model), nq, feeds, expected_ops)
    return _CACHE[name]


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_converts_with_the_new_ops(name):
    _, _, nq, _, expected_ops = converted(name)
    counts = {op: sum(n.op == op for n in nq.nodes) for op in expected_ops}
    assert counts == expected_ops
    assert all(n.op in schema.ALL_OPS for n in nq.nodes)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_simulated_block_close_to_float(name):
    _, graph, nq, feeds, _ = converted(name)
    ref = reference.run(graph, feeds)
    got = Session(nq, mode="simulate").run(feeds)
    for out, r in ref.items():
        assert got[out].shape == r.shape
        assert np.unique(got[out]).size > 20                       # not saturated / constant
        db = sqnr_db(got[out], r)
        assert db >= SQNR_DB[name], f"{name} output {out}: SQNR {db:.1f} dB"


@integer_only
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_integer_block_matches_simulated_and_float(name):
    _, graph, nq, feeds, _ = converted(name)
    ref = reference.run(graph, feeds)
    sim = Session(nq, mode="simulate").run(feeds)
    got = Session(nq, mode="integer").run(feeds)
    for out, r in ref.items():
        assert got[out].shape == r.shape
        s = nq.qparams(next(n.inputs[0] for n in nq.nodes if n.op == "Dequantize" and n.outputs[0] == out))[0]
        steps = np.abs(got[out].astype(np.float64) - sim[out]) / s
        assert np.mean(steps) < 0.1 and steps.max() <= 4, f"{name} {out}: int vs sim steps {steps.max()}"
        db = sqnr_db(got[out], r)
        assert db >= SQNR_DB[name], f"{name} output {out}: SQNR {db:.1f} dB"


@integer_only
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_integer_block_thread_invariant(name):
    _, _, nq, feeds, _ = converted(name)
    one = Session(nq, threads=1).run(feeds)
    two = Session(nq, threads=2).run(feeds)
    for out in one:
        assert np.array_equal(one[out], two[out])
