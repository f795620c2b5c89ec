"""QMul (formats/nq-v1.md 4.10): the product of two uint8 tensors with ONNX broadcasting.

Same operand convention as `add_u8` (eltwise.py, CONTRACT.md): y is C-contiguous over a
rank-6 `shape` (left-padded with 1s); a and b are flat arrays read at Σ idx·stride with
element strides (0 = broadcast along that axis).  Rows (the first five dims) are split
between threads; each output element is computed independently, so results do not depend on
the thread count.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import PJIT
from nqrt.kernels.eltwise import _unravel5
from nqrt.kernels.fixedpoint import output_u8


@njit(**PJIT)
def mul_u8(a, b, shape, a_strides, b_strides, z_a, z_b, m0, n, z_y, act_min, act_max, y):
    """y[i] = clamp(requantize((a[i] − z_a)·(b[i] − z_b), M0, n) + z_y, act_min, act_max).

    |(a − z_a)·(b − z_b)| ≤ 65 025 < 2^16, so acc·M0 < 2^47: exact in int64."""
    L = shape[5]
    R = shape[0] * shape[1] * shape[2] * shape[3] * shape[4]
    sa = a_strides[5]
    sb = b_strides[5]
    for r in prange(R):
        i0, i1, i2, i3, i4 = _unravel5(r, shape)
        oa = (i0 * a_strides[0] + i1 * a_strides[1] + i2 * a_strides[2] + i3 * a_strides[3]
              + i4 * a_strides[4])
        ob = (i0 * b_strides[0] + i1 * b_strides[1] + i2 * b_strides[2] + i3 * b_strides[3]
              + i4 * b_strides[4])
        yr = y[r * L:(r + 1) * L]
        for k in range(L):
            da = np.int64(a[oa + k * sa]) - z_a
            db = np.int64(b[ob + k * sb]) - z_b
            yr[k] = output_u8(da * db, m0, n, z_y, act_min, act_max)
