"""Structure checks after each pass (op counts, rewired tensors), plus numerics where cheap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nqrt import UnsupportedOpError
from nqrt.graph import reference
from nqrt.graph.onnx_import import load_onnx
from nqrt.graph.passes import (canonicalize, dead_code, fold_batchnorm, fold_constants,
                               fuse_activation, optimize, remove_identity)

from _graph_helpers import Builder, assert_matches_ort, decomposed_layernorm, op_counts


def _bn(b, x, c):
    return b.op("BatchNormalization", [x] + [b.weight(c, low=0.5, high=1.5) for _ in range(4)])


def test_remove_identity_keeps_output_names():
    b = Builder(opset=13)
    c = b.op("Conv", ["x", b.weight(2, 3, 1, 1)])
    i = b.op("Identity", [c])
    d = b.op("Dropout", [i])
    k = b.op("Cast", [d], to=1)                       # float32 -> float32
    i2 = b.op("Identity", ["x"])                      # graph input -> graph output: must stay
    g = load_onnx(b.model([("x", [1, 3, 2, 2])], [k, i2]))
    g = remove_identity.run(g)
    assert op_counts(g) == {"Conv": 1, "Identity": 1}
    assert g.nodes[0].outputs == [k]
    g.validate()


def test_fold_constants_constant_of_shape_and_unsqueeze():
    b = Builder(opset=9)
    w = b.op("ConstantOfShape", [b.const([4], np.int64)], value=__import__("onnx").helper.make_tensor("v", 1, [1], [0.5]))
    s = b.op("Unsqueeze", [w], axes=[1, 2])
    m = b.op("Mul", [s, b.const(2.0)])
    y = b.op("Mul", ["x", m])
    g = fold_constants.run(load_onnx(b.model([("x", [1, 4, 3, 3])], [y])))
    assert op_counts(g) == {"Mul": 1}
    c = g.constants[g.nodes[0].inputs[1]]
    assert c.shape == (4, 1, 1) and np.all(c == 1.0)


def test_fold_constants_shape_chain_with_symbolic_batch():
    b = Builder()
    s = b.op("Shape", ["x"])
    n = b.op("Gather", [s, b.const(0, np.int64)], axis=0)
    c1 = b.op("Gather", [s, b.const(1, np.int64)], axis=0)
    u = b.op("Unsqueeze", [n, b.const([0], np.int64)])
    u1 = b.op("Unsqueeze", [c1, b.const([0], np.int64)])
    shape = b.op("Concat", [u, u1, b.const([-1], np.int64)], axis=0)
    r = b.op("Reshape", ["x", shape])
    g = load_onnx(b.model([("x", ["N", 3, 4, 5])], [r]))
    g = dead_code.run(fold_constants.run(g))
    assert op_counts(g) == {"Reshape": 1}
    assert g.nodes[0].attrs["shape"] == [0, 3, -1]       # 3 is known: it stays an int


def test_unresolvable_shape_computation_reports_shape():
    b = Builder()
    s = b.op("Shape", ["x"])
    n = b.op("Gather", [s, b.const([1, 0], np.int64)], axis=0)   # [M, N]: neither copies x
    shape = b.op("Concat", [n, b.const([-1], np.int64)], axis=0)
    r = b.op("Reshape", ["x", shape])
    g = load_onnx(b.model([("x", ["N", "M", 4])], [b.op("Transpose", [r], perm=[2, 1, 0])]))
    with pytest.raises(UnsupportedOpError, match=r"Shape \(dynamic shape computation not foldable"):
        optimize(g)


def test_canonicalize_matmul_and_gemm():
    b = Builder()
    w1 = b.weight(6, 4)
    m = b.op("MatMul", ["x", w1])
    g1 = b.op("Gemm", [m, b.weight(4, 3), b.const([1.0, 2.0, 3.0])], alpha=2.0, beta=0.5)
    g = canonicalize.run(load_onnx(b.model([("x", ["N", 6])], [g1])))
    assert op_counts(g) == {"Gemm": 2}
    for n, (nn, k) in zip(g.nodes, [(4, 6), (3, 4)]):
        assert n.attrs == {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}
        assert g.constants[n.inputs[1]].shape == (nn, k) and g.constants[n.inputs[2]].shape == (nn,)
    np.testing.assert_allclose(g.constants[g.nodes[1].inputs[2]], [0.5, 1.0, 1.5])
    np.testing.assert_array_equal(g.constants[g.nodes[0].inputs[2]], np.zeros(4))


def test_canonicalize_conv_gets_zero_bias():
    b = Builder()
    y = b.op("Conv", ["x", b.weight(2, 3, 1, 1)])
    g = canonicalize.run(load_onnx(b.model([("x", [1, 3, 2, 2])], [y])))
    (n,) = g.nodes
    assert len(n.inputs) == 3 and g.constants[n.inputs[2]].tolist() == [0.0, 0.0]


def test_gemm_with_runtime_b_unsupported():
    b = Builder()
    y = b.op("Gemm", ["x", "x2"], name="mm")
    g = load_onnx(b.model([("x", [2, 3]), ("x2", [3, 2])], [y]))
    with pytest.raises(UnsupportedOpError, match="Gemm with a run-time B") as ei:
        optimize(g)
    assert ei.value.ops == {"Gemm": ["mm"]}


def test_matmul_of_two_runtime_inputs_stays_matmul():
    """Attention's Q·Kᵀ: kept as MatMul for the converter's QMatMul (not a Gemm)."""
    b = Builder()
    y = b.op("MatMul", ["x", "x2"], name="mm")
    g = optimize(load_onnx(b.model([("x", ["N", 2, 3]), ("x2", ["N", 3, 2])], [y])))
    assert [n.op for n in g.nodes] == ["MatMul"]


def test_fold_batchnorm_into_conv_and_gemm():
    b = Builder()
    c = _bn(b, b.op("Conv", ["x", b.weight(4, 3, 3, 3)]), 4)
    f = b.op("Flatten", [c])
    y = _bn(b, b.op("Gemm", [f, b.weight(5, 16), b.weight(5)], transB=1), 5)
    m = b.model([("x", ["N", 3, 4, 4])], [y])
    g = canonicalize.run(load_onnx(m))
    assert op_counts(g)["BatchNormalization"] == 2
    g = fold_batchnorm.run(g)
    assert op_counts(g) == {"Conv": 1, "Flatten": 1, "Gemm": 1}
    assert g.nodes[-1].outputs == [y]
    assert_matches_ort(m, {"x": (3, 4, 4)})


def test_batchnorm_with_shared_producer_becomes_depthwise_conv():
    b = Builder()
    c = b.op("Conv", ["x", b.weight(4, 3, 1, 1)])
    y1 = _bn(b, c, 4)
    y2 = b.op("Add", [c, y1])                          # c has two consumers: no fold
    m = b.model([("x", ["N", 3, 3, 3])], [y2])
    g = fold_batchnorm.run(canonicalize.run(load_onnx(m)))
    assert op_counts(g) == {"Conv": 2, "Add": 1}
    dw = g.nodes[1]
    assert dw.attrs["group"] == 4 and dw.attrs["kernel_shape"] == [1, 1]
    assert g.constants[dw.inputs[1]].shape == (4, 1, 1, 1)
    assert_matches_ort(m, {"x": (3, 3, 3)})


def test_fuse_activation_rules():
    b = Builder(opset=13)
    c1 = b.op("Conv", ["x", b.weight(2, 3, 1, 1)])
    r1 = b.op("Relu", [c1])                                       # fuses
    r2 = b.op("Clip", [r1, b.const(-1.0), b.const(6.0)])          # intersects: (0, 6)
    c2 = b.op("Conv", ["x", b.weight(2, 3, 1, 1)])
    r3 = b.op("Relu", [c2])                                       # c2 also an output: no fusion
    cat = b.op("Concat", [r2, r3], axis=1)
    r4 = b.op("Relu", [cat])                                      # Concat: not fusable
    g = load_onnx(b.model([("x", [1, 3, 2, 2])], [r4, c2]))
    g = fuse_activation.run(g)
    assert op_counts(g) == {"Conv": 2, "Relu": 2, "Concat": 1}
    assert g.nodes[0].attrs["act"] == (0.0, 6.0) and g.nodes[0].outputs == [r2]
    assert "act" not in g.nodes[1].attrs


def test_dead_code_removes_unused_nodes_and_constants():
    b = Builder()
    c = b.op("Conv", ["x", b.weight(2, 3, 1, 1)])
    b.op("Conv", [c, b.weight(2, 2, 1, 1)])                      # unused
    b.const([1.0, 2.0])                                           # unused
    g = dead_code.run(load_onnx(b.model([("x", [1, 3, 2, 2])], [c])))
    assert op_counts(g) == {"Conv": 1} and len(g.constants) == 1


def test_optimize_input_shapes_override_and_value_info():
    b = Builder()
    y = b.op("Conv", ["x", b.weight(2, 3, 3, 3)], auto_pad="SAME_UPPER")
    g = load_onnx(b.model([("x", ["N", 3, "H", "W"])], [y]))
    assert g.nodes[0].attrs["auto_pad"] == "SAME_UPPER"            # spatial dims unknown at import
    g = optimize(g, {"x": ("N", 3, 6, 6)})
    assert g.nodes[0].attrs["auto_pad"] == "NOTSET" and g.nodes[0].attrs["pads"] == [1, 1, 1, 1]
    assert g.value_info[y].shape == ("N", 2, 6, 6)


def test_reference_observe_sees_every_tensor_and_act_clamps():
    b = Builder()
    c = b.op("Conv", ["x", b.weight(2, 3, 1, 1)])
    y = b.op("Clip", [c], min=-0.25, max=0.25)
    g = optimize(load_onnx(b.model([("x", [1, 3, 4, 4])], [y])))
    assert op_counts(g) == {"Conv": 1} and g.nodes[0].attrs["act"] == (-0.25, 0.25)
    seen = {}
    out = reference.run(g, {"x": np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)},
                        observe=lambda n, a: seen.__setitem__(n, a.shape))
    assert seen == {"x": (1, 3, 4, 4), y: (1, 2, 4, 4)}
    assert out[y].max() <= 0.25 and out[y].min() >= -0.25 and np.abs(out[y]).max() == 0.25
    assert math.isclose(float(np.abs(out[y]).max()), 0.25)


def test_activation_after_data_movement_fuses_into_the_producer():
    """Relu(Reshape(Transpose(Conv(x)))) -> the Conv's act; not when a moved tensor has a
    second reader."""
    b = Builder(opset=13)
    c = b.op("Conv", ["x", b.weight(4, 3, 1, 1)])
    t = b.op("Transpose", [c], perm=[0, 2, 3, 1])
    y = b.op("Relu", [b.op("Reshape", [t, b.const([0, -1], np.int64)])])
    c2 = b.op("Conv", ["x", b.weight(4, 3, 1, 1)])
    t2 = b.op("Transpose", [c2], perm=[0, 2, 3, 1])
    y2 = b.op("Add", [b.op("Relu", [t2]), t2])                      # t2 read twice: no fusion
    g = assert_matches_ort(b.model([("x", ["N", 3, 2, 3])], [y, y2]), {"x": (3, 2, 3)})
    assert op_counts(g)["Relu"] == 1
    acts = [n.attrs.get("act") for n in g.nodes if n.op == "Conv"]
    assert sorted(acts, key=str) == sorted([(0.0, float("inf")), None], key=str)


def _swin_style_pad(b: Builder, x: str, window: int) -> str:
    """torchvision Swin's window padding, as exported: pad_r = (window − W % window) % window
    from Shape(x), pads assembled by Concat / Reshape / Slice / Transpose (F.pad's export)."""
    w = b.op("Gather", [b.op("Shape", [x]), b.const(2, np.int64)], axis=0)
    win = b.const(window, np.int64)
    pad = b.op("Mod", [b.op("Sub", [win, b.op("Mod", [w, win])]), win])
    flat = b.op("Concat", [b.const([0, 0, 0], np.int64), b.op("Unsqueeze", [pad, b.const([0], np.int64)]),
                           b.const([0, 0, 0, 0], np.int64)], axis=0)       # [4, 2] begin/end pairs
    pairs = b.op("Reshape", [flat, b.const([-1, 2], np.int64)])
    rev = b.op("Slice", [pairs, b.const([-1], np.int64), b.const([-(2**63) + 1], np.int64),
                         b.const([0], np.int64), b.const([-1], np.int64)])
    pads = b.op("Reshape", [b.op("Transpose", [rev], perm=[1, 0]), b.const([-1], np.int64)])
    return b.op("Pad", [x, pads])


def test_fold_constants_resolves_a_chain_of_shape_dependent_pads():
    """Each block's pads depend on the previous block's Pad output shape: 14 blocks, more than
    the pipeline's rounds, fold in one fold_constants run (it sweeps until nothing changes);
    the integer Mod of shape values is inferred (dim 2: 14 -> 15 -> 21 -> 25 ...)."""
    b = Builder(opset=17)
    t = "x"
    for k in range(14):
        t = b.op("Relu", [_swin_style_pad(b, t, 7 if k % 2 else 5)])
    m = b.model([("x", ["N", 3, 14, 15])], [t])
    g = dead_code.run(fold_constants.run(load_onnx(m)))
    assert op_counts(g) == {"Pad": 14, "Relu": 14}
    pads = [n.attrs["pads"] for n in g.nodes if n.op == "Pad"]
    assert pads[:3] == [[0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 6, 0], [0, 0, 0, 0, 0, 0, 4, 0]]
    assert_matches_ort(m, {"x": (3, 14, 15)}, batches=(2,))


def test_reshape_after_an_output_tree_concat_moves_above_it():
    """Reshape(Concat(a, b, axis=-1)) feeding the output Concat -> Concat(Reshape(a), Reshape(b))
    (same values, ORT-checked); not when the Reshape splits the concat axis, nor when the
    result is read by a non-Concat."""
    from nqrt.graph.passes import sink_output_moves

    def model(target, tail_op=None):
        b = Builder(opset=17)
        f = b.op("Conv", ["x", b.weight(12, 3, 1, 1), b.weight(12)])              # [N, 12, 4, 4]
        t = b.op("Transpose", [b.op("Reshape", [f, b.const([-1, 2, 6, 4, 4], np.int64)])],
                 perm=[0, 1, 3, 4, 2])                                            # [N, 2, 4, 4, 6]
        a, c = b.op("Split", [t, b.const([2, 4], np.int64)], n_out=2, axis=4)
        cat = b.op("Concat", [b.op("Sigmoid", [a]), b.op("Mul", [c, b.const(np.float32(30.0))])], axis=4)
        r = b.op("Reshape", [cat, b.const(target, np.int64)])
        if tail_op:
            r = b.op(tail_op, [r])
        other = b.op("Reshape", [f, b.const([0, -1] + target[2:], np.int64)])
        return b.model([("x", ["N", 3, 4, 4])], [b.op("Concat", [r, other], axis=1)])

    m = model([-1, 32, 6])
    g = assert_matches_ort(m, {"x": (3, 4, 4)})
    rs = [n for n in g.nodes if n.op == "Reshape"]
    assert sorted(n.attrs["shape"] for n in rs[-3:-1]) == [[-1, 32, 2], [-1, 32, 4]]
    cats = [n for n in g.nodes if n.op == "Concat"]
    assert len(cats) == 2 and cats[0].attrs["axis"] == 2
    for target, tail in (([-1, 32, 2, 3], None), ([-1, 32, 6], "Relu")):
        m = model(target, tail)
        assert_matches_ort(m, {"x": (3, 4, 4)}, optimized=False)      # a valid model
        g = sink_output_moves.run(fold_constants.run(load_onnx(m)))
        prod = {o: n.op for n in g.nodes for o in n.outputs}
        cat = next(n for n in g.nodes if n.op == "Concat" and len(n.inputs) == 2
                   and prod.get(n.inputs[0]) == "Sigmoid")
        assert cat.attrs["axis"] == 4, target                    # left in place


def test_decomposed_layernorm_fuses_and_near_misses_stay():
    """Opset-14 LayerNorm patterns -> LayerNormalization (ORT-checked): Pow / Div with the
    affine, Mul(d, d) / Reciprocal over the last two axes without it; left alone: a mean over
    a non-trailing axis, a centered tensor also read outside the pattern; an affine varying
    over a non-normalized dim stays a Mul after the fused node."""
    def conv(b):
        return b.op("Conv", ["x", b.weight(6, 3, 1, 1), b.weight(6)])            # [N, 6, 5, 4]

    b = Builder(opset=14)
    f = conv(b)
    y1 = decomposed_layernorm(b, f, 4)
    y2 = decomposed_layernorm(b, f, 4, square="Mul", divide="Reciprocal", affine=False, axes=(-2, -1))
    y3 = decomposed_layernorm(b, f, 4, axes=(1,))
    g = assert_matches_ort(b.model([("x", ["N", 3, 5, 4])], [y1, y2, y3]), {"x": (3, 5, 4)})
    lns = [n for n in g.nodes if n.op == "LayerNormalization"]
    assert sorted(n.attrs["axis"] for n in lns) == [2, 3] and op_counts(g)["Div"] == 1

    def manual(b, f, extra_use):
        d = b.op("Sub", [f, b.op("ReduceMean", [f], axes=[-1])])
        v = b.op("ReduceMean", [b.op("Pow", [d, b.const(np.float32(2.0))])], axes=[-1])
        n = b.op("Div", [d, b.op("Sqrt", [b.op("Add", [v, b.const(np.float32(1e-5))])])])
        outs = [b.op("Mul", [n, b.weight(5, 1)])]                        # varies over H
        return outs + ([b.op("Relu", [d])] if extra_use else [])

    for extra_use in (True, False):
        b = Builder(opset=14)
        m = b.model([("x", ["N", 3, 5, 4])], manual(b, conv(b), extra_use))
        g = assert_matches_ort(m, {"x": (3, 5, 4)})
        counts = op_counts(g)
        if extra_use:
            assert "LayerNormalization" not in counts
        else:
            assert counts.get("LayerNormalization") == 1 and counts.get("Mul") == 1


def _as_strided_model(mul: int, channels: int = 6):
    """The dynamo exporter's as_strided of pooled features [N, C, 1, 1]: Gather(flat, idx) with
    idx = Unsqueeze(Range(0, N)·mul) + arange(C) reshaped [1, C, 1, 1]."""
    b = Builder(opset=18)
    f = b.op("GlobalAveragePool", [b.op("Conv", ["x", b.weight(channels, 3, 3, 3), b.weight(channels)])])
    return b.model([("x", ["N", 3, 5, 5])], [_as_strided_head(b, f, channels, mul)])


def _as_strided_head(b, f, channels: int, mul: int) -> str:
    """Gather(Reshape(f, [-1]), Unsqueeze(Range(0, N)·mul) + arange(C) as [1, C, 1, 1]) of the
    pooled features f [N, C, 1, 1] (N read from input x), then a Gemm to 4 classes."""
    flat = b.op("Reshape", [f, b.const([-1], np.int64)])
    n = b.op("Squeeze", [b.op("Shape", ["x"], start=0, end=1), b.const([0], np.int64)])
    rows = b.op("Mul", [b.op("Range", [b.const(0, np.int64), n, b.const(1, np.int64)]), b.const(mul, np.int64)])
    idx = b.op("Add", [b.op("Unsqueeze", [rows, b.const([1, 2, 3], np.int64)]),
                       b.const(np.arange(channels).reshape(1, channels, 1, 1), np.int64)])
    g = b.op("Gather", [flat, idx], axis=0)
    return b.op("Gemm", [b.op("Flatten", [g], axis=1), b.weight(4, channels), b.weight(4)], transB=1)


def _windowed_as_strided_model():
    """Swin's dynamo export in small: window partition [N, 4, 4, C] -> [N·4, 2, 2, C], a
    per-window Gemm, the reverse, then the pooled features' as_strided Gather over Range(N).
    The Gather is a Reshape only if the batch survives the windows (a symbolic product)."""
    c = 6
    b = Builder(opset=18)
    y = b.op("Transpose", [b.op("Conv", ["x", b.weight(c, 3, 3, 3), b.weight(c)], pads=[1, 1, 1, 1])],
             perm=[0, 2, 3, 1])
    parts = b.op("Reshape", [y, b.const([-1, 2, 2, 2, 2, c], np.int64)], allowzero=1)
    wins = b.op("Reshape", [b.op("Transpose", [parts], perm=[0, 1, 3, 2, 4, 5]),
                            b.const([-1, 2, 2, c], np.int64)], allowzero=1)
    mixed = b.op("MatMul", [wins, b.weight(c, c)])
    back = b.op("Reshape", [mixed, b.const([-1, 2, 2, 2, 2, c], np.int64)], allowzero=1)
    merged = b.op("Reshape", [b.op("Transpose", [back], perm=[0, 1, 3, 2, 4, 5]),
                              b.const([-1, 4, 4, c], np.int64)], allowzero=1)
    f = b.op("ReduceMean", [b.op("Transpose", [merged], perm=[0, 3, 1, 2]), b.const([2, 3], np.int64)])
    return b.model([("x", ["N", 3, 4, 4])], [_as_strided_head(b, f, c, c)])


def test_as_strided_gather_after_window_reshapes_becomes_a_reshape():
    """The batch goes through [N·4, 2, 2, C] windows and back, so the as_strided read of the
    pooled features is proven a Reshape with a dynamic batch (ORT-checked at batches 1, 3)."""
    g = assert_matches_ort(_windowed_as_strided_model(), {"x": (3, 4, 4)})
    counts = op_counts(g)
    assert "Gather" not in counts and "Range" not in counts and "Shape" not in counts


def test_as_strided_gather_over_the_batch_becomes_a_reshape():
    """Row-major affine indices over the symbolic batch -> Reshape (no Shape / Range left,
    ORT-checked at batches 1 and 3); other strides keep the Gather (and its Shape)."""
    g = assert_matches_ort(_as_strided_model(6), {"x": (3, 5, 5)})
    counts = op_counts(g)
    assert "Gather" not in counts and "Range" not in counts and "Shape" not in counts
    with pytest.raises(UnsupportedOpError, match="Shape"):
        optimize(load_onnx(_as_strided_model(3)))          # overlapping rows: a real gather


def _bn_params(b, c):
    return [b.weight(c, low=0.5, high=1.5), b.weight(c), b.weight(c), b.weight(c, low=0.5, high=1.5)]


def test_training_mode_batchnorm_of_constant_weights_folds():
    """NF-Nets' weight standardization: BatchNormalization(training_mode=1) of the constant
    weight [1, M, K] (its own mean and variance, not the mean / var inputs) folds into the
    conv's weight; a training-mode BN of a run-time tensor is refused with the reason."""
    b = Builder(opset=15)
    w = b.const(np.random.default_rng(3).standard_normal((1, 4, 27)).astype(np.float32) * 0.3 + 0.1)
    ones, zeros = b.const(np.ones(4, np.float32)), b.const(np.zeros(4, np.float32))
    std, _, _ = b.op("BatchNormalization", [w, ones, zeros, b.weight(4), b.weight(4, low=0.5, high=1.5)],
                     n_out=3, training_mode=1, epsilon=1e-5)
    wk = b.op("Reshape", [std, b.const([4, 3, 3, 3], np.int64)])
    y = b.op("Conv", ["x", wk, b.weight(4)], pads=[1, 1, 1, 1])
    g = assert_matches_ort(b.model([("x", ["N", 3, 5, 5])], [y]), {"x": (3, 5, 5)})
    assert op_counts(g) == {"Conv": 1}

    b = Builder(opset=15)
    y = b.op("BatchNormalization", ["x"] + _bn_params(b, 3), n_out=3, training_mode=1)[0]
    with pytest.raises(UnsupportedOpError, match="training mode"):
        from nqrt.quant.quantizers import check_supported
        check_supported(optimize(load_onnx(b.model([("x", ["N", 3, 5, 5])], [y]))))


def test_batchnorm1d_after_flattened_linear_folds_into_the_gemm():
    """LeViT: Linear [N, T, C] -> Flatten(axis 2) -> BatchNorm1d -> Reshape back by the
    Linear output's Shape.  The BN folds into the Gemm (the flatten keeps the channels last;
    the Shape reader does not block it)."""
    b = Builder(opset=15)
    lin = b.op("MatMul", ["x", b.weight(6, 8)])
    flat = b.op("Flatten", [lin], axis=2)
    bn = b.op("BatchNormalization", [flat] + _bn_params(b, 8))
    y = b.op("Reshape", [bn, b.op("Shape", [lin])])
    g = assert_matches_ort(b.model([("x", ["N", 5, 6])], [y]), {"x": (5, 6)})
    assert "BatchNormalization" not in op_counts(g) and "Conv" not in op_counts(g)


def test_standalone_batchnorm1d_becomes_a_1d_depthwise_conv():
    """A BN of [N, C] whose producer cannot absorb it (a pooled mean: LeViT's head) becomes
    Reshape [N, C, 1] -> depthwise 1-D conv -> Reshape [N, C]."""
    b = Builder(opset=15)
    m = b.op("ReduceMean", ["x"], axes=[1], keepdims=0)
    y = b.op("BatchNormalization", [m] + _bn_params(b, 6))
    g = assert_matches_ort(b.model([("x", ["N", 5, 6])], [y]), {"x": (5, 6)})
    counts = op_counts(g)
    assert "BatchNormalization" not in counts and counts["Conv"] == 1 and counts["Reshape"] == 2


def test_neutral_constant_arithmetic_is_removed():
    """x + 0, 0 + x, x − 0, x · 1, x / 1 vanish (LeViT's zero-initialised attention biases);
    0 − x, x + 1, and x + zeros that broadcast x to a larger shape stay."""
    b = Builder(opset=15)
    z = b.const(np.zeros((1, 4, 1), np.float32))
    t = b.op("Add", [b.op("Conv", ["x", b.weight(4, 3, 1)]), z])
    t = b.op("Add", [b.const(np.zeros((4, 5), np.float32)), t])
    t = b.op("Div", [b.op("Mul", [b.op("Sub", [t, b.const(0.0)]), b.const(np.float32(1))]), b.const(1.0)])
    kept = [b.op("Sub", [b.const(0.0), t]), b.op("Add", [t, b.const(1.0)]),
            b.op("Add", [t, b.const(np.zeros((2, 1, 4, 5), np.float32))])]
    g = assert_matches_ort(b.model([("x", ["N", 3, 5])], kept), {"x": (3, 5)}, batches=(2,))
    assert op_counts(g) == {"Conv": 1, "Sub": 1, "Add": 2}


def test_reshape_target_with_a_batch_product_and_a_hole_folds():
    """MobileViT's unfold: Reshape(x [N, 4, 6, 8], [N·4, 6, -1]) with N·4 computed from
    Shape(x): the -1 is resolved to 8 first, then N·4 is the one inferred dim ([-1, 6, 8])."""
    b = Builder(opset=13)
    x = b.op("Conv", ["x", b.weight(4, 3, 1, 1)])
    n = b.op("Gather", [b.op("Shape", [x]), b.const([0], np.int64)], axis=0)
    target = b.op("Concat", [b.op("Mul", [n, b.const([4], np.int64)]), b.const([6, -1], np.int64)], axis=0)
    y = b.op("Reshape", [x, target])
    g = assert_matches_ort(b.model([("x", ["N", 3, 6, 8])], [y]), {"x": (3, 6, 8)})
    assert op_counts(g) == {"Conv": 1, "Reshape": 1}
    assert next(n for n in g.nodes if n.op == "Reshape").attrs["shape"] == [-1, 6, 8]


def test_batchnorm_after_a_transpose_to_channels_last_folds_into_the_conv():
    """tf2onnx's Keras graphs: Conv (NCHW) -> Transpose to NHWC -> the BatchNorm's Mul and Add
    by per-channel constants on the last axis -> Relu: both fold into the Conv (the Transpose
    stays); a Transpose that does not bring the channels to the affine's axis blocks it."""
    b = Builder(opset=13)
    t = b.op("Transpose", [b.op("Conv", ["x", b.weight(5, 3, 3, 3), b.weight(5)], pads=[1, 1, 1, 1])],
             perm=[0, 2, 3, 1])
    y = b.op("Relu", [b.op("Add", [b.op("Mul", [t, b.weight(5, low=0.5, high=1.5)]), b.weight(5)])])
    g = assert_matches_ort(b.model([("x", ["N", 3, 4, 6])], [y]), {"x": (3, 4, 6)})
    assert op_counts(g) == {"Conv": 1, "Transpose": 1}
    b = Builder(opset=13)
    t = b.op("Transpose", [b.op("Conv", ["x", b.weight(5, 3, 3, 3)], pads=[1, 1, 1, 1])], perm=[0, 2, 3, 1])
    y = b.op("Mul", [t, b.const(np.linspace(0.5, 1.5, 4, dtype=np.float32).reshape(4, 1, 1))])   # over H
    g = assert_matches_ort(b.model([("x", ["N", 3, 4, 6])], [y]), {"x": (3, 4, 6)})
    assert op_counts(g) == {"Conv": 2, "Transpose": 1}      # a depthwise conv over H, not a fold


def test_keras_hard_sigmoid_and_hard_swish_fuse():
    """Keras' hard sigmoid Clip(x + 3, 0, 6) · (1/6) (or / 6) is HardSigmoid(1/6, 1/2); times x
    it is one HardSwish."""
    b = Builder(opset=13)
    x = b.op("Conv", ["x", b.weight(4, 3, 1, 1)])

    def hsig(t, div=False):
        c = b.op("Clip", [b.op("Add", [t, b.const(np.float32(3.0))]), b.const(np.float32(0.0)),
                          b.const(np.float32(6.0))])
        return b.op("Div", [c, b.const(np.float32(6.0))]) if div else b.op("Mul", [b.const(np.float32(1 / 6)), c])

    hs = b.op("Mul", [x, hsig(x)])
    gate = hsig(b.op("MaxPool", [hs], kernel_shape=[2, 2]), div=True)      # not foldable: a table
    conv_gate = hsig(b.op("Conv", [hs, b.weight(4, 4, 1, 1)]), div=True)   # folds into the conv
    y = b.op("Mul", [b.op("Mul", [b.op("MaxPool", [hs], kernel_shape=[2, 2]), gate]),
                     b.op("MaxPool", [conv_gate], kernel_shape=[2, 2])])
    g = assert_matches_ort(b.model([("x", ["N", 3, 4, 4])], [y]), {"x": (3, 4, 4)})
    counts = op_counts(g)
    assert counts["HardSwish"] == 1 and counts["HardSigmoid"] == 1 and counts["Conv"] == 2
    assert "Clip" not in counts and "Div" not in counts and "Add" not in counts


@pytest.mark.parametrize("with_beta, reduce", [(True, "GlobalAveragePool"), (False, "ReduceMean")])
def test_tf2onnx_layernorm_fuses(with_beta, reduce):
    """Keras' LayerNormalization as tf2onnx writes it: mean and variance by GlobalAveragePool
    (the last axis of a rank-3 tensor) or ReduceMean, k = gamma / sqrt(var + eps),
    y = x·k + (beta − mean·k) as Add(Mul(x, k), Add(Mul(Neg(mean), k), beta)); without the
    beta Add when beta = 0.  One LayerNormalization, matching ORT."""
    b = Builder(opset=13)
    x = b.op("MatMul", ["x", b.weight(6, 8)])                                 # [N, T, 8]

    def red(t):
        return b.op("GlobalAveragePool", [t]) if reduce == "GlobalAveragePool" else \
            b.op("ReduceMean", [t], axes=[-1], keepdims=1)

    mean = red(x)
    d = b.op("Sub", [x, mean])
    var = red(b.op("Mul", [d, d]))
    k = b.op("Mul", [b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(np.float32(1e-3))])])]),
                     b.weight(8, low=0.5, high=1.5)])
    shift = b.op("Mul", [b.op("Neg", [mean]), k])
    if with_beta:
        shift = b.op("Add", [shift, b.weight(8)])
    y = b.op("Add", [b.op("Mul", [x, k]), shift])
    g = assert_matches_ort(b.model([("x", ["N", 5, 6])], [b.op("MatMul", [y, b.weight(8, 4)])]), {"x": (5, 6)})
    assert op_counts(g) == {"Gemm": 2, "LayerNormalization": 1}
