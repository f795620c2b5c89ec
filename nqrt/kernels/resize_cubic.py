"""ResizeCubic (formats/nq-v1.md 4.24: ONNX Resize, mode "cubic", over H and W of an NCHW
tensor) on NHWC uint8 activations, in integers, requantized to the output's own grid (the
negative lobes overshoot the input's range: a bicubic upsample of a ReLU output has negative
values, which the input's grid would clip).

Plan time (`cubic_table`, float32 coordinates as in 4.14, float64 coefficients): per output
index o of an axis, the unclamped source coordinate x, i = ⌊x⌋, t = x − i, the four taps
i − 1 .. i + 2 clamped to [0, L_in − 1] (edge replication, ONNX's rule) and their weights
c(1 + t), c(t), c(1 − t), c(2 − t) of the cubic convolution kernel with coefficient a; with
exclude_outside, taps outside the input get 0 and the others are divided by their sum.  Each
weight becomes round_half_even(c·2^CUBIC_BITS), and the largest one is then set so that the
four add up to exactly 2^CUBIC_BITS (so the zero point passes through unchanged).
Run time (`resize_cubic_u8`), per output pixel and channel:

    v_j = Σ_k wH_k · (x[h_k, w_j] − z_x)                 (int32: |v| < 2^13·255 < 2^21)
    acc = Σ_j wW_j · v_j                                 (int64: |acc| < 2^34)
    y   = clamp(requantize(acc, M0, n) + z_y, 0, 255)    (spec 3.3)

with M = s_x / (s_y·2^(2B)) quantized with a 23-bit M0 (< 2^23), so |acc·M0| < 2^57.  The
weights' absolute sum per output index is at most 2^13 (MAX_ABS_WEIGHT_SUM, checked at plan
time), which bounds every intermediate above.  Output rows (n, oh) are split between
threads in blocks; each output element is computed once, so results do not depend on the
thread count.
"""

import math

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, row_block
from nqrt.kernels.fixedpoint import output_u8
from nqrt.kernels.movement import resize_geometry, source_coordinate
from nqrt.qmath import CUBIC_BITS

TAPS = 4
MAX_ABS_WEIGHT_SUM = 1 << 13


def cubic_coefficient(s: float, a: float) -> float:
    """The cubic convolution kernel (Keys) at distance s, coefficient a, in float64."""
    s = abs(s)
    if s <= 1.0:
        return ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
    if s < 2.0:
        return ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a
    return 0.0


def cubic_table(length_in: int, length_out: int, scale: float, coordinate_mode: str,
                cubic_coeff_a: float, exclude_outside: bool):
    """Spec 4.24, one axis: (index, weight) int64[length_out, 4] each."""
    index = np.empty((length_out, TAPS), np.int64)
    weight = np.empty((length_out, TAPS), np.int64)
    one = 1 << CUBIC_BITS
    for o in range(length_out):
        x = source_coordinate(o, length_in, length_out, scale, coordinate_mode)
        i = math.floor(float(x))
        t = float(np.float32(x - np.float32(i)))     # exact: float32 x, integer i, |x| < 2^24
        c = [cubic_coefficient(1.0 + t, cubic_coeff_a), cubic_coefficient(t, cubic_coeff_a),
             cubic_coefficient(1.0 - t, cubic_coeff_a), cubic_coefficient(2.0 - t, cubic_coeff_a)]
        taps = [i - 1 + j for j in range(TAPS)]
        if exclude_outside:
            c = [cj if 0 <= tap < length_in else 0.0 for cj, tap in zip(c, taps)]
            total = sum(c)
            if not abs(total) > 1e-6:
                raise ValueError(f"cubic weights of output {o} sum to {total} once the taps "
                                 "outside the input are excluded")
            c = [cj / total for cj in c]
        w = [int(np.rint(cj * one)) for cj in c]
        big = max(range(TAPS), key=lambda j: (abs(c[j]), -j))    # first of the largest
        w[big] = one - (sum(w) - w[big])
        if sum(abs(v) for v in w) > MAX_ABS_WEIGHT_SUM:
            raise ValueError(f"cubic_coeff_a {cubic_coeff_a} gives weights {w} whose absolute "
                             f"sum exceeds {MAX_ABS_WEIGHT_SUM}")
        index[o] = [min(max(tap, 0), length_in - 1) for tap in taps]
        weight[o] = w
    return index, weight


