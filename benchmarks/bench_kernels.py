"""Kernel throughput: nqrt int8 GEMM / conv (through one-node converted models) vs ONNX Runtime and numpy.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_kernels.py \
        [--threads 2] [--repeats 20] [--only gemm|conv|matmul] [--cache-dir DIR] [--seven-bit]

GEMM (M,K,N) rows, each a float input A[M,K] times a constant weight B[K,N]:
  * nqrt int8          one-node ONNX MatMul converted by nqrt.convert (per-channel, MinMax) and
                       run by nqrt.load(mode="integer"): float in, float out, so the time includes
                       quantizing A and dequantizing the result -- what a user of nqrt gets
  * nqrt int8 layer    the nqrt model's QGemm instruction alone (u8 in, requantized u8 out,
                       run through the interpreter loop like every instruction): the layer as it
                       runs inside an int8 graph, where no quantize / dequantize surrounds it.
                       The bare-kernel row to set beside ORT MatMulInteger
  * ORT MatMulInteger  one-node MatMulInteger, u8 A (zero point 128) x s8 B -> s32: the bare int8
                       kernel, no quantize / dequantize
  * ORT int8 QDQ       the FP32 model quantized by ORT's quantize_static (QDQ, u8s8, per-channel,
                       MinMax): ORT's float-in/float-out equivalent of the nqrt row
  * ORT FP32           one-node MatMul
  * numpy FP32         a @ b (OpenBLAS; slowed by OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE if set)
  * nqrt int8 w7       (--seven-bit) the nqrt row converted with weight_bits=7 (weights in
                       [-63, 63]: the exact vpmaddubsw kernel on AVX2 CPUs without VNNI);
                       its ratios are the "w7/peer" columns
Conv rows (56x56, 3x3, pad 1): 64->64 dense and 128-channel depthwise, batch 1 and 8, with bias:
nqrt int8 (float NCHW in and out, like the ORT rows), nqrt int8 layer (the QConv instruction
alone: u8 NHWC in and out, as inside an int8 graph), ORT FP32 Conv, ORT int8 QDQ (QLinearConv
after ORT's fusion).
MatMul rows: attention's two products of a ViT-B/16 layer at batch 1 (12 heads, 197 tokens, 64
dims), both operands run-time tensors: nqrt int8 (QMatMul, float in and out), nqrt int8 layer
(the QMatMul instruction alone), ORT MatMulInteger (u8 x u8 -> s32, zero points 128: no
requantize), ORT int8 QDQ (ORT's quantize_static of the one-node model), ORT FP32.
Throughput is GMAC/s from the median latency; ratios are nqrt's GMAC/s over the peer's (>1x: nqrt
is faster).  SQNR columns compare the float outputs against ORT FP32.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import attempt, fmt_ms, fmt_num, fmt_ratio, format_table, ratio  # noqa: E402

GEMM_SHAPES = [(1, 768, 768), (8, 768, 3072), (128, 768, 768), (256, 1024, 1024), (1024, 1024, 1024)]
# (label, batch, channels, groups)
CONV_CASES = [("conv3x3 64->64", 1, 64, 1), ("conv3x3 64->64", 8, 64, 1),
              ("dw3x3 128", 1, 128, 128), ("dw3x3 128", 8, 128, 128)]
# attention's Q·Kᵀ and softmax·V of a ViT-B/16 layer at batch 1 (12 heads, 197 tokens, 64 dims)
MATMUL_CASES = [("attn QK^T", 12, 197, 64, 197), ("attn AV", 12, 197, 197, 64)]
HW = 56
OPSET = 13

LAYER = "nqrt int8 layer"   # the nqrt model's QGemm / QConv instruction alone: u8 in, u8 out
GEMM_CANDS = ["nqrt int8", LAYER, "ORT MatMulInteger", "ORT int8 QDQ", "ORT FP32", "numpy FP32"]
CONV_CANDS = ["nqrt int8", LAYER, "ORT int8 QDQ", "ORT FP32"]
MATMUL_CANDS = ["nqrt int8", LAYER, "ORT MatMulInteger", "ORT int8 QDQ", "ORT FP32"]
W7 = "nqrt int8 w7"    # --seven-bit: the same one-node model converted with weight_bits=7


@dataclass
class Case:
    label: str
    macs: int
    fp32_model: object      # onnx.ModelProto
    input_name: str
    x: object               # timing input (float32)
    calib: object           # calibration array, samples on axis 0
    more: dict = field(default_factory=dict)   # further inputs: name -> (timing array, calibration)

    @property
    def feed(self) -> dict:
        return {self.input_name: self.x, **{k: v[0] for k, v in self.more.items()}}

    @property
    def calib_arrays(self) -> dict:
        return {self.input_name: self.calib, **{k: v[1] for k, v in self.more.items()}}


# ----------------------------------------------------------------------------------------------
# one-node models


def _model(nodes, inputs, outputs, inits, name):
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nqrt-bench")
    m.ir_version = 8
    return m


def gemm_case(M, K, N, op="MatMul"):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(K * 7919 + N)
    w = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "B")]
    if op == "MatMul":
        node = helper.make_node("MatMul", ["A", "B"], ["Y"], name="matmul")
    else:
        node = helper.make_node("Gemm", ["A", "B"], ["Y"], name="gemm")
    m = _model([node], [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", K])],
               [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", N])], inits, f"gemm_{M}x{K}x{N}")
    x = rng.standard_normal((M, K)).astype(np.float32)
    calib = rng.standard_normal((64, K)).astype(np.float32)
    return Case(f"{M}x{K}x{N}", M * K * N, m, "A", x, calib), w


def matmulinteger_model(w_fp32):
    """u8 A (zero point 128) x s8 B (symmetric per-tensor) -> s32."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    K, N = w_fp32.shape
    scale = np.abs(w_fp32).max() / 127.0
    wq = np.clip(np.round(w_fp32 / scale), -127, 127).astype(np.int8)
    inits = [numpy_helper.from_array(wq, "B"), numpy_helper.from_array(np.array(128, np.uint8), "a_zp")]
    node = helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"], name="mmi")
    return _model([node], [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", K])],
                  [helper.make_tensor_value_info("Y", TensorProto.INT32, ["M", N])], inits, "matmulinteger")


def matmul_case(label, nb, M, K, N):
    """MatMul of two run-time tensors [nb, M, K] x [nb, K, N] (nqrt: QMatMul)."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(M * 131 + K)
    node = helper.make_node("MatMul", ["A", "B"], ["Y"], name="matmul")
    m = _model([node], [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["N", M, K]),
                        helper.make_tensor_value_info("B", TensorProto.FLOAT, ["N", K, N])],
               [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", M, N])], [], f"matmul_{label}")
    a, b = rng.standard_normal((nb, M, K)).astype(np.float32), rng.standard_normal((nb, K, N)).astype(np.float32)
    calib_a = rng.standard_normal((4 * nb, M, K)).astype(np.float32)   # samples on axis 0
    calib_b = rng.standard_normal((4 * nb, K, N)).astype(np.float32)
    return Case(f"{label} {nb}x{M}x{K}x{N}", nb * M * K * N, m, "A", a, calib_a,
                more={"B": (b, calib_b)})


def matmulinteger_u8u8_model(nb, M, K, N):
    """u8 x u8 -> s32 with zero points 128 (ONNX Runtime's integer kernel, no requantize)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(128, np.uint8), "a_zp"),
             numpy_helper.from_array(np.array(128, np.uint8), "b_zp")]
    node = helper.make_node("MatMulInteger", ["A", "B", "a_zp", "b_zp"], ["Y"], name="mmi")
    return _model([node], [helper.make_tensor_value_info("A", TensorProto.UINT8, [nb, M, K]),
                           helper.make_tensor_value_info("B", TensorProto.UINT8, [nb, K, N])],
                  [helper.make_tensor_value_info("Y", TensorProto.INT32, [nb, M, N])], inits, "mmi_u8u8")


def conv_case(label, batch, C, groups):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(C * 31 + groups)
    cin_g = C // groups
    w = (rng.standard_normal((C, cin_g, 3, 3)) * np.sqrt(2.0 / (cin_g * 9))).astype(np.float32)
    b = (rng.standard_normal(C) * 0.1).astype(np.float32)
    node = helper.make_node("Conv", ["X", "W", "Bias"], ["Y"], name="conv", kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1], strides=[1, 1], group=groups)
    m = _model([node], [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", C, HW, HW])],
               [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", C, HW, HW])],
               [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "Bias")], f"conv_{label}")
    x = rng.standard_normal((batch, C, HW, HW)).astype(np.float32)
    calib = rng.standard_normal((4, C, HW, HW)).astype(np.float32)
    macs = batch * C * HW * HW * cin_g * 9
    return Case(f"{label} b{batch}", macs, m, "X", x, calib)


# ----------------------------------------------------------------------------------------------
# runners


def _nqrt_session(case: Case, work: Path, tag: str, threads: int, notes: list, fallback_gemm=None,
                  weight_bits=8):
    """Convert the one-node model with nqrt and load it; on a MatMul failure retry as Gemm."""
    import numpy as np
    import onnx

    import nqrt

    def conv_and_load(model, suffix):
        src = work / f"{tag}{suffix}.onnx"
        onnx.save(model, str(src))
        calib = work / f"{tag}{suffix}.calib.npz"
        np.savez(calib, **case.calib_arrays)
        out = work / f"{tag}{suffix}{'' if weight_bits == 8 else '.w7'}.nq"
        nqrt.convert(str(src), str(out), calibration=str(calib), per_channel=True, calibration_method="minmax",
                     weight_bits=weight_bits)
        return nqrt.load(str(out), threads=threads, mode="integer")

    try:
        return conv_and_load(case.fp32_model, "")
    except Exception as first:  # noqa: BLE001
        if fallback_gemm is None or isinstance(first, ImportError):
            raise
        try:
            sess = conv_and_load(fallback_gemm, ".gemm")
        except Exception as second:  # noqa: BLE001
            raise RuntimeError(f"MatMul: {common._short_error(first)}; Gemm: {common._short_error(second)}") \
                from None
        notes.append(f"nqrt: one-node MatMul failed ({common._short_error(first)}); timed a one-node Gemm")
        return sess


def _layer_runner(sess, feed):
    from nqrt.runtime import encoding

    return common.nqrt_layer_runner(sess, feed, (encoding.OP_CONV, encoding.OP_GEMM, encoding.OP_MATMUL))


def _first(outputs):
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    return outputs[0]


def bench_case(case: Case, cands_wanted, threads, repeats, warmup, work: Path, max_seconds,
               extra=None, fallback_gemm=None):
    """Build every candidate for one shape, check agreement, time interleaved. Returns a dict."""
    import numpy as np

    notes: list[str] = []
    tag = case.label.replace(" ", "_").replace(">", "").replace("-", "_")
    import onnx

    fp32_path = work / f"{tag}.fp32.onnx"
    onnx.save(case.fp32_model, str(fp32_path))
    feed = case.feed
    cands, outs = {}, {}

    ort_fp32 = attempt("ORT FP32", common.ort_session, fp32_path, threads, notes=notes)
    if ort_fp32 is not None:
        cands["ORT FP32"] = common.ort_runner(ort_fp32, feed)
        outs["ORT FP32"] = attempt("ORT FP32", lambda: cands["ORT FP32"]()[0], notes=notes)

    for label, bits in (("nqrt int8", 8), (W7, 7)):
        if label not in cands_wanted:
            continue
        nq = attempt(label, _nqrt_session, case, work, tag, threads, notes, fallback_gemm, bits,
                     notes=notes)
        if nq is not None:
            y = attempt(label, lambda s=nq: _first(s.run(feed)), notes=notes)
            if y is not None:
                cands[label] = lambda s=nq: s.run(feed)
                outs[label] = y
            if label == "nqrt int8" and LAYER in cands_wanted:
                layer = attempt(LAYER, _layer_runner, nq, feed, notes=notes)
                if layer is not None:
                    cands[LAYER] = layer

    def _ort_q():
        p = common.ort_quantize_qdq(fp32_path, work / f"{tag}.ort_int8.onnx", None, case.calib_arrays,
                                    preprocess=False, notes=notes)
        return common.ort_session(p, threads)

    if "ORT int8 QDQ" in cands_wanted:
        q = attempt("ORT int8 QDQ", _ort_q, notes=notes)
        if q is not None:
            cands["ORT int8 QDQ"] = common.ort_runner(q, feed)
            outs["ORT int8 QDQ"] = attempt("ORT int8 QDQ", lambda: cands["ORT int8 QDQ"]()[0], notes=notes)
    for name, fn in (extra or {}).items():
        if name in cands_wanted:
            built = attempt(name, fn, notes=notes)
            if built is not None:
                cands[name] = built

    sq = {}
    if outs.get("ORT FP32") is not None:
        for k in ("nqrt int8", W7, "ORT int8 QDQ"):
            if outs.get(k) is not None:
                sq[k] = attempt(f"{k} SQNR", common.sqnr_db, outs["ORT FP32"], np.asarray(outs[k]), notes=notes)

    order = [c for c in cands_wanted if c in cands]
    times = common.time_interleaved({c: cands[c] for c in order}, repeats=repeats, warmup=warmup,
                                    max_seconds=max_seconds)
    med, mins = {}, {}
    for c, t in times.items():
        if t.error:
            notes.append(f"{c}: not available ({t.error})")
        med[c] = t.median if t.ok else None
        mins[c] = t.min if t.ok else None
    gmacs = {c: (case.macs / med[c] / 1e9 if med.get(c) else None) for c in cands_wanted}
    return {"case": case, "median": med, "min": mins, "gmacs": gmacs, "sqnr": sq, "notes": notes}


def gemm_results(threads, repeats, warmup, work, max_seconds, shapes=GEMM_SHAPES, cands=GEMM_CANDS):
    import numpy as np

    results = []
    for M, K, N in shapes:
        case, w = gemm_case(M, K, N)
        gemm_model, _ = gemm_case(M, K, N, op="Gemm")
        a_u8 = np.random.default_rng(3).integers(0, 256, (M, K), dtype=np.uint8)
        x, b = case.x, w

        def mmi():
            mp = work / f"mmi_{K}x{N}.onnx"
            import onnx

            onnx.save(matmulinteger_model(w), str(mp))
            s = common.ort_session(mp, threads)
            return common.ort_runner(s, {"A": a_u8})

        def np_mm():
            return lambda: x @ b

        results.append(bench_case(case, cands, threads, repeats, warmup, work, max_seconds,
                                  extra={"ORT MatMulInteger": mmi, "numpy FP32": np_mm},
                                  fallback_gemm=gemm_model.fp32_model))
    return results


def matmul_results(threads, repeats, warmup, work, max_seconds, cases=MATMUL_CASES, cands=MATMUL_CANDS):
    import numpy as np

    results = []
    for label, nb, M, K, N in cases:
        case = matmul_case(label, nb, M, K, N)
        rng = np.random.default_rng(5)
        feed = {"A": rng.integers(0, 256, (nb, M, K), dtype=np.uint8),
                "B": rng.integers(0, 256, (nb, K, N), dtype=np.uint8)}

        def mmi(nb=nb, M=M, K=K, N=N, feed=feed):
            import onnx

            mp = work / f"mmi_u8u8_{nb}x{M}x{K}x{N}.onnx"
            onnx.save(matmulinteger_u8u8_model(nb, M, K, N), str(mp))
            return common.ort_runner(common.ort_session(mp, threads), feed)

        results.append(bench_case(case, cands, threads, repeats, warmup, work, max_seconds,
                                  extra={"ORT MatMulInteger": mmi}))
    return results


def conv_results(threads, repeats, warmup, work, max_seconds, cases=CONV_CASES, cands=CONV_CANDS):
    return [bench_case(conv_case(*c), cands, threads, repeats, warmup, work, max_seconds)
            for c in cases]


def _tables(results, cands, kind, threads):
    subjects = [c for c in cands if c.startswith("nqrt")]           # nqrt int8 [, nqrt int8 w7]
    short = {"nqrt int8": "nqrt", LAYER: "layer", W7: "w7"}
    peers = [c for c in cands if c not in subjects]
    pairs = [(s, p) for s in subjects for p in peers]
    cols = ([kind, "MMAC"] + [f"{c}" for c in cands] + [f"{short[s]}/{p}" for s, p in pairs]
            + [f"SQNR {short[s]} dB" for s in subjects if s != LAYER] + ["SQNR ORT-QDQ dB"])
    rows, ms_rows = [], []
    for r in results:
        g, med, sq = r["gmacs"], r["median"], r["sqnr"]
        rows.append([r["case"].label, f"{r['case'].macs / 1e6:.1f}"] + [fmt_num(g.get(c)) for c in cands]
                    + [fmt_ratio(ratio(g.get(s), g.get(p))) for s, p in pairs]
                    + [fmt_num(sq.get(s)) for s in subjects if s != LAYER]
                    + [fmt_num(sq.get("ORT int8 QDQ"))])
        mn = r["min"]
        ms_rows.append([r["case"].label] + [f"{fmt_ms(med.get(c))} / {fmt_ms(mn.get(c))}" for c in cands]
                       + [fmt_ratio(ratio(mn.get(p), mn.get(s))) for s, p in pairs])
    t1 = format_table(cols, rows, title=f"{kind}: GMAC/s from median latency, threads={threads} "
                      "(nqrt/peer > 1x: nqrt faster)")
    t2 = format_table([kind] + [f"{c} ms" for c in cands] + [f"{short[s]}/{p} (min)" for s, p in pairs],
                      ms_rows, title=f"{kind}: latency ms, median / min; speed ratios from the minima")
    return t1 + "\n" + t2


def run(threads, repeats, warmup, cache_dir: Path, only=None, max_seconds=None, echo=print,
        gemm_shapes=GEMM_SHAPES, conv_cases=CONV_CASES, seven_bit=False, matmul_cases=MATMUL_CASES):
    gemm_cands = GEMM_CANDS + ([W7] if seven_bit else [])
    conv_cands = CONV_CANDS + ([W7] if seven_bit else [])
    echo(common.environment_line(threads) + f"\n# ORT intra-op spinning {'on' if common.ORT_SPIN else 'off'}")
    echo(f"# repeats={repeats} warmup={warmup}")
    warn = common.slow_blas_warning()
    if warn:
        echo("# " + warn)
    work = cache_dir / "kernels"
    work.mkdir(parents=True, exist_ok=True)
    out = {}
    if only in (None, "gemm"):
        echo("# GEMM ...")
        out["gemm"] = gemm_results(threads, repeats, warmup, work, max_seconds, gemm_shapes, gemm_cands)
        echo(_tables(out["gemm"], gemm_cands, "GEMM MxKxN", threads))
        if warn:
            echo("# numpy FP32 row measured with " + warn.split(" is set")[0].replace("warning: ", ""))
    if only in (None, "conv"):
        echo("# conv ...")
        out["conv"] = conv_results(threads, repeats, warmup, work, max_seconds, conv_cases, conv_cands)
        echo(_tables(out["conv"], conv_cands, "conv 56x56", threads))
    if only in (None, "matmul"):
        echo("# MatMul of two activations ...")
        out["matmul"] = matmul_results(threads, repeats, warmup, work, max_seconds, matmul_cases)
        echo(_tables(out["matmul"], MATMUL_CANDS, "MatMul act x act", threads))
    for rs in out.values():
        for r in rs:
            for n in r["notes"]:
                echo(f"- {r['case'].label}: {n}")
    for w in common.warnings_lines():
        echo(w)
    echo(common.load_line("end"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--only", choices=["gemm", "conv", "matmul"], default=None)
    p.add_argument("--max-seconds", type=float, default=10.0,
                   help="stop timing a candidate after this many seconds (>= 3 samples kept)")
    p.add_argument("--cache-dir", type=Path, default=common.DEFAULT_CACHE)
    p.add_argument("--seven-bit", action="store_true",
                   help="also time nqrt with 7-bit weights (convert weight_bits=7), in the same run")
    p.add_argument("--ort-no-spin", action="store_true",
                   help="turn off ORT's pool-thread spinning between runs (ORT's default is on)")
    a = p.parse_args(argv)
    common.ORT_SPIN = not a.ort_no_spin
    common.collect_warnings()
    for note in common.apply_threads(a.threads):
        print(f"# {note}")
    run(a.threads, a.repeats, a.warmup, a.cache_dir, only=a.only, max_seconds=a.max_seconds,
        seven_bit=a.seven_bit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
