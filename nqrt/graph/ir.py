"""Float intermediate representation: the graph between ONNX import and quantization.

Invariants (checked by `Graph.validate`):
  * every tensor name is produced exactly once: by a graph input, a constant, or one node output;
  * `nodes` is in topological order;
  * node ops use ONNX names and ONNX semantics, with every attribute present (defaults filled
    in by the importer) and inputs that ONNX passes as constant tensors (Reshape's shape,
    Clip's min/max, Squeeze's axes, ...) moved into attributes;
  * a node may carry `attrs["act"] = (lo, hi)`: a fused clamp applied to its output
    (Relu -> (0, inf), Relu6/Clip -> (lo, hi)); the reference executor applies it.
Shapes: a dim is an int, or a str for a symbolic dim (e.g. "N"), or None when unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Dim = int | str | None


@dataclass
class ValueInfo:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    name: str = ""

    def __repr__(self) -> str:  # compact, for error messages and debugging
        return f"{self.op}({', '.join(self.inputs)} -> {', '.join(self.outputs)}){' ' + self.name if self.name else ''}"


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    value_info: dict[str, ValueInfo] = field(default_factory=dict)   # shapes where known
    opset: int = 13
    metadata: dict = field(default_factory=dict)                     # e.g. source sha256

    # -- queries --------------------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def is_const(self, name: str) -> bool:
        return name in self.constants

    def output_names(self) -> list[str]:
        return [v.name for v in self.outputs]

    def validate(self) -> None:
        """Raise ValueError if an invariant above does not hold."""
        defined = {v.name for v in self.inputs} | set(self.constants)
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in defined:
                    raise ValueError(f"node {n!r} reads {i!r} before it is produced")
            for o in n.outputs:
                if o in defined:
                    raise ValueError(f"tensor {o!r} produced twice")
                defined.add(o)
        for v in self.outputs:
            if v.name not in defined:
                raise ValueError(f"graph output {v.name!r} is never produced")
