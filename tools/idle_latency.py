"""Latency of one inference back to back and after the process sat idle (sporadic requests).

    python tools/idle_latency.py MODEL.nq [--onnx MODEL.onnx] [--batch 1] [--threads 2]
                                 [--gaps 0,0.1] [--calls 30]

Each configuration runs in a fresh child process: nqrt as it starts by default (its worker
threads pinned, nqrt/runtime/affinity.py), nqrt with NQRT_PIN_WORKERS=0 (not pinned), nqrt
with OMP_PROC_BIND=spread (OpenMP binds each of its threads, the caller's too, to its own CPU),
and, with --onnx, ONNX Runtime on that ONNX model.  A child warms up, then times `--calls` single inferences,
sleeping `gap` seconds before each; it prints the minimum and median per gap.

Why: Numba's OpenMP workers sleep after about 8 ms without work (GNU OpenMP's default spin).
On a VM an unpinned woken worker can be queued behind the calling thread on the caller's CPU
while the caller spins at the end of the parallel region, so the first regions after an idle
period stall for milliseconds; pinning the workers to other CPUs avoids that.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys, time
import numpy as np
kind, path, batch, threads, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
gaps = [float(g) for g in sys.argv[6].split(",")]
if kind == "ort":
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    name, shape = i.name, i.shape
    run = lambda x: s.run(None, {name: x})
else:
    import nqrt
    s = nqrt.load(path, threads=threads)
    name, shape = s.inputs[0].name, s.inputs[0].shape
    run = lambda x: s.run({name: x})
shape = [d if isinstance(d, int) else batch for d in shape]
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
for _ in range(5):
    run(x)
for gap in gaps:
    ts = []
    for _ in range(calls):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        run(x)
        ts.append(time.perf_counter() - t0)
    print(gap, min(ts) * 1e3, float(np.median(ts)) * 1e3, flush=True)
"""


def _child(kind: str, path: str, args, env_extra: dict) -> dict:
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD, kind, path, str(args.batch),
                          str(args.threads), str(args.calls), args.gaps],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        err = (out.stderr.strip().splitlines() or ["failed"])[-1]
        raise SystemExit(f"idle_latency: {kind} child failed: {err}")
    rows = {}
    for line in out.stdout.splitlines():
        g, lo, med = line.split()
        rows[float(g)] = (float(lo), float(med))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="converted .nq model")
    ap.add_argument("--onnx", help="an ONNX model (float or QDQ int8) to time ONNX Runtime beside nqrt")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gaps", default="0,0.1", help="idle seconds before each call, comma-separated")
    ap.add_argument("--calls", type=int, default=30, help="timed calls per gap")
    args = ap.parse_args(argv)
    configs = [("nqrt (workers pinned)", "nqrt", args.model, {}),
               ("nqrt, NQRT_PIN_WORKERS=0", "nqrt", args.model, {"NQRT_PIN_WORKERS": "0"}),
               ("nqrt, OMP_PROC_BIND=spread", "nqrt", args.model, {"OMP_PROC_BIND": "spread"})]
    if args.onnx:
        configs.append(("ONNX Runtime", "ort", args.onnx, {}))
    gaps = [float(g) for g in args.gaps.split(",")]
    print(f"{os.path.basename(args.model)}, batch {args.batch}, {args.threads} threads; "
          "min / median ms per call after each idle gap")
    print(f"{'':30s}" + "".join(f"{'gap ' + str(g) + ' s':>20s}" for g in gaps))
    for label, kind, path, env in configs:
        rows = _child(kind, path, args, env)
        print(f"{label:30s}" + "".join(f"{rows[g][0]:9.3f} / {rows[g][1]:8.3f}" for g in gaps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
