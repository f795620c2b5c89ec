"""YOLO-style detection heads end to end.  YOLOv8: anchor points from Range / Expand over the
feature map's size (folded to constants), boxes = (anchors + offsets)·stride in pixels, class
scores = sigmoid, concatenated as the one graph output ([N, 4 + classes, anchors]).  YOLOv5:
per scale, xy / wh in pixels and objectness + class scores concatenated on the last axis,
reshaped to [N, anchors, 5 + classes], then the scales concatenated.  YOLOX: per scale, box
regression, objectness and class scores concatenated on the channels, flattened over H·W,
the scales concatenated, then transposed to [N, anchors, 5 + classes].  The output Concats
run in float with each input on its own grid (the Reshapes and the Transpose are moved above
their Concats), so the scores keep their resolution next to the pixel coordinates."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import nqrt

ort = pytest.importorskip("onnxruntime")

from graph._graph_helpers import Builder, ort_run  # noqa: E402


def _head():
    b = Builder(opset=17)
    f = b.op("Relu", [b.op("Conv", ["x", b.weight(16, 3, 3, 3), b.weight(16)], pads=[1, 1, 1, 1],
                           strides=[2, 2])])
    box = b.op("Conv", [f, b.weight(2, 16, 1, 1), b.weight(2)])                 # [N, 2, 8, 8]
    cls = b.op("Sigmoid", [b.op("Conv", [f, b.weight(5, 16, 1, 1), b.weight(5)])])
    shp = b.op("Shape", [f])
    h = b.op("Cast", [b.op("Gather", [shp, b.const(2, np.int64)], axis=0)], to=1)
    w = b.op("Cast", [b.op("Gather", [shp, b.const(3, np.int64)], axis=0)], to=1)
    sy = b.op("Add", [b.op("Range", [b.const(0.0), h, b.const(1.0)]), b.const(0.5)])
    sx = b.op("Add", [b.op("Range", [b.const(0.0), w, b.const(1.0)]), b.const(0.5)])
    gy = b.op("Expand", [b.op("Unsqueeze", [sy, b.const([1], np.int64)]), b.const([8, 8], np.int64)])
    gx = b.op("Expand", [sx, b.const([8, 1], np.int64)])
    grid = b.op("Concat", [b.op("Unsqueeze", [gx, b.const([0], np.int64)]),
                           b.op("Unsqueeze", [gy, b.const([0], np.int64)])], axis=0)
    box = b.op("Mul", [b.op("Add", [box, grid]), b.const(np.float32(32.0))])      # pixels
    box = b.op("Reshape", [box, b.const([0, 2, -1], np.int64)])
    cls = b.op("Reshape", [cls, b.const([0, 5, -1], np.int64)])
    y = b.op("Concat", [box, cls], axis=1)                                        # [N, 7, 64]
    return b.model([("x", ["N", 3, 16, 16])], [y])


def test_detection_head_keeps_score_resolution(tmp_path):
    m = _head()
    onnx.save(m, tmp_path / "m.onnx")
    xs = np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32)
    nqrt.convert(str(tmp_path / "m.onnx"), str(tmp_path / "m.nq"), calibration=[{"x": xs[:8]}])
    ops = [n.op for n in nqrt.load(str(tmp_path / "m.nq")).model.nodes]
    assert "Concat" in ops and "QConcat" not in ops
    ref = ort_run(m, {"x": xs[8:]})[0]
    got = {mode: nqrt.load(str(tmp_path / "m.nq"), mode=mode).run({"x": xs[8:]})
           for mode in ("integer", "simulate")}
    (name,) = got["integer"]
    y = got["integer"][name]
    assert y.shape == ref.shape
    for part in (slice(0, 2), slice(2, 7)):        # boxes in pixels, scores in [0, 1]
        r, q = ref[:, part], y[:, part]
        sqnr = 10 * np.log10((r ** 2).sum() / ((q - r) ** 2).sum())
        assert sqnr >= 30, f"{part}: {sqnr:.1f} dB"
    assert np.array_equal(y, got["simulate"][name])


def _yolov5_head(nc=5, na=3):
    """Two scales of YOLOv5's Detect in inference mode, as exported (sigmoid, Split into
    xy / wh / conf, grid and anchor arithmetic, Concat on the last axis, Reshape, Concat)."""
    b = Builder(opset=17)
    f = b.op("Relu", [b.op("Conv", ["x", b.weight(16, 3, 3, 3), b.weight(16)], pads=[1, 1, 1, 1],
                           strides=[2, 2])])
    g = b.op("Relu", [b.op("Conv", [f, b.weight(16, 16, 3, 3), b.weight(16)], pads=[1, 1, 1, 1],
                           strides=[2, 2])])
    outs, no = [], 5 + nc
    for feat, s, stride in ((f, 16, 8.0), (g, 8, 16.0)):
        p = b.op("Conv", [feat, b.weight(na * no, 16, 1, 1), b.weight(na * no)])
        p = b.op("Transpose", [b.op("Reshape", [p, b.const([-1, na, no, s, s], np.int64)])],
                 perm=[0, 1, 3, 4, 2])                                          # [N, na, s, s, no]
        xy, wh, conf = b.op("Split", [b.op("Sigmoid", [p]), b.const([2, 2, 1 + nc], np.int64)],
                            n_out=3, axis=4)
        gy, gx = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
        grid = np.stack([gx, gy], -1).reshape(1, 1, s, s, 2).astype(np.float32) - 0.5
        anchor = (np.array([[10, 13], [16, 30], [33, 23]], np.float32) * stride / 8).reshape(1, na, 1, 1, 2)
        xy = b.op("Mul", [b.op("Add", [b.op("Mul", [xy, b.const(np.float32(2.0))]), b.const(grid)]),
                          b.const(np.float32(stride))])
        wh = b.op("Mul", [b.op("Pow", [b.op("Mul", [wh, b.const(np.float32(2.0))]), b.const(np.float32(2.0))]),
                          b.const(anchor)])
        cat = b.op("Concat", [xy, wh, conf], axis=4)
        outs.append(b.op("Reshape", [cat, b.const([-1, na * s * s, no], np.int64)]))
    return b.model([("x", ["N", 3, 32, 32])], [b.op("Concat", outs, axis=1)])


def _yolox_head(nc=5):
    b = Builder(opset=17)
    f = b.op("Relu", [b.op("Conv", ["x", b.weight(16, 3, 3, 3), b.weight(16)], pads=[1, 1, 1, 1],
                           strides=[2, 2])])
    g = b.op("Relu", [b.op("Conv", [f, b.weight(16, 16, 3, 3), b.weight(16)], pads=[1, 1, 1, 1],
                           strides=[2, 2])])
    levels = []
    for feat in (f, g):
        reg = b.op("Mul", [b.op("Conv", [feat, b.weight(4, 16, 1, 1), b.weight(4)]), b.const(np.float32(40.0))])
        obj = b.op("Sigmoid", [b.op("Conv", [feat, b.weight(1, 16, 1, 1), b.weight(1)])])
        cls = b.op("Sigmoid", [b.op("Conv", [feat, b.weight(nc, 16, 1, 1), b.weight(nc)])])
        cat = b.op("Concat", [reg, obj, cls], axis=1)                             # [N, 10, H, W]
        levels.append(b.op("Reshape", [cat, b.const([0, 5 + nc, -1], np.int64)]))  # flatten(2)
    y = b.op("Transpose", [b.op("Concat", levels, axis=2)], perm=[0, 2, 1])
    return b.model([("x", ["N", 3, 32, 32])], [y])


@pytest.mark.parametrize("build, shape", [(_yolov5_head, (4, 3 * 256 + 3 * 64, 10)),
                                          (_yolox_head, (4, 256 + 64, 10))])
def test_multi_scale_heads_keep_score_resolution(build, shape, tmp_path):
    m = build()
    onnx.save(m, tmp_path / "m.onnx")
    xs = np.random.default_rng(1).standard_normal((12, 3, 32, 32)).astype(np.float32)
    nqrt.convert(str(tmp_path / "m.onnx"), str(tmp_path / "m.nq"), calibration=[{"x": xs[:8]}])
    ops = [n.op for n in nqrt.load(str(tmp_path / "m.nq")).model.nodes]
    assert ops.count("Concat") == 3 and "QConcat" not in ops
    ref = ort_run(m, {"x": xs[8:]})[0]
    got = {mode: nqrt.load(str(tmp_path / "m.nq"), mode=mode).run({"x": xs[8:]})
           for mode in ("integer", "simulate")}
    (name,) = got["integer"]
    y = got["integer"][name]
    assert y.shape == ref.shape == shape
    for part in (slice(0, 4), slice(4, 10)):       # boxes in pixels, objectness + scores in [0, 1]
        r, q = ref[..., part], y[..., part]
        sqnr = 10 * np.log10((r ** 2).sum() / ((q - r) ** 2).sum())
        assert sqnr >= 30, f"{part}: {sqnr:.1f} dB"
    assert np.array_equal(y, got["simulate"][name])
    assert np.array_equal(y, nqrt.load(str(tmp_path / "m.nq"), threads=1).run({"x": xs[8:]})[name])
