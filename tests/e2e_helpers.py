"""Shared steps of the end-to-end tests: convert an ONNX model with nqrt, then check the
integer and simulated runs against ONNX Runtime FP32."""

from __future__ import annotations

import numpy as np
import onnx

import nqrt
from graph._graph_helpers import ort_run


def convert(tmp_path, model: onnx.ModelProto, calibration) -> str:
    """Save `model` and convert it; returns the .nq path."""
    src, out = tmp_path / "m.onnx", tmp_path / "m.nq"
    onnx.save(model, src)
    nqrt.convert(str(src), str(out), calibration=calibration)
    return str(out)


def ops_of(nq: str) -> list[str]:
    return [n.op for n in nqrt.load(nq).model.nodes]


def sqnr_db(ref: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10((ref ** 2).sum() / ((y - ref) ** 2).sum()))


def assert_int8_matches_float(nq: str, model: onnx.ModelProto, feeds: dict, min_db: float = 30.0):
    """Integer and simulated mode each within min_db SQNR of ONNX Runtime FP32 on the model's
    one output, identical to each other and on 1 thread; returns the integer output."""
    ref = ort_run(model, feeds)[0]
    got = {mode: nqrt.load(nq, mode=mode).run(feeds) for mode in ("integer", "simulate")}
    (name,) = got["integer"]
    for mode in ("integer", "simulate"):
        y = got[mode][name]
        assert y.shape == ref.shape
        db = sqnr_db(ref, y)
        assert db >= min_db, f"{mode}: {db:.1f} dB"
    assert np.array_equal(got["integer"][name], got["simulate"][name])
    one = nqrt.load(nq, threads=1).run(feeds)[name]
    assert np.array_equal(one, got["integer"][name])
    return got["integer"][name]
