import itertools
from fractions import Fraction

import numpy as np
import pytest

from nqrt import qmath
from nqrt.kernels import cpu
from nqrt.runtime import layout as L
from nqrt.kernels.eltwise import (add_u8, clip_u8, dequantize_u8, quantize_f32, requant_copy_u8,
                                  transpose_f32, transpose_u8)
import naive
from kernels._util import assert_same, with_threads

# QAdd kernels: the portable one, and the x86 one where this host can run it
ADD_KERNELS = {"portable": add_u8}
if "avx2" in cpu.available_paths():
    from nqrt.kernels.binary_x86 import add_u8_avx2, pair_consts
    ADD_KERNELS["avx2"] = add_u8_avx2


# ---- Quantize / Dequantize (spec 3.1) ---------------------------------------------------

def _quantize(x, scale, z):
    y = np.zeros(x.size, np.uint8)
    quantize_f32(x.ravel(), np.float32(scale), z, y)
    return y.reshape(x.shape)


@pytest.mark.parametrize("z", [0, 128, 255])
def test_quantize_ties_to_even(z):
    s = np.float32(0.25)                         # power of two: x / s is exact
    k = np.arange(-300, 300, dtype=np.float32)
    x = (k + np.float32(0.5)) * s                # x / s = k + 0.5 exactly
    y = _quantize(x, s, z)
    want = np.clip(np.where(k.astype(np.int64) % 2 == 0, k, k + 1).astype(np.int64) + z, 0, 255)
    assert_same(y, want.astype(np.uint8), 0, 255)
    assert_same(y, naive.quantize(x, s, z))


@pytest.mark.parametrize("z", [0, 128, 255])
def test_quantize_specials_and_random(z):
    rng = np.random.default_rng(z)
    s = np.float32(0.0371)
    x = (rng.standard_normal(40_000) * 6).astype(np.float32)       # > 2 parallel chunks
    x[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, np.float32(1e-45)]
    y = _quantize(x, s, z)
    assert_same(y, naive.quantize(x, s, z), 0, 255)
    assert y[0] == z and y[1] == 255 and y[2] == 0 and y[3] == z and y[4] == z
    finite = np.isfinite(x)
    with np.errstate(over="ignore"):
        assert_same(y[finite], qmath.quantize_float_ref(x[finite], float(s), z))
    y1 = np.zeros_like(y)
    with_threads(1, quantize_f32, x, s, z, y1)
    assert np.array_equal(y, y1)


def test_quantize_uses_float32_division():
    """x / s is an IEEE float32 division: here it gives exactly 10.5 (-> 10, ties to even)
    although the exact quotient is just above 10.5 (-> 11)."""
    s = np.float32(0.6405921)
    x = np.array([6.7262173], np.float32)
    assert x[0] / s == np.float32(10.5) and Fraction(float(x[0])) / Fraction(float(s)) > 10.5
    assert _quantize(x, s, 0)[0] == 10
    assert_same(_quantize(x, s, 0), naive.quantize(x, s, 0))


@pytest.mark.parametrize("z", [0, 128, 255])
def test_dequantize(z):
    q = np.arange(256, dtype=np.uint8).repeat(80)
    s = np.float32(0.0123)
    y = np.zeros(q.size, np.float32)
    dequantize_u8(q, s, z, y)
    assert np.array_equal(y, naive.dequantize(q, s, z))
    assert np.array_equal(y, qmath.dequantize_ref(q, float(s), z))


# ---- QAdd (spec 4.3) ---------------------------------------------------------------------

