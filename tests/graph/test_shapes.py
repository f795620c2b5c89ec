"""Shape propagation with symbolic dims, and shape values through Shape chains."""

from __future__ import annotations

import numpy as np
import pytest

from nqrt.graph.onnx_import import load_onnx
from nqrt.graph.shapes import (broadcast, infer, infer_shapes, reshape_shape, same_pads, sym_dim, sym_parts,
                               window_output_dim)

from _graph_helpers import Builder


def test_window_output_dim_ceil_mode_drops_window_starting_in_end_padding():
    assert window_output_dim(5, 2, 2, 1, 1, ceil_mode=0) == 3
    assert window_output_dim(5, 2, 2, 1, 1, ceil_mode=1) == 3     # 4th window would start at pad
    assert window_output_dim(6, 3, 2, 1, 1, ceil_mode=1) == 4
    assert window_output_dim(6, 3, 2, 1, 1, ceil_mode=0) == 3
    assert window_output_dim(9, 3, 1, 0, 0, dilation=3) == 3
    assert window_output_dim("H", 3, 1, 1, 1) is None


def test_same_pads_upper_lower():
    assert same_pads(7, 3, 2, 1, upper=True) == (1, 1)
    assert same_pads(8, 3, 2, 1, upper=True) == (0, 1)
    assert same_pads(8, 3, 2, 1, upper=False) == (1, 0)
    assert same_pads(5, 4, 1, 1, upper=True) == (1, 2)


def test_broadcast_and_reshape_with_symbols():
    assert broadcast(("N", 3, 1, 1), (3, 4, 1)) == ("N", 3, 4, 1)
    assert broadcast(("N", 1), ("M", 5)) == (None, 5)
    with pytest.raises(ValueError):
        broadcast((2, 3), (4, 3))
    assert reshape_shape(("N", 3, 4), [0, -1]) == ("N", 12)
    assert reshape_shape(("N", 3, 4), [-1, 12]) == ("N", 12)
    assert reshape_shape(("N", 3, 4), [-1, 6]) == ("2*N", 6)      # a symbolic product
    assert reshape_shape(("N", 3, 4), [-1, 24]) == (None, 24)     # N / 2: not a monomial
    assert reshape_shape((2, 3, 4), [4, 0, -1]) == (4, 3, 2)


def test_infer_symbolic_through_a_small_cnn():
    b = Builder()
    c = b.op("Conv", ["x", b.weight(4, 3, 3, 3)], strides=[2, 2], pads=[1, 1, 1, 1])
    p = b.op("MaxPool", [c], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    f = b.op("Flatten", [p])
    cat = b.op("Concat", [p, p], axis=1)
    g = load_onnx(b.model([("x", ["N", 3, 9, 9])], [f, cat]))
    shapes = infer_shapes(g)
    assert shapes[c] == ("N", 4, 5, 5) and shapes[p] == ("N", 4, 3, 3)
    assert shapes[f] == ("N", 36) and shapes[cat] == ("N", 8, 3, 3)
    assert infer_shapes(g, {"x": (2, 3, 9, 9)})[f] == (2, 36)


def test_slice_keeps_the_symbolic_batch_and_slices_known_axes():
    b = Builder()
    half = b.op("Slice", ["x", b.const([2], np.int64), b.const([5], np.int64), b.const([1], np.int64)])
    batch = b.op("Slice", ["x", b.const([0], np.int64), b.const([1], np.int64), b.const([0], np.int64)])
    g = load_onnx(b.model([("x", ["N", 6, 4, 4])], [half, batch]))
    shapes = infer_shapes(g)
    assert shapes[half] == ("N", 3, 4, 4)
    assert shapes[batch] == (None, 6, 4, 4)         # slicing the symbolic axis itself


def test_shape_values_through_gather_unsqueeze_concat():
    b = Builder()
    s = b.op("Shape", ["x"])
    n = b.op("Gather", [s, b.const(0, np.int64)], axis=0)
    u = b.op("Unsqueeze", [n, b.const([0], np.int64)])
    sl = b.op("Slice", [s, b.const([2], np.int64), b.const([4], np.int64)])
    prod = b.op("Mul", [b.op("Gather", [s, b.const([2], np.int64)]), b.op("Gather", [s, b.const([3], np.int64)])])
    cat = b.op("Concat", [u, sl, prod], axis=0)
    r = b.op("Reshape", ["x", b.op("Concat", [u, b.const([-1], np.int64)], axis=0)])
    g = load_onnx(b.model([("x", ["N", 3, 4, 5])], [cat, r]))
    inf = infer(g)
    assert inf.values[s] == ["N", 3, 4, 5]
    assert inf.values[cat] == ["N", 4, 5, 20] and inf.shapes[cat] == (4,)
    assert inf.shapes[r] == ("N", 60) and inf.dtypes[cat] == "int64"


def test_symbolic_products_are_canonical_monomials():
    assert sym_parts("64*N") == (64, {"N": 1}) and sym_parts("N") == (1, {"N": 1})
    assert sym_dim(1, sym_parts("N")[1]) == "N"
    assert sym_dim(6, sym_parts("S*N")[1]) == "6*N*S"          # symbols sorted
    assert sym_dim(5, sym_parts("")[1] - sym_parts("")[1]) == 5
    assert sym_dim(0, sym_parts("N")[1]) is None                 # not a size


def test_window_partition_keeps_the_batch_through_the_round_trip():
    """Swin's window partition [N, 8, 8, C] -> [N·4, 4, 4, C] and its reverse (constant
    targets with -1, as the dynamo exporter writes them): the batch comes back as N, and
    shape arithmetic on the window count (Div by 4, Mod 4) stays exact."""
    b = Builder()
    parts = b.op("Reshape", ["x", b.const([-1, 2, 4, 2, 4, 3], np.int64)])
    wins = b.op("Reshape", [b.op("Transpose", [parts], perm=[0, 1, 3, 2, 4, 5]),
                            b.const([-1, 4, 4, 3], np.int64)])
    back = b.op("Reshape", [wins, b.const([-1, 2, 2, 4, 4, 3], np.int64)])
    merged = b.op("Reshape", [b.op("Transpose", [back], perm=[0, 1, 3, 2, 4, 5]), b.const([-1, 8, 8, 3], np.int64)])
    count = b.op("Gather", [b.op("Shape", [wins]), b.const(0, np.int64)], axis=0)
    batch = b.op("Div", [count, b.const(4, np.int64)])
    rem = b.op("Mod", [count, b.const(2, np.int64)])
    odd = b.op("Div", [count, b.const(8, np.int64)])
    g = load_onnx(b.model([("x", ["N", 8, 8, 3])], [merged, batch, rem, odd]))
    inf = infer(g)
    assert inf.shapes[wins] == ("4*N", 4, 4, 3)
    assert inf.shapes[back] == ("N", 2, 2, 4, 4, 3) and inf.shapes[merged] == ("N", 8, 8, 3)
    assert inf.values[count] == ["4*N"] and inf.values[batch] == ["N"] and inf.values[rem] == [0]
    assert inf.values[odd] == [None]                              # N / 2: unknown
    flat = b.op("Flatten", [wins], axis=2)
    g = load_onnx(b.model([("x", ["N", 8, 8, 3])], [flat]))
    assert infer_shapes(g)[flat] == ("16*N", 12)                 # [4·N, 4] flattened