def resize_cubic_args(shape, coordinate_mode: str, cubic_coeff_a: float, exclude_outside: bool,
                      scales=None, sizes=None):
    """(OH, OW, table int64[8·OH + 8·OW]) for resize_cubic_u8 on logical NCHW `shape`: the
    rows' tap indices (OH × 4) and weights (OH × 4), then the columns' (OW × 4 each)."""
    geo = resize_geometry(shape, scales, sizes)
    (OH, sh), (OW, sw) = geo[2], geo[3]
    rows = cubic_table(int(shape[2]), OH, sh, coordinate_mode, cubic_coeff_a, exclude_outside)
    cols = cubic_table(int(shape[3]), OW, sw, coordinate_mode, cubic_coeff_a, exclude_outside)
    return OH, OW, np.concatenate([t.reshape(-1) for t in rows + cols]).astype(np.int64)


@njit(**JIT)
def _cubic_rows(x, tab, z_x, m0, n, z_y, y, r0, r1):
    """Output rows r0..r1-1 (r = n·OH + oh) of resize_cubic_u8: the vertical sum over the
    whole input row first (W·C contiguous int32 values: it vectorizes), then the horizontal
    one per output pixel in int64 and the requantize.  In integers this is the spec's double
    sum term for term (no intermediate is rounded), so the order does not change a value."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    OH, OW = y.shape[1], y.shape[2]
    WC = W * C
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    hw = TAPS * OH                       # offset of the row weights
    c_idx = 2 * TAPS * OH                # offset of the column indices
    c_w = c_idx + TAPS * OW              # offset of the column weights
    zx = np.int32(z_x) << np.int32(CUBIC_BITS)     # Σ_k wH_k · z_x: the row weights sum to 2^B
    v = np.empty(WC, np.int32)
    for r in range(r0, r1):
        b = r // OH
        oh = r - b * OH
        v[:] = -zx
        for j in range(TAPS):
            h = tab[TAPS * oh + j]
            wj = np.int32(tab[hw + TAPS * oh + j])
            row = xf[(b * H + h) * WC:(b * H + h + 1) * WC]
            for k in range(WC):
                v[k] += wj * np.int32(row[k])
        out = yf[r * OW * C:(r + 1) * OW * C]
        for ow in range(OW):
            t = TAPS * ow
            v0 = v[tab[c_idx + t] * C:tab[c_idx + t] * C + C]
            v1 = v[tab[c_idx + t + 1] * C:tab[c_idx + t + 1] * C + C]
            v2 = v[tab[c_idx + t + 2] * C:tab[c_idx + t + 2] * C + C]
            v3 = v[tab[c_idx + t + 3] * C:tab[c_idx + t + 3] * C + C]
            w0, w1 = np.int64(tab[c_w + t]), np.int64(tab[c_w + t + 1])
            w2, w3 = np.int64(tab[c_w + t + 2]), np.int64(tab[c_w + t + 3])
            o = out[ow * C:(ow + 1) * C]
            for c in range(C):
                acc = w0 * v0[c] + w1 * v1[c] + w2 * v2[c] + w3 * v3[c]
                o[c] = output_u8(acc, m0, n, z_y, 0, 255)


@njit(**PJIT)
def resize_cubic_u8(x, tab, z_x, m0, n, z_y, y):
    """y uint8 [N, OH, OW, C] = ResizeCubic of x uint8 [N, H, W, C] (NHWC) with the table of
    resize_cubic_args and the requantize constants (x and y may not overlap)."""
    N, OH, OW, C = y.shape
    R = N * OH
    if R * OW * C == 0:
        return
    if R * OW * C <= CHUNK:
        xcall(_cubic_rows, x, tab, z_x, m0, n, z_y, y, 0, R)
        return
    rb = row_block(R, OW * C)
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        xcall(_cubic_rows, x, tab, z_x, m0, n, z_y, y, r0, min(R, r0 + rb))
