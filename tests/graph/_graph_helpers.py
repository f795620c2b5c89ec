"""Helpers for the graph tests: build small ONNX models, run them with ONNX Runtime, and compare
the reference executor (before and after optimize) against it."""

from __future__ import annotations

import copy
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nqrt.graph import reference
from nqrt.graph.onnx_import import load_onnx
from nqrt.graph.passes import optimize

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
REL_TOL = 1e-4


def ir_version_for(opset: int) -> int:
    return 8 if opset <= 15 else 9 if opset <= 20 else 10


class Builder:
    """Accumulates nodes and random initializers; `model()` returns a checked ModelProto."""

    def __init__(self, opset: int = 13, seed: int = 0):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def _name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        name = name or self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def weight(self, *shape, low: float | None = None, high: float | None = None) -> str:
        if low is not None:
            arr = self.rng.uniform(low, high, shape)
        else:
            fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            arr = self.rng.standard_normal(shape) / np.sqrt(fan)
        return self.const(arr.astype(np.float32))

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None, **attrs):
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name or self._name(f"{op_type}_"), **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs: list[tuple[str, list]], outputs: list[str], ir_version: int | None = None,
              initializers_as_inputs: bool = False) -> onnx.ModelProto:
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
        if initializers_as_inputs:
            ins += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "test", ins, outs, initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = ir_version or ir_version_for(self.opset)
        return m


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b| (b: the trusted result)."""
    assert a.shape == b.shape, f"shape {a.shape} != expected {b.shape}"
    scale = float(np.abs(b).max())
    assert scale > 0, "expected output is all zeros: test would be vacuous"
    return float(np.abs(a.astype(np.float64) - b).max()) / scale


def assert_matches_ort(model: onnx.ModelProto, input_shapes: dict[str, tuple], batches=(1, 3),
                       seed: int = 0, optimized: bool = True):
    """Reference executor == ONNX Runtime (rel err <= REL_TOL), imported and optimized, per batch.

    `input_shapes` give the per-input shape without the batch dim.  Returns the optimized graph.
    """
    rng = np.random.default_rng(seed)
    graphs = {"imported": load_onnx(model)}
    if optimized:
        graphs["optimized"] = optimize(load_onnx(model))
    for b in batches:
        feeds = {k: rng.standard_normal((b,) + tuple(s)).astype(np.float32) for k, s in input_shapes.items()}
        expected = ort_run(model, feeds)
        for label, g in graphs.items():
            got = reference.run(g, feeds)
            for v, exp in zip(g.outputs, expected):
                err = rel_err(got[v.name], exp)
                assert err <= REL_TOL, f"{label} graph, batch {b}, output {v.name}: rel err {err:.3g}"
    return graphs.get("optimized")


def randomize_light(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace the ConstantOfShape-filled weights of a light model by random initializers
    (constant weights make every channel identical, so comparisons would be degenerate)."""
    m = copy.deepcopy(model)
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    kept = []
    for n in m.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(v) for v in inits[n.input[0]])
            if len(shape) > 1:
                arr = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
            else:                          # BN parameters and biases: positive, near 1
                arr = rng.uniform(0.5, 1.5, shape)
            m.graph.initializer.append(numpy_helper.from_array(arr.astype(np.float32), n.output[0]))
        else:
            kept.append(n)
    del m.graph.node[:]
    m.graph.node.extend(kept)
    return m


def op_counts(graph) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in graph.nodes:
        out[n.op] = out.get(n.op, 0) + 1
    return out


def gelu_erf(b, x, form):
    """PyTorch's exported exact GELU x·0.5·(1 + erf(x/√2)) (nqrt/graph/passes/fuse_swish.py):
    form "half_last" Mul(Mul(x, gate), 0.5), "half_first" Mul(Mul(0.5, x), gate), "mul_div"
    the latter with x·(1/√2) and 1 + erf in the other operand orders, "half_gate"
    Mul(x, Mul(gate, 0.5)) (the dynamo exporter's form)."""
    if form == "mul_div":                                   # x/√2 as x·(1/√2), 1 + erf
        e = b.op("Erf", [b.op("Mul", [b.const(np.float32(1 / np.sqrt(2))), x])])
        g = b.op("Add", [b.const(np.float32(1.0)), e])
    else:
        e = b.op("Erf", [b.op("Div", [x, b.const(np.float32(np.sqrt(2)))])])
        g = b.op("Add", [e, b.const(np.float32(1.0))])
    if form == "half_last":
        return b.op("Mul", [b.op("Mul", [x, g]), b.const(np.float32(0.5))])
    if form == "half_gate":
        return b.op("Mul", [x, b.op("Mul", [g, b.const(np.float32(0.5))])])
    return b.op("Mul", [b.op("Mul", [b.const(np.float32(0.5)), x]), g])


def decomposed_layernorm(b: Builder, x: str, D: int, square: str = "Pow", divide: str = "Div",
                         affine: bool = True, axes=(-1,)) -> str:
    """nn.LayerNorm as PyTorch exports it before opset 17."""
    m = b.op("ReduceMean", [x], axes=list(axes))
    d = b.op("Sub", [x, m])
    sq = b.op("Pow", [d, b.const(np.float32(2.0))]) if square == "Pow" else b.op("Mul", [d, d])
    s = b.op("Sqrt", [b.op("Add", [b.op("ReduceMean", [sq], axes=list(axes)), b.const(np.float32(1e-5))])])
    n = b.op("Div", [d, s]) if divide == "Div" else b.op("Mul", [d, b.op("Reciprocal", [s])])
    if affine:
        n = b.op("Add", [b.op("Mul", [n, b.weight(D, low=0.5, high=1.5)]), b.weight(D)])
    return n
