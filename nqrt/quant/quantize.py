"""The graph walk: optimized float IR + activation ranges -> `NqModel`.

`quantize_graph` emits `Quantize` for each graph input, runs the op quantizers in graph
order, then `Dequantize` for each graph output (the float output keeps the user's name; the
uint8 tensor behind it gets a derived name).  Unsupported ops are found before any work and
reported together in one `UnsupportedOpError`.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from nqrt.errors import ConversionError
from nqrt.format.model import NqIO, NqModel
from nqrt.graph.edit import concat_output_tree
from nqrt.graph.ir import Graph
from nqrt.quant import qparams as qp
from nqrt.quant.context import QUANTIZE, QContext
from nqrt.quant.quantizers import QUANTIZERS, check_supported

# ---------------------------------------------------------------------------------------
# The graph walk
# ---------------------------------------------------------------------------------------

def _io_shape(v, batch_symbol: str | None) -> tuple:
    out = []
    for i, d in enumerate(v.shape or ()):
        if isinstance(d, (int, np.integer)):
            out.append(int(d))
        elif isinstance(d, str) and d:
            out.append(d)
        else:
            out.append("N" if i == 0 else f"{v.name}:{i}")
    return tuple(out)


SHARE_MIN_FRACTION = 0.5   # a Concat input spanning less of the union keeps its own scale


def share_concat_ranges(graph: Graph, ranges: dict) -> dict:
    """Ranges where a Concat's inputs take the union of their ranges, when that is free and
    cheap: the input has its own calibrated range (its producer chooses its output scale),
    feeds only this Concat, is not a graph output, and spans at least SHARE_MIN_FRACTION of
    the union (so its grid is at most 2x coarser: it loses at most one bit).  Such producers
    requantize straight to the Concat's scale, and their part of the Concat is a plain copy
    instead of a requantizing one (the TFLite int8 convention, there for every input).
    Inputs whose ranges differ more keep their own scales and are rescaled by the Concat.
    A Concat in a graph output's tree of Concats (a graph output read by no node, or read
    only by such Concats) is left alone: it may concatenate in float, each input on its own
    grid (quantizers.quantize_concat)."""
    consumers = Counter(t for n in graph.nodes for t in n.inputs if t)
    outputs = set(graph.output_names())
    tree = concat_output_tree(graph)
    shared = dict(ranges)
    for node in graph.nodes:
        xs = [t for t in node.inputs if t]
        if node.op != "Concat" or len(xs) < 2 or len(set(xs)) != len(xs) or \
                any(t not in ranges for t in xs) or node.outputs[0] in tree:
            continue
        lo = min(float(ranges[t][0]) for t in xs)
        hi = max(float(ranges[t][1]) for t in xs)
        for t in xs:
            span = float(ranges[t][1]) - float(ranges[t][0])
            if consumers[t] == 1 and t not in outputs and span >= SHARE_MIN_FRACTION * (hi - lo):
                shared[t] = (lo, hi)
    return shared


def quantize_graph(graph: Graph, ranges: dict, per_channel: bool = True, *,
                   shapes: dict | None = None, weight_bits: int = 8) -> NqModel:
    """Build the integer model of an optimized float graph.

    ranges: {float tensor name: (lo, hi)} for graph inputs and every non-same-scale node
    output; shapes: optional observed shapes {name: tuple} (fill in unknown dims).
    Metadata gets `weights`, `ranges` (the ranges used) and `warnings`.
    """
    check_supported(graph)
    ranges = share_concat_ranges(graph, ranges)
    ctx = QContext(graph, ranges, per_channel, shapes, weight_bits)
    used_inputs = {t for n in graph.nodes for t in n.inputs} | ctx.output_names
    inputs = [NqIO(v.name, _io_shape(v, ctx.batch_symbol)) for v in graph.inputs]
    for io in inputs:
        ctx.float_tensor(io.name, io.shape)
    for v in graph.inputs:
        if v.name not in used_inputs:
            continue
        lo, hi = ctx.range_of(v.name, "graph input")
        s, z = qp.activation_qparams(lo, hi, what=f"graph input {v.name!r}")
        u = ctx.new_u8(v.name, s, z, (lo, hi))
        ctx.emit(QUANTIZE, [v.name], [u], {}, v.name + ".quantize")
    for node in graph.nodes:
        QUANTIZERS[node.op](ctx, node)
    outputs = []
    for v in graph.outputs:
        if v.name in ctx.input_names:
            raise ConversionError(f"graph output {v.name!r} is a graph input passed through; "
                                  "a .nq graph output must be produced by a node")
        if v.name not in ctx.tensors or ctx.tensors[v.name].dtype != "float32":
            if v.name not in ctx.qname:
                raise ConversionError(f"graph output {v.name!r} is not produced by a quantized node")
            ctx.dequantized(v.name)
        io = NqIO(v.name, _io_shape(v, ctx.batch_symbol))
        ctx.tensors[v.name].shape = io.shape          # spec 2.1: same shape as the io entry
        outputs.append(io)
    # The document order puts graph inputs first; keep the build order otherwise.
    metadata = {
        "weights": {"granularity": "per-channel" if per_channel else "per-tensor", "bits": weight_bits},
        "ranges": {k: [float(r[0]), float(r[1])] for k, r in ranges.items()},
        "warnings": list(ctx.warnings),
    }
    return NqModel(inputs, outputs, ctx.tensors, ctx.nodes, metadata)


def op_counts(model: NqModel) -> dict[str, int]:
    return dict(Counter(n.op for n in model.nodes))
