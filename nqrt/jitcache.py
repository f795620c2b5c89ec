"""Where Numba's on-disk cache (cache=True) goes: imported by every module that decorates a
cached function, *before* it decorates one (Numba fixes a function's cache locator when the
decorator runs, and reads NUMBA_CACHE_DIR only from its config).

Numba's default writes the cache next to the source file, which fails for an installed,
read-only package (Numba then falls back to a per-user dir of its own choosing).  Unless the
user chose NUMBA_CACHE_DIR, point it at <XDG_CACHE_HOME or ~/.cache>/nqrt/numba/<fingerprint>.

Numba keys each cached function on its own source file only, yet a cached kernel contains the
compiled code of the kernels it calls from other files.  So the directory name is a
fingerprint of every kernel source (nqrt/kernels/*.py): editing any kernel (or upgrading nqrt)
starts a fresh cache instead of running stale machine code.  Cached functions outside
nqrt/kernels (the interpreter loop, the affinity helper, the Erf reference) either call only
kernels or nothing, so the same rule covers them.

This module imports nothing from nqrt, so any layer may import it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KERNEL_SOURCES = Path(__file__).parent / "kernels"


def _sources_fingerprint() -> str:
    h = hashlib.sha256()
    for p in sorted(KERNEL_SOURCES.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nqrt", "numba", _sources_fingerprint())


if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = default_cache_dir()

import numba  # noqa: E402  (after the env var on purpose)

numba.core.config.reload_config()   # numba may have been imported before us: re-read the env
