"""ONNX import: errors (one line, naming the problem), normalization to IR invariants."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nqrt import FormatError, UnsupportedOpError
from nqrt.graph.onnx_import import load_onnx

from _graph_helpers import Builder, op_counts


def _conv_model(opset=13, **conv_attrs):
    b = Builder(opset)
    y = b.op("Conv", ["x", b.weight(2, 3, 3, 3)], name="conv", **conv_attrs)
    return b.model([("x", ["N", 3, 5, 5])], [y])


# -- errors ----------------------------------------------------------------------------------

def test_unsupported_ops_are_all_listed_in_one_error():
    b = Builder()
    c1 = b.op("Conv", ["x", b.weight(2, 3, 3, 3)], name="conv1")
    n1 = b.op("Hardmax", [c1], name="conv1/norm")
    c2 = b.op("Conv", [n1, b.weight(2, 2, 1, 1)], name="conv2")
    n2 = b.op("Hardmax", [c2], name="conv2/norm")
    t = b.op("IsNaN", [n2], name="act")
    m = b.model([("x", [1, 3, 5, 5])], [t])
    with pytest.raises(UnsupportedOpError) as ei:
        load_onnx(m)
    msg = str(ei.value)
    assert "\n" not in msg
    assert "Hardmax (2 nodes: conv1/norm, conv2/norm)" in msg and "IsNaN (1 node: act)" in msg
    assert ei.value.ops == {"Hardmax": ["conv1/norm", "conv2/norm"], "IsNaN": ["act"]}


def test_custom_domain_is_unsupported():
    m = _conv_model()
    m.graph.node.append(helper.make_node("FusedThing", [m.graph.output[0].name], ["z"], domain="com.acme", name="f"))
    m.graph.output[0].name = "z"
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    with pytest.raises(UnsupportedOpError, match=r"com\.acme\.FusedThing \(1 node: f\)"):
        load_onnx(m)


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage\xff\xfe", b"not an onnx model at all"])
def test_malformed_bytes_raise_format_error(data):
    with pytest.raises(FormatError) as ei:
        load_onnx(data)
    assert "\n" not in str(ei.value)


def test_truncated_model_raises_format_error():
    data = _conv_model().SerializeToString()
    with pytest.raises(FormatError):
        load_onnx(data[: len(data) // 2])


def test_missing_file_raises_format_error(tmp_path):
    with pytest.raises(FormatError, match="cannot read model file"):
        load_onnx(tmp_path / "nope.onnx")


def test_undefined_tensor_raises_format_error():
    m = _conv_model()
    m.graph.node[0].input[0] = "ghost"
    with pytest.raises(FormatError, match="ghost"):
        load_onnx(m)


def test_opset_out_of_range():
    """An opset no converter knows (ONNX itself stops far below 99): one line, naming it."""
    m = _conv_model(opset=99)
    with pytest.raises(UnsupportedOpError, match="opset 99") as ei:
        load_onnx(m)
    assert "\n" not in str(ei.value)


def test_opset_8_is_upgraded():
    g = load_onnx(_conv_model(opset=8))
    assert g.opset == 9 and op_counts(g) == {"Conv": 1}


def test_non_float_input_rejected():
    b = Builder()
    y = b.op("Cast", ["x"], to=TensorProto.FLOAT)
    m = b.model([("x", [2])], [y])
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(UnsupportedOpError, match="'x' has dtype int64"):
        load_onnx(m)


def test_bad_auto_pad_names_node_and_attribute():
    with pytest.raises(UnsupportedOpError, match="Conv node conv: attribute auto_pad='WEIRD'"):
        load_onnx(_conv_model(auto_pad="WEIRD"))


def test_gemm_transA_with_runtime_A_unsupported():
    b = Builder()
    y = b.op("Gemm", ["x", b.weight(3, 4)], transA=1, name="g")
    with pytest.raises(UnsupportedOpError, match="Gemm node g: attribute transA=1"):
        load_onnx(b.model([("x", [3, 2])], [y]))


def test_maxpool_indices_output_used_is_unsupported():
    b = Builder()
    y, idx = b.op("MaxPool", ["x"], n_out=2, kernel_shape=[2, 2], name="mp")
    m = b.model([("x", [1, 1, 4, 4])], [y])
    m.graph.output.append(helper.make_tensor_value_info(idx, TensorProto.INT64, None))
    with pytest.raises(UnsupportedOpError, match="MaxPool node mp: Indices output"):
        load_onnx(m)


def test_layernorm_unsupported_forms_are_named():
    """stash_type 0, a used Mean output and a negative epsilon (also InstanceNormalization's)
    are import errors; a scale computed at run time is found by the converter's support check
    (one line naming the node)."""
    from nqrt.quant.quantizers import find_unsupported

    b = Builder(17)
    y = b.op("LayerNormalization", ["x", b.weight(4)], stash_type=0, name="ln")
    with pytest.raises(UnsupportedOpError, match="LayerNormalization node ln: attribute stash_type=0"):
        load_onnx(b.model([("x", ["N", 3, 4])], [y]))
    b = Builder(17)
    y, mean, _ = b.op("LayerNormalization", ["x", b.weight(4)], n_out=3, name="ln")
    m = b.model([("x", ["N", 3, 4])], [y])
    m.graph.output.append(helper.make_tensor_value_info(mean, TensorProto.FLOAT, None))
    with pytest.raises(UnsupportedOpError, match="LayerNormalization node ln: Mean / InvStdDev output"):
        load_onnx(m)
    for op, ins in (("LayerNormalization", lambda b: ["x", b.weight(4)]),
                    ("InstanceNormalization", lambda b: ["x", b.weight(3), b.weight(3)])):
        b = Builder(17)
        y = b.op(op, ins(b), epsilon=-1.0, name="norm")
        with pytest.raises(FormatError, match=f"{op} node norm: epsilon=-1.0 \\(must be finite and >= 0\\)"):
            load_onnx(b.model([("x", ["N", 3, 4])], [y]))
    b = Builder(17)
    y = b.op("LayerNormalization", ["x", b.op("Relu", ["s"])], name="ln")
    g = load_onnx(b.model([("x", ["N", 3, 4]), ("s", [4])], [y]))
    assert "LayerNormalization with a non-constant scale" in find_unsupported(g)


def test_external_data_from_bytes_is_format_error_and_from_file_loads(tmp_path):
    b = Builder()
    w = b.rng.standard_normal((64, 3, 3, 3)).astype(np.float32)
    b.const(w, name="w")
    y = b.op("Conv", ["x", "w"])
    m = b.model([("x", [1, 3, 4, 4])], [y])
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, location="m.data", size_threshold=0)
    g = load_onnx(path)
    np.testing.assert_array_equal(g.constants["w"], w)
    raw = onnx.load(str(path), load_external_data=False)
    with pytest.raises(FormatError, match="external data"):
        load_onnx(raw.SerializeToString())
    (tmp_path / "m.data").unlink()
    with pytest.raises(FormatError, match="external data"):
        load_onnx(path)


# -- normalization ------------------------------------------------------------------------------

def test_metadata_opset_and_inputs():
    m = _conv_model(opset=11)
    g = load_onnx(m)
    assert g.opset == 11
    assert g.metadata["source_sha256"] == hashlib.sha256(m.SerializeToString()).hexdigest()
    assert [(v.name, v.shape, v.dtype) for v in g.inputs] == [("x", ("N", 3, 5, 5), "float32")]
    assert g.value_info[g.outputs[0].name].shape == ("N", 2, 3, 3)


def test_ir3_initializers_listed_as_inputs_are_constants():
    b = Builder(opset=9)
    y = b.op("Conv", ["x", b.weight(2, 3, 1, 1)])
    g = load_onnx(b.model([("x", [1, 3, 2, 2])], [y], ir_version=3, initializers_as_inputs=True))
    assert [v.name for v in g.inputs] == ["x"] and len(g.constants) == 1


def test_conv_defaults_filled_and_auto_pad_resolved():
    g = load_onnx(_conv_model(auto_pad="SAME_UPPER", strides=[2, 2]))
    (n,) = g.nodes
    assert n.attrs == {"auto_pad": "NOTSET", "kernel_shape": [3, 3], "strides": [2, 2],
                       "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}


def test_attribute_inputs_become_attributes():
    b = Builder(opset=13)
    c = b.op("Clip", ["x", b.const(0.0)])
    r = b.op("Reshape", [c, b.const([0, -1], np.int64)])
    u = b.op("Unsqueeze", [r, b.const([1], np.int64)])
    s = b.op("Slice", [u, b.const([0], np.int64), b.const([2], np.int64)])
    g = load_onnx(b.model([("x", [2, 3, 4])], [s]))
    clip, reshape, unsq, slc = g.nodes
    assert clip.inputs == ["x"] and clip.attrs == {"min": 0.0, "max": math.inf}
    assert reshape.attrs == {"allowzero": 0, "shape": [0, -1]} and len(reshape.inputs) == 1
    assert unsq.attrs == {"axes": [1]} and len(unsq.inputs) == 1
    assert slc.attrs == {"starts": [0], "ends": [2], "axes": None, "steps": [1]} and len(slc.inputs) == 1


def test_clip_opset9_attribute_form_defaults_to_infinity():
    b = Builder(opset=9)
    c = b.op("Clip", ["x"], max=6.0)
    (n,) = load_onnx(b.model([("x", [2])], [c])).nodes
    assert n.attrs == {"min": -math.inf, "max": 6.0}


def test_sum_becomes_add_chain():
    b = Builder(opset=9)
    y = b.op("Sum", ["x", "x", "x", "x"])
    g = load_onnx(b.model([("x", [2])], [y]))
    assert op_counts(g) == {"Add": 3} and g.nodes[-1].outputs == [y]


def test_constant_node_value_forms():
    b = Builder()
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([5.0], np.float32), "v"),
                                       numpy_helper.from_array(np.array([2], np.int64), "i"), [4])
    forms = {"value_float": 2.5, "value_floats": [1.0, 2.0], "value_int": 7, "value_ints": [1, 2],
             "value": numpy_helper.from_array(np.ones((2, 2), np.float32)), "sparse_value": sparse}
    outs = []
    for k, v in forms.items():
        b.nodes.append(helper.make_node("Constant", [], [k], **{k: v}))
        outs.append(b.op("Identity", [k]))
    g = load_onnx(b.model([("x", [1])], outs + ["x"]))
    assert g.constants["value_float"] == np.float32(2.5) and g.constants["value_ints"].tolist() == [1, 2]
    assert g.constants["sparse_value"].tolist() == [0, 0, 5, 0]
    assert g.constants["value"].shape == (2, 2) and g.constants["value_int"].dtype == np.int64


def test_unknown_attribute_is_unsupported():
    m = _conv_model()
    m.graph.node[0].attribute.append(helper.make_attribute("fancy", 1))
    with pytest.raises(UnsupportedOpError, match="unknown attribute 'fancy'"):
        load_onnx(m)


def test_dropout_opset13_ratio_input_and_training_mode():
    b = Builder(opset=13)
    d = b.op("Dropout", ["x", b.const(0.2)])
    (n,) = load_onnx(b.model([("x", [2])], [d])).nodes
    assert n.op == "Dropout" and n.inputs == ["x"] and n.attrs == {"ratio": pytest.approx(0.2), "training_mode": False}
    b = Builder(opset=13)
    d = b.op("Dropout", ["x", b.const(0.2), b.const(True, np.bool_)], name="drop")
    with pytest.raises(UnsupportedOpError, match="Dropout node drop: training_mode"):
        load_onnx(b.model([("x", [2])], [d]))


def test_conv3d_unsupported():
    b = Builder()
    y = b.op("Conv", ["x", b.weight(2, 1, 1, 1, 1)], name="c3")
    with pytest.raises(UnsupportedOpError, match="c3"):
        load_onnx(b.model([("x", [1, 1, 2, 2, 2])], [y]))
