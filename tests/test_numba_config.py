"""Every cached Numba function of nqrt writes its cache under nqrt's cache dir (nqrt/numba_config.py),
never next to its source (which fails for a read-only install), whichever nqrt module a process
imports first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# (module imported first, how to reach one of its cached functions)
ENTRY_POINTS = [
    ("nqrt.runtime.affinity", "nqrt.runtime.affinity._pin_pool"),
    ("nqrt.graph.reference", "nqrt.graph.reference._erf_kernel()"),
    ("nqrt.kernels.eltwise", "nqrt.kernels.eltwise.quantize_one"),
]

CHILD = r"""
import importlib, json, os, sys
first, expr = sys.argv[1], sys.argv[2]
importlib.import_module(first)
import nqrt
fn = eval(expr, {"nqrt": nqrt})
print(json.dumps({"cache_path": fn._cache._cache_path, "env": os.environ.get("NUMBA_CACHE_DIR")}))
"""


@pytest.mark.parametrize("first,expr", ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_cache_goes_to_nqrts_dir_whatever_is_imported_first(tmp_path, first, expr):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    out = subprocess.run([sys.executable, "-c", CHILD, first, expr], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    base = str(tmp_path / "xdg" / "nqrt" / "numba")
    assert got["env"].startswith(base)
    assert got["cache_path"].startswith(got["env"]), got


def test_a_users_cache_dir_is_kept(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "mine"))
    out = subprocess.run([sys.executable, "-c", CHILD, *ENTRY_POINTS[0]], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["cache_path"].startswith(str(tmp_path / "mine"))
