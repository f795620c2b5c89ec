"""Graph patterns that PyTorch's exporters (TorchScript and dynamo, opset 17-20) emit, built
here with onnx.helper so no torch is needed: Linear on a 3-D input (MatMul + Add), a mean
over the sequence axis (ReduceMean with axes as an input, opset 18+), and
AdaptiveAvgPool -> ReduceMean(keepdims) -> Reshape.  Each converts, and the int8 output tracks
ONNX Runtime FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nqrt

ort = pytest.importorskip("onnxruntime")


def _f(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _sqnr(ref, got):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))


def _check(model, x_shape, tmp_path, min_sqnr):
    onnx.checker.check_model(model)
    rng = np.random.default_rng(3)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    calib = rng.normal(size=(32, *x_shape[1:])).astype(np.float32)
    # test on calibration samples: this checks the graph patterns, not range generalization
    # (a fresh sample beyond the calibrated range saturates, as static quantization does)
    x = calib[:5]
    nqrt.convert(str(path), str(tmp_path / "m.nq"), calibration={"x": calib})
    got = nqrt.load(str(tmp_path / "m.nq")).run({"x": x})["y"]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == ref.shape
    assert _sqnr(ref, got) > min_sqnr


def test_linear_on_sequence_and_mean_over_time(tmp_path):
    rng = np.random.default_rng(0)
    inits = [_f("w1", rng.normal(0, 0.2, (32, 64)).astype(np.float32)), _f("b1", rng.normal(0, 0.1, 64).astype(np.float32)),
             _f("w2", rng.normal(0, 0.2, (64, 8)).astype(np.float32)), _f("b2", rng.normal(0, 0.1, 8).astype(np.float32)),
             _f("axes", np.array([1], np.int64))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
             helper.make_node("Add", ["m2", "b2"], ["a2"]),
             helper.make_node("ReduceMean", ["a2", "axes"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits)
    _check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), (1, 5, 32), tmp_path, 25)


def test_conv_adaptive_pool_reshape_dynamo_style(tmp_path):
    rng = np.random.default_rng(1)
    inits = [_f("w", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)), _f("b", rng.normal(0, 0.1, 8).astype(np.float32)),
             _f("axes", np.array([-1, -2], np.int64)), _f("shape", np.array([-1, 8], np.int64)),
             _f("wf", rng.normal(0, 0.3, (4, 8)).astype(np.float32)), _f("bf", np.zeros(4, np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "", ""], ["r"]),
             helper.make_node("ReduceMean", ["r", "axes"], ["p"], keepdims=1),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    _check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), (1, 3, 9, 9), tmp_path, 25)


def _shuffle_block(k, x, inits, rng):
    """One ShuffleNetV2 unit on x (N, 8, 6, 6), names suffixed by k."""
    inits += [_f(f"w{k}", rng.normal(0, 0.4, (4, 4, 1, 1)).astype(np.float32)),
              _f(f"b{k}", rng.normal(0, 0.1, 4).astype(np.float32))]
    return [helper.make_node("Shape", [x], [f"s{k}"]), helper.make_node("Gather", [f"s{k}", "i1"], [f"c{k}"], axis=0),
            helper.make_node("Add", [f"c{k}", "one"], [f"c1{k}"]), helper.make_node("Div", [f"c1{k}", "two"], [f"h{k}"]),
            helper.make_node("Mul", [f"h{k}", "one"], [f"e1{k}"]), helper.make_node("Mul", [f"h{k}", "two"], [f"e2{k}"]),
            helper.make_node("Slice", [x, "zero", f"e1{k}", "i1"], [f"xa{k}"]),
            helper.make_node("Slice", [x, f"e1{k}", f"e2{k}", "i1"], [f"xb{k}"]),
            helper.make_node("Conv", [f"xb{k}", f"w{k}", f"b{k}"], [f"cb{k}"]), helper.make_node("Relu", [f"cb{k}"], [f"rb{k}"]),
            helper.make_node("Concat", [f"xa{k}", f"rb{k}"], [f"cat{k}"], axis=1),
            helper.make_node("Shape", [f"cat{k}"], [f"t{k}"]), helper.make_node("Gather", [f"t{k}", "i0"], [f"n{k}"], axis=0),
            helper.make_node("Concat", [f"n{k}", "two", "neg1", "hw"], [f"sh5{k}"], axis=0),
            helper.make_node("Reshape", [f"cat{k}", f"sh5{k}"], [f"r5{k}"]),
            helper.make_node("Transpose", [f"r5{k}"], [f"p5{k}"], perm=[0, 2, 1, 3, 4]),
            helper.make_node("Concat", [f"n{k}", "neg1", "hw"], [f"sh4{k}"], axis=0),
            helper.make_node("Reshape", [f"p5{k}", f"sh4{k}"], [f"out{k}"])]


def test_shufflenet_chunk_and_channel_shuffle_torchscript_style(tmp_path):
    """Two torchvision ShuffleNetV2 units as the TorchScript exporter writes them with a
    dynamic batch: x.chunk(2, dim=1) becomes Shape -> Gather(1) -> Add -> Div -> Mul -> Slice,
    and the channel shuffle x.view(x.size(0), 2, -1, H, W) -> transpose -> view(x.size(0), -1,
    H, W) takes the batch from Shape.  The second unit's chunk needs the channel count of the
    first unit's output, so shape inference must keep the channels through a Slice of an
    (N, C, H, W) tensor and a Reshape with a symbolic batch and -1."""
    rng = np.random.default_rng(2)
    inits = [_f("i0", np.array([0], np.int64)), _f("i1", np.array([1], np.int64)),
             _f("one", np.array([1], np.int64)), _f("two", np.array([2], np.int64)),
             _f("zero", np.array([0], np.int64)), _f("neg1", np.array([-1], np.int64)), _f("hw", np.array([6, 6], np.int64))]
    nodes = _shuffle_block(0, "x", inits, rng) + _shuffle_block(1, "out0", inits, rng)
    nodes.append(helper.make_node("Identity", ["out1"], ["y"]))
    graph = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])], inits)
    _check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (1, 8, 6, 6), tmp_path, 30)
