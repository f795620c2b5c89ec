"""QLut (formats/nq-v1.md 4.9): y = table[x], elementwise through a 256-entry uint8 table.

The table is computed at convert time (float work in the *prepare* step); this kernel only
indexes.  Flat, C-contiguous operands; independent chunks per thread, so the result does not
depend on the thread count.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import PJIT

CHUNK = 1 << 14   # elements per parallel chunk


@njit(**PJIT)
def lut_u8(x, table, y):
    """y[i] = table[x[i]] for x, y uint8[n] (x may be y) and table uint8[256]."""
    n = x.size
    for ci in prange(-(-n // CHUNK)):
        for i in range(ci * CHUNK, min(n, ci * CHUNK + CHUNK)):
            y[i] = table[np.int64(x[i])]
