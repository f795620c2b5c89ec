"""Whole-model latency: nqrt int8 / nqrt simulate vs ONNX Runtime FP32 / ONNX Runtime int8, one run.

    python benchmarks/bench_models.py [--models digits_cnn,digits_resnet,digits_mlp,mlp,resnet18,mobilenetv2]
                                      [--batch 1,8] [--threads 2] [--repeats 20] [--cache-dir DIR] [--seven-bit]

For every model: the FP32 ONNX file (bundled digits models from nqrt/examples; the benchmark
models written once by tools/make_bench_models.py into the cache dir), calibration data (the
bundled calibration set for digits; 16 seeded standard-normal samples for the others), then
  * nqrt int8      nqrt.convert(per_channel=True, calibration_method="minmax") + nqrt.load(mode="integer")
  * nqrt simulate  the same .nq file, nqrt.load(mode="simulate") (float simulation of the int8 model)
  * nqrt int8 w7   (--seven-bit) nqrt.convert(..., weight_bits=7): QConv/QGemm weights in
                   [-63, 63], which on AVX2 CPUs without VNNI run the exact vpmaddubsw kernel;
                   timed in the same interleaved run, reported in a third table
  * ORT FP32       onnxruntime on the FP32 model
  * ORT int8       onnxruntime.quantization.quantize_static: QDQ, per-channel, QUInt8 activations,
                   QInt8 weights (u8s8, ORT's x86 fast path), MinMax, the same calibration data
all with the same thread count, timed interleaved in one process (see common.time_interleaved).
Agreement: SQNR (dB) of each int8 output against the ORT FP32 output on an evaluation set
(digits: the 540-sample test set; others: 8 seeded random inputs), so a fast-but-wrong result shows.
A stage that fails prints "nqrt: not available (<reason>)" (or the peer's name) and the row
shows n/a; the run continues.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import NA, attempt, fmt_ms, fmt_num, fmt_ratio, format_table, ratio  # noqa: E402

ALL_MODELS = ["digits_cnn", "digits_resnet", "digits_mlp", "mlp", "resnet18", "mobilenetv2"]
BENCH_FILES = {"mlp": "mlp_784_512_512_10", "resnet18": "resnet18", "mobilenetv2": "mobilenetv2"}
EXAMPLES = common.REPO / "nqrt" / "examples"
MAKE_BENCH = common.REPO / "tools" / "make_bench_models.py"
CALIB_SAMPLES = 16
EVAL_SAMPLES = 8

CANDIDATES = ["nqrt int8", "nqrt simulate", "ORT FP32", "ORT int8"]
W7 = "nqrt int8 w7"
W7_COLUMNS = ["model", "batch", "nqrt int8 w7 ms", "w7/ORT-int8", "w7/ORT-int8 (min)",
              "ORT-FP32/w7", "ORT-FP32/w7 (min)", "w7 / 8-bit nqrt", "SQNR w7 dB", "SQNR 8-bit dB"]
COLUMNS = ["model", "batch", "nqrt int8 ms", "nqrt sim ms", "ORT FP32 ms", "ORT int8 ms",
           "nqrt/ORT-int8", "ORT-FP32/nqrt", "SQNR nqrt dB", "SQNR sim dB", "SQNR ORT-int8 dB"]
MIN_COLUMNS = ["model", "batch", "nqrt int8 ms", "nqrt sim ms", "ORT FP32 ms", "ORT int8 ms",
               "nqrt/ORT-int8", "ORT-FP32/nqrt", "samples"]


@dataclass
class ModelCase:
    name: str
    onnx_path: Path
    input_name: str
    calib: object          # np.ndarray, samples on axis 0
    calib_npz: Path        # same data as an .npz keyed by input name (what nqrt.convert takes)
    eval_x: object         # np.ndarray used for agreement
    batch_x: callable      # batch -> np.ndarray used for timing


@dataclass
class ModelResult:
    name: str
    rows: list = field(default_factory=list)        # main table rows
    min_rows: list = field(default_factory=list)    # min-latency table rows
    w7_rows: list = field(default_factory=list)     # 7-bit weight table rows (--seven-bit)
    notes: list = field(default_factory=list)
    info: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# models and data


def _npz(path):
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _digits_entries() -> dict:
    with open(EXAMPLES / "models.json") as f:
        data = json.load(f)
    if isinstance(data, dict) and "models" in data:
        data = data["models"]
    if isinstance(data, list):
        return {e["name"]: e for e in data}
    return dict(data)


def _bench_dir(cache_dir: Path) -> Path:
    """Cache directory keyed by the generator's content, so an edited generator regenerates."""
    digest = hashlib.sha256(MAKE_BENCH.read_bytes()).hexdigest()[:10]
    return cache_dir / f"models-{digest}"


