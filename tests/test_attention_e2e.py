"""Self-attention end to end (a ViT / YOLO11 C2PSA block: LayerNormalization, Q/K/V
projections, heads split by Reshape / Transpose, Q·Kᵀ and softmax·V as QMatMul between two
activations, Softmax as the integer QSoftmax, output projection, residual), converted with
calibration and run in int8 and simulated mode against ONNX Runtime FP32; int8 identical
across thread counts.  A fixed-batch ViT-style variant prepends a constant class token
(Concat with a constant operand) and reads it back with `x[:, 0]` (Gather -> Slice +
Squeeze)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import nqrt

ort = pytest.importorskip("onnxruntime")

from e2e_helpers import assert_int8_matches_float, convert, ops_of  # noqa: E402
from graph._graph_helpers import Builder, ort_run  # noqa: E402

L, D, H = 17, 32, 4


def _attention(b: Builder, x: str, L: int = L) -> str:
    dh = D // H
    t = b.op("LayerNormalization", [x, b.weight(D, low=0.5, high=1.5), b.weight(D)], axis=-1)
    q, k, v = (b.op("Add", [b.op("MatMul", [t, b.weight(D, D)]), b.weight(D)]) for _ in range(3))
    heads = b.const([0, L, H, dh], np.int64)
    q = b.op("Transpose", [b.op("Reshape", [q, heads])], perm=[0, 2, 1, 3])      # [N, H, L, dh]
    k = b.op("Transpose", [b.op("Reshape", [k, heads])], perm=[0, 2, 3, 1])      # [N, H, dh, L]
    v = b.op("Transpose", [b.op("Reshape", [v, heads])], perm=[0, 2, 1, 3])
    s = b.op("Mul", [b.op("MatMul", [q, k]), b.const(np.float32(1 / np.sqrt(dh)))])
    a = b.op("Softmax", [s], axis=-1)
    o = b.op("Transpose", [b.op("MatMul", [a, v])], perm=[0, 2, 1, 3])
    o = b.op("Reshape", [o, b.const([0, L, D], np.int64)])
    o = b.op("Add", [b.op("MatMul", [o, b.weight(D, D)]), b.weight(D)])
    return b.op("Add", [x, o])


def _model():
    b = Builder(opset=17)
    y = _attention(b, _attention(b, "x"))
    return b.model([("x", ["N", L, D])], [y])


def test_attention_int8_close_to_float(tmp_path):
    m = _model()
    xs = np.random.default_rng(0).standard_normal((12, L, D)).astype(np.float32)
    nq = convert(tmp_path, m, [{"x": xs[:8]}])
    ops = ops_of(nq)
    assert ops.count("QMatMul") == 4 and ops.count("QSoftmax") == 2 and "Softmax" not in ops
    assert_int8_matches_float(nq, m, {"x": xs[8:]})


def test_class_token_model_int8_close_to_float(tmp_path):
    b = Builder(opset=17)
    t = b.op("Concat", [b.weight(1, 1, D), "x"], axis=1)                # [1, L + 1, D]
    t = _attention(b, t, L + 1)
    cls = b.op("Gather", [t, b.const(0, np.int64)], axis=1)             # [1, D]
    y = b.op("Add", [b.op("MatMul", [cls, b.weight(D, 10)]), b.weight(10)])
    m = b.model([("x", [1, L, D])], [y])
    onnx.save(m, tmp_path / "m.onnx")
    xs = np.random.default_rng(1).standard_normal((12, 1, L, D)).astype(np.float32)
    nqrt.convert(str(tmp_path / "m.onnx"), str(tmp_path / "m.nq"), calibration=[{"x": v} for v in xs[:8]])
    ops = [n.op for n in nqrt.load(str(tmp_path / "m.nq")).model.nodes]
    assert "QConcat" in ops and "Squeeze" in ops and ops.count("QMatMul") == 2
    for v in xs[8:]:
        ref = ort_run(m, {"x": v})[0]
        got = nqrt.load(str(tmp_path / "m.nq")).run({"x": v})
        (name,) = got
        sqnr = 10 * np.log10((ref ** 2).sum() / ((got[name] - ref) ** 2).sum())
        assert sqnr >= 25, f"{sqnr:.1f} dB"


def _dynamic_batch_vit():
    """ViT's head with a run-time batch: the class token Expand-ed to Shape(x)[0] (as both
    PyTorch exporters write it: a Concat of the batch with ones, or Where(Equal(s, -1), 1, s)
    over a Reshape target), prepended, attention, then x[:, 0]."""
    b = Builder(opset=17)
    n = b.op("Slice", [b.op("Shape", ["x"]), b.const([0], np.int64), b.const([1], np.int64)])
    legacy = b.op("Concat", [n, b.const([-1, -1], np.int64)], axis=0)              # [N, -1, -1]
    target = b.op("Where", [b.op("Equal", [legacy, b.const([-1, -1, -1], np.int64)]),
                            b.const([1, 1, 1], np.int64), legacy])                 # [N, 1, 1]
    tok = b.op("Expand", [b.weight(1, 1, D), target])
    t = b.op("Concat", [tok, "x"], axis=1)
    t = _attention(b, t, L + 1)
    cls = b.op("Gather", [t, b.const(0, np.int64)], axis=1)
    y = b.op("Add", [b.op("MatMul", [cls, b.weight(D, 10)]), b.weight(10)])
    return b.model([("x", ["N", L, D])], [y])


def test_dynamic_batch_class_token_expand(tmp_path):
    m = _dynamic_batch_vit()
    onnx.save(m, tmp_path / "m.onnx")
    xs = np.random.default_rng(2).standard_normal((12, L, D)).astype(np.float32)
    nqrt.convert(str(tmp_path / "m.onnx"), str(tmp_path / "m.nq"), calibration=[{"x": xs[:8]}])
    sess = nqrt.load(str(tmp_path / "m.nq"))
    ops = [n.op for n in sess.model.nodes]
    assert ops.count("Expand") == 1 and sess.inputs[0].shape[0] == "N"
    for batch in (1, 3):
        ref = ort_run(m, {"x": xs[8:8 + batch]})[0]
        got = {mode: nqrt.load(str(tmp_path / "m.nq"), mode=mode).run({"x": xs[8:8 + batch]})
               for mode in ("integer", "simulate")}
        (name,) = got["integer"]
        y = got["integer"][name]
        assert y.shape == ref.shape == (batch, 10)
        sqnr = 10 * np.log10((ref ** 2).sum() / ((y - ref) ** 2).sum())
        assert sqnr >= 25, f"batch {batch}: {sqnr:.1f} dB"
        assert np.array_equal(y, got["simulate"][name])


def test_softmax_over_channels_between_convs(tmp_path):
    """QSoftmax over a non-last axis (channels of an NCHW map: rows strided by H·W), between
    two convs, against ONNX Runtime; 1 and 2 threads identical, int8 == simulate."""
    b = Builder(opset=17)
    t = b.op("Conv", ["x", b.weight(6, 3, 3, 3), b.weight(6)], pads=[1, 1, 1, 1])
    t = b.op("Softmax", [b.op("Mul", [t, b.const(np.float32(3.0))])], axis=1)
    y = b.op("Conv", [t, b.weight(4, 6, 1, 1), b.weight(4)])
    m = b.model([("x", ["N", 3, 9, 7])], [y])
    xs = np.random.default_rng(4).standard_normal((10, 3, 9, 7)).astype(np.float32)
    nq = convert(tmp_path, m, [{"x": xs[:8]}])
    assert "QSoftmax" in ops_of(nq) and "Softmax" not in ops_of(nq)
    assert_int8_matches_float(nq, m, {"x": xs[8:]})
