"""The interpreter loop compiles a kernel only when a plan first runs an instruction of its op
(xcall_lazy): a new process with an empty Numba cache compiles just the kernels its plans use,
and with the cache filled loads the loop and those kernels from it."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = '''
import numpy as np
from runtime_builder import Builder
from nqrt.runtime import _kernels as K
from nqrt.runtime import encoding as E
from nqrt.runtime.session import Session

KERNELS = [n for group in K.GROUPS for n in group if hasattr(getattr(K, n), "overloads")]
b = Builder(3)
x = b.quantize(b.input((1, 3, 5, 5)))
b.output(b.dequantize(b.maxpool(x, (2, 2))))
model = b.model()
sess = Session(model, threads=1)
out = sess.run({io.name: b.env[io.name] for io in model.graph_inputs})
assert all(np.isfinite(v).all() for v in out.values())
OPS = {E.OP_QUANTIZE: "quantize_f32", E.OP_DEQUANTIZE: "dequantize_u8", E.OP_MAXPOOL: "maxpool_u8",
       E.OP_TRANSPOSE_U8: "transpose_u8", E.OP_TRANSPOSE_F32: "transpose_f32",
       E.OP_QUANTIZE_T: "quantize_transpose_f32", E.OP_DEQUANTIZE_T: "dequantize_transpose_u8"}
used = sorted(OPS[int(op)] for op in set(sess.plan_for({model.graph_inputs[0].name: (1, 3, 5, 5)}).code[:, 0]))
compiled = sorted(n for n in KERNELS if getattr(K, n).overloads)
assert "maxpool_u8" in used and compiled == used, (compiled, used)
print(sum(getattr(K, n).stats.cache_hits.total() for n in KERNELS), len(used))
'''


def test_first_run_compiles_only_the_plans_kernels(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NQRT_GEMM_PATH="portable",
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "runtime"), str(ROOT)]))
    runs = [subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                           text=True, cwd=tmp_path) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    hits, used = runs[0].stdout.split()
    assert hits == "0"
    hits, used = runs[1].stdout.split()
    assert hits == used                                           # all loaded from the cache
