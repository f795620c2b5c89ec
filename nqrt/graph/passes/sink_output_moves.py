"""Move a Reshape or Transpose above the Concat it follows, inside a graph output's tree of
Concats and moves (tensors that reach a graph output only through Concats, Reshapes and
Transposes: edit.concat_output_tree), until the Concats feed each other directly:

  Reshape(Concat(x_1, .., x_n, axis=k), shape)  ->  Concat(Reshape(x_1), .., Reshape(x_n), axis=k')
  Transpose(Concat(x_1, .., x_n, axis=k), perm) ->  Concat(Transpose(x_1), .., axis=perm⁻¹(k))

The Reshape must keep the concat axis whole: some output dim k' has the Concat's size on k,
the dims before k' hold the elements of the dims before k and the dims after k' those after
k (merged or split: [N, 85, H, W] -> [N, 85, H·W] keeps axis 1).  A Transpose always
qualifies.  Detection heads assemble their output this way: per scale, boxes in pixels and
class scores in [0, 1] are concatenated, reshaped (YOLOv5: [N, anchors, 5 + classes]; YOLOX:
[N, 85, H·W], then a Transpose) and the scales concatenated.  With the moves above their
Concats, the Concats feed each other directly, so the quantizer can concatenate the whole
tree in float, each input on its own grid (quantizers.quantize_concat); a move in between
would put the per-scale Concat on one uint8 grid, where a score step becomes a pixel step.
The values are unchanged: the same elements, in the same places.

The per-input Reshape targets keep the original entries before k' (a −1 there is inferred
per input; a 0, which copies an input dim, only where that dim is a leading one, before k),
use each input's own size on k', and the known dims after it.
"""

from __future__ import annotations

import math

from nqrt.graph.edit import NameGen, concat_output_tree
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer, is_int, norm_axis


def _reshape_targets(reshape: Node, concat: Node, inf) -> tuple[int, list[list[int]]] | None:
    """(k', per-input targets) when the Reshape keeps the concat axis whole, else None."""
    xs = [inf.shapes.get(t) for t in concat.inputs]
    d = inf.shapes.get(concat.outputs[0])
    spec = reshape.attrs.get("shape")
    s = inf.shapes.get(reshape.outputs[0])
    if spec is None or d is None or s is None or any(x is None for x in xs) \
            or reshape.attrs.get("allowzero", 0) or len(spec) != len(s):
        return None
    k = norm_axis(int(concat.attrs.get("axis", 0)), len(d))
    if not is_int(d[k]) or any(not is_int(x[k]) for x in xs) or any(not is_int(t) for t in d[k + 1:]):
        return None
    after = math.prod(int(t) for t in d[k + 1:])
    for k2 in range(len(s) - 1, -1, -1):
        tail = s[k2 + 1:]
        if s[k2] != d[k] or any(not is_int(t) for t in tail) or math.prod(int(t) for t in tail) != after:
            continue
        # the dims before k' hold the rest (equal totals); a 0 entry copies input dim p,
        # which is the same in every input only before the concat axis
        if any(int(e) == 0 and p >= k for p, e in enumerate(spec[:k2])):
            return None
        prefix = [int(e) for e in spec[:k2]]
        return k2, [prefix + [int(x[k])] + [int(t) for t in tail] for x in xs]
    return None


def run(graph: Graph) -> Graph:
    consumers = graph.consumers()
    producer = {o: n for n in graph.nodes for o in n.outputs}
    outputs = set(graph.output_names())
    cands = []
    tree = None
    for node in graph.nodes:
        if node.op not in ("Reshape", "Transpose") or len(node.inputs) != 1:
            continue
        c = producer.get(node.inputs[0])
        if c is None or c.op != "Concat" or "act" in c.attrs or node.inputs[0] in outputs \
                or len(consumers.get(node.inputs[0], [])) != 1:
            continue
        if tree is None:
            tree = concat_output_tree(graph, through=("Concat", "Reshape", "Transpose"))
        if node.outputs[0] in tree:
            cands.append((node, c))
    if not cands:
        return graph
    inf = infer(graph)
    names = NameGen(graph)
    drop, extra = set(), {}
    for move, concat in cands:
        label = move.name or move.outputs[0]
        if move.op == "Reshape":
            got = _reshape_targets(move, concat, inf)
            if got is None:
                continue
            axis, targets = got
            attrs = [{"shape": t, "allowzero": 0} for t in targets]
        else:
            perm = [int(p) for p in move.attrs["perm"]]
            axis = perm.index(norm_axis(int(concat.attrs.get("axis", 0)), len(perm)))
            attrs = [{"perm": perm} for _ in concat.inputs]
        parts, new = [], []
        for x, a in zip(concat.inputs, attrs):
            y = names(f"{x}_{move.op.lower()}d")
            new.append(Node(move.op, [x], [y], a, f"{label}/{x}"))
            parts.append(y)
        new.append(Node("Concat", parts, [move.outputs[0]], {**concat.attrs, "axis": axis},
                        concat.name or label))
        drop.update((id(move), id(concat)))
        extra[id(move)] = new
    out = []
    for node in graph.nodes:
        if id(node) in extra:
            out.extend(extra[id(node)])
        elif id(node) not in drop:
            out.append(node)
    graph.nodes = out
    return graph
