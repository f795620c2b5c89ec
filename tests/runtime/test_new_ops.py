"""Integer mode of the CNN extension ops (formats/nq-v1.md 4.3 constant operand, 4.9-4.14) vs
the spec-level reference (runtime_ref.py), bit for bit: QLut, QMul (SE broadcast), QAdd/QMul
with a constant operand and signed multipliers, Slice, Squeeze/Unsqueeze, Pad, ResizeNearest,
on logical-order tensors and on the channels-last outputs of convs; 1 vs 2 threads; symbolic
batch; the planner's layout choices (no transposes around data movement on NHWC data)."""

from __future__ import annotations

import numpy as np
import pytest
import runtime_ref
from runtime_builder import Builder
from test_ops import check, deq_out

from nqrt.errors import InputError
from nqrt.kernels import cpu
from nqrt.runtime import encoding as E
from nqrt.runtime.session import Session


@pytest.fixture(params=list(cpu.available_paths()))
def gemm_path(request, monkeypatch):
    monkeypatch.setenv("NQRT_GEMM_PATH", request.param)
    monkeypatch.delenv("NQRT_DISABLE_VNNI", raising=False)
    return request.param


def hardswish(x):
    return x * np.clip(x + 3, 0, 6) / 6


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def plan_of(sess, b):
    model = b.model()
    return sess.plan_for({io.name: b.env[io.name].shape for io in model.graph_inputs})


def count(plan, op):
    return int((plan.code[:, 0] == op).sum())


def layout_changes(plan):
    """uint8 transposes, alone or fused with the boundary's Quantize / Dequantize."""
    return sum(count(plan, op) for op in (E.OP_TRANSPOSE_U8, E.OP_QUANTIZE_T, E.OP_DEQUANTIZE_T))


def varied(b, name, k=8):
    assert np.unique(b.env[name]).size > k, f"{name} degenerate: {np.unique(b.env[name])}"


def test_qlut_on_logical_and_channels_last():
    b = Builder(100)
    x = b.quantize(b.input((2, 3, 5, 6)))
    deq_out(b, b.lut(x, np.tanh))                               # logical order
    c = b.conv(x, 8, (3, 3), pads=[1, 1, 1, 1])                 # NHWC
    h = b.lut(c, hardswish)
    varied(b, h)
    deq_out(b, b.lut(h, sigmoid, act=(10, 240)))               # table with a fused clamp
    sess, _ = check(b)
    plan = plan_of(sess, b)
    assert count(plan, E.OP_LUT) == 3
    assert len(plan.u8_consts) == 3 and all(d.size == 256 for _, d in plan.u8_consts)


def test_qmul_squeeze_excitation_nhwc(gemm_path):
    """SE: [N,C,H,W] (NHWC conv output) × [N,C,1,1] gate (GAP -> convs -> hard sigmoid), both
    operand orders; the gate path and the product stay channels-last (no transposes except
    the graph input's and the Dequantizes')."""
    b = Builder(101)
    x = b.quantize(b.input((2, 8, 6, 7)))
    t = b.lut(b.conv(x, 16, (3, 3), pads=[1, 1, 1, 1]), hardswish)
    g = b.reducemean(t, [2, 3], keepdims=1)
    s = b.conv(b.conv(g, 4, (1, 1), relu=True), 16, (1, 1))
    s = b.lut(s, lambda v: np.clip(v / 6 + 0.5, 0, 1))
    varied(b, s)
    m1 = b.mul(t, s)
    m2 = b.mul(s, t, relu=True)                                 # b is the full-shape operand
    varied(b, m1)
    y = b.conv(m1, 8, (1, 1))
    deq_out(b, b.add(y, b.conv(m2, 8, (1, 1))))
    sess, _ = check(b)
    plan = plan_of(sess, b)
    assert count(plan, E.OP_MUL) == 2
    assert layout_changes(plan) == 2                  # graph input, Dequantize
    # both products reach the kernel with the gate second (its SE repeated-row path)
    names = E.FIELDS[E.OP_MUL]
    for row in plan.code[plan.code[:, 0] == E.OP_MUL]:
        f = dict(zip(names, row[1:]))
        assert f["a_size"] == f["y_size"] > f["b_size"]


