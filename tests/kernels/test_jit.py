"""xcall / xcall_lazy (nqrt/kernels/_jit.py): calls to separately compiled kernels give the
results of ordinary calls, propagate exceptions, compile a lazy callee only when the call
runs, and work again when the callers are loaded from Numba's cache in a new process."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

MODULE = '''
import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall, xcall_lazy

JIT = dict(JIT, cache=CACHE)
PJIT = dict(PJIT, cache=CACHE)


@njit(**JIT)
def task(t, x, y):
    y[t] = x[t] * 2 + 1


@njit(**PJIT)
def par(x, y):
    for t in prange(x.size):
        xcall(task, np.int64(t), x, y)
    return xcall(twice, x.size)


@njit(**JIT)
def twice(n):
    if n > 1000:
        raise ValueError("twice: n > 1000")
    return 2 * n


@njit(**JIT)
def fill(y, v):
    y[:] = v


@njit(**JIT)
def returns_value(n):
    return n


@njit(**JIT)
def lazy(y, n):
    """n >= 1 runs fill, n >= 2 also returns_value (not None: refused when reached)."""
    if n >= 1:
        xcall_lazy(fill, y, 7)
    if n >= 2:
        xcall_lazy(returns_value, n)


@njit(**JIT)
def eager_error(n):
    return xcall(twice, n)
'''


@pytest.fixture(scope="module")
def mod(tmp_path_factory):
    d = tmp_path_factory.mktemp("xcall")
    (d / "xcall_mod.py").write_text(MODULE.replace("CACHE", "False"))   # no user-cache files
    sys.path.insert(0, str(d))
    try:
        import xcall_mod
        yield xcall_mod
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("xcall_mod", None)


def test_xcall_results_and_exceptions(mod):
    x = np.arange(50, dtype=np.int64)
    y = np.zeros_like(x)
    assert mod.par(x, y) == 100
    assert np.array_equal(y, 2 * x + 1)
    assert mod.eager_error(3) == 6
    with pytest.raises(ValueError, match="n > 1000"):
        mod.eager_error(2000)


def test_xcall_lazy_compiles_on_first_run(mod, capfd):
    y = np.zeros(5, np.int64)
    mod.lazy(y, 0)
    assert len(mod.fill.overloads) == 0 and not y.any()          # compiled the caller only
    mod.lazy(y, 1)
    assert len(mod.fill.overloads) == 1 and (y == 7).all()
    with pytest.raises(RuntimeError, match="could not compile returns_value"):
        mod.lazy(y, 2)
    assert "returns int64, the call expects none" in capfd.readouterr().err


SCRIPT = '''
import numpy as np
import xcall_mod as m
x = np.arange(50, dtype=np.int64)
y = np.zeros_like(x)
assert m.par(x, y) == 100 and np.array_equal(y, 2 * x + 1)
z = np.zeros(3, np.int64)
m.lazy(z, 1)
assert (z == 7).all()
print(sum(m.par.stats.cache_hits.values()), sum(m.lazy.stats.cache_hits.values()),
      sum(m.fill.stats.cache_hits.values()))
'''


def test_xcall_after_cache_load(tmp_path):
    (tmp_path / "xcall_mod.py").write_text(MODULE.replace("CACHE", "True"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    runs = [subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], env=env,
                           capture_output=True, text=True, cwd=tmp_path) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout.split() == ["0", "0", "0"]              # compiled
    assert runs[1].stdout.split() == ["1", "1", "1"]              # every caller from the cache