def _bcast_strides(shape, out_shape):
    """Rank-6 element strides of a contiguous array `shape` broadcast to `out_shape`."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    st = np.zeros(len(shape), np.int64)
    acc = 1
    for d in range(len(shape) - 1, -1, -1):
        st[d] = acc if shape[d] != 1 else 0
        acc *= shape[d]
    return np.concatenate([np.zeros(6 - len(shape), np.int64), st])


ADD_CASES = [  # a shape, b shape, z_a, z_b, z_y, act
    ((2, 3, 4, 5), (2, 3, 4, 5), 128, 128, 128, (0, 255)),
    ((2, 3, 4, 5), (3, 1, 5), 0, 255, 100, (100, 255)),
    ((1, 4, 1), (3, 1, 6), 255, 0, 10, (0, 255)),
    ((7, 1, 1, 1, 1, 9), (1,), 40, 200, 128, (20, 220)),
    ((5, 1), (1, 6), 128, 3, 250, (0, 255)),
    # more than CHUNK elements in short rows: grouped-row tasks in a prange, crossing the
    # batch (SE scale per image) and the broadcast middle axis
    ((2, 40, 40, 24), (2, 1, 1, 24), 3, 250, 128, (0, 255)),
    ((3, 50, 1, 120), (1, 50, 4, 120), 128, 128, 128, (0, 255)),
]


@pytest.mark.parametrize("kernel", list(ADD_KERNELS))
@pytest.mark.parametrize("case", ADD_CASES)
def test_add_broadcasting(case, kernel):
    add_u8 = ADD_KERNELS[kernel]
    sa, sb, z_a, z_b, z_y, (lo, hi) = case
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a = rng.integers(0, 256, sa, dtype=np.uint8)
    b = rng.integers(0, 256, sb, dtype=np.uint8)
    out = np.broadcast_shapes(sa, sb)
    ma, mb, shift = qmath.quantize_multiplier_pair(0.9, 0.55)
    shape6 = np.array((1,) * (6 - len(out)) + out, np.int64)
    y = np.zeros(int(np.prod(out)), np.uint8)
    args = (a.ravel(), b.ravel(), shape6, _bcast_strides(sa, out), _bcast_strides(sb, out), z_a,
            z_b, ma, mb, shift, z_y, lo, hi)
    add_u8(*args, y)
    want = naive.qadd(a, b, z_a, z_b, ma, mb, shift, z_y, lo, hi)
    assert_same(y.reshape(out), want, *((lo, hi) if want.size >= 100 else (None, None)))
    for threads in (1, 2):
        y1 = np.zeros_like(y)
        with_threads(threads, add_u8, *args, y1)
        assert np.array_equal(y, y1)


@pytest.mark.parametrize("kernel", list(ADD_KERNELS))
@pytest.mark.parametrize("n", [4, 16, 17, 24, 31])
def test_add_rounding_ties(kernel, n):
    """da·Ma + db·Mb = k·2^n ± 2^(n−1): half rounds toward +inf (2.5 -> 3, −2.5 -> −2); on the
    x86 kernel n = 16 .. 31 take its 16-element steps (32 elements: two steps), n = 4 the
    portable loop.  (Ma = 2^(n−1) must fit int32.)"""
    a = np.tile(np.array([133, 123, 131, 125], np.uint8), 8)   # da = 5, −5, 3, −3
    b = np.full(32, 128, np.uint8)
    one = np.array([1, 1, 1, 1, 1, 32], np.int64)
    st = np.array([0, 0, 0, 0, 0, 1], np.int64)
    y = np.zeros(32, np.uint8)
    m = 1 << (n - 1)                                            # da·Ma / 2^n = da / 2
    ADD_KERNELS[kernel](a, b, one, st, st, 128, 128, m, 0, n, 128, 0, 255, y)
    assert y.tolist() == [128 + 3, 128 - 2, 128 + 2, 128 - 1] * 8
    assert_same(y, naive.qadd(a, b, 128, 128, m, 0, n, 128, 0, 255))


@pytest.mark.skipif("avx2" not in ADD_KERNELS, reason="needs the x86 kernel")
def test_add_x86_matches_spec():
    """The x86 kernel's 32-bit form (binary_x86.py) against the spec, with its constants checked
    to be exact (pair_consts) in most draws: multipliers of both signs up to 2^31 − 1, shifts
    16..47, all zero points and clamps, extreme differences (±255), rows with tails (L mod 16
    != 0), a broadcast operand; draws outside the form (shift < 16 or > 47, a multiplier's
    high half outside int16) must give the same results through the portable loops."""
    rng = np.random.default_rng(11)
    fast = 0
    for draw in range(300):
        n = int(rng.integers(12, 52))
        ma, mb = (int(v) for v in rng.integers(-2**31 + 1, 2**31, 2))
        if draw % 2:                            # realistic magnitudes: real multipliers < 2
            ma >>= max(0, 30 - n + int(rng.integers(0, 3)))
            mb >>= max(0, 30 - n + int(rng.integers(0, 3)))
        z_a, z_b, z_y = (int(v) for v in rng.integers(0, 256, 3))
        lo, hi = sorted(int(v) for v in rng.integers(0, 256, 2)) if draw % 3 else (0, 255)
        L = int(rng.integers(1, 200))
        bshape = (L,) if draw % 5 else (1,)
        a = rng.integers(0, 256, L).astype(np.uint8)
        b = rng.integers(0, 256, bshape).astype(np.uint8)
        if L >= 4:                              # the extreme differences
            a[:4] = [0, 255, 0, 255]
            if bshape == (L,):
                b[:4] = [255, 0, 0, 255]
        out = (L,)
        shape6 = np.array((1,) * 5 + out, np.int64)
        y = np.zeros(L, np.uint8)
        add_u8_avx2(a, b, shape6, _bcast_strides(a.shape, out), _bcast_strides(b.shape, out),
                    z_a, z_b, ma, mb, n, z_y, lo, hi, y)
        assert_same(y, naive.qadd(a, np.broadcast_to(b, out), z_a, z_b, ma, mb, n, z_y, lo, hi))
        fast += bool(pair_consts(ma, mb, n, z_y)[0]) and L >= 16 and bshape == (L,)
    assert fast > 60


@pytest.mark.skipif("avx2" not in ADD_KERNELS, reason="needs the x86 kernel")
def test_add_x86_consts_bounds():
    """pair_consts: exact only within its bounds (module docstring of binary_x86)."""
    ma, mb, n = qmath.quantize_multiplier_pair(0.9, 0.55)
    assert pair_consts(ma, mb, n, 128)[0]
    assert not pair_consts(ma >> 20, mb >> 20, 15, 0)[0]       # shift below 16
    assert not pair_consts(1 << 20, 1 << 20, 48, 0)[0]         # shift above 47
    assert not pair_consts(2**31 - 1, 0, 31, 0)[0]             # high half 2^15: not int16
    assert not pair_consts(2**30, 2**30, 46, 255)[0]           # z_y·2^30 overflows int32


# ---- QConcat input, QClip ----------------------------------------------------------------

@pytest.mark.parametrize("z_x,z_y,real", [(128, 128, None), (100, 120, 1.3), (200, 140, 2.5)])
def test_requant_copy(z_x, z_y, real):
    rng = np.random.default_rng(z_x)
    x = rng.integers(0, 256, (37, 11), dtype=np.uint8)
    m0, n = (1 << 30, 30) if real is None else qmath.quantize_multiplier(real)
    y = np.full((37, 20), 7, np.uint8)
    requant_copy_u8(x, z_x, m0, n, z_y, 0, 255, y, 5)
    want = naive.requant_copy(x, z_x, m0, n, z_y, 0, 255)
    assert_same(y[:, 5:16], want, *((None, None) if real is None else (0, 255)))
    assert (y[:, :5] == 7).all() and (y[:, 16:] == 7).all()
    if real is None:
        assert np.array_equal(y[:, 5:16], x)          # the identity pair copies exactly


@pytest.mark.parametrize("z_x,z_y,lo,hi", [(128, 128, 0, 255), (90, 120, 0, 255), (128, 128, 10, 250)])
@pytest.mark.parametrize("rows", [37, 3000])
def test_requant_copy_identity_pair(z_x, z_y, lo, hi, rows):
    """The identity pair is a plain copy only with equal zero points and no clamp; otherwise
    the spec's formula (shifted / clamped values), serial and parallel."""
    rng = np.random.default_rng(rows)
    x = rng.integers(0, 256, (rows, 24), dtype=np.uint8)
    y = np.full((rows, 40), 7, np.uint8)
    requant_copy_u8(x, z_x, 1 << 30, 30, z_y, lo, hi, y, 9)
    assert np.array_equal(y[:, 9:33], naive.requant_copy(x, z_x, 1 << 30, 30, z_y, lo, hi))
    assert (y[:, :9] == 7).all() and (y[:, 33:] == 7).all()


