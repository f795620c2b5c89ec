"""Move a Reshape above the Concat it follows, inside a graph output's tree of Concats:

  Reshape(Concat(x_1, .., x_n, axis=k), shape)  ->  Concat(Reshape(x_1), .., Reshape(x_n), axis=k')

when the Reshape keeps the Concat's axis and every dim after it (it only merges or splits
the dims before k) and its result reaches the graph output only through Concats.  This is
how YOLOv5-style detection heads assemble their output: per scale, boxes in pixels and class
scores in [0, 1] are concatenated along the last axis, the result reshaped to [N, anchors, 4 +
classes], and the scales concatenated.  With the Reshape moved up, the per-scale Concats feed
the output Concat directly, so the quantizer can concatenate the whole tree in float, each
input on its own grid (quantizers.quantize_concat); a Reshape in between would force the
per-scale Concat onto one uint8 grid, where a score step becomes a box's pixel step.

The per-input targets keep the Reshape's entries before the new axis k' (a −1 there is
inferred per input; a 0 copies the same leading dim, allowed only before k) and use each
input's own dim on k', and the known dims after it.  The values are unchanged: the same
elements in the same order.
"""

from __future__ import annotations

from nqrt.graph.edit import NameGen, concat_output_tree
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer, is_int, norm_axis


def _targets(reshape: Node, concat: Node, inf) -> tuple[int, list[list[int]]] | None:
    """(k', per-input targets) when the rewrite applies, else None."""
    xs = [inf.shapes.get(t) for t in concat.inputs]
    d = inf.shapes.get(concat.outputs[0])
    spec = reshape.attrs.get("shape")
    s = inf.shapes.get(reshape.outputs[0])
    if spec is None or d is None or s is None or any(x is None for x in xs) or reshape.attrs.get("allowzero", 0):
        return None
    r, m = len(d), len(s)
    k = norm_axis(int(concat.attrs.get("axis", 0)), r)
    tail = r - k                                  # dims k..r-1 must end the Reshape's output
    if m < tail or len(spec) != m or any(not is_int(t) for t in d[k:]):
        return None
    k2 = m - tail
    if list(s[k2:]) != [int(t) for t in d[k:]]:
        return None
    if any(int(e) == 0 and p >= k for p, e in enumerate(spec[:k2])):
        return None
    if any(not is_int(x[k]) for x in xs):
        return None
    prefix = [int(e) for e in spec[:k2]]
    return k2, [prefix + [int(x[k])] + [int(t) for t in d[k + 1:]] for x in xs]


def run(graph: Graph) -> Graph:
    consumers = graph.consumers()
    producer = {o: n for n in graph.nodes for o in n.outputs}
    cands = []
    tree = None
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) != 1:
            continue
        c = producer.get(node.inputs[0])
        if c is None or c.op != "Concat" or len(consumers.get(node.inputs[0], [])) != 1 \
                or node.inputs[0] in graph.output_names():
            continue
        if tree is None:
            tree = concat_output_tree(graph)
        if node.outputs[0] in tree:
            cands.append((node, c))
    if not cands:
        return graph
    inf = infer(graph)
    names = NameGen(graph)
    drop, extra = set(), {}
    for reshape, concat in cands:
        got = _targets(reshape, concat, inf)
        if got is None:
            continue
        k2, targets = got
        label = reshape.name or reshape.outputs[0]
        parts, new = [], []
        for x, target in zip(concat.inputs, targets):
            y = names(f"{x}_reshaped")
            new.append(Node("Reshape", [x], [y], {"shape": target, "allowzero": 0}, f"{label}/{x}"))
            parts.append(y)
        new.append(Node("Concat", parts, [reshape.outputs[0]], {**concat.attrs, "axis": k2},
                        concat.name or label))
        drop.update((id(reshape), id(concat)))
        extra[id(reshape)] = new
    out = []
    for node in graph.nodes:
        if id(node) in extra:
            out.extend(extra[id(node)])
        elif id(node) not in drop:
            out.append(node)
    graph.nodes = out
    return graph
