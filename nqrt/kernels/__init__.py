"""Numba integer kernels (portable).  See CONTRACT.md for the signatures the runtime uses.

Importing nqrt.numba_config first points Numba's on-disk cache at nqrt's fingerprinted cache dir
(see that module) before any kernel is decorated.
"""

import nqrt.numba_config  # noqa: F401  (before any kernel is decorated)
