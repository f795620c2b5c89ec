"""resize_linear_u8 (formats/nq-v1.md 4.17) against a numpy transcription of the spec's
integer formula, bit for bit; the plan-time tables against the float32 coordinate rules; the
result within rounding of float bilinear interpolation; identical for 1 and 2 threads."""

import numpy as np
import pytest

from kernels._util import with_threads
from nqrt.kernels.resize_linear import LINEAR_BITS, linear_table, resize_linear_args, resize_linear_u8

MODES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]


def spec_resize(x, tab, OH, OW):
    """x uint8 [N, H, W, C]: the spec's two int32 interpolations and the rounding shift."""
    h0, h1, wh = tab[:OH], tab[OH:2 * OH], tab[2 * OH:3 * OH]
    w0, w1, ww = tab[3 * OH:3 * OH + OW], tab[3 * OH + OW:3 * OH + 2 * OW], tab[3 * OH + 2 * OW:]
    one = 1 << LINEAR_BITS
    xi = x.astype(np.int64)
    t0 = (one - ww)[None, None, :, None] * xi[:, h0][:, :, w0] + ww[None, None, :, None] * xi[:, h0][:, :, w1]
    t1 = (one - ww)[None, None, :, None] * xi[:, h1][:, :, w0] + ww[None, None, :, None] * xi[:, h1][:, :, w1]
    u = (one - wh)[None, :, None, None] * t0 + wh[None, :, None, None] * t1
    assert u.max() < 2 ** 31
    return ((u + (1 << (2 * LINEAR_BITS - 1))) >> (2 * LINEAR_BITS)).astype(np.uint8)


def float_bilinear(x, i0, i1, w, axis):
    lam = w / float(1 << LINEAR_BITS)
    shape = [1] * x.ndim
    shape[axis] = -1
    lam = lam.reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - lam) + np.take(x, i1, axis=axis) * lam


# (N, C, H, W, scales or sizes): up 2x (segmentation heads), non-integer factors, down,
# a 1x1 map broadcast to 7x5 (DeepLab's pooling branch), many channels (parallel blocks)
CASES = [(1, 3, 4, 5, dict(scales=[1, 1, 2.0, 2.0])), (2, 5, 7, 6, dict(scales=[1, 1, 1.5, 2.5])),
         (1, 4, 9, 8, dict(scales=[1, 1, 0.5, 0.75])), (2, 16, 1, 1, dict(sizes=[2, 16, 7, 5])),
         (1, 21, 8, 8, dict(sizes=[1, 21, 64, 64])), (2, 64, 12, 10, dict(sizes=[2, 64, 48, 40]))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_resize_linear_matches_spec(case, mode):
    N, C, H, W, kw = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
    OH, OW, tab = resize_linear_args((N, C, H, W), mode, **kw)
    y = np.full((N, OH, OW, C), 7, np.uint8)
    with_threads(2, resize_linear_u8, x, tab, y)
    assert np.array_equal(y, spec_resize(x, tab, OH, OW))
    ref = float_bilinear(float_bilinear(x.astype(np.float64), *np.split(tab[:3 * OH], 3), axis=1),
                         *np.split(tab[3 * OH:], 3), axis=2)
    assert np.abs(y - ref).max() <= 0.5 + 1e-9              # one rounding of the exact value
    y1 = np.zeros_like(y)
    with_threads(1, resize_linear_u8, x, tab, y1)
    assert np.array_equal(y1, y)


def test_linear_table_coordinates():
    # half_pixel 2x up of 4: x = (o + 0.5) / 2 - 0.5 -> -0.25 (clamped to 0), 0.25, 0.75, ...
    i0, i1, w = linear_table(4, 8, 2.0, "half_pixel")
    assert list(i0) == [0, 0, 0, 1, 1, 2, 2, 3] and list(i1) == [1, 1, 1, 2, 2, 3, 3, 3]
    assert list(w) == [0, 512, 1536, 512, 1536, 512, 1536, 0]
    # align_corners 3 -> 5: x = o · 2 / 4 = 0, 0.5, 1, 1.5, 2
    i0, i1, w = linear_table(3, 5, 5 / 3, "align_corners")
    assert list(i0) == [0, 0, 1, 1, 2] and list(w) == [0, 1024, 0, 1024, 0]
    # one input row: every output reads it with weight 0
    i0, i1, w = linear_table(1, 6, 6.0, "half_pixel")
    assert (i0 == 0).all() and (i1 == 0).all() and (w == 0).all()