def _onnx_input(path: Path) -> tuple[str, list]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name not in inits:
            dims = [d.dim_value if d.HasField("dim_value") else None
                    for d in inp.type.tensor_type.shape.dim]
            return inp.name, dims
    raise ValueError(f"{path.name}: no graph input")


def prepare_case(name: str, cache_dir: Path, echo=print) -> ModelCase:
    import numpy as np

    if name.startswith("digits_"):
        entries = _digits_entries()
        if name not in entries:
            raise KeyError(f"{name} not in nqrt/examples/models.json ({', '.join(entries)})")
        e = entries[name]
        input_name = e.get("input", "input")
        calib_npz = EXAMPLES / e["calib"]
        calib = _npz(calib_npz)[input_name].astype(np.float32)
        test = _npz(EXAMPLES / e["test"])[input_name].astype(np.float32)
        return ModelCase(name, EXAMPLES / e["file"], input_name, calib, calib_npz, test,
                         lambda b, t=test: np.ascontiguousarray(t[:b]))
    if name not in BENCH_FILES:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    if not MAKE_BENCH.exists():
        raise FileNotFoundError(f"{MAKE_BENCH.relative_to(common.REPO)} not found")
    out_dir = _bench_dir(cache_dir)
    path = out_dir / f"{BENCH_FILES[name]}.onnx"
    if not path.exists():
        echo(f"# generating {path} with tools/make_bench_models.py ...")
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp_dir = out_dir / f".tmp-{os.getpid()}"
        proc = subprocess.run([sys.executable, str(MAKE_BENCH), str(tmp_dir), BENCH_FILES[name]],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not (tmp_dir / path.name).exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"make_bench_models.py failed (exit {proc.returncode}): {tail[0]}")
        os.replace(tmp_dir / path.name, path)
        for leftover in tmp_dir.iterdir():
            leftover.unlink()
        tmp_dir.rmdir()
    input_name, dims = _onnx_input(path)
    sample_shape = [d if d else 1 for d in dims[1:]]
    calib_npz = out_dir / f"{BENCH_FILES[name]}.calib{CALIB_SAMPLES}.npz"
    if not calib_npz.exists():
        rng = np.random.default_rng(0)
        calib = rng.standard_normal((CALIB_SAMPLES, *sample_shape), dtype=np.float32)
        np.savez(calib_npz, **{input_name: calib})
    calib = _npz(calib_npz)[input_name]
    eval_x = np.random.default_rng(1).standard_normal((EVAL_SAMPLES, *sample_shape), dtype=np.float32)

    def batch_x(b, shape=tuple(sample_shape)):
        return np.random.default_rng(2).standard_normal((b, *shape), dtype=np.float32)

    return ModelCase(name, path, input_name, calib, calib_npz, eval_x, batch_x)


# ----------------------------------------------------------------------------------------------
# one model


def _pick(outputs, name):
    """nqrt returns a dict; take the output ORT calls `name`, else the first one."""
    if isinstance(outputs, dict):
        if name in outputs:
            return outputs[name]
        return next(iter(outputs.values()))
    return outputs[0]


