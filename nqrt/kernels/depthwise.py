"""Depthwise QConv (spec 4.1 with group == C == M) on NHWC uint8 activations.

    y[n, oh, ow, c] = clamp(requantize(Σ_{i,j inside x} (x[n, ih, iw, c] − z_x)·w[c, i, j]
                      + bias[c]) + z_y)

Channels are innermost (NHWC), so the per-channel multiply-add vectorizes; padded positions are
skipped (they would contribute (z_x − z_x)·w = 0).  Packed weights: int8 [kh, kw, C].
Parallel over output rows (N·OH): the scratch holds T slices of `slice_bytes` (T = the
planner's thread count); prange iteration t owns rows [t·R/T, (t+1)·R/T) and slice t.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT
from nqrt.kernels.fixedpoint import output_u8


def pack_depthwise_weights(w):
    """int8 w[C, 1, kh, kw] -> int8[kh·kw·C] in (i, j, c) order."""
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)).reshape(-1)


@njit(**JIT)
def depthwise_scratch_bytes(C, kh, kw, OW):
    """Bytes of scratch one thread needs (before alignment)."""
    return 4 * C                                  # int32 accumulators, one per channel


@njit(**JIT)
def _depthwise_pixel(x, n, oh, ow, wdw, z_x, kh, kw, sh, sw, dh, dw, pad_t, pad_l, acc):
    """acc[c] = Σ_{i,j inside x} (x[n, ih, iw, c] − z_x)·w[c, i, j]  (int32, exact)."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    for c in range(C):
        acc[c] = 0
    zx = np.int32(z_x)
    for i in range(kh):
        ih = oh * sh - pad_t + i * dh
        if ih < 0 or ih >= H:
            continue
        for j in range(kw):
            iw = ow * sw - pad_l + j * dw
            if iw < 0 or iw >= W:
                continue
            xs = x[n, ih, iw]
            ws = wdw[i, j]
            for c in range(C):
                acc[c] += (np.int32(xs[c]) - zx) * np.int32(ws[c])


@njit(**PJIT)
def _conv_depthwise(x, z_x, wdw, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                    dh, dw, pad_t, pad_l, y, scratch, slice_bytes):
    N, OH, OW, C = y.shape
    R = N * OH
    nt = min(scratch.size // slice_bytes, R)    # one scratch slice per prange iteration
    for t in prange(nt):
        acc = scratch[t * slice_bytes:t * slice_bytes + 4 * C].view(np.int32)
        for r in range(t * R // nt, (t + 1) * R // nt):
            n = r // OH
            oh = r - n * OH
            for ow in range(OW):
                _depthwise_pixel(x, n, oh, ow, wdw, z_x, kh, kw, sh, sw, dh, dw, pad_t, pad_l,
                                 acc)
                yr = y[n, oh, ow]
                for c in range(C):
                    yr[c] = output_u8(np.int64(acc[c]) + bias[c], mult[c], shift[c], z_y,
                                      act_min, act_max)


@njit(**JIT)
def depthwise_conv_u8(x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                      dh, dw, pad_t, pad_l, y, scratch, slice_bytes):
    """Depthwise conv; wpack from pack_depthwise_weights; scratch of >= 1 slice of slice_bytes."""
    C = x.shape[3]
    _conv_depthwise(x, z_x, wpack.reshape((kh, kw, C)), bias, mult, shift, z_y, act_min,
                    act_max, kh, kw, sh, sw, dh, dw, pad_t, pad_l, y, scratch, slice_bytes)
