"""The nine structure models shipped inside the `onnx` package, end to end.

Each either converts and runs in int8 (output shape and values checked against ONNX Runtime
FP32), or stops with an UnsupportedOpError that names exactly the missing operator and its nodes.
Their weights are constant-filled (ConstantOfShape), so the outputs are close to uniform; the
check is that the integer model reproduces the float output within quantization noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import nqrt

ort = pytest.importorskip("onnxruntime")

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
# Operators nqrt has no kernel for, per model (everything else must convert).
EXPECTED_UNSUPPORTED: dict = {}      # (the three with LRN convert since LRN runs as a float op)
MODELS = sorted(p.stem for p in LIGHT.glob("*.onnx"))


def test_all_nine_present():
    assert len(MODELS) == 9


def _input(model: onnx.ModelProto):
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    return inp.name, [d.dim_value for d in inp.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", MODELS)
def test_light_model_converts_and_runs_or_names_missing_op(name, tmp_path):
    path = LIGHT / f"{name}.onnx"
    model = onnx.load(path)
    input_name, shape = _input(model)
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    out = tmp_path / f"{name}.nq"

    if name in EXPECTED_UNSUPPORTED:
        with pytest.raises(nqrt.UnsupportedOpError) as e:
            nqrt.convert(str(path), str(out), calibration=[{input_name: x}])
        assert set(e.value.ops) == EXPECTED_UNSUPPORTED[name]
        lrn_nodes = [n for n in model.graph.node if n.op_type in EXPECTED_UNSUPPORTED[name]]
        assert len(e.value.ops["LRN"]) == len(lrn_nodes) == 2
        assert "LRN" in str(e.value)
        assert not out.exists()
        return

    nqrt.convert(str(path), str(out), calibration=[{input_name: x}])
    sess = nqrt.load(str(out))
    got = sess.run({input_name: x})
    so = ort.SessionOptions()
    so.intra_op_num_threads = min(2, os.cpu_count() or 1)
    ref = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {input_name: x})
    (out_name, y), = got.items()
    assert out_name == model.graph.output[0].name
    assert y.shape == ref[0].shape and np.all(np.isfinite(y))
    # within a few output quantization steps of FP32 (the softmax outputs are ~1e-3)
    assert np.max(np.abs(y - ref[0])) <= 0.05 * np.max(np.abs(ref[0])) + 1e-6
