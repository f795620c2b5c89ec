"""Simulated mode vs integer mode: at most one quantization step per requantizing op,
exact for the ops that do not requantize."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_builder import Builder

from nqrt.runtime import simulate
from nqrt.runtime.session import Session


def _single(op):
    b = Builder(41)
    x = b.quantize(b.input((2, 6, 9, 8), scale=3.0))
    if op == "QConv":
        y = b.conv(x, 7, (3, 3), [1, 2], [1, 1, 1, 0], group=1)
    elif op == "QConvDW":
        y = b.conv(x, 6, (3, 3), pads=[1, 1, 1, 1], group=6, per_channel=False)
    elif op == "QGemm":
        y = b.gemm(x, 11)
    elif op == "QAdd":
        y = b.add(x, b.quantize(b.input((6, 1, 8), scale=0.7)))
    elif op == "QAveragePool":
        y = b.avgpool(x, (3, 3), [2, 2], [1, 1, 1, 1], ceil_mode=1, count_include_pad=0)
    elif op == "QReduceMean":
        y = b.reducemean(x, [1], keepdims=1)
    elif op == "QConcat":
        y = b.concat([x, b.quantize(b.input((2, 3, 9, 8), scale=9.0))], axis=1)
    elif op == "MaxPool":
        y = b.maxpool(x, (3, 3), [2, 2], [1, 1, 1, 1], ceil_mode=1, act=(5, 250))
    elif op == "QClip":
        y = b.clip(x, 40, 200)
    elif op == "Reshape":
        y = b.reshape(x, [0, -1])
    elif op == "Transpose":
        y = b.transpose(x, [0, 3, 1, 2])
    b.output(b.dequantize(y))
    return b, y


@pytest.mark.parametrize("op,bound", [
    ("QConv", 1), ("QConvDW", 1), ("QGemm", 1), ("QAdd", 1), ("QAveragePool", 1),
    ("QReduceMean", 1), ("QConcat", 1),
    ("MaxPool", 0), ("QClip", 0), ("Reshape", 0), ("Transpose", 0),
])
def test_single_op_bound(op, bound):
    b, y = _single(op)
    m = b.model()
    feeds = {io.name: b.env[io.name] for io in m.graph_inputs}
    s, z = m.qparams(y)
    out = m.graph_outputs[0].name
    q_int = np.rint(Session(m).run(feeds)[out] / np.float32(s)).astype(np.int64) + z
    q_sim = simulate.run_all(m, feeds)[y].astype(np.int64)
    assert np.unique(q_sim).size > 8                       # not saturated / constant
    diff = np.abs(q_int - q_sim)
    assert diff.max() <= bound, f"max diff {diff.max()} at {np.argwhere(diff > bound)[:3]}"
    assert np.mean(diff) < 0.05
    sim_out = simulate.run(m, feeds)[out]
    assert sim_out.dtype == np.float32 and sim_out.shape == q_sim.shape


def test_whole_model_close():
    b = Builder(42)
    x = b.quantize(b.input((2, 3, 8, 8)))
    c = b.conv(x, 6, (3, 3), pads=[1, 1, 1, 1], relu=True)
    r = b.add(c, b.conv(c, 6, (1, 1)))
    g = b.reducemean(b.maxpool(r, (2, 2), [2, 2]), [2, 3], keepdims=0)
    b.output(b.softmax(b.dequantize(b.gemm(g, 4)), axis=1))
    m = b.model()
    feeds = {"in1": b.env["in1"]}
    a = Session(m).run(feeds)
    sim = Session(m, mode="simulate").run(feeds)
    for k in a:
        np.testing.assert_allclose(a[k], sim[k], atol=0.05)
        np.testing.assert_allclose(a[k].sum(axis=1), 1.0, rtol=1e-5)
