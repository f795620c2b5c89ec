"""QLut2 (formats/nq-v1.md 4.23): y = table[a·256 + b] elementwise over an ONNX broadcast pair
of uint8 tensors, the 65 536-entry table computed at convert time from the two operands'
grids, the float function (Div, Pow, Max, Min of two activations) and the output grid.

Exact by construction (a lookup), so every thread count and CPU gives the same bytes.  The
broadcast geometry is QAdd's / QMul's (rank-6 shape and element strides, merged into rows:
eltwise.merge_broadcast_rows); tasks are chunks of long rows or groups of short ones.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, merge_broadcast_rows, next_row, row_start, task_layout, task_offsets

TABLE_SIZE = 256 * 256


@njit(inline="always", **JIT)
def _lut2_row(a, oa, sa, b, ob, sb, L, table, y, oy):
    ys = y[oy:oy + L]
    for k in range(L):
        ys[k] = table[(np.int64(a[oa + k * sa]) << 8) | np.int64(b[ob + k * sb])]


@njit(**JIT)
def _lut2_task(t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb, table, y):
    if G == 1:
        cnt, oa, ob, oy = task_offsets(t, nch, K, L, shape, a_strides, b_strides, sa, sb)
        _lut2_row(a, oa, sa, b, ob, sb, cnt, table, y, oy)
        return
    idx = np.zeros(6, np.int64)
    r0 = t * G
    r1 = min(R, r0 + G)
    oa, ob = row_start(r0, K, shape, a_strides, b_strides, idx)
    for r in range(r0, r1):
        _lut2_row(a, oa, sa, b, ob, sb, L, table, y, r * L)
        oa, ob = next_row(K, shape, a_strides, b_strides, idx, oa, ob)


@njit(**PJIT)
def lut2_u8(a, b, shape, a_strides, b_strides, table, y):
    """y[i] = table[a[i]·256 + b[i]] over the broadcast pair (shape, a_strides, b_strides:
    int64[6], element strides of each operand, 0 where it broadcasts); table uint8[65536]."""
    K, L, R, sa, sb = merge_broadcast_rows(shape, a_strides, b_strides)
    nch, G, ntask = task_layout(L, R)
    if R * L <= CHUNK:
        for t in range(ntask):
            xcall(_lut2_task, t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb, table, y)
        return
    for t in prange(ntask):
        xcall(_lut2_task, np.int64(t), nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb,
              table, y)
