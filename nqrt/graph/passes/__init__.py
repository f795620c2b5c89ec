"""Graph passes over the float IR; `optimize` runs them to a fixed point.

Each pass is one module with `run(graph) -> graph` (it may mutate its argument):
  remove_identity  Identity / Dropout / same-dtype Cast removed
  fold_constants   constant subgraphs evaluated, symbolic Shape->Reshape chains folded
  lower_einsum     two-operand Einsum (a batched matrix product) -> Transpose / MatMul
  canonicalize     Gemm/MatMul -> canonical Gemm, Conv bias always present, Sum -> Add
  lower_instancenorm  InstanceNormalization -> LayerNormalization(axis 2) + channel Mul, Add
  lower_space_depth  DepthToSpace / SpaceToDepth -> Reshape / Transpose / Reshape (the spec's)
  lower_gather     Gather of an activation at constant consecutive indices -> Slice (+ Squeeze)
  lower_strided_gather  Gather of a flattened tensor at affine indices over the batch (the
                   dynamo exporter's as_strided) -> Reshape
  fuse_layernorm   the decomposed layer norm of exports before opset 17 (ReduceMean, Sub, Pow,
                   ReduceMean, Add, Sqrt, Div, Mul, Add) and tf2onnx's Keras layer norm
                   -> LayerNormalization
  fuse_l2norm      x / max(‖x‖_2, eps) along the last axis (F.normalize) and LpNormalization
                   -> RMSNormalization; any other ReduceL2 -> Sqrt(ReduceSum(x·x))
  fold_batchnorm   BN / per-channel Mul/Add folded into Conv/Gemm, or -> depthwise 1x1 Conv
  merge_parallel_convs  Add(Conv(x), Conv(x)) of equal groups and Add(dwConv(x), x) -> one
                   Conv (RepVGG / MobileOne branches exported without re-parameterization)
  crop_conv_taps   Conv kernel taps that only ever read padding dropped (dilated ASPP convs)
  fuse_swish       Mul(x, Sigmoid(x)) -> Swish(x); Mul(x, HardSigmoid(x)) -> HardSwish(x);
                   the exported exact GELU x·0.5·(1 + erf(x/√2)) -> Gelu(x)
  fuse_activation  Relu / Clip -> producer attrs["act"]
  lower_convtranspose  ConvTranspose -> Conv (one output channel per phase) + depth-to-space
                   (Reshape / Transpose / Reshape) + crop (Slice); after the two folds above,
                   so a following BN and Relu end up in the Conv
  sink_output_moves  Reshape / Transpose (Concat(x_i)) -> Concat(Reshape / Transpose (x_i))
                   inside a graph output's tree of Concats (YOLOv5 / YOLOX heads: the tree
                   then concatenates in float)
  dead_code        unused nodes and constants removed
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from nqrt.errors import InputError, UnsupportedOpError, name_list
from nqrt.graph.ir import Graph
from nqrt.graph.passes import (canonicalize, crop_conv_taps, dead_code, fold_batchnorm,
                               fold_constants, fuse_activation, fuse_l2norm, fuse_layernorm, fuse_swish,
                               lower_convtranspose, lower_einsum, merge_parallel_convs, lower_gather, lower_instancenorm, lower_space_depth,
                               lower_strided_gather,
                               remove_identity, sink_output_moves)
from nqrt.graph.shapes import annotate

PIPELINE = (remove_identity, fold_constants, lower_einsum, canonicalize, lower_instancenorm, lower_space_depth,
            lower_gather, lower_strided_gather, fuse_layernorm, fuse_l2norm, fold_batchnorm, merge_parallel_convs,
            crop_conv_taps, fuse_swish, fuse_activation,
            lower_convtranspose, sink_output_moves, dead_code)
MAX_ROUNDS = 10


def _signature(graph: Graph):
    return (tuple((n.op, tuple(n.inputs), tuple(n.outputs), repr(sorted(n.attrs.items(), key=lambda kv: kv[0])))
                  for n in graph.nodes), tuple(sorted(graph.constants)))


def _check_override(v, shape: tuple) -> None:
    """An input shape given by the user: sizes >= 1 or symbol names; the model's rank and its
    fixed dims (a symbolic or unknown model dim may become anything)."""
    for d in shape:
        ok = (isinstance(d, str) and d.isidentifier()) or (
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1)
        if not ok:
            raise InputError(f"input shape for {v.name!r}: dim {d!r} is neither a size >= 1 nor a symbol name")
    if v.shape is None:
        return
    if len(shape) != len(v.shape):
        raise InputError(f"input shape for {v.name!r} has rank {len(shape)}; the model's input "
                         f"has rank {len(v.shape)} {list(v.shape)}")
    for i, (d, m) in enumerate(zip(shape, v.shape)):
        if isinstance(m, (int, np.integer)) and d != m:
            raise InputError(f"input shape for {v.name!r}: dim {i} is {d}, but the model fixes it "
                             f"at {m} (model shape {list(v.shape)})")


OPTIONAL_PASSES = ("merge_parallel_convs",)     # passes a user may switch off (skip=)


def pass_name(p) -> str:
    return p.__name__.rsplit(".", 1)[-1]


def optimize(graph: Graph, input_shapes: dict[str, tuple] | None = None,
             skip: tuple[str, ...] = ()) -> Graph:
    """Run PIPELINE until the graph stops changing; return the optimized graph.

    `skip` names passes of OPTIONAL_PASSES not to run (the converter's merge_branches=False).

    `input_shapes` ({input name: shape}) overrides graph input shapes first (dims: int,
    symbol str, or None).  Afterwards `graph.value_info` holds the inferred shapes, the graph
    validates, and no Shape node remains (else UnsupportedOpError: dynamic shape computation
    not foldable).
    """
    bad = set(skip) - set(OPTIONAL_PASSES)
    if bad:
        raise InputError(f"cannot skip pass(es) {', '.join(sorted(bad))}: optional passes are "
                         f"{', '.join(OPTIONAL_PASSES)}")
    pipeline = [p for p in PIPELINE if pass_name(p) not in skip]
    if input_shapes:
        unknown = set(input_shapes) - {v.name for v in graph.inputs}
        if unknown:
            raise InputError(f"input shape given for unknown input(s) {', '.join(sorted(unknown))} "
                             f"(model inputs: {', '.join(v.name for v in graph.inputs)})")
        for v in graph.inputs:
            if v.name in input_shapes:
                _check_override(v, tuple(input_shapes[v.name]))
        graph.inputs = [replace(v, shape=tuple(input_shapes[v.name])) if v.name in input_shapes else v
                        for v in graph.inputs]
    before = None
    for _ in range(MAX_ROUNDS):
        for p in pipeline:
            graph = p.run(graph)
        sig = _signature(graph)
        if sig == before:
            break
        before = sig
    shape_nodes = [n.name or n.outputs[0] for n in graph.nodes if n.op == "Shape"]
    if shape_nodes:
        symbolic = [v.name for v in graph.inputs if v.shape and any(not isinstance(d, (int, np.integer)) for d in v.shape)]
        hint = (f"; fixing the dynamic input dims may let it fold (--input-shape / input_shapes, "
                f"inputs: {', '.join(symbolic)})" if symbolic else "")
        raise UnsupportedOpError(
            f"unsupported operators: Shape (dynamic shape computation not foldable; nodes: "
            f"{name_list(shape_nodes)}){hint}", {"Shape": shape_nodes})
    graph.validate()
    inf = annotate(graph)
    for v in graph.outputs:          # an output the importer could not shape (its op was lowered)
        if (v.shape is None or any(d is None for d in v.shape)) and v.name in inf.shapes:
            v.shape = inf.shapes[v.name]
    return graph


__all__ = ["OPTIONAL_PASSES", "PIPELINE", "optimize"]
