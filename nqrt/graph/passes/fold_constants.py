"""Constant folding, including symbolic shape folding.

* A node whose inputs are all constants is evaluated with the reference executor and its
  outputs become constants (ConstantOfShape gives a read-only broadcast view: no memory).
* A shape-like tensor (shapes.infer `values`) whose entries are all ints becomes a constant:
  `Shape(x)` of a fully known x, and whatever Gather/Unsqueeze/Concat/Slice/Cast derive from it.
* Reshape whose shape is computed at run time from symbolic entries gets a constant shape:
  an entry equal to the input's dim at the same index becomes 0 (ONNX "copy"), ints stay, and
  at most one remaining unknown becomes -1.  `x.view(x.size(0), -1)` (Shape -> Gather ->
  Unsqueeze -> Concat -> Reshape) thus becomes Reshape(shape=[0, -1]) with the batch symbolic;
  the dead Shape chain is removed by dead_code.
* Resize whose sizes are computed at run time from symbolic entries (`F.interpolate(size=
  x.shape[-2:])` exported with a symbolic batch) gets the equivalent constant scales: an entry
  equal to the input's dim (e.g. the batch symbol) is scale 1, an int entry the float32 ratio
  s = size / L_in that ONNX uses with sizes, kept only when trunc(s·L_in) gives the size back
  (then the two forms are the same resize).
* Expand whose target shape has symbolic entries (`cls_token.expand(x.shape[0], -1, -1)`)
  gets attrs["like_shape"] (ints, −1 = that dim of the second input) and, as second input,
  the graph input carrying the symbol at that index, so it no longer needs a Shape.
* Constants broadcast over the run-time batch (a mask `ConstantOfShape([N, H, W])` and what
  is computed from it per batch row: DETR's and EdgeNeXt's position encodings) fold per row
  (batch_constants.py).
* Attribute inputs that became constants move into attributes (normalize.promote_const_inputs).
* A run sweeps the nodes until a sweep changes nothing: each sweep re-infers shapes, so a shape
  that depends on values folded in the previous sweep (Swin's per-block window padding,
  `(w − W % w) % w` of the previous block's padded output) is resolved in the same run.
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.normalize import promote_const_inputs
from nqrt.graph.passes import batch_constants
from nqrt.graph.reference import eval_node
from nqrt.graph.shapes import Inference, infer, is_int, symbolic_product

# Nodes whose output is a shape-like value that may become a constant once its entries are ints.
_SHAPE_VALUE_OPS = frozenset({"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast",
                              "Equal", "Where", "Identity", "Reshape", "Flatten", "Add", "Sub", "Mul",
                              "Div", "ReduceProd", "Max", "Min"})


def _symbolic_reshape(node: Node, inf: Inference) -> list[int] | None:
    """A constant Reshape target for a target value with symbolic entries: an entry equal to
    the input's dim at that position is 0 (copy), one other symbolic entry is -1.  With a -1
    already in the target, that -1 is first resolved to the int it stands for when the sizes
    allow (MobileViT's [4·N, 256, -1] of [N, 4, 256, 64] is [-1, 256, 64])."""
    target = inf.values.get(node.inputs[1])
    x = inf.shapes.get(node.inputs[0])
    if target is None or x is None:
        return None
    copy_ok = not node.attrs.get("allowzero", 0)
    target = list(target)
    sym = [i for i, t in enumerate(target)
           if not is_int(t) and not (t is not None and i < len(x) and x[i] == t and copy_ok)]
    holes = [i for i, t in enumerate(target) if is_int(t) and int(t) == -1]
    if len(sym) + len(holes) > 1 and len(holes) == 1 and all(target[i] is not None for i in sym):
        rest = [(x[i] if is_int(t) and int(t) == 0 and copy_ok and i < len(x) else t)
                for i, t in enumerate(target) if i != holes[0]]
        n_in, s_in, u_in = symbolic_product(x)
        n_rest, s_rest, u_rest = symbolic_product(rest)
        if not (u_in or u_rest) and n_rest > 0 and n_in % n_rest == 0 and s_in == s_rest:
            target[holes[0]] = n_in // n_rest          # the hole is a plain size
    out, unknown = [], 0
    for i, t in enumerate(target):
        if is_int(t):
            out.append(int(t))
            unknown += int(t) == -1
        elif t is not None and i < len(x) and x[i] == t and copy_ok:
            out.append(0)
        else:
            out.append(-1)
            unknown += 1
    return out if unknown <= 1 else None


def _symbolic_resize_scales(node: Node, inf: Inference) -> list[float] | None:
    sizes = inf.values.get(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    x = inf.shapes.get(node.inputs[0])
    if sizes is None or x is None or len(sizes) != len(x) or node.attrs.get("axes") is not None:
        return None
    scales = []
    for t, d in zip(sizes, x):
        if t is not None and t == d:
            scales.append(1.0)
        elif is_int(t) and is_int(d) and int(d) > 0:
            s = np.float32(int(t)) / np.float32(int(d))
            if int(s * np.float32(int(d))) != int(t):
                return None
            scales.append(float(s))
        else:
            return None
    return scales


def _symbolic_expand(node: Node, inf: Inference, graph: Graph) -> tuple[str, list[int]] | None:
    """(like, shape) for an Expand whose target shape has symbolic entries (ViT's class token
    expanded to the run-time batch): entry i = -1 stands for dim i of `like`, a graph input
    with that symbol at index i; the other entries are ints."""
    target = inf.values.get(node.inputs[1])
    if target is None:
        return None
    like, shape = None, []
    for i, t in enumerate(target):
        if is_int(t):
            shape.append(int(t))
            continue
        if not isinstance(t, str):
            return None
        cands = [v.name for v in graph.inputs if v.shape is not None and i < len(v.shape) and v.shape[i] == t]
        if not cands or (like is not None and like not in cands):
            return None
        like = like or cands[0]
        shape.append(-1)
    return (like, shape) if like is not None else None


def _tile_is_expand(node: Node, inf: Inference) -> bool:
    """Tile(x, reps) repeats only dims of size 1 (XCiT's position encoding repeated over the
    run-time batch; Keras' nearest UpSampling2D: Unsqueeze, Tile by [1, 1, 1, 2, 1], Reshape):
    then it is Expand(x, reps), which the symbolic-batch Expand handles."""
    xs, reps = inf.shapes.get(node.inputs[0]), inf.values.get(node.inputs[1])
    if xs is None or reps is None or len(reps) != len(xs):
        return False
    return all((is_int(r) and int(r) == 1) or (is_int(d) and int(d) == 1) for d, r in zip(xs, reps))


MAX_TILE_COPIES = 64     # Tile of a run-time tensor along a dim > 1 becomes a Concat of copies


def _tile_as_concat(node: Node, inf: Inference, graph: Graph) -> bool:
    """Tile(x, constant reps) repeating one dim of size > 1 r times (r <= MAX_TILE_COPIES):
    the Concat of r copies of x along that dim."""
    xs, reps = inf.shapes.get(node.inputs[0]), graph.constants.get(node.inputs[1])
    if xs is None or reps is None or reps.size != len(xs):
        return False
    reps = [int(r) for r in np.asarray(reps).reshape(-1)]
    axes = [i for i, r in enumerate(reps) if r != 1]
    if len(axes) != 1 or not 1 < reps[axes[0]] <= MAX_TILE_COPIES:
        return False
    node.op, node.inputs, node.attrs = "Concat", [node.inputs[0]] * reps[axes[0]], {"axis": axes[0]}
    return True


def _evaluate(node: Node, graph: Graph) -> list[np.ndarray]:
    if node.op == "ConstantOfShape":
        value = np.asarray(node.attrs["value"]).reshape(-1)[:1]
        shape = [int(d) for d in graph.constants[node.inputs[0]]]
        return [np.broadcast_to(value.reshape(()), shape)]
    return eval_node(node, [graph.constants[i] if i else None for i in node.inputs])


MAX_SWEEPS = 64   # fold sweeps per run; each sweep re-infers shapes from the last one's constants


def run(graph: Graph) -> Graph:
    """Fold until a sweep changes nothing (bounded).  One sweep uses the shapes inferred
    before it, so a shape computed from values folded in this sweep (a Pad whose pads come
    from `W % window` arithmetic: every Swin block) only becomes known to the next one."""
    for _ in range(MAX_SWEEPS):
        if not _sweep(graph):
            break
    return graph


def _sweep(graph: Graph) -> bool:
    """One pass over the nodes; True when it folded or rewrote something."""
    inf = infer(graph)
    bcs = batch_constants.BatchConstants(graph)
    names = None
    kept = []
    changed = False
    for node in graph.nodes:
        changed |= promote_const_inputs(node, graph.constants)
        if node.op == "ConstantOfShape" or any(i in bcs.rows for i in node.inputs):
            names = names or NameGen(graph)
            new = batch_constants.fold_row(node, bcs, graph, names)
            if new is None and node.op == "ConstantOfShape":
                new = [n for n in [batch_constants.constant_of_shape(node, inf, graph, names)] if n]
            if new:
                for n in new:
                    bcs.note(n, graph)
                kept += new
                changed = True
                continue
            changed |= batch_constants.absorb(node, bcs, inf, graph)
        if node.op == "Reshape" and node.attrs.get("shape") is None and len(node.inputs) > 1 \
                and node.inputs[1] not in graph.constants:
            shape = _symbolic_reshape(node, inf)
            if shape is not None:
                node.attrs["shape"] = shape
                node.inputs = node.inputs[:1]
                changed = True
        if node.op == "Resize" and len(node.inputs) > 3 and node.inputs[3] \
                and node.inputs[3] not in graph.constants:
            scales = _symbolic_resize_scales(node, inf)
            if scales is not None:
                node.attrs["scales"] = scales
                node.attrs.pop("sizes", None)
                node.inputs = node.inputs[:1]
                changed = True
        if node.op == "Tile" and len(node.inputs) == 2 and node.inputs[0]:
            if _tile_is_expand(node, inf):
                node.op = "Expand"    # same inputs: Expand(x, reps) broadcasts exactly those dims
                changed = True
            elif node.inputs[0] not in graph.constants and _tile_as_concat(node, inf, graph):
                changed = True
        if node.op == "Expand" and "like_shape" not in node.attrs and len(node.inputs) == 2 \
                and node.inputs[1] not in graph.constants:
            got = _symbolic_expand(node, inf, graph)
            if got is not None:
                node.inputs = [node.inputs[0], got[0]]
                node.attrs["like_shape"] = got[1]
                changed = True
        if node.outputs and all(i in graph.constants for i in node.inputs if i):
            for name, arr in zip(node.outputs, _evaluate(node, graph)):
                if name:
                    graph.constants[name] = arr
            changed = True
            continue
        val = inf.values.get(node.outputs[0]) if len(node.outputs) == 1 else None
        if node.op in _SHAPE_VALUE_OPS and val is not None and all(is_int(v) for v in val):
            shape = inf.shapes.get(node.outputs[0])
            dtype = inf.dtypes.get(node.outputs[0], "int64")
            if shape is not None and len(shape) <= 1:
                graph.constants[node.outputs[0]] = np.array(val, dtype=dtype).reshape(shape)
                changed = True
                continue
        kept.append(node)
    graph.nodes = kept
    return changed
