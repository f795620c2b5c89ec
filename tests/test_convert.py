"""The converter end to end: ONNX models built with onnx.helper -> .nq -> runtime.

Numbers: the simulated (fake-quant) model is close to the float reference (SQNR > 30 dB on
conv models) and the integer model agrees with the simulated one within a few output
quantization steps.  Errors: corrupted model, output path == input path, bad calibration
data, unsupported ops.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nqrt.converter import ConversionReport, build_model, convert, load_graph
from nqrt.errors import FormatError, InputError, NqrtError, UnsupportedOpError
from nqrt.graph import reference


# -- model builders ----------------------------------------------------------------------

class B:
    """Tiny onnx.helper wrapper: collects nodes and initializers."""

    def __init__(self, seed=0):
        self.nodes, self.inits, self.k = [], [], 0
        self.rng = np.random.default_rng(seed)

    def const(self, arr, name=None):
        self.k += 1
        name = name or f"c{self.k}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op, inputs, out=None, **attrs):
        self.k += 1
        out = out or f"t{self.k}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}{self.k}", **attrs))
        return out

    def conv(self, x, cin, cout, k=3, pad=1, stride=1, group=1, wscale=None, bias=True):
        wscale = wscale or 1.0 / np.sqrt(cin // group * k * k)
        w = self.const((self.rng.normal(size=(cout, cin // group, k, k)) * wscale).astype(np.float32))
        ins = [x, w] + ([self.const((self.rng.normal(size=cout) * 0.1).astype(np.float32))] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], pads=[pad] * 4, strides=[stride] * 2, group=group)

    def model(self, inputs, outputs, opset=13):
        g = helper.make_graph(
            self.nodes, "m",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])

        return m


def conv_relu_model():
    """Conv+ReLU, MaxPool, strided Conv+ReLU, GAP, Flatten, Gemm, Softmax (output)."""
    b = B(seed=1)
    t = b.op("Relu", [b.conv("x", 3, 8)])
    t = b.op("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2])
    t = b.op("Relu", [b.conv(t, 8, 16, stride=2)])
    t = b.op("GlobalAveragePool", [t])
    t = b.op("Flatten", [t], axis=1)
    w = b.const((b.rng.normal(size=(10, 16)) * 0.5).astype(np.float32))
    t = b.op("Gemm", [t, w, b.const(np.zeros(10, np.float32))], transB=1)
    b.op("Softmax", [t], "probs", axis=-1)
    return b.model([("x", ["N", 3, 12, 12])], ["probs"])


def conv_bn_relu6_model():
    """Conv -> BatchNorm -> Clip(0, 6); depthwise conv + BN + ReLU6; AveragePool; Reshape; Gemm."""
    b = B(seed=2)

    def bn(x, c):
        return b.op("BatchNormalization", [x, b.const(b.rng.uniform(0.5, 2, c).astype(np.float32)),
                                            b.const(b.rng.normal(size=c).astype(np.float32) * 0.2),
                                            b.const(b.rng.normal(size=c).astype(np.float32) * 0.1),
                                            b.const(b.rng.uniform(0.5, 2, c).astype(np.float32))])

    lo, hi = b.const(np.float32(0.0)), b.const(np.float32(6.0))
    t = b.op("Clip", [bn(b.conv("x", 4, 8, bias=False), 8), lo, hi])
    t = b.op("Clip", [bn(b.conv(t, 8, 8, group=8), 8), lo, hi])
    t = b.op("AveragePool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    t = b.op("Reshape", [t, b.const(np.array([0, -1], np.int64))])
    w = b.const((b.rng.normal(size=(8 * 5 * 5, 6)) * 0.05).astype(np.float32))
    b.op("Gemm", [t, w, b.const(np.zeros(6, np.float32))], "out")
    return b.model([("x", ["N", 4, 10, 10])], ["out"])


def residual_model():
    """conv1+relu -> conv2 -> Add(conv2, conv1 branch) -> relu -> conv 1x1 (output)."""
    b = B(seed=3)
    a = b.op("Relu", [b.conv("x", 3, 8)])
    c = b.conv(b.op("Relu", [b.conv(a, 8, 8)]), 8, 8)
    s = b.op("Relu", [b.op("Add", [c, a])])
    b.op("Conv", [s, b.const((b.rng.normal(size=(4, 8, 1, 1)) * 0.3).astype(np.float32))], "y",
         kernel_shape=[1, 1])
    return b.model([("x", ["N", 3, 8, 8])], ["y"])


def concat_model():
    """Two branches with ranges ~100x apart, concatenated on channels, then a 1x1 conv."""
    b = B(seed=4)
    big = b.op("Relu", [b.conv("x", 3, 4, wscale=2.0)])
    small = b.conv("x", 3, 4, wscale=0.02)
    t = b.op("Concat", [big, small], axis=1)
    b.conv(t, 8, 6, k=1, pad=0)
    b.nodes[-1].output[0] = "y"
    return b.model([("x", ["N", 3, 8, 8])], ["y"])


def conv1d_model():
    b = B(seed=5)
    w = b.const((b.rng.normal(size=(6, 4, 3)) * 0.3).astype(np.float32))
    t = b.op("Relu", [b.op("Conv", ["x", w, b.const(np.zeros(6, np.float32))], kernel_shape=[3], pads=[1, 1])])
    t = b.op("MaxPool", [t], kernel_shape=[2], strides=[2])
    t = b.op("Transpose", [t], perm=[0, 2, 1])
    t = b.op("Flatten", [t], axis=1)
    w = b.const((b.rng.normal(size=(48, 3)) * 0.2).astype(np.float32))
    b.op("Gemm", [t, w, b.const(np.zeros(3, np.float32))], "y")
    return b.model([("x", ["N", 4, 16])], ["y"])


MODELS = {"conv_relu": conv_relu_model, "conv_bn_relu6": conv_bn_relu6_model,
          "residual": residual_model, "concat": concat_model, "conv1d": conv1d_model}


def data(model, n, seed=0):
    inp = model.graph.input[0]
    shape = [d.dim_value or n for d in inp.type.tensor_type.shape.dim]
    return {inp.name: np.random.default_rng(seed).normal(size=shape).astype(np.float32)}


def sqnr_db(ref, approx):
    ref = ref.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - approx) ** 2), 1e-30)))


# -- structure ---------------------------------------------------------------------------

EXPECTED_OPS = {
    "conv_relu": {"Quantize": 1, "QConv": 2, "MaxPool": 1, "QReduceMean": 1, "Flatten": 1, "QGemm": 1,
                  "Dequantize": 1, "Softmax": 1},
    "conv_bn_relu6": {"Quantize": 1, "QConv": 2, "QAveragePool": 1, "Reshape": 1, "QGemm": 1, "Dequantize": 1},
    "residual": {"Quantize": 1, "QConv": 4, "QAdd": 1, "Dequantize": 1},
    "concat": {"Quantize": 1, "QConv": 3, "QConcat": 1, "Dequantize": 1},
    "conv1d": {"Quantize": 1, "QConv": 1, "MaxPool": 1, "Transpose": 1, "Flatten": 1, "QGemm": 1,
               "Dequantize": 1},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_convert_structure_and_report(name, tmp_path):
    model = MODELS[name]()
    src = tmp_path / f"{name}.onnx"
    onnx.save(model, src)
    out = tmp_path / f"{name}.nq"
    calib = [data(model, 8, seed=s) for s in range(3)]
    report = convert(str(src), out, calib)
    assert isinstance(report, ConversionReport)
    assert report.node_counts == EXPECTED_OPS[name]
    assert report.output_path == str(out) and out.stat().st_size == report.output_bytes > 0
    assert report.source_bytes == src.stat().st_size and report.calibration_samples == 24
    assert "nodes:" in report.summary()
    from nqrt.format.reader import read_nq

    nq = read_nq(str(out))
    meta = nq.metadata
    assert meta["source_format"] == "onnx" and meta["source_bytes"] == src.stat().st_size
    assert len(meta["source_sha256"]) == 64
    assert meta["calibration"] == {"method": "minmax", "percentile": None, "samples": 24}
    assert meta["weights"] == {"granularity": "per-channel", "bits": 8}
    assert "x" in meta["ranges"] and meta["warnings"] == []
    assert [io.name for io in nq.graph_outputs] == [o.name for o in model.graph.output]
    assert Counter(n.op for n in nq.nodes) == EXPECTED_OPS[name]


def test_source_bytes_count_the_external_data_file(tmp_path):
    """A model saved with its weights in a separate file (PyTorch's dynamo exporter): the
    report's and the metadata's source size include that file, so the size ratio is right."""
    model = MODELS["residual"]()
    src = tmp_path / "m.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    total = src.stat().st_size + (tmp_path / "m.onnx.data").stat().st_size
    assert (tmp_path / "m.onnx.data").stat().st_size > src.stat().st_size
    report = convert(str(src), tmp_path / "m.nq", [data(model, 8)])
    assert report.source_bytes == total
    from nqrt.format.reader import read_nq
    assert read_nq(str(tmp_path / "m.nq")).metadata["source_bytes"] == total


def test_bn_folded_and_relu6_clamp(tmp_path):
    model = conv_bn_relu6_model()
    nq = build_model(model, [data(model, 16)])
    qconvs = [n for n in nq.nodes if n.op == "QConv"]
    assert qconvs[1].attrs["group"] == 8 and nq.tensors[qconvs[1].inputs[1]].data.shape == (8, 1, 3, 3)
    for n in qconvs:
        s, z = nq.qparams(n.outputs[0])
        assert n.attrs["act_min"] == z == 0
        assert n.attrs["act_max"] == min(255, int(np.floor(6.0 / s)))


def test_percentile_calibration_and_per_tensor(tmp_path):
    model = residual_model()
    calib = data(model, 32)
    path = tmp_path / "calib.npz"
    np.savez(path, **calib)
    out = tmp_path / "r.nq"
    report = convert(model, out, str(path), calibration_method="percentile", percentile=99.9,
                     per_channel=False, batch_size=10)
    assert report.calibration_samples == 32
    from nqrt.format.reader import read_nq

    nq = read_nq(str(out))
    assert nq.metadata["calibration"] == {"method": "percentile", "percentile": 99.9, "samples": 32}
    assert nq.metadata["weights"] == {"granularity": "per-tensor", "bits": 8}
    for n in nq.nodes:
        if n.op == "QConv":
            assert nq.tensors[n.inputs[1]].quant.axis is None


# -- numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["conv_relu", "conv_bn_relu6", "residual", "concat", "conv1d"])
def test_simulate_close_to_float_and_integer_close_to_simulate(name, tmp_path):
    session_mod = pytest.importorskip("nqrt.runtime.session")
    model = MODELS[name]()
    calib = [data(model, 16, seed=s) for s in range(4)]
    out = tmp_path / "m.nq"
    convert(model, out, calib)
    feeds = data(model, 16, seed=99)
    graph = load_graph(model)
    ref = reference.run(graph, feeds)
    sim = session_mod.Session.load(str(out), mode="simulate").run(feeds)
    integer = session_mod.Session.load(str(out), mode="integer").run(feeds)
    from nqrt.format.reader import read_nq

    nq = read_nq(str(out))
    deq = {n.outputs[0]: n.inputs[0] for n in nq.nodes if n.op == "Dequantize"}
    for o in ref:
        assert sim[o].shape == ref[o].shape and integer[o].dtype == np.float32
        db = sqnr_db(ref[o], sim[o])
        assert db > 30.0, f"{name}/{o}: simulate SQNR {db:.1f} dB"
        assert np.std(sim[o]) > 0                         # not saturated / constant
        if o in deq:                                      # a direct Dequantize: compare in steps
            s, _ = nq.qparams(deq[o])
            steps = np.abs(integer[o] - sim[o]) / s
            assert steps.max() <= 3.0, f"{name}/{o}: integer vs simulate differ by {steps.max():.1f} steps"
        else:
            np.testing.assert_allclose(integer[o], sim[o], atol=0.05)


# -- errors ------------------------------------------------------------------------------

def test_corrupted_onnx_is_a_format_error(tmp_path):
    good = conv_relu_model().SerializeToString()
    for i, blob in enumerate([b"\x00garbage\xff" * 10, good[: len(good) // 2]]):
        src = tmp_path / f"bad{i}.onnx"
        src.write_bytes(blob)
        with pytest.raises(FormatError):
            convert(str(src), tmp_path / f"bad{i}.nq", [data(conv_relu_model(), 2)])
        assert not (tmp_path / f"bad{i}.nq").exists()


def test_output_path_equal_to_input_is_refused(tmp_path):
    model = residual_model()
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    before = src.read_bytes()
    for target in (src, tmp_path / "." / "m.onnx"):
        with pytest.raises(NqrtError, match="overwrite"):
            convert(str(src), target, [data(model, 4)])
    assert src.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_bad_calibration_data(tmp_path):
    model = residual_model()
    out = tmp_path / "m.nq"
    good = data(model, 4)["x"]
    cases = [
        ([{"y": good}], "missing input"),
        ([{"x": good, "extra": good}], "unknown input"),
        ([{"x": good[:, :2]}], r"shape \[4, 2, 8, 8\]"),
        ([{"x": good[0]}], "expects"),
        ([{"x": good.astype(np.int32)}], "dtype int32"),
        ([], "empty"),
        ({"x": good[:0]}, "empty"),
        ([np.zeros(3)], "expected a dict"),
    ]
    for calib, msg in cases:
        with pytest.raises(InputError, match=msg):
            convert(model, out, calib)
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=good[:0])
    with pytest.raises(InputError, match="empty"):
        convert(model, out, str(empty))
    assert not out.exists()


def test_unsupported_ops_listed_together(tmp_path):
    b = B(seed=100)
    t = b.op("Relu", [b.conv("x", 3, 4)])
    t = b.op("Gather", [t, b.const(np.array([0, 2], np.int64))], axis=1)
    t = b.op("Softmax", [t], axis=1)
    t = b.op("Div", [t, b.const(np.array([1.0, 0.0], np.float32).reshape(1, 2, 1, 1))])
    b.op("Flatten", [t], "y", axis=1)
    model = b.model([("x", ["N", 3, 6, 6])], ["y"])
    with pytest.raises(UnsupportedOpError) as e:
        convert(model, tmp_path / "u.nq", [data(model, 2)])
    msg = str(e.value)
    for word in ("Gather", "Div by a constant with zeros"):
        assert word in msg
    assert not (tmp_path / "u.nq").exists()


def test_unsupported_op_message_stays_short_and_the_exception_keeps_every_node(tmp_path):
    """23 Hardmax nodes name five of them and a count on one line."""
    b = B(seed=101)
    t = b.conv("x", 3, 4)
    for k in range(23):
        t = b.op("Hardmax", [t], f"lp{k}", axis=1)
    b.op("Flatten", [t], "y", axis=1)
    model = b.model([("x", ["N", 3, 6, 6])], ["y"])
    with pytest.raises(UnsupportedOpError) as e:
        convert(model, tmp_path / "u.nq", [data(model, 2)])
    msg = str(e.value)
    names = e.value.ops["Hardmax"]
    assert len(names) == len(set(names)) == 23
    assert "\n" not in msg
    assert f"Hardmax (23 nodes: {', '.join(names[:5])} and 18 more)" in msg
    assert names[5] not in msg


def test_bias_overflow_guard_end_to_end(tmp_path):
    """Tiny input range and weights with a huge bias: enlarged weight scale, warning, int32 fits."""
    b = B(seed=100)
    w = b.const((b.rng.normal(size=(4, 2, 3, 3)) * 1e-4).astype(np.float32))
    bias = b.const(np.array([3e5, 1e-6, -2e5, 0.0], np.float32))
    b.op("Conv", ["x", w, bias], "y", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = b.model([("x", ["N", 2, 5, 5])], ["y"])
    calib = [{"x": (np.random.default_rng(0).normal(size=(4, 2, 5, 5)) * 1e-4).astype(np.float32)}]
    with pytest.warns(UserWarning, match="bias would overflow int32"):
        report = convert(model, tmp_path / "b.nq", calib)
    assert len(report.warnings) == 1 and "channels 0, 2" in report.warnings[0]
    from nqrt.format.reader import read_nq

    nq = read_nq(str(tmp_path / "b.nq"))
    assert nq.metadata["warnings"] == report.warnings
    qconv = next(n for n in nq.nodes if n.op == "QConv")
    bq = nq.tensors[qconv.inputs[2]]
    assert bq.data.dtype == np.int32
    deq = bq.data.astype(np.float64) * np.asarray(bq.quant.scale, np.float64)
    np.testing.assert_allclose(deq, [3e5, 1e-6, -2e5, 0.0], rtol=1e-6, atol=max(bq.quant.scale))


def test_calibration_sources_and_fixed_batch(tmp_path):
    """A dict of arrays (first axis = samples) and a model whose batch dim is fixed at 1."""
    b = B(seed=7)
    b.op("Relu", [b.conv("x", 2, 4)], "y")
    model = b.model([("x", [1, 2, 6, 6])], ["y"])
    calib = {"x": np.random.default_rng(1).normal(size=(5, 2, 6, 6)).astype(np.float32)}
    report = convert(model, tmp_path / "f.nq", calib, batch_size=2)
    assert report.calibration_samples == 5
    report = convert(model, tmp_path / "g.nq", [calib])           # split into batches of 1
    assert report.calibration_samples == 5
    from nqrt.format.reader import read_nq

    nq = read_nq(str(tmp_path / "g.nq"))
    assert nq.graph_inputs[0].shape == (1, 2, 6, 6)
    lo, hi = nq.metadata["ranges"]["x"]
    assert (lo, hi) == (float(calib["x"].min()), float(calib["x"].max()))
    assert nq.metadata["ranges"]["y"][0] == 0.0


def test_unknown_method_and_bad_arguments(tmp_path):
    model = residual_model()
    for kwargs, msg in [({"calibration_method": "entropy"}, "unknown calibration method"),
                        ({"calibration_method": "percentile", "percentile": 10.0}, "percentile"),
                        ({"batch_size": 0}, "batch_size"),
                        ({"weight_bits": 6}, r"weight_bits must be one of \[7, 8\], got 6")]:
        with pytest.raises(InputError, match=msg):
            convert(model, tmp_path / "m.nq", [data(model, 2)], **kwargs)


def test_seven_bit_weights(tmp_path, monkeypatch):
    """weight_bits=7: QConv/QGemm weights in [-63, 63] (depthwise convs keep 8 bits), recorded
    in the metadata; on the avx2 path the planner packs those layers for the vpmaddubsw kernel,
    which gives exactly the portable path's outputs; digits accuracy stays within a point of
    the 8-bit model's."""
    from nqrt.format.reader import read_nq
    from nqrt.kernels import cpu, vnni, winograd
    from nqrt.runtime import planner
    from nqrt.runtime.session import Session

    examples = os.path.join(os.path.dirname(__import__("nqrt").__file__), "examples")
    src = os.path.join(examples, "digits_cnn.onnx")
    calib = os.path.join(examples, "digits_calib.npz")
    with np.load(os.path.join(examples, "digits_test.npz")) as z:
        x, labels = z["input"], z["label"]
    acc = {}
    for bits in (8, 7):
        out = tmp_path / f"m{bits}.nq"
        convert(src, out, calib, weight_bits=bits)
        nq = read_nq(str(out))
        assert nq.metadata["weights"] == {"granularity": "per-channel", "bits": bits}
        for n in nq.nodes:
            if n.op in ("QConv", "QGemm"):
                w = nq.tensors[n.inputs[1]].data
                depthwise = n.op == "QConv" and int(n.attrs["group"]) == w.shape[0] > 1
                limit = 127 if bits == 8 or depthwise else 63
                assert np.abs(w).max() == limit, (n.name, bits)
        logits = Session.load(nq).run({"input": x})["logits"]
        acc[bits] = float(np.mean(np.argmax(logits, 1) == labels))
        if bits == 7 and "avx2" in cpu.available_paths():
            with monkeypatch.context() as mp:                 # the same file on the portable path
                mp.setenv("NQRT_GEMM_PATH", "portable")
                portable = Session.load(nq).run({"input": x})["logits"]
            assert np.array_equal(portable, logits)
            consts = planner.prepare(nq, "avx2")
            layouts = [(int(consts.wpool[c["wpack"]]), n.op == "QConv" and winograd.winograd_eligible(
                        *nq.tensors[n.inputs[1]].data.shape[1::-1], *nq.tensors[n.inputs[1]].data.shape[2:],
                        *n.attrs["strides"], *n.attrs["dilations"], int(n.attrs["group"])))
                       for n, c in zip(nq.nodes, consts.node)
                       if n.op == "QGemm" or n.op == "QConv" and int(n.attrs["group"]) == 1]
            # 3x3 stride-1 convs run as Winograd (int16, exact for any weights), the others
            # on vpmaddubsw
            assert layouts and all(lay == (winograd.LAYOUT_WINOGRAD if wino else vnni.LAYOUT_QUADS)
                                   for lay, wino in layouts)
            assert any(not wino for _, wino in layouts)
    assert acc[7] >= acc[8] - 0.01, acc
