"""IR normalization shared by the importer and the passes.

* `promote_const_inputs`: an attribute-like input (see shapes.ATTR_INPUTS) whose tensor is a
  constant moves into `node.attrs`; its slot in `node.inputs` becomes "" (trailing "" are
  dropped).  A run-time attribute input stays in place with the attribute set to None.
* `fill_shape_attrs`: attributes whose ONNX default depends on shapes (Conv kernel_shape,
  auto_pad SAME_* pads, Transpose perm, ReduceMean/Squeeze axes, Pad axes) are made explicit
  once the shapes are known; afterwards auto_pad is "NOTSET".
"""

from __future__ import annotations

import numpy as np

from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import ATTR_INPUTS, Inference, is_int, known, norm_axis, resolve_auto_pad

_FLOAT_ATTRS = {"min", "max", "constant_value", "ratio"}
_FLOAT_LIST_ATTRS = {"scales", "roi"}
_BOOL_ATTRS = {"training_mode"}


def attr_from_tensor(attr: str, arr: np.ndarray):
    """The attribute value carried by a constant input tensor (ints list, float or bool)."""
    arr = np.asarray(arr)
    if attr in _FLOAT_ATTRS:
        return float(arr.reshape(-1)[0]) if arr.size else None
    if attr in _BOOL_ATTRS:
        return bool(arr.reshape(-1)[0]) if arr.size else False
    if attr in _FLOAT_LIST_ATTRS:
        return [float(v) for v in arr.reshape(-1).astype(np.float32)]
    return [int(v) for v in arr.reshape(-1)]


def promote_const_inputs(node: Node, constants: dict[str, np.ndarray]) -> bool:
    """Move constant attribute inputs of `node` into attrs; return True if anything moved."""
    table = ATTR_INPUTS.get(node.op)
    if not table:
        return False
    changed = False
    for pos, attr in table.items():
        if pos < len(node.inputs) and node.inputs[pos] and node.inputs[pos] in constants:
            value = attr_from_tensor(attr, constants[node.inputs[pos]])
            if value is not None:
                node.attrs[attr] = value
            node.inputs[pos] = ""
            changed = True
        elif pos < len(node.inputs) and node.inputs[pos]:
            node.attrs.setdefault(attr, None)
    while node.inputs and not node.inputs[-1]:
        node.inputs.pop()
    return changed


def dynamic_attr_inputs(node: Node) -> list[str]:
    """Names of run-time tensors still feeding attribute slots of `node`."""
    table = ATTR_INPUTS.get(node.op, {})
    return [node.inputs[p] for p in table if p < len(node.inputs) and node.inputs[p]]


def _window_defaults(a: dict, nk: int) -> None:
    if a.get("strides") is None:
        a["strides"] = [1] * nk
    if a.get("dilations") is None:
        a["dilations"] = [1] * nk
    if a.get("pads") is None:
        a["pads"] = [0] * (2 * nk)


def fill_shape_attrs(graph: Graph, inf: Inference) -> bool:
    """Make shape-dependent attribute defaults explicit where shapes allow; True if changed."""
    changed = False
    for n in graph.nodes:
        a = n.attrs
        x = inf.shapes.get(n.inputs[0]) if n.inputs and n.inputs[0] else None
        if n.op == "Conv" and a.get("kernel_shape") is None:
            w = inf.shapes.get(n.inputs[1])
            if w is not None and all(is_int(d) for d in w[2:]):
                a["kernel_shape"] = [int(d) for d in w[2:]]
                changed = True
        if n.op in ("Conv", "MaxPool", "AveragePool") and a.get("kernel_shape") is not None:
            before = dict(a)
            _window_defaults(a, len(a["kernel_shape"]))
            if a.get("auto_pad", "NOTSET") != "NOTSET" and x is not None:
                pads = resolve_auto_pad(a, x[2:])
                if pads is not None:
                    a["pads"], a["auto_pad"] = pads, "NOTSET"
            changed |= before != a
        elif n.op == "Transpose" and a.get("perm") is None and x is not None:
            a["perm"] = list(range(len(x)))[::-1]
            changed = True
        elif n.op in ("ReduceMean", "ReduceSum", "ReduceL2") and a.get("axes") is None and len(n.inputs) < 2 and x is not None:
            a["axes"] = [] if a.get("noop_with_empty_axes", 0) else list(range(len(x)))
            changed = True
        elif n.op == "Squeeze" and a.get("axes") is None and len(n.inputs) < 2 and known(x):
            a["axes"] = [i for i, d in enumerate(x) if d == 1]
            changed = True
        elif n.op == "Pad" and a.get("axes") is not None and a.get("pads") is not None and x is not None:
            r = len(x)
            pads = [0] * (2 * r)
            axes = a["axes"]
            for j, ax in enumerate(axes):
                ax = norm_axis(ax, r)
                pads[ax], pads[ax + r] = a["pads"][j], a["pads"][j + len(axes)]
            a["pads"], a["axes"] = pads, None
            changed = True
    return changed
