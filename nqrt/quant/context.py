"""Conversion context: the state shared by the per-op quantizers.

`QContext` holds the float graph and its calibrated ranges on one side, and the `.nq`
tensors and nodes being built on the other.  Naming: a float tensor t is represented by a
uint8 tensor of the same name, except graph inputs and outputs, whose float tensors keep the
user's names and whose uint8 tensors get derived ones (`t.q`); constants are named after
their node (`conv1.weight`, `conv1.bias`, `conv1.multiplier`, `conv1.shift`), made unique.
"""

from __future__ import annotations


import numpy as np

from nqrt import qmath
from nqrt.errors import ConversionError
from nqrt.format import schema
from nqrt.format.model import NqNode, NqTensor, Quant
from nqrt.graph.edit import concat_output_tree
from nqrt.graph.ir import Graph, Node
from nqrt.quant import qparams as qp

OPS = schema.ALL_OPS                 # the format's op table (== schema.OPS: every op runs in integer mode)
IDENTITY_PAIR = (1 << 30, 30)      # spec 4.4: rescale by exactly 1


def _op(name: str) -> str:
    """An `.nq` op name, checked against the schema (never respelled)."""
    if name not in OPS:
        raise KeyError(name)
    return name


Q_CONV, Q_GEMM, Q_ADD, Q_CONCAT = _op("QConv"), _op("QGemm"), _op("QAdd"), _op("QConcat")
Q_AVGPOOL, Q_REDUCEMEAN, Q_CLIP = _op("QAveragePool"), _op("QReduceMean"), _op("QClip")
MAXPOOL, RESHAPE, FLATTEN, TRANSPOSE = _op("MaxPool"), _op("Reshape"), _op("Flatten"), _op("Transpose")
QUANTIZE, DEQUANTIZE, SOFTMAX, LRN = _op("Quantize"), _op("Dequantize"), _op("Softmax"), _op("LRN")
LAYERNORM, CONCAT_F32 = _op("LayerNormalization"), _op("Concat")
Q_LUT, Q_MUL, SLICE, SQUEEZE = _op("QLut"), _op("QMul"), _op("Slice"), _op("Squeeze")
Q_LUT2 = _op("QLut2")
UNSQUEEZE, PAD, RESIZE_NEAREST = _op("Unsqueeze"), _op("Pad"), _op("ResizeNearest")
PAD_BORDER = _op("PadBorder")
RESIZE_LINEAR, Q_MATMUL, EXPAND = _op("ResizeLinear"), _op("QMatMul"), _op("Expand")
RESIZE_CUBIC = _op("ResizeCubic")
Q_SOFTMAX = _op("QSoftmax")
REDUCE_MAX, REDUCE_MIN = _op("ReduceMax"), _op("ReduceMin")


def node_label(node: Node) -> str:
    return node.name or (node.outputs[0] if node.outputs else node.op)


