"""Worker-thread placement (nqrt/runtime/affinity.py): the mask policy, and in fresh processes
that a 2-thread session pins its workers (never the calling thread), that the opt-outs leave
every thread alone, and that outputs do not depend on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nqrt
from nqrt.runtime.affinity import MASK_BYTES, worker_masks

EXAMPLES = Path(nqrt.__file__).parent / "examples"


def _cpus(row):
    return list(np.flatnonzero(np.unpackbits(row, bitorder="little")))


def test_masks_skip_the_callers_cpu_and_go_round_robin():
    m = worker_masks(5, [0, 1, 2, 3], caller_cpu=2)
    assert m.shape == (5, MASK_BYTES)
    assert _cpus(m[0]) == []                         # the calling thread is never pinned
    assert [_cpus(m[t]) for t in range(1, 5)] == [[0], [1], [3], [0]]


def test_masks_with_one_allowed_cpu_or_unknown_caller():
    assert _cpus(worker_masks(2, [3], caller_cpu=3)[1]) == [3]    # nothing else to use
    assert [_cpus(r) for r in worker_masks(3, [4, 9], caller_cpu=-1)[1:]] == [[4], [9]]
    assert _cpus(worker_masks(2, [1000], caller_cpu=0)[1]) == [1000]


CHILD = r"""
import json, os, sys
import numpy as np
import nqrt
from nqrt.runtime import affinity
calib = np.load(sys.argv[2])
nqrt.convert(sys.argv[1], sys.argv[3], {k: calib[k] for k in calib.files})
before = sorted(os.sched_getaffinity(0))
s = nqrt.load(sys.argv[3], threads=2)
x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
y = s.run({s.inputs[0].name: x})
tasks = {int(t): sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
import numba
print(json.dumps({"result": affinity.last_result, "before": before, "main": tasks[os.getpid()],
                  "layer": numba.threading_layer(),
                  "tasks": tasks, "y": next(iter(y.values())).tolist()}))
"""


def _child(tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("NQRT_PIN_WORKERS", "OMP_PROC_BIND",
                                                          "OMP_PLACES", "GOMP_CPU_AFFINITY",
                                                          "NUMBA_THREADING_LAYER",
                                                          "NUMBA_THREADING_LAYER_PRIORITY")}
    e.update(env, NUMBA_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(EXAMPLES / "digits_cnn.onnx"),
                           str(EXAMPLES / "digits_calib.npz"), str(tmp_path / "m.nq")],
                          capture_output=True, text=True, env=e, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two allowed CPUs")
def test_session_pins_workers_not_the_caller_and_opt_outs(tmp_path):
    pinned = _child(tmp_path)
    assert pinned["layer"] == "omp"          # nqrt's preference, even where tbb is installed
    res = pinned["result"]
    assert res["skipped"] is None and list(res["pinned"]) == ["1"], res
    cpu = res["pinned"]["1"]
    assert pinned["main"] == pinned["before"]                    # the caller is left free
    assert sum(1 for a in pinned["tasks"].values() if a == [cpu]) == 1
    free = _child(tmp_path, NQRT_PIN_WORKERS="0")
    assert free["result"] == {"pinned": {}, "skipped": "NQRT_PIN_WORKERS=0"}
    assert all(a == free["before"] for a in free["tasks"].values())
    assert free["y"] == pinned["y"]                                # placement changes no result
    # the user's own OpenMP placement wins (libgomp then binds the threads itself)
    user = _child(tmp_path, OMP_PLACES="cores")
    assert user["result"] == {"pinned": {}, "skipped": "OMP_PLACES is set"}
    assert user["y"] == pinned["y"]
    # the user's threading layer wins, and its threads (not a fixed team) are left alone
    other = _child(tmp_path, NUMBA_THREADING_LAYER="workqueue")
    assert other["layer"] == "workqueue"
    assert other["result"]["pinned"] == {} and "threading layer workqueue" in other["result"]["skipped"]
    assert all(a == other["before"] for a in other["tasks"].values())
    assert other["y"] == pinned["y"]
