"""The bundled example (`nqrt example`): digits models trained on scikit-learn's handwritten
digits, converted to int8 with their bundled calibration set, evaluated on the held-out test set.

Prints, per model: FP32 accuracy (nqrt's float reference executor on the ONNX graph), int8 and
simulated-int8 accuracy, ONNX and .nq file sizes, and the median single-sample latency of the
int8 session (plus ONNX Runtime FP32 when onnxruntime is installed, for scale).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).parent


def bundled_models() -> dict[str, dict]:
    with open(EXAMPLES / "models.json") as f:
        return {entry["name"]: entry for entry in json.load(f)}


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _median_latency_ms(fn, repeats: int) -> float:
    fn()  # warm-up (plan / JIT)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _ort_latency_ms(model_path: Path, input_name: str, x1: np.ndarray, repeats: int) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return _median_latency_ms(lambda: sess.run(None, {input_name: x1}), repeats)


def run_examples(out_dir: Path, only: str | None = None, repeats: int = 200, echo=print) -> list[dict]:
    import nqrt
    from nqrt.graph import reference
    from nqrt.graph.onnx_import import load_onnx
    from nqrt.graph.passes import optimize

    models = bundled_models()
    if only is not None:
        if only not in models:
            raise nqrt.InputError(f"no bundled model {only!r}; choose from {', '.join(models)}")
        models = {only: models[only]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for name, entry in models.items():
        onnx_path = EXAMPLES / entry["file"]
        nq_path = out_dir / f"{name}.nq"
        input_name, output_name = entry["input"], entry["output"]
        test = _npz(EXAMPLES / entry["test"])
        x, labels = test[input_name], test["label"]

        t0 = time.perf_counter()
        nqrt.convert(str(onnx_path), str(nq_path), calibration=str(EXAMPLES / entry["calib"]))
        convert_s = time.perf_counter() - t0

        graph = optimize(load_onnx(str(onnx_path)))
        fp32 = reference.run(graph, {input_name: x})[output_name]
        int8_sess = nqrt.load(str(nq_path))
        sim_sess = nqrt.load(str(nq_path), mode="simulate")
        int8 = int8_sess.run({input_name: x})[output_name]
        sim = sim_sess.run({input_name: x})[output_name]

        x1 = x[:1]
        row = {
            "model": name,
            "fp32_acc": float(np.mean(fp32.argmax(1) == labels)),
            "int8_acc": float(np.mean(int8.argmax(1) == labels)),
            "sim_acc": float(np.mean(sim.argmax(1) == labels)),
            "onnx_kib": onnx_path.stat().st_size / 1024,
            "nq_kib": nq_path.stat().st_size / 1024,
            "convert_s": convert_s,
            "int8_ms": _median_latency_ms(lambda: int8_sess.run({input_name: x1}), repeats),
            "ort_fp32_ms": _ort_latency_ms(onnx_path, input_name, x1, repeats),
        }
        rows.append(row)

    echo(f"digits test set: {len(labels)} images (scikit-learn load_digits), calibration: bundled set")
    header = f"{'model':<15}{'fp32 acc':>9}{'int8 acc':>9}{'sim acc':>9}{'onnx KiB':>10}{'.nq KiB':>9}" \
             f"{'convert s':>10}{'int8 ms':>9}{'ORT fp32 ms':>12}"
    echo(header)
    for r in rows:
        ort_ms = f"{r['ort_fp32_ms']:.3f}" if r["ort_fp32_ms"] is not None else "n/a"
        echo(f"{r['model']:<15}{r['fp32_acc']:>9.4f}{r['int8_acc']:>9.4f}{r['sim_acc']:>9.4f}"
             f"{r['onnx_kib']:>10.1f}{r['nq_kib']:>9.1f}{r['convert_s']:>10.2f}{r['int8_ms']:>9.3f}{ort_ms:>12}")
    echo(f"latency: median of {repeats} single-sample runs; .nq files in {out_dir}/")
    return rows
