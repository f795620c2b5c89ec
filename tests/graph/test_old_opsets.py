"""Models of opsets outside 9..21 are converted by ONNX's version converter before import
(onnx_import._to_supported_opset): the ONNX Model Zoo's "-7" / "-8" files up to 9, models of
newer opsets (what a newer exporter or onnx.helper writes) down to 21.

The zoo-style test models are the structure models shipped inside the `onnx` package (opset 9,
ConstantOfShape-filled weights) with random initializers listed as graph inputs (IR 3, as the
zoo's old files are) and converted *down* to opset 7 / 8 by the same converter: Sum, old
BatchNormalization, Dropout, Reshape-5, Softmax-1 and Gemm as those files have them.  The
imported graph must compute what ONNX Runtime computes on the old-opset file itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, version_converter

import nqrt
from nqrt import UnsupportedOpError
from nqrt.graph.onnx_import import load_onnx

from _graph_helpers import Builder, assert_matches_ort, ort_run, randomize_light

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _old(name: str, opset: int) -> onnx.ModelProto:
    m = randomize_light(onnx.load(LIGHT / f"{name}.onnx"))
    listed = {i.name for i in m.graph.input}
    for t in m.graph.initializer:               # IR 3: initializers are also graph inputs
        if t.name not in listed:
            m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    old = version_converter.convert_version(m, opset)
    assert old.opset_import[0].version == opset and old.ir_version == 3
    return old


def _input(m: onnx.ModelProto):
    inits = {t.name for t in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    return inp.name, tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)


@pytest.mark.parametrize("name,opset", [("light_resnet50", 7), ("light_squeezenet", 7),
                                        ("light_shufflenet", 8), ("light_inception_v2", 8)])
def test_old_opset_model_matches_ort(name, opset):
    m = _old(name, opset)
    assert load_onnx(m).opset == 9
    inp, shape = _input(m)
    assert_matches_ort(m, {inp: shape[1:]}, batches=(shape[0],), optimized=False)


def test_old_opset_model_converts_and_runs(tmp_path):
    """Through the public API: convert an opset-7 file, run it in int8: ORT FP32's top class."""
    m = _old("light_squeezenet", 7)
    src = tmp_path / "squeezenet-7.onnx"
    onnx.save(m, src)
    inp, shape = _input(m)
    rng = np.random.default_rng(0)
    xs = [rng.random(shape, dtype=np.float32) for _ in range(4)]
    nqrt.convert(str(src), str(tmp_path / "s.nq"), calibration=[{inp: x} for x in xs])
    for x in xs[:2]:
        (y,) = nqrt.load(str(tmp_path / "s.nq")).run({inp: x}).values()
        (ref,) = ort_run(m, {inp: x})
        assert y.shape == ref.shape
        # random weights give a peaked softmax; its peak moves by ~10-13 % in int8 here
        assert np.argmax(y) == np.argmax(ref)
        assert np.max(np.abs(y - ref)) <= 0.25 * np.max(ref)


def test_unsupported_op_named_before_upgrading():
    m = _old("light_bvlc_alexnet", 7)
    for n in m.graph.node:
        if n.op_type == "LRN":
            n.op_type = "Hardmax"         # no kernel in nqrt
            del n.attribute[:]
    with pytest.raises(UnsupportedOpError) as ei:
        load_onnx(m)
    assert set(ei.value.ops) == {"Hardmax"} and "\n" not in str(ei.value)


def test_old_opset_lrn_model_matches_ort():
    m = _old("light_bvlc_alexnet", 7)
    inp, shape = _input(m)
    assert_matches_ort(m, {inp: shape[1:]}, batches=(shape[0],), optimized=False)


def test_model_the_converter_cannot_upgrade_is_one_line_error():
    b = Builder(6)
    y = b.op("Dropout", ["x"], is_test=0)             # training-mode Dropout: no adapter
    m = b.model([("x", [1, 4, 6, 6])], [y], ir_version=3)
    with pytest.raises(UnsupportedOpError) as ei:
        load_onnx(m)
    msg = str(ei.value)
    assert "opset 6" in msg and "is_test" in msg and "\n" not in msg and ".h:" not in msg


@pytest.mark.parametrize("opset", [22, 23])
def test_newer_opset_model_is_converted_down_and_matches_ort(opset):
    b = Builder(opset)
    y = b.op("Conv", ["x", b.weight(8, 3, 3, 3)], pads=[1, 1, 1, 1])
    y = b.op("HardSwish", [y])
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("Reshape", [y, b.const([0, -1], np.int64)])
    y = b.op("Gemm", [y, b.weight(10, 8 * 4 * 4)], transB=1)
    m = b.model([("x", ["N", 3, 8, 8])], [y], ir_version=10)
    assert load_onnx(m).opset == 21
    assert_matches_ort(m, {"x": (3, 8, 8)}, batches=(1, 2))


def test_newer_opset_with_a_newer_operator_is_one_line_error():
    b = Builder(23)
    y = b.op("Relu", ["x"])
    y = b.op("RMSNormalization", [y, b.weight(8)])          # new in opset 23
    m = b.model([("x", [1, 4, 8])], [y], ir_version=10)
    with pytest.raises(UnsupportedOpError) as ei:
        load_onnx(m)
    assert "RMSNormalization" in str(ei.value) and "\n" not in str(ei.value)


def test_newer_attribute_the_converter_keeps_is_one_line_error():
    """Cast-28's round_mode survives the conversion to 21 (the converter keeps it); the
    importer then names it instead of ignoring it."""
    b = Builder(23)
    y = b.op("Relu", ["x"])
    y = b.op("Cast", [y], to=onnx.TensorProto.FLOAT, round_mode="up")
    m = b.model([("x", [1, 4])], [y], ir_version=10)
    with pytest.raises(UnsupportedOpError, match="round_mode") as ei:
        load_onnx(m)
    assert "\n" not in str(ei.value)
