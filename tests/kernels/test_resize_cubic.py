"""resize_cubic_u8 (formats/nq-v1.md 4.24) against a transcription of the spec's integer
formula in exact Python integers, bit for bit; the plan-time tables against the cubic
kernel's known values and the edge rules; with the output on the input's grid, the result
within rounding of float bicubic interpolation with the same weights; identical for 1 and
2 threads."""

import numpy as np
import pytest

from kernels._util import with_threads
from nqrt.kernels.resize_cubic import TAPS, cubic_table, resize_cubic_args, resize_cubic_u8
from nqrt.qmath import CUBIC_BITS, CUBIC_MULTIPLIER_BITS, quantize_multiplier

MODES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
ONE = 1 << CUBIC_BITS


def split_table(tab, OH, OW):
    rows, cols = tab[:2 * TAPS * OH], tab[2 * TAPS * OH:]
    (hi, hw), (wi, ww) = rows.reshape(2, OH, TAPS), cols.reshape(2, OW, TAPS)
    return hi, hw, wi, ww


def spec_resize(x, tab, OH, OW, z_x, m0, n, z_y):
    """x uint8 [N, H, W, C]: the spec's double sum of w_H·w_W·(x − z_x), requantize (3.3) and
    saturation, in Python integers (no overflow possible here)."""
    hi, hw, wi, ww = split_table(tab, OH, OW)
    xi = x.astype(object) - z_x
    acc = np.zeros((x.shape[0], OH, OW, x.shape[3]), object)
    for j in range(TAPS):
        for k in range(TAPS):
            w = hw[:, j].astype(object)[None, :, None, None] * ww[:, k].astype(object)[None, None, :, None]
            acc = acc + w * xi[:, hi[:, j]][:, :, wi[:, k]]
    q = (acc * m0 + (1 << (n - 1))) // (1 << n) + z_y
    return np.clip(q, 0, 255).astype(np.uint8)


SAME_GRID = quantize_multiplier(2.0 ** -(2 * CUBIC_BITS), CUBIC_MULTIPLIER_BITS)   # s_y = s_x


def float_cubic(x, index, weight, axis):
    shape = [1] * x.ndim
    shape[axis] = -1
    return sum(np.take(x, index[:, j], axis=axis) * (weight[:, j] / ONE).reshape(shape) for j in range(TAPS))


