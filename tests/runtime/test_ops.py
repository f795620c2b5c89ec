"""Integer mode vs the spec-level numpy reference, bit for bit, one tiny model per feature."""

from __future__ import annotations

import numpy as np
import pytest
import runtime_ref
from runtime_builder import Builder

from nqrt.kernels import cpu
from nqrt.runtime import encoding as E
from nqrt.runtime.session import Session

PATHS = list(cpu.available_paths())      # "portable" and the host's fast GEMM paths


@pytest.fixture(params=PATHS)
def gemm_path(request, monkeypatch):
    """Run the test with QConv/QGemm on one GEMM path (Session picks it up at load)."""
    monkeypatch.setenv("NQRT_GEMM_PATH", request.param)
    monkeypatch.delenv("NQRT_DISABLE_VNNI", raising=False)
    return request.param


def check(b: Builder, feeds=None, exact=True, threads=None):
    """Run integer mode and the reference; compare every output; return (session, outputs)."""
    model = b.model()
    feeds = feeds or {io.name: b.env[io.name] for io in model.graph_inputs}
    sess = Session(model, threads=threads)
    got = sess.run(feeds)
    ref = runtime_ref.run(model, feeds)
    for io in model.graph_outputs:
        g, r = got[io.name], ref[io.name]
        assert g.dtype == np.float32 and g.shape == r.shape, (g.shape, r.shape)
        if exact:
            bad = np.flatnonzero(g != r)
            assert bad.size == 0, f"{bad.size}/{g.size} differ, first at {bad[:5]}: {g.ravel()[bad[:5]]} vs {r.ravel()[bad[:5]]}"
        else:
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    return sess, got


def not_saturated(b: Builder, name):
    q = b.env[name]
    assert np.unique(q).size > 8, f"{name} degenerate: {np.unique(q)}"


def deq_out(b, t):
    return b.output(b.dequantize(t))


@pytest.mark.parametrize("group,per_channel,strides,pads,dil", [
    (1, True, [1, 1], [1, 1, 1, 1], [1, 1]),
    (2, False, [2, 1], [0, 1, 2, 0], [1, 2]),
])
def test_qconv_2d(group, per_channel, strides, pads, dil, gemm_path):
    b = Builder(1)
    x = b.quantize(b.input((2, 4, 7, 6)))
    y = b.conv(x, 6, (3, 2), strides, pads, dil, group, per_channel)
    not_saturated(b, y)
    deq_out(b, y)
    check(b)


def test_qconv_depthwise_relu(gemm_path):
    b = Builder(2)
    x = b.quantize(b.input((1, 5, 6, 6)))
    y = b.conv(x, 5, (3, 3), [1, 1], [1, 1, 1, 1], group=5, relu=True)
    deq_out(b, y)
    check(b)


def test_qconv_1d_and_maxpool_1d(gemm_path):
    b = Builder(3)
    x = b.quantize(b.input((2, 3, 11)))
    y = b.conv(x, 4, (3,), [2], [1, 2], [1])
    not_saturated(b, y)
    p = b.maxpool(y, (2,), [2], [0, 1], ceil_mode=1)
    deq_out(b, p)
    check(b)


def test_qgemm_rank2_and_rank3(gemm_path):
    b = Builder(4)
    x = b.quantize(b.input((3, 10)))
    y = b.gemm(x, 7, relu=True)
    deq_out(b, y)
    x3 = b.quantize(b.input((2, 3, 5)))
    deq_out(b, b.gemm(x3, 4, per_channel=False))
    check(b)


def test_qadd_broadcast_mixed_layouts(gemm_path):
    b = Builder(5)
    x = b.quantize(b.input((2, 4, 5, 3)))
    c = b.conv(x, 4, (1, 1))                      # channels-last
    v = b.quantize(b.input((4, 1, 1)))            # logical order, broadcast over N, H, W
    w = b.quantize(b.input((3,)))                 # broadcast over the last (W) axis
    s = b.add(c, v, relu=True)
    t = b.add(w, s)                               # b is the full-shape one
    deq_out(b, t)
    check(b)


def test_qadd_of_two_full_operands_in_different_layouts(gemm_path):
    """A channels-last conv output plus a logical-order tensor of the same shape: the second is
    first brought into the first's layout (here fused into its Quantize), so the QAdd reads
    both with the same strides (reading one through transposed strides cost a cache line per
    element: 0.5 ms for 64 K elements)."""
    b = Builder(14)
    x = b.quantize(b.input((2, 4, 6, 5), name="x"))
    c = b.conv(x, 4, (1, 1))                      # channels-last
    v = b.reshape(b.quantize(b.input((2, 4, 30), name="v")), [2, 4, 6, 5])   # logical order
    deq_out(b, b.add(c, v))
    sess, _ = check(b)
    plan = sess.plan_for({"x": (2, 4, 6, 5), "v": (2, 4, 30)})
    (row,) = [r for r in plan.code if int(r[0]) == E.OP_ADD]
    f = dict(zip(E.FIELDS[E.OP_ADD], row[1:]))
    sa, sb = (plan.lpool[f[k]:f[k] + 6] for k in ("a_strides", "b_strides"))
    assert np.array_equal(sa, sb)


