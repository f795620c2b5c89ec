"""Softmax (spec 4: ONNX Softmax-13 in float32) over axis A of x float32 [O, A, I].

For each (o, i): m = max_a x; e_a = exp(x_a − m) (float32); s = Σ_a e_a summed in order
a = 0..A−1 (float32); y_a = e_a / s.  Each (o, i) is computed by one thread in that fixed
order, so results do not depend on the thread count (blocks of (o, i) pairs per task, serial
up to SERIAL_MAX elements; the block function is called through xcall).  fastmath is off
(see _jit.py).
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, row_block

SERIAL_MAX = CHUNK // 8   # elements run without a parallel launch (an exp costs ~5 ns)


@njit(**JIT)
def _softmax_pairs(x, y, t0, t1):
    """The (o, i) pairs t0..t1-1 (t = o·I + i) of softmax_f32."""
    O, A, I = x.shape
    for t in range(t0, t1):
        o = t // I
        i = t - o * I
        m = x[o, 0, i]
        for a in range(1, A):
            m = max(m, x[o, a, i])
        s = np.float32(0.0)
        for a in range(A):
            e = np.exp(x[o, a, i] - m)
            y[o, a, i] = e
            s += e
        for a in range(A):
            y[o, a, i] = y[o, a, i] / s


@njit(**PJIT)
def softmax_f32(x, y):
    """y float32 [O, A, I] = softmax of x over axis 1 (x and y may not overlap)."""
    O, A, I = x.shape
    if A == 0:
        return
    T = O * I
    if T * A <= SERIAL_MAX:
        xcall(_softmax_pairs, x, y, 0, T)
        return
    tb = row_block(T, A)
    for b in prange(-(-T // tb)):
        t0 = np.int64(b) * tb
        xcall(_softmax_pairs, x, y, t0, min(T, t0 + tb))
