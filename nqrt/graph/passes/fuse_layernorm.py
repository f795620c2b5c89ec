"""Fuse the decomposed layer normalization of exports before opset 17 into one node:

  m = ReduceMean(x, axes = the last k axes);  d = Sub(x, m)
  v = ReduceMean(Pow(d, 2) | Mul(d, d), same axes);  s = Sqrt(Add(v, eps))
  n = Div(d, s) | Mul(d, Reciprocal(s))
  [n = Mul(n, gamma)] [n = Add(n, beta)]          (constants over the normalized dims)
      -> LayerNormalization(x, gamma or 1, beta or 0, axis = r − k, epsilon = eps)

(PyTorch's nn.LayerNorm exported at opset ≤ 16: ViT, Swin, ConvNeXt, BERT.)  tf2onnx writes
Keras' LayerNormalization with the affine folded into the normalization's factor:

  m = ReduceMean | GlobalAveragePool (x);  d = Sub(x, m);  v = same reduction of Mul(d, d)
  k = Mul(Reciprocal(Sqrt(Add(v, eps))), gamma)
  y = Add(Mul(x, k), Add(Mul(Neg(m), k), beta))    -> LayerNormalization(x, gamma, beta)
      (Add(Mul(x, k), Mul(Neg(m), k)) when beta = 0 was removed as a neutral constant)

(GlobalAveragePool of a rank-3 [N, T, C] tensor is the mean over C.)  Without it the
pattern would run op by op on 8-bit codes (the variance of rounded deviations, a QLut2
division), far less precisely.  The intermediates must
be read only inside the pattern (d by the square and the division) and not be graph outputs;
Add / Mul take their operands in either order.  The result is the same function: the fused
op computes mean, variance and the normalization in float32 (spec 4.16) where the pattern
computed them op by op.
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.edit import Matcher
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer, norm_axis


class _Matcher(Matcher):
    def const(self, t: str) -> np.ndarray | None:
        c = self.graph.constants.get(t)
        return None if c is None or c.dtype.kind != "f" else np.asarray(c)

    def split_const(self, node: Node) -> tuple[str, np.ndarray] | None:
        """(run-time operand, constant operand) of a binary node with one float constant."""
        if len(node.inputs) != 2:
            return None
        for k in (0, 1):
            c = self.const(node.inputs[k])
            if c is not None and node.inputs[1 - k] not in self.graph.constants:
                return node.inputs[1 - k], c
        return None


def _axes(node: Node, rank: int) -> tuple[int, ...] | None:
    axes = node.attrs.get("axes")
    if axes is None or not int(node.attrs.get("keepdims", 1)):
        return None
    return tuple(sorted(norm_axis(int(a), rank) for a in axes))


def _match(m: _Matcher, div: Node, ranks: dict) -> dict | None:
    """The pattern ending at the division node `div` (Div, or Mul by a Reciprocal)."""
    if "act" in div.attrs or len(div.inputs) != 2:
        return None
    if div.op == "Div":
        d, s = div.inputs
    else:
        rec = None
        for k in (0, 1):
            rec = m.private(div.inputs[k], ("Reciprocal",))
            if rec is not None:
                d, s = div.inputs[1 - k], rec.inputs[0]
                break
        if rec is None:
            return None
    sqrt = m.private(s, ("Sqrt",))
    add = sqrt and m.private(sqrt.inputs[0], ("Add",))
    got = add and m.split_const(add)
    if not got or got[1].size != 1:
        return None
    v, eps = got[0], float(got[1].reshape(-1)[0])
    var = m.private(v, ("ReduceMean",))
    sq = var and m.private(var.inputs[0], ("Pow", "Mul"))
    if sq is None:
        return None
    if sq.op == "Pow":
        e = m.graph.constants.get(sq.inputs[1])          # float or int exponent 2
        if sq.inputs[0] != d or e is None or e.size != 1 or float(np.asarray(e).reshape(-1)[0]) != 2.0:
            return None
    elif sq.inputs != [d, d]:
        return None
    sub = m.private(d, ("Sub",), uses=2)
    mean = sub and m.private(sub.inputs[1], ("ReduceMean",))
    if mean is None or mean.inputs[0] != sub.inputs[0] or eps < 0:
        return None
    x = sub.inputs[0]
    r = ranks.get(x)
    if r is None:
        return None
    axes = _axes(mean, r)
    if axes is None or axes != _axes(var, r) or axes != tuple(range(r - len(axes), r)):
        return None
    return {"x": x, "axis": r - len(axes), "eps": eps, "rank": r,
            "nodes": [mean, sub, sq, var, add, sqrt] + ([] if div.op == "Div" else [rec]) + [div]}


def _reduction_axes(node: Node, rank: int) -> tuple[int, ...] | None:
    if node.op == "GlobalAveragePool":
        return tuple(range(2, rank))
    return _axes(node, rank)


def _binary_parts(node: Node) -> list[tuple[str, str]]:
    return [(node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])] if len(node.inputs) == 2 else []


def _match_tf(m: _Matcher, top: Node, ranks: dict) -> dict | None:
    """tf2onnx's layer norm (module docstring) ending at the Add `top`."""
    if top.op != "Add" or "act" in top.attrs:
        return None
    for p_t, q_t in _binary_parts(top):
        p, q = m.private(p_t, ("Mul",)), m.private(q_t, ("Add",))
        got = q and m.split_const(q)
        if p is None:
            continue
        if got:
            u, beta = got
        else:                                       # beta = 0: no Add
            q, u, beta = None, q_t, np.zeros(1, np.float32)
        um = m.private(u, ("Mul",))
        for x, k in _binary_parts(p):
            if um is None or k not in um.inputs:
                continue
            neg_t = um.inputs[1] if um.inputs[0] == k else um.inputs[0]
            neg = m.private(neg_t, ("Neg",))
            kn = m.private(k, ("Mul",), uses=2)
            gk = kn and m.split_const(kn)
            if neg is None or not gk:
                continue
            r_t, gamma = gk
            rec = m.private(r_t, ("Reciprocal",))
            sq = rec and m.private(rec.inputs[0], ("Sqrt",))
            add = sq and m.private(sq.inputs[0], ("Add",))
            ae = add and m.split_const(add)
            if not ae or ae[1].size != 1 or float(ae[1].reshape(-1)[0]) < 0:
                continue
            var = m.private(ae[0], ("ReduceMean", "GlobalAveragePool"))
            d2 = var and m.private(var.inputs[0], ("Mul",))
            if d2 is None or d2.inputs[0] != d2.inputs[1]:
                continue
            sub_ = m.private(d2.inputs[0], ("Sub",))
            mean_t = neg.inputs[0]
            mean = m.private(mean_t, ("ReduceMean", "GlobalAveragePool"), uses=2)
            if sub_ is None or mean is None or sub_.inputs != [x, mean_t] or mean.inputs[0] != x:
                continue
            r = ranks.get(x)
            if r is None:
                continue
            axes = _reduction_axes(mean, r)
            if not axes or axes != _reduction_axes(var, r) or axes != tuple(range(r - len(axes), r)):
                continue
            return {"x": x, "axis": r - len(axes), "eps": float(ae[1].reshape(-1)[0]), "rank": r,
                    "gamma": gamma, "beta": beta,
                    "nodes": [mean, sub_, d2, var, add, sq, rec, kn, neg, um, p, top] + ([q] if q else [])}
    return None