def test_qconcat_channels_different_scales(gemm_path):
    b = Builder(6)
    x = b.quantize(b.input((2, 3, 4, 4)))
    c1 = b.conv(x, 2, (1, 1))
    c2 = b.conv(x, 5, (3, 3), pads=[1, 1, 1, 1])
    y = b.concat([c1, c2, c1], axis=1)
    deq_out(b, y)
    sess, _ = check(b)


def test_qconcat_logical_axis_negative():
    b = Builder(7)
    x1 = b.quantize(b.input((3, 4)))
    x2 = b.quantize(b.input((3, 2), scale=5.0))
    deq_out(b, b.concat([x1, x2], axis=-1))
    check(b)


@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_maxpool_2d(ceil_mode):
    b = Builder(8)
    x = b.quantize(b.input((2, 3, 7, 8)))
    y = b.maxpool(x, (3, 2), [2, 2], [1, 0, 1, 1], [1, 2], ceil_mode=ceil_mode, act=(10, 200))
    deq_out(b, y)
    check(b)


@pytest.mark.parametrize("ceil_mode,cip", [(0, 0), (1, 1), (1, 0)])
def test_qaveragepool(ceil_mode, cip):
    b = Builder(9)
    x = b.quantize(b.input((1, 3, 7, 6)))
    y = b.avgpool(x, (3, 3), [2, 2], [1, 1, 0, 1], ceil_mode=ceil_mode, count_include_pad=cip)
    deq_out(b, y)
    x1 = b.quantize(b.input((2, 2, 9)))
    deq_out(b, b.avgpool(x1, (4,), [3], [2, 1], ceil_mode=ceil_mode, count_include_pad=cip))
    check(b)


def test_qreducemean_spatial_and_other_axes():
    b = Builder(10)
    x = b.quantize(b.input((2, 3, 5, 4)))
    c = b.conv(x, 6, (1, 1))
    g = b.reducemean(c, [2, 3], keepdims=1)             # global average pool on NHWC data
    deq_out(b, b.flatten(g))
    deq_out(b, b.reducemean(c, [1], keepdims=0))         # over channels
    deq_out(b, b.reducemean(c, [1, 3], keepdims=1))      # non-adjacent axes
    check(b)


def test_qreducemean_sum_flag():
    """sum = 1 (ONNX ReduceSum): the same integer sum with M = s_x / s_y, kept as stored when
    the run-time count differs from the converter's (H symbolic, calibrated at 5, run at 9)."""
    b = Builder(13)
    x = b.quantize(b.input((2, 3, "H", 4), calib_shape=(2, 3, 5, 4)))
    c = b.conv(x, 6, (1, 1))
    deq_out(b, b.reducemean(c, [1], keepdims=0, total=True))
    deq_out(b, b.reducemean(c, [2, 3], keepdims=1, total=True))
    model = b.model()
    feeds = {"in1": np.random.default_rng(1).standard_normal((2, 3, 9, 4)).astype(np.float32)}
    check(b, feeds)
    assert [n.attrs.get("sum") for n in model.nodes if n.op == "QReduceMean"] == [1, 1]


def test_qreducemean_recomputes_multiplier_for_runtime_count():
    b = Builder(11)
    x = b.quantize(b.input((1, 3, "H", 4), calib_shape=(1, 3, 5, 4)))
    g = b.reducemean(x, [2, 3], keepdims=0)
    deq_out(b, g)
    model = b.model()
    feeds = {"in1": np.random.default_rng(0).standard_normal((1, 3, 9, 4)).astype(np.float32)}
    check(b, feeds)
    assert model.nodes[1].attrs["count"] == 20


def test_qclip_reshape_after_conv_transpose():
    b = Builder(12)
    x = b.quantize(b.input((2, 3, 4, 5)))
    c = b.conv(x, 4, (3, 3), pads=[1, 1, 1, 1])
    k = b.clip(c, 30, 220)
    r = b.reshape(k, [0, -1, 10])          # needs logical order: NHWC -> NCHW transpose
    deq_out(b, r)
    t = b.transpose(k, [0, 2, 3, 1])       # NCHW -> NHWC relabels channels-last bytes: no copy
    deq_out(b, t)
    sess, _ = check(b)
    names = sess.plan_for({"in1": (2, 3, 4, 5)}).describe()
    # input to NHWC, conv output back to NCHW for the Reshape: both fused with the boundary
    assert names.count("OP_QUANTIZE_T(") == 1 and names.count("OP_DEQUANTIZE_T(") == 1
    assert names.count("OP_TRANSPOSE_U8") == 0


