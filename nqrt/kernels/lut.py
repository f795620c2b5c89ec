"""QLut (formats/nq-v1.md 4.9): y = table[x], elementwise through a 256-entry uint8 table.

The table is computed at convert time (float work in the *prepare* step); this kernel only
indexes.  Flat, C-contiguous operands; independent chunks per thread (serial for at most one
chunk; the chunk function is called through xcall), so the result does not depend on the
thread count.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall

CHUNK = 1 << 14   # elements per parallel chunk (and the serial threshold)


@njit(**JIT)
def _lut_span(x, table, y, i0, i1):
    """y[i] = table[x[i]] for i0 <= i < i1, eight bytes per step: one 64-bit load of x, eight
    lookups in a zero-extended copy of the table, one 64-bit store (a byte loop runs at ~2.3
    cycles per byte on Zen 3, this at about half of that).  x may be y: each word is read
    before it is written."""
    n8 = (i1 - i0) // 8
    xw = x[i0:i0 + 8 * n8].view(np.uint64)
    yw = y[i0:i0 + 8 * n8].view(np.uint64)
    t = table.astype(np.uint64)
    for j in range(n8):
        v = xw[j]
        yw[j] = (t[v & 0xFF] | (t[(v >> 8) & 0xFF] << 8) | (t[(v >> 16) & 0xFF] << 16)
                 | (t[(v >> 24) & 0xFF] << 24) | (t[(v >> 32) & 0xFF] << 32)
                 | (t[(v >> 40) & 0xFF] << 40) | (t[(v >> 48) & 0xFF] << 48) | (t[v >> 56] << 56))
    for i in range(i0 + 8 * n8, i1):
        y[i] = table[np.int64(x[i])]


@njit(**PJIT)
def lut_u8(x, table, y):
    """y[i] = table[x[i]] for x, y uint8[n] (x may be y) and table uint8[256]."""
    n = x.size
    if n <= CHUNK:
        xcall(_lut_span, x, table, y, 0, n)
        return
    for ci in prange(-(-n // CHUNK)):
        i0 = np.int64(ci) * CHUNK
        xcall(_lut_span, x, table, y, i0, min(n, i0 + CHUNK))
