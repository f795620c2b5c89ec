"""Numba integer kernels (portable).  See CONTRACT.md for the signatures the runtime uses.

Importing nqrt.jitcache first points Numba's on-disk cache at nqrt's fingerprinted cache dir
(see that module) before any kernel is decorated.
"""

import nqrt.jitcache  # noqa: F401  (before any kernel is decorated)
