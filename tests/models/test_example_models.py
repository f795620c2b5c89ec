"""The bundled FP32 example models and data sets (nqrt/examples, made by tools/train_digits.py).

Checks that the files are what models.json says they are: real digits models with the recorded
names, dynamic batch axis, graph structure (op counts, the ops the converter must handle) and FP32
test accuracy reproduced by onnxruntime; real digits data, split without leakage. A corrupted,
retrained or swapped file fails here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

import nqrt

ort = pytest.importorskip("onnxruntime")

EXAMPLES = Path(nqrt.__file__).parent / "examples"
with open(EXAMPLES / "models.json") as _f:
    MODELS = {entry["name"]: entry for entry in json.load(_f)}

# ops each model exists to exercise; the exporter left them in on purpose (no folding/simplifying)
REQUIRED_OPS = {
    "digits_cnn": {"Conv", "BatchNormalization", "Clip", "MaxPool", "GlobalAveragePool",
                   "Flatten", "Gemm"},
    "digits_resnet": {"Conv", "BatchNormalization", "Relu", "Add", "Concat", "AveragePool",
                      "Shape", "Gather", "Unsqueeze", "Reshape", "Gemm"},
    "digits_mlp": {"Gemm", "Relu"},
}


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(EXAMPLES / name) as z:
        return {k: z[k] for k in z.files}


def _session(entry: dict):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(EXAMPLES / entry["file"]), opts,
                                providers=["CPUExecutionProvider"])


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_models_json_lists_the_three_models():
    assert set(MODELS) == set(REQUIRED_OPS)
    for entry in MODELS.values():
        for key in ("file", "input", "output", "input_shape", "calib", "test", "fp32_accuracy",
                    "op_counts", "description"):
            assert key in entry, (entry["name"], key)
        assert (EXAMPLES / entry["file"]).is_file()


def test_files_are_small():
    total = sum(p.stat().st_size for p in EXAMPLES.iterdir() if p.suffix in (".onnx", ".npz"))
    assert total < 1_000_000, total


@pytest.mark.parametrize("name", sorted(REQUIRED_OPS))
def test_graph_structure(name):
    entry = MODELS[name]
    model = onnx.load(str(EXAMPLES / entry["file"]))
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    graph = model.graph
    assert [i.name for i in graph.input] == [entry["input"]] == ["input"]
    assert [o.name for o in graph.output] == [entry["output"]] == ["logits"]
    assert _dims(graph.input[0]) == entry["input_shape"]
    assert _dims(graph.output[0]) == [entry["input_shape"][0], 10]
    assert isinstance(entry["input_shape"][0], str)    # symbolic batch axis

    counts = Counter(n.op_type for n in graph.node)
    assert dict(counts) == entry["op_counts"]
    assert REQUIRED_OPS[name] <= set(counts), REQUIRED_OPS[name] - set(counts)


def test_cnn_has_depthwise_conv_and_relu6():
    graph = onnx.load(str(EXAMPLES / "digits_cnn.onnx")).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1)
              for n in graph.node if n.op_type == "Conv"]
    assert max(groups) > 1
    depthwise = next(n for n in graph.node if n.op_type == "Conv"
                     and any(a.name == "group" and a.i > 1 for a in n.attribute))
    assert inits[depthwise.input[1]].shape[1] == 1       # one input channel per group
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
              for n in graph.node if n.op_type == "Constant"}
    for clip in (n for n in graph.node if n.op_type == "Clip"):
        assert (float(consts[clip.input[1]]), float(consts[clip.input[2]])) == (0.0, 6.0)


def test_batchnorm_stats_are_trained():
    # folding BN must matter: running stats far from the identity transform
    for name in ("digits_cnn", "digits_resnet"):
        graph = onnx.load(str(EXAMPLES / MODELS[name]["file"])).graph
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        for bn in (n for n in graph.node if n.op_type == "BatchNormalization"):
            scale, bias, mean, var = (inits[i] for i in bn.input[1:5])
            assert not np.allclose(var, 1.0, atol=1e-2) and not np.allclose(mean, 0.0, atol=1e-2)
            assert np.all(var > 0)


@pytest.mark.parametrize("name", sorted(REQUIRED_OPS))
def test_fp32_accuracy_matches_record(name):
    entry = MODELS[name]
    test = _npz(entry["test"])
    logits = _session(entry).run([entry["output"]], {entry["input"]: test["input"]})[0]
    assert logits.shape == (len(test["label"]), 10) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    pred = logits.argmax(1)
    assert len(np.unique(pred)) == 10                     # not a constant classifier
    acc = float(np.mean(pred == test["label"]))
    assert acc >= 0.95
    assert abs(acc - entry["fp32_accuracy"]) <= 1e-9, (acc, entry["fp32_accuracy"])


@pytest.mark.parametrize("name", sorted(REQUIRED_OPS))
def test_dynamic_batch(name):
    entry = MODELS[name]
    x = _npz(entry["calib"])["input"]
    sess = _session(entry)
    full = sess.run(None, {"input": x[:16]})[0]
    for lo, hi in ((0, 1), (1, 8), (8, 16)):
        part = sess.run(None, {"input": x[lo:hi]})[0]
        np.testing.assert_allclose(part, full[lo:hi], rtol=1e-5, atol=1e-5)


def test_data_files():
    calib, calib_flat = _npz("digits_calib.npz"), _npz("digits_calib_flat.npz")
    test, test_flat = _npz("digits_test.npz"), _npz("digits_test_flat.npz")
    assert set(calib) == set(calib_flat) == {"input"}
    assert set(test) == set(test_flat) == {"input", "label"}
    assert calib["input"].shape == (200, 1, 8, 8) and calib["input"].dtype == np.float32
    assert test["input"].shape == (540, 1, 8, 8) and test["input"].dtype == np.float32
    assert test["label"].shape == (540,) and test["label"].dtype == np.int64
    np.testing.assert_array_equal(calib_flat["input"], calib["input"].reshape(200, 64))
    np.testing.assert_array_equal(test_flat["input"], test["input"].reshape(540, 64))
    np.testing.assert_array_equal(test_flat["label"], test["label"])
    for x in (calib["input"], test["input"]):
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(x * 16, np.round(x * 16))   # pixels are k/16
    # stratified: every class present in roughly equal numbers
    assert np.all(np.bincount(test["label"], minlength=10) >= 50)
    assert np.all(np.bincount(test["label"]) <= 56)


def test_data_is_real_digits_without_leakage():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    # the digits images are all distinct, so an image identifies its sample
    index = {row.tobytes(): int(label)
             for row, label in zip((digits.data / 16).astype(np.float32), digits.target)}
    assert len(index) == len(digits.data)
    test = _npz("digits_test_flat.npz")
    calib = _npz("digits_calib_flat.npz")["input"]
    assert [index[row.tobytes()] for row in test["input"]] == test["label"].tolist()
    assert all(row.tobytes() in index for row in calib)
    test_rows = {row.tobytes() for row in test["input"]}
    assert len(test_rows) == 540 and len({row.tobytes() for row in calib}) == 200
    assert not test_rows & {row.tobytes() for row in calib}
