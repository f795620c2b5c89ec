"""MaxPool (spec 4.5), QAveragePool (4.6) and QReduceMean (4.7) on uint8.

Pools: x uint8 [N, H, W, C], y uint8 [N, OH, OW, C] (NHWC, C-contiguous; OH/OW from y, as the
planner resolved pads and ceil_mode).  The window of output (oh, ow) covers rows
oh·sh − pad_t + i·dh (i < kh) and the same for columns; only positions inside x take part.
Pools are parallel over output rows (N·OH), the row loop inside the prange (measured 6-10%
faster than the same loop in a separate task function).  QReduceMean: over blocks of outputs,
serial for at most CHUNK inputs; the block function is called through xcall (_jit.py), so it
is compiled once.  Integer math only, so results do not depend on threads.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, row_block
from nqrt.kernels.fixedpoint import output_u8


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
    inside x, sum 0)."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        h0, h1, ch = avgpool_count(oh, sh, pad_t, kh, H, pad_b, count_include_pad)
        for ow in range(OW):
            w0, w1, cw = avgpool_count(ow, sw, pad_l, kw, W, pad_r, count_include_pad)
            count = ch * cw
            inside = max(h1 - h0, 0) * max(w1 - w0, 0)
            m0 = mult[count]
            sft = shift[count]
            yr = y[n, oh, ow]
            for c in range(C):
                s = np.int64(0)
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        s += x[n, ih, iw, c]
                yr[c] = output_u8(s - inside * np.int64(z_x), m0, sft, z_y, act_min, act_max)


@njit(**JIT)
def _reduce_mean_outputs(x, z_x, m0, n, z_y, act_min, act_max, y, t0, t1):
    """Outputs t0..t1-1 (t = o·I + i) of reduce_mean_u8."""
    O, R, I = x.shape
    for t in range(t0, t1):
        o = t // I
        i = t - o * I
        s = np.int64(0)
        for r in range(R):
            s += x[o, r, i]
        y[o, i] = output_u8(s - R * np.int64(z_x), m0, n, z_y, act_min, act_max)


@njit(**PJIT)
def reduce_mean_u8(x, z_x, m0, n, z_y, act_min, act_max, y):
    """y[o, i] = clamp(requantize(Σ_r (x[o, r, i] − z_x), M0, n) + z_y) for x uint8 [O, R, I],
    y uint8 [O, I] (GlobalAveragePool in NHWC: O = N, R = H·W, I = C).  Parallel over blocks
    of outputs (o, i)."""
    O, R, I = x.shape
    T = O * I
    if T * R <= CHUNK:
        xcall(_reduce_mean_outputs, x, z_x, m0, n, z_y, act_min, act_max, y, 0, T)
        return
    tb = row_block(T, R)
    for b in prange(-(-T // tb)):
        t0 = np.int64(b) * tb
        xcall(_reduce_mean_outputs, x, z_x, m0, n, z_y, act_min, act_max, y, t0, min(T, t0 + tb))
