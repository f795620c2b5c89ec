"""The extension ops of the format (QLut, QMul, Slice, Squeeze, Unsqueeze, Pad, PadBorder,
ResizeNearest, ResizeLinear, ResizeCubic, QMatMul, Expand, QSoftmax; constant and signed QAdd operands): round trip, and one hostile document per
validation rule of spec section 5 with its exact message."""

from __future__ import annotations

import numpy as np
import pytest

from nqrt import FormatError
from nqrt.format import schema
from nqrt.format.model import NqIO, NqModel, NqNode, NqTensor, Quant
from nqrt.format.reader import read_nq
from nqrt.format.writer import dumps_nq

from conftest import F32, doc_of, file_of


def _act(name, shape, scale=0.05, zp=128):
    return NqTensor(name, "uint8", tuple(shape), Quant([F32(scale)], [zp]))


def new_ops_model() -> NqModel:
    """Every op of schema.PENDING_OPS plus QAdd with a constant and a negative multiplier."""
    t: list[NqTensor] = [NqTensor("x", "float32", ("N", 4, 6, 6)), _act("xq", ("N", 4, 6, 6))]
    n: list[NqNode] = [NqNode("Quantize", ["x"], ["xq"], {}, "quant_in")]
    act = dict(act_min=0, act_max=255)
    t += [NqTensor("lut.table", "uint8", (256,), None, np.arange(256, dtype=np.uint8)[::-1].copy()),
          _act("sig", ("N", 4, 6, 6), 1 / 255, 0)]
    n.append(NqNode("QLut", ["xq", "lut.table"], ["sig"], {}, "lut"))
    t.append(_act("gate", ("N", 4, 1, 1), 1 / 255, 0))
    n.append(NqNode("Slice", ["sig"], ["gate"],
                    dict(starts=[0, -1], ends=[1, -(2**63)], axes=[2, -1], steps=[1, -1]), "slice"))
    t.append(_act("se", ("N", 4, 6, 6), 0.05, 100))
    n.append(NqNode("QMul", ["xq", "gate"], ["se"], dict(multiplier=2**30, shift=31, **act), "mul"))
    t += [NqTensor("k", "uint8", (4, 1, 1), Quant([F32(0.1)], [3]), np.array([1, 2, 3, 250], np.uint8).reshape(4, 1, 1)),
          _act("scaled", ("N", 4, 6, 6), 0.05, 100)]
    n.append(NqNode("QMul", ["se", "k"], ["scaled"], dict(multiplier=2**30, shift=30, **act), "mul_const"))
    t.append(_act("diff", ("N", 4, 6, 6), 0.1, 128))
    n.append(NqNode("QAdd", ["scaled", "xq"], ["diff"],
                    dict(multiplier_a=2**30, multiplier_b=-(2**30), shift=31, **act), "sub"))
    t.append(_act("plus", ("N", 4, 6, 6), 0.1, 128))
    n.append(NqNode("QAdd", ["diff", "k"], ["plus"],
                    dict(multiplier_a=2**30, multiplier_b=2**30, shift=30, **act), "add_const"))
    t.append(_act("padded", ("N", 4, 7, 8), 0.1, 128))
    n.append(NqNode("Pad", ["plus"], ["padded"], dict(pads=[0, 0, 1, 0, 0, 0, 0, 2], value=128), "pad"))
    t.append(_act("bord", ("N", 4, 9, 10), 0.1, 128))
    n.append(NqNode("PadBorder", ["padded"], ["bord"], dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
                    "padb"))
    t.append(_act("up", ("N", 4, 18, 20), 0.1, 128))
    n.append(NqNode("ResizeNearest", ["bord"], ["up"],
                    dict(scales=[1.0, 1.0, 2.0, 2.0], coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor"), "resize"))
    t.append(_act("down", ("N", 4, 5, 5), 0.1, 128))
    n.append(NqNode("ResizeNearest", ["up"], ["down"],
                    dict(sizes=[1, 4, 5, 5], coordinate_transformation_mode="half_pixel",
                         nearest_mode="round_prefer_floor"), "resize_sizes"))
    t.append(_act("lin", ("N", 4, 5, 5), 0.1, 128))
    n.append(NqNode("ResizeLinear", ["down"], ["lin"],
                    dict(scales=[1.0, 1.0, 1.0, 1.0], coordinate_transformation_mode="half_pixel"),
                    "resize_linear"))
    t.append(_act("cub", ("N", 4, 5, 5), 0.1, 128))
    n.append(NqNode("ResizeCubic", ["down"], ["cub"],
                    dict(sizes=[1, 4, 5, 5], coordinate_transformation_mode="half_pixel",
                         cubic_coeff_a=-0.75, exclude_outside=0, multiplier=2**22, shift=44),
                    "resize_cubic"))
    t.append(_act("u", ("N", 4, 1, 5, 5), 0.1, 128))
    n.append(NqNode("Unsqueeze", ["cub"], ["u"], dict(axes=[-3]), "unsqueeze"))
    t.append(_act("s", ("N", 4, 5, 5), 0.1, 128))
    n.append(NqNode("Squeeze", ["u"], ["s"], dict(axes=[2]), "squeeze"))
    t.append(_act("mm", ("N", 4, 5, 5), 0.2, 120))          # (5x5)·(5x5) per batch and channel
    n.append(NqNode("QMatMul", ["s", "lin"], ["mm"], dict(multiplier=2**30, shift=33, **act), "matmul"))
    t += [NqTensor("tok", "uint8", (1, 4, 1, 5), Quant([F32(0.2)], [120]), np.arange(20, dtype=np.uint8).reshape(1, 4, 1, 5)),
          _act("toks", ("N", 4, 1, 5), 0.2, 120), _act("mm2", ("N", 4, 6, 5), 0.2, 120)]
    n.append(NqNode("Expand", ["tok", "mm"], ["toks"], dict(shape=[-1, 4, 1, 5]), "expand"))
    n.append(NqNode("QConcat", ["toks", "mm"], ["mm2"], dict(axis=2, multipliers=[2**30] * 2, shifts=[30] * 2), "cat_tok"))
    table = np.rint(2.0 ** 24 * np.exp(-0.2 * np.arange(256))).astype(np.int32)
    t += [NqTensor("sm.table", "int32", (256,), None, table), _act("prob", ("N", 4, 6, 5), 1 / 255, 0)]
    n.append(NqNode("QSoftmax", ["mm2", "sm.table"], ["prob"],
                    dict(axis=-1, numerator=255 * 2**47, shift=47, **act), "softmax"))
    t += [_act("rmax", ("N", 1, 6, 5), 1 / 255, 0), _act("rmin", ("N", 6, 5), 1 / 255, 0)]
    n.append(NqNode("ReduceMax", ["prob"], ["rmax"], dict(axes=[1], keepdims=1, **act), "rmax"))
    n.append(NqNode("ReduceMin", ["rmax"], ["rmin"], dict(axes=[-3], keepdims=0, **act), "rmin"))
    t += [NqTensor("div.table", "uint8", (65536,), None, (np.arange(65536) % 251).astype(np.uint8)),
          _act("ratio", ("N", 6, 5), 1 / 255, 0)]
    n.append(NqNode("QLut2", ["rmin", "k5", "div.table"], ["ratio"], {}, "div"))
    t.append(NqTensor("k5", "uint8", (5,), Quant([F32(0.1)], [3]), np.array([4, 5, 6, 7, 8], np.uint8)))
    t.append(NqTensor("y", "float32", ("N", 6, 5)))
    n.append(NqNode("Dequantize", ["ratio"], ["y"], {}, "dequant"))
    return NqModel([NqIO("x", ("N", 4, 6, 6))], [NqIO("y", ("N", 6, 5))],
                   {x.name: x for x in t}, n, {})


VALID = dumps_nq(new_ops_model())


def T(doc, name):
    return next(t for t in doc["tensors"] if t["name"] == name)


def N(doc, name):
    return next(n for n in doc["nodes"] if n["name"] == name)


def test_sample_uses_every_new_op_and_round_trips():
    m = new_ops_model()
    assert set(schema.PENDING_OPS) <= {n.op for n in m.nodes}
    assert set(schema.ALL_OPS) == set(schema.OPS) | set(schema.PENDING_OPS)
    back = read_nq(VALID)
    assert back.nodes == m.nodes
    assert np.array_equal(back.tensors["k"].data, m.tensors["k"].data)
    assert dumps_nq(back) == VALID


CASES = [
    # QLut2
    ("lut2-table-shape", lambda d: T(d, "div.table").update(shape=[256], data=bytes(256)),
     "node 'div' (QLut2): table 'div.table' has shape [256], expected [65536]"),
    ("lut2-table-quant", lambda d: T(d, "div.table").update(quant={"scale": [1.0], "zero_point": [0], "axis": None}),
     "node 'div' (QLut2): table 'div.table' holds output codes and must have quant nil"),
    ("lut2-broadcast", lambda d: T(d, "k5").update(shape=[4], data=bytes(4)),
     "node 'div' (QLut2): shapes ['N', 6, 5] and [4] do not broadcast"),
    # QLut
    ("lut-table-shape", lambda d: T(d, "lut.table").update(shape=[255], data=bytes(255)),
     "node 'lut' (QLut): table 'lut.table' has shape [255], expected [256]"),
    ("lut-table-quant", lambda d: T(d, "lut.table").update(quant={"scale": [1.0], "zero_point": [0], "axis": None}),
     "node 'lut' (QLut): table 'lut.table' holds output codes and must have quant nil"),
    ("lut-table-runtime", lambda d: N(d, "lut")["inputs"].__setitem__(1, "xq"),
     "node 'lut' (QLut): input table 'xq' must be a constant tensor"),
    ("lut-table-dtype", lambda d: T(d, "lut.table").update(dtype="int8", data=bytes(256)),
     "node 'lut' (QLut): input table 'lut.table' has dtype int8, expected uint8"),
    ("lut-attr", lambda d: N(d, "lut")["attrs"].update(act_min=0),
     "node 'lut' (QLut): unknown attribute 'act_min'"),
    # QMul / QAdd operands and multipliers
    ("mul-multiplier-negative", lambda d: N(d, "mul")["attrs"].update(multiplier=-1),
     "node 'mul' (QMul): attribute multiplier = -1 is out of range [0, 2147483647]"),
    ("mul-shift", lambda d: N(d, "mul")["attrs"].update(shift=63),
     "node 'mul' (QMul): attribute shift = 63 is out of range [1, 62]"),
    ("mul-missing-shift", lambda d: N(d, "mul")["attrs"].pop("shift"),
     "node 'mul' (QMul): missing attribute 'shift'"),
    ("mul-act", lambda d: N(d, "mul")["attrs"].update(act_min=9, act_max=8),
     "node 'mul' (QMul): act_min 9 > act_max 8"),
    ("mul-broadcast", lambda d: T(d, "gate")["shape"].__setitem__(1, 3),
     "node 'mul' (QMul): shapes ['N', 4, 6, 6] and ['N', 3, 1, 1] do not broadcast"),
    ("mul-const-no-quant", lambda d: T(d, "k").update(quant=None),
     "node 'mul_const' (QMul): constant operand 'k' needs per-tensor quant"),
    ("mul-const-per-channel", lambda d: T(d, "k").update(quant={"scale": [0.5] * 4, "zero_point": [0] * 4, "axis": 0}),
     "node 'mul_const' (QMul): constant operand 'k' needs per-tensor quant"),
    ("mul-const-first", lambda d: N(d, "mul_const").update(inputs=["k", "se"]),
     "node 'mul_const' (QMul): input a 'k' must be a run-time tensor, got a constant"),
    ("add-const-no-quant", lambda d: T(d, "k").update(quant=None),
     "node 'mul_const' (QMul): constant operand 'k' needs per-tensor quant"),
    ("add-multiplier-low", lambda d: N(d, "sub")["attrs"].update(multiplier_b=-(2**31)),
     "node 'sub' (QAdd): attribute multiplier_b = -2147483648 is out of range [-2147483647, 2147483647]"),
    ("add-const-dtype", lambda d: T(d, "k").update(dtype="int32", data=bytes(16),
                                                   quant={"scale": [1.0], "zero_point": [0], "axis": None}),
     "node 'mul_const' (QMul): input b 'k' has dtype int32, expected uint8"),
    # Slice
    ("slice-lengths", lambda d: N(d, "slice")["attrs"].update(steps=[1]),
     "node 'slice' (Slice): attribute steps has 1 values, expected 2"),
    ("slice-step-zero", lambda d: N(d, "slice")["attrs"].update(steps=[1, 0]),
     "node 'slice' (Slice): attribute steps [1, 0] contains 0"),
    ("slice-axes-repeat", lambda d: N(d, "slice")["attrs"].update(axes=[3, -1]),
     "node 'slice' (Slice): attribute axes [3, -1] repeats an axis"),
    ("slice-axis-range", lambda d: N(d, "slice")["attrs"].update(axes=[2, 4]),
     "node 'slice' (Slice): attribute axes = 4 is out of range [-4, 3] for rank 4"),
    ("slice-rank", lambda d: T(d, "gate")["shape"].pop(),
     "node 'slice' (Slice): output 'gate' has rank 3, expected 4"),
    ("slice-quant", lambda d: T(d, "gate")["quant"].update(zero_point=[1]),
     "node 'slice' (Slice): output 'gate' must have the input's quant (same scale and zero point)"),
    # Squeeze / Unsqueeze
    ("squeeze-not-one", lambda d: N(d, "squeeze")["attrs"].update(axes=[3]),
     "node 'squeeze' (Squeeze): cannot squeeze axis 3 of size 5"),
    ("squeeze-repeat", lambda d: N(d, "squeeze")["attrs"].update(axes=[2, -3]),
     "node 'squeeze' (Squeeze): attribute axes [2, -3] repeats an axis"),
    ("squeeze-rank", lambda d: N(d, "squeeze")["attrs"].update(axes=[]),
     "node 'squeeze' (Squeeze): output 's' has rank 4, expected 5"),
    ("unsqueeze-range", lambda d: N(d, "unsqueeze")["attrs"].update(axes=[5]),
     "node 'unsqueeze' (Unsqueeze): attribute axes = 5 is out of range [-5, 4] for rank 5"),
    ("unsqueeze-repeat", lambda d: N(d, "unsqueeze")["attrs"].update(axes=[2, -4]),
     "node 'unsqueeze' (Unsqueeze): attribute axes [2, -4] repeats an axis"),
    ("unsqueeze-quant", lambda d: T(d, "u")["quant"].update(scale=[0.5]),
     "node 'unsqueeze' (Unsqueeze): output 'u' must have the input's quant"),
    # Pad
    ("pad-length", lambda d: N(d, "pad")["attrs"].update(pads=[0, 0, 1, 0]),
     "node 'pad' (Pad): attribute pads has 4 values, expected 8"),
    ("pad-negative", lambda d: N(d, "pad")["attrs"].update(pads=[0, 0, -1, 0, 0, 0, 0, 2]),
     "node 'pad' (Pad): attribute pads[2] = -1 is out of range [0, 2147483647]"),
    ("pad-value", lambda d: N(d, "pad")["attrs"].update(value=256),
     "node 'pad' (Pad): attribute value = 256 is out of range [0, 255]"),
    ("pad-value-float", lambda d: N(d, "pad")["attrs"].update(value=0.0),
     "node 'pad' (Pad): attribute value must be an int, got float"),
    # PadBorder
    ("padb-mode", lambda d: N(d, "padb")["attrs"].update(mode="symmetric"),
     "node 'padb' (PadBorder): attribute mode = 'symmetric' is not one of reflect, edge, wrap"),
    ("padb-reflect-too-far", lambda d: N(d, "padb")["attrs"].update(pads=[0, 0, 7, 1, 0, 0, 1, 1]),
     "node 'padb' (PadBorder): axis 2: reflect pads (7, 1) need pads <= length - 1 = 6"),
    ("padb-wrap-too-far", lambda d: N(d, "padb")["attrs"].update(pads=[0, 0, 1, 9, 0, 0, 1, 1], mode="wrap"),
     "node 'padb' (PadBorder): axis 3: wrap pads (9, 1) exceed the length 8"),
    ("padb-length", lambda d: N(d, "padb")["attrs"].update(pads=[1, 1]),
     "node 'padb' (PadBorder): attribute pads has 2 values, expected 8"),
    ("padb-missing-mode", lambda d: N(d, "padb")["attrs"].pop("mode"),
     "node 'padb' (PadBorder): missing attribute 'mode'"),
    ("padb-quant", lambda d: T(d, "bord")["quant"].update(zero_point=[0]),
     "node 'padb' (PadBorder): output 'bord' must have the input's quant"),
    # ResizeLinear
    ("resize-linear-nc", lambda d: N(d, "resize_linear")["attrs"].update(scales=[1.0, 2.0, 2.0, 2.0]),
     "node 'resize_linear' (ResizeLinear): scales[0] and scales[1] (N, C) must be 1, got [1.0, 2.0]"),
    ("resize-linear-sizes-c", lambda d: N(d, "resize_linear")["attrs"].pop("scales")
     and N(d, "resize_linear")["attrs"].update(sizes=[1, 3, 5, 5]),
     "node 'resize_linear' (ResizeLinear): sizes[0] and sizes[1] (N, C) must equal x's, got [1, 3]"),
    ("resize-linear-mode", lambda d: N(d, "resize_linear")["attrs"].update(
        coordinate_transformation_mode="tf_half_pixel_for_nn"),
     "node 'resize_linear' (ResizeLinear): attribute coordinate_transformation_mode = "
     "'tf_half_pixel_for_nn' is not one of asymmetric, half_pixel, align_corners, pytorch_half_pixel"),
    ("resize-linear-both", lambda d: N(d, "resize_linear")["attrs"].update(sizes=[1, 4, 5, 5]),
     "node 'resize_linear' (ResizeLinear): exactly one of the attributes scales and sizes must be present"),
    # ResizeCubic: ResizeLinear's rules, and cubic_coeff_a / exclude_outside
    ("resize-cubic-a", lambda d: N(d, "resize_cubic")["attrs"].update(cubic_coeff_a=0.5),
     "node 'resize_cubic' (ResizeCubic): attribute cubic_coeff_a = 0.5 must lie in [-2.0, 0.0]"),
    ("resize-cubic-a-nan", lambda d: N(d, "resize_cubic")["attrs"].update(cubic_coeff_a=float("nan")),
     "node 'resize_cubic' (ResizeCubic): attribute cubic_coeff_a = nan must lie in [-2.0, 0.0]"),
    ("resize-cubic-exclude", lambda d: N(d, "resize_cubic")["attrs"].update(exclude_outside=2),
     "node 'resize_cubic' (ResizeCubic): attribute exclude_outside = 2 is out of range [0, 1]"),
    ("resize-cubic-missing-a", lambda d: N(d, "resize_cubic")["attrs"].pop("cubic_coeff_a"),
     "node 'resize_cubic' (ResizeCubic): missing attribute 'cubic_coeff_a'"),
    ("resize-cubic-multiplier", lambda d: N(d, "resize_cubic")["attrs"].update(multiplier=2**23),
     "node 'resize_cubic' (ResizeCubic): attribute multiplier = 8388608 must be below 2^23"),
    ("resize-cubic-shift", lambda d: N(d, "resize_cubic")["attrs"].update(shift=0),
     "node 'resize_cubic' (ResizeCubic): attribute shift = 0 is out of range [1, 62]"),
    ("resize-cubic-nc", lambda d: N(d, "resize_cubic")["attrs"].update(sizes=[1, 3, 5, 5]),
     "node 'resize_cubic' (ResizeCubic): sizes[0] and sizes[1] (N, C) must equal x's, got [1, 3]"),
    # ResizeNearest
    ("resize-both", lambda d: N(d, "resize")["attrs"].update(sizes=[1, 4, 14, 16]),
     "node 'resize' (ResizeNearest): exactly one of the attributes scales and sizes must be present"),
    ("resize-neither", lambda d: N(d, "resize")["attrs"].pop("scales"),
     "node 'resize' (ResizeNearest): exactly one of the attributes scales and sizes must be present"),
    ("resize-scales-len", lambda d: N(d, "resize")["attrs"].update(scales=[2.0, 2.0]),
     "node 'resize' (ResizeNearest): attribute scales has 2 values, expected 4"),
    ("resize-scale-zero", lambda d: N(d, "resize")["attrs"].update(scales=[1.0, 1.0, 0.0, 2.0]),
     "node 'resize' (ResizeNearest): attribute scales[2] = 0.0 must be a finite float32 value > 0"),
    ("resize-scale-inf", lambda d: N(d, "resize")["attrs"].update(scales=[1.0, 1.0, 2.0, float("inf")]),
     "node 'resize' (ResizeNearest): attribute scales[3] = inf must be a finite float32 value > 0"),
    ("resize-scale-float64", lambda d: N(d, "resize")["attrs"].update(scales=[1.0, 1.0, 2.0, 0.1]),
     "node 'resize' (ResizeNearest): attribute scales[3] = 0.1 must be a finite float32 value > 0"),
    ("resize-scale-int", lambda d: N(d, "resize")["attrs"].update(scales=[1, 1, 2, 2]),
     "node 'resize' (ResizeNearest): attribute scales[0] must be a float, got int"),
    ("resize-size-zero", lambda d: N(d, "resize_sizes")["attrs"].update(sizes=[1, 4, 0, 5]),
     "node 'resize_sizes' (ResizeNearest): attribute sizes[2] = 0 is out of range [1, 2147483647]"),
    ("resize-coord", lambda d: N(d, "resize")["attrs"].update(coordinate_transformation_mode="tf_crop_and_resize"),
     "node 'resize' (ResizeNearest): attribute coordinate_transformation_mode = 'tf_crop_and_resize' is not one of"),
    ("resize-nearest", lambda d: N(d, "resize")["attrs"].update(nearest_mode="linear"),
     "node 'resize' (ResizeNearest): attribute nearest_mode = 'linear' is not one of"),
    ("resize-mode-missing", lambda d: N(d, "resize")["attrs"].pop("nearest_mode"),
     "node 'resize' (ResizeNearest): missing attribute 'nearest_mode'"),
    ("resize-quant", lambda d: T(d, "up")["quant"].update(zero_point=[0]),
     "node 'resize' (ResizeNearest): output 'up' must have the input's quant"),
    # QSoftmax
    ("softmax-table-shape", lambda d: T(d, "sm.table").update(shape=[255], data=bytes(4 * 255)),
     "node 'softmax' (QSoftmax): table 'sm.table' has shape [255], expected [256]"),
    ("softmax-table-dtype", lambda d: T(d, "sm.table").update(dtype="uint8", data=bytes(256)),
     "node 'softmax' (QSoftmax): input table 'sm.table' has dtype uint8, expected int32"),
    ("softmax-table-zero", lambda d: T(d, "sm.table").update(data=bytes(4 * 256)),
     "node 'softmax' (QSoftmax): table 'sm.table' needs entries >= 0 and entry 0 >= 1"),
    ("softmax-table-negative", lambda d: T(d, "sm.table").update(data=b"\x01\0\0\0" + b"\xff" * 1020),
     "node 'softmax' (QSoftmax): table 'sm.table' needs entries >= 0 and entry 0 >= 1"),
    ("softmax-table-runtime", lambda d: N(d, "softmax")["inputs"].__setitem__(1, "mm2"),
     "node 'softmax' (QSoftmax): input table 'mm2' must be a constant tensor"),
    ("softmax-table-quant", lambda d: T(d, "sm.table").update(quant={"scale": [1.0], "zero_point": [0], "axis": None}),
     "node 'softmax' (QSoftmax): table 'sm.table' holds fixed-point exponentials and must have quant nil"),
    ("softmax-numerator-zero", lambda d: N(d, "softmax")["attrs"].update(numerator=0),
     "node 'softmax' (QSoftmax): attribute numerator = 0 is out of range [1, 4611686018427387903]"),
    ("softmax-numerator-big", lambda d: N(d, "softmax")["attrs"].update(numerator=2**62),
     "node 'softmax' (QSoftmax): attribute numerator = 4611686018427387904 is out of range"),
    ("softmax-shift", lambda d: N(d, "softmax")["attrs"].update(shift=0),
     "node 'softmax' (QSoftmax): attribute shift = 0 is out of range [1, 62]"),
    ("softmax-axis", lambda d: N(d, "softmax")["attrs"].update(axis=4),
     "node 'softmax' (QSoftmax): attribute axis = 4 is out of range [-4, 3] for rank 4"),
    ("softmax-act", lambda d: N(d, "softmax")["attrs"].update(act_min=200, act_max=100),
     "node 'softmax' (QSoftmax): act_min 200 > act_max 100"),
    ("softmax-rank", lambda d: T(d, "prob")["shape"].pop(),
     "node 'softmax' (QSoftmax): output 'prob' has rank 3, expected 4"),
    # ReduceMax / ReduceMin
    ("rmax-axes-empty", lambda d: N(d, "rmax")["attrs"].update(axes=[]),
     "node 'rmax' (ReduceMax): attribute axes is empty"),
    ("rmax-axes-repeat", lambda d: N(d, "rmax")["attrs"].update(axes=[1, -3]),
     "node 'rmax' (ReduceMax): attribute axes [1, -3] repeats an axis"),
    ("rmax-axis-range", lambda d: N(d, "rmax")["attrs"].update(axes=[4]),
     "node 'rmax' (ReduceMax): attribute axes = 4 is out of range [-4, 3] for rank 4"),
    ("rmax-rank", lambda d: N(d, "rmax")["attrs"].update(keepdims=0),
     "node 'rmax' (ReduceMax): output 'rmax' has rank 4, expected 3"),
    ("rmax-quant", lambda d: T(d, "rmax")["quant"].update(zero_point=[3]),
     "node 'rmax' (ReduceMax): output 'rmax' must have the input's quant"),
    ("rmin-keepdims", lambda d: N(d, "rmin")["attrs"].update(keepdims=2),
     "node 'rmin' (ReduceMin): attribute keepdims = 2 is out of range [0, 1]"),
    ("rmin-act", lambda d: N(d, "rmin")["attrs"].update(act_min=9, act_max=8),
     "node 'rmin' (ReduceMin): act_min 9 > act_max 8"),
]


@pytest.mark.parametrize("mutate, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_new_op_document_is_rejected_with_its_message(mutate, message):
    doc = doc_of(VALID)
    mutate(doc)
    with pytest.raises(FormatError) as info:
        read_nq(file_of(doc))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_unmutated_new_op_document_reads():
    assert read_nq(file_of(doc_of(VALID))).nodes == new_ops_model().nodes
