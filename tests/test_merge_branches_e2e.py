"""A RepVGG / MobileOne-style model exported without re-parameterization, converted end to end:
the parallel branches become one integer conv per block (graph/passes/merge_parallel_convs.py),
the int8 result stays close to ONNX Runtime FP32, and `merge_branches=False` / `--keep-branches`
keeps the branches."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx

import nqrt
from e2e_helpers import assert_int8_matches_float, ops_of
from graph._graph_helpers import Builder


def _bn(b, x, c):
    return b.op("BatchNormalization", [x, b.weight(c, low=0.5, high=1.5), b.weight(c, low=-0.2, high=0.2),
                                       b.weight(c, low=-0.2, high=0.2), b.weight(c, low=0.5, high=1.5)])


def _branch(b, x, cin, cout, k, stride=1, group=1):
    w = b.weight(cout, cin // group, k, k)
    return _bn(b, b.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride],
                       pads=[k // 2] * 4, group=group), cout)


def _sum(b, terms):
    s = terms[0]
    for t in terms[1:]:
        s = b.op("Add", [s, t])
    return b.op("Relu", [s])


def repvgg_mobileone_model() -> onnx.ModelProto:
    b = Builder(seed=11)
    x = b.op("Relu", [_branch(b, "x", 3, 8, 3, stride=2)])                          # stem
    x = _sum(b, [_branch(b, x, 8, 8, 3), _branch(b, x, 8, 8, 1), _bn(b, x, 8)])        # RepVGG
    x = _sum(b, [_branch(b, x, 8, 16, 3, stride=2), _branch(b, x, 8, 16, 1, stride=2)])
    dw = [_branch(b, x, 16, 16, 3, group=16) for _ in range(2)] + [_branch(b, x, 16, 16, 1, group=16)]
    x = _sum(b, dw + [_bn(b, x, 16)])                                                  # MobileOne dw
    x = _sum(b, [_branch(b, x, 16, 16, 1) for _ in range(2)] + [_bn(b, x, 16)])        # MobileOne pw
    f = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    y = b.op("Gemm", [f, b.weight(10, 16), b.weight(10)], transB=1)
    return b.model([("x", ["N", 3, 16, 16])], [y])


def test_branches_merge_and_int8_stays_close(tmp_path):
    model = repvgg_mobileone_model()
    src = tmp_path / "rep.onnx"
    onnx.save(model, src)
    calib = {"x": np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)}
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    merged, kept = tmp_path / "merged.nq", tmp_path / "kept.nq"
    nqrt.convert(str(src), str(merged), calibration=calib)
    nqrt.convert(str(src), str(kept), calibration=calib, merge_branches=False)
    ops_m, ops_k = ops_of(str(merged)), ops_of(str(kept))
    conv = [op for op in set(ops_m) if "Conv" in op]
    # stem, RepVGG (3x3 + 1x1 merged; its BN of x stays a depthwise conv), the stride-2 block,
    # the depthwise block with its identity merged, the pointwise block (1x1s merged, identity kept)
    assert conv and sum(ops_m.count(op) for op in conv) == 7
    assert sum(ops_k.count(op) for op in conv) == 13          # 1 + 3 + 2 + 4 + 3 branches
    adds = [op for op in set(ops_m) if "Add" in op]
    assert adds and sum(ops_m.count(op) for op in adds) == 2 and sum(ops_k.count(op) for op in adds) == 8
    assert_int8_matches_float(str(merged), model, feeds, min_db=30.0)
    assert_int8_matches_float(str(kept), model, feeds, min_db=30.0)

    cli = tmp_path / "cli.nq"
    np.savez(tmp_path / "calib.npz", **calib)
    proc = subprocess.run([sys.executable, "-m", "nqrt.cli", "convert", str(src), "-o", str(cli),
                           "--calib", str(tmp_path / "calib.npz"), "--keep-branches"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ops_of(str(cli)) == ops_k
