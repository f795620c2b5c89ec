"""QGemm (spec 4.2): y[p, m] = clamp(requantize(Σ_k (x[p,k] − z_x)·w[m,k] + bias[m]) + z_y).

Layout: x uint8 [P, K] C-contiguous, y uint8 [P, M] C-contiguous, weights packed by
`pack_gemm_weights` (private layout: int8 [Mp, K] row-major, Mp = M rounded up to NR with zero
rows, so the micro-kernel never needs a column tail).

Arithmetic: the micro-kernels compute the raw dot Σ x·w with x as stored (0..255); the zero
point is removed in the epilogue as dot − z_x·wsum[m] (wsum[m] = Σ_k w[m, k]).  |dot| ≤
255·127·K < 2^31 for K ≤ 66 000 (spec 3.5), so int32 accumulation is exact in any order and
results do not depend on the tiling or the thread count.

This module is the *portable* path (`gemm_u8`, plain Numba loops, any CPU; `gemm_tile` is
shared with conv's portable im2col path).  The SIMD paths ("avx2", "vnni512"; nqrt.kernels.cpu)
are the packed GEMM of vnni.py with its fused requantize, exported here under the runtime's
names with one common signature (they need scratch, see gemm_scratch_size):

    gemm_u8_avx2(x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min, act_max, y, scratch)
    gemm_u8_vnni512(...)     # same; call only when cpu.has_vnni512()

`pack_gemm_weights(w, path)` packs for one path; the layouts differ, so pack and run with the
same path.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels import vnni
from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.vnni import gemm_avx2 as gemm_u8_avx2          # noqa: F401  (runtime name)
from nqrt.kernels.vnni import gemm_vnni512 as gemm_u8_vnni512    # noqa: F401  (runtime name)

NR = 4            # weight rows per micro-tile (packed M is a multiple of NR)
TILE_P = 32       # rows of x per parallel tile (even)
TILE_M = 64       # weight rows per parallel tile (multiple of NR): 64·K bytes stay in L2


PATHS = ("vnni512", "avx2", "portable")


def _check_path(path):
    if path not in PATHS:
        raise ValueError(f"unknown GEMM path {path!r}; expected one of {PATHS}")


def pack_gemm_weights(w, path="portable"):
    """int8 w[M, K] -> (wpack int8[:], wsum int32[M]) in `path`'s layout.  Portable: int8
    [Mp, K] row-major, Mp = ceil(M / NR)·NR with zero rows; fast paths: vnni.pack_for_path."""
    _check_path(path)
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(f"expected int8[M, K] weights, got {w.dtype}{list(w.shape)}")
    if path != "portable":
        return vnni.pack_for_path(w, path)
    m, k = w.shape
    mp = -(-m // NR) * NR
    wpack = np.zeros((mp, k), dtype=np.int8)
    wpack[:m] = w
    wsum = w.astype(np.int32).sum(axis=1, dtype=np.int32)
    return wpack.reshape(-1), wsum


def gemm_scratch_size(P, K, M, nthreads, path="portable"):
    """Bytes of uint8 scratch the `path` GEMM needs for up to `nthreads` threads (portable: 0;
    the fast kernels derive their thread count from the scratch size)."""
    _check_path(path)
    if path == "portable":
        return 0
    return int(vnni.scratch_size(int(P), int(K), int(M), max(int(nthreads), 1), path == "vnni512"))


@njit(**JIT)
def _dot_2x4(x0, x1, w0, w1, w2, w3):
    """Raw int32 dots of two uint8 rows with four int8 rows (all length K = len(x0))."""
    a0 = np.int32(0); a1 = np.int32(0); a2 = np.int32(0); a3 = np.int32(0)  # noqa: E702
    b0 = np.int32(0); b1 = np.int32(0); b2 = np.int32(0); b3 = np.int32(0)  # noqa: E702
    for k in range(x0.shape[0]):
        xa = np.int32(x0[k])
        xb = np.int32(x1[k])
        v0 = np.int32(w0[k])
        v1 = np.int32(w1[k])
        v2 = np.int32(w2[k])
        v3 = np.int32(w3[k])
        # np.int32(...) keeps the accumulators 32-bit (Numba widens int32 + int32 to int64),
        # which lets LLVM use vpmaddwd; no wrap-around can occur (|dot| < 2^31).
        a0 = np.int32(a0 + xa * v0); a1 = np.int32(a1 + xa * v1)  # noqa: E702
        a2 = np.int32(a2 + xa * v2); a3 = np.int32(a3 + xa * v3)  # noqa: E702
        b0 = np.int32(b0 + xb * v0); b1 = np.int32(b1 + xb * v1)  # noqa: E702
        b2 = np.int32(b2 + xb * v2); b3 = np.int32(b3 + xb * v3)  # noqa: E702
    return a0, a1, a2, a3, b0, b1, b2, b3


@njit(**JIT)
def _dot_1x4(x0, w0, w1, w2, w3):
    """Raw int32 dots of one uint8 row with four int8 rows."""
    a0 = np.int32(0); a1 = np.int32(0); a2 = np.int32(0); a3 = np.int32(0)  # noqa: E702
    for k in range(x0.shape[0]):
        xa = np.int32(x0[k])
        a0 = np.int32(a0 + xa * np.int32(w0[k])); a1 = np.int32(a1 + xa * np.int32(w1[k]))  # noqa: E702
        a2 = np.int32(a2 + xa * np.int32(w2[k])); a3 = np.int32(a3 + xa * np.int32(w3[k]))  # noqa: E702
    return a0, a1, a2, a3


@njit(**JIT)
def _column(c, z_x, wsum, bias, mult, shift):
    """Per-column epilogue constants: (bias − z_x·wsum, M0, 2^(n−1), n) as int64."""
    n = np.int64(shift[c])
    off = np.int64(bias[c]) - np.int64(z_x) * np.int64(wsum[c])
    return off, np.int64(mult[c]), np.int64(1) << (n - 1), n


@njit(**JIT)
def _out(dot, col, z_y, act_min, act_max):
    """The spec epilogue (fixedpoint.output_u8) of one raw dot, with the column's constants
    hoisted: clamp(((dot + bias − z_x·wsum)·M0 + 2^(n−1)) >> n) + z_y) as uint8."""
    off, m0, rnd, n = col
    v = (((np.int64(dot) + off) * m0 + rnd) >> n) + z_y
    return np.uint8(min(max(v, act_min), act_max))


@njit(**JIT)
def _store4(yr, c, nj, d0, d1, d2, d3, c0, c1, c2, c3, z_y, act_min, act_max):
    """yr[c + j] = epilogue(d_j) for the first nj (1..4) of four columns."""
    yr[c] = _out(d0, c0, z_y, act_min, act_max)
    if nj > 1:
        yr[c + 1] = _out(d1, c1, z_y, act_min, act_max)
    if nj > 2:
        yr[c + 2] = _out(d2, c2, z_y, act_min, act_max)
    if nj > 3:
        yr[c + 3] = _out(d3, c3, z_y, act_min, act_max)


@njit(**JIT)
def gemm_tile(x, p0, p1, w, m0, m1, m_end, mo, z_x, wsum, bias, mult, shift, z_y,
              act_min, act_max, y):
    """y[p, mo + m] for p in [p0, p1), m in [m0, min(m1, m_end)); w int8 [Mp, K] (rows
    m0..m1 exist, m0 % NR == 0); x uint8 [·, K]; per-channel arrays indexed by mo + m.

    Loop order: NR weight rows (L1) against a block of x rows; the epilogue constants of the
    NR columns are computed once per block (the scalar epilogue is ~1/3 of a 3x3 conv's cost
    otherwise)."""
    for m in range(m0, m1, NR):
        w0 = w[m]
        w1 = w[m + 1]
        w2 = w[m + 2]
        w3 = w[m + 3]
        last = mo + m_end - 1                 # padded columns reuse a valid column's constants
        c0 = _column(min(mo + m, last), z_x, wsum, bias, mult, shift)
        c1 = _column(min(mo + m + 1, last), z_x, wsum, bias, mult, shift)
        c2 = _column(min(mo + m + 2, last), z_x, wsum, bias, mult, shift)
        c3 = _column(min(mo + m + 3, last), z_x, wsum, bias, mult, shift)
        nj = min(NR, m_end - m)
        p = p0
        while p + 1 < p1:
            d = _dot_2x4(x[p], x[p + 1], w0, w1, w2, w3)
            _store4(y[p], mo + m, nj, d[0], d[1], d[2], d[3], c0, c1, c2, c3, z_y, act_min, act_max)
            _store4(y[p + 1], mo + m, nj, d[4], d[5], d[6], d[7], c0, c1, c2, c3, z_y, act_min,
                    act_max)
            p += 2
        if p < p1:
            e = _dot_1x4(x[p], w0, w1, w2, w3)
            _store4(y[p], mo + m, nj, e[0], e[1], e[2], e[3], c0, c1, c2, c3, z_y, act_min, act_max)


@njit(**PJIT)
def gemm_u8(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, y):
    """QGemm on x uint8 [P, K] -> y uint8 [P, M] (contiguous); wpack/wsum from
    pack_gemm_weights; bias, mult, shift int32 [M].  Parallel over (row, column) tiles, so
    batch-1 (P = 1) layers split over output columns; each tile is a gemm_tile call through
    xcall (compiled once, not into every parallel-loop library)."""
    P, K = x.shape
    M = y.shape[1]
    if P == 0 or M == 0:
        return
    mp = -(-M // NR) * NR
    w = wpack.reshape((mp, K))
    n_pt = -(-P // TILE_P)
    n_mt = -(-mp // TILE_M)
    for t in prange(n_pt * n_mt):
        ti = np.int64(t)
        mt = ti // n_pt                    # column-major tile order: neighbours share w
        pt = ti - mt * n_pt
        xcall(gemm_tile, x, pt * TILE_P, min(P, pt * TILE_P + TILE_P), w, mt * TILE_M,
              min(mp, mt * TILE_M + TILE_M), M, 0, z_x, wsum, bias, mult, shift, z_y, act_min,
              act_max, y)
