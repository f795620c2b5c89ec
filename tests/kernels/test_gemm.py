"""The runtime's QGemm kernels (nqrt/kernels/gemm.py names) bit for bit vs tests/naive.py: the
portable gemm_u8 and, through the same packer / scratch-size API, every fast path this host
can run.  (test_gemm_fast.py covers the fast GEMM module itself in more depth.)"""

import numpy as np
import pytest

from nqrt.kernels import cpu
from nqrt.kernels import gemm as G
from nqrt.kernels.gemm import gemm_u8, pack_gemm_weights
from nqrt.kernels.vnni import with_requant_table
from naive import qgemm
from kernels._util import assert_same, dot_std, requant_params, with_threads

CASES = [  # P, K, M, z_x, z_y, act_min, act_max, per_channel
    (7, 33, 13, 128, 128, 0, 255, True),
    (1, 200, 37, 0, 100, 0, 255, True),       # batch 1: split over columns
    (64, 17, 5, 255, 3, 3, 255, False),       # ReLU clamp, per-tensor multiplier
    (33, 64, 130, 7, 120, 120, 180, True),    # ReLU6-like clamp, 3 column tiles
    (2, 1, 4, 128, 128, 0, 255, True),        # K = 1
    (65, 300, 3, 200, 60, 0, 255, True),      # odd P over row tiles, M < NR
]


def _run(P, K, M, z_x, z_y, lo, hi, per_channel, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (P, K), dtype=np.uint8)
    w = rng.integers(-127, 128, (M, K)).astype(np.int8)
    bias = rng.integers(-50_000, 50_000, M).astype(np.int32)
    mult, shift = requant_params(M, dot_std(K), rng, per_channel)
    wpack, wsum = pack_gemm_weights(w)
    y = np.zeros((P, M), np.uint8)
    gemm_u8(x, z_x, wpack, wsum, bias, mult, shift, z_y, lo, hi, y)
    return y, qgemm(x, z_x, w, bias, mult, shift, z_y, lo, hi), (x, z_x, wpack, wsum, bias, mult,
                                                                    shift, z_y, lo, hi)


@pytest.mark.parametrize("case", CASES)
def test_gemm_matches_naive(case):
    y, want, _ = _run(*case, seed=1)
    P, M = case[0], case[2]
    assert_same(y, want, *(case[5:7] if P * M >= 300 else (None, None)))


def test_gemm_k_bound_exact():
    """K = 66 000 with extreme values: the int32 dot is at its bound and still exact."""
    K = 66_000
    x = np.full((2, K), 255, np.uint8)
    x[1] = 0
    w = np.full((4, K), 127, np.int8)
    w[1] = -127
    bias = np.array([-(2**31), 2**31 - 1, 0, 5], np.int32)
    mult = np.full(4, 1 << 30, np.int32)
    shift = np.full(4, 62, np.int32)
    wpack, wsum = pack_gemm_weights(w)
    y = np.zeros((2, 4), np.uint8)
    for z_x in (0, 255):
        gemm_u8(x, z_x, wpack, wsum, bias, mult, shift, 128, 0, 255, y)
        assert_same(y, qgemm(x, z_x, w, bias, mult, shift, 128, 0, 255))


@pytest.mark.parametrize("P", [1, 96])
def test_gemm_thread_count_invariant(P):
    _, _, args = _run(P, 150, 70, 128, 128, 0, 255, True, seed=2)
    y1 = np.zeros((P, 70), np.uint8)
    y2 = np.zeros((P, 70), np.uint8)
    with_threads(1, gemm_u8, *args, y1)
    with_threads(2, gemm_u8, *args, y2)
    assert np.array_equal(y1, y2)


FAST = {"avx2": G.gemm_u8_avx2, "vnni512": G.gemm_u8_vnni512}
PATHS = list(cpu.available_paths())


def _run_path(path, x, z_x, w, bias, mult, shift, z_y, lo, hi, nthreads=2, scratch_threads=None):
    P, K = x.shape
    M = w.shape[0]
    wpack, wsum = pack_gemm_weights(w, path)
    assert np.array_equal(wsum, w.astype(np.int64).sum(axis=1))
    wpack = with_requant_table(wpack, path, K, wsum, bias, mult, shift, z_x, z_y)   # as planned
    y = np.full((P, M), 77, np.uint8)
    if path == "portable":
        assert G.gemm_scratch_size(P, K, M, nthreads, path) == 0
        with_threads(nthreads, gemm_u8, x, z_x, wpack, wsum, bias, mult, shift, z_y, lo, hi, y)
        return y
    st = nthreads if scratch_threads is None else scratch_threads
    scratch = np.zeros(G.gemm_scratch_size(P, K, M, st, path), np.uint8)
    with_threads(nthreads, FAST[path], x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, lo, hi,
                 y, scratch)
    return y


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES + [(1, 768, 96, 128, 128, 0, 255, True),
                                          (200, 96, 48, 0, 255, 0, 255, True)])
def test_gemm_paths_match_naive(case, path):
    P, K, M, z_x, z_y, lo, hi, per_channel = case
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (P, K), dtype=np.uint8)
    w = rng.integers(-127, 128, (M, K)).astype(np.int8)
    bias = rng.integers(-50_000, 50_000, M).astype(np.int32)
    mult, shift = requant_params(M, dot_std(K), rng, per_channel)
    want = qgemm(x, z_x, w, bias, mult, shift, z_y, lo, hi)
    for nt, st in ((1, 1), (2, 2), (2, 3)):
        assert_same(_run_path(path, x, z_x, w, bias, mult, shift, z_y, lo, hi, nt, st), want)


def test_gemm_path_api_rejects_unknown_path():
    with pytest.raises(ValueError):
        pack_gemm_weights(np.zeros((2, 3), np.int8), "sse9")
    with pytest.raises(ValueError):
        G.gemm_scratch_size(1, 3, 2, 1, "sse9")
