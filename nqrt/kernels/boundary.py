"""Graph-boundary kernels: Quantize fused with the transpose into the runtime's layout (a
graph input, e.g. NCHW -> NHWC) and the transpose back fused with Dequantize (a graph output).

    quantize_transpose_f32(x, scale, z, shape, perm, y)   ==  quantize_f32, then transpose_u8
    dequantize_transpose_u8(x, scale, z, shape, perm, y)  ==  transpose_u8, then dequantize_u8

bit for bit, in one pass: the float tensor is read (or written) once and the uint8 tensor in
the other layout never makes a round trip through memory.  The work is split as transpose_u8
splits it (eltwise.transpose_tasks): batches of 2-D transposes run as 16 x 16 byte tiles (or
interleaves of 2..4 rows) whose rows are quantized as they are loaded / dequantized as they
are stored, with the same IEEE operations as the scalar code (eltwise.quantize_one,
dequantize_u8); anything else runs as rows of y with scalar conversions.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import (CHUNK, _outer_offset, _transpose_generic, make_interleave,
                                  make_t16x16, quantize_one, transpose_tasks)

# Output rows i per task (a multiple of 16): each task reads TI_Q contiguous floats of each of
# its x rows, long enough runs for the hardware prefetcher (64 floats were 1.5x slower).
TI_Q = 256
TI_DQ = 64
DQ_MIN_TASKS = 4        # a 2-D dequantize of fewer tasks gets smaller ones (see below)

_t16x16_q = make_t16x16("quantize")
_t16x16_dq = make_t16x16("dequantize")
_interleave2_q = make_interleave(2, "quantize")
_interleave3_q = make_interleave(3, "quantize")
_interleave4_q = make_interleave(4, "quantize")


@njit(inline="always", **JIT)
def _dequantize_one(v, s, zi):
    return np.float32(np.int32(np.int32(v) - zi)) * s


@njit(inline="always", **JIT)
def _q2d(x, xo, xrs, y, yo, i0, i1, Nj, s, zf):
    """Output rows i0..i1-1 of Y[i, j] = quantize(x[xo + j·xrs + i]) (j < Nj), Y row i at
    y[yo + i·Nj] (eltwise._t2d_task with the conversion)."""
    i = i0
    if Nj == 2 or Nj == 3 or Nj == 4:
        while i + 16 <= i1:
            if Nj == 2:
                _interleave2_q(x, xo + i, xrs, y, yo + i * Nj, s, zf)
            elif Nj == 3:
                _interleave3_q(x, xo + i, xrs, y, yo + i * Nj, s, zf)
            else:
                _interleave4_q(x, xo + i, xrs, y, yo + i * Nj, s, zf)
            i += 16
    elif Nj >= 16:
        # j-blocks outside: the 16 x rows of a j-block are read along their whole i range
        # (TI floats each) before the next 16 rows, not 16 floats of every x row per i-block
        ie = i0 + (i1 - i0) // 16 * 16
        j = 0
        while j + 16 <= Nj:
            for ib in range(i0, ie, 16):
                _t16x16_q(x, xo + j * xrs + ib, xrs, y, yo + ib * Nj + j, Nj, s, zf)
            j += 16
        for ii in range(i0, ie):
            for jj in range(j, Nj):
                y[yo + ii * Nj + jj] = quantize_one(x[xo + jj * xrs + ii], s, zf)
        i = ie
    for ii in range(i, i1):
        for jj in range(Nj):
            y[yo + ii * Nj + jj] = quantize_one(x[xo + jj * xrs + ii], s, zf)


@njit(inline="always", **JIT)
def _dq2d(x, xo, xrs, y, yo, i0, i1, Nj, s, zi):
    """Output rows i0..i1-1 of Y[i, j] = dequantize(x[xo + j·xrs + i]) (j < Nj)."""
    i = i0
    if Nj >= 16:
        while i + 16 <= i1:
            j = 0
            while j + 16 <= Nj:
                _t16x16_dq(x, xo + j * xrs + i, xrs, y, yo + i * Nj + j, Nj, s, np.int64(zi))
                j += 16
            for ii in range(i, i + 16):
                for jj in range(j, Nj):
                    y[yo + ii * Nj + jj] = _dequantize_one(x[xo + jj * xrs + ii], s, zi)
            i += 16
    for ii in range(i, i1):
        for jj in range(Nj):
            y[yo + ii * Nj + jj] = _dequantize_one(x[xo + jj * xrs + ii], s, zi)


@njit(inline="always", **JIT)
def _tile_task(t, K, Ni, Nj, ti, ys, st):
    """2-D mode (K >= 0) task t of transpose_tasks with ti output rows per task:
    (x offset of its batch, y offset of its batch, first row, end row)."""
    nti = -(-Ni // ti)
    o = t // nti
    i0 = (t - o * nti) * ti
    return _outer_offset(o, K, ys, st), o * Ni * Nj, i0, min(Ni, i0 + ti)


@njit(inline="always", **JIT)
def _row_task(t, rb, ys):
    """Row mode (K = -1) task t: (row length, first row, end row) of y."""
    R = ys[0] * ys[1] * ys[2] * ys[3] * ys[4]
    return ys[5], t * rb, min(R, t * rb + rb)


@njit(**JIT)
def _q_task(t, K, Ni, Nj, xrs, rb, x, s, zf, y, ys, st):
    """Task t of quantize_transpose_f32 (the tasks of eltwise.transpose_tasks)."""
    if K >= 0:
        xo, yo, i0, i1 = _tile_task(t, K, Ni, Nj, TI_Q, ys, st)
        _q2d(x, xo, xrs, y, yo, i0, i1, Nj, s, zf)
        return
    L, r0, r1 = _row_task(t, rb, ys)
    for r in range(r0, r1):
        o = _outer_offset(r, 5, ys, st)
        for k in range(L):
            y[r * L + k] = quantize_one(x[o + k * st[5]], s, zf)


@njit(**JIT)
def _dq_task(t, K, Ni, Nj, xrs, rb, ti, x, s, zi, y, ys, st):
    """Task t of dequantize_transpose_u8 (2-D mode: ti output rows per task)."""
    if K >= 0:
        xo, yo, i0, i1 = _tile_task(t, K, Ni, Nj, ti, ys, st)
        _dq2d(x, xo, xrs, y, yo, i0, i1, Nj, s, zi)
        return
    L, r0, r1 = _row_task(t, rb, ys)
    for r in range(r0, r1):
        o = _outer_offset(r, 5, ys, st)
        for k in range(L):
            y[r * L + k] = _dequantize_one(x[o + k * st[5]], s, zi)


@njit(**PJIT)
def quantize_transpose_f32(x, scale, z, shape, perm, y):
    """y uint8 = Quantize(x float32).reshape(shape).transpose(perm), C-contiguous (flat);
    shape/perm rank 6 as for transpose_u8."""
    ys, st = _transpose_generic(x, shape, perm, y)
    n = x.size
    s = np.float32(scale)
    zf = np.float32(z)
    K, Ni, Nj, xrs, rb, ntask = transpose_tasks(n, ys, st, TI_Q)
    if n <= CHUNK:
        for t in range(ntask):
            xcall(_q_task, t, K, Ni, Nj, xrs, rb, x, s, zf, y, ys, st)
        return
    for t in prange(ntask):
        xcall(_q_task, np.int64(t), K, Ni, Nj, xrs, rb, x, s, zf, y, ys, st)


@njit(**PJIT)
def dequantize_transpose_u8(x, scale, z, shape, perm, y):
    """y float32 = Dequantize(x uint8.reshape(shape).transpose(perm)), C-contiguous (flat)."""
    ys, st = _transpose_generic(x, shape, perm, y)
    n = x.size
    s = np.float32(scale)
    zi = np.int32(z)
    ti = TI_DQ
    K, Ni, Nj, xrs, rb, ntask = transpose_tasks(n, ys, st, ti)
    if K >= 0 and n > CHUNK and ntask < DQ_MIN_TASKS:
        # few tasks (a 64-channel output: its Ni = 64 channel rows were one task of TI_DQ rows,
        # so one thread did all of it): tasks of fewer rows, down to 16 (the tile height); how
        # the rows are split never changes a value
        ti = max(16, min(TI_DQ, (Ni // DQ_MIN_TASKS) // 16 * 16))
        K, Ni, Nj, xrs, rb, ntask = transpose_tasks(n, ys, st, ti)
    if n <= CHUNK:
        for t in range(ntask):
            xcall(_dq_task, t, K, Ni, Nj, xrs, rb, ti, x, s, zi, y, ys, st)
        return
    for t in prange(ntask):
        xcall(_dq_task, np.int64(t), K, Ni, Nj, xrs, rb, ti, x, s, zi, y, ys, st)
