"""Simulated mode on the CNN extension ops vs the spec's integer references (tests/naive.py):
exact for QLut / Slice / Squeeze / Unsqueeze / Pad / ResizeNearest, within one step for
QMul and QAdd with signed multipliers and a constant operand (spec section 8)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from nqrt import qmath
from nqrt.format.model import NqIO, NqModel, NqNode, NqTensor, Quant
from nqrt.runtime import simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import naive  # noqa: E402

S_X, Z_X = 0.05, 120


def _u8(name, shape, s=S_X, z=Z_X, data=None):
    return NqTensor(name, "uint8", tuple(shape), Quant([float(np.float32(s))], [z]), data)


def _model(nodes, tensors, out):
    tensors = [NqTensor("x", "float32", (2, 4, 5, 6)), _u8("xq", (2, 4, 5, 6))] + tensors
    return NqModel([NqIO("x", (2, 4, 5, 6))], [NqIO(out, ())],
                   {t.name: t for t in tensors}, [NqNode("Quantize", ["x"], ["xq"], {}, "q")] + nodes)


def _run(nodes, tensors, out):
    x = (np.random.default_rng(0).standard_normal((2, 4, 5, 6)) * 2.5).astype(np.float32)
    env = simulate.run_all(_model(nodes, tensors, out), {"x": x})
    return env["xq"], env[out]


def test_movement_ops_and_lut_are_exact():
    table = np.random.default_rng(1).integers(0, 256, 256, dtype=np.uint8)
    nodes = [
        NqNode("QLut", ["xq", "t"], ["l"], {}, "lut"),
        NqNode("Slice", ["l"], ["s"], {"starts": [-1, 1], "ends": [-(2**63), 100], "axes": [3, 1],
                                       "steps": [-2, 2]}, "slice"),
        NqNode("Pad", ["s"], ["p"], {"pads": [0, 1, 2, 0, 1, 0, 0, 3], "value": 7}, "pad"),
        NqNode("ResizeNearest", ["p"], ["r"], {"scales": [1.0, 1.0, 1.5, 0.75],
                                               "coordinate_transformation_mode": "half_pixel",
                                               "nearest_mode": "round_prefer_ceil"}, "resize"),
        NqNode("Unsqueeze", ["r"], ["u"], {"axes": [0, -1]}, "unsq"),
        NqNode("Squeeze", ["u"], ["y"], {"axes": [0, 5]}, "sq"),
    ]
    tensors = [NqTensor("t", "uint8", (256,), None, table), _u8("l", ()), _u8("s", ()), _u8("p", ()),
               _u8("r", ()), _u8("u", ()), _u8("y", ())]
    xq, y = _run(nodes, tensors, "y")
    want = naive.lut(xq, table)
    want = naive.slice_(want, [-1, 1], [-(2**63), 100], [3, 1], [-2, 2])
    want = naive.pad(want, [0, 1, 2, 0, 1, 0, 0, 3], 7)
    want = naive.resize_nearest(want, "half_pixel", "round_prefer_ceil", scales=[1.0, 1.0, 1.5, 0.75])
    assert y.dtype == np.uint8 and np.array_equal(y, want)


def test_qmul_and_signed_qadd_within_one_step():
    s_k, z_k = 0.0213, 30
    k = np.random.default_rng(2).integers(0, 256, (4, 1, 1), dtype=np.uint8)
    s_m, z_m, s_y, z_y = 0.0613, 100, 0.0937, 128            # no exact ties (spec 8)
    m0, n = qmath.quantize_multiplier(S_X * s_k / s_m)
    ma, mb, sh = qmath.quantize_multiplier_pair(-S_X / s_y, s_m / s_y)      # y = m - x
    nodes = [NqNode("QMul", ["xq", "k"], ["m"], {"multiplier": m0, "shift": n, "act_min": 0,
                                                 "act_max": 255}, "mul"),
             NqNode("QAdd", ["xq", "m"], ["y"], {"multiplier_a": ma, "multiplier_b": mb, "shift": sh,
                                                 "act_min": 90, "act_max": 200}, "sub")]
    tensors = [_u8("k", (4, 1, 1), s_k, z_k, k), _u8("m", (), s_m, z_m), _u8("y", (), s_y, z_y)]
    xq, y = _run(nodes, tensors, "y")
    mq = naive.qmul(xq, k, Z_X, z_k, m0, n, z_m, 0, 255)
    want = naive.qadd(xq, mq, Z_X, z_m, ma, mb, sh, z_y, 90, 200)
    env_m = simulate.run_all(_model(nodes, tensors, "y"), {"x": S_X * (xq.astype(np.float32) - Z_X)})["m"]
    assert np.abs(env_m.astype(int) - mq).max() <= 1
    diff = np.abs(y.astype(int) - want)
    assert diff.max() <= 2 and diff.mean() < 0.05                # one step per op, two ops
    assert np.unique(want).size > 30 and (want == 90).any() and (want == 200).any()
