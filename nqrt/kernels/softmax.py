"""Softmax over axis A of x [O, A, I]: in float32 (softmax_f32, spec 4: ONNX Softmax-13) and
in integers (qsoftmax_u8, spec 4.21: QSoftmax).

softmax_f32:

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


# ----------------------------------------------------------------------------- QSoftmax
@njit(inline="always", **JIT)
def _qsoftmax_row(xr, yr, A, e, table, G, rnd, sh, z_y, lo, hi):
    """One row of qsoftmax_u8 (xr, yr: that row's elements as array views, unit or any
    stride).  e: A uint32 (the table values: < 2^31, looked up once).  Table indices are
    unsigned (m − x >= 0): no negative-index test.  Unsigned arithmetic throughout (every
    value is >= 0), so the last loop is a logical shift and vectorizes."""
    m = np.uint8(0)
    for a in range(A):
        v8 = xr[a]
        m = v8 if v8 > m else m
    mu = np.uint64(m)
    s = np.uint64(0)
    for a in range(A):
        v = np.uint64(table[mu - np.uint64(xr[a])])
        e[a] = np.uint32(v)
        s += v
    r = np.uint64(G) // s              # s >= table[0] >= 1 (the maximum's own term)
    # e[a]·r <= G < 2^62 (e[a] <= s): no overflow.  q >= z_y, so a lower bound lo <= z_y
    # (every softmax nqrt writes: act_min 0) never binds and the loop skips it.
    if hi < z_y:                       # every q >= z_y > hi (and lo <= hi)
        for a in range(A):
            yr[a] = np.uint8(hi)
    elif lo <= z_y:
        cap = hi - z_y
        for a in range(A):
            yr[a] = np.uint8(min((np.uint64(e[a]) * r + rnd) >> sh, cap) + z_y)
    else:
        for a in range(A):
            q = ((np.uint64(e[a]) * r + rnd) >> sh) + z_y
            yr[a] = np.uint8(max(min(q, hi), lo))


@njit(**JIT)
def _qsoftmax_rows(x, y, t0, t1, A, I, table, G, n, z_y, act_min, act_max):
    """The (o, i) pairs t0..t1-1 of qsoftmax_u8 (a per-task buffer of A uint32)."""
    e = np.empty(A, np.uint32)
    rnd = np.uint64(1) << np.uint64(n - 1)
    sh = np.uint64(n)
    zy, lo, hi = np.uint64(z_y), np.uint64(act_min), np.uint64(act_max)
    for t in range(t0, t1):
        o = t // I
        base = o * A * I + (t - o * I)
        if I == 1:                     # contiguous rows (softmax over the last axis)
            _qsoftmax_row(x[base:base + A], y[base:base + A], A, e, table, G, rnd, sh, zy, lo, hi)
        else:
            end = base + (A - 1) * I + 1
            _qsoftmax_row(x[base:end:I], y[base:end:I], A, e, table, G, rnd, sh, zy, lo, hi)


@njit(**PJIT)
def qsoftmax_u8(x, y, O, A, I, table, G, n, z_y, act_min, act_max):
    """Spec 4.21 on x uint8 [O·A·I] (flat, C order [O, A, I]) into y (same size): for each
    (o, i), over a < A:  m = max x;  S = Σ table[m − x];  R = G // S;
    y = clamp(((table[m − x]·R + 2^(n−1)) >> n) + z_y, act_min, act_max).
    table: int64[256] with table[0] >= 1 and 0 <= table[d] < 2^31; 1 <= G < 2^62;
    1 <= n <= 62 (the reader checks them).  Each (o, i) is one thread's: results do not depend
    on the thread count."""
    T = O * I
    if T == 0 or A == 0:
        return
    G64, n64, zy = np.int64(G), np.int64(n), np.int64(z_y)
    lo, hi = np.int64(act_min), np.int64(act_max)
    if T * A <= SERIAL_MAX * 4:
        xcall(_qsoftmax_rows, x, y, 0, T, A, I, table, G64, n64, zy, lo, hi)
        return
    tb = row_block(T, A)
    for b in prange(-(-T // tb)):
        t0 = np.int64(b) * tb
        xcall(_qsoftmax_rows, x, y, t0, min(T, t0 + tb), A, I, table, G64, n64, zy, lo, hi)
