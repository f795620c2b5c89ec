"""ConvTranspose: the reference executor (by the definition: scatter and crop) and the lowering
to Conv + depth-to-space + crop (graph/passes/lower_convtranspose.py), both against ONNX
Runtime FP32, over strides, kernel sizes, pads, output_padding, dilations, groups, auto_pad,
output_shape, 1-D and 2-D; the BN / Relu that follow end up in the one Conv; malformed
attributes are one-line errors."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

from _graph_helpers import Builder, assert_matches_ort, op_counts
from nqrt.errors import FormatError, UnsupportedOpError
from nqrt.graph.onnx_import import load_onnx
from nqrt.graph.passes import optimize
from nqrt.graph.passes.lower_convtranspose import phase_geometry

pytest.importorskip("onnxruntime")

# (kernel, strides, attrs): U-Net's k2 s2, DCGAN's k4 s2 p1, k3 s2 p1 op1, stride 1 (a plain
# conv with a flipped kernel), stride 3 with asymmetric pads and output_padding, dilations
# (one whose phase 1 gets no taps at all: d = s = 2), SAME_UPPER / SAME_LOWER with an odd
# total, output_shape, groups (channel-major phases), a 1x1 kernel, pads beyond a stride period.
CASES = {
    "k2s2": (2, [2, 2], {}),
    "k4s2p1": (4, [2, 2], {"pads": [1, 1, 1, 1]}),
    "k3s2p1op1": (3, [2, 2], {"pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    "k3s1p1": (3, [1, 1], {"pads": [1, 1, 1, 1]}),
    "k5s3_asym": (5, [3, 3], {"pads": [2, 0, 1, 3], "output_padding": [2, 1]}),
    "k3s2_d2": (3, [2, 2], {"dilations": [2, 2]}),
    "k3s2_d3x1": (3, [2, 2], {"dilations": [3, 1], "pads": [4, 0, 5, 1]}),
    "k3s2x1": (3, [2, 1], {"pads": [0, 1, 1, 1]}),
    "same_upper": (3, [2, 2], {"auto_pad": "SAME_UPPER"}),
    "same_lower": (3, [2, 2], {"auto_pad": "SAME_LOWER"}),
    "output_shape": (3, [2, 2], {"output_shape": [8, 9]}),
    "group2": (4, [2, 2], {"pads": [1, 1, 1, 1], "group": 2}),
    "group4_op": (3, [2, 2], {"group": 4, "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    "k1s2": (1, [2, 2], {}),
    "k4s4_pads_over_period": (4, [4, 4], {"pads": [5, 5, 6, 6]}),
}


def _model(k, strides, attrs, act=True, bias=True):
    b = Builder(opset=17)
    g = attrs.get("group", 1)
    cout_g = 6 // g if g > 1 else 3
    w = b.weight(4, cout_g, k, k)
    ins = ["x", w] + ([b.weight(cout_g * g)] if bias else [])
    y = b.op("ConvTranspose", ins, strides=strides, **attrs)
    if act:
        y = b.op("Relu", [y])
    return b.model([("x", ["N", 4, 5, 4])], [y])


@pytest.mark.parametrize("case", sorted(CASES))
def test_convtranspose_matches_ort(case):
    k, strides, attrs = CASES[case]
    g = assert_matches_ort(_model(k, strides, attrs), {"x": (4, 5, 4)})
    counts = op_counts(g)
    assert "ConvTranspose" not in counts and counts["Conv"] == 1 and "Relu" not in counts
    (conv,) = [n for n in g.nodes if n.op == "Conv"]
    assert conv.attrs["act"] == (0.0, float("inf")) and conv.attrs["strides"] == [1, 1]
    phases = int(np.prod(strides))
    group = attrs.get("group", 1)
    c_out = (6 // group) * group if group > 1 else 3
    assert g.constants[conv.inputs[1]].shape[0] == phases * c_out
    assert counts.get("Transpose", 0) == (1 if phases > 1 else 0)


def test_convtranspose_1d_and_no_bias():
    b = Builder(opset=17)
    y = b.op("ConvTranspose", ["x", b.weight(4, 3, 5), b.weight(3)], strides=[3], pads=[1, 2],
             output_padding=[1])
    y = b.op("ConvTranspose", [y, b.weight(3, 2, 4)], strides=[2], pads=[1, 1])
    g = assert_matches_ort(b.model([("x", ["N", 4, 7])], [y]), {"x": (4, 7)})
    assert op_counts(g)["Conv"] == 2


def test_bn_and_relu_after_convtranspose_fold_into_the_conv():
    """DCGAN's ConvTranspose -> BatchNormalization -> Relu: one Conv with act, no affine left;
    also with groups (the BN scales W[:, j] of each group)."""
    for group in (1, 2):
        b = Builder(opset=17)
        y = b.op("ConvTranspose", ["x", b.weight(4, 6 // group, 4, 4)], strides=[2, 2],
                 pads=[1, 1, 1, 1], group=group)
        y = b.op("BatchNormalization", [y, b.weight(6, low=0.5, high=1.5), b.weight(6), b.weight(6),
                                        b.weight(6, low=0.5, high=1.5)])
        y = b.op("Relu", [y])
        g = assert_matches_ort(b.model([("x", ["N", 4, 5, 4])], [y]), {"x": (4, 5, 4)})
        counts = op_counts(g)
        assert counts["Conv"] == 1 and "BatchNormalization" not in counts and "Relu" not in counts


@pytest.mark.parametrize("L,k,s,d,pb,pe,op", [
    (L, k, s, d, pb, pe, op)
    for L, k, s, d in itertools.product((1, 2, 5), (1, 2, 3, 4, 5), (1, 2, 3), (1, 2))
    for pb, pe, op in ((0, 0, 0), (1, 2, 0), (3, 0, 1), (0, 4, 1))
    if op < max(s, d) and s * (L - 1) + op + (k - 1) * d + 1 - pb - pe >= 1])
def test_phase_geometry_places_every_tap_once(L, k, s, d, pb, pe, op):
    """1-D: the Conv over the phases, interleaved and cropped as the pass does, equals the
    definition y[i·s + t·d − pb] += x[i]·w[t] (integers, exact)."""
    out = s * (L - 1) + op + (k - 1) * d + 1 - pb - pe
    k2, taps, p, p_end, l2, crop_b, crop_e = phase_geometry(L, k, s, d, pb, out)
    assert min(p, p_end, crop_b, crop_e) >= 0 and crop_b + out + crop_e == l2 * s
    assert len({tp for tp in taps}) == k                     # no two taps share a slot
    x = np.arange(1, L + 1) * 7
    w = np.arange(1, k + 1) * 3 - 1
    want = np.zeros(out + pb + s * (L + k * d), np.int64)
    for i in range(L):
        for t in range(k):
            want[i * s + t * d] += x[i] * w[t]
    want = want[pb:pb + out]
    v = np.zeros((s, k2), np.int64)
    for t, (r, a) in enumerate(taps):
        v[r, a] = w[t]
    xp = np.concatenate([np.zeros(p, np.int64), x, np.zeros(p_end, np.int64)])
    phases = np.array([[xp[o:o + k2] @ v[r] for o in range(l2)] for r in range(s)])
    got = phases.T.reshape(-1)[crop_b:crop_b + out]
    assert np.array_equal(got, want)


def _bad(attrs, w_shape=(4, 3, 2, 2), x_shape=(4, 5, 5)):
    b = Builder(opset=17)
    y = b.op("ConvTranspose", ["x", b.weight(*w_shape)], **attrs)
    return b.model([("x", ["N", *x_shape])], [y])


@pytest.mark.parametrize("attrs,w_shape,x_shape,err,msg", [
    ({"strides": [2, 2], "output_shape": [20, 20]}, (4, 3, 2, 2), (4, 5, 5), FormatError, "larger than the full"),
    ({"strides": [2, 2], "group": 3}, (4, 3, 2, 2), (4, 5, 5), FormatError, "group=3"),
    ({"strides": [2, 2]}, (6, 3, 2, 2), (4, 5, 5), FormatError, "6 input channels"),
    ({"strides": [2, 2], "kernel_shape": [3, 3]}, (4, 3, 2, 2), (4, 5, 5), FormatError, "kernel_shape"),
    ({"pads": [3, 3, 3, 3]}, (4, 3, 2, 2), (4, 2, 2), FormatError, "empty output"),
    ({"strides": [0, 2]}, (4, 3, 2, 2), (4, 5, 5), FormatError, "strides"),
    ({"strides": [2, 2, 2]}, (4, 3, 2, 2, 2), (4, 5, 5, 5), UnsupportedOpError, "rank 5"),
])
def test_malformed_convtranspose_is_one_line_error(attrs, w_shape, x_shape, err, msg):
    m = _bad(attrs, w_shape, x_shape)
    with pytest.raises(err, match=msg) as info:
        optimize(load_onnx(m))
    assert "\n" not in str(info.value)


def test_runtime_weight_is_reported_not_lowered():
    from nqrt.quant.quantizers import find_unsupported

    b = Builder(opset=17)
    y = b.op("ConvTranspose", ["x", "w"], strides=[2, 2])
    m = b.model([("x", ["N", 4, 5, 5]), ("w", [4, 3, 2, 2])], [y])
    g = optimize(load_onnx(m))
    bad = find_unsupported(g)
    assert any(r.startswith("ConvTranspose with a non-constant weight") for r in bad), bad
    assert isinstance(m, onnx.ModelProto)
