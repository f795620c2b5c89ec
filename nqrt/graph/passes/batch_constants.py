"""Constants broadcast over the run-time batch ("batch constants"), folded per batch row.

A batch constant is a tensor whose value is the same for every batch index: the node
`Expand(c, like)` with attrs["like_shape"] = [-1, d1, ..., dk] (fold_constants' symbolic
Expand: entry -1 is dim 0 of the graph input `like`, the batch) and a constant c of rank
at most k + 1 with c.shape[0] = 1 there.  Its *row* is c and [1, d1, ..., dk] broadcast
together (ONNX Expand broadcasts both ways).

Exports compute such tensors from the batch size: DETR's and EdgeNeXt's sinusoidal position
encodings start from a mask `ConstantOfShape([N, H, W])`, then Not, CumSum over H and W,
Div, Sin / Cos, Concat, a 1x1 Conv, ... and finally meet the activations in an Add.  With a
symbolic N nothing of that folds.  Here:

* `constant_of_shape`: ConstantOfShape whose shape value is [N, ints...] with N the batch
  symbol of a graph input becomes the batch constant of row full([1, ints...], value).
* `fold_row`: a node whose inputs are batch constants (all over the same `like`) and plain
  constants, and which computes every batch index from that index alone (SEPARABILITY
  below: elementwise ops, CumSum / Concat / Softmax / ... along another axis, Conv, Reshape
  that keeps the batch dim, Transpose that keeps it first, ...), is evaluated once on the
  rows: its outputs become batch constants of the computed rows.  Exact: the op applied to
  N equal rows is N copies of the op applied to one.
* `absorb`: an elementwise node that reads a batch constant next to a run-time tensor that
  already carries the batch at that axis reads the row instead (ONNX broadcasting expands
  it identically), so the Expand goes (dead_code removes it).

A batch constant that reaches anything else stays an Expand of its row over the run-time
batch, which the runtime executes (formats/nq-v1.md 4.20).
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.reference import eval_node
from nqrt.graph.shapes import UNARY_OPS, Inference, is_int, norm_axis

# Ops computed element by element (ONNX multidirectional broadcasting of the data inputs).
ELEMENTWISE = frozenset(UNARY_OPS) | {
    "Cast", "Not", "Sin", "Cos", "Tan", "Floor", "Ceil", "Round", "Sign", "Relu", "Identity",
    "IsNaN", "IsInf", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where", "Clip", "PRelu",
    "Sum", "Mean"}
# Ops whose data input 0 is [N, ...] and whose other inputs are parameters (weights, scales).
PER_SAMPLE = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
                        "GlobalMaxPool", "BatchNormalization", "InstanceNormalization", "LRN",
                        "DepthToSpace", "SpaceToDepth", "GroupNormalization"})
REDUCE = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                    "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"})
# Ops with an `axis` attribute that must not be the batch axis.
AXIS_ATTR = frozenset({"Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "Split", "Gather",
                       "RMSNormalization"})


class BatchConstants:
    """The batch constants of a graph: output name -> (row, like input name, the Expand's
    constant input)."""

    def __init__(self, graph: Graph):
        self.rows: dict[str, tuple[np.ndarray, str, str]] = {}
        for node in graph.nodes:
            self.note(node, graph)

    def note(self, node: Node, graph: Graph) -> None:
        row = _row_of_expand(node, graph)
        if row is not None:
            self.rows[node.outputs[0]] = (row, node.inputs[1], node.inputs[0])


def _row_of_expand(node: Node, graph: Graph) -> np.ndarray | None:
    like_shape = node.attrs.get("like_shape") if node.op == "Expand" else None
    if like_shape is None or len(node.inputs) != 2 or node.inputs[0] not in graph.constants:
        return None
    like_shape = [int(d) for d in like_shape]
    if not like_shape or like_shape[0] != -1 or any(d < 0 for d in like_shape[1:]):
        return None
    c = np.asarray(graph.constants[node.inputs[0]])
    if c.ndim > len(like_shape):
        return None
    try:                                        # Expand broadcasts c and the target both ways
        shape = np.broadcast_shapes(c.shape, (1, *like_shape[1:]))
    except ValueError:
        return None
    return np.broadcast_to(c, shape) if shape[0] == 1 else None


def _batch_constant(row: np.ndarray, like: str, out: str, graph: Graph, names: NameGen,
                    label: str) -> Node:
    c = names(f"{out}__row")
    graph.constants[c] = np.ascontiguousarray(row)
    return Node("Expand", [c, like], [out], {"like_shape": [-1, *row.shape[1:]]}, label)


def constant_of_shape(node: Node, inf: Inference, graph: Graph, names: NameGen) -> Node | None:
    """ConstantOfShape([N, d1, ...]) with N the batch symbol (dim 0 of a graph input) and
    int d's: the batch constant of row full([1, d1, ...], value)."""
    if node.op != "ConstantOfShape" or not node.inputs or node.inputs[0] in graph.constants:
        return None
    target = inf.values.get(node.inputs[0])
    if not target or isinstance(target[0], int) or not isinstance(target[0], str) \
            or not all(is_int(d) and int(d) >= 0 for d in target[1:]):
        return None
    likes = [v.name for v in graph.inputs if v.shape and v.shape[0] == target[0]]
    if not likes:
        return None
    value = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).reshape(-1)[:1]
    row = np.full((1, *[int(d) for d in target[1:]]), value[0], dtype=value.dtype)
    return _batch_constant(row, likes[0], node.outputs[0], graph, names, node.name)


