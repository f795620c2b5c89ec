"""LRN (formats/nq-v1.md 4.15: ONNX LRN in float32) across axis A of x float32 [O, A, I]
(A = channels, I = the spatial positions), a float op between Dequantize and Quantize.

    sq[o, a, i] = Σ_{j = max(0, a − lo)}^{min(A − 1, a + hi)} x[o, j, i]²   (float32, j ascending)
    y[o, a, i]  = x[o, a, i] / (bias + k·sq[o, a, i]) ** beta              (float32 powf)
with lo = floor((size − 1) / 2), hi = ceil((size − 1) / 2), k = float32(alpha) / size in
float32.  Rows (o, a) are split between threads in blocks; each row is computed by one thread
in that fixed order, so results do not depend on the thread count.  The window sums run along
rows (y holds them, then the division overwrites them), so the loops vectorize over i.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, row_block


@njit(**JIT)
def _lrn_rows(x, y, alpha, beta, bias, size, r0, r1):
    """Rows r0..r1-1 (r = o·A + a) of lrn_f32."""
    O, A, I = x.shape
    lo = (size - 1) // 2
    hi = size - 1 - lo
    k = np.float32(alpha) / np.float32(size)
    b = np.float32(bias)
    e = np.float32(beta)
    for r in range(r0, r1):
        o = r // A
        a = r - o * A
        for i in range(I):
            y[o, a, i] = np.float32(0.0)
        for j in range(max(0, a - lo), min(A - 1, a + hi) + 1):
            for i in range(I):
                v = x[o, j, i]
                y[o, a, i] += v * v
        for i in range(I):
            y[o, a, i] = x[o, a, i] / (b + k * y[o, a, i]) ** e


@njit(**PJIT)
def lrn_f32(x, y, alpha, beta, bias, size):
    """y float32 [O, A, I] = LRN of x over axis 1 (x and y may not overlap); size >= 1."""
    O, A, I = x.shape
    R = O * A
    if R * I == 0:
        return
    if R * I * size <= CHUNK:
        xcall(_lrn_rows, x, y, alpha, beta, bias, size, 0, R)
        return
    rb = row_block(R, I * size)
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        xcall(_lrn_rows, x, y, alpha, beta, bias, size, r0, min(R, r0 + rb))
