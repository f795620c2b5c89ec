"""ONNX Pad in reflect / edge / wrap mode (style-transfer nets' ReflectionPad2d, TResNet's
anti-aliasing): the float reference against ONNX Runtime, and the integer PadBorder op
(formats/nq-v1.md 4.13) end to end: int8 equals simulate, on 1 and 2 threads, close to
ONNX Runtime FP32; pads too large for the input's length are a typed error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import nqrt
from e2e_helpers import assert_int8_matches_float, ops_of
from graph._graph_helpers import Builder, assert_matches_ort


def _pad(b, x, pads, mode):
    return b.op("Pad", [x, b.const(np.array(pads, np.int64), np.int64)], mode=mode)


@pytest.mark.parametrize("mode,pads", [("reflect", [0, 0, 2, 1, 0, 0, 1, 3]),
                                       ("edge", [0, 1, 3, 0, 0, 0, 1, 4]),
                                       ("wrap", [0, 0, 4, 2, 0, 0, 1, 5])])
def test_reference_matches_onnxruntime(mode, pads):
    b = Builder(opset=19)
    y = _pad(b, "x", pads, mode)
    assert_matches_ort(b.model([("x", ["N", 3, 5, 6])], [y]), {"x": (3, 5, 6)})


def padded_convnet() -> onnx.ModelProto:
    """Conv -> reflect pad -> Conv -> edge pad -> wrap pad -> Conv, NCHW, dynamic H and W."""
    b = Builder(opset=19, seed=3)
    x = b.op("Relu", [b.op("Conv", ["x", b.weight(8, 3, 3, 3)], pads=[1, 1, 1, 1])])
    y = b.op("Conv", [_pad(b, x, [0, 0, 2, 1, 0, 0, 1, 2], "reflect"), b.weight(8, 8, 3, 3)])
    y = _pad(b, _pad(b, y, [0, 0, 1, 3, 0, 0, 2, 0], "edge"), [0, 0, 2, 2, 0, 0, 3, 3], "wrap")
    return b.model([("x", ["N", 3, "H", "W"])], [b.op("Conv", [y, b.weight(4, 8, 3, 3)])])


def test_int8_pad_border_end_to_end(tmp_path):
    model = padded_convnet()
    src, out = tmp_path / "pad.onnx", tmp_path / "pad.nq"
    onnx.save(model, src)
    calib = {"x": np.random.default_rng(0).standard_normal((16, 3, 12, 11)).astype(np.float32)}
    nqrt.convert(str(src), str(out), calibration=calib)
    assert ops_of(str(out)).count("PadBorder") == 3 and "Pad" not in ops_of(str(out))
    for shape in ((2, 3, 12, 11), (1, 3, 7, 16)):          # the dims are symbolic: any size fits
        feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        assert_int8_matches_float(str(out), model, feeds, min_db=30.0)


def test_reflect_pads_longer_than_the_input_are_an_input_error(tmp_path):
    """reflect needs pads <= length - 1 on each padded axis: an input whose (symbolic) H
    is too short for the model's pads is refused when the session plans for it."""
    model = padded_convnet()
    src, out = tmp_path / "pad.onnx", tmp_path / "pad.nq"
    onnx.save(model, src)
    calib = {"x": np.random.default_rng(0).standard_normal((4, 3, 9, 9)).astype(np.float32)}
    nqrt.convert(str(src), str(out), calibration=calib)
    sess = nqrt.load(str(out))
    x = np.random.default_rng(2).standard_normal((1, 3, 2, 9)).astype(np.float32)   # H = 2 < 3
    with pytest.raises(nqrt.InputError, match=r"reflect pads \(2, 1\) need pads <= length - 1 = 1"):
        sess.run({"x": x})
