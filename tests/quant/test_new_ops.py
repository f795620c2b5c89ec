"""Quantizers of the CNN extension ops: structure of the `.nq` graph they emit (op counts,
attributes, constants) on small ONNX models built here, and the QLut table formula."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nqrt import qmath
from nqrt.converter import build_model
from nqrt.errors import UnsupportedOpError
from nqrt.format.reader import read_nq
from nqrt.format.writer import dumps_nq
from nqrt.graph import reference
from nqrt.quant.elementwise import lut_table


class M:
    """A tiny ONNX model builder (float32 inputs with a symbolic batch dim)."""

    def __init__(self, opset=13):
        self.nodes, self.inits, self.opset, self.k = [], [], opset, 0

    def const(self, v, dtype=np.float32):
        self.k += 1
        self.inits.append(numpy_helper.from_array(np.asarray(v, dtype), f"k{self.k}"))
        return f"k{self.k}"

    def op(self, op, inputs, n_out=1, name=None, **attrs):
        self.k += 1
        outs = [f"{op.lower()}{self.k}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name or f"{op}{self.k}", **attrs))
        return outs[0] if n_out == 1 else outs

    def build(self, inputs, outputs, calib_scale=1.0, seed=0):
        g = helper.make_graph(self.nodes, "t", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                for n, s in inputs],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              initializer=self.inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8 if self.opset <= 15 else 10
        rng = np.random.default_rng(seed)
        calib = {n: (rng.standard_normal((8, *s[1:])) * calib_scale).astype(np.float32) for n, s in inputs}
        nq = build_model(model, calib)
        assert read_nq(dumps_nq(nq)).nodes == nq.nodes            # valid per the reader
        return nq


def ops(nq):
    return Counter(n.op for n in nq.nodes if n.op not in ("Quantize", "Dequantize"))


def node(nq, op):
    return next(n for n in nq.nodes if n.op == op)


def test_sigmoid_becomes_a_qlut_with_the_spec_table():
    m = M()
    y = m.op("Sigmoid", ["x"])
    nq = m.build([("x", ["N", 4, 3])], [y], calib_scale=3.0)
    assert ops(nq) == {"QLut": 1}
    lut = node(nq, "QLut")
    table = nq.tensor(lut.inputs[1])
    assert table.dtype == "uint8" and table.shape == (256,) and table.quant is None
    (s_x, z_x), (s_y, z_y) = nq.qparams(lut.inputs[0]), nq.qparams(lut.outputs[0])
    assert 0.99 / 255 < s_y < 1.01 / 255 and z_y == 0               # output range ~[0, 1]
    r = s_x * (np.arange(256) - z_x)
    want = np.clip(np.rint((1 / (1 + np.exp(-r))) / s_y) + z_y, 0, 255).astype(np.uint8)
    assert np.array_equal(table.data, want)
    assert np.all(np.diff(table.data.astype(int)) >= 0) and len(set(table.data)) > 100


def test_lut_table_nan_inf_and_clamp():
    f = lambda r: np.where(r < -1, np.nan, np.where(r > 1, np.inf, r))  # noqa: E731
    t = lut_table(f, 0.02, 128, 0.01, 100, 5, 250)
    assert t[0] == 100 and t[255] == 250 and t[128] == 100 and t[129] == 102


def test_swish_fuses_to_one_lut_and_hardswish_keeps_its_function():
    m = M(opset=14)
    s = m.op("Mul", ["x", m.op("Sigmoid", ["x"])])
    y = m.op("HardSwish", [s])
    nq = m.build([("x", ["N", 6])], [y], calib_scale=4.0)
    assert ops(nq) == {"QLut": 2}
    lut = nq.nodes[1]
    (s_x, z_x), (s_y, z_y) = nq.qparams(lut.inputs[0]), nq.qparams(lut.outputs[0])
    r = s_x * (np.arange(256) - z_x)
    swish = reference.UNARY["Swish"]({}, r)
    assert np.array_equal(nq.tensor(lut.inputs[1]).data, lut_table(lambda v: v / (1 + np.exp(-v)),
                                                                   s_x, z_x, s_y, z_y, 0, 255))
    assert np.allclose(swish, r / (1 + np.exp(-r)))


def test_se_block_mul_of_two_activations_is_qmul():
    """x · HardSigmoid(conv(relu(conv(GAP(x))))) broadcast over H, W."""
    m = M()
    rng = np.random.default_rng(1)
    gap = m.op("GlobalAveragePool", ["x"])
    h = m.op("Relu", [m.op("Conv", [gap, m.const(rng.normal(size=(2, 8, 1, 1))), m.const(np.zeros(2))])])
    g = m.op("HardSigmoid", [m.op("Conv", [h, m.const(rng.normal(size=(8, 2, 1, 1))), m.const(np.ones(8))])])
    y = m.op("Mul", ["x", g], name="se_mul")
    nq = m.build([("x", ["N", 8, 5, 5])], [y])
    assert ops(nq) == {"QReduceMean": 1, "QConv": 2, "QLut": 1, "QMul": 1}
    mul = node(nq, "QMul")
    assert mul.name == "se_mul" and nq.tensor(mul.inputs[1]).shape == ("N", 8, 1, 1)
    (s_a, _), (s_b, _), (s_y, z_y) = (nq.qparams(t) for t in (*mul.inputs, mul.outputs[0]))
    assert (mul.attrs["multiplier"], mul.attrs["shift"]) == qmath.quantize_multiplier(s_a * s_b / s_y)
    assert (mul.attrs["act_min"], mul.attrs["act_max"]) == (0, 255)


def test_sub_of_activations_and_constant_operands():
    m = M()
    c = np.linspace(-1, 2, 6).astype(np.float32)
    d = m.op("Sub", ["x", "w"], name="sub")                                  # QAdd, Mb < 0
    e = m.op("Sub", [m.const(c), d], name="c_minus")                         # QAdd, Ma < 0, b const
    f = m.op("Mul", [e, m.const(c + 3)], name="mul_c")                       # QMul, b const
    g = m.op("Div", [f, m.const(c + 3)], name="div_c")                       # QMul by 1/c
    y = m.op("Add", [m.const(np.float32(0.5)), g], name="add_scalar")        # QLut
    nq = m.build([("x", ["N", 6]), ("w", ["N", 6])], [y])
    by = {n.name: n for n in nq.nodes}
    assert ops(nq) == {"QAdd": 2, "QMul": 2, "QLut": 1}
    assert by["sub"].attrs["multiplier_a"] > 0 > by["sub"].attrs["multiplier_b"]
    cm = by["c_minus"]
    assert cm.attrs["multiplier_a"] < 0 < cm.attrs["multiplier_b"]
    k = nq.tensor(cm.inputs[1])
    assert k.dtype == "uint8" and k.data is not None and k.quant.axis is None and k.shape == (6,)
    s, z = nq.qparams(cm.inputs[1])
    assert np.allclose(s * (k.data.astype(np.float64) - z), c, atol=s / 2 + 1e-9)
    kd = nq.tensor(by["div_c"].inputs[1])
    sd, zd = nq.qparams(kd.name)
    assert np.allclose(sd * (kd.data.astype(np.float64) - zd), 1 / (c + 3), atol=sd / 2 + 1e-9)
    assert by["add_scalar"].op == "QLut"


def test_log_outside_its_domain_is_unsupported_with_a_reason():
    m = M()
    y = m.op("Log", ["x"], name="log")
    with pytest.raises(UnsupportedOpError, match=r"log: Log is not finite on the calibrated input range") as e:
        m.build([("x", ["N", 4])], [y])
    assert e.value.ops == {"Log": ["log"]}
    m = M()
    y = m.op("Sqrt", [m.op("Add", [m.op("Abs", ["x"]), m.const(np.float32(0.1))])])
    assert ops(m.build([("x", ["N", 4])], [y])) == {"QLut": 3}


def test_split_becomes_slices_and_other_movement_ops():
    m = M(opset=13)
    a, b, c = m.op("Split", ["x", m.const([2, 3, 3], np.int64)], n_out=3, axis=1, name="split")
    s = m.op("Slice", [b, m.const([-1], np.int64), m.const([-(2**63)], np.int64),
                       m.const([2], np.int64), m.const([-2], np.int64)], name="slice")
    p = m.op("Pad", [s, m.const([0, 0, 1, 0, 0, 0, 0, 2], np.int64)], name="pad")
    r = m.op("Resize", [p, "", m.const([1, 1, 2, 2], np.float32)], name="resize",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    u = m.op("Unsqueeze", [r, m.const([2], np.int64)], name="unsq")
    q = m.op("Squeeze", [u, m.const([2], np.int64)], name="sq")
    mp = m.op("GlobalMaxPool", [c], name="gmp")
    nq = m.build([("x", ["N", 8, 4, 4])], [q, mp, a])
    by = {n.name: n for n in nq.nodes}
    assert ops(nq) == {"Slice": 4, "Pad": 1, "ResizeNearest": 1, "Unsqueeze": 1, "Squeeze": 1,
                       "MaxPool": 1}
    assert [by[f"split/{i}"].attrs for i in range(3)] == [
        {"starts": [b0], "ends": [b0 + n], "axes": [1], "steps": [1]} for b0, n in ((0, 2), (2, 3), (5, 3))]
    assert by["slice"].attrs == {"starts": [-1], "ends": [-(2**63)], "axes": [2], "steps": [-2]}
    s_x, z_x = nq.qparams(by["pad"].inputs[0])
    assert by["pad"].attrs == {"pads": [0, 0, 1, 0, 0, 0, 0, 2], "value": z_x}
    assert by["resize"].attrs == {"scales": [1.0, 1.0, 2.0, 2.0], "coordinate_transformation_mode": "asymmetric",
                                  "nearest_mode": "floor"}
    assert by["gmp"].attrs["kernel_shape"] == [4, 4] and by["gmp"].attrs["pads"] == [0, 0, 0, 0]
    for n in nq.nodes:
        if n.op in ("Slice", "Pad", "ResizeNearest", "Squeeze", "Unsqueeze", "MaxPool"):
            assert nq.qparams(n.outputs[0]) == nq.qparams(n.inputs[0])


def test_pad_value_codes_and_upsample_modes():
    m = M()
    y = m.op("Pad", ["x", m.const([0, 1, 0, 1], np.int64), m.const(np.float32(0.5))], name="pad")
    nq = m.build([("x", ["N", 3])], [y])
    s, z = nq.qparams(node(nq, "Pad").inputs[0])
    assert node(nq, "Pad").attrs["value"] == int(np.rint(0.5 / s)) + z
    m = M()
    y = m.op("Pad", ["x", m.const([0, 1, 0, 1], np.int64), m.const(np.float32(1e6))], name="pad")
    nq = m.build([("x", ["N", 3])], [y])            # a value outside x's grid: x is regridded
    pad = node(nq, "Pad")
    s2, z2 = nq.qparams(pad.inputs[0])
    assert ops(nq)["QLut"] == 1 and node(nq, "QLut").outputs == pad.inputs
    assert abs(s2 * (pad.attrs["value"] - z2) - 1e6) <= s2 / 2
    m = M(opset=9)
    y = m.op("Upsample", ["x", m.const([1, 1, 2, 3], np.float32)], name="up")
    nq = m.build([("x", ["N", 2, 3, 3])], [y])
    assert node(nq, "ResizeNearest").attrs == {"scales": [1.0, 1.0, 2.0, 3.0], "nearest_mode": "floor",
                                               "coordinate_transformation_mode": "asymmetric"}
    m = M(opset=13)
    y = m.op("Resize", ["x", "", "", m.const([1, 2, 5, 2], np.int64)], name="rs")
    nq = m.build([("x", [1, 2, 3, 3])], [y])
    assert node(nq, "ResizeNearest").attrs == {"sizes": [1, 2, 5, 2], "nearest_mode": "round_prefer_floor",
                                               "coordinate_transformation_mode": "half_pixel"}


def test_identity_between_graph_input_and_output_is_a_copy():
    m = M()
    y = m.op("Identity", ["x"])
    nq = m.build([("x", ["N", 3])], [y])
    assert ops(nq) == {"QClip": 1} and node(nq, "QClip").attrs == {"act_min": 0, "act_max": 255}


def test_linear_resize_becomes_resizelinear_and_its_limits_are_named():
    m = M()
    m.op("Resize", ["x", "", m.const([1, 1, 2.0, 1.5])], mode="linear",
         coordinate_transformation_mode="pytorch_half_pixel", name="up")
    nq = m.build([("x", ["N", 3, 4, 6])], ["resize2_0"])
    assert ops(nq) == {"ResizeLinear": 1}
    r = node(nq, "ResizeLinear")
    assert r.attrs == {"coordinate_transformation_mode": "pytorch_half_pixel", "scales": [1.0, 1.0, 2.0, 1.5]}
    assert nq.qparams(r.inputs[0]) == nq.qparams(r.outputs[0])      # same grid (spec 4.17)
    for shape, scales, reason in ((["N", 3, 8], [1, 1, 2.0], "linear Resize of a tensor that is not 4-D"),
                                  (["N", 3, 4, 6], [1, 2.0, 2.0, 2.0], "linear Resize that scales N or C")):
        m = M()
        m.op("Resize", ["x", "", m.const(scales)], mode="linear", name="up")
        with pytest.raises(UnsupportedOpError, match=reason):
            m.build([("x", shape)], ["resize2_0"])
    m = M()
    m.op("Resize", ["x", "", m.const([1, 1, 2.0, 2.0])], mode="cubic", antialias=1, name="up")
    with pytest.raises(UnsupportedOpError, match="attribute antialias=1"):
        m.build([("x", ["N", 3, 4, 6])], ["resize2_0"])


def test_cubic_resize_becomes_resizecubic_and_its_limits_are_named():
    m = M()
    m.op("Resize", ["x", "", m.const([1, 1, 0.5, 1.5])], mode="cubic", cubic_coeff_a=-0.5,
         exclude_outside=1, coordinate_transformation_mode="align_corners", name="up")
    nq = m.build([("x", ["N", 3, 4, 6])], ["resize2_0"])
    assert ops(nq) == {"ResizeCubic": 1}
    r = node(nq, "ResizeCubic")
    m0, n = r.attrs.pop("multiplier"), r.attrs.pop("shift")
    assert r.attrs == {"coordinate_transformation_mode": "align_corners", "scales": [1.0, 1.0, 0.5, 1.5],
                       "cubic_coeff_a": -0.5, "exclude_outside": 1}
    # its own grid, from the calibrated output range; M = s_x / (s_y·2^22) with a 23-bit M0
    (s_x, _), (s_y, _) = nq.qparams(r.inputs[0]), nq.qparams(r.outputs[0])
    assert 2**22 <= m0 < 2**23 and m0 * 2.0**-n == pytest.approx(s_x / (s_y * 2**22), rel=2**-22)
    for shape, kw, reason in ((["N", 3, 4, 6], dict(cubic_coeff_a=0.5), r"cubic_coeff_a 0.5 outside \[-2.0, 0.0\]"),
                              (["N", 3, 8], {}, "cubic Resize of a tensor that is not 4-D"),
                              (["N", 3, 4, 6], dict(coordinate_transformation_mode="tf_half_pixel_for_nn"),
                               "cubic Resize with coordinate_transformation_mode tf_half_pixel_for_nn")):
        m = M()
        m.op("Resize", ["x", "", m.const([1, 1, 2.0][:len(shape) - 1] + [2.0])], mode="cubic", name="up", **kw)
        with pytest.raises(UnsupportedOpError, match=reason):
            m.build([("x", shape)], ["resize2_0"])
