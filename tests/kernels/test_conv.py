import numpy as np
import pytest

from nqrt.kernels.conv import conv2d_u8, conv_scratch_size, pack_conv_weights
from naive import out_size, qconv
from kernels._util import assert_same, dot_std, requant_params, with_threads

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
}
ZPS = [(128, 128, "none"), (0, 100, "relu"), (255, 30, "relu6"), (17, 0, "none")]


def _make(case, z_x, z_y, act, seed, per_channel=True):
    N, C, H, W, M, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw), group = case
    rng = np.random.default_rng(seed)
    OH = out_size(H, kh, sh, pt, pb, dh)
    OW = out_size(W, kw, sw, pl, pr, dw)
    x = rng.integers(0, 256, (N, C, H, W), dtype=np.uint8)
    w = rng.integers(-127, 128, (M, C // group, kh, kw)).astype(np.int8)
    bias = rng.integers(-20_000, 20_000, M).astype(np.int32)
    mult, shift = requant_params(M, dot_std(w[0].size), rng, per_channel)
    lo, hi = {"none": (0, 255), "relu": (z_y, 255), "relu6": (z_y, min(255, z_y + 60))}[act]
    return (x, w, bias, mult, shift, lo, hi, (OH, OW))


def _kernel(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw, nthreads=2):
    N, C, H, W, M, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw), group = case
    wpack, wsum = pack_conv_weights(w, group)
    y = np.zeros((N, *ohw, M), np.uint8)
    scratch = np.zeros(conv_scratch_size(N, H, W, C, M, kh, kw, *ohw, group, nthreads), np.uint8)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    with_threads(nthreads, conv2d_u8, xh, z_x, wpack, wsum, bias, mult, shift, z_y, lo, hi, kh,
                 kw, sh, sw, dh, dw, pt, pl, group, y, scratch)
    return y.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("zp", range(len(ZPS)))
def test_conv_matches_naive(name, zp):
    case = CASES[name]
    z_x, z_y, act = ZPS[zp]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, z_x, z_y, act, seed=zp, per_channel=zp != 3)
    N, C, H, W, M, kh, kw, st, pads, dil, group = case
    want = qconv(x, z_x, w, bias, mult, shift, z_y, lo, hi, st, pads, dil, group, ohw)
    got = _kernel(case, x, z_x, w, bias, mult, shift, z_y, lo, hi, ohw)
    assert_same(got, want)


def test_conv_outputs_not_vacuous():
    """Across the cases the outputs hit both clamp bounds and the values between them."""
    for name in ("3x3_pad1", "depthwise", "pointwise", "stem_7x7"):
        case = CASES[name]
        x, w, bias, mult, shift, lo, hi, ohw = _make(case, 128, 128, "none", seed=5)
        N, C, H, W, M, kh, kw, st, pads, dil, group = case
        want = qconv(x, 128, w, bias, mult, shift, 128, lo, hi, st, pads, dil, group, ohw)
        got = _kernel(case, x, 128, w, bias, mult, shift, 128, lo, hi, ohw)
        assert_same(got, want, lo, hi)


@pytest.mark.parametrize("name", ["3x3_pad1", "depthwise", "pointwise", "group2"])
def test_conv_thread_count_invariant(name):
    case = CASES[name]
    x, w, bias, mult, shift, lo, hi, ohw = _make(case, 3, 128, "none", seed=9)
    args = (case, x, 3, w, bias, mult, shift, 128, lo, hi, ohw)
    y1 = _kernel(*args, nthreads=1)
    assert np.array_equal(y1, _kernel(*args, nthreads=2))


def test_conv_scratch_for_one_thread_runs_serially():
    """Scratch planned for 1 thread while 2 run: the kernel uses 1 slice, same result."""
    case = CASES["3x3_pad1"]
    N, C, H, W, M, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw), group = case
    x, w, bias, mult, shift, lo, hi, (OH, OW) = _make(case, 128, 128, "none", seed=3)
    wpack, wsum = pack_conv_weights(w, group)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    scratch = np.zeros(conv_scratch_size(N, H, W, C, M, kh, kw, OH, OW, group, 1), np.uint8)
    y = np.zeros((N, OH, OW, M), np.uint8)
    with_threads(2, conv2d_u8, xh, 128, wpack, wsum, bias, mult, shift, 128, lo, hi, kh, kw, sh,
                 sw, dh, dw, pt, pl, group, y, scratch)
    want = qconv(x, 128, w, bias, mult, shift, 128, lo, hi, (sh, sw), (pt, pl, pb, pr), (dh, dw),
                 group, (OH, OW))
    assert_same(y.transpose(0, 3, 1, 2), want)
