"""A YOLO-style detection head end to end: anchor points from Range / Expand over the feature
map's size (folded to constants), boxes = (anchors + offsets)·stride in pixels, class scores
= sigmoid, concatenated as the one graph output (YOLOv8's layout [N, 4 + classes, anchors]).  The
output Concat runs in float with each input on its own grid, so the scores keep their
resolution next to the pixel coordinates."""

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
