"""Shared helpers of the kernel tests: requant constants that give non-trivial outputs and an
exact comparison with diff statistics."""

import numba
import numpy as np

from nqrt import qmath


def requant_params(M, acc_std, rng, per_channel=True, spread=90.0):
    """(mult, shift) int32 [M] mapping an accumulator of std `acc_std` to an output std of
    about `spread` codes (so a z_y near the middle saturates at both ends sometimes)."""
    base = spread / max(acc_std, 1.0)
    real = base * rng.uniform(0.5, 1.5, size=M) if per_channel else np.full(M, base)
    m0, n = qmath.quantize_multipliers(real)
    return m0, n


def dot_std(K):
    """Rough std of Σ_K (x − z_x)·w for uniform x, w."""
    return 74.0 * 73.0 * np.sqrt(K)


def assert_same(got, want, lo=None, hi=None):
    """np.array_equal, with the first mismatches in the message; optionally check the output
    is not vacuous: it hits both clamp bounds and has values strictly between them."""
    assert got.shape == want.shape, (got.shape, want.shape)
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)
        diff = got.astype(np.int64) - want.astype(np.int64)
        raise AssertionError(f"{len(bad)}/{got.size} differ, max |diff| {np.abs(diff).max()}, "
                             f"first at {bad[:5].tolist()}: got {got[tuple(bad[:5].T)]}, "
                             f"want {want[tuple(bad[:5].T)]}")
    if lo is not None:
        assert (want == lo).any() and (want == hi).any(), "no output at a clamp bound"
        assert ((want > lo) & (want < hi)).any(), "every output saturated"


def with_threads(n, fn, *args):
    """Run fn(*args) with n Numba threads (restoring the previous count)."""
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(old)