def test_clip():
    x = np.arange(256, dtype=np.uint8).repeat(3)
    y = np.zeros_like(x)
    clip_u8(x, 17, 200, y)
    assert np.array_equal(y, np.clip(x, 17, 200))


# ---- Transpose ---------------------------------------------------------------------------

def _perms(rank):
    rng = np.random.default_rng(rank)
    all_p = list(itertools.permutations(range(rank)))
    idx = rng.choice(len(all_p), size=min(len(all_p), 6), replace=False)
    return [all_p[i] for i in idx]


@pytest.mark.parametrize("rank", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_transpose(rank, dtype):
    rng = np.random.default_rng(rank)
    shape = tuple(int(s) for s in rng.integers(1, 5, rank))
    x = rng.integers(0, 256, shape).astype(dtype)
    fn = transpose_u8 if dtype == np.uint8 else transpose_f32
    pad = 6 - rank
    shape6 = np.array((1,) * pad + shape, np.int64)
    for perm in _perms(rank):
        perm6 = np.array(tuple(range(pad)) + tuple(p + pad for p in perm), np.int64)
        y = np.zeros(x.size, dtype)
        fn(x.ravel(), shape6, perm6, y)
        assert np.array_equal(y, x.transpose(perm).ravel()), perm


def test_transpose_nchw_nhwc_threads():
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 7), dtype=np.uint8)
    shape6 = np.array([1, 1, 2, 5, 6, 7], np.int64)
    perm6 = np.array([0, 1, 2, 4, 5, 3], np.int64)
    y1 = np.zeros(x.size, np.uint8)
    y2 = np.zeros(x.size, np.uint8)
    with_threads(1, transpose_u8, x.ravel(), shape6, perm6, y1)
    with_threads(2, transpose_u8, x.ravel(), shape6, perm6, y2)
    assert np.array_equal(y1, x.transpose(0, 2, 3, 1).ravel()) and np.array_equal(y1, y2)


