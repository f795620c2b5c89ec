"""QLut2 kernel (spec 4.23): y = table[a·256 + b] over broadcast pairs and layouts, bit-exact
against the numpy lookup, thread-count independent; the converter's table (lut2_table) is the
float op rounded once, NaN -> z_y, ±inf -> the clamp bounds."""

import numpy as np
import pytest

from kernels._util import with_threads
from kernels.test_binary import _strides6
from nqrt.kernels.lut2 import lut2_u8
from nqrt.quant.elementwise import lut2_table

CASES = [
    ((2, 16, 7, 9), (2, 16, 1, 1)),
    ((3, 5, 4), (3, 5, 4)),
    ((5, 1, 6), (1, 4, 1)),                  # both broadcast
    ((40,), (1,)),
    ((1, 2, 3, 2, 2, 5), (2, 1, 1, 2, 1, 5)),
    ((2, 8, 6, 6), (8, 1, 1)),
    ((2, 40, 40, 24), (2, 1, 1, 24)),        # > CHUNK elements: parallel grouped-row tasks
    ((3, 50, 1, 120), (1, 50, 4, 120)),
    ((1, 4, 70000), (1, 4, 1)),              # long rows: chunk tasks
]


def _run(a, b, table, a_perm=None, threads=2):
    out = np.broadcast_shapes(a.shape, b.shape)
    r = len(out)
    a_flat = np.ascontiguousarray(a.transpose(a_perm)).ravel() if a_perm else a.ravel()
    y = np.zeros(int(np.prod(out)), np.uint8)
    with_threads(threads, lut2_u8, a_flat, np.ascontiguousarray(b).ravel(),
                 np.array((1,) * (6 - r) + out, np.int64), _strides6(a.shape, out, a_perm),
                 _strides6(b.shape, out), table, y)
    return y.reshape(out)


@pytest.mark.parametrize("sa,sb", CASES)
def test_lut2_matches_the_lookup(sa, sb):
    rng = np.random.default_rng(len(sa) * 100 + sa[-1])
    a = rng.integers(0, 256, sa, dtype=np.uint8)
    b = rng.integers(0, 256, sb, dtype=np.uint8)
    table = rng.integers(0, 256, 65536, dtype=np.uint8)
    want = table[(a.astype(np.int64) << 8) | b.astype(np.int64)]
    got = _run(a, b, table)
    assert np.array_equal(got, want)
    assert np.array_equal(_run(a, b, table, threads=1), got)
    assert np.unique(got).size > min(100, got.size // 3)     # not vacuous


def test_lut2_reads_a_channels_last_operand_through_its_strides():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (2, 6, 5, 7), dtype=np.uint8)
    b = rng.integers(0, 256, (1, 6, 1, 1), dtype=np.uint8)
    table = rng.integers(0, 256, 65536, dtype=np.uint8)
    want = table[(a.astype(np.int64) << 8) | b.astype(np.int64)]
    assert np.array_equal(_run(a, b, table, a_perm=(0, 2, 3, 1)), want)


def test_lut2_table_rounds_the_float_op_once():
    s_a, z_a, s_b, z_b, s_y, z_y = 0.05, 100, 0.02, 0, 0.1, 30
    t = lut2_table(np.divide, s_a, z_a, s_b, z_b, s_y, z_y, 0, 255).reshape(256, 256)
    i, j = 180, 37
    assert t[i, j] == min(255, int(np.rint(s_a * (i - z_a) / (s_b * (j - z_b)) / s_y)) + z_y)
    assert (t[z_a + 1:, 0] == 255).all() and (t[:z_a, 0] == 0).all()   # ±inf: the clamp bounds
    assert t[z_a, 0] == z_y                                              # 0 / 0 = NaN -> z_y
    lo = lut2_table(np.maximum, 0.1, 0, 0.1, 0, 0.1, 0, 20, 200).reshape(256, 256)
    assert lo.min() == 20 and lo.max() == 200 and lo[50, 60] == 60
