"""Planner structure: shapes, layouts, transposes, aliasing, arena reuse and non-overlap."""

from __future__ import annotations

import numpy as np
import pytest
import runtime_ref
from runtime_builder import Builder

from nqrt.runtime import encoding as E
from nqrt.runtime import layout as L
from nqrt.runtime import planner
from nqrt.runtime.session import Session


def _plan(b: Builder, shapes=None):
    m = b.model()
    shapes = shapes or {io.name: b.env[io.name].shape for io in m.graph_inputs}
    return m, planner.plan(m, planner.prepare(m), shapes, nthreads=2)


def _ops(p):
    return [E.OP_NAMES[int(r[0])] for r in p.code]


def _chain(depth=6):
    b = Builder(31)
    t = b.quantize(b.input((1, 4, 6, 6)))
    for _ in range(depth):
        t = b.conv(t, 4, (3, 3), pads=[1, 1, 1, 1])
    b.output(b.dequantize(t))
    return b


def test_no_live_overlap_and_reuse():
    b = _chain(6)
    m, p = _plan(b)
    u8 = [s for s in p.slots if s.arena == "u8"]
    for i, s in enumerate(u8):
        for t in u8[i + 1:]:
            if s.first <= t.last and t.first <= s.last:          # live at the same time
                assert s.offset + s.size <= t.offset or t.offset + t.size <= s.offset, (s, t)
    # 7 u8 tensors of 144 bytes (the quantized input, written in NHWC, 6 convs) fit in 2-3 slots
    assert sum(s.size for s in u8) >= 7 * 144
    assert p.u8_size <= 3 * 192
    offsets = {s.offset for s in u8}
    assert len(offsets) < len(u8)                                # reuse happened


def test_layouts_and_inserted_transposes():
    b = Builder(32)
    x = b.quantize(b.input((2, 3, 5, 5)))
    c = b.conv(x, 4, (3, 3))
    f = b.flatten(c)
    b.output(b.dequantize(b.gemm(f, 2)))
    m, p = _plan(b)
    # the graph input's Quantize and its transpose to NHWC are one instruction
    assert _ops(p) == ["OP_QUANTIZE_T", "OP_CONV", "OP_TRANSPOSE_U8", "OP_GEMM", "OP_DEQUANTIZE"]
    assert p.layouts[c] == (0, 2, 3, 1) and p.shapes[c] == (2, 4, 3, 3)
    assert p.layouts[f] == (0, 1) and p.shapes[f] == (2, 36)
    # Flatten aliases its (transposed) input: same slot, no copy
    names = {n: s for s in p.slots for n in s.names}
    assert names[f] is names[f"{c}@0123"]


def test_global_pool_keepdims_then_flatten_needs_no_transpose():
    b = Builder(33)
    x = b.quantize(b.input((2, 3, 4, 4)))
    c = b.conv(x, 6, (1, 1))
    g = b.reducemean(c, [2, 3], keepdims=1)
    b.output(b.dequantize(b.flatten(g)))
    m, p = _plan(b)
    assert _ops(p).count("OP_TRANSPOSE_U8") == 0           # only the graph input to NHWC ...
    assert _ops(p).count("OP_QUANTIZE_T") == 1             # ... fused with its Quantize
    assert p.shapes[g] == (2, 6, 1, 1)


def test_transpose_op_is_free_and_concat_axis_maps_to_physical():
    b = Builder(34)
    x = b.quantize(b.input((1, 3, 4, 4)))
    c1, c2 = b.conv(x, 2, (1, 1)), b.conv(x, 3, (1, 1))
    y = b.concat([c1, c2], axis=1)
    t = b.transpose(y, [0, 2, 3, 1])
    b.output(b.dequantize(t))
    m, p = _plan(b)
    ops = _ops(p)
    assert ops.count("OP_TRANSPOSE_U8") == 0 and ops.count("OP_QUANTIZE_T") == 1   # input to NHWC
    assert ops.count("OP_REQUANT_COPY") == 2
    rc = [r for r in p.code if r[0] == E.OP_REQUANT_COPY]
    f = E.FIELDS[E.OP_REQUANT_COPY]
    get = lambda r, n: int(r[1 + f.index(n)])  # noqa: E731
    # channels-last concat of C=2 and C=3 over R = N*H*W rows
    assert [(get(r, "R"), get(r, "Cx"), get(r, "Cy"), get(r, "col_offset")) for r in rc] == [(16, 2, 5, 0), (16, 3, 5, 2)]
    assert p.layouts[t] == (0, 1, 2, 3)                    # NHWC bytes are logical order for t


