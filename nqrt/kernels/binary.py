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
from nqrt.kernels.fixedpoint import offset_requant


PRODUCT_MAX = 255 * 255    # |(a − z_a)·(b − z_b)|


@njit(inline="always", **JIT)
def _product_consts(m0, n, z_y, lo, hi):
    """The loop constants of _requant_product: (M0 as int64, C, n as uint64, D − z_y, lo, hi
    as int32, ok) with C, D from fixedpoint.offset_requant for every product |p| ≤
    PRODUCT_MAX: p·M0 + C ≥ 0 and (p·M0 + C) >>> n − D is the spec's rounding shift, both
    terms below 2^30, so the loops run on vpmuldq, a logical shift and 32-bit clamps (AVX2 has
    no 64-bit arithmetic shift or min/max).  ok is False (the int64 loops run) for a negative
    or very large multiplier."""
    ok, c, d = offset_requant(0, PRODUCT_MAX, m0, n)
    return (np.int64(np.int32(m0)), c, np.uint64(n), np.int32(d - z_y), np.int32(lo),
            np.int32(hi), ok)


@njit(inline="always", **JIT)
def _requant_product(p, m, c, un, dz, lo32, hi32):
    """clamp(floor((p·M0 + rnd) / 2^n) + z_y) for an int32 product p, from _product_consts' C
    and D (dz = D − z_y): a 64-bit vpmuldq, a logical shift and 32-bit arithmetic.  The explicit
    int32 casts keep Numba from widening the clamp to int64 (no vector int64 min/max on AVX2:
    0.92 -> 0.69 ns per element)."""
    u = np.uint64(np.int64(p) * m + c)
    q = np.int32(np.int32(np.uint32(u >> un)) - dz)
    return np.uint8(np.int32(max(np.int32(min(q, hi32)), lo32)))


@njit(inline="always", **JIT)
def _mul_row(a, oa, sa, b, ob, sb, L, z_a, z_b, m0, rnd, n, z_y, lo, hi, y, oy):
    """y[oy + k] for k < L from a[oa + k·sa], b[ob + k·sb].  |da·db| ≤ 65 025 fits int32."""
    ys = y[oy:oy + L]
    za = np.int32(z_a)
    zb = np.int32(z_b)
    m, c, un, dz, lo32, hi32, fast = _product_consts(m0, n, z_y, lo, hi)
    if fast and sa == 1 and sb == 1:
        xa = a[oa:oa + L]
        xb = b[ob:ob + L]
        for k in range(L):
            p = np.int32(np.int32(np.int32(xa[k]) - za) * np.int32(np.int32(xb[k]) - zb))
            ys[k] = _requant_product(p, m, c, un, dz, lo32, hi32)
    elif fast and sa == 1 and sb == 0:
        xa = a[oa:oa + L]
        db = np.int32(np.int32(b[ob]) - zb)
        for k in range(L):
            p = np.int32(np.int32(np.int32(xa[k]) - za) * db)
            ys[k] = _requant_product(p, m, c, un, dz, lo32, hi32)
    elif fast and sa == 0 and sb == 1:
        xb = b[ob:ob + L]
        da = np.int32(np.int32(a[oa]) - za)
        for k in range(L):
            p = np.int32(da * np.int32(np.int32(xb[k]) - zb))
            ys[k] = _requant_product(p, m, c, un, dz, lo32, hi32)
    elif sa == 1 and sb == 1:
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


# Rows shorter than this take _mul_rows_repeated_b: measured on 2 threads (SE products of
# H x W x C), 16 channels 79 -> 29 us, 64: 132 -> 97 us, 96: 165 -> 143 us; from 144 on the
# repeated row costs more to build than the per-row loops it saves.
REPEAT_MAX_L = 128


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
    r1 = min(R, r0 + G)
    oa, ob = row_start(r0, K, shape, a_strides, b_strides, idx)
    if (sa == 1 and sb == 1 and L < REPEAT_MAX_L and K >= 1 and a_strides[K - 1] == L
            and b_strides[K - 1] == 0):
        _mul_rows_repeated_b(a, b, shape, a_strides, b_strides, K, L, r0, r1, idx, oa, ob, z_a,
                             z_b, m0, rnd, n, z_y, lo, hi, y)
        return
    for r in range(r0, r1):
        _mul_row(a, oa, sa, b, ob, sb, L, z_a, z_b, m0, rnd, n, z_y, lo, hi, y, r * L)
        oa, ob = next_row(K, shape, a_strides, b_strides, idx, oa, ob)


@njit(inline="always", **JIT)
def _mul_rows_repeated_b(a, b, shape, a_strides, b_strides, K, L, r0, r1, idx, oa, ob, z_a, z_b,
                         m0, rnd, n, z_y, lo, hi, y):
    """Rows r0..r1-1 when consecutive rows along the last row dim are contiguous in a and
    read the same row of b (an SE block's channels-last x times its per-image channel scale):
    each run of such rows is one flat loop over a and y against b's row repeated in `rep`
    (int32 b − z_b, rebuilt only when the run reads another row of b), instead of a short
    loop per row."""
    rows_max = min(r1 - r0, shape[K - 1])
    rep = np.empty(rows_max * L, np.int32)
    zb = np.int32(z_b)
    za = np.int32(z_a)
    m, c, un, dz, lo32, hi32, fast = _product_consts(m0, n, z_y, lo, hi)
    rep_ob = np.int64(-1)
    r = r0
    while r < r1:
        nrun = min(r1 - r, shape[K - 1] - idx[K - 1])      # rows until the last row dim wraps
        if ob != rep_ob:
            for k in range(L):
                rep[k] = np.int32(b[ob + k]) - zb
            for j in range(1, rows_max):
                rep[j * L:(j + 1) * L] = rep[:L]
            rep_ob = ob
        xa = a[oa:oa + nrun * L]
        ys = y[r * L:(r + nrun) * L]
        if fast:
            for k in range(nrun * L):
                p = np.int32(np.int32(np.int32(xa[k]) - za) * rep[k])
                ys[k] = _requant_product(p, m, c, un, dz, lo32, hi32)
        else:
            for k in range(nrun * L):
                v = np.int64((np.int32(xa[k]) - za) * rep[k]) * m + rnd
                ys[k] = np.uint8(min(max((v >> n) + z_y, lo), hi))
        r += nrun
        if r < r1:
            oa, ob = row_start(r, K, shape, a_strides, b_strides, idx)


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
