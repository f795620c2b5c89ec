"""Per-op quantizers and quantize_graph on hand-built float IR graphs (no files)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from nqrt.errors import ConversionError, UnsupportedOpError
from nqrt.format import schema
from nqrt.graph import reference
from nqrt.graph.ir import Graph, Node, ValueInfo
from nqrt.quant import RangeCollector, quantize_graph
from nqrt.quant import qparams as qp
from nqrt.quant.quantizers import IDENTITY_PAIR, QUANTIZERS, find_unsupported

INF = math.inf
RNG = np.random.default_rng(7)


def conv(x, w, b, y, name, act=None, pads=(1, 1, 1, 1), strides=(1, 1), group=1):
    r = len(strides)
    attrs = {"kernel_shape": None, "strides": list(strides), "pads": list(pads),
             "dilations": [1] * r, "group": group}
    if act is not None:
        attrs["act"] = act
    return Node("Conv", [x, w, b], [y], attrs, name)


def calibrate(graph, n=16, batches=2):
    """Ranges/shapes from the float reference executor on random inputs."""
    col = RangeCollector("minmax")
    for _ in range(batches):
        feeds = {v.name: RNG.normal(size=(n, *v.shape[1:])).astype(np.float32) for v in graph.inputs}
        reference.run(graph, feeds, observe=col.observe)
    return col.ranges(), col.shapes


def weights(*shape, scale=0.3):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def _fill_kernel(graph):
    for n in graph.nodes:
        if n.op == "Conv" and n.attrs.get("kernel_shape") is None:
            n.attrs["kernel_shape"] = list(graph.constants[n.inputs[1]].shape[2:])
    return graph


def cnn_graph():
    """x -> Conv+ReLU -> MaxPool -> Conv+ReLU6 -> GAP -> Flatten -> Gemm -> Softmax (output)."""
    g = Graph(
        nodes=[
            conv("x", "w1", "b1", "c1", "conv1", act=(0.0, INF)),
            Node("MaxPool", ["c1"], ["p1"], {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0],
                                              "dilations": [1, 1], "ceil_mode": 0}, "pool1"),
            conv("p1", "w2", "b2", "c2", "conv2", act=(0.0, 6.0)),
            Node("GlobalAveragePool", ["c2"], ["gap"], {}, "gap"),
            Node("Flatten", ["gap"], ["flat"], {"axis": 1}, "flatten"),
            Node("Gemm", ["flat", "wf", "bf"], ["logits"], {"transB": 1}, "fc"),
            Node("Softmax", ["logits"], ["probs"], {"axis": -1}, "softmax"),
        ],
        inputs=[ValueInfo("x", ("N", 3, 8, 8))],
        outputs=[ValueInfo("probs", ("N", 5))],
        constants={"w1": weights(6, 3, 3, 3), "b1": weights(6), "w2": weights(8, 6, 3, 3),
                   "b2": weights(8), "wf": weights(5, 8), "bf": weights(5)},
    )
    return _fill_kernel(g)


def test_registry_covers_the_post_optimize_op_set():
    from nqrt.graph.shapes import UNARY_OPS
    assert set(QUANTIZERS) == {"Conv", "Gemm", "Add", "Concat", "MaxPool", "AveragePool",
                               "GlobalAveragePool", "ReduceMean", "Relu", "Clip", "Flatten",
                               "Reshape", "Transpose", "Softmax", "LRN", "LayerNormalization",
                               # CNN extension (tests/quant/test_new_ops.py)
                               "Sub", "Mul", "Div", "Pow", *UNARY_OPS, "Slice", "Split", "Squeeze",
                               "Unsqueeze", "Pad", "Resize", "GlobalMaxPool", "Identity",
                               "MatMul", "Expand",       # MatMul of two activations (QMatMul)
                               "ReduceMax", "ReduceMin", "ReduceSum", "RMSNormalization",
                               "Max", "Min"}                  # QLut / QLut2


def test_cnn_structure_dtypes_and_scales():
    g = cnn_graph()
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, per_channel=True, shapes=shapes)
    ops = Counter(n.op for n in m.nodes)
    assert ops == {"Quantize": 1, "QConv": 2, "MaxPool": 1, "QReduceMean": 1, "Flatten": 1,
                   "QGemm": 1, "Dequantize": 1, "Softmax": 1}
    assert all(n.op in schema.OPS for n in m.nodes)
    assert [io.name for io in m.graph_inputs] == ["x"] and [io.name for io in m.graph_outputs] == ["probs"]
    assert m.graph_inputs[0].shape == ("N", 3, 8, 8)
    # graph entry and exit keep the user's names for the float tensors
    assert m.nodes[0].op == "Quantize" and m.nodes[0].inputs == ["x"]
    assert m.tensors["x"].dtype == "float32" and m.tensors["probs"].dtype == "float32"
    assert m.nodes[-1].op == "Softmax" and m.nodes[-1].outputs == ["probs"]
    assert m.nodes[-2].op == "Dequantize" and m.nodes[-2].inputs == ["logits"]

    by_name = {n.name: n for n in m.nodes}
    c1 = by_name["conv1"]
    w, bias, mult, shift = (m.tensors[t] for t in c1.inputs[1:])
    assert w.dtype == "int8" and w.data.shape == (6, 3, 3, 3) and w.quant.axis == 0
    assert len(w.quant.scale) == 6 and w.quant.zero_point == [0] * 6
    assert np.abs(w.data.astype(int)).max() <= 127
    assert bias.dtype == "int32" and bias.data.shape == (6,) and bias.quant.zero_point == [0] * 6
    s_x, _ = m.qparams(c1.inputs[0])
    np.testing.assert_allclose(bias.quant.scale, np.float32(s_x) * np.array(w.quant.scale, np.float32), rtol=1e-6)
    assert mult.dtype == "int32" and mult.data.shape == (6,) and shift.data.shape == (6,)
    s_y, z_y = m.qparams(c1.outputs[0])
    real = mult.data.astype(np.float64) * 2.0 ** -shift.data.astype(np.float64)
    np.testing.assert_allclose(real, s_x * np.array(w.quant.scale, np.float64) / s_y, rtol=1e-8)
    # ReLU fused: act_min = z_out; the ReLU output range starts at 0 so z_out = 0
    assert c1.attrs["act_min"] == z_y == 0 and c1.attrs["act_max"] == 255
    assert c1.attrs["pads"] == [1, 1, 1, 1] and c1.attrs["group"] == 1
    # ReLU6 fused into conv2: clamp at z + floor(6 / s)
    c2 = by_name["conv2"]
    s2, z2 = m.qparams(c2.outputs[0])
    assert c2.attrs["act_min"] == z2 and c2.attrs["act_max"] == min(255, z2 + math.floor(6.0 / s2))
    # same-scale propagation through MaxPool (and Flatten after the GAP)
    assert m.qparams("p1") == m.qparams("c1")
    assert m.qparams("flat") == m.qparams("gap")
    # GlobalAveragePool -> QReduceMean over the spatial axes with the observed count
    rm = by_name["gap"]
    assert rm.attrs["axes"] == [2, 3] and rm.attrs["keepdims"] == 1 and rm.attrs["count"] == 16
    assert m.metadata["weights"] == {"granularity": "per-channel", "bits": 8} and m.metadata["warnings"] == []


def test_per_tensor_weights():
    g = cnn_graph()
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, per_channel=False, shapes=shapes)
    qconv = next(n for n in m.nodes if n.op == "QConv")
    w, bias, mult, shift = (m.tensors[t] for t in qconv.inputs[1:])
    assert w.quant.axis is None and len(w.quant.scale) == 1
    assert mult.data.shape == (1,) and shift.data.shape == (1,)
    assert bias.data.shape == (6,) and len(bias.quant.scale) == 6
    assert m.metadata["weights"]["granularity"] == "per-tensor"


def test_output_of_quantized_op_is_dequantized_under_the_user_name():
    g = _fill_kernel(Graph(
        nodes=[conv("x", "w", "b", "y", "conv", act=(0.0, INF)),
               Node("Reshape", ["y"], ["r"], {"shape": [0, -1]}, "reshape")],
        inputs=[ValueInfo("x", ("N", 2, 5, 5))],
        outputs=[ValueInfo("y", ("N", 4, 5, 5)), ValueInfo("r", ("N", 100))],
        constants={"w": weights(4, 2, 3, 3), "b": weights(4)}))
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, shapes=shapes)
    deq = {n.outputs[0]: n.inputs[0] for n in m.nodes if n.op == "Dequantize"}
    assert set(deq) == {"y", "r"}
    assert m.tensors["y"].dtype == "float32" and m.tensors[deq["y"]].dtype == "uint8"
    assert deq["y"] != "y" and deq["r"] != "r"
    assert m.qparams(deq["r"]) == m.qparams(deq["y"])          # Reshape is same-scale
    reshape = next(n for n in m.nodes if n.op == "Reshape")
    assert reshape.attrs == {"shape": [0, -1]} and reshape.inputs == [deq["y"]]


def test_concat_union_range_and_identity_pairs():
    """Two branches of very different ranges, plus a same-scale (MaxPool) copy of one, inside
    the graph (a Concat at a graph output with inputs on different grids is a float Concat:
    test_output_concat_of_different_grids_is_float); at a graph output with one grid the
    Concat stays a QConcat of identity pairs."""
    g = _fill_kernel(Graph(
        nodes=[conv("x", "wa", "ba", "a", "conv_a"),
               conv("x", "wb", "bb", "b", "conv_b"),
               Node("MaxPool", ["a"], ["a2"], {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0],
                                               "dilations": [1, 1], "ceil_mode": 0}, "pool"),
               Node("Concat", ["a", "b", "a2"], ["cat"], {"axis": 1}, "concat"),
               Node("MaxPool", ["cat"], ["cat_p"], {"kernel_shape": [1, 1], "strides": [1, 1],
                                                    "pads": [0, 0, 0, 0], "dilations": [1, 1],
                                                    "ceil_mode": 0}, "after"),
               Node("Concat", ["a", "a2"], ["cat2"], {"axis": 1}, "concat_same")],
        inputs=[ValueInfo("x", ("N", 2, 4, 4))],
        outputs=[ValueInfo("cat_p", ("N", 9, 4, 4)), ValueInfo("cat2", ("N", 6, 4, 4))],
        constants={"wa": weights(3, 2, 3, 3, scale=10.0), "ba": weights(3),
                   "wb": weights(3, 2, 3, 3, scale=0.05), "bb": weights(3, scale=0.01)}))
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, shapes=shapes)
    by_name = {n.name: n for n in m.nodes}
    cat = by_name["concat"]
    s_y, z_y = m.qparams(cat.outputs[0])
    lo = min(ranges["a"][0], ranges["b"][0], 0.0)
    hi = max(ranges["a"][1], ranges["b"][1], 0.0)
    assert s_y == pytest.approx((hi - lo) / 255, rel=1e-6)
    # the wide branch dominates: its qparams equal the output's -> identity pair
    assert m.qparams("a") == (s_y, z_y)
    assert (cat.attrs["multipliers"][0], cat.attrs["shifts"][0]) == IDENTITY_PAIR
    assert (cat.attrs["multipliers"][2], cat.attrs["shifts"][2]) == IDENTITY_PAIR
    s_b, _ = m.qparams("b")
    m0, n = cat.attrs["multipliers"][1], cat.attrs["shifts"][1]
    assert m0 * 2.0 ** -n == pytest.approx(s_b / s_y, rel=1e-8)
    same = by_name["concat_same"]
    assert same.attrs["multipliers"] == [IDENTITY_PAIR[0]] * 2 and same.attrs["shifts"] == [IDENTITY_PAIR[1]] * 2
    assert cat.attrs["axis"] == 1


def test_output_concat_of_different_grids_is_float():
    """A detection head's output: boxes in pixels and scores in [0, 1] concatenated.  At a
    graph output each input is dequantized with its own grid and the float values
    concatenated, so the narrow input keeps its resolution; int8 matches simulate."""
    g = _fill_kernel(Graph(
        nodes=[conv("x", "wa", "ba", "a", "conv_a"),
               conv("x", "wb", "bb", "b", "conv_b"),
               Node("Concat", ["a", "b"], ["cat"], {"axis": 1}, "concat")],
        inputs=[ValueInfo("x", ("N", 2, 4, 4))],
        outputs=[ValueInfo("cat", ("N", 6, 4, 4))],
        constants={"wa": weights(3, 2, 3, 3, scale=100.0), "ba": weights(3),
                   "wb": weights(3, 2, 3, 3, scale=0.01), "bb": weights(3, scale=0.01)}))
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, shapes=shapes)
    ops = [n.op for n in m.nodes]
    assert "QConcat" not in ops and ops.count("Concat") == 1 and ops.count("Dequantize") == 2
    (cat,) = [n for n in m.nodes if n.op == "Concat"]
    assert m.tensors["cat"].dtype == "float32" and cat.attrs == {"axis": 1}
    s_a, s_b = m.qparams("a")[0], m.qparams("b")[0]
    assert s_a > 1000 * s_b                       # one shared grid would erase b
    x = np.random.default_rng(3).standard_normal((2, 2, 4, 4)).astype(np.float32)
    y = reference.run(g, {"x": x})["cat"]
    from nqrt.runtime.session import Session
    got = {mode: Session(m, mode=mode).run({"x": x})["cat"] for mode in ("integer", "simulate")}
    assert np.array_equal(got["integer"], got["simulate"])
    b_got, b_want = got["integer"][:, 3:], y[:, 3:]
    # on its own grid b keeps its detail: many levels, error a fraction of its range (one
    # shared grid of step s_y >= s_a would leave b at most a few levels around zero)
    assert len(np.unique(b_got)) > 50
    assert np.abs(b_got - b_want).max() < 0.1 * np.abs(b_want).max() < s_a


def test_concat_inputs_of_similar_range_share_its_scale():
    """Producers that feed only a Concat and span at least half of its range are quantized to
    the Concat's range, so the Concat copies them (identity pairs); a narrow branch, a branch
    with another consumer, a graph output, and the inputs of a Concat that is itself a graph
    output (a float Concat) keep their own scales."""
    from nqrt.quant.quantize import share_concat_ranges

    g = _fill_kernel(Graph(
        nodes=[conv("x", "wa", "ba", "a", "conv_a"), conv("x", "wb", "bb", "b", "conv_b"),
               conv("x", "wc", "bc", "c", "conv_c"), conv("x", "wd", "bd", "d", "conv_d"),
               Node("Concat", ["a", "b", "c"], ["cat"], {"axis": 1}, "concat"),
               Node("Concat", ["a2", "d"], ["cat2"], {"axis": 1}, "concat_out"),
               conv("x", "wa", "ba", "a2", "conv_a2"),
               Node("MaxPool", ["cat"], ["cat_p"], {"kernel_shape": [1, 1], "strides": [1, 1],
                                                    "pads": [0, 0, 0, 0], "dilations": [1, 1],
                                                    "ceil_mode": 0}, "after")],
        inputs=[ValueInfo("x", ("N", 2, 4, 4))],
        outputs=[ValueInfo("cat_p", ("N", 9, 4, 4)), ValueInfo("cat2", ("N", 6, 4, 4)),
                 ValueInfo("d", ("N", 3, 4, 4))],
        constants={"wa": weights(3, 2, 3, 3), "ba": weights(3), "wb": weights(3, 2, 3, 3, scale=0.25),
                   "bb": weights(3), "wc": weights(3, 2, 3, 3, scale=0.01), "bc": weights(3, scale=0.001),
                   "wd": weights(3, 2, 3, 3), "bd": weights(3)}))
    g.nodes = g.nodes[:4] + [g.nodes[6]] + g.nodes[4:6] + [g.nodes[7]]   # topological order
    ranges, shapes = calibrate(g)
    ranges["b"] = (ranges["a"][0] * 0.7, ranges["a"][1] * 0.7)  # within 2x of the union
    shared = share_concat_ranges(g, ranges)
    union = (min(ranges[t][0] for t in "abc"), max(ranges[t][1] for t in "abc"))
    assert shared["a"] == union and shared["b"] == union
    assert shared["c"] == ranges["c"]                           # ~100x narrower: own scale
    assert shared["d"] == ranges["d"]                           # d is a graph output
    assert shared["a2"] == ranges["a2"]                         # cat2 concatenates in float
    assert ranges["b"] != union                                 # the input dict is not changed
    m = quantize_graph(g, ranges, shapes=shapes)
    cat = next(n for n in m.nodes if n.name == "concat")
    assert m.qparams("a") == m.qparams("b") == m.qparams(cat.outputs[0])
    assert [(mm, n) for mm, n in zip(cat.attrs["multipliers"], cat.attrs["shifts"])][:2] == [IDENTITY_PAIR] * 2
    assert (cat.attrs["multipliers"][2], cat.attrs["shifts"][2]) != IDENTITY_PAIR


def test_add_multiplier_pair_and_relu():
    g = _fill_kernel(Graph(
        nodes=[conv("x", "w1", "b1", "c1", "conv1", act=(0.0, INF)),
               conv("c1", "w2", "b2", "c2", "conv2"),
               Node("Add", ["c2", "c1"], ["sum"], {"act": (0.0, INF)}, "add")],
        inputs=[ValueInfo("x", ("N", 4, 6, 6))],
        outputs=[ValueInfo("sum", ("N", 4, 6, 6))],
        constants={"w1": weights(4, 4, 3, 3), "b1": weights(4), "w2": weights(4, 4, 3, 3), "b2": weights(4)}))
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, shapes=shapes)
    add = next(n for n in m.nodes if n.op == "QAdd")
    (s_a, _), (s_b, _), (s_y, z_y) = (m.qparams(t) for t in (*add.inputs, add.outputs[0]))
    sh = add.attrs["shift"]
    assert add.attrs["multiplier_a"] * 2.0 ** -sh == pytest.approx(s_a / s_y, rel=1e-8)
    assert add.attrs["multiplier_b"] * 2.0 ** -sh == pytest.approx(s_b / s_y, abs=2.0 ** -sh)
    assert max(add.attrs["multiplier_a"], add.attrs["multiplier_b"]) >= 2**30
    assert add.attrs["act_min"] == z_y


def test_pools_reduce_clip_transpose_and_1d_conv():
    g = Graph(
        nodes=[Node("Conv", ["x", "w", "b"], ["c"], {"kernel_shape": [3], "strides": [1], "pads": [1, 1],
                                                      "dilations": [1], "group": 1}, "conv1d"),
               Node("AveragePool", ["c"], ["ap"], {"kernel_shape": [3], "strides": [2], "pads": [1, 1],
                                                   "ceil_mode": 0, "count_include_pad": 0}, "avg"),
               Node("Relu", ["ap"], ["r"], {}, "relu"),
               Node("Clip", ["r"], ["cl"], {"min": -1.0, "max": 0.5}, "clip"),
               Node("ReduceMean", ["cl"], ["mean"], {"axes": [-1], "keepdims": 0}, "mean"),
               Node("Transpose", ["c"], ["t"], {"perm": [0, 2, 1]}, "transpose")],
        inputs=[ValueInfo("x", ("N", 3, 10))],
        outputs=[ValueInfo("mean", ("N", 4)), ValueInfo("t", ("N", 10, 4))],
        constants={"w": weights(4, 3, 3), "b": weights(4)})
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, shapes=shapes)
    by_name = {n.name: n for n in m.nodes}
    assert by_name["conv1d"].op == "QConv" and m.tensors[by_name["conv1d"].inputs[1]].data.shape == (4, 3, 3)
    assert by_name["conv1d"].attrs["pads"] == [1, 1]
    ap = by_name["avg"]
    assert ap.op == "QAveragePool" and m.tensors[ap.inputs[1]].data.shape == (4,)   # K + 1
    s_c, _ = m.qparams("c")
    s_ap, _ = m.qparams("ap")
    mult, shift = m.tensors[ap.inputs[1]].data, m.tensors[ap.inputs[2]].data
    assert mult[2] * 2.0 ** -int(shift[2]) == pytest.approx(s_c / (s_ap * 2), rel=1e-8)
    relu, clip = by_name["relu"], by_name["clip"]
    assert relu.op == clip.op == "QClip"
    s, z = m.qparams("ap")
    assert m.qparams("r") == m.qparams("cl") == (s, z)
    assert relu.attrs == {"act_min": z, "act_max": 255}
    assert clip.attrs == {"act_min": max(0, z + math.ceil(-1.0 / s)), "act_max": z + math.floor(0.5 / s)}
    rm = by_name["mean"]
    assert rm.op == "QReduceMean" and rm.attrs["axes"] == [2] and rm.attrs["count"] == 5
    assert rm.attrs["keepdims"] == 0
    assert by_name["transpose"].attrs == {"perm": [0, 2, 1]} and m.qparams("t.q") == m.qparams("c")


def test_unsupported_ops_reported_together():
    g = Graph(
        nodes=[Node("Round", ["x"], ["s"], {}, "sig1"),
               Node("Softmax", ["s"], ["sm"], {"axis": 1}, "softmax_mid"),
               Node("Relu", ["sm"], ["r"], {}, "relu"),
               Node("LSTM", ["r"], ["l"], {}, "lstm"),
               Node("Round", ["l"], ["y"], {}, "sig2"),
               Node("Div", ["y", "k"], ["z"], {}, "add_const")],
        inputs=[ValueInfo("x", ("N", 4))], outputs=[ValueInfo("z", ("N", 4))],
        constants={"k": np.array([1, 0, 2, 3], np.float32)})
    bad = find_unsupported(g)
    assert bad["Round"] == ["sig1", "sig2"] and bad["LSTM"] == ["lstm"]
    with pytest.raises(UnsupportedOpError) as e:
        quantize_graph(g, {})
    msg = str(e.value)
    for word in ("Round", "sig1", "sig2", "LSTM", "lstm", "Div by a constant with zeros",
                 "add_const"):
        assert word in msg
    # a Softmax inside the graph is a QSoftmax, not an error
    assert "softmax_mid" not in msg
    assert e.value.ops == {"Round": ["sig1", "sig2"], "LSTM": ["lstm"], "Div": ["add_const"]}


def test_missing_range_is_a_conversion_error():
    g = cnn_graph()
    ranges, shapes = calibrate(g)
    del ranges["c2"]
    with pytest.raises(ConversionError, match="no calibration range for tensor 'c2'"):
        quantize_graph(g, ranges, shapes=shapes)


def test_softmax_input_also_an_output_and_passthrough_output():
    g = _fill_kernel(Graph(
        nodes=[conv("x", "w", "b", "logits", "conv", pads=(0, 0, 0, 0)),
               Node("Flatten", ["logits"], ["flat"], {"axis": 1}, "flatten"),
               Node("Softmax", ["flat"], ["probs"], {"axis": -1}, "softmax")],
        inputs=[ValueInfo("x", ("N", 2, 3, 3))],
        outputs=[ValueInfo("flat", ("N", 3)), ValueInfo("probs", ("N", 3))],
        constants={"w": weights(3, 2, 3, 3), "b": weights(3)}))
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, shapes=shapes)
    ops = [n.op for n in m.nodes]
    assert ops.count("Dequantize") == 1                      # shared by the output and Softmax
    sm = next(n for n in m.nodes if n.op == "Softmax")
    assert sm.inputs == ["flat"] and m.tensors["flat"].dtype == "float32"
    assert m.tensors["probs"].shape == ("N", 3)
    g.outputs.append(ValueInfo("x", ("N", 2, 3, 3)))
    with pytest.raises(ConversionError, match="graph input passed through"):
        quantize_graph(g, ranges, shapes=shapes)


def test_softmax_inside_the_graph_is_a_qsoftmax():
    """Spec 4.21: integer softmax from the uint8 input, its constants from (s_x, s_y), the
    output on the calibrated range within [0, 1]."""
    g = _fill_kernel(Graph(
        nodes=[conv("x", "w", "b", "c", "conv", pads=(0, 0, 0, 0)),
               Node("Flatten", ["c"], ["flat"], {"axis": 1}, "flatten"),
               Node("Softmax", ["flat"], ["sm"], {"axis": -1}, "softmax"),
               Node("Reshape", ["sm"], ["probs"], {"shape": [0, -1, 1]}, "reshape")],
        inputs=[ValueInfo("x", ("N", 2, 5, 5))], outputs=[ValueInfo("probs", ("N", None, 1))],
        constants={"w": RNG.normal(0, 0.5, (3, 2, 3, 3)).astype(np.float32),
                   "b": np.zeros(3, np.float32)}))
    ranges, shapes = calibrate(g)
    m = quantize_graph(g, ranges, shapes=shapes)
    ops = [n.op for n in m.nodes]
    assert ops == ["Quantize", "QConv", "Flatten", "QSoftmax", "Reshape", "Dequantize"]
    sm = m.nodes[3]
    s, z = m.qparams(sm.outputs[0])
    assert z == 0 and 0 < s <= 1.0 / 255 + 1e-9   # softmax range lies in [0, 1]
    table, numerator, shift = qp.softmax_constants(m.qparams(sm.inputs[0])[0], s, "softmax")
    assert np.array_equal(m.tensors[sm.inputs[1]].data, table) and m.tensors[sm.inputs[1]].dtype == "int32"
    assert sm.attrs == {"axis": -1, "numerator": numerator, "shift": shift, "act_min": 0, "act_max": 255}