def test_qmul_broadcast_mixed_layouts_and_ranks():
    b = Builder(102)
    x = b.quantize(b.input((2, 4, 5, 3)))
    c = b.conv(x, 4, (1, 1))                                    # NHWC
    v = b.quantize(b.input((4, 1, 1)))                          # logical, rank 3
    w = b.quantize(b.input((3,)))                               # rank 1, along W
    deq_out(b, b.mul(c, v))
    deq_out(b, b.mul(w, c))
    p = b.quantize(b.input((2, 1, 5, 1)))                       # neither operand has the output shape
    q = b.quantize(b.input((1, 4, 1, 3)))
    deq_out(b, b.mul(p, q))
    check(b)


def test_constant_operands_qadd_qmul_and_signed_multipliers(gemm_path):
    """QMul/QAdd with uint8 constants (per-channel [C,1,1], full [1,C,H,W], a scalar-like
    [1]), Sub (multiplier_b < 0) and c − x (multiplier_a < 0); one constant used by two nodes."""
    b = Builder(103)
    x = b.quantize(b.input((2, 6, 5, 4)))
    c = b.conv(x, 6, (3, 3), pads=[1, 1, 1, 1])                 # NHWC
    k = b.const_u8((6, 1, 1), scale=0.02)
    m = b.mul(c, k)
    varied(b, m)
    kf = b.const_u8((1, 6, 5, 4), scale=0.03)
    a = b.add(m, kf)
    d = b.sub(a, k)                                            # a − k: multiplier_b < 0
    e = b.sub(d, b.const_u8((1,), scale=0.1, zp=100), negate_a=True)    # c − d: multiplier_a < 0
    varied(b, e)
    deq_out(b, e)
    deq_out(b, b.mul(x, k, relu=True))                          # logical-order a, same constant
    model = b.model()
    signs = [(n.attrs["multiplier_a"] < 0, n.attrs["multiplier_b"] < 0) for n in model.nodes if n.op == "QAdd"]
    assert signs == [(False, False), (False, True), (True, False)]
    sess, _ = check(b)
    plan = plan_of(sess, b)
    assert len(plan.u8_consts) == 3                             # k once, kf, the [1] constant
    # constants sit in slots that no instruction writes and that overlap no other tensor
    const_offsets = {off for off, _ in plan.u8_consts}
    for s in plan.slots:
        if s.arena == "u8" and s.offset in const_offsets:
            assert s.first == -1 and s.last == plan.code.shape[0]
    ys = [int(r[1 + E.FIELDS[int(r[0])].index("y")]) for r in plan.code
          if int(r[0]) in E.U8_OPERANDS and "y" in E.U8_OPERANDS[int(r[0])]]
    assert not const_offsets & set(ys)


def test_constant_operand_second_plan_and_repeated_runs():
    """A second plan (other batch) gets its own copy of the constants; runs do not clobber them."""
    b = Builder(104)
    x = b.quantize(b.input(("N", 3, 4, 4), calib_shape=(2, 3, 4, 4)))
    deq_out(b, b.mul(b.add(x, b.const_u8((3, 1, 1))), b.const_u8((1, 3, 4, 4), scale=0.01)))
    model = b.model()
    sess = Session(model)
    rng = np.random.default_rng(0)
    for n in (1, 4, 1, 4):
        feeds = {"in1": (rng.standard_normal((n, 3, 4, 4)) * 2).astype(np.float32)}
        ref = runtime_ref.run(model, feeds)
        got = sess.run(feeds)
        out = model.graph_outputs[0].name
        assert np.array_equal(got[out], ref[out])
    assert sess.plan_cache_size == 2