# ---- fast paths of the flat / row kernels (vectorized spans, 2-D transpose tiles) ----------

@pytest.mark.parametrize("C,H,W,N", [(3, 17, 19, 1), (2, 8, 9, 2), (4, 5, 33, 1), (5, 7, 7, 2),
                                     (16, 4, 4, 1), (17, 9, 10, 2), (128, 9, 11, 1), (33, 40, 3, 3),
                                     (3, 224, 224, 1)])
@pytest.mark.parametrize("direction", ["to_nhwc", "to_nchw"])
def test_transpose_2d_tiles(C, H, W, N, direction):
    rng = np.random.default_rng(C * 1000 + H)
    if direction == "to_nhwc":
        x = rng.integers(0, 256, (N, C, H, W), dtype=np.uint8)
        perm = (0, 2, 3, 1)
    else:
        x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
        perm = (0, 3, 1, 2)
    shape6 = np.array((1, 1) + x.shape, np.int64)
    perm6 = np.array((0, 1) + tuple(p + 2 for p in perm), np.int64)
    want = x.transpose(perm).ravel()
    for nt in (1, 2):
        y = np.zeros(x.size, np.uint8)
        with_threads(nt, transpose_u8, x.ravel(), shape6, perm6, y)
        assert np.array_equal(y, want)


@pytest.mark.parametrize("shape,perm", [((6, 20, 18), (1, 2, 0)), ((20, 6, 18), (1, 2, 0)),
                                        ((4, 5, 40, 17), (1, 0, 3, 2)), ((3, 40, 17, 2), (3, 0, 2, 1)),
                                        ((40, 17), (1, 0)), ((2, 3, 4, 5, 6, 7), (5, 4, 3, 2, 1, 0))])
def test_transpose_batched_and_outer_strides(shape, perm):
    rng = np.random.default_rng(len(shape))
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    pad = 6 - len(shape)
    shape6 = np.array((1,) * pad + shape, np.int64)
    perm6 = np.array(tuple(range(pad)) + tuple(p + pad for p in perm), np.int64)
    for fn, dt in ((transpose_u8, np.uint8), (transpose_f32, np.float32)):
        xx = x.astype(dt)
        y = np.zeros(x.size, dt)
        fn(xx.ravel(), shape6, perm6, y)
        assert np.array_equal(y, xx.transpose(perm).ravel())


@pytest.mark.parametrize("shape,perm", [((3, 4, 5, 6, 7, 40), (2, 0, 4, 1, 3, 5)),
                                        ((2, 3, 2, 3, 2, 3), (5, 3, 1, 4, 2, 0))])
def test_transpose_rows_odometer(shape, perm):
    """Row mode (y's innermost dim contiguous in x, or strided): each task unravels its first
    row once and steps the rest with an odometer that carries across all five outer dims;
    with more than CHUNK elements tasks start mid-way through the dims (2 threads)."""
    rng = np.random.default_rng(len(shape) + shape[-1])
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    want = x.transpose(perm).ravel()
    for nt in (1, 2):
        for fn, dt in ((transpose_u8, np.uint8), (transpose_f32, np.float32)):
            y = np.zeros(x.size, dt)
            with_threads(nt, fn, x.astype(dt).ravel(), np.array(shape, np.int64), np.array(perm, np.int64), y)
            assert np.array_equal(y, want.astype(dt)), (nt, dt)