def test_softmax_after_dequantize():
    b = Builder(13)
    x = b.quantize(b.input((3, 12)))
    y = b.gemm(x, 5)
    b.output(b.softmax(b.dequantize(y), axis=1))
    check(b, exact=False)


def test_symbolic_batch_1_and_5(gemm_path):
    b = Builder(14)
    x = b.quantize(b.input(("N", 3, 6, 6), calib_shape=(2, 3, 6, 6)))
    c = b.conv(x, 4, (3, 3), [2, 2], [1, 1, 1, 1], relu=True)
    p = b.maxpool(c, (2, 2), [2, 2])
    f = b.flatten(p)
    deq_out(b, b.gemm(f, 3))
    model = b.model()
    rng = np.random.default_rng(1)
    sess = Session(model)
    for n in (1, 5, 1):
        feeds = {"in1": rng.standard_normal((n, 3, 6, 6)).astype(np.float32) * 2}
        got = sess.run(feeds)
        ref = runtime_ref.run(model, feeds)
        out = model.graph_outputs[0].name
        assert got[out].shape == (n, 3)
        assert np.array_equal(got[out], ref[out])
    assert sess.plan_cache_size == 2


def test_conv_net_paths_and_threads_agree(gemm_path):
    """Convs big enough to run on two threads (3x3, grouped, strided 1x1, pointwise, 7x7 stem
    on 3 channels) and a QGemm, batch 3: exact vs the reference with 1 and 2 threads, and the
    plan records the path."""
    b = Builder(40)
    x = b.quantize(b.input((3, 3, 20, 18)))
    s = b.conv(x, 16, (7, 7), [2, 2], [3, 3, 3, 3], relu=True)
    c = b.conv(s, 32, (3, 3), pads=[1, 1, 1, 1], relu=True)
    g = b.conv(c, 32, (3, 3), pads=[1, 0, 1, 2], group=2)
    d = b.conv(g, 24, (1, 1), [2, 2])
    p = b.conv(d, 40, (1, 1))
    not_saturated(b, p)
    deq_out(b, b.gemm(b.flatten(p), 50))
    outs = []
    for threads in (1, 2):
        sess, got = check(b, threads=threads)
        outs.append(got)
    assert all(np.array_equal(outs[0][k], outs[1][k]) for k in outs[0])
    plan = sess.plan_for({"in1": (3, 3, 20, 18)})
    assert plan.path == gemm_path and int(plan.lpool[0]) == E.PATH_IDS[gemm_path]


def test_profile_hook_runs_each_instruction():
    """interpreter.profile: per-instruction timings, and the plan still computes its outputs."""
    from nqrt.runtime import interpreter
    b = Builder(41)
    x = b.quantize(b.input((1, 3, 8, 8)))
    deq_out(b, b.conv(x, 4, (3, 3), pads=[1, 1, 1, 1]))
    sess, got = check(b)
    model = b.model()
    iname = model.graph_inputs[0].name
    bound = sess._bound({iname: (1, 3, 8, 8)})
    p = bound.plan
    (name0, shape0), = p.inputs
    x = np.ascontiguousarray(b.env[name0], dtype=np.float32)
    outs = bound.bind([x])
    t = interpreter.profile(*bound.args, repeats=2)
    assert t.shape == (p.code.shape[0],) and (t > 0).all()
    name = next(iter(p.outputs))
    assert np.array_equal(outs[name], got[name])


def test_instruction_runner_runs_one_instruction():
    """interpreter.instruction_runner: instruction i alone (the kernel benchmarks' layer rows).
    From a cleared arena and NaN outputs, running the instructions one by one in order computes
    what the whole plan computes; running only the first leaves the output untouched."""
    from nqrt.runtime import interpreter
    b = Builder(43)
    x = b.quantize(b.input((2, 5, 9, 7)))
    deq_out(b, b.conv(x, 6, (3, 3), pads=[1, 1, 1, 1]))
    sess, got = check(b)
    iname = b.model().graph_inputs[0].name
    bound = sess._bound({iname: (2, 5, 9, 7)})
    p = bound.plan
    (name0, _), = p.inputs
    xin = np.ascontiguousarray(b.env[name0], dtype=np.float32)
    outs = bound.bind([xin])
    name = next(iter(p.outputs))
    outs[name][...] = np.nan
    bound.u8[:] = 0
    p.init_u8(bound.u8)
    runners = [interpreter.instruction_runner(*bound.args, i) for i in range(p.code.shape[0])]
    assert len(runners) >= 3            # quantize, conv, dequantize
    runners[0]()
    assert np.isnan(outs[name]).all()
    for run in runners[1:]:
        run()
    assert np.array_equal(outs[name], got[name])
