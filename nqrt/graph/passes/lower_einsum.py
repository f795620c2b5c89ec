"""Einsum of two operands -> Transpose / Unsqueeze / MatMul / Squeeze / Transpose.

ONNX Einsum 'lhs_a,lhs_b->out' (explicit output; letters only; no index repeated within one
term; no ellipsis) is a batched matrix product once its indices are sorted into
  batch     in both operands and the output,
  contract  in both operands, not in the output (summed),
  free_a    in A and the output only;   free_b   in B and the output only.
MViTv2's relative-position terms are 'byhwc,hkc->byhwk' (batch h, contract c, free_a b y w,
free_b k).  The lowering, for one contracted index and at most one free_b index (the operands
are swapped when that makes it so):
  A' = Transpose(A) to [batch..., free_a..., c]          (the last free_a index is MatMul's M,
                                                          the others broadcast as batch dims)
  B' = Transpose(B) to [batch..., c, free_b], Unsqueeze'd with a 1 per free_a index but the last
  Y' = MatMul(A', B') = [batch..., free_a..., free_b]    (a 1 for an empty free_a / free_b,
                                                          squeezed again)
  Y  = Transpose(Y') to the output's order.
Einsum is symmetric in its operands, so a constant A and run-time B are swapped first (a
constant right operand is a Gemm or QMatMul's constant b).  The nodes compute the same sums
as the Einsum (one MatMul contraction): equal up to float summation order.  Any other Einsum
is left as it is and reported as unsupported by the converter.
"""

from __future__ import annotations

from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node


def parse(equation: str):
    """(terms a, b, out) of a supported two-operand equation, else None."""
    eq = equation.replace(" ", "")
    if "->" not in eq or "." in eq:
        return None
    lhs, out = eq.split("->")
    terms = lhs.split(",")
    if len(terms) != 2:
        return None
    a, b = terms
    if not all(t.isalpha() and len(set(t)) == len(t) for t in (a, b)) \
            or not (out == "" or (out.isalpha() and len(set(out)) == len(out))):
        return None
    if set(out) - set(a) - set(b):
        return None                        # an output index no operand has
    if (set(a) ^ set(b)) - set(out):
        return None                        # a sum over one operand's index only
    contract = [i for i in a if i in b and i not in out]
    if len(contract) != 1:
        return None
    return a, b, out


def _perm(src: str, dst: str) -> list[int]:
    return [src.index(i) for i in dst]


def lower(node: Node, graph: Graph, names: NameGen) -> list[Node] | None:
    terms = parse(str(node.attrs.get("equation", "")))
    if terms is None or len(node.inputs) != 2:
        return None
    a, b, out = terms
    x_a, x_b = node.inputs
    # operand order: a constant goes right (MatMul's B), and B may have one free index at most
    orders = [(a, b, x_a, x_b), (b, a, x_b, x_a)]
    orders = [o for o in orders if not (o[2] in graph.constants and o[3] not in graph.constants)
              and len([i for i in o[1] if i not in o[0]]) <= 1]
    if not orders:
        return None
    a, b, x_a, x_b = orders[0]
    batch = [i for i in a if i in b and i in out]
    (k,) = [i for i in a if i in b and i not in out]
    free_a = [i for i in a if i not in b]
    free_b = [i for i in b if i not in a]
    base = node.name or node.outputs[0]
    nodes: list[Node] = []

    def transpose(x: str, src: str, dst: str, tag: str) -> str:
        perm = _perm(src, dst)
        if perm == list(range(len(perm))):
            return x
        y = names(f"{base}_{tag}")
        nodes.append(Node("Transpose", [x], [y], {"perm": perm}, names(f"{base}_{tag}_T")))
        return y

    def reshape_axes(op: str, x: str, axes: list[int], tag: str) -> str:
        if not axes:
            return x
        y = names(f"{base}_{tag}")
        nodes.append(Node(op, [x], [y], {"axes": axes}, names(f"{base}_{tag}_op")))
        return y

    nb, nfa = len(batch), len(free_a)
    a2 = transpose(x_a, a, "".join(batch + free_a + [k]), "a")
    a2 = reshape_axes("Unsqueeze", a2, [nb] if nfa == 0 else [], "a_m")       # M = 1
    b2 = transpose(x_b, b, "".join(batch + [k] + free_b), "b")
    b2 = reshape_axes("Unsqueeze", b2, [nb + 1] if not free_b else [], "b_n")  # N = 1
    b2 = reshape_axes("Unsqueeze", b2, list(range(nb, nb + nfa - 1)), "b_bc")  # broadcast dims
    prod = names(f"{base}_mm")
    nodes.append(Node("MatMul", [a2, b2], [prod], {}, names(f"{base}_MatMul")))
    order = batch + (free_a if nfa else ["."]) + (free_b if free_b else [","])
    squeeze = [order.index(c) for c in ".," if c in order]
    prod = reshape_axes("Squeeze", prod, squeeze, "sq")
    order = [i for i in order if i not in ".,"]
    perm = _perm("".join(order), out)
    if perm == list(range(len(perm))):
        last = nodes[-1]
        last.outputs = list(node.outputs)
    else:
        nodes.append(Node("Transpose", [prod], list(node.outputs), {"perm": perm}, node.name))
    return nodes


def run(graph: Graph) -> Graph:
    if not any(n.op == "Einsum" for n in graph.nodes):
        return graph
    names = NameGen(graph)
    kept: list[Node] = []
    for node in graph.nodes:
        new = lower(node, graph, names) if node.op == "Einsum" else None
        kept.extend(new if new is not None else [node])
    graph.nodes = kept
    return graph
