"""Numba integer kernels (portable).  See CONTRACT.md for the signatures the runtime uses.

Numba's on-disk cache (cache=True) is written next to the source by default, which fails for
an installed, read-only package.  Unless the user chose NUMBA_CACHE_DIR, point it at a user
cache dir *before* any kernel is decorated (the cache locator is fixed at decoration time).

Numba keys each cached function on its own source file only, yet a cached kernel contains the
compiled code of the kernels it calls from other files.  So the default cache dir ends in a
fingerprint of every kernel source: editing any kernel (or upgrading nqrt) starts a fresh cache
instead of running stale machine code.
"""

import hashlib
import os
from pathlib import Path


def _sources_fingerprint() -> str:
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


if not os.environ.get("NUMBA_CACHE_DIR"):
    _base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_base, "nqrt", "numba", _sources_fingerprint())

import numba  # noqa: E402  (after the env var on purpose)

numba.core.config.reload_config()   # numba may have been imported before us: re-read the env
