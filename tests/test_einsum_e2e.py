"""Einsum end to end: attention written with einsum (Q·Kᵀ and P·V as 'nhqd,nhkd->nhqk',
'nhqk,nhkd->nhqd') and a relative-position term with a constant per-head table
('nyhwc,hkc->nyhwk', MViTv2's form: QMatMul with a constant uint8 b) convert through
lower_einsum and run in integers close to ONNX Runtime FP32."""

from __future__ import annotations

import numpy as np
import onnx

import nqrt
from e2e_helpers import assert_int8_matches_float, convert, ops_of
from graph._graph_helpers import Builder


def einsum_attention() -> onnx.ModelProto:
    b = Builder(opset=13, seed=7)
    T, D, H = 10, 16, 2

    def heads(t):
        r = b.op("Reshape", [t, b.const(np.array([0, T, H, D // H], np.int64), np.int64)])
        return b.op("Transpose", [r], perm=[0, 2, 1, 3])

    q, k, v = (heads(b.op("MatMul", ["x", b.weight(D, D)])) for _ in range(3))
    s = b.op("Mul", [b.op("Einsum", [q, k], equation="nhqd,nhkd->nhqk"), b.const(np.float32(0.35))])
    p = b.op("Softmax", [s], axis=-1)
    o = b.op("Einsum", [p, v], equation="nhqk,nhkd->nhqd")
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]),
                         b.const(np.array([0, T, D], np.int64), np.int64)])
    y = b.op("MatMul", [o, b.weight(D, D)])
    return b.model([("x", ["N", T, D])], [y])


def relpos_term() -> onnx.ModelProto:
    b = Builder(opset=13, seed=8)
    r = b.op("Relu", ["x"])
    y = b.op("Einsum", [r, b.weight(4, 7, 6)], equation="nyhwc,hkc->nyhwk")
    return b.model([("x", ["N", 3, 4, 5, 6])], [y])


def test_einsum_attention_runs_as_qmatmul(tmp_path):
    model = einsum_attention()
    rng = np.random.default_rng(0)
    nq = convert(tmp_path, model, {"x": rng.standard_normal((32, 10, 16)).astype(np.float32)})
    assert ops_of(nq).count("QMatMul") == 2 and "Einsum" not in ops_of(nq)
    assert_int8_matches_float(nq, model, {"x": rng.standard_normal((3, 10, 16)).astype(np.float32)},
                              min_db=25.0)


def test_constant_per_head_table_is_a_constant_qmatmul_operand(tmp_path):
    model = relpos_term()
    rng = np.random.default_rng(1)
    nq = convert(tmp_path, model, {"x": rng.standard_normal((16, 3, 4, 5, 6)).astype(np.float32)})
    m = nqrt.load(nq).model
    (mm,) = [n for n in m.nodes if n.op == "QMatMul"]
    b = m.tensors[mm.inputs[1]]
    assert b.data is not None and b.dtype == "uint8" and b.quant is not None
    assert_int8_matches_float(nq, model, {"x": rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)},
                              min_db=30.0)


def test_unsupported_einsum_is_named(tmp_path):
    b = Builder(opset=13)
    y = b.op("Einsum", ["x", "y"], equation="nijk,njk->ni")      # two contracted indices
    model = b.model([("x", ["N", 3, 4, 5]), ("y", ["N", 4, 5])], [y])
    src = tmp_path / "e.onnx"
    onnx.save(model, src)
    calib = {"x": np.ones((2, 3, 4, 5), np.float32), "y": np.ones((2, 4, 5), np.float32)}
    try:
        nqrt.convert(str(src), str(tmp_path / "e.nq"), calibration=calib)
    except nqrt.UnsupportedOpError as e:
        assert "Einsum" in str(e)
    else:
        raise AssertionError("an Einsum with two contracted indices converted")
    assert not (tmp_path / "e.nq").exists()
