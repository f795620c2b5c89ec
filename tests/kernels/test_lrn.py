"""lrn_f32 (formats/nq-v1.md 4.15) against a numpy float32 transcription of the spec: window
sums in the spec's order exactly, the power within 2 float32 ulps (powf implementations may
differ in the last bits); identical for 1 and 2 threads."""

import numpy as np
import pytest

from kernels._util import with_threads
from nqrt.kernels.lrn import lrn_f32


def naive_lrn(x, alpha, beta, bias, size):
    O, A, I = x.shape
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.zeros_like(x)
    for a in range(A):
        for j in range(max(0, a - lo), min(A - 1, a + hi) + 1):
            sq[:, a] += x[:, j] * x[:, j]             # float32, j ascending
    k = np.float32(alpha) / np.float32(size)
    return x / (np.float32(bias) + k * sq) ** np.float32(beta), sq


def ulps(a, b):
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    return np.abs(ia - ib)


# (O, A, I, size): AlexNet-like, even and 1 sizes, windows wider than A, one channel, and a
# size past the serial threshold (the parallel row blocks)
CASES = [(1, 16, 30, 5), (2, 7, 9, 4), (1, 5, 11, 1), (3, 3, 8, 9), (2, 1, 20, 3),
         (2, 96, 300, 5)]


@pytest.mark.parametrize("O,A,I,size", CASES)
def test_lrn_matches_spec(O, A, I, size):
    rng = np.random.default_rng(O * 1000 + A * 10 + size)
    x = (rng.standard_normal((O, A, I)) * 3).astype(np.float32)
    alpha, beta, bias = np.float32(1e-2), np.float32(0.75), np.float32(2.0)
    want, sq = naive_lrn(x, alpha, beta, bias, size)
    assert sq.max() > 0 and np.ptp(want) > 0
    outs = []
    for threads in (1, 2):
        y = np.full_like(x, np.nan)
        with_threads(threads, lrn_f32, x, y, alpha, beta, bias, size)
        assert ulps(y, want).max() <= 2
        outs.append(y)
    assert np.array_equal(outs[0], outs[1])


def test_lrn_beta_zero_and_empty():
    x = np.random.default_rng(1).standard_normal((1, 4, 5)).astype(np.float32)
    y = np.empty_like(x)
    lrn_f32(x, y, np.float32(1.0), np.float32(0.0), np.float32(1.0), 3)
    assert np.array_equal(y, x)                 # d ** 0 = 1
    e = np.empty((0, 4, 5), np.float32)
    lrn_f32(e, e.copy(), np.float32(1.0), np.float32(0.75), np.float32(1.0), 3)
