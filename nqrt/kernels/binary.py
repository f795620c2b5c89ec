"""QMul (formats/nq-v1.md 4.10): the product of two uint8 tensors with ONNX broadcasting.

Same operand convention as `add_u8` (eltwise.py, CONTRACT.md): y is C-contiguous over a
rank-6 `shape` (left-padded with 1s); a and b are flat arrays read at Σ idx·stride with
element strides (0 = broadcast along that axis).  As in `add_u8`, trailing dims that are
contiguous (or broadcast) in both operands are merged into one row, rows are split into
tasks of about CHUNK elements (chunks of long rows, or groups of short rows; serial for
small tensors, else a prange; the task is called through xcall, so it is compiled once),
and unit / zero inner strides run specialized loops that vectorize (int32 product × int32 multiplier: vpmuldq).  Each output element is computed
independently, so results do not depend on the thread count.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import (CHUNK, merge_broadcast_rows, next_row, row_start, task_layout,
                                  task_offsets)


@njit(inline="always", **JIT)
def _mul_row(a, oa, sa, b, ob, sb, L, z_a, z_b, m0, rnd, n, z_y, lo, hi, y, oy):
    """y[oy + k] for k < L from a[oa + k·sa], b[ob + k·sb].  |da·db| ≤ 65 025 fits int32."""
    ys = y[oy:oy + L]
    za = np.int32(z_a)
    zb = np.int32(z_b)
    m = np.int64(np.int32(m0))
    if sa == 1 and sb == 1:
        xa = a[oa:oa + L]
        xb = b[ob:ob + L]
        for k in range(L):
            v = np.int64(np.int32(np.int32(xa[k]) - za) * np.int32(np.int32(xb[k]) - zb)) * m + rnd
            ys[k] = np.uint8(min(max((v >> n) + z_y, lo), hi))
    elif sa == 1 and sb == 0:
        xa = a[oa:oa + L]
        db = np.int32(np.int32(b[ob]) - zb)
        for k in range(L):
            v = np.int64(np.int32(np.int32(xa[k]) - za) * db) * m + rnd
            ys[k] = np.uint8(min(max((v >> n) + z_y, lo), hi))
    elif sa == 0 and sb == 1:
        xb = b[ob:ob + L]
        da = np.int32(np.int32(a[oa]) - za)
        for k in range(L):
            v = np.int64(da * np.int32(np.int32(xb[k]) - zb)) * m + rnd
            ys[k] = np.uint8(min(max((v >> n) + z_y, lo), hi))
    else:
        for k in range(L):
            da = np.int64(a[oa + k * sa]) - z_a
            db = np.int64(b[ob + k * sb]) - z_b
            v = da * db * m + rnd
            ys[k] = np.uint8(min(max((v >> n) + z_y, lo), hi))


@njit(**JIT)
def _mul_task(t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb, z_a, z_b, m0, rnd,
              n, z_y, lo, hi, y):
    """Task t of the merged product (see eltwise.task_layout): one chunk of a long row, or G
    short rows."""
    if G == 1:
        cnt, oa, ob, oy = task_offsets(t, nch, K, L, shape, a_strides, b_strides, sa, sb)
        _mul_row(a, oa, sa, b, ob, sb, cnt, z_a, z_b, m0, rnd, n, z_y, lo, hi, y, oy)
        return
    idx = np.zeros(6, np.int64)
    r0 = t * G
    oa, ob = row_start(r0, K, shape, a_strides, b_strides, idx)
    for r in range(r0, min(R, r0 + G)):
        _mul_row(a, oa, sa, b, ob, sb, L, z_a, z_b, m0, rnd, n, z_y, lo, hi, y, r * L)
        oa, ob = next_row(K, shape, a_strides, b_strides, idx, oa, ob)


@njit(**PJIT)
def mul_u8(a, b, shape, a_strides, b_strides, z_a, z_b, m0, n, z_y, act_min, act_max, y):
    """y[i] = clamp(requantize((a[i] − z_a)·(b[i] − z_b), M0, n) + z_y, act_min, act_max).

    |(a − z_a)·(b − z_b)| ≤ 65 025 < 2^16, so acc·M0 < 2^47: exact in int64."""
    K, L, R, sa, sb = merge_broadcast_rows(shape, a_strides, b_strides)
    rnd = np.int64(1) << np.int64(n - 1)
    sft = np.int64(n)
    lo = np.int64(act_min)
    hi = np.int64(act_max)
    nch, G, ntask = task_layout(L, R)
    if R * L <= CHUNK:
        for t in range(ntask):
            xcall(_mul_task, t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb, z_a,
                  z_b, m0, rnd, sft, z_y, lo, hi, y)
        return
    for t in prange(ntask):
        xcall(_mul_task, np.int64(t), nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb,
              z_a, z_b, m0, rnd, sft, z_y, lo, hi, y)
