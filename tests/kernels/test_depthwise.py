"""The depthwise kernels vs the naive QConv: the portable one (depthwise_conv_u8: generic vector
path, scalar channel tail, reference fallback) and, where the CPU has AVX2, the x86 one
(depthwise_conv_u8_x86: vpmaddwd tap pairs, z_x rows for padding, lane-order requantize),
the latter also with the plan-time requantize table ("x86_table") and, for C < 16, packed for 16
channels and run staged ("x86_staged": pack_staged_depthwise).
Strides, asymmetric pads, dilation, kernel sizes (odd and even tap counts), channel counts
around the 16-lane blocks, zero points, saturation, extreme multipliers, thread invariance."""

import numpy as np
import pytest
from naive import out_size, qconv

from nqrt.kernels import cpu
from nqrt.kernels.depthwise import (DW_TABLE_HEADER, FLUSH_PAIRS, TABLE_SCALAR, TABLE_USABLE,
                                    _prepare,
                                    append_depthwise_table, depthwise_conv_u8,
                                    depthwise_conv_u8_x86, depthwise_scratch_bytes,
                                    depthwise_scratch_bytes_x86, pack_depthwise_weights,
                                    pack_depthwise_weights_x86, pack_staged_depthwise,
                                    record_channel,
                                    split_weight, staged_wpack_bytes, x86_weight_bytes)

from ._util import assert_same, dot_std, requant_params, with_threads

ALIGN = 64


KERNELS = ["portable"] + (["x86", "x86_table", "x86_staged"] if "avx2" in cpu.available_paths() else [])


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


