"""GMAC/s of the u8 x s8 GEMM paths (nqrt/kernels/gemm_fast.py) vs ONNX Runtime MatMulInteger.

    python benchmarks/bench_gemm_fast.py [--threads 2] [--rounds 7] [--paths avx2,portable]
                                          [--shapes 1x768x768,256x1024x1024]

Shapes are P x K x M (rows of x, reduction, output channels).  Every implementation runs in the
same process with the same thread count, interleaved round by round, so ratios are comparable
even on a shared, noisy machine: each cell is the best round (rounds of >= ~20 ms) and the median
in brackets.  ORT computes only the int32 MatMulInteger (no requantize), nqrt the fused u8 output.
ORT's thread spinning is off by default (--ort-spin turns it on): its spinning pool threads would
otherwise take the cores Numba's threads need.  On a machine shared with other jobs, 2-thread
rows of the small shapes can collapse (a Numba parallel region waits at its barrier for a
descheduled thread): rerun, or compare with --threads 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

SHAPES = [(1, 768, 768), (8, 768, 3072), (128, 768, 768), (256, 1024, 1024), (1024, 1024, 1024)]


def _ort_session(w_km, nthreads, spin=False):
    import onnxruntime as ort
    from onnx import TensorProto, helper
    K, M = w_km.shape
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "zx"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["P", K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["P", M])],
        [helper.make_tensor("w", TensorProto.INT8, [K, M], w_km.tobytes(), raw=True),
         helper.make_tensor("zx", TensorProto.UINT8, [], [128])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = nthreads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spin:
        # ORT's pool threads otherwise spin after each run and take the cores Numba's threads
        # need when both run interleaved in one process.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-round", type=float, default=0.02, help="seconds per round (min)")
    ap.add_argument("--paths", default="", help="comma list (default: all available)")
    ap.add_argument("--shapes", default="", help="comma list of PxKxM")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--ort-spin", action="store_true", help="let ORT's threads spin (default off)")
    args = ap.parse_args(argv)

    import numba
    import numpy as np
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from nqrt.kernels import cpu, gemm_fast

    paths = [p for p in args.paths.split(",") if p] or list(cpu.available_paths())
    shapes = ([tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
              if args.shapes else SHAPES)
    print(f"# {cpu.describe()}")
    print(f"# threads {args.threads}, numba threading layer after first call below")

    rng = np.random.default_rng(0)
    rows = []
    for (P, K, M) in shapes:
        x = rng.integers(0, 256, (P, K), dtype=np.uint8)
        w = rng.integers(-127, 128, (M, K), dtype=np.int64).astype(np.int8)
        bias = rng.integers(-5000, 5000, M).astype(np.int32)
        mult = np.full(M, 1 << 30, np.int32)
        shift = np.full(M, 40, np.int32)
        impls = {}
        outs = {}
        for path in paths:
            wp, ws = gemm_fast.pack_b(w, path)
            sc = np.empty(gemm_fast.gemm_scratch_size(P, K, M, args.threads, path), np.uint8)
            y = np.empty((P, M), np.uint8)
            kern = gemm_fast.gemm_kernel(path)

            def run(kern=kern, wp=wp, ws=ws, sc=sc, y=y):
                kern(x, 128, wp, ws, M, K, bias, mult, shift, 3, 0, 255, y, sc)
            run()
            impls[path] = run
            outs[path] = y
        ys = list(outs.values())
        assert all(np.array_equal(ys[0], v) for v in ys[1:]), "paths disagree"
        if not args.no_ort:
            sess = _ort_session(np.ascontiguousarray(w.T), args.threads, args.ort_spin)
            feed = {"x": x}

            def run_ort(sess=sess, feed=feed):
                sess.run(None, feed)
            run_ort()
            impls["ort"] = run_ort
        # calibrate iterations per round
        iters = {}
        for name, fn in impls.items():
            n = 1
            while True:
                t = time.perf_counter()
                for _ in range(n):
                    fn()
                dt = time.perf_counter() - t
                if dt >= args.min_round or n >= 1 << 16:
                    break
                n *= 2
            iters[name] = n
        times = {name: [] for name in impls}
        for _ in range(args.rounds):
            for name, fn in impls.items():
                n = iters[name]
                t = time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - t) / n)
        macs = P * K * M
        res = {name: (macs / min(ts) / 1e9, macs / statistics.median(ts) / 1e9, min(ts))
               for name, ts in times.items()}
        rows.append(((P, K, M), res))
        line = f"{P}x{K}x{M}:"
        for name, (best, med, tmin) in res.items():
            line += f"  {name} {best:6.1f} ({med:5.1f}) GMAC/s {tmin * 1e6:8.1f} us"
        if "ort" in res:
            for name in paths:
                line += f"  {name}/ort {res[name][0] / res['ort'][0]:.2f}"
        print(line, flush=True)

    # markdown table
    print()
    hdr = "| P×K×M | " + " | ".join(f"{n} GMAC/s" for n in rows[0][1]) + " | " + \
        " | ".join(f"{p}/ORT" for p in paths if "ort" in rows[0][1]) + " |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for (P, K, M), res in rows:
        cells = [f"{res[n][0]:.1f} ({res[n][1]:.1f})" for n in res]
        if "ort" in res:
            cells += [f"{res[p][0] / res['ort'][0]:.2f}" for p in paths]
        print(f"| {P}×{K}×{M} | " + " | ".join(cells) + " |")
    print(f"# threading layer: {numba.threading_layer()}")


if __name__ == "__main__":
    main()
