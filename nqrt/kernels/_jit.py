"""All Numba options of the kernels, in one place.

JIT:  serial kernels and helpers.  cache=True (the cache dir is chosen in kernels/__init__.py),
      nogil=True (sessions may run in threads), fastmath=False (float kernels must follow IEEE:
      Quantize divides, Softmax sums in a fixed order), error_model="numpy" (no ZeroDivision
      checks in inner loops, which would block vectorization; kernels never divide by zero).
PJIT: kernels that split work with prange.  Every parallel kernel partitions *independent*
      outputs between threads (no cross-thread reductions), so results do not depend on the
      thread count.
"""

JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy", boundscheck=False)
PJIT = dict(JIT, parallel=True)
