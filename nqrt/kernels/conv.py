"""QConv (spec 4.1) on NHWC uint8 activations.

    y[n, oh, ow, m] = clamp(requantize(Σ_{i,j,c∈group(m)} (x_pad[n, oh·sh − pad_t + i·dh,
                      ow·sw − pad_l + j·dw, c] − z_x)·w[m, c, i, j] + bias[m]) + z_y)

x uint8 [N, H, W, C], y uint8 [N, OH, OW, M], both C-contiguous; OH/OW come from y (the
planner resolves pads/ceil); positions outside x read as z_x, so they contribute exactly 0.
Three paths, chosen from shapes only (the same predicates as `pack_conv_weights`):

* depthwise (group == C == M): channels innermost, (x − z_x)·w in int32 per channel, padded
  positions skipped.  Packed weights: int8 [kh, kw, C].
* pointwise (1x1, stride 1, no padding, group 1): a GEMM on x viewed as [N·H·W, C].
* general: per output row (n, oh) and group g, an im2col row block col[OW, Kg] (Kg = kh·kw·Cg,
  order (i, j, c), padding = z_x) in the thread's scratch, then `gemm_tile` against the
  group's packed weights int8 [Mgp, Kg] (Mgp = Mg rounded up to NR, zero rows).

Parallel over output rows (N·OH) for depthwise/general: the scratch holds T slices (T = the
planner's thread count); prange iteration t owns rows [t·R/T, (t+1)·R/T) and slice t, so
threads never share scratch.  (T is read from the scratch size, not numba.get_num_threads(),
which would make the kernel uncacheable.)  Integer math only:
results are independent of the thread count.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT
from nqrt.kernels.fixedpoint import output_u8
from nqrt.kernels.depthwise import depthwise_conv_u8, depthwise_scratch_bytes, pack_depthwise_weights
from nqrt.kernels.gemm import NR, gemm_tile, gemm_u8

ALIGN = 64        # scratch slices start on cache lines


@njit(**JIT)
def is_depthwise(C, M, group):
    """The depthwise path (and packed layout) is used iff group == C == M."""
    return group == C and group == M


@njit(**JIT)
def scratch_slice_bytes(C, M, kh, kw, OW, group):
    """Bytes of scratch one thread needs (a multiple of ALIGN)."""
    if is_depthwise(C, M, group):
        need = depthwise_scratch_bytes(C, kh, kw, OW)
    else:
        need = OW * kh * kw * (C // group)            # one im2col row block col[OW, Kg]
    return max(ALIGN, -(-need // ALIGN) * ALIGN)


def conv_scratch_size(N, H, W, C, M, kh, kw, OH, OW, group, nthreads):
    """Bytes of uint8 scratch conv2d_u8 needs to run with up to `nthreads` threads."""
    return int(nthreads) * int(scratch_slice_bytes(C, M, kh, kw, OW, group))


def pack_conv_weights(w, group):
    """int8 w[M, C/g, kh, kw] -> (wpack int8[:], wsum int32[M]); layout private (see module)."""
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 4:
        raise ValueError(f"expected int8[M, C/g, kh, kw] weights, got {w.dtype}{list(w.shape)}")
    M, cg, kh, kw = w.shape
    if group < 1 or M % group:
        raise ValueError(f"group {group} does not divide M = {M}")
    wsum = w.reshape(M, -1).astype(np.int32).sum(axis=1, dtype=np.int32)
    if is_depthwise(cg * group, M, group):
        return pack_depthwise_weights(w), wsum
    mg = M // group
    mgp = -(-mg // NR) * NR
    kg = kh * kw * cg
    wpack = np.zeros((group, mgp, kg), dtype=np.int8)
    wpack[:, :mg] = w.transpose(0, 2, 3, 1).reshape(group, mg, kg)
    return wpack.reshape(-1), wsum


@njit(**JIT)
def _im2col_row(x, n, oh, c0, Cg, kh, kw, sh, sw, dh, dw, pad_t, pad_l, z_x, col):
    """col[ow, (i·kw + j)·Cg + c] = x_pad[n, oh·sh − pad_t + i·dh, ow·sw − pad_l + j·dw, c0 + c]."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    OW = col.shape[0]
    zx = np.uint8(z_x)
    for ow in range(OW):
        dst = col[ow]
        iw0 = ow * sw - pad_l
        for i in range(kh):
            ih = oh * sh - pad_t + i * dh
            k0 = i * kw * Cg
            if ih < 0 or ih >= H:
                row = dst[k0:k0 + kw * Cg]
                for k in range(kw * Cg):
                    row[k] = zx
            elif dw == 1 and Cg == C and iw0 >= 0 and iw0 + kw <= W:
                src = x[n, ih, iw0:iw0 + kw].reshape(kw * C)     # kw·C contiguous bytes
                row = dst[k0:k0 + kw * C]
                for k in range(kw * C):
                    row[k] = src[k]
            else:
                for j in range(kw):
                    iw = iw0 + j * dw
                    seg = dst[k0 + j * Cg:k0 + (j + 1) * Cg]
                    if iw < 0 or iw >= W:
                        for c in range(Cg):
                            seg[c] = zx
                    else:
                        src = x[n, ih, iw, c0:c0 + Cg]
                        for c in range(Cg):
                            seg[c] = src[c]


