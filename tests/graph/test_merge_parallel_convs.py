"""merge_parallel_convs: Add(Conv(x), Conv(x)) / Add(Conv(x), x) -> one Conv (RepVGG, MobileOne,
conv position encodings), the equality of the merged graph with ONNX Runtime, and the near
misses that must stay branches."""

from __future__ import annotations

import numpy as np
import pytest

from nqrt import InputError
from nqrt.graph.onnx_import import load_onnx
from nqrt.graph.passes import optimize

from _graph_helpers import Builder, assert_matches_ort, op_counts


def _bn(b, x, c):
    return b.op("BatchNormalization", [x] + [b.weight(c, low=0.5, high=1.5) for _ in range(4)])


def _conv_bn(b, x, cin, cout, k, group=1, stride=1, pad=None, dil=1):
    pad = (k // 2) * dil if pad is None else pad
    w = b.weight(cout, cin // group, k, k)
    c = b.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
             dilations=[dil, dil], group=group)
    return _bn(b, c, cout)


def _only_conv(g):
    convs = [n for n in g.nodes if n.op == "Conv"]
    assert len(convs) == 1, op_counts(g)
    return convs[0]


def test_repvgg_block_merges_its_convs_and_keeps_the_identity_branch():
    """3x3 conv-BN + 1x1 conv-BN become one 3x3 conv; the BN of x (a per-channel branch) is not
    embedded in a dense kernel (module docstring: it would set every tap's weight step), so it
    stays a depthwise 1x1 conv and the Add, which then takes the Relu."""
    b = Builder(seed=1)
    c = 8
    s = b.op("Add", [_conv_bn(b, "x", c, c, 3), _conv_bn(b, "x", c, c, 1)])
    s = b.op("Add", [s, _bn(b, "x", c)])                 # identity branch: BN of x
    y = b.op("Relu", [s])
    m = b.model([("x", ["N", c, 10, 10])], [y])
    g = assert_matches_ort(m, {"x": (c, 10, 10)})
    assert op_counts(g) == {"Conv": 2, "Add": 1}
    dense = next(n for n in g.nodes if n.op == "Conv" and n.attrs["group"] == 1)
    assert dense.attrs["kernel_shape"] == [3, 3] and dense.attrs["pads"] == [1, 1, 1, 1]
    assert g.nodes[-1].op == "Add" and g.nodes[-1].attrs["act"][0] == 0
    assert g.nodes[-1].outputs == [y]


def test_mobileone_depthwise_stride2_branches_odd_size():
    """Three 3x3 depthwise branches, a 1x1 depthwise 'scale' branch, stride 2 on a 9x9 map:
    the 1x1 tap lands at the centre, the end pads agree."""
    b = Builder(seed=2)
    c = 6
    br = [_conv_bn(b, "x", c, c, 3, group=c, stride=2) for _ in range(3)]
    br.append(_conv_bn(b, "x", c, c, 1, group=c, stride=2))
    s = br[0]
    for t in br[1:]:
        s = b.op("Add", [s, t])
    m = b.model([("x", ["N", c, 9, 9])], [b.op("Relu", [s])])
    g = assert_matches_ort(m, {"x": (c, 9, 9)})
    conv = _only_conv(g)
    assert conv.attrs["group"] == c and conv.attrs["strides"] == [2, 2]
    assert conv.attrs["kernel_shape"] == [3, 3] and conv.attrs["pads"] == [1, 1, 1, 1]


@pytest.mark.parametrize("identity_first", [False, True])
def test_residual_around_a_depthwise_conv_merges_the_identity(identity_first):
    """x + dwconv(x) (conditional position encodings): one Conv whose centre tap gains 1."""
    b = Builder(seed=3)
    c = 5
    w = b.weight(c, 1, 3, 3)
    d = b.op("Conv", ["x", w, b.weight(c)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c)
    y = b.op("Add", ["x", d] if identity_first else [d, "x"])
    m = b.model([("x", ["N", c, 7, 7])], [y])
    g = assert_matches_ort(m, {"x": (c, 7, 7)})
    conv = _only_conv(g)
    merged = g.constants[conv.inputs[1]]
    orig = load_onnx(m).constants[w]
    np.testing.assert_allclose(merged[:, 0, 1, 1], orig[:, 0, 1, 1] + 1, rtol=1e-6)
    np.testing.assert_array_equal(merged[:, 0, 0, :], orig[:, 0, 0, :])


def test_identity_stays_beside_a_grouped_conv_and_a_dilated_merges_with_a_pointwise_branch():
    b = Builder(seed=4)
    c = 8
    g2 = b.op("Conv", ["x", b.weight(c, c // 2, 3, 3)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2)
    s = b.op("Add", [g2, _bn(b, "x", c)])                 # per-channel branch: group 8 != 2
    dil = b.op("Add", [_conv_bn(b, s, c, c, 3, dil=2), _conv_bn(b, s, c, c, 1)])
    m = b.model([("x", ["N", c, 9, 9])], [dil])
    g = assert_matches_ort(m, {"x": (c, 9, 9)})
    convs = [n for n in g.nodes if n.op == "Conv"]
    assert op_counts(g) == {"Conv": 3, "Add": 1}
    assert sorted(n.attrs["group"] for n in convs) == [1, 2, c]
    merged = convs[-1]
    assert merged.attrs["dilations"] == [2, 2] and merged.attrs["pads"] == [2, 2, 2, 2]
    assert merged.attrs["kernel_shape"] == [3, 3]


def _near_miss(kind):
    b = Builder(seed=5)
    c = 4
    a = _conv_bn(b, "x", c, c, 3)
    outs = []
    if kind == "dilation":
        other = _conv_bn(b, "x", c, c, 3, dil=2)
    elif kind == "stride":                                 # both 4x4 from 8x8
        a = _conv_bn(b, "x", c, c, 5, pad=0)
        other = _conv_bn(b, "x", c, c, 1, stride=2)
    elif kind == "other_input":
        other = _conv_bn(b, b.op("Relu", ["x"]), c, c, 1)
    elif kind == "shared_branch":
        other = _conv_bn(b, "x", c, c, 1)
        outs.append(other)                                   # also a graph output
    elif kind == "read_twice":
        other = _conv_bn(b, "x", c, c, 1)
        outs.append(b.op("Relu", [other]))                   # a second reader
    elif kind == "broadcast":                              # [N, c, 1, 1] + [N, c, 8, 8]
        other = b.op("Conv", ["x", b.weight(c, c, 8, 8)], kernel_shape=[8, 8])
    elif kind == "dilated_grid":                           # offsets -2, 0, 2 beside -1, 1
        a = _conv_bn(b, "x", c, c, 3, dil=2)
        other = b.op("Conv", ["x", b.weight(c, c, 2, 2)], kernel_shape=[2, 2], pads=[1, 1, 1, 1],
                     dilations=[2, 2])
    elif kind == "activated_branch":
        other = b.op("Relu", [_conv_bn(b, "x", c, c, 1)])
    elif kind == "groups":
        other = b.op("Conv", ["x", b.weight(c, c // 2, 1, 1)], kernel_shape=[1, 1], group=2)
    elif kind == "grid":                                   # 3x3 pad 1 beside 2x2 pad 0: offsets -1 / 0
        other = b.op("Conv", ["x", b.weight(c, c, 2, 2)], kernel_shape=[2, 2], pads=[0, 0, 1, 1])
        a = b.op("Conv", ["x", b.weight(c, c, 3, 3)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], dilations=[1, 1])
    elif kind == "shifted_2x2":                            # offsets -1..0 and 0..1: a 3x3 union
        other = b.op("Conv", ["x", b.weight(c, c, 2, 2)], kernel_shape=[2, 2], pads=[0, 0, 1, 1])
        a = b.op("Conv", ["x", b.weight(c, c, 2, 2)], kernel_shape=[2, 2], pads=[1, 1, 0, 0])
    y = b.op("Add", [a, other])
    return b.model([("x", ["N", c, 8, 8])], [y] + outs), c


@pytest.mark.parametrize("kind", ["dilation", "stride", "other_input", "shared_branch", "read_twice",
                                  "broadcast", "dilated_grid", "activated_branch", "groups"])
def test_near_misses_stay_branches(kind):
    m, c = _near_miss(kind)
    g = assert_matches_ort(m, {"x": (c, 8, 8)})
    assert op_counts(g).get("Add") == 1, op_counts(g)


@pytest.mark.parametrize("kind", ["grid", "shifted_2x2"])
def test_offset_grid_that_fits_merges(kind):
    """A 2x2 kernel with pads (0, 0, 1, 1) reads offsets 0..1, a 3x3 pad 1 reads -1..1: the 2x2
    lands at taps 1..2 of the merged 3x3 (end pads 1 for both); two 2x2 kernels reading -1..0
    and 0..1 merge into a 3x3 larger than either."""
    m, c = _near_miss(kind)
    g = assert_matches_ort(m, {"x": (c, 8, 8)})
    assert op_counts(g) == {"Conv": 1}
    assert g.nodes[0].attrs["kernel_shape"] == [3, 3]


def test_an_add_with_a_fused_activation_gives_it_to_the_merged_conv():
    """When the Relu is already fused into the Add (fuse_activation ran first), the merged Conv
    takes the clamp."""
    from nqrt.graph import reference
    from nqrt.graph.passes import merge_parallel_convs

    b = Builder(seed=7)
    y = b.op("Relu", [b.op("Add", [_conv_bn(b, "x", 4, 4, 3), _conv_bn(b, "x", 4, 4, 1)])])
    m = b.model([("x", ["N", 4, 6, 6])], [y])
    g = optimize(load_onnx(m), skip=("merge_parallel_convs",))
    assert op_counts(g) == {"Conv": 2, "Add": 1} and "act" in g.nodes[-1].attrs
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    want = reference.run(g, {"x": x})[y]
    assert want.min() == 0 and want.max() > 0
    g = merge_parallel_convs.run(g)
    assert op_counts(g) == {"Conv": 1}
    np.testing.assert_allclose(reference.run(g, {"x": x})[y], want, rtol=1e-5, atol=1e-6)


def test_skip_keeps_branches_and_rejects_unknown_passes():
    b = Builder(seed=6)
    y = b.op("Add", [_conv_bn(b, "x", 4, 4, 3), _conv_bn(b, "x", 4, 4, 1)])
    m = b.model([("x", ["N", 4, 6, 6])], [y])
    assert op_counts(optimize(load_onnx(m))) == {"Conv": 1}
    assert op_counts(optimize(load_onnx(m), skip=("merge_parallel_convs",))) == {"Conv": 2, "Add": 1}
    with pytest.raises(InputError, match="fold_batchnorm"):
        optimize(load_onnx(m), skip=("fold_batchnorm",))
