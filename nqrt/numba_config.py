"""Process-wide Numba settings nqrt needs before it compiles or launches anything: where the
on-disk cache goes, and which threading layer runs parallel regions.  Imported by every module
that decorates a cached function, *before* it decorates one (Numba fixes a function's cache
locator when the decorator runs, and reads NUMBA_CACHE_DIR only from its config); the
threading layer is chosen when the first parallel region launches, later.

Cache dir.
Numba's default writes the cache next to the source file, which fails for an installed,
read-only package (Numba then falls back to a per-user dir of its own choosing).  Unless the
user chose NUMBA_CACHE_DIR, point it at <XDG_CACHE_HOME or ~/.cache>/nqrt/numba/<fingerprint>.

Numba keys each cached function on its own source file only, yet a cached kernel contains the
compiled code of the kernels it calls from other files.  So the directory name is a
fingerprint of every kernel source (nqrt/kernels/*.py): editing any kernel (or upgrading nqrt)
starts a fresh cache instead of running stale machine code.  Cached functions outside
nqrt/kernels (the interpreter loop, the affinity helper, the Erf reference) either call only
kernels or nothing, so the same rule covers them.

Threading layer.  Numba's own default prefers TBB whenever the `tbb` package happens to be
installed.  nqrt prefers OpenMP (then TBB, then workqueue) unless the user set
NUMBA_THREADING_LAYER or NUMBA_THREADING_LAYER_PRIORITY, so that installing an unrelated
package does not change its latency.  Measured on the 2-vCPU VM (README, "Threads"): with
OpenMP and the workers pinned (runtime/affinity.py) a back-to-back MobileNetV2 batch-1 call
was ~10 % faster than with TBB and ~30 % faster after 0.1 s idle, because TBB's fork/join costs
more per parallel region.  TBB's work stealing is the better choice on a host oversubscribed by
other processes, where an OpenMP barrier waits for a descheduled worker: NUMBA_THREADING_LAYER=tbb
selects it (`pip install "nqrt[tbb]"`).  If Numba's pool was already launched by the
application, its layer stays.

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


EMULATION_SUFFIX = "-emulate-vnni512"


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nqrt", "numba", _sources_fingerprint())


if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = default_cache_dir()
if (os.environ.get("NQRT_EMULATE_VNNI512", "") not in ("", "0")
        and not os.environ["NUMBA_CACHE_DIR"].endswith(EMULATION_SUFFIX)):
    # The emulated vnni512 path (nqrt/kernels/cpu.py) compiles the same functions for the same
    # CPU to other machine code, which Numba's cache index cannot tell apart: a directory of
    # its own (also when the user chose NUMBA_CACHE_DIR), never mixed with real builds.
    os.environ["NUMBA_CACHE_DIR"] += EMULATION_SUFFIX

import numba  # noqa: E402  (after the env var on purpose)

numba.core.config.reload_config()   # numba may have been imported before us: re-read the env

PREFERRED_LAYERS = ["omp", "tbb", "workqueue"]
USER_LAYER_VARS = ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
if not any(os.environ.get(v) for v in USER_LAYER_VARS):
    numba.config.THREADING_LAYER_PRIORITY = list(PREFERRED_LAYERS)