# (N, C, H, W, scales or sizes, a, exclude_outside): up 2x, non-integer factors, down (CrossViT's
# 240 -> 224), a 1x1 and a 2x2 map (every tap clamped), many channels (parallel blocks)
CASES = [(1, 3, 4, 5, dict(scales=[1, 1, 2.0, 2.0]), -0.75, 0),
         (2, 5, 7, 6, dict(scales=[1, 1, 1.5, 2.5]), -0.5, 1),
         (1, 3, 30, 30, dict(sizes=[1, 3, 28, 28]), -0.75, 0),
         (1, 4, 9, 8, dict(scales=[1, 1, 0.5, 0.75]), -1.0, 1),
         (2, 16, 1, 1, dict(sizes=[2, 16, 3, 5]), -0.75, 1),
         (1, 2, 2, 2, dict(sizes=[1, 2, 7, 6]), -0.75, 0),
         (2, 64, 12, 10, dict(sizes=[2, 64, 48, 40]), -0.75, 0)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_resize_cubic_matches_spec(case, mode):
    N, C, H, W, kw, a, ex = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
    OH, OW, tab = resize_cubic_args((N, C, H, W), mode, a, bool(ex), **kw)
    # a grid of its own: M = s_x / (s_y·2^22) with s_y / s_x in [0.4, 3], zero points anywhere
    z_x, z_y = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    m0, n = quantize_multiplier(float(rng.uniform(1 / 3, 2.5)) * 2.0 ** -22, CUBIC_MULTIPLIER_BITS)
    assert 2 ** 22 <= m0 < 2 ** 23
    y = np.full((N, OH, OW, C), 7, np.uint8)
    with_threads(2, resize_cubic_u8, x, tab, z_x, m0, n, z_y, y)
    assert np.array_equal(y, spec_resize(x, tab, OH, OW, z_x, m0, n, z_y))
    y1 = np.zeros_like(y)
    with_threads(1, resize_cubic_u8, x, tab, z_x, m0, n, z_y, y1)
    assert np.array_equal(y1, y)
    # on the input's grid (z_y = z_x, s_y = s_x): the float interpolation of the codes, rounded once
    y = np.zeros_like(y)
    resize_cubic_u8(x, tab, z_x, *SAME_GRID, z_x, y)
    hi, hw, wi, ww = split_table(tab, OH, OW)
    exact = float_cubic(float_cubic(x.astype(np.float64), hi, hw, axis=1), wi, ww, axis=2)
    assert np.abs(y - np.clip(exact, 0, 255)).max() <= 0.5 + 1e-6


def test_extreme_accumulator_does_not_overflow():
    """The largest weights the plan-time check allows (absolute sum 2^13 per axis, |x − z| =
    255) with the largest 23-bit multiplier: |acc| reaches 2^34 and acc·M0 stays exact."""
    OH = OW = 2
    big = [-(1 << 11), 1 << 12, 1 << 12, -(1 << 11)]                  # sums to 2^12, |.| to 2^13
    tab = np.array([0, 1, 2, 3] * OH + big * OH + [0, 1, 2, 3] * OW + big * OW, np.int64)
    sign = np.sign(np.array(big))
    positive = np.outer(sign, sign) > 0                               # where w_H·w_W > 0
    x = np.zeros((1, 4, 4, 2), np.uint8)
    x[0, :, :, 0] = np.where(positive, 255, 0)                       # acc = +255·2^26 with z_x = 0
    x[0, :, :, 1] = np.where(positive, 0, 255)                       # acc = −255·2^26 with z_x = 0
    for z_x, m0, n, z_y in ((0, (1 << 23) - 1, 62, 0), (0, (1 << 23) - 1, 40, 128),
                            (255, (1 << 23) - 1, 62, 255), (0, 3 << 21, 58, 128)):
        y = np.zeros((1, OH, OW, 2), np.uint8)
        resize_cubic_u8(x, tab, z_x, m0, n, z_y, y)
        assert np.array_equal(y, spec_resize(x, tab, OH, OW, z_x, m0, n, z_y))
    y = np.zeros((1, OH, OW, 2), np.uint8)
    resize_cubic_u8(x, tab, 0, (1 << 23) - 1, 48, 128, y)            # −255·2^26·(2^23 − 1) / 2^48 ≈ −510
    assert (y[..., 0] == 255).all() and (y[..., 1] == 0).all()


def test_overshoot_saturates_on_both_sides():
    """A step 0 | 255 upsampled on the input's grid: the negative lobes ring below 0 and
    above 255 in exact arithmetic; the kernel saturates to the grid instead of wrapping."""
    x = np.zeros((1, 1, 8, 1), np.uint8)
    x[:, :, 4:] = 255
    OH, OW, tab = resize_cubic_args((1, 1, 1, 8), "half_pixel", -0.75, False, scales=[1, 1, 1, 4.0])
    y = np.zeros((1, OH, OW, 1), np.uint8)
    resize_cubic_u8(x, tab, 0, *SAME_GRID, 0, y)
    _, _, wi, ww = split_table(tab, OH, OW)
    exact = float_cubic(x.astype(np.float64), wi, ww, axis=2)
    assert exact.min() < -5 and exact.max() > 260                       # it does ring
    assert np.array_equal(y, spec_resize(x, tab, OH, OW, 0, *SAME_GRID, 0))
    assert y.min() == 0 and y.max() == 255


def test_cubic_table_weights():
    # half_pixel 2x up: t = 0.25 / 0.75 alternate; weights sum to 2^11, symmetric in t <-> 1 - t
    index, weight = cubic_table(6, 12, 2.0, "half_pixel", -0.75, False)
    assert (weight.sum(axis=1) == ONE).all()
    # o = 5: x = 5.5 / 2 - 0.5 = 2.25 -> taps 1..4, weights c(1.25), c(0.25), c(0.75), c(1.75)
    # of Keys' kernel with a = -0.75: -0.10546875, 0.87890625, 0.26171875, -0.03515625
    assert list(index[5]) == [1, 2, 3, 4]
    assert list(weight[5]) == [-216, 1800, 536, -72]
    assert list(weight[6]) == list(weight[5][::-1])
    # the first output reads before the input (x = -0.25): edge replication, weights unchanged
    assert list(index[0]) == [0, 0, 0, 1] and list(weight[0]) == list(weight[6])
    # an integer coordinate reads its pixel alone: align_corners 4 -> 7, x = o · 3 / 6
    index, weight = cubic_table(4, 7, 7 / 4, "align_corners", -0.5, False)
    assert list(weight[2]) == [0, ONE, 0, 0] and index[2][1] == 1
    # exclude_outside: taps -2 and -1 drop out, the others are divided by their sum
    # 0.7734375: 0.87890625 / 0.7734375 · 2^11 = 2327.27, -0.10546875 / 0.7734375 · 2^11 = -279.27
    index, weight = cubic_table(6, 12, 2.0, "half_pixel", -0.75, True)
    assert list(weight[0]) == [0, 0, 2327, -279]
    assert list(weight[5]) == [-216, 1800, 536, -72]                   # inside: unchanged


def test_cubic_table_rounding_keeps_the_sum():
    """Rounding the four weights independently can miss 2^11 by one; the largest absorbs it."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        n_in, n_out = int(rng.integers(1, 40)), int(rng.integers(1, 60))
        for ex in (False, True):
            for a in (-0.5, -0.75, -1.0, -2.0, 0.0):
                _, weight = cubic_table(n_in, n_out, n_out / n_in, "half_pixel", a, ex)
                assert (weight.sum(axis=1) == ONE).all()
                assert (np.abs(weight).sum(axis=1) <= 1 << 13).all()


def test_empty_output_is_a_no_op():
    x = np.zeros((1, 3, 3, 2), np.uint8)
    OH, OW, tab = resize_cubic_args((1, 2, 3, 3), "half_pixel", -0.75, False, sizes=[1, 2, 0, 3])
    y = np.zeros((1, OH, OW, 2), np.uint8)
    resize_cubic_u8(x, tab, 0, *SAME_GRID, 0, y)
    assert y.size == 0