def _affine(m: _Matcher, t: str, op: str, k: int, rank: int):
    """A following Mul / Add of t by a constant over the last k dims: (node, constant)."""
    users = m.consumers.get(t, [])
    if len(users) != 1 or t in m.outputs or users[0].op != op or "act" in users[0].attrs:
        return None
    got = m.split_const(users[0])
    if got is None or got[0] != t or got[1].ndim > rank:
        return None
    c = got[1]
    lead = c.shape[:max(c.ndim - k, 0)]
    if any(d != 1 for d in lead):
        return None                    # varies over a non-normalized dim: not LayerNorm's affine
    return users[0], c.reshape(c.shape[len(lead):])


def _tf_affine(got: dict):
    """gamma, beta of the tf2onnx form as constants over the normalized dims (None: they vary
    over another dim, so the pattern is no layer norm)."""
    k = got["rank"] - got["axis"]
    out = []
    for c in (got["gamma"], got["beta"]):
        lead = c.shape[:max(c.ndim - k, 0)]
        if c.ndim > got["rank"] or any(d != 1 for d in lead):
            return None
        out.append(c.reshape(c.shape[len(lead):]))
    return out


def run(graph: Graph) -> Graph:
    if not any(n.op == "Sqrt" for n in graph.nodes):
        return graph
    inf = infer(graph)
    ranks = {t: len(s) for t, s in inf.shapes.items() if s is not None}
    m = _Matcher(graph)
    replace: dict[int, Node] = {}
    drop: set[int] = set()
    for node in graph.nodes:
        if id(node) in drop:
            continue
        tf = _match_tf(m, node, ranks) if node.op == "Add" else None
        aff = tf and _tf_affine(tf)
        if aff is not None and not ({id(n) for n in tf["nodes"]} & drop):
            out, names = node.outputs[0], []
            for c, what in zip(aff, ("scale", "bias")):
                name = f"{out}__ln_{what}"
                while name in graph.constants:
                    name += "_"
                graph.constants[name] = np.asarray(c, np.float32)
                names.append(name)
            replace[id(node)] = Node("LayerNormalization", [tf["x"], *names], [out],
                                     {"axis": tf["axis"], "epsilon": tf["eps"]}, node.name or out)
            drop.update(id(n) for n in tf["nodes"])
            continue
        if node.op not in ("Div", "Mul"):
            continue
        got = _match(m, node, ranks)
        if got is None:
            continue
        k = got["rank"] - got["axis"]
        out, nodes = node.outputs[0], got["nodes"]
        scale = bias = None
        mul = _affine(m, out, "Mul", k, got["rank"])
        if mul is not None:
            nodes.append(mul[0])
            out, scale = mul[0].outputs[0], mul[1]
        add = _affine(m, out, "Add", k, got["rank"])
        if add is not None:
            nodes.append(add[0])
            out, bias = add[0].outputs[0], add[1]
        names = []
        for c, default in ((scale, 1.0), (bias, 0.0)):
            name = f"{out}__ln_{'scale' if default else 'bias'}"
            while name in graph.constants:
                name += "_"
            graph.constants[name] = np.asarray(c if c is not None else np.full((1,), default), np.float32)
            names.append(name)
        label = nodes[-1].name or out
        fused = Node("LayerNormalization", [got["x"], *names], [out],
                     {"axis": got["axis"], "epsilon": got["eps"]}, label)
        replace[id(nodes[-1])] = fused
        drop.update(id(n) for n in nodes)
    if not replace:
        return graph
    graph.nodes = [replace.get(id(n), n) for n in graph.nodes if id(n) in replace or id(n) not in drop]
    return graph
