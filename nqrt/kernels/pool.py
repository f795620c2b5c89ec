"""MaxPool (spec 4.5), QAveragePool (4.6) and QReduceMean (4.7) on uint8.

Pools: x uint8 [N, H, W, C], y uint8 [N, OH, OW, C] (NHWC, C-contiguous; OH/OW from y, as the
planner resolved pads and ceil_mode).  The window of output (oh, ow) covers rows
oh·sh − pad_t + i·dh (i < kh) and the same for columns; only positions inside x take part.
Pools are parallel over output rows (N·OH), the row loop inside the prange (measured 6-10%
faster than the same loop in a separate task function).  QReduceMean: over (o, channel block)
tasks summing row by row (or blocks of outputs when the channels are few), serial for at most
CHUNK inputs; the task function is called through xcall (_jit.py), so it is compiled once.  Integer math only, so results do not depend on threads.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, row_block
from nqrt.kernels.fixedpoint import offset_requant, output_u8


@njit(**PJIT)
def maxpool_u8(x, kh, kw, sh, sw, dh, dw, pad_t, pad_l, act_min, act_max, y):
    """y = clamp(max over the window's positions inside x, act_min, act_max).  Padding never
    wins; a window with no position inside x (possible only with pads ≥ kernel) gives 0
    before the clamp (the uint8 lowest value, as ONNX Runtime)."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    lo = np.uint8(act_min)
    hi = np.uint8(act_max)
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        for ow in range(OW):
            yr = y[n, oh, ow]
            for c in range(C):
                yr[c] = 0
            for i in range(kh):
                ih = oh * sh - pad_t + i * dh
                if ih < 0 or ih >= H:
                    continue
                for j in range(kw):
                    iw = ow * sw - pad_l + j * dw
                    if iw < 0 or iw >= W:
                        continue
                    xs = x[n, ih, iw]
                    for c in range(C):
                        yr[c] = max(yr[c], xs[c])
            for c in range(C):
                yr[c] = min(max(yr[c], lo), hi)


@njit(**JIT)
def avgpool_count(o, s, pad_begin, k, S, pad_end, count_include_pad):
    """Spec 4.6 count along one axis for output index o: (first, last+1) inside x and the count
    (inside x, or the window clipped by the end of the padded input when including pads)."""
    start = o * s - pad_begin
    lo = max(start, 0)
    hi = min(start + k, S)
    if count_include_pad:
        cnt = min(start + k, S + pad_end) - start
    else:
        cnt = max(hi - lo, 0)
    return lo, hi, cnt


@njit(**PJIT)
def avgpool_u8(x, z_x, kh, kw, sh, sw, pad_t, pad_l, pad_b, pad_r, count_include_pad, mult,
               shift, z_y, act_min, act_max, y):
    """y = clamp(requantize(Σ_{inside} (x − z_x), mult[count], shift[count]) + z_y); mult and
    shift int32 [kh·kw + 1] encode s_x / (s_y·count) (entry 0: a window with no position
    inside x, sum 0).

    Per output pixel the window's rows are summed over all channels at once (int32, the
    channel loop innermost: contiguous, vectorized; a per-channel walk over the window ran an
    Inception-v3 35x35x192 3x3 pool at ~1 ms).  The requantize uses fixedpoint.offset_requant
    for the pixel's count (the zero-point term −inside·z_x folded into its constant): a 64-bit
    vpmuldq product, a logical shift and 32-bit clamps; the int64 formula where that form is
    not representable."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    lo32 = np.int32(act_min)
    hi32 = np.int32(act_max)
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        h0, h1, ch = avgpool_count(oh, sh, pad_t, kh, H, pad_b, count_include_pad)
        acc = np.empty(C, np.int32)
        for ow in range(OW):
            w0, w1, cw = avgpool_count(ow, sw, pad_l, kw, W, pad_r, count_include_pad)
            count = ch * cw
            inside = max(h1 - h0, 0) * max(w1 - w0, 0)
            m0 = mult[count]
            sft = shift[count]
            for c in range(C):
                acc[c] = 0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    xs = x[n, ih, iw]
                    for c in range(C):
                        acc[c] += np.int32(xs[c])
            yr = y[n, oh, ow]
            corr = -np.int64(inside) * np.int64(z_x)
            ok, bc, off = offset_requant(corr, np.int64(inside) * 255, m0, sft)
            if ok:
                m = np.int64(np.int32(m0))
                un = np.uint64(sft)
                dz = np.int32(off - z_y)
                for c in range(C):
                    u = np.uint64(np.int64(acc[c]) * m + bc)
                    q = np.int32(np.int32(np.uint32(u >> un)) - dz)
                    yr[c] = np.uint8(np.int32(max(np.int32(min(q, hi32)), lo32)))
            else:
                for c in range(C):
                    yr[c] = output_u8(np.int64(acc[c]) + corr, m0, sft, z_y, act_min, act_max)


@njit(**JIT)
def _reduce_mean_outputs(x, z_x, m0, n, z_y, act_min, act_max, y, t0, t1):
    """Outputs t0..t1-1 (t = o·I + i) of reduce_mean_u8, one at a time (int64 sums: any R)."""
    O, R, I = x.shape
    for t in range(t0, t1):
        o = t // I
        i = t - o * I
        s = np.int64(0)
        for r in range(R):
            s += x[o, r, i]
        y[o, i] = output_u8(s - R * np.int64(z_x), m0, n, z_y, act_min, act_max)


RM_BLOCKS = 4              # channel blocks per o (a batch-1 SE squeeze still uses both threads)
RM_MIN_BLOCK = 16          # channels per block at least (the row loop's vector width)
RM_ROWS_INT32 = (2**31 - 1) // 255    # rows whose uint8 sums fit int32


@njit(inline="always", **JIT)
def reduce_mean_blocks(I):
    """Channel blocks per o for the row-wise sums (_reduce_mean_channels)."""
    return max(1, min(RM_BLOCKS, I // RM_MIN_BLOCK))


@njit(**JIT)
def _reduce_mean_channels(x, z_x, m0, n, z_y, act_min, act_max, y, task, nb):
    """Task (o, channel block j) of reduce_mean_u8: the block's sums accumulate row by row
    over contiguous channels (vectorized uint8 -> int32 adds), instead of one strided walk
    down R per output.  Integer sums: the result is the per-output loop's, bit for bit."""
    O, R, I = x.shape
    o = task // nb
    j = task - o * nb
    q, rem = I // nb, I % nb
    i0 = j * q + min(j, rem)
    w = q + (1 if j < rem else 0)
    acc = np.zeros(w, np.int32)        # R <= RM_ROWS_INT32: no overflow
    for r in range(R):
        row = x[o, r, i0:i0 + w]
        for k in range(w):
            acc[k] += np.int32(row[k])
    zs = R * np.int64(z_x)
    for k in range(w):
        y[o, i0 + k] = output_u8(np.int64(acc[k]) - zs, m0, n, z_y, act_min, act_max)


@njit(**PJIT)
def reduce_mean_u8(x, z_x, m0, n, z_y, act_min, act_max, y):
    """y[o, i] = clamp(requantize(Σ_r (x[o, r, i] − z_x), M0, n) + z_y) for x uint8 [O, R, I],
    y uint8 [O, I] (GlobalAveragePool in NHWC: O = N, R = H·W, I = C).  Parallel over (o,
    channel block) tasks with row-wise sums; a per-output loop when the channels are too few
    for vectors (I < RM_MIN_BLOCK) or R too long for int32 sums.  Measured on 2 threads (SE
    squeezes): 56x56x144 174 -> 35 us, 112x112x32 96 -> 60 us, 28x28x240 73 -> 14 us."""
    O, R, I = x.shape
    T = O * I
    if I < RM_MIN_BLOCK or R > RM_ROWS_INT32:
        if T * R <= CHUNK:
            xcall(_reduce_mean_outputs, x, z_x, m0, n, z_y, act_min, act_max, y, 0, T)
            return
        tb = row_block(T, R)
        for b in prange(-(-T // tb)):
            t0 = np.int64(b) * tb
            xcall(_reduce_mean_outputs, x, z_x, m0, n, z_y, act_min, act_max, y, t0,
                  min(T, t0 + tb))
        return
    nb = reduce_mean_blocks(I)
    if T * R <= CHUNK:
        for task in range(O * nb):
            xcall(_reduce_mean_channels, x, z_x, m0, n, z_y, act_min, act_max, y, task, nb)
        return
    for task in prange(O * nb):
        xcall(_reduce_mean_channels, x, z_x, m0, n, z_y, act_min, act_max, y, np.int64(task), nb)


# ----------------------------------------------------------------------------- ReduceMax / Min
@njit(**JIT)
def _reduce_extreme_rows(x, y, o0, o1, minimum, act_min, act_max):
    """Outputs o0..o1-1 of reduce_max_u8: each a running max (min) over R rows of I codes
    (unit stride: the loops vectorize as vpmaxub / vpminub)."""
    O, R, I = x.shape
    lo, hi = np.uint8(act_min), np.uint8(act_max)
    for o in range(o0, o1):
        acc = y[o]
        src = x[o, 0]
        for i in range(I):
            acc[i] = src[i]
        for r in range(1, R):
            src = x[o, r]
            if minimum:
                for i in range(I):
                    acc[i] = min(acc[i], src[i])
            else:
                for i in range(I):
                    acc[i] = max(acc[i], src[i])
        for i in range(I):
            acc[i] = min(max(acc[i], lo), hi)


@njit(**JIT)
def _reduce_extreme_inner(x, y, t0, t1, minimum, act_min, act_max):
    """Outputs t0..t1-1 of x [T, R] (I = 1: the reduced axis innermost, e.g. a channel max of
    NHWC pixels): one max (min) over each contiguous row."""
    T, R = x.shape
    lo, hi = np.uint8(act_min), np.uint8(act_max)
    for t in range(t0, t1):
        row = x[t]
        m = row[0]
        if minimum:
            for r in range(1, R):
                m = min(m, row[r])
        else:
            for r in range(1, R):
                m = max(m, row[r])
        y[t] = min(max(m, lo), hi)


@njit(**PJIT)
def reduce_max_u8(x, y, minimum, act_min, act_max):
    """Spec 4.22: y[o, i] = clamp(max (min) over r of x[o, r, i], act_min, act_max) for x
    uint8 [O, R, I], y uint8 [O, I], R >= 1.  Exact (codes are moved, never recomputed);
    each output is one task's, so the thread count does not matter."""
    O, R, I = x.shape
    if O * I == 0:
        return
    if I == 1:
        x2 = x.reshape((O, R))
        y2 = y.reshape(O)
        if O * R <= CHUNK:
            xcall(_reduce_extreme_inner, x2, y2, 0, O, minimum, act_min, act_max)
            return
        tb = row_block(O, R)
        for b in prange(-(-O // tb)):
            t0 = np.int64(b) * tb
            xcall(_reduce_extreme_inner, x2, y2, t0, min(O, t0 + tb), minimum, act_min, act_max)
        return
    if O * R * I <= CHUNK or O == 1:
        xcall(_reduce_extreme_rows, x, y, 0, O, minimum, act_min, act_max)
        return
    tb = row_block(O, R * I)
    for b in prange(-(-O // tb)):
        o0 = np.int64(b) * tb
        xcall(_reduce_extreme_rows, x, y, o0, min(O, o0 + tb), minimum, act_min, act_max)
