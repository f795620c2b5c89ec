"""Shared builders for the .nq format tests: a representative model using every op, and
helpers that wrap a hand-built document into a file with a *valid* checksum."""

from __future__ import annotations

import hashlib

import msgpack
import numpy as np
import pytest

from nqrt.format.model import NqIO, NqModel, NqNode, NqTensor, Quant

F32 = lambda v: float(np.float32(v))  # noqa: E731  (scales must be float32 values)


def _act(name, shape, scale, zp):
    return NqTensor(name, "uint8", tuple(shape), Quant([F32(scale)], [zp]))


def _const(name, array, quant=None):
    array = np.asarray(array)
    dtype = {np.dtype("int8"): "int8", np.dtype("int32"): "int32"}[array.dtype]
    return NqTensor(name, dtype, tuple(array.shape), quant, array)


def _requant(prefix, n, rng):
    return [_const(f"{prefix}.m", rng.integers(2**30, 2**31 - 1, n, dtype=np.int32)),
            _const(f"{prefix}.n", rng.integers(1, 63, n, dtype=np.int32))]


def sample_model() -> NqModel:
    """Every op of schema.OPS, symbolic batch dim, per-channel and per-tensor weights."""
    rng = np.random.default_rng(0)
    t: list[NqTensor] = []
    n: list[NqNode] = []
    act = dict(act_min=0, act_max=255)
    t.append(NqTensor("x", "float32", ("N", 3, 8, 8)))
    t.append(_act("xq", ("N", 3, 8, 8), 0.05, 128))
    n.append(NqNode("Quantize", ["x"], ["xq"], {}, "quant_in"))
    # QConv, per-channel weights, [M] multipliers
    w1 = rng.integers(-127, 128, (4, 3, 3, 3), dtype=np.int8)
    ws1 = [F32(s) for s in (0.01, 0.02, 0.03, 0.04)]
    t += [_const("c1.w", w1, Quant(ws1, [0] * 4, 0)),
          _const("c1.b", rng.integers(-1000, 1000, 4, dtype=np.int32),
                 Quant([F32(0.05 * s) for s in ws1], [0] * 4, 0)),
          *_requant("c1", 4, rng), _act("c1", ("N", 4, 8, 8), 0.1, 0)]
    n.append(NqNode("QConv", ["xq", "c1.w", "c1.b", "c1.m", "c1.n"], ["c1"],
                    dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, **act), "conv1"))
    # depthwise QConv, per-tensor weights, [1] multipliers, fused ReLU6-like clamp
    t += [_const("c2.w", rng.integers(-127, 128, (4, 1, 3, 3), dtype=np.int8), Quant([F32(0.02)], [0])),
          _const("c2.b", rng.integers(-99, 99, 4, dtype=np.int32), Quant([F32(0.002)], [0])),
          *_requant("c2", 1, rng), _act("c2", ("N", 4, 8, 8), 0.1, 0)]
    n.append(NqNode("QConv", ["c1", "c2.w", "c2.b", "c2.m", "c2.n"], ["c2"],
                    dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=4,
                         act_min=0, act_max=60), "conv2_dw"))
    t.append(_act("a1", ("N", 4, 8, 8), 0.2, 3))
    n.append(NqNode("QAdd", ["c1", "c2"], ["a1"],
                    dict(multiplier_a=2**30, multiplier_b=2**29, shift=31, **act), "add"))
    t.append(_act("p1", ("N", 4, 4, 4), 0.2, 3))
    n.append(NqNode("MaxPool", ["a1"], ["p1"],
                    dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], dilations=[1, 1],
                         ceil_mode=0, **act), "maxpool"))
    t += [*_requant("p2", 5, rng), _act("p2", ("N", 4, 5, 5), 0.15, 2)]
    n.append(NqNode("QAveragePool", ["p1", "p2.m", "p2.n"], ["p2"],
                    dict(kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1], ceil_mode=0,
                         count_include_pad=0, **act), "avgpool"))
    t.append(_act("cl", ("N", 4, 5, 5), 0.15, 2))
    n.append(NqNode("QClip", ["p2"], ["cl"], dict(act_min=2, act_max=200), "clip"))
    t.append(_act("cc", ("N", 8, 5, 5), 0.15, 2))
    n.append(NqNode("QConcat", ["cl", "p2"], ["cc"],
                    dict(axis=1, multipliers=[2**30, 2**30], shifts=[30, 30]), "concat"))
    # a float side branch: LRN on the concat's channels, a graph output
    t += [NqTensor("ccf", "float32", ("N", 8, 5, 5)), NqTensor("norm", "float32", ("N", 8, 5, 5))]
    n.append(NqNode("Dequantize", ["cc"], ["ccf"], {}, "dequant_cc"))
    n.append(NqNode("LRN", ["ccf"], ["norm"], dict(alpha=F32(1e-4), beta=0.75, bias=1.0, size=5),
                    "lrn"))
    t += [*_requant("rm", 1, rng), _act("rm", ("N", 8, 1, 1), 0.01, 0)]
    n.append(NqNode("QReduceMean", ["cc", "rm.m", "rm.n"], ["rm"],
                    dict(axes=[2, 3], keepdims=1, count=25, **act), "gap"))
    t.append(_act("tr", ("N", 1, 1, 8), 0.01, 0))
    n.append(NqNode("Transpose", ["rm"], ["tr"], dict(perm=[0, 2, 3, 1]), "nhwc"))
    t.append(_act("rs", ("N", 8), 0.01, 0))
    n.append(NqNode("Reshape", ["tr"], ["rs"], dict(shape=[0, -1]), "reshape"))
    t.append(_act("fl", ("N", 8), 0.01, 0))
    n.append(NqNode("Flatten", ["rs"], ["fl"], dict(axis=1), ""))
    t += [_const("fc.w", rng.integers(-127, 128, (10, 8), dtype=np.int8), Quant([F32(0.03)] * 10, [0] * 10, 0)),
          _const("fc.b", rng.integers(-500, 500, 10, dtype=np.int32), Quant([F32(0.0003)] * 10, [0] * 10, 0)),
          *_requant("fc", 10, rng), _act("logits_q", ("N", 10), 0.25, 120)]
    n.append(NqNode("QGemm", ["fl", "fc.w", "fc.b", "fc.m", "fc.n"], ["logits_q"], dict(act), "fc"))
    t.append(NqTensor("logits", "float32", ("N", 10)))
    n.append(NqNode("Dequantize", ["logits_q"], ["logits"], {}, "dequant"))
    t.append(NqTensor("probs", "float32", ("N", 10)))
    n.append(NqNode("Softmax", ["logits"], ["probs"], {"axis": -1}, "softmax"))
    # a float LayerNormalization over the last axis of the float side branch, a graph output
    t += [NqTensor("ln.s", "float32", (5,), None, np.linspace(0.5, 1.5, 5).astype(np.float32)),
          NqTensor("ln.b", "float32", (5,), None, np.zeros(5, np.float32)),
          NqTensor("lnorm", "float32", ("N", 8, 5, 5))]
    n.append(NqNode("LayerNormalization", ["ccf", "ln.s", "ln.b"], ["lnorm"],
                    dict(axis=3, epsilon=F32(1e-5)), "ln"))
    # a float Concat of two float tensors (each with its own grid once dequantized), an output
    t.append(NqTensor("both", "float32", ("N", 16, 5, 5)))
    n.append(NqNode("Concat", ["ccf", "lnorm"], ["both"], {"axis": 1}, "concat_f"))
    metadata = {
        "source_sha256": "ab" * 32, "source_bytes": 12345, "source_format": "onnx",
        "calibration": {"method": "percentile", "percentile": 99.99, "samples": 64},
        "weights": {"granularity": "per-channel"},
        "ranges": {"x": [-1.5, 2.25], "c1": [0.0, 25.5]},
        "warnings": ["a warning", "ünïcödé"],
        "blob": b"\x00\x01", "flag": True, "nothing": None,
    }
    return NqModel(
        graph_inputs=[NqIO("x", ("N", 3, 8, 8))],
        graph_outputs=[NqIO("probs", ("N", 10)), NqIO("logits", ("N", 10)),
                       NqIO("norm", ("N", 8, 5, 5)), NqIO("lnorm", ("N", 8, 5, 5)),
                       NqIO("both", ("N", 16, 5, 5))],
        tensors={x.name: x for x in t}, nodes=n, metadata=metadata,
        producer={"name": "nqrt-test", "version": "9.9"})


@pytest.fixture
def model() -> NqModel:
    return sample_model()


# ---------------------------------------------------------------------------------------
# Raw file crafting (independent of the writer)
# ---------------------------------------------------------------------------------------

def pack_file(body: bytes, *, fmt="nqrt.nq", version=(1, 0), digest=None, algo="sha256",
              extra=None) -> bytes:
    """An envelope around raw body bytes; the checksum is correct unless `digest` is given."""
    env = {"format": fmt, "version": list(version),
           "checksum": {"algo": algo, "digest": hashlib.sha256(body).digest() if digest is None else digest},
           "body": body}
    if extra:
        env.update(extra)
    return msgpack.packb(env, use_bin_type=True)


def doc_of(data: bytes) -> dict:
    """The plain document inside a valid file (for mutation by the hostile tests)."""
    env = msgpack.unpackb(data, raw=False)
    return msgpack.unpackb(env["body"], raw=False)


def file_of(doc, version=(1, 0)) -> bytes:
    """A file holding `doc` (any msgpack-able value) with a valid checksum."""
    return pack_file(msgpack.packb(doc, use_bin_type=True), version=version)
