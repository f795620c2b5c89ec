"""Latency of one inference under the conditions a server meets: back to back, after the
process sat idle (sporadic requests), and beside other busy processes (a shared host).

    python tools/latency_conditions.py MODEL.nq [--onnx MODEL.onnx] [--batch 1] [--threads 2]
                                       [--gaps 0,0.1] [--load 0] [--calls 30]

Each configuration runs in a fresh child process:
  * nqrt as it starts by default: Numba's OpenMP threading layer, worker threads pinned
    (nqrt/numba_config.py, nqrt/runtime/affinity.py);
  * nqrt with NQRT_PIN_WORKERS=0 (workers not pinned);
  * nqrt with OMP_PROC_BIND=spread (OpenMP binds each of its threads, the caller's too);
  * nqrt with OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep instead of spinning);
  * nqrt with NUMBA_THREADING_LAYER=tbb (TBB's work-stealing pool; "n/a" without the `tbb`
    package: pip install "nqrt[tbb]");
  * with --onnx, ONNX Runtime on that ONNX model (intra_op_num_threads = --threads).
A child warms up, then times `--calls` single inferences, sleeping `gap` seconds before each,
and prints min / median / 90th percentile per gap.  With --load K, K busy-looping processes
run beside each child for its whole run (K = number of CPUs: every CPU has one other runnable
thread).

Why: after about 8 ms without work GNU OpenMP's workers sleep, and on a VM an unpinned woken
worker can be queued behind the calling thread, which spins at the end of the parallel region:
the first regions after a pause stall for milliseconds.  Under background load any fork/join
pool waits at the end of a region for a descheduled member; TBB's work stealing lets the
calling thread run the work a descheduled worker has not started.
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
    ts = np.array(ts) * 1e3
    print(gap, ts.min(), float(np.median(ts)), float(np.percentile(ts, 90)), flush=True)
"""

BUSY = "while True:\n    pass\n"
NA = "n/a"


def configs(onnx_path: str | None, model: str) -> list[tuple[str, str, str, dict]]:
    rows = [("nqrt (default: OpenMP, pinned)", "nqrt", model, {}),
            ("nqrt, NQRT_PIN_WORKERS=0", "nqrt", model, {"NQRT_PIN_WORKERS": "0"}),
            ("nqrt, OMP_PROC_BIND=spread", "nqrt", model, {"OMP_PROC_BIND": "spread"}),
            ("nqrt, OMP_WAIT_POLICY=PASSIVE", "nqrt", model, {"OMP_WAIT_POLICY": "PASSIVE"}),
            ("nqrt, threading layer tbb", "nqrt", model, {"NUMBA_THREADING_LAYER": "tbb"})]
    if onnx_path:
        rows.append(("ONNX Runtime", "ort", onnx_path, {}))
    return rows


def _child(kind: str, path: str, args, env_extra: dict) -> dict | None:
    """{gap: (min, median, p90) ms}, or None when the configuration cannot run here (the
    tbb layer without the tbb package)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")}
    env.update(env_extra)
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.load)]
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, kind, path, str(args.batch),
                              str(args.threads), str(args.calls), args.gaps],
                             env=env, capture_output=True, text=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    if out.returncode != 0:
        err = (out.stderr.strip().splitlines() or ["failed"])[-1]
        if env_extra.get("NUMBA_THREADING_LAYER") == "tbb" and "tbb" in out.stderr.lower():
            return None
        raise SystemExit(f"latency_conditions: {kind} child failed: {err}")
    rows = {}
    for line in out.stdout.splitlines():
        g, lo, med, p90 = line.split()
        rows[float(g)] = (float(lo), float(med), float(p90))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="converted .nq model")
    ap.add_argument("--onnx", help="an ONNX model (float or QDQ int8) to time ONNX Runtime beside nqrt")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gaps", default="0,0.1", help="idle seconds before each call, comma-separated")
    ap.add_argument("--load", type=int, default=0, help="busy-looping processes running beside each child")
    ap.add_argument("--calls", type=int, default=30, help="timed calls per gap")
    args = ap.parse_args(argv)
    if args.load < 0:
        ap.error("--load must be >= 0")
    gaps = [float(g) for g in args.gaps.split(",")]
    print(f"{os.path.basename(args.model)}, batch {args.batch}, {args.threads} threads, "
          f"{args.load} busy processes beside; min / median / p90 ms per call after each idle gap")
    print(f"{'':32s}" + "".join(f"{'gap ' + str(g) + ' s':>28s}" for g in gaps))
    for label, kind, path, env in configs(args.onnx, args.model):
        rows = _child(kind, path, args, env)
        cells = "".join(f"{NA:>28s}" if rows is None else
                        f"{rows[g][0]:9.3f} / {rows[g][1]:7.3f} / {rows[g][2]:7.3f}" for g in gaps)
        print(f"{label:32s}" + cells, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
