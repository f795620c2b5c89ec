import numpy as np
import pytest

from nqrt import qmath
from nqrt.kernels.pool import avgpool_u8, maxpool_u8, reduce_mean_u8
import naive
from naive import out_size
from kernels._util import assert_same, with_threads

# N, C, H, W, (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw), ceil_mode
POOLS = {
    "2x2s2": (1, 5, 8, 8, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0),
    "3x3s2_pad1": (2, 7, 9, 10, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0),
    "ceil": (1, 4, 7, 10, (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "ceil_pad_asym": (1, 3, 6, 9, (3, 2), (2, 3), (1, 0, 0, 1), (1, 1), 1),
    "ceil_drop_last": (1, 2, 5, 5, (2, 2), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "stride_gt_kernel": (1, 6, 11, 11, (2, 2), (3, 4), (0, 0, 0, 0), (1, 1), 0),
    "pool1d": (2, 9, 1, 17, (1, 4), (1, 3), (0, 2, 0, 1), (1, 1), 1),
    "dilated": (1, 4, 10, 9, (2, 3), (1, 2), (1, 1, 0, 2), (2, 2), 1),
}


def _case(name):
    N, C, H, W, k, s, p, d, ceil = POOLS[name]
    OH = out_size(H, k[0], s[0], p[0], p[2], d[0], ceil)
    OW = out_size(W, k[1], s[1], p[1], p[3], d[1], ceil)
    x = np.random.default_rng(N * H + W).integers(0, 256, (N, C, H, W), dtype=np.uint8)
    x[:, ::2] //= 4                     # dark channels: window maxima below a ReLU-like act_min
    return x, k, s, p, d, (OH, OW)


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def test_ceil_mode_drops_window_starting_in_end_padding():
    assert out_size(5, 2, 2, 1, 1, 1, 1) == 3          # ceil gives 4; 4th would start at 7 > 5+1
    assert out_size(8, 3, 2, 0, 0, 1, 1) == 4 and out_size(8, 3, 2, 0, 0, 1, 0) == 3


@pytest.mark.parametrize("name", list(POOLS))
@pytest.mark.parametrize("act", [(0, 255), (60, 200)])
def test_maxpool(name, act):
    x, k, s, p, d, ohw = _case(name)
    y = np.zeros((x.shape[0], *ohw, x.shape[1]), np.uint8)
    maxpool_u8(_nhwc(x), k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1], *act, y)
    want = naive.maxpool(x, k, s, p, d, *act, ohw)
    assert_same(y.transpose(0, 3, 1, 2), want, *(act if act[0] > 0 else (None, None)))
    y1 = np.zeros_like(y)
    with_threads(1, maxpool_u8, _nhwc(x), k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1], *act, y1)
    assert np.array_equal(y, y1)


def _avg_tables(K, s_x, s_y):
    """Per-count multiplier tables s_x / (s_y·c), entry 0 unused (M = 0)."""
    m0, n = qmath.quantize_multipliers([0.0] + [s_x / (s_y * c) for c in range(1, K + 1)])
    return m0, n


@pytest.mark.parametrize("name", [n for n in POOLS if POOLS[n][7] == (1, 1)])
@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("zp", [(128, 128, 3.0), (0, 255, 1.7), (255, 0, 2.2)])
def test_avgpool(name, cip, zp):
    z_x, z_y, ratio = zp
    x, k, s, p, d, ohw = _case(name)
    mult, shift = _avg_tables(k[0] * k[1], ratio, 1.0)
    y = np.zeros((x.shape[0], *ohw, x.shape[1]), np.uint8)
    args = (_nhwc(x), z_x, k[0], k[1], s[0], s[1], p[0], p[1], p[2], p[3], cip, mult, shift, z_y,
            0, 255)
    avgpool_u8(*args, y)
    want = naive.avgpool(x, z_x, k, s, p, cip, mult, shift, z_y, 0, 255, ohw)
    assert_same(y.transpose(0, 3, 1, 2), want)
    y1 = np.zeros_like(y)
    with_threads(1, avgpool_u8, *args, y1)
    assert np.array_equal(y, y1)


def test_avgpool_not_vacuous_and_counts_differ():
    """count_include_pad changes border outputs only; outputs hit both bounds."""
    x, k, s, p, d, ohw = _case("3x3s2_pad1")
    mult, shift = _avg_tables(9, 3.0, 1.0)
    ys = []
    for cip in (0, 1):
        y = np.zeros((x.shape[0], *ohw, x.shape[1]), np.uint8)
        avgpool_u8(_nhwc(x), 128, 3, 3, 2, 2, 1, 1, 1, 1, cip, mult, shift, 128, 0, 255, y)
        want = naive.avgpool(x, 128, k, s, p, cip, mult, shift, 128, 0, 255, ohw)
        assert_same(y.transpose(0, 3, 1, 2), want, 0, 255)
        ys.append(y)
    assert not np.array_equal(ys[0][:, 0], ys[1][:, 0])
    assert np.array_equal(ys[0][:, 1:-1, 1:-1], ys[1][:, 1:-1, 1:-1])


@pytest.mark.parametrize("shape,z_x,z_y", [
    ((1, 49, 64), 128, 128), ((3, 10, 5), 0, 200), ((2, 1, 7), 255, 0),
    # row-wise channel blocks (I >= 16): uneven blocks, serial and parallel sizes, batch > 1
    ((1, 3136, 144), 3, 250), ((2, 196, 70), 128, 128), ((3, 49, 17), 255, 0),
    ((1, 12544, 32), 0, 0), ((4, 2, 1152), 200, 30)])
def test_reduce_mean(shape, z_x, z_y):
    x = np.random.default_rng(shape[1]).integers(0, 256, shape, dtype=np.uint8)
    m0, n = qmath.quantize_multiplier(2.5 / np.sqrt(shape[1]))
    y = np.zeros((shape[0], shape[2]), np.uint8)
    reduce_mean_u8(x, z_x, m0, n, z_y, 0, 255, y)
    want = naive.reduce_mean(x, [1], z_x, m0, n, z_y, 0, 255)
    assert_same(y, want, *((0, 255) if z_x == 128 else (None, None)))
    y1 = np.zeros_like(y)
    with_threads(1, reduce_mean_u8, x, z_x, m0, n, z_y, 0, 255, y1)
    assert np.array_equal(y, y1)


# ---- ReduceMax / ReduceMin (spec 4.22) --------------------------------------------------------

from nqrt.kernels.pool import reduce_max_u8  # noqa: E402


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 1), (5, 1, 9), (2, 6, 33), (300, 64, 1),
                                   (40, 50, 24), (1, 4000, 3)])
@pytest.mark.parametrize("minimum", [False, True])
def test_reduce_extreme_matches_reference(shape, minimum):
    """I = 1 (innermost: a channel max of NHWC pixels) and I > 1, serial and parallel sizes,
    a clamp, 1 and 2 threads."""
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    for lo, hi in ((0, 255), (40, 200)):
        want = naive.reduce_extreme(x, (1,), False, minimum, lo, hi)
        for threads in (1, 2):
            y = np.full((shape[0], shape[2]), 7, np.uint8)
            with_threads(threads, reduce_max_u8, x, y, minimum, lo, hi)
            assert np.array_equal(y, want), (shape, minimum, lo, hi, threads)
