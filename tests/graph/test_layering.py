"""nqrt.graph may import only nqrt.errors, nqrt.qmath, nqrt.format and itself (format <- graph <- quant)."""

from __future__ import annotations

import ast
import pathlib

import nqrt.graph

ALLOWED = ("nqrt.graph", "nqrt.errors", "nqrt.qmath", "nqrt.format")


def test_graph_layer_imports_flow_one_way():
    root = pathlib.Path(nqrt.graph.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) >= 10
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            bad += [f"{f.name}: {n}" for n in names
                    if (n == "nqrt" or n.startswith("nqrt.")) and not n.startswith(ALLOWED)]
    assert not bad, bad
