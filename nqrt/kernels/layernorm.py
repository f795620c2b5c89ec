"""LayerNormalization (formats/nq-v1.md 4.16: ONNX LayerNormalization-17 in float32) over the
rows of x float32 [R, n] (n = the product of the normalized trailing dims), a float op between
Dequantize and Quantize.

    mean = S(x) / n;  d_i = x_i − mean;  var = S(d·d) / n;  inv = 1 / sqrt(var + eps)
    y_i  = (d_i · inv) · scale_i + bias_i
every operation rounded to float32 (fastmath is off: no reassociation, no fused multiply-add;
see _jit.py).  S is the spec's fixed-order sum: eight partial sums p_l over i ≡ l (mod 8) in
ascending i, combined as ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)); eight independent
chains, so the sums do not wait on one add's latency per element (a sequential sum would).
With rms = 1 (RMS normalization: ONNX RMSNormalization, and the L2 normalization
x / ‖x‖ the converter rewrites into it) the mean is not subtracted: mean = 0, d_i = x_i.
Rows are split between threads in blocks; each row is computed by one thread, so results do
not depend on the thread count.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, row_block

LANES = 8     # partial sums of S (spec 4.16)


@njit(inline="always", **JIT)
def _tree(p0, p1, p2, p3, p4, p5, p6, p7):
    return ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))


@njit(**JIT)
def _row_sums(v, mean, centered):
    """S(v) (centered=False) or S((v − mean)²) (centered=True) of the float32 row v."""
    z = np.float32(0.0)
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = z
    n = v.size
    n8 = n - n % LANES
    for i in range(0, n8, LANES):
        if centered:
            d0 = v[i] - mean
            d1 = v[i + 1] - mean
            d2 = v[i + 2] - mean
            d3 = v[i + 3] - mean
            d4 = v[i + 4] - mean
            d5 = v[i + 5] - mean
            d6 = v[i + 6] - mean
            d7 = v[i + 7] - mean
            p0 += d0 * d0
            p1 += d1 * d1
            p2 += d2 * d2
            p3 += d3 * d3
            p4 += d4 * d4
            p5 += d5 * d5
            p6 += d6 * d6
            p7 += d7 * d7
        else:
            p0 += v[i]
            p1 += v[i + 1]
            p2 += v[i + 2]
            p3 += v[i + 3]
            p4 += v[i + 4]
            p5 += v[i + 5]
            p6 += v[i + 6]
            p7 += v[i + 7]
    # the tail: element n8 + l goes to partial sum l (l < n − n8 <= 7)
    t = np.zeros(LANES, np.float32)
    for l in range(n - n8):
        e = v[n8 + l]
        if centered:
            e = (e - mean) * (e - mean)
        t[l] = e
    p0 += t[0] if n - n8 > 0 else z
    p1 += t[1] if n - n8 > 1 else z
    p2 += t[2] if n - n8 > 2 else z
    p3 += t[3] if n - n8 > 3 else z
    p4 += t[4] if n - n8 > 4 else z
    p5 += t[5] if n - n8 > 5 else z
    p6 += t[6] if n - n8 > 6 else z
    return _tree(p0, p1, p2, p3, p4, p5, p6, p7)


@njit(**JIT)
def _ln_rows(x, scale, bias, eps, rms, y, r0, r1):
    """Rows r0..r1-1 of layernorm_f32."""
    n = x.shape[1]
    nf = np.float32(n)
    one = np.float32(1.0)
    for r in range(r0, r1):
        v = x[r]
        mean = np.float32(0.0) if rms else _row_sums(v, np.float32(0.0), False) / nf
        var = _row_sums(v, mean, True) / nf
        inv = one / np.sqrt(var + eps)
        out = y[r]
        for i in range(n):
            out[i] = ((v[i] - mean) * inv) * scale[i] + bias[i]


@njit(**PJIT)
def layernorm_f32(x, scale, bias, eps, rms, y):
    """y float32 [R, n] = LayerNormalization (rms = 0) or RMS normalization (rms = 1) of each
    row of x float32 [R, n] (n >= 1) with scale, bias float32 [n] and eps float32 (x and y
    may not overlap)."""
    R, n = x.shape
    if R == 0:
        return
    e = np.float32(eps)
    if R * n <= CHUNK:
        xcall(_ln_rows, x, scale, bias, e, rms, y, 0, R)
        return
    rb = row_block(R, n)
    for b in prange(-(-R // rb)):
        r0 = np.int64(b) * rb
        xcall(_ln_rows, x, scale, bias, e, rms, y, r0, min(R, r0 + rb))
