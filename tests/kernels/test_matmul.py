"""QMatMul kernels (portable and AVX2) against the naive reference (spec 4.19), bit for bit:
K odd, N not a multiple of the 16-column tile, M not a multiple of the 6-row tile and split
into several row tasks, more tasks than parallel groups (a group runs several), broadcast batch offsets, clamps, the extreme codes (|q − z| = 255 on both
sides at the K bound), and 1 vs 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

import naive
from kernels._util import with_threads
from nqrt import qmath
from nqrt.kernels import cpu
from nqrt.kernels.matmul import K_MAX, matmul_scratch_size, matmul_u8, matmul_u8_avx2

KERNELS = [matmul_u8] + ([matmul_u8_avx2] if cpu.has_avx2() else [])


def _run(fn, a, b, offs, nb, z_a, z_b, m0, n, z_y, lo, hi, threads=2):
    M, K = a.shape[-2:]
    N = b.shape[-1]
    y = np.full(nb * M * N, 7, np.uint8)
    scratch = np.full(matmul_scratch_size(nb, K, N) + 64, 0x5A, np.uint8)   # stale bytes
    with_threads(threads, fn, a.ravel(), b.ravel(), np.asarray(offs, np.int64), nb, M, K, N,
                 z_a, z_b, m0, n, z_y, lo, hi, y, scratch)
    return y.reshape(nb, M, N)


def _offsets(nb, M, K, N):
    return [v for i in range(nb) for v in (i * M * K, i * K * N)]


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize("nb,M,K,N", [(1, 1, 1, 1), (3, 5, 7, 3), (2, 37, 64, 17), (12, 9, 64, 33),
                                      (1, 70, 33, 16), (2, 4, 200, 64), (1, 33, 1, 40),
                                      (70, 5, 9, 20), (40, 80, 16, 7)])
def test_matmul_matches_reference(fn, nb, M, K, N):
    rng = np.random.default_rng(nb * 1000 + M * 10 + K)
    a = rng.integers(0, 256, (nb, M, K), dtype=np.uint8)
    b = rng.integers(0, 256, (nb, K, N), dtype=np.uint8)
    z_a, z_b, z_y = 117, 140, 90
    m0, n = qmath.quantize_multiplier(1.0 / (K * 300.0))
    want = naive.qmatmul(a, b, z_a, z_b, m0, n, z_y, 3, 250)
    for threads in (1, 2):
        got = _run(fn, a, b, _offsets(nb, M, K, N), nb, z_a, z_b, m0, n, z_y, 3, 250, threads)
        assert np.array_equal(got, want), (threads, np.argwhere(got != want)[:3])


@pytest.mark.parametrize("fn", KERNELS)
def test_matmul_broadcast_offsets(fn):
    """Batches [2, 3] x [1, 3]: the offset table repeats B for every outer index."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (2, 3, 6, 10), dtype=np.uint8)
    b = rng.integers(0, 256, (1, 3, 10, 7), dtype=np.uint8)
    offs = [v for i in range(2) for j in range(3) for v in ((i * 3 + j) * 60, j * 70)]
    m0, n = qmath.quantize_multiplier(1 / 3000.0)
    want = naive.qmatmul(a, b, 128, 128, m0, n, 128, 0, 255).reshape(6, 6, 7)
    assert np.array_equal(_run(fn, a, b, offs, 6, 128, 128, m0, n, 128, 0, 255), want)


@pytest.mark.parametrize("fn", KERNELS)
def test_matmul_extreme_codes_at_the_k_bound(fn):
    """K = K_MAX with every product 255·255 (and −255·255): the int32 sums reach
    ±K_MAX·65 025 < 2^31 exactly."""
    K = K_MAX
    a = np.zeros((1, 2, K), np.uint8)
    a[0, 1] = 255
    b = np.full((1, K, 2), 255, np.uint8)
    b[0, :, 1] = 0
    m0, n = qmath.quantize_multiplier(100.0 / (K * 65025.0))
    for z_a, z_b in ((255, 0), (0, 255)):
        want = naive.qmatmul(a, b, z_a, z_b, m0, n, 128, 0, 255)
        assert np.array_equal(_run(fn, a, b, [0, 0], 1, z_a, z_b, m0, n, 128, 0, 255), want)
        assert len(np.unique(want)) > 1


def test_portable_and_avx2_agree_on_random_shapes():
    if len(KERNELS) < 2:
        pytest.skip("no AVX2")
    rng = np.random.default_rng(11)
    for _ in range(10):
        nb, M, K, N = (int(v) for v in rng.integers(1, 40, 4))
        a = rng.integers(0, 256, (nb, M, K), dtype=np.uint8)
        b = rng.integers(0, 256, (nb, K, N), dtype=np.uint8)
        m0, n = qmath.quantize_multiplier(1.0 / (K * 200.0 + 1))
        args = (_offsets(nb, M, K, N), nb, 100, 150, m0, n, 128, 0, 255)
        assert np.array_equal(_run(matmul_u8, a, b, *args), _run(matmul_u8_avx2, a, b, *args))
