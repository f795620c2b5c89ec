"""Numba integer kernels (portable).  See CONTRACT.md for the signatures the runtime uses.

Numba's on-disk cache (cache=True) is written next to the source by default, which fails for
an installed, read-only package.  Unless the user chose NUMBA_CACHE_DIR, point it at a user
cache dir *before* any kernel is decorated (the cache locator is fixed at decoration time).
"""

import os

if not os.environ.get("NUMBA_CACHE_DIR"):
    _base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_base, "nqrt", "numba")

import numba  # noqa: E402  (after the env var on purpose)

numba.core.config.reload_config()   # numba may have been imported before us: re-read the env