def test_channel_shuffle_of_a_channels_last_tensor_moves_bytes_once():
    """Reshape (N, C, H, W) -> (N, 2, C/2, H, W), Transpose(0, 2, 1, 3, 4), Reshape back: the
    first Reshape and the Transpose relabel the NHWC bytes, the second Reshape needs one byte
    transpose and leaves the result channels-last for the next conv; the integer result
    equals the spec reference."""
    b = Builder(35)
    x = b.quantize(b.input((2, 3, 5, 5)))
    c = b.conv(x, 8, (1, 1))
    r5 = b.reshape(c, [0, 2, -1, 5, 5])
    t5 = b.transpose(r5, [0, 2, 1, 3, 4])
    r4 = b.reshape(t5, [0, -1, 5, 5])
    b.output(b.dequantize(b.conv(r4, 4, (1, 1))))
    m, p = _plan(b)
    assert _ops(p).count("OP_TRANSPOSE_U8") == 1
    assert p.layouts[r5] == (0, 3, 4, 1, 2) and p.layouts[r4] == (0, 2, 3, 1)
    feeds = {io.name: b.env[io.name] for io in m.graph_inputs}
    got = Session(m, threads=2).run(feeds)
    want = runtime_ref.run(m, feeds)
    for k, v in got.items():
        assert np.array_equal(v, np.asarray(want[k], np.float32))


def test_conv_multiplier_per_tensor_is_expanded():
    b = Builder(35)
    x = b.quantize(b.input((1, 2, 3, 3)))
    b.output(b.dequantize(b.conv(x, 5, (1, 1), per_channel=False)))
    m = b.model()
    c = planner.prepare(m)
    node = next(i for i, n in enumerate(m.nodes) if n.op == "QConv")
    mult = c.ipool[c.node[node]["mult"]:c.node[node]["mult"] + 5]
    assert mult.size == 5 and np.all(mult == m.tensor(m.nodes[node].inputs[3]).data[0])


def test_encoding_rows_are_complete():
    for op, names in E.FIELDS.items():
        row = E.encode_row(op, {n: i + 1 for i, n in enumerate(names)})
        assert row[0] == op and row[1:1 + len(names)] == list(range(1, len(names) + 1)) and len(row) == E.WIDTH
        for n in E.U8_OPERANDS.get(op, ()) + E.F32_OPERANDS.get(op, ()):
            assert n in names


def test_gemm_path_packing_and_scratch_per_instruction():
    """prepare() packs for the chosen GEMM path; every QConv/QGemm row names the scratch prefix
    it uses (sized for the plan's threads) and lpool[0] names the path."""
    from nqrt.kernels import cpu
    b = Builder(36)
    x = b.quantize(b.input((2, 8, 9, 9)))
    c = b.conv(x, 16, (3, 3), pads=[1, 1, 1, 1])
    b.output(b.dequantize(b.gemm(b.flatten(c), 10)))
    m = b.model()
    for path in cpu.available_paths():
        consts = planner.prepare(m, path=path)
        assert consts.path == path
        p1 = planner.plan(m, consts, {"in1": (2, 8, 9, 9)}, nthreads=1)
        p2 = planner.plan(m, consts, {"in1": (2, 8, 9, 9)}, nthreads=2)
        for p in (p1, p2):
            assert int(p.lpool[0]) == E.PATH_IDS[path] and p.path == path
            for op in (E.OP_CONV, E.OP_GEMM):
                f = E.FIELDS[op]
                for r in p.code[p.code[:, 0] == op]:
                    need = int(r[1 + f.index("scratch")])
                    assert 0 <= need <= p.scratch_size
        if path != "portable":
            conv_need = [int(r[1 + E.FIELDS[E.OP_CONV].index("scratch")])
                         for p in (p1, p2) for r in p.code if r[0] == E.OP_CONV]
            assert conv_need[1] == 2 * conv_need[0] > 0        # one slice per thread
    try:
        planner.prepare(m, path="sse9")
    except ValueError:
        pass
    else:
        raise AssertionError("unknown path accepted")


