"""DepthToSpace (DCR and CRD: PyTorch's PixelShuffle exports CRD) and SpaceToDepth against ONNX
Runtime FP32, imported (reference executor by the spec) and lowered to Reshape / Transpose /
Reshape; malformed block sizes are one-line errors."""

from __future__ import annotations

import pytest

from _graph_helpers import Builder, assert_matches_ort, op_counts
from nqrt.errors import FormatError
from nqrt.graph.onnx_import import load_onnx
from nqrt.graph.passes import optimize

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("b", [2, 3])
def test_depth_to_space_matches_ort(mode, b):
    bl = Builder(opset=13)
    y = bl.op("Conv", ["x", bl.weight(2 * b * b, 3, 3, 3)], pads=[1, 1, 1, 1])
    y = bl.op("DepthToSpace", [y], blocksize=b, mode=mode)
    y = bl.op("Relu", [y])
    g = assert_matches_ort(bl.model([("x", ["N", 3, 5, 4])], [y]), {"x": (3, 5, 4)})
    assert op_counts(g) == {"Conv": 1, "Reshape": 2, "Transpose": 1}     # the Relu is the Conv's act
    (conv,) = [n for n in g.nodes if n.op == "Conv"]
    assert conv.attrs["act"] == (0.0, float("inf"))


def test_space_to_depth_matches_ort():
    bl = Builder(opset=13)
    y = bl.op("SpaceToDepth", ["x"], blocksize=2)
    y = bl.op("Conv", [y, bl.weight(4, 12, 1, 1)])
    g = assert_matches_ort(bl.model([("x", ["N", 3, 6, 4])], [y]), {"x": (3, 6, 4)})
    assert op_counts(g) == {"Conv": 1, "Reshape": 2, "Transpose": 1}


@pytest.mark.parametrize("op,shape,msg", [("DepthToSpace", (3, 4, 4), "not divisible by blocksize"),
                                          ("SpaceToDepth", (3, 5, 4), "not divisible by blocksize")])
def test_bad_blocksize_is_one_line_error(op, shape, msg):
    bl = Builder(opset=13)
    y = bl.op(op, ["x"], blocksize=2)
    with pytest.raises(FormatError, match=msg) as info:
        optimize(load_onnx(bl.model([("x", ["N", *shape])], [y])))
    assert "\n" not in str(info.value)
