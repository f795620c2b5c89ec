"""In-memory form of a `.nq` document (formats/nq-v1.md, section 2).

`NqModel` is what the converter builds, the writer serializes, the reader returns and the
runtime plans from.  Constant data is held as numpy arrays of the declared dtype and shape;
run-time tensors have `data is None`.  Shapes use int dims or str symbols.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Dim = int | str


@dataclass
class Quant:
    scale: list[float]                 # float32 values; len 1 (per-tensor) or shape[axis]
    zero_point: list[int]
    axis: int | None = None

    @property
    def per_tensor(self) -> bool:
        return self.axis is None


@dataclass
class NqTensor:
    name: str
    dtype: str                         # a key of schema.DTYPES
    shape: tuple[Dim, ...]
    quant: Quant | None = None
    data: np.ndarray | None = None     # constant data (dtype/shape as declared) or None

    @property
    def is_const(self) -> bool:
        return self.data is not None


@dataclass
class NqNode:
    op: str                            # a key of schema.OPS
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    name: str = ""


@dataclass
class NqIO:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"


@dataclass
class NqModel:
    graph_inputs: list[NqIO]
    graph_outputs: list[NqIO]
    tensors: dict[str, NqTensor]       # insertion order is the document order
    nodes: list[NqNode]
    metadata: dict = field(default_factory=dict)
    producer: dict = field(default_factory=lambda: {"name": "nqrt", "version": "0.1.0"})
    version: tuple[int, int] = (1, 0)  # the version read from / to be written to the file

    def tensor(self, name: str) -> NqTensor:
        return self.tensors[name]

    def qparams(self, name: str) -> tuple[float, int]:
        """(scale, zero_point) of a per-tensor quantized tensor."""
        q = self.tensors[name].quant
        if q is None or q.axis is not None:
            raise ValueError(f"tensor {name!r} is not per-tensor quantized")
        return float(q.scale[0]), int(q.zero_point[0])
