"""Cold start of the nqrt runtime: time from process start to the first inference result.

    python tools/cold_start.py [--runs 5] [--empty-runs 5] [--model digits_cnn] [--threads N]

The bundled model (nqrt/examples) is converted once (untimed) with its bundled calibration
set into a temporary .nq file.  Then, in fresh `python` processes, each timed from just
before the process is spawned to the moment the child has the first output of
`nqrt.load(path).run(...)` in hand (Python start-up and all imports included):

* warm: Numba's cache already holds the compiled kernels (a private cache dir, filled by one
  untimed run first; the default user cache is left alone);
* empty: NUMBA_CACHE_DIR points at a new, empty temporary dir for every run (so everything
  the first inference needs is compiled; a bit slower than a cold user cache on first use).

Prints every run, the median of each kind, and the child's own split of the time
(imports / load / first run), and checks that every run produced the same output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import time
t_start = float(__import__("os").environ["NQRT_COLD_T0"])
t0 = time.time()
import numpy as np
import nqrt
t_import = time.time()
sess = nqrt.load(MODEL_PATH, threads=THREADS)
t_load = time.time()
x = np.load(FEED_PATH)
out = sess.run({INPUT_NAME: x})
t_run = time.time()
import json, sys
first = next(iter(out.values()))
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxruntime", "scipy"))
print(json.dumps({"total": t_run - t_start, "python_start": t0 - t_start,
                  "imports": t_import - t0, "load": t_load - t_import, "first_run": t_run - t_load,
                  "out": first.ravel()[:8].tolist(), "heavy_modules": mods[:6]}))
"""


def _convert(model: str, workdir: Path) -> tuple[Path, Path, str]:
    import numpy as np

    import nqrt
    from nqrt.examples.run import EXAMPLES, bundled_models

    entry = bundled_models()[model]
    nq = workdir / f"{model}.nq"
    nqrt.convert(str(EXAMPLES / entry["file"]), str(nq), calibration=str(EXAMPLES / entry["calib"]))
    with np.load(EXAMPLES / entry["test"]) as z:
        x = z[z.files[0]][:1].astype(np.float32)
    feed = workdir / "feed.npy"
    np.save(feed, x)
    return nq, feed, entry["input"]


def _child(nq: Path, feed: Path, input_name: str, threads, cache_dir: str) -> dict:
    code = (CHILD.replace("MODEL_PATH", repr(str(nq))).replace("FEED_PATH", repr(str(feed)))
            .replace("INPUT_NAME", repr(input_name)).replace("THREADS", repr(threads)))
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    t0 = time.time()
    env["NQRT_COLD_T0"] = repr(t0)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=str(ROOT))
    wall = time.time() - t0
    if res.returncode != 0:
        raise SystemExit(f"child failed:\n{res.stderr}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_to_exit"] = wall
    return out


def _median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def _report(kind: str, runs: list[dict]):
    for i, r in enumerate(runs):
        print(f"  {kind} run {i + 1}: {r['total']:.3f} s  (python start {r['python_start']:.3f}, "
              f"imports {r['imports']:.3f}, load {r['load']:.3f}, first run {r['first_run']:.3f})")
    keys = ("total", "python_start", "imports", "load", "first_run")
    med = {k: _median([r[k] for r in runs]) for k in keys}
    print(f"{kind}: median {med['total']:.3f} s to the first result "
          f"(python start {med['python_start']:.3f}, imports {med['imports']:.3f}, "
          f"load {med['load']:.3f}, first run {med['first_run']:.3f}) over {len(runs)} runs")
    return med


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="digits_cnn")
    ap.add_argument("--runs", type=int, default=5, help="warm-cache runs")
    ap.add_argument("--empty-runs", type=int, default=5, help="empty-cache runs (each compiles)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nqrt-cold-") as tmp:
        tmp = Path(tmp)
        nq, feed, input_name = _convert(args.model, tmp)
        print(f"# {args.model}: {nq.stat().st_size} bytes .nq; python {sys.version.split()[0]}; "
              f"{os.cpu_count()} cpus")
        outs = []
        warm_dir = str(tmp / "warm-cache")
        if args.runs > 0:
            outs.append(_child(nq, feed, input_name, args.threads, warm_dir)["out"])  # fill cache
            warm = [_child(nq, feed, input_name, args.threads, warm_dir) for _ in range(args.runs)]
            outs += [r["out"] for r in warm]
            _report("warm cache", warm)
            heavy = warm[0]["heavy_modules"]
            print(f"  heavy modules imported by the runtime: {heavy or 'none'}")
        if args.empty_runs > 0:
            empty = []
            for i in range(args.empty_runs):
                d = tempfile.mkdtemp(prefix="empty-cache-", dir=tmp)
                empty.append(_child(nq, feed, input_name, args.threads, d))
            outs += [r["out"] for r in empty]
            _report("empty cache", empty)
        if any(o != outs[0] for o in outs):
            raise SystemExit("runs disagree on the output")


if __name__ == "__main__":
    main()