def test_transpose_args_merge_dims_that_move_together():
    """Dims adjacent in both layouts become one kernel dim (the depth-to-space of a transposed
    convolution: runs of stride·C bytes); the kernel then still gives numpy's transpose for
    random layouts of random shapes."""
    assert L.transpose_args((2, 3, 4, 5), (0, 1, 2, 3), (0, 2, 3, 1)) == ([1, 1, 1, 2, 3, 20], [0, 1, 2, 3, 5, 4])
    assert L.transpose_args((1, 8, 1, 6), (0, 1, 2, 3), (0, 2, 3, 1)) == ([1, 1, 1, 1, 8, 6], [0, 1, 2, 3, 5, 4])
    rng = np.random.default_rng(7)
    for _ in range(40):
        rank = int(rng.integers(2, 8))
        shape = tuple(int(v) for v in rng.integers(1, 4, rank))
        src, dst = tuple(rng.permutation(rank)), tuple(rng.permutation(rank))
        try:
            shape6, perm6 = L.transpose_args(shape, src, dst)
        except ValueError:             # more than 6 dims that move separately
            continue
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        y = np.zeros(x.size, np.uint8)
        transpose_u8(np.ascontiguousarray(x.transpose(src)).ravel(), np.array(shape6, np.int64),
                     np.array(perm6, np.int64), y)
        assert np.array_equal(y, np.ascontiguousarray(x.transpose(dst)).ravel()), (shape, src, dst)


@pytest.mark.parametrize("outer,g,c", [((2, 28, 28), 2, 58), ((1, 14, 14), 2, 116),
                                       ((3, 7, 5), 4, 21), ((2, 9, 11), 3, 7), ((1, 40, 50), 2, 16),
                                       ((2, 6, 7), 16, 20), ((1, 5, 3), 20, 40)])
def test_transpose_many_small_batches(outer, g, c):
    """Channel shuffles (per pixel, g groups of c channels -> c groups of g): whole small 2-D
    transposes grouped into tasks, outer indices stepped across three dims, row blocks with
    an overlapping last block (c = 58, 116, 21, 20, 40) or scalar rows only (c = 7), for 1 and
    2 threads, serial and parallel (the first case has more than CHUNK elements)."""
    rng = np.random.default_rng(g * 100 + c)
    x = rng.integers(0, 256, outer + (g, c), dtype=np.uint8)
    shape6 = np.array((1,) * (6 - x.ndim) + x.shape, np.int64)
    perm6 = np.array(tuple(range(6 - x.ndim)) + tuple(6 - x.ndim + p for p in (0, 1, 2, 4, 3)),
                     np.int64)
    want = x.transpose(0, 1, 2, 4, 3).ravel()
    for nt in (1, 2):
        y = np.zeros(x.size, np.uint8)
        with_threads(nt, transpose_u8, x.ravel(), shape6, perm6, y)
        assert np.array_equal(y, want)


@pytest.mark.parametrize("n", [1, 15, 16_384, 16_385, 50_001])
def test_flat_kernels_sizes(n):
    """Serial (<= CHUNK) and chunked parallel spans agree with the references at every size."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    x[::97] = np.nan
    s = np.float32(0.031)
    assert_same(_quantize(x, s, 77), naive.quantize(x, s, 77))
    q = rng.integers(0, 256, n, dtype=np.uint8)
    f = np.zeros(n, np.float32)
    dequantize_u8(q, s, 77, f)
    assert np.array_equal(f, naive.dequantize(q, s, 77))
    c = np.zeros(n, np.uint8)
    clip_u8(q, 20, 200, c)
    assert np.array_equal(c, np.clip(q, 20, 200))


@pytest.mark.parametrize("Ni", [2, 3, 4, 8])
@pytest.mark.parametrize("batch,Nj", [(1, 38416), (3, 4107), (2, 529), (1, 8197)])
def test_transpose_few_rows(Ni, batch, Nj):
    """[batch, Nj, Ni] -> [batch, Ni, Nj] (a channels-last tensor with 2, 3, 4 or 8 channels
    into channels-first: CaiT's talking heads) through the de-interleave path: column chunks
    of TJ_SPLIT with the remainder in the last one, 16-column blocks with an overlapping last
    block; and back (interleaves of 2, 3, 4 or 8 rows); identical for 1 and 2 threads."""
    from nqrt.kernels.eltwise import split_rows_ok
    assert split_rows_ok(Ni, Nj, Ni)
    x = np.random.default_rng(Ni * Nj + batch).integers(0, 256, (batch, Nj, Ni), dtype=np.uint8)
    shape6 = np.array((1, 1, 1) + x.shape, np.int64)
    perm6 = np.array((0, 1, 2, 3, 5, 4), np.int64)
    want = x.transpose(0, 2, 1).ravel()
    back = np.ascontiguousarray(x.transpose(0, 2, 1))      # and the inverse (interleaves)
    for nt in (1, 2):
        y = np.zeros(x.size, np.uint8)
        with_threads(nt, transpose_u8, x.ravel(), shape6, perm6, y)
        assert np.array_equal(y, want)
        y = np.zeros(x.size, np.uint8)
        with_threads(nt, transpose_u8, back.ravel(), np.array((1, 1, 1) + back.shape, np.int64),
                     perm6, y)
        assert np.array_equal(y, x.ravel())