def bench_model(name: str, batches: list[int], threads: int, repeats: int, warmup: int,
                cache_dir: Path, max_seconds: float | None, ort_preprocess: bool = True,
                echo=print, seven_bit: bool = False) -> ModelResult:
    import numpy as np

    res = ModelResult(name)
    notes = res.notes
    case = attempt("model", prepare_case, name, cache_dir, echo, notes=notes)
    if case is None:
        notes[-1] = notes[-1].replace("model:", "all rows:", 1)
        for b in batches:
            res.rows.append([name, str(b)] + [NA] * (len(COLUMNS) - 2))
            res.min_rows.append([name, str(b)] + [NA] * (len(MIN_COLUMNS) - 2))
        return res
    work = cache_dir / "converted"
    work.mkdir(parents=True, exist_ok=True)

    # ---- sessions
    ort_fp32 = attempt("ORT FP32", common.ort_session, case.onnx_path, threads, notes=notes)
    out_name = ort_fp32.get_outputs()[0].name if ort_fp32 is not None else None

    nq_path = work / f"{name}.nq"
    nq_int = nq_sim = None

    def _convert(path=nq_path, bits=8):
        import nqrt

        if path.exists():
            path.unlink()
        t0 = time.perf_counter()
        nqrt.convert(str(case.onnx_path), str(path), calibration=str(case.calib_npz),
                     per_channel=True, calibration_method="minmax", weight_bits=bits)
        return time.perf_counter() - t0

    nq_w7 = None
    if seven_bit:
        w7_path = work / f"{name}.w7.nq"
        if attempt(W7, _convert, w7_path, 7, notes=notes) is not None:
            import nqrt

            nq_w7 = attempt(W7, nqrt.load, str(w7_path), threads=threads, mode="integer", notes=notes)
    t_conv = attempt("nqrt", _convert, notes=notes)
    if t_conv is not None:
        res.info.append(f"nqrt convert {t_conv:.1f} s")
        import nqrt

        nq_int = attempt("nqrt", nqrt.load, str(nq_path), threads=threads, mode="integer", notes=notes)
        nq_sim = attempt("nqrt simulate", nqrt.load, str(nq_path), threads=threads, mode="simulate",
                         notes=notes)

    def _ort_q():
        t0 = time.perf_counter()
        p = common.ort_quantize_qdq(case.onnx_path, work / f"{name}.ort_int8.onnx", case.input_name,
                                    case.calib, preprocess=ort_preprocess, notes=notes)
        dt = time.perf_counter() - t0
        return common.ort_session(p, threads), dt

    q = attempt("ORT int8", _ort_q, notes=notes)
    ort_int8 = None
    if q is not None:
        ort_int8, t_q = q
        res.info.append(f"ORT quantize_static {t_q:.1f} s")

    # ---- agreement on the evaluation set (independent of the timing batch)
    sessions = {"nqrt int8": nq_int, "nqrt simulate": nq_sim, "ORT FP32": ort_fp32, "ORT int8": ort_int8}
    if nq_w7 is not None:
        sessions[W7] = nq_w7
    runners = {}
    for label, sess in sessions.items():
        if sess is None:
            continue
        if label.startswith("nqrt"):
            runners[label] = lambda x, s=sess: _pick(s.run({case.input_name: x}), out_name)
        else:
            runners[label] = lambda x, s=sess: s.run([out_name], {case.input_name: x})[0]
    outs = {}
    for label, fn in runners.items():
        y = attempt(label, fn, case.eval_x, notes=notes)
        if y is None:
            sessions[label] = None
        else:
            outs[label] = np.asarray(y)
    sq = {}
    if "ORT FP32" in outs:
        for label in ("nqrt int8", "nqrt simulate", "ORT int8", W7):
            if label in outs:
                sq[label] = attempt(f"{label} SQNR", common.sqnr_db, outs["ORT FP32"], outs[label], notes=notes)
    if "nqrt int8" in outs and "nqrt simulate" in outs:
        d = np.max(np.abs(outs["nqrt int8"].astype(np.float64) - outs["nqrt simulate"]))
        res.info.append(f"max |int8 - simulate| {d:.3g}")

    # ---- timing, per batch
    for b in batches:
        x = case.batch_x(b)
        feed = {case.input_name: x}
        cands = {}
        for label, sess in sessions.items():
            if sess is None:
                continue
            if label.startswith("nqrt"):
                cands[label] = (lambda s=sess: s.run(feed))
            else:
                cands[label] = common.ort_runner(sess, feed)
        times = common.time_interleaved(cands, repeats=repeats, warmup=warmup, max_seconds=max_seconds)
        for label, t in times.items():
            if t.error:
                notes.append(f"{label} (batch {b}): not available ({t.error})")
        med = {k: (t.median if t.ok else None) for k, t in times.items()}
        mn = {k: (t.min if t.ok else None) for k, t in times.items()}
        g = med.get
        res.rows.append([
            name, str(b), fmt_ms(g("nqrt int8")), fmt_ms(g("nqrt simulate")), fmt_ms(g("ORT FP32")),
            fmt_ms(g("ORT int8")),
            fmt_ratio(ratio(g("nqrt int8"), g("ORT int8"))), fmt_ratio(ratio(g("ORT FP32"), g("nqrt int8"))),
            fmt_num(sq.get("nqrt int8")), fmt_num(sq.get("nqrt simulate")), fmt_num(sq.get("ORT int8")),
        ])
        counts = sorted({len(t.samples) for t in times.values() if t.ok})
        res.min_rows.append([name, str(b)] + [fmt_ms(mn.get(k)) for k in CANDIDATES]
                            + [fmt_ratio(ratio(mn.get("nqrt int8"), mn.get("ORT int8"))),
                               fmt_ratio(ratio(mn.get("ORT FP32"), mn.get("nqrt int8")))]
                            + ["/".join(map(str, counts)) or NA])
        if seven_bit:
            res.w7_rows.append([
                name, str(b), fmt_ms(g(W7)), fmt_ratio(ratio(g(W7), g("ORT int8"))),
                fmt_ratio(ratio(mn.get(W7), mn.get("ORT int8"))),
                fmt_ratio(ratio(g("ORT FP32"), g(W7))), fmt_ratio(ratio(mn.get("ORT FP32"), mn.get(W7))),
                fmt_ratio(ratio(g(W7), g("nqrt int8"))), fmt_num(sq.get(W7)), fmt_num(sq.get("nqrt int8")),
            ])
    return res


