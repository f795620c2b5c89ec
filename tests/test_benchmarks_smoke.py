"""Smoke test of the benchmark harness (benchmarks/): runs it on the digits MLP with 2 repeats and
checks the printed tables have the expected rows and columns.  No timing assertions: the numbers
are noise at this size.  An nqrt stage that is not available must show up as n/a cells plus a
"nqrt: not available (...)" line, never as a crash."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_kernels  # noqa: E402
import bench_models  # noqa: E402
import common  # noqa: E402


def _is_number(cell: str) -> bool:
    try:
        float(cell.rstrip("x"))
        return True
    except ValueError:
        return False


def test_table_printer_roundtrip():
    text = common.format_table(["model", "a ms", "ratio"], [["m1", "1.00", "0.50x"], ["long name", "n/a", "n/a"]])
    cols, rows = common.parse_table(text)
    assert cols == ["model", "a ms", "ratio"]
    assert rows == [["m1", "1.00", "0.50x"], ["long name", "n/a", "n/a"]]
    assert len({len(line) for line in text.splitlines()}) == 1  # aligned


def test_time_interleaved_records_errors_and_samples():
    calls = []

    def boom():
        raise RuntimeError("kaput")

    t = common.time_interleaved({"a": lambda: calls.append(1), "b": boom}, repeats=4, warmup=1, rounds=2)
    assert len(t["a"].samples) == 4 and t["a"].ok and t["a"].min <= t["a"].median
    assert not t["b"].ok and "kaput" in t["b"].error


def test_bench_models_digits_mlp(tmp_path):
    lines = []
    bench_models.run(["digits_mlp"], [1, 8], threads=1, repeats=2, warmup=1, cache_dir=tmp_path,
                     echo=lambda s: lines.append(str(s)))
    out = "\n".join(lines)
    cols, rows = common.parse_table(out, 0)
    assert cols == bench_models.COLUMNS
    assert [r[:2] for r in rows] == [["digits_mlp", "1"], ["digits_mlp", "8"]]
    idx = {c: i for i, c in enumerate(cols)}
    for r in rows:
        # the ORT peers are always there
        assert _is_number(r[idx["ORT FP32 ms"]]) and _is_number(r[idx["ORT int8 ms"]])
        assert _is_number(r[idx["SQNR ORT-int8 dB"]])
        # nqrt: either measured, or visibly reported as not available
        if not _is_number(r[idx["nqrt int8 ms"]]):
            assert "nqrt: not available (" in out
        else:
            assert _is_number(r[idx["nqrt/ORT-int8"]]) and _is_number(r[idx["ORT-FP32/nqrt"]])
            assert _is_number(r[idx["SQNR nqrt dB"]])
    min_cols, min_rows = common.parse_table(out, 1)
    assert min_cols == bench_models.MIN_COLUMNS and len(min_rows) == 2


def test_bench_models_unknown_model_degrades(tmp_path):
    lines = []
    res = bench_models.bench_model("no_such_model", [1], 1, 1, 1, tmp_path, None, echo=lines.append)
    assert res.rows == [["no_such_model", "1"] + ["n/a"] * (len(bench_models.COLUMNS) - 2)]
    assert any("not available" in n for n in res.notes)


def test_bench_kernels_small_gemm_conv_and_matmul(tmp_path):
    lines = []
    out = bench_kernels.run(1, 2, 1, tmp_path, echo=lambda s: lines.append(str(s)),
                            gemm_shapes=[(2, 64, 32)], conv_cases=[("dw3x3 128", 1, 128, 128)],
                            matmul_cases=[("attn", 2, 5, 8, 6)])
    text = "\n".join(lines)
    cols, rows = common.parse_table(text, 0)
    assert cols[:2] == ["GEMM MxKxN", "MMAC"] and rows[0][0] == "2x64x32"
    idx = {c: i for i, c in enumerate(cols)}
    for peer in ("ORT MatMulInteger", "ORT FP32", "numpy FP32"):
        assert _is_number(rows[0][idx[peer]])
    assert _is_number(rows[0][idx["nqrt int8 layer"]])
    cols, rows = common.parse_table(text, 2)
    assert cols[0] == "conv 56x56" and rows[0][0] == "dw3x3 128 b1"
    idx = {c: i for i, c in enumerate(cols)}
    for col in ("nqrt int8", "nqrt int8 layer", "layer/ORT FP32"):
        assert _is_number(rows[0][idx[col]]), col
    cols, rows = common.parse_table(text, 4)
    assert cols[0] == "MatMul act x act" and rows[0][0] == "attn 2x5x8x6"
    idx = {c: i for i, c in enumerate(cols)}
    for col in ("nqrt int8", "nqrt int8 layer", "ORT MatMulInteger", "ORT FP32", "layer/ORT MatMulInteger"):
        assert _is_number(rows[0][idx[col]]), col
    assert set(out) == {"gemm", "conv", "matmul"}


def test_latency_conditions_tool(tmp_path):
    """tools/latency_conditions.py end to end on the bundled digits MLP with one busy process
    beside it: one row per configuration, a min / median / p90 triple per gap in order (the
    tbb row may say n/a where the tbb package is not installed)."""
    import subprocess

    import numpy as np

    import nqrt

    examples = Path(nqrt.__file__).parent / "examples"
    calib = np.load(examples / "digits_calib_flat.npz")
    out = tmp_path / "mlp.nq"
    nqrt.convert(str(examples / "digits_mlp.onnx"), str(out), {k: calib[k] for k in calib.files})
    tool = Path(__file__).resolve().parent.parent / "tools" / "latency_conditions.py"
    proc = subprocess.run([sys.executable, str(tool), str(out), "--onnx",
                           str(examples / "digits_mlp.onnx"), "--calls", "3", "--gaps", "0,0.02",
                           "--threads", "1", "--load", "1"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "1 busy processes beside" in proc.stdout.splitlines()[0]
    rows = [ln for ln in proc.stdout.splitlines()[2:] if ln.strip()]
    assert [r[:32].strip() for r in rows] == [
        "nqrt (default: OpenMP, pinned)", "nqrt, NQRT_PIN_WORKERS=0", "nqrt, OMP_PROC_BIND=spread",
        "nqrt, OMP_WAIT_POLICY=PASSIVE", "nqrt, threading layer tbb", "ONNX Runtime"]
    for r in rows:
        if r[32:].split() == ["n/a", "n/a"]:
            assert r.startswith("nqrt, threading layer tbb"), r
            continue
        cells = list(map(float, r[32:].replace("/", " ").split()))
        assert len(cells) == 6, r
        for lo, med, p90 in (cells[:3], cells[3:]):
            assert 0 < lo <= med <= p90, r
