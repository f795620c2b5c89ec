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
    for i in range(i0, i1):
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
