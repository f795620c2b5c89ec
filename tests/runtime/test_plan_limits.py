"""Plan-time limits on what a file may ask the runtime to build: a Resize whose scales make an
axis longer than MAX_RESIZE_LENGTH, or any tensor of more than MAX_TENSOR_ELEMENTS elements,
is an InputError naming the node, raised before its tables or buffers are built, in the
integer and the simulated mode (a Resize by 10^6 used to spend minutes and gigabytes
building per-index tables)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nqrt.converter import build_model
from nqrt.errors import InputError
from nqrt.runtime import limits
from nqrt.runtime.session import Session


def _resize_model(mode):
    scales = numpy_helper.from_array(np.array([1, 1, 2.0, 2.0], np.float32), "sc")
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode=mode, name="up")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scales])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    calib = {"x": np.random.default_rng(0).standard_normal((4, 2, 6, 5)).astype(np.float32)}
    return build_model(m, calib)


@pytest.mark.parametrize("mode, op", [("nearest", "ResizeNearest"), ("linear", "ResizeLinear"),
                                      ("cubic", "ResizeCubic")])
def test_resize_beyond_the_limits_is_an_input_error_before_its_tables(mode, op):
    nq = _resize_model(mode)
    (r,) = [n for n in nq.nodes if n.op == op]
    x = {"x": np.zeros((1, 2, 6, 5), np.float32)}
    assert Session(nq).run(x)["y"].shape == (1, 2, 12, 10)          # the file as converted runs
    for scales, what in (([1.0, 1.0, 1e6, 1.0], "resizes axis 2 to 6000000, more than the runtime's limit"),
                         ([1.0, 1.0, 3e5, 3e5], "resizes axis 2 to 1800000")):
        r.attrs["scales"] = scales
        for mode_ in ("integer", "simulate"):
            t0 = time.perf_counter()
            with pytest.raises(InputError, match=f"node 'up' \\({op}\\): {what}"):
                Session(nq, mode=mode_).run(x)
            assert time.perf_counter() - t0 < 5
    # within the per-axis limit but too many elements in all
    r.attrs["scales"] = [1.0, 1.0, 1.7e5, 1.7e5]
    with pytest.raises(InputError, match="elements .* more than the runtime's limit"):
        Session(nq).run(x)


def test_element_limit_is_checked_for_every_tensor():
    with pytest.raises(InputError, match="tensor 't' would have 4294967296 elements"):
        limits.check_elements("t", (1 << 16, 1 << 16))
    limits.check_elements("t", (limits.MAX_TENSOR_ELEMENTS,))