# ----------------------------------------------------------------------------------------------
# driver


def run(models: list[str], batches: list[int], threads: int, repeats: int, warmup: int,
        cache_dir: Path, max_seconds: float | None = None, ort_preprocess: bool = True,
        echo=print, seven_bit: bool = False) -> list[ModelResult]:
    """Benchmark `models` and print the tables through `echo`.  Returns the per-model results."""
    echo(common.environment_line(threads) + f"\n# ORT intra-op spinning {'on' if common.ORT_SPIN else 'off'}")
    echo(f"# repeats={repeats} warmup={warmup} batches={','.join(map(str, batches))} cache={cache_dir}")
    results = []
    for name in models:
        echo(f"# {name} ...")
        r = bench_model(name, batches, threads, repeats, warmup, cache_dir, max_seconds,
                        ort_preprocess=ort_preprocess, echo=echo, seven_bit=seven_bit)
        for n in r.notes:
            echo(f"#   {name}: {n}")
        results.append(r)
    rows = [row for r in results for row in r.rows]
    echo(format_table(COLUMNS, rows, title=f"Median latency (ms), threads={threads}; ratios < 1x mean "
                      "nqrt is faster than ORT int8, speed-up > 1x means nqrt beats ORT FP32; SQNR vs ORT FP32"))
    echo(format_table(MIN_COLUMNS, [row for r in results for row in r.min_rows],
                      title="Minimum latency (ms), ratios of minima (less sensitive to machine load), "
                      "timed samples per candidate"))
    if seven_bit:
        echo(format_table(W7_COLUMNS, [row for r in results for row in r.w7_rows],
                          title="7-bit weights (weight_bits=7), same run: ratios < 1x mean faster than "
                          "ORT int8, > 1x means faster than ORT FP32; 'w7 / 8-bit nqrt' < 1x: faster "
                          "than the default conversion"))
    for r in results:
        for n in r.notes:
            echo(f"- {r.name}: {n}")
        if r.info:
            echo(f"- {r.name}: " + "; ".join(r.info))
    for w in common.warnings_lines():
        echo(w)
    echo(common.load_line("end"))
    return results


def _csv_ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(ALL_MODELS),
                   help=f"comma-separated subset of {','.join(ALL_MODELS)}")
    p.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per candidate and batch")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate first")
    p.add_argument("--max-seconds", type=float, default=20.0,
                   help="stop timing a candidate after this many seconds (>= 3 samples kept)")
    p.add_argument("--cache-dir", type=Path, default=common.DEFAULT_CACHE,
                   help=f"where generated models and converted files go (default {common.DEFAULT_CACHE})")
    p.add_argument("--no-ort-preprocess", action="store_true",
                   help="quantize with ORT without its recommended quant_pre_process step")
    p.add_argument("--ort-no-spin", action="store_true",
                   help="turn off ORT's pool-thread spinning between runs (ORT's default is on)")
    p.add_argument("--seven-bit", action="store_true",
                   help="also time nqrt with 7-bit weights (convert weight_bits=7), in the same run")
    a = p.parse_args(argv)
    common.ORT_SPIN = not a.ort_no_spin
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(ALL_MODELS)}")
    common.collect_warnings()
    for note in common.apply_threads(a.threads):
        print(f"# {note}")
    a.cache_dir.mkdir(parents=True, exist_ok=True)
    run(models, _csv_ints(a.batch), a.threads, a.repeats, a.warmup, a.cache_dir,
        max_seconds=a.max_seconds, ort_preprocess=not a.no_ort_preprocess, seven_bit=a.seven_bit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