@njit(**PJIT)
def _conv_im2col(x, z_x, w3, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                 dh, dw, pad_t, pad_l, group, y, scratch, slice_bytes):
    N, OH, OW, M = y.shape
    C = x.shape[3]
    Cg = C // group
    Mg = M // group
    Kg = kh * kw * Cg
    Mgp = w3.shape[1]
    R = N * OH
    nt = min(scratch.size // slice_bytes, R)    # one scratch slice per prange iteration
    for t in prange(nt):
        col = scratch[t * slice_bytes:t * slice_bytes + OW * Kg].reshape((OW, Kg))
        for r in range(t * R // nt, (t + 1) * R // nt):
            n = r // OH
            oh = r - n * OH
            for g in range(group):
                _im2col_row(x, n, oh, g * Cg, Cg, kh, kw, sh, sw, dh, dw, pad_t, pad_l, z_x, col)
                gemm_tile(col, 0, OW, w3[g], 0, Mgp, Mg, g * Mg, z_x, wsum, bias, mult, shift,
                          z_y, act_min, act_max, y[n, oh])


@njit(**JIT)
def conv2d_u8(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
              dh, dw, pad_t, pad_l, group, y, scratch):
    """QConv; see the module docstring.  bias/mult/shift int32 [M]; scratch uint8 of at least
    one slice; conv_scratch_size(..., nthreads) gives nthreads slices = nthreads parallel
    chunks of rows."""
    N, H, W, C = x.shape
    OH, OW, M = y.shape[1], y.shape[2], y.shape[3]
    if N * OH * OW * M == 0:
        return
    if is_depthwise(C, M, group):
        sb = scratch_slice_bytes(C, M, kh, kw, OW, group)
        if scratch.size < sb:
            raise ValueError("conv2d_u8: scratch smaller than one thread's slice")
        depthwise_conv_u8(x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                          dh, dw, pad_t, pad_l, y, scratch, sb)
    elif (kh == 1 and kw == 1 and sh == 1 and sw == 1 and pad_t == 0 and pad_l == 0
          and group == 1 and OH == H and OW == W):
        gemm_u8(x.reshape((N * H * W, C)), z_x, wpack, wsum, bias, mult, shift, z_y, act_min,
                act_max, y.reshape((N * OH * OW, M)))
    else:
        sb = scratch_slice_bytes(C, M, kh, kw, OW, group)
        if scratch.size < sb:
            raise ValueError("conv2d_u8: scratch smaller than one thread's slice")
        Mgp = -(-(M // group) // NR) * NR
        _conv_im2col(x, z_x, wpack.reshape((group, Mgp, kh * kw * (C // group))), wsum, bias,
                     mult, shift, z_y, act_min, act_max, kh, kw, sh, sw, dh, dw, pad_t, pad_l,
                     group, y, scratch, sb)