@pytest.mark.parametrize("layout", ["logical", "nhwc"])
def test_slice(layout):
    b = Builder(105)
    x = b.quantize(b.input((2, 8, 7, 6)))
    t = x if layout == "logical" else b.conv(x, 8, (1, 1))
    cases = [
        ([0], [4], [1], [1]),                                   # channel split, first half
        ([4], [2**63 - 1], [1], [1]),                           # second half, "to the end"
        ([-1, 1], [-(2**63), 100], [3, 2], [-2, 2]),            # negative step, clamped end
        ([5, -2], [-100, 0], [-1, 1], [-1, -3]),                # reversed W, channels step -3
        ([1, 0, 2], [2, 8, 5], [0, 1, 2], [1, 3, 1]),           # batch 1 of 2
    ]
    for starts, ends, axes, steps in cases:
        deq_out(b, b.slice(t, starts, ends, axes, steps))
    sess, _ = check(b)
    plan = plan_of(sess, b)
    assert count(plan, E.OP_SLICE) == len(cases)
    nhwc_in = 1 if layout == "nhwc" else 0                     # the conv's input transpose
    assert layout_changes(plan) == nhwc_in + (len(cases) if layout == "nhwc" else 0)


def test_split_into_convs_stays_channels_last(gemm_path):
    """ShuffleNetV2: Split (two Slices on C) of an NHWC tensor feeding convs and a Concat."""
    b = Builder(106)
    x = b.quantize(b.input((1, 8, 6, 6)))
    c = b.conv(x, 16, (1, 1), relu=True)
    left, right = b.slice(c, [0], [8], [1]), b.slice(c, [8], [16], [1])
    r = b.conv(b.conv(right, 8, (3, 3), pads=[1, 1, 1, 1], group=8), 8, (1, 1), relu=True)
    deq_out(b, b.concat([left, r], axis=1))
    sess, _ = check(b)
    assert layout_changes(plan_of(sess, b)) == 2     # graph input, Dequantize


def test_squeeze_unsqueeze_alias_in_any_layout(gemm_path):
    """GAP (NHWC) -> Squeeze -> QGemm -> Unsqueeze -> QMul with the NHWC tensor: no copies;
    Unsqueeze/Squeeze on a channels-last [N,C,H,W] keep its layout (a rank-5 view)."""
    b = Builder(107)
    x = b.quantize(b.input((2, 6, 5, 4)))
    c = b.conv(x, 12, (3, 3), pads=[1, 1, 1, 1])
    g = b.squeeze(b.reducemean(c, [2, 3], keepdims=1), [-1, 2])
    f = b.gemm(g, 12)
    u = b.unsqueeze(f, [2, -1])
    deq_out(b, b.mul(c, u))
    u5 = b.unsqueeze(c, [2])                                   # [N, C, 1, H, W], bytes stay NHWC
    deq_out(b, b.squeeze(b.unsqueeze(u5, [0]), [0, 3]))
    deq_out(b, u5)                                             # rank 5 in logical order
    sess, _ = check(b)
    plan = plan_of(sess, b)
    assert plan.layouts[u] == (0, 1, 2, 3) and plan.layouts[u5] == (0, 3, 4, 1, 2)
    assert plan.layouts[g] == (0, 1)
    # input -> NHWC, then one transpose per Dequantize of an NHWC tensor (3 of them)
    assert layout_changes(plan) == 4


@pytest.mark.parametrize("layout", ["logical", "nhwc"])
def test_pad(layout, gemm_path):
    b = Builder(108)
    x = b.quantize(b.input((2, 4, 5, 6)))
    t = x if layout == "logical" else b.conv(x, 4, (1, 1))
    p = b.pad(t, [0, 0, 1, 2, 0, 0, 3, 0])                      # spatial, value = z (real 0)
    deq_out(b, b.conv(p, 5, (3, 3)))                            # a conv after it: stays NHWC
    deq_out(b, b.pad(t, [1, 2, 0, 0, 0, 1, 0, 1], value=7))    # batch and channel pads
    x2 = b.quantize(b.input((3, 5)))
    deq_out(b, b.pad(x2, [2, 0, 1, 3], value=255))
    check(b)


RESIZE_CASES = [
    ("asymmetric", "floor", [1, 1, 2, 2], None),
    ("half_pixel", "round_prefer_floor", None, [2, 5, 11, 9]),
    ("pytorch_half_pixel", "round_prefer_ceil", [1, 1, 0.6, 1.5], None),
    ("align_corners", "round_prefer_ceil", None, [1, 5, 3, 13]),
    ("tf_half_pixel_for_nn", "ceil", [1, 1, 1.75, 0.5], None),
    ("asymmetric", "floor", None, [2, 5, 1, 1]),
]


