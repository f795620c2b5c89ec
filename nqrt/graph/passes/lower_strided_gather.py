"""Lower a Gather that reads a flattened tensor at affine indices built from the run-time
batch to the Reshape it is:

  Gather(Reshape(y, [-1]), idx, axis=0)   with idx[i_0, .., i_k] = Σ_d stride_d · i_d
      -> Reshape(y, idx.shape)   when the strides are idx.shape's row-major ones

PyTorch 2's dynamo exporter writes `as_strided` this way: ConvNeXt's and Swin's pooled
features [N, C, 1, 1] are read back as Gather(flat, Unsqueeze(Range(0, N)·C) + arange(C)
reshaped [1, C, 1, 1]), whose Range over the batch cannot fold to a constant.  The index
expression is analysed symbolically: Range(0, L, 1) (L an int or the batch symbol) has
stride 1, a scalar integer Mul scales the strides, Unsqueeze inserts stride-0 dims, Add
broadcasts and adds strides, Cast passes through, and an integer constant counts when it is
itself affine (checked element for element).  Anything else leaves the Gather alone.
"""

from __future__ import annotations

import math

import numpy as np

from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import broadcast, infer, is_int


def _const_affine(c: np.ndarray):
    """(offset, strides, shape) of an integer array equal to offset + Σ strides_d·i_d."""
    c = np.asarray(c)
    if c.dtype.kind not in "iu" or c.size == 0 or c.size > 1 << 20:
        return None
    off = int(c.reshape(-1)[0])
    strides = []
    for d, n in enumerate(c.shape):
        if n == 1:
            strides.append(0)
            continue
        idx = [0] * c.ndim
        idx[d] = 1
        strides.append(int(c[tuple(idx)]) - off)
    grid = np.indices(c.shape).reshape(c.ndim, -1) if c.ndim else np.zeros((0, 1), np.int64)
    want = off + (np.asarray(strides, np.int64)[:, None] * grid).sum(axis=0)
    if not np.array_equal(want, c.reshape(-1).astype(np.int64)):
        return None
    return off, strides, tuple(int(n) for n in c.shape)


class _Affine:
    def __init__(self, graph: Graph, inf):
        self.graph, self.inf = graph, inf
        self.producers = graph.producers()

    def __call__(self, t: str, depth: int = 0):
        """(offset, strides, shape) of the integer tensor t, or None."""
        if depth > 16:
            return None
        if t in self.graph.constants:
            return _const_affine(self.graph.constants[t])
        n = self.producers.get(t)
        if n is None:
            return None
        if n.op == "Range":
            v = [self.inf.values.get(i) for i in n.inputs[:3]]
            if any(x is None or len(x) != 1 for x in v) or v[0][0] != 0 or v[2][0] != 1:
                return None
            return 0, [1], (v[1][0],)
        if n.op == "Cast":
            return self(n.inputs[0], depth + 1)
        if n.op == "Unsqueeze":
            a = self(n.inputs[0], depth + 1)
            if a is None or n.attrs.get("axes") is None:
                return None
            off, strides, shape = a
            r = len(shape) + len(n.attrs["axes"])
            axes = sorted(int(x) % r for x in n.attrs["axes"])
            strides, shape = list(strides), list(shape)
            for ax in axes:
                strides.insert(ax, 0)
                shape.insert(ax, 1)
            return off, strides, tuple(shape)
        if n.op == "Mul" and len(n.inputs) == 2:
            for k in (0, 1):
                c = self.graph.constants.get(n.inputs[k])
                if c is not None and c.size == 1 and np.asarray(c).dtype.kind in "iu":
                    a = self(n.inputs[1 - k], depth + 1)
                    if a is None:
                        return None
                    m = int(np.asarray(c).reshape(-1)[0])
                    return a[0] * m, [s * m for s in a[1]], a[2]
            return None
        if n.op == "Add" and len(n.inputs) == 2:
            a, b = self(n.inputs[0], depth + 1), self(n.inputs[1], depth + 1)
            if a is None or b is None:
                return None
            try:
                shape = broadcast(a[2], b[2])
            except ValueError:
                return None
            if any(d is None for d in shape):
                return None
            r = len(shape)
            sa = [0] * (r - len(a[1])) + list(a[1])
            sb = [0] * (r - len(b[1])) + list(b[1])
            return a[0] + b[0], [p + q for p, q in zip(sa, sb)], tuple(shape)
        return None


def _row_major(strides, shape) -> bool:
    """The strides of a C-ordered array of `shape` (size-1 dims: any stride)."""
    step = 1
    for s, d in zip(reversed(strides), reversed(shape)):
        if d != 1 and s != step:
            return False
        if not is_int(d):
            step = None              # only the leading dim may be symbolic
        else:
            step = step * int(d) if step is not None else None
    return True


def _same_size(a, b) -> bool:
    """Equal element counts of two shapes with symbolic dims (the same symbols, equal ints)."""
    sa = sorted(d for d in a if not is_int(d))
    sb = sorted(d for d in b if not is_int(d))
    if sa != sb or any(d is None for d in sa):
        return False
    return math.prod(int(d) for d in a if is_int(d)) == math.prod(int(d) for d in b if is_int(d))


def run(graph: Graph) -> Graph:
    cands = [n for n in graph.nodes if n.op == "Gather" and len(n.inputs) == 2
             and n.inputs[1] not in graph.constants and int(n.attrs.get("axis", 0)) == 0]
    if not cands:
        return graph
    inf = infer(graph)
    producers = graph.producers()
    affine = _Affine(graph, inf)
    for node in cands:
        flat = producers.get(node.inputs[0])
        if flat is None or flat.op != "Reshape" or flat.attrs.get("shape") != [-1]:
            continue
        y_shape = inf.shapes.get(flat.inputs[0])
        a = affine(node.inputs[1])
        if y_shape is None or a is None:
            continue
        off, strides, shape = a
        if off != 0 or not _row_major(strides, shape) or not _same_size(y_shape, shape) \
                or sum(not is_int(d) for d in shape) > 1:
            continue
        node.op = "Reshape"
        node.inputs = [flat.inputs[0]]
        node.attrs = {"shape": [int(d) if is_int(d) else -1 for d in shape], "allowzero": 0}
    return graph
