"""Small graph-editing helpers shared by the passes (names, rewiring, bypassing)."""

from __future__ import annotations

import numpy as np

from nqrt.graph.ir import Graph, Node


def all_names(graph: Graph) -> set[str]:
    names = {v.name for v in graph.inputs} | set(graph.constants) | set(graph.output_names())
    for n in graph.nodes:
        names.update(n.inputs)
        names.update(n.outputs)
    return names


class NameGen:
    """Fresh tensor names that collide with nothing in the graph (or given out before)."""

    def __init__(self, graph: Graph):
        self.taken = all_names(graph)

    def __call__(self, base: str) -> str:
        i = 0
        while True:
            name = f"{base}__{i}" if i else base
            if name not in self.taken:
                self.taken.add(name)
                return name
            i += 1


def add_constant(graph: Graph, names: NameGen, base: str, value: np.ndarray) -> str:
    name = names(base)
    graph.constants[name] = value
    return name


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Every node input reading `old` reads `new` instead (graph outputs untouched)."""
    for n in graph.nodes:
        if old in n.inputs:
            n.inputs = [new if i == old else i for i in n.inputs]


def bypass(graph: Graph, node: Node) -> bool:
    """Remove a pass-through node y = node(x) (x = its first input), keeping tensor names the
    user sees: graph outputs keep their names.  Return False (graph unchanged) if impossible,
    i.e. both x and y are graph-visible (x a graph input/output and y a graph output)."""
    x, y = node.inputs[0], node.outputs[0]
    outputs = set(graph.output_names())
    if y not in outputs:
        graph.nodes.remove(node)
        replace_uses(graph, y, x)
        return True
    if x in outputs or x in {v.name for v in graph.inputs}:
        return False
    graph.nodes.remove(node)
    if x in graph.constants:
        graph.constants[y] = graph.constants.pop(x)
    else:
        for p in graph.nodes:
            p.outputs = [y if o == x else o for o in p.outputs]
    replace_uses(graph, x, y)
    return True


def concat_output_tree(graph: Graph, through=("Concat",)) -> set[str]:
    """Tensors that reach a graph output only through Concats (ops `through`): a graph output
    read by no node, or a tensor (not itself an output) read only by such nodes whose outputs
    are such tensors.  A detection head's output assembly; the quantizer may concatenate
    these in float (quantizers.quantize_concat)."""
    consumers = graph.consumers()
    outputs = set(graph.output_names())
    tree: set[str] = set()
    for node in reversed(graph.nodes):          # consumers come after their producers
        for y in node.outputs:
            users = consumers.get(y, [])
            if (y in outputs and not users) or (
                    users and y not in outputs and all(u.op in through and u.outputs[0] in tree for u in users)):
                tree.add(y)
    return tree


class Matcher:
    """Producer / consumer maps of a graph for the pattern-fusing passes."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producers = graph.producers()
        self.consumers = graph.consumers()
        self.outputs = set(graph.output_names())

    def private(self, t: str, ops, uses: int = 1) -> Node | None:
        """The producer of t when its op is `ops` (a name or a tuple of names) without a
        fused activation, and t is read by exactly `uses` nodes (Mul(d, d) is one) and is not
        a graph output: a node a pattern may absorb."""
        p = self.producers.get(t)
        ops = (ops,) if isinstance(ops, str) else ops
        if p is None or p.op not in ops or "act" in p.attrs or t in self.outputs \
                or len({id(n) for n in self.consumers.get(t, [])}) != uses:
            return None
        return p
