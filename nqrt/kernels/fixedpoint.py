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
