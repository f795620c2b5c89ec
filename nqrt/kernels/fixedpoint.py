"""Fixed-point primitives of spec section 3 as njit functions (inlined into every kernel).

Symbols follow formats/nq-v1.md: acc (int64 accumulator), m0 (M0, int32 range), n (shift,
1..62), z (zero point), [act_min, act_max] (output clamp within [0, 255]).  The plan-time
counterparts (quantize_multiplier, requantize_ref) live in nqrt/qmath.py.
"""

import numpy as np
from numba import njit

from nqrt.kernels._jit import JIT


@njit(**JIT)
def requantize(acc, m0, n):
    """(acc*M0 + 2^(n-1)) >> n in int64: one rounding, half toward +inf. Needs |acc*M0| < 2^62."""
    return (np.int64(acc) * np.int64(m0) + (np.int64(1) << np.int64(n - 1))) >> np.int64(n)


@njit(**JIT)
def clamp(v, lo, hi):
    """min(max(v, lo), hi) for lo <= hi."""
    return min(max(v, lo), hi)


@njit(**JIT)
def output_u8(acc, m0, n, z_y, act_min, act_max):
    """The epilogue: uint8(clamp(requantize(acc, M0, n) + z_y, act_min, act_max))."""
    return np.uint8(clamp(requantize(acc, m0, n) + z_y, act_min, act_max))


@njit(**JIT)
def offset_requant(b, amax, m0, n):
    """Constants of requantize with a logical shift, as the SIMD epilogues compute it (AVX2 has
    no 64-bit arithmetic shift): returns (ok, bc, off) such that for every integer d with
    |d| <= amax
        num = d·M0 + bc  lies in [0, 2^62)   and   (num >> n) − off == requantize(d + b, M0, n)
    (bc = b·M0 + 2^(n−1) + off·2^n; off >= 0 is the smallest offset making every numerator
    non-negative, so the caller adds z_y − off after the shift).  ok is False, and the caller
    must use requantize itself, when that is not representable: M0 outside [0, 2^31), n outside
    1..60, (|b| + amax)·M0 above 2^61, or off or the shifted value reaching 2^30 (never for the
    multipliers of spec 3.2 and realistic dot products).  Exact int64 arithmetic: every
    intermediate is checked before it could overflow."""
    b = np.int64(b)
    amax = np.int64(amax)
    m0 = np.int64(m0)
    n = np.int64(n)
    lim = np.int64(1) << np.int64(61)
    if m0 < 0 or m0 >= (np.int64(1) << np.int64(31)) or n < 1 or n > 60:
        return False, np.int64(0), np.int64(0)
    span = abs(b) + amax                       # |b| < 2^62, amax < 2^40: no overflow
    if m0 > 0 and span > lim // m0:
        return False, np.int64(0), np.int64(0)
    rnd = np.int64(1) << (n - 1)
    lo = (b - amax) * m0 + rnd                 # |.| <= 2^61 + 2^59
    hi = (b + amax) * m0 + rnd
    off = np.int64(0)
    if lo < 0:
        off = (-lo + (np.int64(1) << n) - 1) >> n
    if off >= (1 << 30):
        return False, np.int64(0), np.int64(0)
    top = (hi + (off << n)) >> n               # hi + off·2^n < 2^61 + 2^59 + 2^61 + 2^60
    if top >= (1 << 30):
        return False, np.int64(0), np.int64(0)
    return True, b * m0 + rnd + (off << n), off


HIGH_SHIFT_MIN = 32     # signed_requant: the shifted value starts from the numerator's high dword


@njit(**JIT)
def signed_requant(b, amax, m0, n, z):
    """Constants of requantize as a SIMD kernel computes it from the high dword of a 64-bit
    numerator (AVX2 has 32x32 -> 64-bit vpmuldq but no 64-bit arithmetic shift): returns
    (ok, bc, sh) such that for every integer d with |d| <= amax
        num = d·M0 + bc  lies in [-2^63, 2^63)   and
        (num >> 32) >> sh == requantize(d + b, M0, n) + z          (both shifts arithmetic)
    with bc = b·M0 + 2^(n−1) + z·2^n and sh = n − 32: the zero point is folded into bc;
    floor(floor(num / 2^32) / 2^sh) = floor(num / 2^n), and |num| < 2^63 makes the high
    dword an exact int32 (the kernel shifts it with vpsravd).  A zero multiplier gives z for
    any n, so it uses n = 32.  ok is False, and the caller must use requantize itself, when
    that is not representable: M0 outside [0, 2^31), n outside 32..62 (a real multiplier of
    1/2 or more), (|b| + amax)·M0 of 2^62 or more, or z·2^n + 2^(n−1) of 2^62 or more (z
    near 255 with n above 53).  Exact int64 arithmetic: every intermediate is checked
    before it could overflow."""
    b = np.int64(b)
    amax = np.int64(amax)
    m0 = np.int64(m0)
    n = np.int64(n)
    z = np.int64(z)
    if m0 == 0:
        n = np.int64(HIGH_SHIFT_MIN)
    lim = np.int64(1) << np.int64(62)
    if m0 < 0 or m0 >= (np.int64(1) << np.int64(31)) or n < HIGH_SHIFT_MIN or n > 62:
        return False, np.int64(0), np.int64(0)
    if abs(z) >= (np.int64(1) << np.int64(62 - n)) // 2:    # |z|·2^n + 2^(n−1) < 2^62
        return False, np.int64(0), np.int64(0)
    span = abs(b) + amax                       # |b| < 2^62, amax < 2^40: no overflow
    if m0 > 0 and span >= lim // m0:           # (|b| + amax)·M0 < 2^62
        return False, np.int64(0), np.int64(0)
    return True, b * m0 + (np.int64(1) << (n - 1)) + (z << n), n - HIGH_SHIFT_MIN