def _separable(node: Node, kinds: list) -> bool:
    """Whether `node` computes each batch index from that index alone, given per input
    ("bc", rank) for a batch constant, ("const", array) for a plain constant, None for an
    absent input.  The batch is axis 0 of every batch-constant input and of the outputs."""
    op, a = node.op, node.attrs
    bc_ranks = [k[1] for k in kinds if k is not None and k[0] == "bc"]
    r = bc_ranks[0]
    if op in ELEMENTWISE:
        ranks = [k[1] if k[0] == "bc" else k[1].ndim for k in kinds if k is not None]
        out_rank = max(ranks)
        return all(rk == out_rank for rk in bc_ranks) and all(
            k[1].ndim < out_rank or k[1].shape[0] == 1 for k in kinds if k is not None and k[0] == "const")
    first_is_bc = kinds[0] is not None and kinds[0][0] == "bc"
    rest_const = all(k is None or k[0] == "const" for k in kinds[1:])
    if op in PER_SAMPLE:
        return first_is_bc and rest_const and r >= 2
    if op == "CumSum":
        return first_is_bc and len(kinds) > 1 and kinds[1] is not None and kinds[1][0] == "const" \
            and norm_axis(int(np.asarray(kinds[1][1]).reshape(-1)[0]), r) != 0
    if op == "Concat":
        return all(k is not None and k[0] == "bc" for k in kinds) and norm_axis(int(a["axis"]), r) != 0
    if op in AXIS_ATTR:
        default = -1 if op in ("LayerNormalization", "RMSNormalization", "Softmax", "LogSoftmax",
                               "Hardmax") else 0
        return first_is_bc and rest_const and norm_axis(int(a.get("axis", default)), r) != 0
    if op == "Flatten":
        return first_is_bc and norm_axis(int(a.get("axis", 1)), r + 1) == 1
    if op == "Transpose":
        perm = a.get("perm")
        return first_is_bc and perm is not None and int(perm[0]) == 0
    if op in ("Unsqueeze", "Squeeze", "Slice") or op in REDUCE:
        # axes are attributes here (normalize.promote_const_inputs); absent means every axis
        axes = a.get("axes")
        if not first_is_bc or not rest_const or not axes:
            return False
        rank = r + len(axes) if op == "Unsqueeze" else r
        return 0 not in [norm_axis(int(x), rank) for x in axes]
    if op == "Reshape":
        shape = a.get("shape")
        if not first_is_bc or shape is None or a.get("allowzero", 0):
            return False
        shape = [int(s) for s in shape]
        if shape[0] == 0:
            return True
        return shape[0] == -1 and all(s > 0 for s in shape[1:])
    if op == "MatMul":
        ka, kb = kinds[0], kinds[1]
        if ka[0] == "bc" and kb[0] == "const":
            return kb[1].ndim <= 2 and r >= 2
        return all(k[0] == "bc" for k in (ka, kb)) and ka[1] == kb[1] >= 3
    if op == "Gemm":
        c = kinds[2] if len(kinds) > 2 else None
        return first_is_bc and rest_const and r == 2 and not a.get("transA", 0) \
            and (c is None or c[1].ndim < 2 or c[1].shape[0] == 1)
    return False


def fold_row(node: Node, bcs: BatchConstants, graph: Graph, names: NameGen) -> list[Node] | None:
    """The batch constants `node`'s outputs are, when its inputs are batch constants over one
    `like` and plain constants and it is separable; else None."""
    if not node.outputs or not any(i in bcs.rows for i in node.inputs if i):
        return None
    likes = {bcs.rows[i][1] for i in node.inputs if i in bcs.rows}
    if len(likes) != 1:
        return None
    kinds, values = [], []
    for i in node.inputs:
        if not i:
            kinds.append(None)
            values.append(None)
        elif i in bcs.rows:
            row = bcs.rows[i][0]
            kinds.append(("bc", row.ndim))
            values.append(row)
        elif i in graph.constants:
            v = np.asarray(graph.constants[i])
            kinds.append(("const", v))
            values.append(v)
        else:
            return None
    if not _separable(node, kinds):
        return None
    outs = eval_node(node, values)
    if any(o.ndim < 1 or o.shape[0] != 1 for o in outs):
        return None
    like = likes.pop()
    return [_batch_constant(o, like, name, graph, names, node.name)
            for o, name in zip(outs, node.outputs) if name]


def absorb(node: Node, bcs: BatchConstants, inf: Inference, graph: Graph) -> bool:
    """An elementwise node reading a batch constant next to a run-time tensor of the output's
    rank whose dim at the constant's batch axis is the batch: read the Expand's constant
    instead (broadcasting gives the same values, batch included)."""
    if node.op not in ELEMENTWISE or len(node.outputs) != 1:
        return False
    out = inf.shapes.get(node.outputs[0])
    if out is None:
        return False
    changed = False
    for k, i in enumerate(node.inputs):
        if i not in bcs.rows:
            continue
        row, like, const = bcs.rows[i]
        batch = next((v.shape[0] for v in graph.inputs if v.name == like and v.shape), None)
        at = len(out) - row.ndim                   # the constant's batch axis in the output
        if batch is None or at < 0 or out[at] != batch:
            continue
        runtime = [inf.shapes.get(j) for j in node.inputs
                   if j and j != i and j not in graph.constants and j not in bcs.rows]
        if any(sh is not None and len(sh) == len(out) and sh[at] == batch for sh in runtime):
            node.inputs[k] = const
            changed = True
    return changed
