"""Lower Gather of a run-time tensor with constant indices to data movement:

  Gather(x, i, axis)            i a scalar     -> Squeeze(Slice(x, [i, i + 1) on axis), axis)
  Gather(x, [i, i + 1, ...], axis)  consecutive -> Slice(x, [i, i + n) on axis)
  Gather(x, I, axis)   I of rank >= 2 whose entries, in order, are consecutive
                       -> Reshape(Slice(x, [i, i + n) on axis), x.shape[:axis] + I.shape +
                          x.shape[axis + 1:])   (PyTorch 2's dynamo export of ConvNeXt's
                          layer scale: `as_strided` of a [C] tensor to [1, C, 1, 1] becomes a
                          Gather with arange(C).reshape(1, C, 1, 1))

(PyTorch's `x[:, 0]` — ViT's class token — and `qkv[0]`, `qkv[1]`, `qkv[2]` of an attention
block export as Gather with a scalar index.)  Negative indices count from the end of a known
axis.  Gather of constants is left to fold_constants (shape computations); other indices
(not consecutive, or with an unknown axis length where one is negative) are left alone and
reported by the converter.
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer, is_int


def _indices(node: Node, graph: Graph, xs) -> tuple[int, int, tuple] | None:
    """(first, count, index shape) of a constant, in-range index tensor whose entries in C
    order are consecutive, else None."""
    idx = graph.constants.get(node.inputs[1])
    if idx is None or np.asarray(idx).dtype.kind not in "iu" or np.size(idx) == 0:
        return None
    axis = int(node.attrs.get("axis", 0)) % len(xs)
    d = xs[axis]
    v = [int(t) for t in np.asarray(idx).reshape(-1)]
    if any(t < 0 for t in v):
        if not is_int(d):
            return None
        v = [t + int(d) if t < 0 else t for t in v]
    if any(t < 0 or (is_int(d) and t >= int(d)) for t in v):
        return None
    if v != list(range(v[0], v[0] + len(v))):
        return None
    return v[0], len(v), tuple(int(d) for d in np.shape(idx))


def _reshape_target(xs, axis: int, ishape: tuple) -> list[int] | None:
    """Reshape target x.shape[:axis] + ishape + x.shape[axis + 1:] for the sliced tensor: 0
    copies a leading dim (same index), ints stay, at most one unknown trailing dim is −1."""
    tail = [int(d) if is_int(d) else -1 for d in xs[axis + 1:]]
    if tail.count(-1) > 1:
        return None
    return [0] * axis + list(ishape) + tail


def run(graph: Graph) -> Graph:
    cands = [n for n in graph.nodes if n.op == "Gather" and len(n.inputs) == 2
             and n.inputs[0] not in graph.constants and n.inputs[1] in graph.constants]
    if not cands:
        return graph
    inf = infer(graph)
    names = NameGen(graph)
    out: list[Node] = []
    for node in graph.nodes:
        xs = inf.shapes.get(node.inputs[0]) if node in cands else None
        got = _indices(node, graph, xs) if xs is not None and len(xs) >= 1 else None
        if got is None:
            out.append(node)
            continue
        first, count, ishape = got
        axis = int(node.attrs.get("axis", 0)) % len(xs)
        target = _reshape_target(xs, axis, ishape) if len(ishape) >= 2 else None
        if len(ishape) >= 2 and target is None:
            out.append(node)
            continue
        label = node.name or node.outputs[0]
        y = node.outputs[0]
        direct = len(ishape) == 1
        sliced = y if direct else names(f"{y}_slice")
        out.append(Node("Slice", [node.inputs[0]], [sliced],
                        {"starts": [first], "ends": [first + count], "axes": [axis], "steps": [1]},
                        label if direct else f"{label}/slice"))
        if not ishape:
            out.append(Node("Squeeze", [sliced], [y], {"axes": [axis]}, label))
        elif not direct:
            out.append(Node("Reshape", [sliced], [y], {"shape": target, "allowzero": 0}, label))
    graph.nodes = out
    return graph
