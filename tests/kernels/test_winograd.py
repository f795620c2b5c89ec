"""Winograd F(2x2, 3x3) QConv (kernels/winograd.py, avx2 path) bit for bit against the naive
direct convolution (tests/naive.py): with and without the plan-time requantize table, at
the accumulator bounds the module docstring proves, for 1 and 2 threads; and through the
planner, which picks it for 3x3 stride-1 convolutions (NQRT_WINOGRAD=0 turns it off, with
the same outputs)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from kernels._util import assert_same, dot_std, requant_params, with_threads
from naive import out_size, qconv
from nqrt.kernels import cpu
from nqrt.kernels.winograd import (WINO_MAX_C, pack_winograd_weights, transform_weights,
                                   winograd_conv_u8_avx2, winograd_eligible,
                                   winograd_scratch_size, with_winograd_table)

pytestmark = pytest.mark.skipif("avx2" not in cpu.available_paths(),
                                reason="the Winograd kernel runs on the avx2 path")

# N, C, H, W, M, (pt, pl, pb, pr)[, (dh, dw)[, group]]
CASES = {
    "resnet_like": (1, 16, 9, 7, 12, (1, 1, 1, 1)),
    "asym_pad_odd": (2, 5, 6, 8, 19, (0, 2, 1, 0)),
    "tiny_map": (1, 3, 2, 3, 3, (1, 1, 1, 1)),
    "one_pixel": (2, 4, 1, 1, 5, (1, 1, 1, 1)),
    "no_pad": (1, 8, 7, 6, 16, (0, 0, 0, 0)),
    "wide_pad": (1, 6, 4, 5, 7, (3, 2, 3, 3)),          # rows of outputs that read only padding
    "batch3_partial_panel": (3, 17, 11, 10, 40, (1, 1, 1, 1)),
    "c1": (1, 1, 6, 6, 16, (1, 1, 1, 1)),
    "many_channels": (1, 130, 5, 6, 33, (1, 1, 1, 1)),   # C not a multiple of 4, several blocks
    "many_tiles": (2, 8, 30, 26, 24, (1, 1, 1, 1)),      # several tile blocks per worker
    # dilated (DeepLab / FCN): each residue class mod d is tiled on its own; odd sizes leave
    # a class's last tile row or column partly or wholly outside the map
    "dilation2": (1, 8, 13, 11, 12, (2, 2, 2, 2), (2, 2)),
    "dilation3x1_batch2": (2, 5, 17, 19, 19, (3, 1, 3, 1), (3, 1)),
    "dilation6_small_map": (1, 32, 9, 10, 24, (6, 6, 6, 6), (6, 6)),
    # groups: each its own Winograd convolution (channel offsets in x, y and the table)
    "group2": (1, 10, 7, 9, 12, (1, 1, 1, 1), (1, 1), 2),
    "group3_partial_panels_batch2": (2, 9, 6, 5, 57, (1, 0, 1, 2), (1, 1), 3),
    "group2_dilated": (1, 16, 9, 8, 40, (2, 2, 2, 2), (2, 2), 2),
}


def _dil(case):
    return case[6] if len(case) > 6 else (1, 1)


def _group(case):
    return case[7] if len(case) > 7 else 1
ZPS = [(128, 128, "none"), (0, 100, "relu"), (255, 30, "relu6"), (17, 0, "none")]


def _make(case, z_x, z_y, act, seed):
    N, C, H, W, M, (pt, pl, pb, pr) = case[:6]
    dh, dw = _dil(case)
    rng = np.random.default_rng(seed)
    OH, OW = out_size(H, 3, 1, pt, pb, dh), out_size(W, 3, 1, pl, pr, dw)
    x = rng.integers(0, 256, (N, C, H, W), dtype=np.uint8)
    w = rng.integers(-127, 128, (M, C // _group(case), 3, 3)).astype(np.int8)
    bias = rng.integers(-20_000, 20_000, M).astype(np.int32)
    mult, shift = requant_params(M, dot_std(9 * C // _group(case)), rng)
    lo, hi = {"none": (0, 255), "relu": (z_y, 255), "relu6": (z_y, min(255, z_y + 60))}[act]
    return x, w, bias, mult, shift, lo, hi, (OH, OW)


def _run(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw, nthreads=2, table=True,
         table_zy=None, scratch_threads=None):
    N, C, H, W, M, (pt, pl, pb, pr) = case[:6]
    g = _group(case)
    wpack = pack_winograd_weights(w, g)
    if table:
        wpack = with_winograd_table(wpack, C, bias, mult, shift, z_y if table_zy is None else table_zy, g)
    y = np.full((N, *ohw, M), 77, np.uint8)
    scratch = np.zeros(winograd_scratch_size(C, M, scratch_threads or nthreads, g), np.uint8)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    with_threads(nthreads, winograd_conv_u8_avx2, xh, z_x, wpack, bias, mult, shift, z_y, lo, hi,
                 pt, pl, *_dil(case), g, y, scratch)
    return y.transpose(0, 3, 1, 2)


def _want(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw):
    pads = case[5]
    return qconv(x, z_x, w, bias, mult, shift, z_y, lo, hi, (1, 1), pads, _dil(case), _group(case), ohw)


@pytest.mark.parametrize("table", [True, False], ids=["table", "scalar"])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("zp", range(len(ZPS)))
def test_winograd_matches_direct_conv(name, zp, table):
    case = CASES[name]
    z_x, z_y, act = ZPS[zp]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, z_x, z_y, act, seed=zp)
    got = _run(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw, table=table)
    assert_same(got, _want(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw))


def test_outputs_not_vacuous_and_table_for_other_zero_point_is_not_used():
    case = CASES["batch3_partial_panel"]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, 128, 128, "none", seed=5)
    want = _want(case, x, 128, w, bias, mult, shift, 128, lo, hi, ohw)
    assert_same(_run(case, x, 128, w, bias, mult, shift, 128, lo, hi, ohw), want, lo, hi)
    # a table built for z_y = 3 must not be read by a call with z_y = 128
    assert_same(_run(case, x, 128, w, bias, mult, shift, 128, lo, hi, ohw, table_zy=3), want)


@pytest.mark.parametrize("name", ["resnet_like", "many_channels", "many_tiles", "dilation3x1_batch2",
                                  "group3_partial_panels_batch2"])
def test_winograd_thread_count_invariant(name):
    case = CASES[name]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, 3, 128, "none", seed=9)
    args = (case, x, 3, w, bias, mult, shift, 128, lo, hi, ohw)
    y1 = _run(*args, nthreads=1)
    assert np.array_equal(y1, _run(*args, nthreads=2))
    assert np.array_equal(y1, _run(*args, nthreads=2, scratch_threads=3))


@pytest.mark.parametrize("sign", [1, -1])
def test_accumulator_bounds_at_the_channel_limit(sign):
    """C = WINO_MAX_C with every |x − z_x| = 255 and |w| = 127 arranged so that the transformed
    products and the output transform's sums are as large as the docstring allows: the
    int32 GEMM accumulators and the wrapping int32 output transform stay exact."""
    C, M = WINO_MAX_C, 16
    case = (1, C, 4, 4, M, (1, 1, 1, 1))
    rng = np.random.default_rng(2)
    x = np.where(rng.random((1, C, 4, 4)) < 0.5, 0, 255).astype(np.uint8)
    x[:, :, 1:3, 1:3] = 255
    w = (sign * 127 * np.where(rng.random((M, C, 3, 3)) < 0.8, 1, -1)).astype(np.int8)
    w[:, :, 1, 1] = sign * 127
    bias = np.zeros(M, np.int32)
    mult, shift = requant_params(M, 9 * C * 255 * 127 / 4, rng)
    assert np.abs(transform_weights(w)).max() == 1143                 # the |U| bound is reached
    for z_x in (0, 255):
        want = _want(case, x, z_x, w, bias, mult, shift, 128, 0, 255, (4, 4))
        assert_same(_run(case, x, z_x, w, bias, mult, shift, 128, 0, 255, (4, 4)), want)


def test_eligibility():
    assert winograd_eligible(64, 64, 3, 3, 1, 1, 1, 1, 1)
    assert winograd_eligible(64, 64, 3, 3, 1, 1, 2, 4, 1)            # dilated
    assert winograd_eligible(WINO_MAX_C, 32, 3, 3, 1, 1, 1, 1, 1)
    assert not winograd_eligible(WINO_MAX_C + 1, 32, 3, 3, 1, 1, 1, 1, 1)
    assert winograd_eligible(28, 16, 3, 3, 1, 1, 1, 1, 1)
    assert winograd_eligible(24, 32, 3, 3, 1, 1, 1, 1, 1)           # fewer inputs, more outputs
    assert not winograd_eligible(27, 16, 3, 3, 1, 1, 1, 1, 1)         # narrow: the transforms
    assert not winograd_eligible(28, 15, 3, 3, 1, 1, 1, 1, 1)         # cost more than they save
    assert not winograd_eligible(24, 31, 3, 3, 1, 1, 1, 1, 1)
    assert not winograd_eligible(23, 64, 3, 3, 1, 1, 1, 1, 1)
    assert not winograd_eligible(3, 64, 3, 3, 1, 1, 1, 1, 1)
    for args in [(3, 3, 2, 2, 1, 1, 1), (3, 3, 1, 2, 1, 1, 1), (1, 3, 1, 1, 1, 1, 1), (5, 5, 1, 1, 1, 1, 1)]:
        assert not winograd_eligible(64, 64, *args)
    assert winograd_eligible(96, 64, 3, 3, 1, 1, 1, 1, 2)              # groups of 48 -> 32
    assert winograd_eligible(64, 32, 3, 3, 1, 1, 1, 1, 2)              # groups of 32 -> 16
    assert not winograd_eligible(48, 48, 3, 3, 1, 1, 1, 1, 2)          # groups of 24 -> 24
    assert not winograd_eligible(96, 24, 3, 3, 1, 1, 1, 1, 2)          # groups of 12 out
    assert not winograd_eligible(64, 64, 3, 3, 1, 1, 1, 1, 64)         # depthwise
    assert not winograd_eligible(100, 64, 3, 3, 1, 1, 1, 1, 3)         # 3 does not divide C


RESNET_BLOCK = """
import numpy as np, nqrt, sys
from onnx import TensorProto, helper, numpy_helper
rng = np.random.default_rng(0)
w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), f"w{len(inits)}")
inits = []
def conv(x, cin, cout, k, s, name, g=1):
    inits.append(w(cout, cin // g, k, k)); inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"b{name}"))
    return helper.make_node("Conv", [x, inits[-2].name, f"b{name}"], [name], pads=[k // 2] * 4, strides=[s, s], group=g)
nodes = [conv("x", 3, 48, 3, 1, "c1"), helper.make_node("Relu", ["c1"], ["r1"]), conv("r1", 48, 96, 3, 1, "c2"),
         conv("c2", 96, 64, 3, 1, "c3", g=2), conv("c3", 64, 32, 3, 2, "c4"), conv("c4", 32, 8, 1, 1, "y")]
g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 14, 14])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
nqrt.convert(m.SerializeToString(), sys.argv[1], calibration=[{"x": rng.standard_normal((8, 3, 14, 14)).astype(np.float32)}])
s = nqrt.load(sys.argv[1])
y = s.run({"x": np.random.default_rng(1).standard_normal((3, 3, 14, 14)).astype(np.float32)})["y"]
plan = next(iter(s._plans.values()))
np.save(sys.argv[2], y)
from nqrt.runtime import encoding as E
k = E.FIELDS[E.OP_CONV].index("wpack_len") + 1
print(s.winograd_convs, " ".join(str(int(row[k])) for row in plan.plan.code if int(row[0]) == E.OP_CONV))
"""


def test_planner_uses_winograd_and_outputs_equal_the_direct_path(tmp_path):
    """A model with three 3x3 stride-1 convs (the first with 3 input channels, the third with 2
    groups of 48 -> 32), a strided one and a 1x1 one, run in two processes (the choice is made
    at plan time): NQRT_WINOGRAD=0 and the default give the same bytes."""
    outs, packed = {}, {}
    for flag in ("0", "1"):
        env = dict(os.environ, NQRT_WINOGRAD=flag)
        r = subprocess.run([sys.executable, "-c", RESNET_BLOCK, str(tmp_path / f"m{flag}.nq"),
                            str(tmp_path / f"y{flag}.npy")], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        outs[flag] = np.load(tmp_path / f"y{flag}.npy")
        count, *sizes = [int(v) for v in r.stdout.split()]        # Session.winograd_convs, then
        packed[flag] = sizes                                       # packed weight bytes per conv
        assert count == (2 if flag == "1" else 0)
    assert np.array_equal(outs["0"], outs["1"])
    # the 3x3 stride-1 convs with 48 input channels (and groups of 48) are packed for
    # Winograd, the 3-channel one (too narrow to gain), the strided one and the 1x1 one are not
    differ = [a != b for a, b in zip(packed["0"], packed["1"])]
    assert differ == [False, True, True, False, False]