def test_boundary_quantize_and_dequantize_fuse_with_their_transposes():
    """Quantize -> transpose into NHWC and transpose back -> Dequantize each become one
    instruction, unless the uint8 tensor between them has another reader (here the input's
    quantized NCHW bytes also feed a Dequantize directly)."""
    b = Builder(35)
    x = b.quantize(b.input((2, 3, 6, 5)))
    c = b.conv(x, 4, (3, 3), pads=[1, 1, 1, 1])
    b.output(b.dequantize(c))
    m, p = _plan(b)
    assert _ops(p) == ["OP_QUANTIZE_T", "OP_CONV", "OP_DEQUANTIZE_T"]
    b2 = Builder(35)
    x = b2.quantize(b2.input((2, 3, 6, 5)))
    b2.output(b2.dequantize(b2.conv(x, 4, (3, 3), pads=[1, 1, 1, 1])))
    b2.output(b2.dequantize(x))
    m2, p2 = _plan(b2)
    ops = _ops(p2)
    assert ops.count("OP_QUANTIZE") == 1 and ops.count("OP_TRANSPOSE_U8") == 1
    assert ops.count("OP_QUANTIZE_T") == 0 and ops.count("OP_DEQUANTIZE_T") == 1
    for model in (m, m2):
        feeds = {io.name: np.random.default_rng(1).standard_normal((2, 3, 6, 5)).astype(np.float32)
                 for io in model.graph_inputs}
        got = Session(model).run(feeds)
        ref = runtime_ref.run(model, feeds)
        assert got and all(np.array_equal(got[k], ref[k]) for k in got)


@pytest.mark.parametrize("shape,perm,target", [
    ((2, 8, 3, 3), (0, 2, 3, 1), (2, 2, 4, 3, 3)),      # channel split of NHWC: relabel
    ((2, 4, 2, 3, 3), (0, 3, 4, 2, 1), (2, 8, 3, 3)),   # merge of reversed dims: one copy
    ((2, 8, 3, 3), (0, 2, 3, 1), (2, 72)),               # flatten of NHWC: logical order first
    ((2, 8, 1, 1), (0, 2, 3, 1), (2, 8)),
    ((2, 8, 3, 3), (0, 2, 3, 1), (2, 8, 9)),             # merge H, W of NHWC: relabel
    ((1, 6, 4), (0, 2, 1), (1, 1, 6, 4)),                # size-1 dims inserted
    ((3, 4), (1, 0), (12,)),
    ((2, 3, 4), (2, 0, 1), (4, 6)),
    ((6, 1, 5), (2, 1, 0), (3, 2, 5, 1)),
])
def test_reshape_layouts_relabel_the_right_bytes(shape, perm, target):
    """Bytes of x in layout src, read as the reshaped tensor in layout out, are x.reshape:
    checked with numpy for splits, merges, reversed dims and size-1 dims."""
    src, out = L.reshape_layouts(shape, perm, target)
    assert sorted(src) == list(range(len(shape))) and sorted(out) == list(range(len(target)))
    x = np.arange(int(np.prod(shape))).reshape(shape)
    assert np.array_equal(x.transpose(src).ravel(), x.reshape(target).transpose(out).ravel())
    copies = not L.same_bytes(shape, perm, src)
    assert copies == ((shape, perm) in {((2, 4, 2, 3, 3), (0, 3, 4, 2, 1)), ((3, 4), (1, 0)),
                                        ((2, 3, 4), (2, 0, 1))} or target == (2, 72))
