import numpy as np
import pytest

from nqrt.kernels.softmax import softmax_f32
import naive
from kernels._util import with_threads


@pytest.mark.parametrize("shape", [(1, 1000, 1), (4, 10, 1), (2, 7, 5), (3, 1, 4), (1, 64, 33)])
def test_softmax_close_to_float64(shape):
    rng = np.random.default_rng(shape[1])
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    x.flat[0] = 80.0                                  # exp would overflow without the max
    y = np.zeros(shape, np.float32)
    softmax_f32(x, y)
    want = naive.softmax(x, axis=1)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-6)
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-5)
    y1 = np.zeros_like(y)
    with_threads(1, softmax_f32, x, y1)
    assert np.array_equal(y, y1)


def test_softmax_large_values_and_ties():
    x = np.array([[[1e30], [1e30], [-1e30]]], np.float32)
    y = np.zeros_like(x)
    softmax_f32(x, y)
    assert y.ravel().tolist() == [0.5, 0.5, 0.0]


# ---- QSoftmax (spec 4.21) -------------------------------------------------------------------

from nqrt.kernels.softmax import qsoftmax_u8  # noqa: E402
from nqrt.quant.qparams import softmax_constants  # noqa: E402


def _qsoftmax(x, table, G, n, z_y, lo, hi, threads=2):
    O, A, I = x.shape
    y = np.full(x.size, 7, np.uint8)
    with_threads(threads, qsoftmax_u8, x.ravel(), y, O, A, I, np.asarray(table, np.int64), G, n,
                 z_y, lo, hi)
    return y.reshape(x.shape)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 1), (2, 5, 3), (40, 197, 1), (4, 300, 2),
                                   (1, 2000, 1), (600, 16, 1)])
@pytest.mark.parametrize("s_x, s_y, z_y", [(0.05, 1 / 255, 0), (0.3, 0.6 / 255, 0), (0.002, 0.01, 3)])
def test_qsoftmax_matches_reference_bit_for_bit(shape, s_x, s_y, z_y):
    """Contiguous and strided rows (I > 1), a row of ties, many rows per task, 1 and 2 threads."""
    rng = np.random.default_rng(shape[1] * 7 + shape[0])
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    x[0, :, 0] = 200                                  # a row of ties: every d = 0
    table, G, n = softmax_constants(s_x, s_y, "test")
    want = naive.qsoftmax(x, 1, table, G, n, z_y, 0, 255)
    for threads in (1, 2):
        assert np.array_equal(_qsoftmax(x, table, G, n, z_y, 0, 255, threads), want)


def test_qsoftmax_clamps_and_extreme_constants():
    """act_min above z_y, act_max below it, and the format's extremes: entries 2^31 − 1,
    numerator 2^62 − 1, shift 62 (R up to 2^62 / 2^31: the products stay < 2^62)."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (30, 50, 1), dtype=np.uint8)
    table, G, n = softmax_constants(0.05, 1 / 255, "test")
    for z_y, lo, hi in ((0, 9, 200), (50, 10, 40), (5, 5, 5)):
        want = naive.qsoftmax(x, 1, table, G, n, z_y, lo, hi)
        assert np.array_equal(_qsoftmax(x, table, G, n, z_y, lo, hi), want)
    big = np.full(256, 2**31 - 1, np.int64)
    big[1::2] = rng.integers(0, 2**31, 128)
    for G, n in ((2**62 - 1, 62), (2**62 - 1, 1), (1, 1)):
        want = naive.qsoftmax(x, 1, big, G, n, 0, 0, 255)
        assert np.array_equal(_qsoftmax(x, big, G, n, 0, 0, 255), want)


@pytest.mark.parametrize("s_x, s_y, A", [(0.05, 1 / 255, 197), (0.5, 0.9 / 255, 50), (0.01, 0.05 / 255, 1000)])
def test_qsoftmax_constants_track_the_real_softmax(s_x, s_y, A):
    """nqrt's constants (4.21): y is round(p / s_y) + z_y except within the stated error of a
    tie, so codes differ by at most one and almost never."""
    table, G, n = softmax_constants(s_x, s_y, "test")
    assert table[0] == 2**24 and np.all(np.diff(table) <= 0) and G < 2**55 and 1 <= n <= 62
    rng = np.random.default_rng(A)
    x = rng.integers(0, 256, (400, A, 1), dtype=np.uint8)
    y = _qsoftmax(x, table, G, n, 0, 0, 255).astype(np.int64)
    e = np.exp(s_x * (x.astype(np.float64) - x.max(axis=1, keepdims=True)))
    want = np.clip(np.rint(e / e.sum(axis=1, keepdims=True) / s_y), 0, 255)
    diff = np.abs(y - want)
    assert diff.max() <= 1 and diff.mean() < 1e-3, (diff.max(), diff.mean())
