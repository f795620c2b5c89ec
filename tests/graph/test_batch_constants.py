"""Constants broadcast over the run-time batch (passes/batch_constants.py) against ONNX
Runtime at batches 1 and 3: a mask ConstantOfShape([N, H, W]) and the sinusoidal position
encoding computed from it (DETR / EdgeNeXt) fold per batch row, and whatever mixes batch
rows (a reduction, a cumulative sum or a softmax over the batch, a Transpose that moves it,
a Reshape that merges it) is left alone, so the values stay right."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from _graph_helpers import Builder, assert_matches_ort, op_counts
from nqrt.converter import build_model
from nqrt.runtime.session import Session


def _mask(b: Builder, x: str, h: int, w: int, value=None) -> str:
    """ConstantOfShape([N, h, w]) with N read from x at run time (the exporter's form)."""
    n = b.op("Gather", [b.op("Shape", [x]), b.const([0], np.int64)], axis=0)
    shape = b.op("Concat", [n, b.const([h, w], np.int64)], axis=0)
    kw = {} if value is None else {"value": numpy_helper.from_array(np.array([value], np.float32))}
    return b.op("ConstantOfShape", [shape], **kw)


def position_encoding_model(opset=13):
    """DETR's PositionEmbeddingSine on a mask of zeros (no padding), projected by a 1x1 conv
    (EdgeNeXt) and added to the features."""
    b = Builder(opset=opset, seed=3)
    feat = b.op("Relu", [b.op("Conv", ["x", b.weight(8, 3, 3, 3)], pads=[1, 1, 1, 1])])   # [N, 8, 5, 6]
    mask = b.op("Cast", [_mask(b, "x", 5, 6)], to=9)                                     # bool, all False
    not_mask = b.op("Cast", [b.op("Not", [mask])], to=1)
    y_embed = b.op("CumSum", [not_mask, b.const(1, np.int64)])
    x_embed = b.op("CumSum", [not_mask, b.const(2, np.int64)])
    last_y = b.op("Slice", [y_embed, b.const([-1], np.int64), b.const([2**31], np.int64), b.const([1], np.int64)])
    y_embed = b.op("Mul", [b.op("Div", [y_embed, b.op("Add", [last_y, b.const(np.float32(1e-6))])]),
                           b.const(np.float32(2 * np.pi))])
    dim_t = b.const((10000.0 ** (2 * (np.arange(4) // 2) / 4)).astype(np.float32))
    pos = []
    for e in (y_embed, x_embed):
        p = b.op("Div", [b.op("Unsqueeze", [e, b.const([3], np.int64)]), dim_t])        # [N, 5, 6, 4]
        s = b.op("Sin", [b.op("Slice", [p, b.const([0], np.int64), b.const([4], np.int64),
                                        b.const([3], np.int64), b.const([2], np.int64)])])
        c = b.op("Cos", [b.op("Slice", [p, b.const([1], np.int64), b.const([4], np.int64),
                                        b.const([3], np.int64), b.const([2], np.int64)])])
        st = b.op("Concat", [b.op("Unsqueeze", [s, b.const([4], np.int64)]),
                             b.op("Unsqueeze", [c, b.const([4], np.int64)])], axis=4)  # [N, 5, 6, 2, 2]
        pos.append(b.op("Reshape", [st, b.const([0, 5, 6, -1], np.int64)]))
    pos = b.op("Transpose", [b.op("Concat", pos, axis=3)], perm=[0, 3, 1, 2])           # [N, 8, 5, 6]
    pos = b.op("Conv", [pos, b.weight(8, 8, 1, 1), b.weight(8)])
    y = b.op("Conv", [b.op("Add", [feat, pos]), b.weight(4, 8, 1, 1)])
    return b.model([("x", ["N", 3, 5, 6])], [y])


def test_position_encoding_from_a_batch_mask_folds_per_row():
    model = position_encoding_model()
    g = assert_matches_ort(model, {"x": (3, 5, 6)})
    assert op_counts(g) == {"Conv": 2, "Add": 1}                 # no mask, no Expand left (Relu fused)
    rng = np.random.default_rng(0)
    nq = build_model(model, {"x": rng.standard_normal((16, 3, 5, 6)).astype(np.float32)})
    x = rng.standard_normal((3, 3, 5, 6)).astype(np.float32)
    from _graph_helpers import ort_run
    ref = ort_run(model, {"x": x})[0]
    got = next(iter(Session(nq).run({"x": x}).values()))
    err = got - ref
    assert 10 * np.log10((ref ** 2).sum() / (err ** 2).sum()) > 30


# Ops that mix batch rows or move the batch off axis 0: the row must not be folded through
# them.  On a [N, 1, 3] mask a row folded through the last two would still have batch dim 1,
# so only the op rules (not the shape of the result) keep them out.
MIXING = {
    "reduce_over_batch": lambda b, m: b.op("ReduceSum", [m, b.const([0], np.int64)], keepdims=1),
    "cumsum_over_batch": lambda b, m: b.op("CumSum", [m, b.const(0, np.int64)]),
    "softmax_over_batch": lambda b, m: b.op("Softmax", [m], axis=0),
    "transpose_moves_batch": lambda b, m: b.op("Transpose", [m], perm=[1, 0, 2]),        # [1, N, 3]
    "reshape_moves_batch": lambda b, m: b.op("Reshape", [m, b.const([1, -1, 3], np.int64)]),
}


@pytest.mark.parametrize("case", sorted(MIXING))
def test_ops_that_mix_batch_rows_are_not_folded_per_row(case):
    """Each case feeds a batch mask (ones, cumulated along W) through the op, then adds it to
    the input: at batch 3 the values or the shape differ from batch 1's (a sum over the batch
    is 3 times the row, the cumulative sum 1, 2, 3 times, the softmax 1/3; a batch moved to
    axis 1 broadcasts to [N, N, 3]), and must match ONNX Runtime."""
    b = Builder(opset=13)
    m = b.op("CumSum", [_mask(b, "x", 1, 3, value=1.0), b.const(2, np.int64)])
    y = b.op("Add", ["x", MIXING[case](b, m)])
    assert_matches_ort(b.model([("x", ["N", 1, 3])], [y]), {"x": (1, 3)}, batches=(1, 3))


def test_batch_constant_next_to_a_run_time_tensor_is_read_as_its_row():
    """Mul(x, f(mask)) with x carrying the batch: the Expand over the batch goes, the row is
    broadcast by the Mul itself; a batch constant that is a graph output stays an Expand."""
    b = Builder(opset=13)
    m = b.op("Add", [_mask(b, "x", 4, 3, value=1.0), b.const(np.float32(0.5))])
    y = b.op("Mul", ["x", m])
    z = b.op("Sin", [m])
    g = assert_matches_ort(b.model([("x", ["N", 4, 3])], [y, z]), {"x": (4, 3)})
    assert op_counts(g) == {"Mul": 1, "Expand": 1}
    (e,) = [n for n in g.nodes if n.op == "Expand"]
    assert e.outputs == [z] and e.attrs["like_shape"] == [-1, 4, 3]
