"""End-to-end acceptance on models trained on real data (scikit-learn's handwritten digits).

For every bundled digits model: convert with its bundled calibration set, run the int8 model
on the held-out test set, and compare with
  * FP32 (ONNX Runtime): top-1 accuracy within 0.5 points;
  * ONNX Runtime's own static int8 quantization (QDQ, u8 activations, s8 per-channel weights,
    MinMax, same calibration data), measured in this same test: nqrt's output SQNR vs FP32
    must not be worse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nqrt

ort = pytest.importorskip("onnxruntime")
from onnxruntime import quantization as ortq  # noqa: E402

EXAMPLES = Path(nqrt.__file__).parent / "examples"


def _models():
    with open(EXAMPLES / "models.json") as f:
        return json.load(f)


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    noise = np.sum((reference - approx.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(np.sum(reference**2) / max(noise, 1e-30)))


def _npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


class _Reader(ortq.CalibrationDataReader):
    def __init__(self, name, data, batch=1):
        self._it = iter([{name: data[i:i + batch]} for i in range(0, len(data), batch)])

    def get_next(self):
        return next(self._it, None)


def _ort_int8(model_path: Path, input_name: str, calib: np.ndarray, tmp_path: Path) -> Path:
    out = tmp_path / (model_path.stem + ".ort_int8.onnx")
    ortq.quantize_static(
        str(model_path), str(out), _Reader(input_name, calib),
        quant_format=ortq.QuantFormat.QDQ, per_channel=True,
        activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8,
        calibrate_method=ortq.CalibrationMethod.MinMax,
    )
    return out


def _ort_run(path: Path, input_name: str, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {input_name: x})[0]


@pytest.mark.parametrize("entry", _models(), ids=lambda e: e["name"])
def test_digits_model_int8_accuracy_and_sqnr(entry, tmp_path):
    model_path = EXAMPLES / entry["file"]
    input_name = entry["input"]
    calib = _npz(EXAMPLES / entry["calib"])[input_name]
    test = _npz(EXAMPLES / entry["test"])
    x, labels = test[input_name], test["label"]

    fp32 = _ort_run(model_path, input_name, x)
    out_path = tmp_path / (model_path.stem + ".nq")
    nqrt.convert(str(model_path), str(out_path), calibration=str(EXAMPLES / entry["calib"]))
    sess = nqrt.load(str(out_path))
    int8 = sess.run({input_name: x})[entry["output"]]
    assert int8.shape == fp32.shape and int8.dtype == np.float32

    acc_fp32 = float(np.mean(fp32.argmax(1) == labels))
    acc_int8 = float(np.mean(int8.argmax(1) == labels))
    ort_int8 = _ort_run(_ort_int8(model_path, input_name, calib, tmp_path), input_name, x)
    ours, theirs = sqnr_db(fp32, int8), sqnr_db(fp32, ort_int8)
    print(f"{entry['name']}: acc fp32 {acc_fp32:.4f} int8 {acc_int8:.4f}; "
          f"SQNR nqrt {ours:.2f} dB, onnxruntime int8 {theirs:.2f} dB")

    assert acc_fp32 >= 0.95
    assert acc_int8 >= acc_fp32 - 0.005, (acc_fp32, acc_int8)
    assert ours >= theirs, f"nqrt SQNR {ours:.2f} dB < onnxruntime int8 {theirs:.2f} dB"
    # The int8 model must not be a copy of the float one: outputs differ, but only by
    # quantization noise (SQNR well above 20 dB).
    assert 20.0 < ours < 120.0


@pytest.mark.parametrize("entry", _models(), ids=lambda e: e["name"])
def test_float_reference_matches_onnxruntime_fp32(entry):
    """nqrt's float path (import + graph passes + numpy reference) agrees with ONNX Runtime FP32."""
    from nqrt.graph import reference
    from nqrt.graph.onnx_import import load_onnx
    from nqrt.graph.passes import optimize

    model_path = EXAMPLES / entry["file"]
    x = _npz(EXAMPLES / entry["test"])[entry["input"]][:64]
    expected = _ort_run(model_path, entry["input"], x)
    graph = load_onnx(str(model_path))
    for g in (graph, optimize(load_onnx(str(model_path)))):
        got = reference.run(g, {entry["input"]: x})[entry["output"]]
        rel = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
        assert rel <= 1e-4, rel
