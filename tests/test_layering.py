"""The package's layers import one way: qmath/errors <- format <- graph <- quant <- converter;
qmath <- kernels <- runtime (+ format); numba_config (Numba's cache dir and threading
layer) under everything that compiles; cli, inspect and examples on top.  The runtime never
needs onnx.  This test parses every module's imports (no execution) and fails on any edge
that goes the other way."""

from __future__ import annotations

import ast
from pathlib import Path

import nqrt

PKG = Path(nqrt.__file__).parent

# layer -> nqrt layers it may import (itself always allowed)
ALLOWED = {
    "numba_config": set(),    # imported before any cached function is decorated
    "errors": set(),
    "qmath": set(),
    "format": {"errors", "qmath"},
    "graph": {"errors", "qmath", "format", "numba_config"},
    "quant": {"errors", "qmath", "format", "graph"},
    "converter": {"errors", "qmath", "format", "graph", "quant"},
    "kernels": {"errors", "qmath", "numba_config"},
    "runtime": {"errors", "qmath", "format", "kernels", "numba_config"},
}
THIRD_PARTY_FORBIDDEN = {"runtime": {"onnx", "onnxruntime"}, "kernels": {"onnx", "onnxruntime"},
                         "format": {"onnx", "numba"}}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # resolve "from ..graph import x" against this file's package
            package = ["nqrt", *path.relative_to(PKG).parent.parts]
            base = package[: len(package) - (node.level - 1)]
            yield ".".join(base + ([node.module] if node.module else []))


def test_imports_flow_one_way():
    violations = []
    checked = 0
    for path in sorted(PKG.rglob("*.py")):
        layer = _layer(path)
        if layer not in ALLOWED:
            continue  # top-level glue: cli, inspect, examples, __init__
        checked += 1
        for mod in _imports(path):
            parts = mod.split(".")
            if parts[0] == "nqrt" and len(parts) > 1:
                target = parts[1]
                if target != layer and target not in ALLOWED[layer]:
                    violations.append(f"{path.relative_to(PKG)} imports {mod}")
            if parts[0] in THIRD_PARTY_FORBIDDEN.get(layer, ()):
                violations.append(f"{path.relative_to(PKG)} imports {mod}")
    assert checked > 5
    assert not violations, "layering violations:\n" + "\n".join(violations)
