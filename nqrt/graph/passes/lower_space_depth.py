"""Lower DepthToSpace (PixelShuffle, super-resolution nets) and SpaceToDepth (PixelUnshuffle)
to the Reshape -> Transpose -> Reshape that the ONNX spec defines them by:

  DepthToSpace DCR: [N, b, b, C/b², H, W] -> perm (0, 3, 4, 1, 5, 2) -> [N, C/b², H·b, W·b]
  DepthToSpace CRD: [N, C/b², b, b, H, W] -> perm (0, 1, 4, 2, 5, 3) -> [N, C/b², H·b, W·b]
  SpaceToDepth:     [N, C, H/b, b, W/b, b] -> perm (0, 3, 5, 1, 2, 4) -> [N, C·b², H/b, W/b]

Once quantized these move bytes only (same scale); the planner relabels the Reshapes and
runs the Transpose as one byte transpose of the channels-last tensor.  Needs the input's C,
H, W (the batch stays symbolic: -1); nodes whose input shape is unknown are left alone (the
converter reports them).  A channel count not divisible by b² (DepthToSpace) or a spatial
size not divisible by b (SpaceToDepth) is a malformed model.
"""

from __future__ import annotations

from nqrt.errors import FormatError
from nqrt.graph.edit import NameGen
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import infer, is_int

OPS = ("DepthToSpace", "SpaceToDepth")


def chain(op: str, mode: str, b: int, c: int, h: int, w: int) -> tuple[list[int], list[int], list[int]]:
    """(split shape, perm, merged shape) of the op on a [N, c, h, w] input (N = -1)."""
    if op == "DepthToSpace":
        co = c // (b * b)
        if mode == "DCR":
            return [-1, b, b, co, h, w], [0, 3, 4, 1, 5, 2], [-1, co, h * b, w * b]
        return [-1, co, b, b, h, w], [0, 1, 4, 2, 5, 3], [-1, co, h * b, w * b]
    return [-1, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4], [-1, c * b * b, h // b, w // b]


def run(graph: Graph) -> Graph:
    if not any(n.op in OPS for n in graph.nodes):
        return graph
    inf = infer(graph)
    names = NameGen(graph)
    out: list[Node] = []
    for node in graph.nodes:
        xs = inf.shapes.get(node.inputs[0]) if node.inputs else None
        if node.op not in OPS or xs is None or len(xs) != 4 or not all(is_int(d) for d in xs[1:]):
            out.append(node)
            continue
        label = node.name or node.outputs[0]
        b = int(node.attrs["blocksize"])
        c, h, w = (int(d) for d in xs[1:])
        if node.op == "DepthToSpace" and c % (b * b):
            raise FormatError(f"DepthToSpace node {label}: {c} channels not divisible by blocksize² = {b * b}")
        if node.op == "SpaceToDepth" and (h % b or w % b):
            raise FormatError(f"SpaceToDepth node {label}: spatial size {h}x{w} not divisible by blocksize {b}")
        split, perm, merged = chain(node.op, node.attrs.get("mode", "DCR"), b, c, h, w)
        y = node.outputs[0]
        t1, t2 = names(f"{y}_blocks"), names(f"{y}_moved")
        out += [Node("Reshape", [node.inputs[0]], [t1], {"shape": split, "allowzero": 0}, f"{label}/split"),
                Node("Transpose", [t1], [t2], {"perm": perm}, f"{label}/move"),
                Node("Reshape", [t2], [y], {"shape": merged, "allowzero": 0}, label)]
    graph.nodes = out
    return graph
