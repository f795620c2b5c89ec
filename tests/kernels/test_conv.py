"""QConv kernels bit for bit vs tests/naive.py, on the portable path and every fast GEMM path
this host can run (NQRT_GEMM_PATH does not matter here: the path is explicit)."""

import numpy as np
import pytest

from nqrt.kernels import conv as K
from nqrt.kernels import cpu
from nqrt.kernels.conv import conv_scratch_size, pack_conv_weights
from nqrt.kernels import grouped, vnni
from nqrt.kernels.vnni import with_requant_table
from naive import out_size, qconv
from kernels._util import assert_same, dot_std, requant_params, with_threads

PATHS = list(cpu.available_paths())          # always "portable"; "avx2" / "vnni512" when runnable
KERNELS = {"portable": K.conv2d_u8, "avx2": K.conv2d_u8_avx2, "vnni512": K.conv2d_u8_vnni512}

# N, C, H, W, M, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw), group
CASES = {
    "3x3_pad1": (1, 8, 9, 7, 12, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "asym_pad": (2, 5, 6, 8, 6, 3, 2, (1, 2), (0, 2, 1, 0), (1, 1), 1),
    "stride_gt_kernel": (1, 4, 11, 10, 5, 2, 2, (3, 3), (0, 0, 0, 0), (1, 1), 1),
    "dilation": (1, 3, 10, 9, 4, 3, 3, (1, 1), (2, 1, 2, 1), (2, 3), 1),
    "group2": (1, 6, 7, 7, 10, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
    "group3_stride": (1, 9, 8, 7, 6, 2, 3, (2, 1), (1, 0, 0, 2), (1, 1), 3),
    "depthwise": (2, 16, 9, 9, 16, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 16),
    "depthwise_asym_dil": (1, 10, 8, 11, 10, 3, 5, (1, 2), (0, 2, 2, 1), (2, 1), 10),
    "depthwise_mult2": (1, 4, 6, 6, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4),
    "pointwise": (2, 24, 5, 7, 13, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "1x1_stride2": (1, 8, 9, 9, 6, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "1x1_pad": (1, 5, 4, 6, 7, 1, 1, (1, 1), (1, 0, 0, 1), (1, 1), 1),
    "conv1d": (1, 6, 1, 20, 7, 1, 5, (1, 2), (0, 2, 0, 1), (1, 1), 1),
    "c1_m1": (1, 1, 5, 5, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "stem_7x7": (1, 3, 15, 15, 8, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
    "kernel_gt_input": (1, 2, 2, 3, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "batch3_odd": (3, 7, 5, 9, 19, 3, 3, (1, 2), (1, 0, 2, 1), (1, 1), 1),
    "group2_1x1": (3, 8, 4, 5, 6, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 2),
    "conv1d_dil_group2": (2, 6, 1, 23, 10, 1, 3, (1, 1), (0, 3, 0, 0), (1, 2), 2),
    # im2col row runs (group 1, dilation 1: kw·C contiguous bytes) at the fixed-size copy's
    # bounds: 1 and 7 values (value by value), 8 and 16 values (one piece each), 32 (two
    # 16s), 33 (the piece loop)
    "row_run_1": (2, 1, 7, 6, 4, 3, 1, (1, 1), (1, 0, 1, 0), (1, 1), 1),
    "row_run_7": (1, 7, 6, 9, 5, 3, 1, (1, 1), (1, 0, 1, 0), (1, 1), 1),
    "row_run_8": (1, 2, 6, 9, 5, 3, 4, (1, 1), (1, 1, 1, 2), (1, 1), 1),
    "row_run_16": (1, 4, 6, 9, 5, 3, 4, (1, 2), (1, 1, 1, 2), (1, 1), 1),
    "row_run_32": (1, 8, 6, 9, 5, 3, 4, (1, 1), (0, 1, 1, 2), (1, 1), 1),
    "row_run_33": (1, 11, 6, 9, 5, 2, 3, (1, 1), (1, 1, 0, 1), (1, 1), 1),
    # fast path: K = 1440 -> several pixel chunks per thread; M = 40 -> a partial panel
    "chunks": (1, 160, 7, 9, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    # fast path: few pixels, many channels -> threads split the channel panels
    "deep_small": (1, 32, 4, 4, 96, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    # avx2 table epilogue and groups: 24 channels per group -> group 1's panels start at
    # channels 24 (16 columns) and 40 (8 columns, one vector); 20 per group -> group 1's
    # first panel starts at channel 20, inside a table block (the kernel must fall back)
    "group2_m24": (1, 8, 5, 6, 48, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 2),
    "group2_m20": (2, 8, 5, 6, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
}
ZPS = [(128, 128, "none"), (0, 100, "relu"), (255, 30, "relu6"), (17, 0, "none")]


def _make(case, z_x, z_y, act, seed, per_channel=True, w_range=(-127, 127)):
    N, C, H, W, M, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw), group = case
    rng = np.random.default_rng(seed)
    OH = out_size(H, kh, sh, pt, pb, dh)
    OW = out_size(W, kw, sw, pl, pr, dw)
    x = rng.integers(0, 256, (N, C, H, W), dtype=np.uint8)
    w = rng.integers(w_range[0], w_range[1] + 1, (M, C // group, kh, kw)).astype(np.int8)
    bias = rng.integers(-20_000, 20_000, M).astype(np.int32)
    mult, shift = requant_params(M, dot_std(w[0].size), rng, per_channel)
    lo, hi = {"none": (0, 255), "relu": (z_y, 255), "relu6": (z_y, min(255, z_y + 60))}[act]
    return (x, w, bias, mult, shift, lo, hi, (OH, OW))


def _kernel(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw, nthreads=2, path="portable",
            scratch_threads=None, table=True, table_zps=None):
    """The path's conv kernel on NCHW x.  table: append the plan-time requantize table as the
    planner does (not for depthwise), built for table_zps (default (z_x, z_y)); False runs the
    avx2 path's fallback epilogue."""
    N, C, H, W, M, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw), group = case
    wpack, wsum = pack_conv_weights(w, group, path)
    if table and not (group == C == M):
        tz_x, tz_y = (z_x, z_y) if table_zps is None else table_zps
        wpack = with_requant_table(wpack, path, w[0].size, wsum, bias, mult, shift, tz_x, tz_y)
    y = np.full((N, *ohw, M), 77, np.uint8)
    st = nthreads if scratch_threads is None else scratch_threads
    scratch = np.zeros(conv_scratch_size(N, H, W, C, M, kh, kw, *ohw, group, st, path), np.uint8)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    with_threads(nthreads, KERNELS[path], xh, z_x, wpack, wsum, bias, mult, shift, z_y, lo, hi,
                 kh, kw, sh, sw, dh, dw, pt, pl, group, y, scratch)
    return y.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("zp", range(len(ZPS)))
def test_conv_matches_naive(name, zp, path):
    case = CASES[name]
    z_x, z_y, act = ZPS[zp]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, z_x, z_y, act, seed=zp, per_channel=zp != 3)
    N, C, H, W, M, kh, kw, st, pads, dil, group = case
    want = qconv(x, z_x, w, bias, mult, shift, z_y, lo, hi, st, pads, dil, group, ohw)
    got = _kernel(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw, path=path)
    assert_same(got, want)


@pytest.mark.parametrize("path", PATHS)
def test_conv_outputs_not_vacuous(path):
    """Across the cases the outputs hit both clamp bounds and the values between them."""
    for name in ("3x3_pad1", "depthwise", "pointwise", "stem_7x7", "chunks"):
        case = CASES[name]
        x, w, bias, mult, shift, lo, hi, ohw = _make(case, 128, 128, "none", seed=5)
        N, C, H, W, M, kh, kw, st, pads, dil, group = case
        want = qconv(x, 128, w, bias, mult, shift, 128, lo, hi, st, pads, dil, group, ohw)
        got = _kernel(case, x, 128, w, bias, mult, shift, 128, lo, hi, ohw, path=path)
        assert_same(got, want, lo, hi)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["3x3_pad1", "depthwise", "pointwise", "group2", "chunks",
                                  "deep_small", "batch3_odd"])
def test_conv_thread_count_invariant(name, path):
    case = CASES[name]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, 3, 128, "none", seed=9)
    args = (case, x, 3, w, bias, mult, shift, 128, lo, hi, ohw)
    y1 = _kernel(*args, nthreads=1, path=path)
    assert np.array_equal(y1, _kernel(*args, nthreads=2, path=path))
    assert np.array_equal(y1, _kernel(*args, nthreads=2, path=path, scratch_threads=3))


def _random_case(rng):
    """A random QConv geometry (the shapes the fixed cases may miss)."""
    group = int(rng.choice([1, 1, 1, 2, 3]))
    Cg, Mg = int(rng.integers(1, 9)), int(rng.integers(1, 23))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    if rng.random() < 0.2:
        kh, H = 1, 1                                           # 1-D conv
    else:
        H = int(rng.integers(kh, 12))
    W = int(rng.integers(kw, 14))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    dh, dw = (1, 1) if rng.random() < 0.6 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    if kh == 1:
        dh, sh = 1, 1
    pads = [int(rng.integers(0, k)) for k in (kh, kw, kh, kw)]
    if (H + pads[0] + pads[2] - dh * (kh - 1) - 1) < 0:
        dh, pads[0] = 1, kh - 1
    if (W + pads[1] + pads[3] - dw * (kw - 1) - 1) < 0:
        dw, pads[1] = 1, kw - 1
    N = int(rng.choice([1, 3]))
    return (N, Cg * group, H, W, Mg * group, kh, kw, (sh, sw), tuple(pads), (dh, dw), group)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", range(6))
def test_conv_random_shapes(seed, path):
    rng = np.random.default_rng(100 + seed)
    for trial in range(4):
        case = _random_case(rng)
        z_x, z_y, act = ZPS[int(rng.integers(len(ZPS)))]
        x, w, bias, mult, shift, lo, hi, ohw = _make(case, z_x, z_y, act, seed=seed * 10 + trial)
        N, C, H, W, M, kh, kw, st, pads, dil, group = case
        want = qconv(x, z_x, w, bias, mult, shift, z_y, lo, hi, st, pads, dil, group, ohw)
        for nt in (1, 2):
            got = _kernel(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw, nthreads=nt,
                          path=path)
            assert_same(got, want)


@pytest.mark.parametrize("path", PATHS)
def test_conv_scratch_for_one_thread_runs_serially(path):
    """Scratch planned for 1 thread while 2 run: the kernel uses 1 slice, same result."""
    case = CASES["3x3_pad1"]
    N, C, H, W, M, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw), group = case
    x, w, bias, mult, shift, lo, hi, (OH, OW) = _make(case, 128, 128, "none", seed=3)
    wpack, wsum = pack_conv_weights(w, group, path)
    wpack = with_requant_table(wpack, path, w[0].size, wsum, bias, mult, shift, 128, 128)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    scratch = np.zeros(conv_scratch_size(N, H, W, C, M, kh, kw, OH, OW, group, 1, path), np.uint8)
    y = np.zeros((N, OH, OW, M), np.uint8)
    with_threads(2, KERNELS[path], xh, 128, wpack, wsum, bias, mult, shift, 128, lo, hi, kh, kw,
                 sh, sw, dh, dw, pt, pl, group, y, scratch)
    want = qconv(x, 128, w, bias, mult, shift, 128, lo, hi, (sh, sw), (pt, pl, pb, pr), (dh, dw),
                 group, (OH, OW))
    assert_same(y.transpose(0, 3, 1, 2), want)


def test_conv_saturation_extremes():
    """x at 0/255 with w at +-127 over a large K: the raw dots sit near the int32 range and the
    outputs saturate at both clamps (ReLU6-style bounds), on every path."""
    case = (1, 256, 6, 6, 17, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    N, C, H, W, M, kh, kw, st, pads, dil, group = case
    x = np.where(np.random.default_rng(0).random((N, C, H, W)) < 0.5, 0, 255).astype(np.uint8)
    w = np.full((M, C, kh, kw), 127, np.int8)
    w[::2] = -127
    bias = np.zeros(M, np.int32)
    mult = np.full(M, 1 << 30, np.int32)
    shift = np.full(M, 40, np.int32)
    ohw = (H, W)
    for z_x in (0, 128, 255):
        want = qconv(x, z_x, w, bias, mult, shift, 100, 100, 160, st, pads, dil, group, ohw)
        assert (want == 100).any() and (want == 160).any()
        for path in PATHS:
            got = _kernel(case, x, z_x, w, bias, mult, shift, 100, 100, 160, ohw, path=path)
            assert_same(got, want)


def test_pack_rejects_unknown_path():
    with pytest.raises(ValueError):
        pack_conv_weights(np.zeros((2, 1, 1, 1), np.int8), 1, "sse9")


@pytest.mark.skipif("avx2" not in PATHS, reason="no AVX2 on this CPU")
@pytest.mark.parametrize("name", ["3x3_pad1", "pointwise", "group2", "stem_7x7"])
def test_avx2_epilogue_table_and_fallbacks(name):
    """The avx2 conv with its requantize table, without one (scalar epilogue), and with a table
    built for other zero points (must be ignored): the same exact result."""
    case = CASES[name]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, 17, 0, "relu", seed=9)
    N, C, H, W, M, kh, kw, st, pads, dil, group = case
    want = qconv(x, 17, w, bias, mult, shift, 0, lo, hi, st, pads, dil, group, ohw)
    assert_same(_kernel(case, x, 17, w, bias, mult, shift, 0, lo, hi, ohw, path="avx2"), want)
    assert_same(_kernel(case, x, 17, w, bias, mult, shift, 0, lo, hi, ohw, path="avx2",
                        table=False), want)
    for tzp in ((18, 0), (17, 1)):
        assert_same(_kernel(case, x, 17, w, bias, mult, shift, 0, lo, hi, ohw, path="avx2",
                            table_zps=tzp), want)


@pytest.mark.skipif("avx2" not in PATHS, reason="host has no AVX2")
@pytest.mark.parametrize("name", ["3x3_pad1", "pointwise", "group2", "group2_m24", "group2_m20",
                                  "chunks", "deep_small", "stem_7x7", "batch3_odd", "conv1d",
                                  "row_run_8", "row_run_32"])
@pytest.mark.parametrize("table", [True, False])
def test_conv_avx2q_seven_bit_weights(name, table):
    """Weights in [-64, 63] (7-bit): the avx2 path packs them for its vpmaddubsw kernel, whose
    pair sums then cannot saturate.  Extremes included: x = 255 against w = -64 / 63 gives the
    largest pair sums (±32640); exact against the naive reference for 1 and 2 threads."""
    case = CASES[name]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, 7, 120, "relu", seed=5, w_range=(-64, 63))
    x[:, :, ::2] = 255
    w.reshape(-1)[::3] = -64
    w.reshape(-1)[1::5] = 63
    N, C, H, W, M, kh, kw, st, pads, dil, group = case
    wpack, _ = pack_conv_weights(w, group, "avx2")
    assert wpack[0] == vnni.LAYOUT_QUADS
    want = qconv(x, 7, w, bias, mult, shift, 120, lo, hi, st, pads, dil, group, ohw)
    for nt in (1, 2):
        got = _kernel(case, x, 7, w, bias, mult, shift, 120, lo, hi, ohw, nthreads=nt,
                      path="avx2", table=table)
        assert_same(got, want)


@pytest.mark.skipif("avx2" not in PATHS, reason="host has no AVX2")
def test_avx2_layout_follows_the_weight_range():
    w = np.zeros((4, 3, 3, 3), np.int8)
    for lo_, hi_, layout in ((-64, 63, vnni.LAYOUT_QUADS), (-65, 0, vnni.LAYOUT_PAIRS),
                             (0, 64, vnni.LAYOUT_PAIRS)):
        w[0, 0, 0, 0], w[1, 0, 0, 0] = lo_, hi_
        assert pack_conv_weights(w, 1, "avx2")[0][0] == layout


# grouped convs with groups narrower than a micro-panel: (case, expected merge factor on avx2)
NARROW_GROUPS = {
    "regnet_g8": ((1, 48, 9, 9, 48, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 6), 1),   # direct kernel
    "g8_cg3": ((1, 18, 9, 9, 48, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 6), 2),      # Cg = 3
    "resnext_g4": ((2, 32, 6, 7, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 8), 1),  # pairs
    "g4_odd": ((2, 20, 6, 7, 20, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 5), 1),      # 5 groups
    "g2_m8": ((1, 8, 6, 7, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4), 2),       # Cg 2, Mg 8
    "g5_uneven": ((1, 30, 6, 6, 15, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 3), 3),   # Mg=5: 15 < 16
    "g7_odd": ((1, 21, 5, 5, 14, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1), 7), 7),      # Mg=2, Cg=3
}


@pytest.mark.parametrize("path", [p for p in PATHS if p != "portable"])
@pytest.mark.parametrize("name", list(NARROW_GROUPS))
def test_narrow_groups_merged_block_diagonal(name, path):
    """What the planner does for narrow groups on the x86 paths (merge_groups and
    merge_group_weights): the merged conv, with block-diagonal weights, equals the spec's
    grouped conv bit for bit, for 1 and 2 threads."""
    case, f_avx2 = NARROW_GROUPS[name]
    N, C, H, W, M, kh, kw, st, pads, dil, group = case
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, 131, 120, "relu", seed=len(name))
    want = qconv(x, 131, w, bias, mult, shift, 120, lo, hi, st, pads, dil, group, ohw)
    f = K.merge_groups(C, M, group, path)
    if path == "avx2":
        assert f == f_avx2
    assert group % f == 0 and K.merge_groups(C, M, group, "portable") == 1
    wm = K.merge_group_weights(w, group, f)
    assert wm.shape == (M, f * C // group, kh, kw)
    merged = (*case[:-1], group // f)
    for nt in (1, 2):
        got = _kernel(merged, x, 131, wm, bias, mult, shift, 120, lo, hi, ohw, nthreads=nt, path=path)
        assert_same(got, want)


def test_merge_groups_leaves_depthwise_and_wide_groups():
    assert K.merge_groups(32, 32, 32, "avx2") == 1            # depthwise has its own kernel
    assert K.merge_groups(64, 64, 2, "avx2") == 1             # 32 channels per group >= 16
    assert K.merge_groups(64, 64, 8, "avx2") == 1             # 8 per group: direct kernel
    assert K.merge_groups(24, 64, 8, "avx2") == 2             # 3 in, 8 out: two per panel
    assert K.merge_groups(64, 64, 8, "vnni512") == 1          # 8 per group: direct kernel
    assert K.merge_groups(24, 64, 8, "vnni512") == 8          # 3 in: a 64-wide panel takes all


# direct grouped kernel (avx2; grouped.grouped_direct: 8 or 16 outputs and a multiple of 4
# inputs per group)
GROUPED_DIRECT = {
    "g13_s2": (1, 104, 9, 10, 104, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 13),
    "mg16_asym": (2, 24, 7, 9, 48, 3, 3, (1, 2), (0, 1, 2, 1), (1, 1), 3),
    "cg4_dil": (1, 16, 8, 8, 32, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 4),
    "k5_chunks": (1, 32, 7, 7, 16, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 2),   # 100 quads
    "cg12_1x1": (2, 36, 4, 5, 24, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 3),
    "conv1d": (1, 16, 1, 20, 16, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1), 2),
    "big_pad": (1, 8, 3, 3, 16, 3, 3, (1, 1), (3, 3, 3, 3), (1, 1), 2),     # windows in padding
    "rows_odd": (3, 16, 5, 13, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
    # pairs of groups with 4 inputs and 4 outputs each (ResNeXt 32x4d)
    "pairs_g8": (1, 32, 7, 8, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 8),
    "pairs_s2_asym": (2, 16, 9, 9, 16, 3, 3, (2, 2), (0, 1, 1, 0), (1, 1), 4),
}


X86_PATHS = [p for p in PATHS if p != "portable"]


@pytest.mark.skipif(not X86_PATHS, reason="host has no AVX2")
@pytest.mark.parametrize("path", X86_PATHS)
@pytest.mark.parametrize("name", list(GROUPED_DIRECT))
@pytest.mark.parametrize("zp", range(len(ZPS)))
def test_grouped_direct_matches_naive(name, zp, path):
    """The direct grouped kernel with its table epilogue, without a table (the scalar formula)
    and with a table for other zero points (ignored), for 1, 2 and 3-slice scratch, through
    each x86 path's conv entry point."""
    case = GROUPED_DIRECT[name]
    N, C, H, W, M, kh, kw, st, pads, dil, group = case
    assert grouped.grouped_direct(C, M, group, path) and K.merge_groups(C, M, group, path) == 1
    z_x, z_y, act = ZPS[zp]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, z_x, z_y, act, seed=zp + 40)
    assert pack_conv_weights(w, group, path)[0][0] == grouped.LAYOUT_GROUPED
    want = qconv(x, z_x, w, bias, mult, shift, z_y, lo, hi, st, pads, dil, group, ohw)
    args = (case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw)
    for nt, slices in ((1, 1), (2, 2), (2, 3)):
        assert_same(_kernel(*args, nthreads=nt, path=path, scratch_threads=slices), want)
    assert_same(_kernel(*args, path=path, table=False), want)
    assert_same(_kernel(*args, path=path, table_zps=((z_x + 1) % 256, z_y)), want)


@pytest.mark.skipif("avx2" not in PATHS, reason="host has no AVX2")
@pytest.mark.parametrize("cg", [32, 8])
def test_grouped_direct_int16_sums_at_their_bound(cg):
    """x = 255 against w = 120 / 127 / -127 (|wh| = 8) in every quad: a full chunk of
    QUADS_PER_FLUSH quads sums to ±32640 per int16 lane, the largest the kernel allows; exact.
    (32 inputs per group: a tap's 8 quads are one chunk.)"""
    case = (1, 2 * cg, 5, 5, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2)
    N, C, H, W, M, kh, kw, st, pads, dil, group = case
    x = np.full((N, C, H, W), 255, np.uint8)
    x[:, :, 0] = 0
    w = np.full((M, cg, kh, kw), 120, np.int8)
    w[1::4] = 127
    w[2::4] = -127
    w[3::4, ::2] = -120
    bias = np.zeros(M, np.int32)
    mult = np.full(M, 1 << 30, np.int32)
    # |dot| <= 9·cg·255·127 maps to about ±127 steps: a wrapped sum would show
    shift = np.full(M, 30 + int(np.ceil(np.log2(9 * cg * 255))), np.int32)
    assert 2 * grouped.QUADS_PER_FLUSH * 255 * 8 < 2**15
    for z_x in (0, 255):
        want = qconv(x, z_x, w, bias, mult, shift, 128, 0, 255, st, pads, dil, group, (H, W))
        assert len(np.unique(want)) >= 4
        got = _kernel(case, x, z_x, w, bias, mult, shift, 128, 0, 255, (H, W), path="avx2")
        assert_same(got, want)


def test_grouped_direct_shapes():
    assert grouped.grouped_direct(104, 104, 13, "avx2")            # RegNetY: 8 per group
    assert grouped.grouped_direct(208, 208, 13, "avx2")            # 16 per group
    assert grouped.grouped_direct(104, 104, 13, "vnni512")         # the avx2 kernel there too
    assert not grouped.grouped_direct(104, 104, 13, "portable")
    assert grouped.grouped_direct(128, 128, 32, "avx2")            # ResNeXt 32x4d: pairs
    assert not grouped.grouped_direct(20, 20, 5, "avx2")           # 4 per group, odd count
    assert not grouped.grouped_direct(64, 128, 32, "avx2")         # 2 in, 4 out
    assert not grouped.grouped_direct(96, 96, 4, "avx2")           # 24 out per group
    assert not grouped.grouped_direct(32, 32, 32, "avx2")          # depthwise
    assert not grouped.grouped_direct(24, 64, 8, "avx2")           # 3 in per group