def str_attr(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------------------
# Conversion context
# ---------------------------------------------------------------------------------------

class QContext:
    """State of one conversion: the float graph in, the `.nq` tensors and nodes out.

    `qname[t]` is the uint8 tensor standing for float tensor t; `qrange[u]` the real range
    its (s, z) were chosen from (propagated through same-scale ops, unioned by Concat).
    """

    def __init__(self, graph: Graph, ranges: dict, per_channel: bool = True, shapes: dict | None = None,
                 weight_bits: int = 8):
        self.graph = graph
        self.ranges = ranges
        self.per_channel = per_channel
        self.weight_bits = weight_bits
        self.shapes = shapes or {}
        self.tensors: dict[str, NqTensor] = {}
        self.nodes: list[NqNode] = []
        self.qname: dict[str, str] = {}
        self.qrange: dict[str, tuple[float, float]] = {}
        self.warnings: list[str] = []
        self._deq: dict[str, str] = {}
        self.output_names = set(graph.output_names())
        self.input_names = {v.name for v in graph.inputs}
        # tensors reaching a graph output only through Concats (may concatenate in float)
        self.concat_tree = concat_output_tree(graph)
        self._used = set(graph.constants) | self.input_names | self.output_names
        for n in graph.nodes:
            self._used.update(o for o in n.outputs if o)
            self._used.update(i for i in n.inputs if i)
        batch_dims = [v.shape[0] if v.shape else None for v in graph.inputs]
        self.batch_symbol = ("N" if batch_dims and all(not isinstance(d, int) for d in batch_dims)
                             else None)

    # -- names -------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        return name

    # -- shapes ------------------------------------------------------------------------
    def known_shape(self, t: str) -> list | None:
        """Best known shape of float tensor t: declared dims, completed by observed ones."""
        vi = self.graph.value_info.get(t)
        if vi is None:
            vi = next((v for v in list(self.graph.inputs) + list(self.graph.outputs) if v.name == t), None)
        obs = self.shapes.get(t)
        if vi is None or vi.shape is None:
            return list(obs) if obs is not None else None
        dims = list(vi.shape)
        if obs is not None and len(obs) == len(dims):
            dims = [d if isinstance(d, int) else (obs[i] if i > 0 else d) for i, d in enumerate(dims)]
        return dims

    def rank(self, t: str, what: str) -> int:
        s = self.known_shape(t)
        if s is None:
            raise ConversionError(f"{what}: rank of tensor {t!r} is unknown")
        return len(s)

    def tensor_shape(self, t: str) -> tuple:
        """Shape recorded in the document for run-time tensor t (informative)."""
        s = self.known_shape(t)
        if s is None:
            return ()
        out = []
        for i, d in enumerate(s):
            if i == 0 and self.batch_symbol is not None and (d is None or t not in self.graph.value_info):
                out.append(self.batch_symbol)
            elif isinstance(d, (int, np.integer)):
                out.append(int(d))
            elif isinstance(d, str) and d:
                out.append(d)
            else:
                out.append(f"{t}:{i}")
        return tuple(out)

    # -- quantization parameters ---------------------------------------------------------
    def range_of(self, t: str, what: str) -> tuple[float, float]:
        r = self.ranges.get(t)
        if r is None:
            raise ConversionError(f"{what}: no calibration range for tensor {t!r}")
        return float(r[0]), float(r[1])

    def qparams(self, t: str) -> tuple[float, int]:
        """(s, z) of the uint8 tensor standing for float tensor t."""
        q = self.tensors[self.qname[t]].quant
        return float(q.scale[0]), int(q.zero_point[0])

    def x(self, t: str) -> str:
        return self.qname[t]

    def is_float(self, t: str) -> bool:
        """t is a run-time float32 tensor of the integer model (a float op's output that is
        not quantized again: a graph output, or a float Concat read by a float Concat)."""
        return t not in self.qname and t in self.tensors and self.tensors[t].dtype == "float32"

    # -- building ------------------------------------------------------------------------
    def _u8_name(self, t: str) -> str:
        # Graph inputs/outputs keep their names for the float tensors the user sees.
        if t in self.output_names or t in self.input_names:
            return self.unique(t + ".q")
        self._used.add(t)
        return t

    def alias_shape(self, t: str, like: str) -> None:
        """A tensor t the quantizer introduces (no node of the float graph makes it) has the
        shape of float tensor `like`."""
        if like in self.graph.value_info:
            self.graph.value_info[t] = self.graph.value_info[like]
        if like in self.shapes:
            self.shapes[t] = self.shapes[like]

    def new_u8(self, t: str, s: float, z: int, rng: tuple[float, float]) -> str:
        """Declare the uint8 tensor for float tensor t with (s, z) chosen from range rng."""
        u = self._u8_name(t)
        self.tensors[u] = NqTensor(u, "uint8", self.tensor_shape(t),
                                   Quant([float(np.float32(s))], [int(z)], None))
        self.qname[t] = u
        self.qrange[u] = rng
        return u

    def new_u8_from_range(self, t: str, act, what: str) -> str:
        lo, hi = self.range_of(t, what)
        if act is not None:                         # the fused clamp bounds the output too
            lo, hi = max(lo, float(act[0])), min(hi, float(act[1]))
            if lo > hi:
                lo = hi = min(max(0.0, float(act[0])), float(act[1]))
        s, z = qp.activation_qparams(lo, hi, what=f"{what} output {t!r}")
        return self.new_u8(t, s, z, (lo, hi))

    def same_scale_u8(self, t: str, src: str) -> str:
        """Declare t's uint8 tensor with exactly the (s, z) of float tensor src."""
        s, z = self.qparams(src)
        return self.new_u8(t, s, z, self.qrange[self.qname[src]])

    def const(self, base: str, data: np.ndarray, dtype: str, quant: Quant | None = None) -> str:
        name = self.unique(base)
        arr = np.ascontiguousarray(data, dtype=schema.DTYPES[dtype][0])
        self.tensors[name] = NqTensor(name, dtype, tuple(int(d) for d in arr.shape), quant, arr)
        return name

    def constant_u8(self, t: str, label: str) -> str:
        """The uint8 constant standing for float constant t (a class token fed to a Concat or
        an Expand): per-tensor (s, z) from its min/max (0 included), read like an activation."""
        if t not in self.qname:
            c = np.asarray(self.graph.constants[t], np.float64)
            lo, hi = min(float(c.min()), 0.0), max(float(c.max()), 0.0)
            s, z = qp.activation_qparams(lo, hi, what=f"{label} constant {t!r}")
            q = np.clip(np.rint(c / s) + z, 0, 255).astype(np.uint8)
            name = self.const(t + ".q", q, "uint8", Quant([float(np.float32(s))], [int(z)], None))
            self.qname[t], self.qrange[name] = name, (lo, hi)
        return self.qname[t]

    def float_tensor(self, name: str, shape: tuple) -> str:
        self._used.add(name)
        self.tensors[name] = NqTensor(name, "float32", shape)
        return name

    def emit(self, op: str, inputs: list[str], outputs: list[str], attrs: dict | None = None,
             name: str = "") -> NqNode:
        node = NqNode(op, list(inputs), list(outputs), dict(attrs or {}), name)
        self.nodes.append(node)
        return node

    def dequantized(self, t: str) -> str:
        """Float tensor holding Dequantize(t): the user's name for a graph output, else derived."""
        if t in self._deq:
            return self._deq[t]
        name = t if t in self.output_names and t not in self.tensors else self.unique(t + ".float")
        self.float_tensor(name, self.tensor_shape(t))
        self.emit(DEQUANTIZE, [self.qname[t]], [name], {}, name + ".dequantize")
        self._deq[t] = name
        return name

    def clip_after(self, node: Node, t: str, act) -> None:
        """Fused activation on an op without act_min/act_max: a QClip on its output."""
        if act is None:
            return
        inner = self.qname[t]
        s, z = self.qparams(t)
        act_min, act_max = qp.act_clamp(act, s, z)
        if (act_min, act_max) == (qmath.UINT8_MIN, qmath.UINT8_MAX):
            return
        renamed = self.unique(inner + ".preact")
        self.tensors[renamed] = self.tensors.pop(inner)
        self.tensors[renamed].name = renamed
        self.qrange[renamed] = self.qrange[inner]
        self.nodes[-1].outputs = [renamed if o == inner else o for o in self.nodes[-1].outputs]
        self.tensors[inner] = NqTensor(inner, "uint8", self.tensors[renamed].shape,
                                       Quant([float(np.float32(s))], [z], None))
        self.emit(Q_CLIP, [renamed], [inner], {"act_min": act_min, "act_max": act_max},
                  node_label(node) + ".act")


def fused_act(node: Node):
    act = node.attrs.get("act")
    return None if act is None else (float(act[0]), float(act[1]))


def as_ints(v) -> list[int]:
    return [int(a) for a in v]
