"""ResizeLinear (formats/nq-v1.md 4.17: ONNX Resize, mode "linear", over H and W of an NCHW
tensor) on NHWC uint8 activations, in integers: output quant equals the input's.

Plan time (`linear_table`, float32 as the spec writes it): per output index o of an axis, the
clamped source coordinate x, the two input indices i0 = ⌊x⌋, i1 = min(i0 + 1, L_in − 1) and
the weight of i1 as an integer w = round_half_even((x − i0)·2^LINEAR_BITS) in [0, 2^BITS].
Run time (`resize_linear_u8`), per output pixel and channel, exact in int32:

    t_k = (2^B − w_W)·x[h_k, w0] + w_W·x[h_k, w1]       (k = 0, 1: rows h0, h1)
    y   = ((2^B − w_H)·t_0 + w_H·t_1 + 2^(2B−1)) >> 2B  (round half up; y in [0, 255])

(computed vertical step first, the same integers: see _linear_rows).

|sum| ≤ 255·2^(2B) < 2^31 for B = 11.  The weights of an axis add up to 2^B, so the zero
point passes through unchanged (y − z is the interpolation of x − z).  Output rows (n, oh)
are split between threads in blocks; each output element is computed once, so results do not
depend on the thread count.
"""

import math

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, row_block
from nqrt.kernels.movement import resize_geometry, source_coordinate

LINEAR_BITS = 11


def linear_table(length_in: int, length_out: int, scale: float, coordinate_mode: str):
    """Spec 4.17, one axis: (i0, i1, w) int64[length_out] each."""
    f32 = np.float32
    hi = f32(length_in - 1)
    i0 = np.empty(length_out, np.int64)
    i1 = np.empty(length_out, np.int64)
    w = np.empty(length_out, np.int64)
    for o in range(length_out):
        x = source_coordinate(o, length_in, length_out, scale, coordinate_mode)
        x = min(max(x, f32(0)), hi)                   # float32 compare: no rounding
        a = math.floor(float(x))
        i0[o] = a
        i1[o] = min(a + 1, length_in - 1)
        lam = f32(x - f32(a))                         # exact: x and a are float32, 0 <= x - a < 1
        w[o] = int(np.rint(lam * f32(1 << LINEAR_BITS)))
    return i0, i1, w


def resize_linear_args(shape, coordinate_mode: str, scales=None, sizes=None):
    """(OH, OW, table int64[3·OH + 3·OW]) for resize_linear_u8 on logical NCHW `shape`:
    h0, h1, w_H (OH entries each), then w0, w1, w_W (OW entries each)."""
    geo = resize_geometry(shape, scales, sizes)
    (OH, sh), (OW, sw) = geo[2], geo[3]
    rows = linear_table(int(shape[2]), OH, sh, coordinate_mode)
    cols = linear_table(int(shape[3]), OW, sw, coordinate_mode)
    return OH, OW, np.concatenate(rows + cols).astype(np.int64)


@njit(**JIT)
def _linear_rows(x, tab, y, r0, r1):
    """Output rows r0..r1-1 (r = n·OH + oh) of resize_linear_u8.  The vertical step runs
    first, over the whole input row (W·C contiguous int32 values: it vectorizes), then the
    horizontal one per output pixel: v_k = (2^B − w_H)·x[h0, k] + w_H·x[h1, k] for the input
    columns k, y = ((2^B − w_W)·v_{w0} + w_W·v_{w1} + 2^(2B−1)) >> 2B.  In integers this is the
    spec's sum term for term (the products distribute; no intermediate is rounded and every
    partial sum stays below 2^31), so the order does not change a value."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    OH, OW = y.shape[1], y.shape[2]
    WC = W * C
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    one = np.int32(1 << LINEAR_BITS)
    rnd = np.int32(1 << (2 * LINEAR_BITS - 1))
    v = np.empty(WC, np.int32)
    b0 = 3 * OH
    for r in range(r0, r1):
        n = r // OH
        oh = r - n * OH
        ra = xf[(n * H + tab[oh]) * WC:(n * H + tab[oh] + 1) * WC]           # row h0 of image n
        rb = xf[(n * H + tab[OH + oh]) * WC:(n * H + tab[OH + oh] + 1) * WC]  # row h1
        wh = np.int32(tab[2 * OH + oh])
        vh = one - wh
        for k in range(WC):
            v[k] = vh * np.int32(ra[k]) + wh * np.int32(rb[k])
        out = yf[r * OW * C:(r + 1) * OW * C]
        for ow in range(OW):
            c0 = tab[b0 + ow] * C
            c1 = tab[b0 + OW + ow] * C
            ww = np.int32(tab[b0 + 2 * OW + ow])
            vw = one - ww
            v0 = v[c0:c0 + C]
            v1 = v[c1:c1 + C]
            o = out[ow * C:(ow + 1) * C]
            for c in range(C):
                o[c] = np.uint8((vw * v0[c] + ww * v1[c] + rnd) >> (2 * LINEAR_BITS))


@njit(**PJIT)
def resize_linear_u8(x, tab, y):
    """y uint8 [N, OH, OW, C] = ResizeLinear of x uint8 [N, H, W, C] (NHWC) with the table of
    resize_linear_args (x and y may not overlap)."""
    N, OH, OW, C = y.shape
    R = N * OH
    if R * OW * C == 0:
        return
    if R * OW * C <= CHUNK:
        xcall(_linear_rows, x, tab, y, 0, R)
        return
    rb = row_block(R, OW * C)
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        xcall(_linear_rows, x, tab, y, r0, min(R, r0 + rb))
