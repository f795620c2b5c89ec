"""u8 x s8 -> s32 GEMM with fused requantize: SIMD fast paths + portable fallback (public API).

    y[p, m] = clamp(((acc * mult[m] + 2^(shift[m]-1)) >> shift[m]) + z_y, act_min, act_max)
    acc     = int64(sum_k x[p, k] * w[m, k] - z_x * wsum[m]) + bias[m]

(formats/nq-v1.md 3.3-3.5 and 4.2; w in [-127, 127], K <= 66 000).  Every path is bit-exact and
independent of the thread count (each output is computed by exactly one thread).

Paths (nqrt.kernels.cpu): "vnni512" (AVX-512 VNNI vpdpbusd), "avx2" (exact int16 vpmaddwd),
"portable" (plain Numba).  The packed weight layout depends on the path, so pack and run with the
same path.  Plan time (once per model):

    path = select_path()                        # or any of cpu.available_paths()
    wpack, wsum = pack_b(w, path)               # w: int8[M, K]
    scratch = np.empty(gemm_scratch_size(P, K, M, nthreads, path), np.uint8)
    kern = gemm_kernel(path)                    # an @njit(parallel) function

Run time (allocates nothing; callable from Python or from other njit code):

    kern(x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min, act_max, y, scratch)

x: u8[P, K] C-contiguous; bias, mult, shift: int32[M] (broadcast per-tensor values at plan
time); y: u8[P, M] C-contiguous.  The number of threads used is min(nthreads the scratch was
sized for, work available); P*K*M below ~64 K MACs runs on one thread.
`gemm_u8s8_requant(...)` is a checked Python convenience wrapper around the same kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from nqrt.kernels import cpu, vnni
from nqrt.kernels._jit import JIT, PJIT

PATHS = cpu.PATHS

# ----------------------------------------------------------------------------- portable path
PORT_ROWS = 4          # rows of x per block (reuse of each w row load)
PORT_THREAD_BYTES = 64  # the portable kernel needs no scratch; its size only encodes nthreads


@njit(**JIT)
def _portable_block(x, w, K, p0, p1, m0, m1, z_x, wsum, bias, mult, shift, z_y, act_min,
                    act_max, y):
    zx = np.int64(z_x)
    for p in range(p0, p1, PORT_ROWS):
        nr = min(PORT_ROWS, p1 - p)
        if nr == PORT_ROWS:
            x0 = x[p]
            x1 = x[p + 1]
            x2 = x[p + 2]
            x3 = x[p + 3]
            for m in range(m0, m1):
                wr = w[m]
                s0 = np.int32(0)
                s1 = np.int32(0)
                s2 = np.int32(0)
                s3 = np.int32(0)
                for k in range(K):
                    wk = np.int32(wr[k])
                    s0 += np.int32(x0[k]) * wk
                    s1 += np.int32(x1[k]) * wk
                    s2 += np.int32(x2[k]) * wk
                    s3 += np.int32(x3[k]) * wk
                _port_store(s0, p, m, zx, wsum, bias, mult, shift, z_y, act_min, act_max, y)
                _port_store(s1, p + 1, m, zx, wsum, bias, mult, shift, z_y, act_min, act_max, y)
                _port_store(s2, p + 2, m, zx, wsum, bias, mult, shift, z_y, act_min, act_max, y)
                _port_store(s3, p + 3, m, zx, wsum, bias, mult, shift, z_y, act_min, act_max, y)
        else:
            for q in range(p, p + nr):
                xr = x[q]
                for m in range(m0, m1):
                    wr = w[m]
                    s = np.int32(0)
                    for k in range(K):
                        s += np.int32(xr[k]) * np.int32(wr[k])
                    _port_store(s, q, m, zx, wsum, bias, mult, shift, z_y, act_min, act_max, y)


@njit(**JIT)
def _port_store(dot, p, m, zx, wsum, bias, mult, shift, z_y, act_min, act_max, y):
    acc = np.int64(dot) - zx * np.int64(wsum[m]) + np.int64(bias[m])
    n = np.int64(shift[m])
    v = ((acc * np.int64(mult[m]) + (np.int64(1) << (n - 1))) >> n) + np.int64(z_y)
    v = min(max(v, np.int64(act_min)), np.int64(act_max))
    y[p, m] = np.uint8(v)


@njit(**JIT)
def _portable_share(t, nt, split_rows, x, w, z_x, wsum, M, K, bias, mult, shift, z_y, act_min,
                    act_max, y):
    P = x.shape[0]
    if split_rows:
        nb = (P + PORT_ROWS - 1) // PORT_ROWS
        b0, b1 = vnni._split(nb, nt, t)
        _portable_block(x, w, K, b0 * PORT_ROWS, min(b1 * PORT_ROWS, P), 0, M, z_x, wsum, bias,
                        mult, shift, z_y, act_min, act_max, y)
    else:
        m0, m1 = vnni._split(M, nt, t)
        _portable_block(x, w, K, 0, P, m0, m1, z_x, wsum, bias, mult, shift, z_y, act_min,
                        act_max, y)


@njit(**PJIT)
def _portable_par(nt, split_rows, x, w, z_x, wsum, M, K, bias, mult, shift, z_y, act_min,
                  act_max, y):
    for t in prange(nt):
        _portable_share(t, nt, split_rows, x, w, z_x, wsum, M, K, bias, mult, shift, z_y,
                        act_min, act_max, y)


@njit(**JIT)
def gemm_portable(x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min, act_max, y,
                  scratch):
    """Portable path: plain int32 dot products (any CPU).  wpack = w[M, K] row-major int8."""
    P = x.shape[0]
    w = wpack[:M * K].reshape((M, K))
    nt, split_rows = vnni.plan_threads(P, K, M, PORT_ROWS, 8,
                                       max(1, scratch.size // PORT_THREAD_BYTES))
    if nt == 1:
        _portable_share(0, 1, split_rows, x, w, z_x, wsum, M, K, bias, mult, shift, z_y,
                        act_min, act_max, y)
    else:
        _portable_par(nt, split_rows, x, w, z_x, wsum, M, K, bias, mult, shift, z_y, act_min,
                      act_max, y)


def _pack_portable(w):
    w = np.ascontiguousarray(w, dtype=np.int8)
    wsum = w.astype(np.int64).sum(axis=1).astype(np.int32)
    return w.reshape(-1).copy(), wsum


# ----------------------------------------------------------------------------- public API
def select_path() -> str:
    """The best path for this host (see nqrt.kernels.cpu.gemm_path for the env overrides)."""
    return cpu.gemm_path()


def _check_path(path):
    if path is None:
        return select_path()
    if path not in PATHS:
        raise ValueError(f"unknown GEMM path {path!r}; expected one of {PATHS}")
    return path


def pack_b(w, path=None):
    """Plan time: int8 w[M, K] -> (wpack int8[:], wsum int32[M]) in `path`'s layout."""
    path = _check_path(path)
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError("w must be int8[M, K]")
    if path == "portable":
        return _pack_portable(w)
    return vnni.pack_for_path(w, path)


