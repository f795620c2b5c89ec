"""Placement of Numba's worker threads: each worker pinned to its own CPU, the calling thread
left free (as ONNX Runtime does with its intra-op pool by default).

Why: after ~8 ms without work GNU OpenMP's workers (Numba's "omp" threading layer) sleep in the
kernel.  Measured on the 2-vCPU development VM, the first parallel region after an idle period
then wakes the worker onto the *caller's* CPU, where it waits while the caller spins at the end
of the region (GNU OpenMP's barrier spin, ~8 ms), and it stays there until the scheduler
migrates it: MobileNetV2 at batch 1 took a median 11-16 ms per call after 0.1 s pauses
against 3.9 ms back to back, a 0.03 ms model 7.7 ms.  A worker pinned to another CPU cannot be
queued behind the caller: 4.7 ms and 0.28 ms, and back-to-back latency is unchanged
(tools/latency_conditions.py).  Binding every thread (OMP_PROC_BIND) also fixes it, but pins the
caller's thread too and every process's first thread to the same CPU.

Policy (`pin_workers`, called by the session before its first multi-threaded run; once per
process): Linux and Numba's OpenMP threading layer only (nqrt prefers it, see
nqrt/numba_config.py); skipped when NQRT_PIN_WORKERS=0, when the user configured OpenMP
placement (OMP_PROC_BIND, OMP_PLACES, GOMP_CPU_AFFINITY), or when fewer than two CPUs are
allowed.  Pool thread t >= 1 is pinned to the t-th CPU (round robin) of the process's allowed
set without the CPU the calling thread is on at that moment.  Results never depend on it:
which thread computes an output does not change how it is computed.
"""

from __future__ import annotations

import ctypes
import os
import threading

import nqrt.numba_config  # noqa: F401  (cache dir and threading layer, before _pin_pool is decorated)
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

USER_PLACEMENT_VARS = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY")
MASK_BYTES = 128                 # a cpu_set_t: 1024 CPUs
ROUNDS = 16                      # iterations per pool thread, so that every thread runs one

_lock = threading.Lock()
_pinned_pid = None               # the process whose pool was pinned (a fork child re-pins)
last_result: dict = {}           # what the last pin_workers call did (for tests and inspection)


@intrinsic
def _sched_setaffinity_self(typingctx, nbytes, mask_addr):
    """libc sched_setaffinity(0, nbytes, mask): the calling thread's CPU set; 0 or -1."""
    sig = types.int32(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), ir.IntType(64), i8p])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "sched_setaffinity")
        return builder.call(fn, [ir.Constant(ir.IntType(32), 0), args[0],
                                 builder.inttoptr(args[1], i8p)])

    return sig, codegen


@njit(parallel=True, cache=True)
def _pin_pool(masks, status):
    """Every pool thread t whose row masks[t] is not all zero sets its own CPU set to it.
    status[i] (i = the prange index) = 1 + thread id after a successful call, -(1 + thread id)
    after a failed one, 0 if the thread had nothing to do."""
    for i in prange(status.size):
        t = numba.get_thread_id()
        row = masks[t]
        if row.any():
            rc = _sched_setaffinity_self(row.size, row.ctypes.data)
            status[i] = (t + 1) if rc == 0 else -(t + 1)


def _current_cpu() -> int:
    try:
        return int(ctypes.CDLL(None).sched_getcpu())
    except (OSError, AttributeError):
        return -1


def _threading_layer() -> str:
    try:
        numba.get_num_threads()                # launches the pool if nothing has yet
        return numba.threading_layer()
    except Exception:  # noqa: BLE001 - no layer could be launched: nothing to pin
        return "none"


def _skip_reason(pool: int) -> str | None:
    if not hasattr(os, "sched_getaffinity"):
        return "not Linux"
    if os.environ.get("NQRT_PIN_WORKERS", "1") == "0":
        return "NQRT_PIN_WORKERS=0"
    layer = _threading_layer()
    if layer != "omp":
        # TBB and workqueue threads are not a fixed team: a task may run on any of them
        return f"threading layer {layer} (pinning applies to OpenMP workers)"
    user = [v for v in USER_PLACEMENT_VARS if os.environ.get(v)]
    if user:
        return f"{user[0]} is set"
    if pool < 2:
        return "one thread"
    if len(os.sched_getaffinity(0)) < 2:
        return "one CPU allowed"
    return None


def worker_masks(pool: int, allowed: list[int], caller_cpu: int) -> np.ndarray:
    """uint8[pool, MASK_BYTES]: row 0 (the calling thread) empty; row t >= 1 the single CPU
    candidates[(t - 1) % len(candidates)], candidates = allowed without caller_cpu."""
    candidates = [c for c in sorted(allowed) if c != caller_cpu] or sorted(allowed)
    masks = np.zeros((pool, MASK_BYTES), np.uint8)
    for t in range(1, pool):
        c = candidates[(t - 1) % len(candidates)]
        if c < 8 * MASK_BYTES:
            masks[t, c // 8] |= np.uint8(1 << (c % 8))
    return masks


def ensure_workers_pinned(set_num_threads, get_num_threads) -> None:
    """pin_workers, unless this process already did (or decided not to): one comparison per
    call, for the session's run path."""
    if _pinned_pid != os.getpid():
        pin_workers(set_num_threads, get_num_threads)


def pin_workers(set_num_threads=numba.set_num_threads, get_num_threads=numba.get_num_threads) -> dict:
    """Pin the pool's worker threads (see the module docstring) once per process; returns
    {"pinned": {thread id: cpu}, "skipped": reason or None}.  Never raises: placement is a
    latency optimization, not a requirement."""
    global _pinned_pid, last_result
    with _lock:
        if _pinned_pid == os.getpid():
            return last_result
        pool = numba.config.NUMBA_NUM_THREADS
        reason = _skip_reason(pool)
        result: dict = {"pinned": {}, "skipped": reason}
        if reason is None:
            allowed = sorted(os.sched_getaffinity(0))
            caller = _current_cpu()
            masks = worker_masks(pool, allowed, caller)
            status = np.zeros(pool * ROUNDS, np.int64)
            prev = get_num_threads()
            try:
                set_num_threads(pool)
                _pin_pool(masks, status)
            except Exception as e:  # noqa: BLE001 - e.g. a threading layer without thread ids
                result["skipped"] = f"failed: {type(e).__name__}: {e}"
            finally:
                set_num_threads(prev)
            for s in np.unique(status[status > 0]):
                t = int(s) - 1
                result["pinned"][t] = int(np.flatnonzero(np.unpackbits(masks[t], bitorder="little"))[0])
            if (status < 0).any():
                result["skipped"] = "sched_setaffinity failed for some threads"
        _pinned_pid = os.getpid()
        last_result = result
        return result
