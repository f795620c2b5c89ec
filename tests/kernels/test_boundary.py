"""Quantize fused with a transpose (graph inputs) and a transpose fused with Dequantize (graph
outputs): bit for bit the naive spec-3.1 Quantize / Dequantize composed with numpy's
transpose, on the 16 x 16 tile path, the 2..4-row interleave path, the scalar tails and the
row path, for one and two threads."""

import numpy as np
import pytest

import naive
from kernels._util import with_threads
from nqrt.kernels.boundary import dequantize_transpose_u8, quantize_transpose_f32
from nqrt.runtime import layout as L

# (logical shape, source layout, destination layout): NCHW -> NHWC of inputs with 1..128
# channels (C = 2..4: interleaves; C >= 16: tiles plus tails), odd spatial sizes (tails), a
# rank-5 and a rank-3 case, a plain 2-D transpose and a permutation with no 2-D structure.
CASES = [((N, C, H, W), (0, 1, 2, 3), (0, 2, 3, 1))
         for N, C, H, W in [(1, 1, 3, 5), (2, 2, 4, 9), (1, 3, 17, 33), (2, 4, 5, 7), (1, 5, 6, 6),
                            (2, 16, 7, 9), (1, 17, 16, 16), (2, 40, 9, 11), (1, 128, 14, 14)]]
CASES += [((2, 3, 4, 5, 6), (0, 1, 2, 3, 4), (0, 2, 3, 4, 1)), ((3, 40, 50), (0, 1, 2), (0, 2, 1)),
          ((64, 300), (0, 1), (1, 0)), ((2, 3, 4), (0, 1, 2), (2, 0, 1)),
          ((2, 130, 40), (0, 1, 2), (0, 2, 1))]       # > CHUNK elements: the parallel loop
# > CHUNK elements and few channel rows: the dequantize splits them into tasks of 16..32 rows
CASES += [((1, C, H, H), (0, 1, 2, 3), (0, 2, 3, 1)) for C, H in [(48, 20), (64, 17)]]


def _args(shape, src, dst):
    shape6, perm6 = L.transpose_args(shape, src, dst)
    return np.array(shape6, np.int64), np.array(perm6, np.int64)


def _physical(a, layout):
    """The bytes of logical array a stored in `layout` (a permutation of its dims)."""
    return np.ascontiguousarray(a.transpose(layout))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape,src,dst", CASES)
def test_quantize_transpose(shape, src, dst, threads):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, 4)] = np.nan
    flat[rng.integers(0, flat.size, 2)] = np.inf
    flat[rng.integers(0, flat.size, 2)] = -np.inf
    s, z = np.float32(0.0371), 119
    want = _physical(naive.quantize(x, s, z), dst).ravel()
    y = np.full(x.size, 7, np.uint8)
    with_threads(threads, quantize_transpose_f32, _physical(x, src).ravel(), s, z,
                 *_args(shape, src, dst), y)
    assert np.array_equal(y, want)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape,src,dst", CASES)
def test_dequantize_transpose(shape, src, dst, threads):
    """The output direction: stored in `dst` (the runtime layout), written back in `src`."""
    rng = np.random.default_rng(sum(shape) + 1)
    q = rng.integers(0, 256, shape).astype(np.uint8)
    s, z = np.float32(0.0213), 77
    want = _physical(naive.dequantize(q, s, z), src).ravel()
    y = np.full(q.size, 7.0, np.float32)
    with_threads(threads, dequantize_transpose_u8, _physical(q, dst).ravel(), s, z,
                 *_args(shape, dst, src), y)
    assert np.array_equal(y, want)