def pack_b_vnni(w):
    """Plan time: the vnni512 layout (groups of 4 k, 64-channel panels, zero padded)."""
    return vnni.pack_b(np.asarray(w, dtype=np.int8), "vnni512")


def gemm_scratch_size(P, K, M, nthreads, path=None) -> int:
    """Bytes of uint8 scratch for a (P, K) x (K, M) GEMM on up to nthreads threads."""
    path = _check_path(path)
    nthreads = max(int(nthreads), 1)
    if path == "portable":
        return nthreads * PORT_THREAD_BYTES
    return int(vnni.scratch_size(int(P), int(K), int(M), nthreads, path == "vnni512"))


def gemm_kernel(path=None):
    """The @njit kernel of `path` (common signature, see the module doc)."""
    path = _check_path(path)
    if path == "vnni512":
        if not cpu.has_vnni512():
            raise RuntimeError("the vnni512 GEMM path needs AVX-512 VNNI (host: "
                               + cpu.describe() + ")")
        return vnni.gemm_vnni512
    if path == "avx2":
        if not cpu.has_avx2():
            raise RuntimeError("the avx2 GEMM path needs AVX2 (host: " + cpu.describe() + ")")
        return vnni.gemm_avx2
    return gemm_portable


def gemm_u8s8_requant(x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min, act_max, y,
                      scratch=None, path=None, nthreads=None):
    """Checked Python wrapper: run the `path` kernel (default: select_path()) into y.

    scratch=None allocates one sized for nthreads (default: numba.get_num_threads()); pass a
    preallocated scratch (gemm_scratch_size) on hot paths."""
    path = _check_path(path)
    P = x.shape[0]
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != K or not x.flags.c_contiguous:
        raise ValueError("x must be C-contiguous uint8[P, K]")
    if y.dtype != np.uint8 or y.shape != (P, M) or not y.flags.c_contiguous:
        raise ValueError("y must be C-contiguous uint8[P, M]")
    for name, a in (("wsum", wsum), ("bias", bias), ("mult", mult), ("shift", shift)):
        if a.dtype != np.int32 or a.shape != (M,):
            raise ValueError(f"{name} must be int32[M]")
    if not (0 <= act_min <= act_max <= 255):
        raise ValueError("need 0 <= act_min <= act_max <= 255")
    if np.any(shift < 1) or np.any(shift > 62):
        raise ValueError("shift must be in [1, 62]")
    if scratch is None:
        if nthreads is None:
            import numba
            nthreads = numba.get_num_threads()
        scratch = np.empty(gemm_scratch_size(P, K, M, nthreads, path), np.uint8)
    gemm_kernel(path)(x, int(z_x), wpack, wsum, int(M), int(K), bias, mult, shift, int(z_y),
                      int(act_min), int(act_max), y, scratch)
    return y