def _slice(kernel, C, kh, kw, W, OW):
    n = depthwise_scratch_bytes_x86(C, kh, kw, W) if kernel.startswith("x86") else \
        depthwise_scratch_bytes(C, kh, kw, OW)
    return -(-int(n) // ALIGN) * ALIGN


def run_dw(kernel, x, z_x, w, bias, mult, shift, z_y, lo, hi, strides, pads, dil, nthreads=2,
           table_zps=None):
    """x uint8 NCHW, w int8 [C, 1, kh, kw]; returns NCHW y from the NHWC kernel ("x86_table":
    with the plan-time table built for table_zps, default (z_x, z_y))."""
    N, C, H, W = x.shape
    kh, kw = w.shape[2:]
    OH = out_size(H, kh, strides[0], pads[0], pads[2], dil[0])
    OW = out_size(W, kw, strides[1], pads[1], pads[3], dil[1])
    sb = _slice(kernel, C, kh, kw, W, OW)
    scratch = np.full(nthreads * sb, 0xAB, np.uint8)      # garbage: the kernel must not rely on 0s
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    size = N * OH * OW * C
    buf = np.full(size + 64, 77, np.uint8)               # 64 sentinel bytes after y
    y = buf[:size].reshape(N, OH, OW, C)
    if kernel == "portable":
        fn, wpack = depthwise_conv_u8, pack_depthwise_weights(w)
    else:
        fn, wpack = depthwise_conv_u8_x86, pack_depthwise_weights_x86(w)
    if kernel in ("x86_table", "x86_staged"):
        tz_x, tz_y = (z_x, z_y) if table_zps is None else table_zps
        staged = (pack_staged_depthwise(w, bias, mult, shift, tz_x, tz_y)
                  if kernel == "x86_staged" and C < 16 else None)
        wpack = staged if staged is not None else append_depthwise_table(
            wpack, C, kh, kw, bias, mult, shift, tz_x, tz_y)
    fn(xh, z_x, wpack, bias, mult, shift, z_y, lo, hi, kh, kw, strides[0], strides[1], dil[0],
       dil[1], pads[0], pads[1], y, scratch, sb)
    assert (buf[size:] == 77).all(), "the kernel wrote past the end of y"
    return y.transpose(0, 3, 1, 2), (OH, OW)


def make(rng, N, C, H, W, kh, kw, z_x=128, z_y=120, per_channel=True, bias_scale=2000):
    x = rng.integers(0, 256, (N, C, H, W)).astype(np.uint8)
    w = rng.integers(-127, 128, (C, 1, kh, kw)).astype(np.int8)
    bias = rng.integers(-bias_scale, bias_scale + 1, C).astype(np.int32)
    mult, shift = requant_params(C, dot_std(kh * kw), rng, per_channel)
    return x, w, bias, np.asarray(mult, np.int32), np.asarray(shift, np.int32)


CASES = {
    # N, C, H, W, kh, kw, strides, pads (t, l, b, r), dilations
    "3x3_s1_p1_c128": (1, 128, 12, 13, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    "3x3_s2_p1_c32": (2, 32, 11, 10, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    "3x3_s2_asym": (1, 48, 9, 12, 3, 3, (2, 2), (0, 0, 1, 1), (1, 1)),
    "3x3_nopad": (1, 16, 7, 7, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1)),
    "3x3_dil2": (1, 40, 10, 11, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    "5x5_s1_p2_c24": (1, 24, 9, 9, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),
    "5x5_s2_c17": (2, 17, 12, 11, 5, 5, (2, 2), (1, 2, 2, 1), (1, 1)),
    "1x1_c33": (1, 33, 5, 6, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    "3x5_mixed": (1, 10, 8, 11, 3, 5, (1, 2), (0, 2, 2, 1), (2, 1)),
    "c8": (1, 8, 6, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    # C < 16 at stride 1: the x86 kernel's flat path over each row's interior span
    "c8_dil2_asym_n2": (2, 8, 13, 17, 3, 3, (1, 1), (2, 1, 0, 3), (2, 2)),
    "c12_5x5_nopad": (1, 12, 9, 20, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1)),
    "c3_3x7": (1, 3, 8, 30, 3, 7, (1, 1), (1, 3, 1, 3), (1, 1)),
    "c31": (1, 31, 6, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    "c1": (1, 1, 6, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    # C < 16 at other strides ("x86_staged": run as 16 channels)
    "c12_s2": (1, 12, 11, 14, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    "c8_s2_asym_n2": (2, 8, 10, 9, 3, 3, (2, 2), (0, 0, 1, 1), (1, 1)),
    "c15_5x5_s2": (1, 15, 12, 13, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1)),
    "c9_s3": (1, 9, 10, 17, 3, 3, (3, 3), (1, 1, 1, 1), (1, 1)),
    "c5_dil2_s2": (1, 5, 12, 12, 3, 3, (2, 2), (2, 2, 2, 2), (2, 2)),
    "c6_long_rows": (1, 6, 3, 600, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),   # rows of several chunks
    "c12_big_pad": (1, 12, 3, 3, 3, 3, (1, 1), (3, 3, 3, 3), (1, 1)),
    "c1_s2": (1, 1, 7, 9, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    "big_pad": (1, 16, 3, 3, 3, 3, (1, 1), (3, 3, 3, 3), (1, 1)),      # windows fully in padding
    "tiny_spatial": (1, 64, 1, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    "7x7_s1": (1, 32, 9, 9, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1)),
    "2x2_even_taps": (1, 48, 7, 8, 2, 2, (1, 1), (0, 0, 1, 1), (1, 1)),
    "1x3_c40": (2, 40, 5, 9, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1)),
    "wide_c144_s2": (1, 144, 9, 14, 3, 3, (2, 2), (0, 0, 1, 1), (1, 1)),
    # C not a multiple of 16 (MobileNetV3): the last vector block overlaps the one before it
    "3x3_s2_c72": (1, 72, 11, 12, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    "5x5_c120": (2, 120, 7, 7, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("zps", [(128, 120), (0, 0), (255, 255)])
def test_matches_naive(kernel, name, zps):
    N, C, H, W, kh, kw, st, pads, dil = CASES[name]
    rng = np.random.default_rng(abs(hash((name, zps))) % 2**32)
    z_x, z_y = zps
    x, w, bias, mult, shift = make(rng, N, C, H, W, kh, kw)
    got, ohw = run_dw(kernel, x, z_x, w, bias, mult, shift, z_y, 0, 255, st, pads, dil)
    want = qconv(x, z_x, w, bias, mult, shift, z_y, 0, 255, st, pads, dil, C, ohw)
    assert_same(got, want)


@pytest.mark.parametrize("lo,hi", [(0, 255), (20, 200), (120, 121)])
def test_clamp_and_saturation(kernel, lo, hi):
    rng = np.random.default_rng(5)
    x, w, bias, mult, shift = make(rng, 1, 48, 8, 9, 3, 3)
    mult2, shift2 = requant_params(48, dot_std(9), rng, spread=400.0)    # saturates often
    mult2, shift2 = np.asarray(mult2, np.int32), np.asarray(shift2, np.int32)
    for m, s in ((mult, shift), (mult2, shift2)):
        got, ohw = run_dw(kernel, x, 128, w, bias, m, s, 128, lo, hi, (1, 1), (1, 1, 1, 1), (1, 1))
        want = qconv(x, 128, w, bias, m, s, 128, lo, hi, (1, 1), (1, 1, 1, 1), (1, 1), 48, ohw)
        assert_same(got, want)
        assert (want == lo).any() and (want == hi).any()


@pytest.mark.parametrize("C,k", [(32, 3), (24, 3), (48, 4), (40, 7)])
def test_extreme_weights_and_inputs(kernel, C, k):
    """|(x − z_x)·w| at its maximum (255·127; weights are in [-127, 127], spec 2.1) in every
    tap: the int16 products, the 16-channel x86 kernel's pair sums x_a·w_a + x_b·w_b and the
    wide kernel's int16 sums of x·wh, x·wl (|wh| = 8 for w >= 120) over a full chunk of
    FLUSH_PAIRS pairs (4x4) and over several chunks (7x7) are exact."""
    x = np.zeros((1, C, 9, 9), np.uint8)
    x[:, ::2] = 255
    x[:, 1::4] = 254
    w = np.full((C, 1, k, k), -127, np.int8)
    w[1::2] = 127
    w[2::4] = 120               # wh = 8, wl = -8
    bias = np.zeros(C, np.int32)
    mult = np.full(C, 1 << 30, np.int32)
    # |dot| <= k²·255·127 maps to about ±127 steps: a wrapped or saturated sum shows
    shift = np.full(C, 30 + int(np.ceil(np.log2(k * k * 255))), np.int32)
    pads = (k // 2, k // 2, (k - 1) // 2, (k - 1) // 2)
    for z_x in (0, 255):
        got, ohw = run_dw(kernel, x, z_x, w, bias, mult, shift, 128, 0, 255, (1, 1), pads, (1, 1))
        want = qconv(x, z_x, w, bias, mult, shift, 128, 0, 255, (1, 1), pads, (1, 1), C, ohw)
        assert_same(got, want)
        assert len(np.unique(want)) >= 4            # not all clamped or zero


def test_weight_split_is_exact_and_bounded():
    """The wide kernel's w = 16·wh + wl for every weight of spec 2.1, with |wh|, |wl| <= 8 (so
    that FLUSH_PAIRS pairs of u8·part products stay below 2^15)."""
    w = np.arange(-127, 128)
    wh, wl = split_weight(w)
    assert (16 * wh.astype(np.int64) + wl == w).all()
    assert wl.min() == -8 and wl.max() == 7 and wh.min() == -8 and wh.max() == 8
    assert 2 * FLUSH_PAIRS * 255 * 8 < 2**15


@pytest.mark.parametrize("kind", ["small_shift", "huge_shift", "huge_bias", "zero_mult",
                                  "mixed"])
def test_multiplier_edges(kernel, kind):
    """Shifts 1..62, M0 = 0, |bias| near 2^31: the vector path or the reference fallback must
    give the spec's result either way."""
    rng = np.random.default_rng(11)
    C = 32
    x, w, bias, mult, shift = make(rng, 1, C, 6, 7, 3, 3)
    if kind == "small_shift":
        mult[:] = rng.integers(1 << 30, 1 << 31, C)
        shift[:] = rng.integers(1, 8, C)
    elif kind == "huge_shift":
        shift[:] = 62
        mult[:] = rng.integers(0, 4, C)
    elif kind == "huge_bias":
        bias[:] = rng.choice([-(2**31) + 5, 2**31 - 5], C)
        shift[:] = rng.integers(45, 62, C)
    elif kind == "zero_mult":
        mult[:] = 0
        shift[:] = 1
    else:
        shift[::3] = 61
        shift[1::3] = 31
        bias[2::3] = 2**30
    for z_y in (0, 128):
        got, ohw = run_dw(kernel, x, 7, w, bias, mult, shift, z_y, 0, 255, (1, 1), (1, 1, 1, 1), (1, 1))
        want = qconv(x, 7, w, bias, mult, shift, z_y, 0, 255, (1, 1), (1, 1, 1, 1), (1, 1), C, ohw)
        assert_same(got, want)


def test_prepare_takes_fast_path_for_realistic_multipliers():
    rng = np.random.default_rng(3)
    C = 64
    _, _, bias, mult, shift = make(rng, 1, C, 4, 4, 3, 3, bias_scale=2**24)
    bc, sh, zd = np.zeros(C, np.int64), np.zeros(C, np.int64), np.zeros(C, np.int32)
    assert _prepare(bias, mult, shift, 100, 3, 3, bc, sh, zd)


@pytest.mark.parametrize("N,H,C", [(1, 17, 12), (3, 5, 8), (1, 1, 12),
                                   (1, 17, 96), (3, 5, 96), (1, 7, 96), (1, 3, 40), (1, 2, 17),
                                   (1, 3, 88), (1, 2, 120), (1, 1, 400), (1, 2, 200), (1, 1, 136)])
def test_thread_invariance(kernel, N, H, C):
    """Row split (single-row chunks on small maps) and, with fewer rows than threads (N·OH = 1
    or 2 here, 19 columns, enough MACs for several threads), the x86 kernel's split of the
    vector blocks at cache-line boundaries (an overlapping last block and its neighbour may
    go to different threads, which then write the shared channels with equal values), for
    1-3 threads' scratch."""
    rng = np.random.default_rng(8)
    x, w, bias, mult, shift = make(rng, N, C, H, 19, 3, 3)
    outs = []
    for nt in (1, 2):
        for slices in (1, 2, 3):
            got, ohw = with_threads(nt, run_dw, kernel, x, 128, w, bias, mult, shift, 128, 0, 255,
                                    (1, 1), (1, 1, 1, 1), (1, 1), slices)
            outs.append(got)
    want = qconv(x, 128, w, bias, mult, shift, 128, 0, 255, (1, 1), (1, 1, 1, 1), (1, 1), C, ohw)
    for o in outs:
        assert_same(o, want)


@pytest.mark.skipif("avx2" not in cpu.available_paths(), reason="needs the x86 kernel")
@pytest.mark.parametrize("slices", [1, 2])
def test_table_for_other_zero_points_is_ignored(slices):
    """A table built for other zero points (a wpack reused with another z_x or z_y) must not
    be used: the kernel rebuilds the records and gives the spec's results."""
    rng = np.random.default_rng(21)
    x, w, bias, mult, shift = make(rng, 1, 48, 6, 7, 3, 3)
    for tzp in ((0, 120), (128, 0)):
        got, ohw = run_dw("x86_table", x, 128, w, bias, mult, shift, 120, 0, 255, (1, 1),
                          (1, 1, 1, 1), (1, 1), slices, table_zps=tzp)
        want = qconv(x, 128, w, bias, mult, shift, 120, 0, 255, (1, 1), (1, 1, 1, 1), (1, 1), 48,
                     ohw)
        assert_same(got, want)


@pytest.mark.skipif("avx2" not in cpu.available_paths(), reason="needs the x86 kernel")
def test_table_header_flags():
    """The table says TABLE_USABLE for realistic multipliers and TABLE_SCALAR when some
    channel's constants leave int64 (then every channel takes the scalar formula)."""
    rng = np.random.default_rng(22)
    C = 32
    _, w, bias, mult, shift = make(rng, 1, C, 4, 4, 3, 3)
    wpack = pack_depthwise_weights_x86(w)
    base = x86_weight_bytes(C, 3, 3) + 9 * C
    tab = append_depthwise_table(wpack, C, 3, 3, bias, mult, shift, 5, 9).view(np.uint8)
    assert tuple(tab[base:base + 3]) == (TABLE_USABLE, 5, 9)
    assert tab.size == base + DW_TABLE_HEADER + (C // 8) * 224         # a record per 8 lanes
    bias[3] = 2**31 - 5
    shift[3] = 62
    tab = append_depthwise_table(wpack, C, 3, 3, bias, mult, shift, 5, 9).view(np.uint8)
    assert tab[base] == TABLE_SCALAR


@pytest.mark.skipif("avx2" not in cpu.available_paths(), reason="needs the x86 kernel")
def test_matching_table_is_what_the_kernel_reads():
    """With matching zero points the kernel takes the records from the table (not rebuilding
    them): corrupting one record's multipliers changes exactly that block's outputs."""
    rng = np.random.default_rng(23)
    C, kh, kw = 32, 3, 3
    x, w, bias, mult, shift = make(rng, 1, C, 5, 6, kh, kw)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    wpack = append_depthwise_table(pack_depthwise_weights_x86(w), C, kh, kw, bias, mult, shift,
                                   128, 120)
    rec0 = x86_weight_bytes(C, kh, kw) + kh * kw * C + DW_TABLE_HEADER
    wpack[rec0:rec0 + 64] = 0                    # record 0: M0 of its even/odd lanes := 0
    sb = _slice("x86", C, kh, kw, 6, 6)
    y = np.zeros((1, 5, 6, C), np.uint8)
    depthwise_conv_u8_x86(xh, 128, wpack, bias, mult, shift, 120, 0, 255, kh, kw, 1, 1, 1, 1, 1, 1,
                          y, np.zeros(sb, np.uint8), sb)
    want = qconv(x, 128, w, bias, mult, shift, 120, 0, 255, (1, 1), (1, 1, 1, 1), (1, 1), C,
                 (5, 6)).transpose(0, 2, 3, 1)
    differs = (y != want).any(axis=(0, 1, 2))
    rec0_channels = sorted(record_channel(0, lane, C) for lane in range(8))
    assert rec0_channels == [0, 1, 2, 3, 16, 17, 18, 19]       # the wide kernel's lane order
    assert np.flatnonzero(differs).tolist() == rec0_channels


@pytest.mark.skipif("avx2" not in cpu.available_paths(), reason="needs the x86 kernel")
def test_staged_packing_for_realistic_multipliers_and_only_below_16_channels():
    """pack_staged_depthwise gives the staged layout for C < 16 with realistic multipliers
    (so the "x86_staged" cases above really run staged), and refuses C >= 16."""
    rng = np.random.default_rng(4)
    for C in (1, 4, 12, 15):
        _, w, bias, mult, shift = make(rng, 1, C, 4, 4, 3, 3)
        packed = pack_staged_depthwise(w, bias, mult, shift, 128, 120)
        assert packed is not None and packed.size == staged_wpack_bytes(3, 3)
    _, w, bias, mult, shift = make(rng, 1, 16, 4, 4, 3, 3)
    with pytest.raises(ValueError, match="only C < 16"):
        pack_staged_depthwise(w, bias, mult, shift, 128, 120)
