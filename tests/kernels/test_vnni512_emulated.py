"""The vnni512 path's code, run on a host without AVX-512 (NQRT_EMULATE_VNNI512, see
nqrt/kernels/cpu.py): its one AVX-512 instruction, vpdpbusd, becomes generic vector IR of the
same semantics, so everything around it (weight and activation packing, 64-channel panels,
drivers, thread split, the int64 epilogue, the interpreter's vnni512 dispatch) is checked bit
for bit against the numpy references by the same tests that check the other paths.

On a host that has AVX-512 VNNI those tests already run the real instruction (their path lists
include "vnni512"), so this module is skipped there.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels import cpu
from nqrt.kernels.vnni import emit_vpdpbusd

TESTS = Path(__file__).resolve().parents[1]
# every test module whose path list includes "vnni512" when the host offers it
SUITES = ["kernels/test_gemm_fast.py", "kernels/test_gemm.py", "kernels/test_conv.py",
          "runtime/test_ops.py", "runtime/test_new_ops.py", "runtime/test_planner.py"]


@intrinsic
def _dpbusd16(typingctx, acc, a, b):
    """out[0:16] = emit_vpdpbusd(acc[0:16], a[0:16], b[0:16]) on int32 arrays."""
    def codegen(context, builder, sig, args):
        v = ir.VectorType(ir.IntType(32), 16)

        def ptr(k):
            data = cgutils.create_struct_proxy(sig.args[k])(context, builder, value=args[k]).data
            return builder.bitcast(data, v.as_pointer())
        acc_, a_, b_ = (builder.load(ptr(k), align=4) for k in range(3))   # numpy alignment
        builder.store(emit_vpdpbusd(builder, acc_, a_, b_), ptr(0), align=4)
        return context.get_dummy_value()
    return types.void(acc, a, b), codegen


@njit
def _dpbusd(acc, a, b):
    _dpbusd16(acc, a, b)


def test_emulated_vpdpbusd_semantics():
    """Intel's definition: per dword lane, acc + Σ of 4 u8·s8 products, wrapping in int32 (no
    saturation, unlike vpdpbusds), including the extremes 255·(−128) and an int32 wrap."""
    rng = np.random.default_rng(0)
    for case in range(50):
        a = rng.integers(0, 256, 64, dtype=np.uint8)
        b = rng.integers(-128, 128, 64, dtype=np.int8)
        acc = rng.integers(-2**31, 2**31, 16, dtype=np.int64).astype(np.int32)
        if case == 0:
            a[:] = 255
            b[:] = -128
            acc[:] = np.iinfo(np.int32).min          # wraps: min + 4·255·(−128)
        want = (acc.astype(np.int64) + (a.astype(np.int64) * b).reshape(16, 4).sum(1))
        want = ((want + 2**31) % 2**32 - 2**31).astype(np.int32)
        got = acc.copy()
        _dpbusd(got, a.view(np.int32), b.view(np.int32))
        assert np.array_equal(got, want), case


@pytest.mark.skipif(not cpu.has_avx2() or cpu.has_vnni512(),
                    reason="needs AVX2; a host with AVX-512 VNNI runs the real path in the suites")
def test_vnni512_path_emulated():
    env = dict(os.environ, NQRT_EMULATE_VNNI512="1", NQRT_GEMM_PATH="vnni512")
    env.pop("NQRT_DISABLE_VNNI", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "vnni512",
           *[str(TESTS / s) for s in SUITES]]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=TESTS.parent,
                         timeout=1800)
    tail = (out.stdout + out.stderr)[-3000:]
    assert out.returncode == 0, tail
    passed = re.search(r"(\d+) passed", out.stdout)
    # GEMM, conv and interpreter cases on the vnni512 path (179 when written): a count this
    # low would mean the path was not offered and the cases were deselected
    assert passed and int(passed.group(1)) >= 150, tail
