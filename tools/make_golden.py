"""Regenerate the golden example files in formats/golden/.

Each golden is a tiny FP32 model built here with onnx.helper (weights from a fixed seed),
converted by nqrt with a fixed calibration set, and stored as
  formats/golden/<name>.nq       the integer model
  formats/golden/<name>.io.npz   "in:<input>" arrays and "out:<output>" arrays: the exact float32
                                 outputs of nqrt's integer runtime (bit-for-bit reference for any
                                 other reader/runtime)
The goldens are meant to change only with the format version; rerun this script deliberately:
    python tools/make_golden.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import nqrt

OUT_DIR = Path(__file__).resolve().parent.parent / "formats" / "golden"


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def tiny_cnn(rng) -> onnx.ModelProto:
    """Conv3x3+ReLU -> depthwise conv + Clip(0,6) -> MaxPool(ceil) -> GAP -> Flatten -> Gemm -> Softmax."""
    inits = [
        _init("w1", rng.normal(0, 0.5, (4, 2, 3, 3))), _init("b1", rng.normal(0, 0.1, 4)),
        _init("w2", rng.normal(0, 0.5, (4, 1, 3, 3))), _init("b2", rng.normal(0, 0.1, 4)),
        _init("w3", rng.normal(0, 0.5, (3, 4))), _init("b3", rng.normal(0, 0.1, 3)),
        _init("lo", np.float32(0.0)), _init("hi", np.float32(6.0)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=4, strides=[2, 2]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 7, 7])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="nqrt-golden")


def tiny_blocks(rng) -> onnx.ModelProto:
    """Residual Add + Concat of differently scaled branches + AveragePool + Reshape + Transpose."""
    inits = [
        _init("wa", rng.normal(0, 0.4, (3, 3, 1, 1))), _init("ba", rng.normal(0, 0.1, 3)),
        _init("wb", rng.normal(0, 2.0, (2, 3, 3, 3))), _init("bb", rng.normal(0, 0.1, 2)),
        numpy_helper.from_array(np.array([0, 5, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"]),
        helper.make_node("Add", ["a", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["sr"]),
        helper.make_node("Conv", ["sr", "wb", "bb"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["sr", "b"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("Reshape", ["ap", "shape"], ["rs"]),
        helper.make_node("Transpose", ["rs"], ["y"], perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_blocks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 9, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="nqrt-golden")


def tiny_mlp(rng) -> onnx.ModelProto:
    """MatMul (constant weight) + Add bias + Relu -> Gemm (alpha/beta) on a rank-2 input."""
    inits = [
        _init("w1", rng.normal(0, 0.3, (10, 16))), _init("b1", rng.normal(0, 0.1, 16)),
        _init("w2", rng.normal(0, 0.3, (16, 4))), _init("b2", rng.normal(0, 0.1, 4)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"], alpha=0.5, beta=2.0),
    ]
    graph = helper.make_graph(
        nodes, "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="nqrt-golden")


def tiny_attention(rng) -> onnx.ModelProto:
    """A class token Expand-ed to the run-time batch and prepended (Expand, QConcat with a
    constant input), one attention head (QMatMul x 2, QSoftmax between them), then the
    class token read back with x[:, 0] (Slice + Squeeze)."""
    inits = [_init("cls", rng.normal(0, 1, (1, 1, 8))), _init("wq", rng.normal(0, 0.4, (8, 8))),
             _init("wk", rng.normal(0, 0.4, (8, 8))), _init("wv", rng.normal(0, 0.4, (8, 8))),
             numpy_helper.from_array(np.array([0], np.int64), "i0"),
             numpy_helper.from_array(np.array([1], np.int64), "i1"),
             numpy_helper.from_array(np.array([1, 1], np.int64), "ones"),
             numpy_helper.from_array(np.array(0, np.int64), "first")]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "i0", "i1"], ["batch"]),
        helper.make_node("Concat", ["batch", "ones"], ["target"], axis=0),
        helper.make_node("Expand", ["cls", "target"], ["tok"]),
        helper.make_node("Concat", ["tok", "x"], ["t"], axis=1),
        helper.make_node("MatMul", ["t", "wq"], ["q"]),
        helper.make_node("MatMul", ["t", "wk"], ["k"]),
        helper.make_node("MatMul", ["t", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "v"], ["o"]),
        helper.make_node("Gather", ["o", "first"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="nqrt-golden")


GOLDENS = {"tiny_cnn": tiny_cnn, "tiny_blocks": tiny_blocks, "tiny_mlp": tiny_mlp,
           "tiny_attention": tiny_attention}


def main(out_dir: Path = OUT_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, (name, build) in enumerate(GOLDENS.items()):
        rng = np.random.default_rng(1000 + i)
        model = build(rng)
        onnx.checker.check_model(model)
        in_name = model.graph.input[0].name
        dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
        calib = rng.normal(0, 1, (16, *dims[1:])).astype(np.float32)
        x = rng.normal(0, 1, (3, *dims[1:])).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"{name}.onnx"
            onnx.save(model, src)
            nqrt.convert(str(src), str(out_dir / f"{name}.nq"), calibration=[{in_name: calib}])
        sess = nqrt.load(str(out_dir / f"{name}.nq"))
        outs = sess.run({in_name: x})
        np.savez(out_dir / f"{name}.io.npz", **{f"in:{in_name}": x},
                 **{f"out:{k}": v for k, v in outs.items()})
        print(f"wrote {name}: {(out_dir / f'{name}.nq').stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR)