@pytest.mark.parametrize("layout", ["logical", "nhwc"])
def test_resize_nearest(layout):
    b = Builder(109)
    x = b.quantize(b.input((2, 5, 6, 7)))
    t = x if layout == "logical" else b.conv(x, 5, (1, 1))
    for coord, nearest, scales, sizes in RESIZE_CASES:
        deq_out(b, b.resize(t, coord, nearest, scales, sizes))
    sess, _ = check(b)
    assert count(plan_of(sess, b), E.OP_RESIZE) == len(RESIZE_CASES)


def test_fpn_resize_add_channels_last(gemm_path):
    b = Builder(110)
    x = b.quantize(b.input((1, 8, 12, 10)))
    top = b.conv(b.conv(x, 16, (3, 3), [2, 2], [1, 1, 1, 1], relu=True), 8, (1, 1))
    up = b.resize(top, scales=[1, 1, 2, 2])
    y = b.add(up, b.conv(x, 8, (1, 1)))
    deq_out(b, b.conv(y, 8, (3, 3), pads=[1, 1, 1, 1]))
    sess, _ = check(b)
    assert layout_changes(plan_of(sess, b)) == 2     # graph input, Dequantize


def _all_ops_model(batch="N", calib=2, hw=32):
    """Every new op on tensors large enough for several parallel chunks per kernel."""
    b = Builder(111)
    x = b.quantize(b.input((batch, 8, hw, hw), calib_shape=(calib, 8, hw, hw)))
    t = b.lut(b.conv(x, 16, (3, 3), pads=[1, 1, 1, 1]), hardswish)
    s = b.lut(b.conv(b.reducemean(t, [2, 3]), 16, (1, 1)), sigmoid)
    m = b.mul(t, s)
    k = b.mul(m, b.const_u8((16, 1, 1), scale=0.02))
    a = b.sub(k, b.const_u8((1, 16, 1, 1)))
    left = b.slice(a, [0, 1], [8, 2**63 - 1], [1, 2], [1, 2])
    right = b.slice(a, [-1], [7], [1], [-1])
    p = b.pad(left, [0, 0, 1, 1, 0, 0, 0, 1])
    r = b.resize(b.conv(right, 8, (3, 3), [2, 2], [1, 1, 1, 1]), "half_pixel", "round_prefer_ceil",
                 scales=[1, 1, 1.5, 2.25])
    deq_out(b, b.squeeze(b.unsqueeze(p, [0]), [0]))
    deq_out(b, r)
    return b


def test_thread_invariance_1_vs_2():
    b = _all_ops_model(batch=2, calib=2)
    outs = [check(b, threads=t)[1] for t in (1, 2)]
    for name in outs[0]:
        assert np.array_equal(outs[0][name], outs[1][name])


def test_symbolic_batch(gemm_path):
    b = _all_ops_model(hw=12)
    model = b.model()
    sess = Session(model)
    rng = np.random.default_rng(5)
    for n in (1, 3, 1):
        feeds = {"in1": (rng.standard_normal((n, 8, 12, 12)) * 2).astype(np.float32)}
        got, ref = sess.run(feeds), runtime_ref.run(model, feeds)
        for io in model.graph_outputs:
            assert got[io.name].shape[0] == n and np.array_equal(got[io.name], ref[io.name])
    assert sess.plan_cache_size == 2


def test_run_time_shape_errors():
    b = Builder(112)
    x = b.quantize(b.input((1, "C", 4, 4), calib_shape=(1, 1, 4, 4)))
    deq_out(b, b.squeeze(x, [1]))
    sess = Session(b.model())
    sess.run({"in1": np.ones((1, 1, 4, 4), np.float32)})
    with pytest.raises(InputError, match="Squeeze"):
        sess.run({"in1": np.ones((1, 2, 4, 4), np.float32)})
    b = Builder(113)
    x = b.quantize(b.input((1, 3, "W"), calib_shape=(1, 3, 6)))
    deq_out(b, b.slice(x, [4], [6], [2]))
    sess = Session(b.model())
    with pytest.raises(InputError, match="Slice"):
        sess.run({"in1": np.ones((1, 3, 3), np.float32)})
