"""QLut kernels (spec 4.9): bit-exact vs tests/naive.py, thread-count independent.  The
portable kernel always; the AVX2 (vpshufb) one when the host has AVX2."""

import numpy as np
import pytest

import naive
from kernels._util import assert_same, with_threads
from nqrt.kernels import cpu
from nqrt.kernels.lut import CHUNK, SERIAL_MAX_AVX2, lut_u8, lut_u8_avx2

KERNELS = [lut_u8] + ([lut_u8_avx2] if cpu.has_avx2() else [])
kernels = pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)


@kernels
@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 255, 256, 3 * CHUNK + 17, SERIAL_MAX_AVX2 + 77])
def test_lut_matches_naive_and_threads(n, kernel):
    lut_u8 = kernel
    rng = np.random.default_rng(n)
    x = rng.integers(0, 256, n, dtype=np.uint8)
    table = rng.integers(0, 256, 256, dtype=np.uint8)
    y = np.zeros(n, np.uint8)
    lut_u8(x, table, y)
    assert_same(y, naive.lut(x, table))
    y1 = np.zeros(n, np.uint8)
    with_threads(1, lut_u8, x, table, y1)
    assert np.array_equal(y, y1)


@kernels
def test_lut_every_code_and_in_place(kernel):
    """Every code in every position of a 32-byte step (the x86 kernel's slice logic), against
    a table whose entries are all distinct."""
    lut_u8 = kernel
    x = np.concatenate([np.roll(np.arange(256, dtype=np.uint8), k) for k in range(33)])
    table = (255 - np.arange(256)).astype(np.uint8)           # y = 255 - x: every entry used
    want = naive.lut(x, table)
    lut_u8(x, table, x)                                       # x may be y
    assert_same(x, want, 0, 255)


@kernels
@pytest.mark.parametrize("offset", [1, 3, 7])
def test_lut_on_unaligned_views(offset, kernel):
    """The kernel reads and writes 8 bytes at a time: operands that start at any byte (arena
    slices) give the same result, and nothing outside the operands is written."""
    rng = np.random.default_rng(offset)
    n = 1000 + offset
    buf = rng.integers(0, 256, n + 16, dtype=np.uint8)
    out = np.full(n + 16, 7, np.uint8)
    table = rng.integers(0, 256, 256, dtype=np.uint8)
    x, y = buf[offset:offset + n], out[offset + 1:offset + 1 + n]
    kernel(x, table, y)
    assert_same(y, naive.lut(x, table))
    assert (out[:offset + 1] == 7).all() and (out[offset + 1 + n:] == 7).all()
