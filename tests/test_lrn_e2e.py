"""LRN end to end (a float op, Dequantize -> LRN -> Quantize): on the graph input, at a graph
output, and feeding two consumers; int8 and simulated runs against ONNX Runtime FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import nqrt

ort = pytest.importorskip("onnxruntime")

from graph._graph_helpers import Builder, ort_run  # noqa: E402


def _input_and_output():
    b = Builder()
    y = b.op("LRN", ["x"], size=3)
    y = b.op("Conv", [y, b.weight(4, 3, 3, 3)], pads=[1, 1, 1, 1])
    y = b.op("LRN", [y], size=5, alpha=0.5, beta=0.9, bias=1.5)
    return b.model([("x", ["N", 3, 6, 6])], [y]), (3, 6, 6)


def _two_consumers():
    b = Builder()
    z = b.op("LRN", [b.op("Conv", ["x", b.weight(6, 3, 1, 1)])], size=3)
    v = b.op("Add", [b.op("Conv", [z, b.weight(6, 6, 1, 1)]), z])
    return b.model([("x", ["N", 3, 5, 5])], [v, z]), (3, 5, 5)


@pytest.mark.parametrize("build", [_input_and_output, _two_consumers])
def test_lrn_model_int8_close_to_float(build, tmp_path):
    m, shape = build()
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    xs = np.random.default_rng(0).standard_normal((12,) + shape).astype(np.float32)
    nqrt.convert(str(src), str(tmp_path / "m.nq"), calibration=[{"x": xs[:8]}])
    refs = ort_run(m, {"x": xs[8:]})
    got = {mode: nqrt.load(str(tmp_path / "m.nq"), mode=mode).run({"x": xs[8:]})
           for mode in ("integer", "simulate")}
    assert sum(n.op == "LRN" for n in nqrt.load(str(tmp_path / "m.nq")).model.nodes) == \
        sum(n.op_type == "LRN" for n in m.graph.node)
    for k, (name, ref) in enumerate(zip(got["integer"], refs)):
        for mode in ("integer", "simulate"):
            y = got[mode][name]
            sqnr = 10 * np.log10((ref ** 2).sum() / ((y - ref) ** 2).sum())
            assert sqnr >= 30, f"{mode} output {name}: {sqnr:.1f} dB"
