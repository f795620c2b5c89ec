"""rowcopy.copy_runs: every run length class (value by value below 8, one or two 8-value
pieces, two 16-value pieces, the piece loop), u8 -> u8 and u8 -> u16 (zero-extending), several
pixels and window rows per call; nothing outside the runs is written."""

import numpy as np
import pytest
from numba import njit

from nqrt.kernels.rowcopy import copy_runs


@njit(cache=False)
def _copy(dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx):
    copy_runs(dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx)


def _expected(dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx):
    want = dst.copy()
    for p in range(npx):
        for i in range(kh):
            d = doff + p * rowlen + i * n
            s = soff + p * pstep + i * rstep
            want[d:d + n] = src[s:s + n]
    return want


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 50])
def test_copy_runs_matches_slices(n, dtype):
    rng = np.random.default_rng(n)
    src = rng.integers(0, 256, 4000, dtype=np.uint8)
    kh, npx = 3, 4
    rowlen = kh * n + 5                       # a gap after each pixel's runs: must stay as is
    soff, pstep, rstep = 11, n + 2, 97
    doff = 3
    dst = np.full(doff + npx * rowlen + 20, 999 if dtype == np.uint16 else 201, dtype)
    want = _expected(dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx)
    _copy(dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx)
    assert np.array_equal(dst, want)


def test_copy_runs_nothing_for_empty_calls():
    src = np.arange(64, dtype=np.uint8)
    dst = np.full(64, 7, np.uint8)
    _copy(dst, 0, 8, src, 0, 8, 8, 1, 3, 0)       # no pixels
    _copy(dst, 0, 8, src, 0, 8, 8, 1, 0, 2)       # empty runs
    assert (dst == 7).all()
