"""Slice / Pad / ResizeNearest kernels (spec 4.11, 4.13, 4.14) with their plan-time geometry
helpers: bit-exact vs tests/naive.py on logical and channels-last layouts, thread-count
independent."""

import itertools

import numpy as np
import pytest

import naive
from kernels._util import with_threads
from nqrt.kernels import movement as mv

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)


def _physical(x, perm):
    return np.ascontiguousarray(x.transpose(perm)) if perm is not None else np.ascontiguousarray(x)


def _run_both(kernel, args, y):
    """Run with 2 and 1 threads; both must agree."""
    kernel(*args[:-1], y)
    y1 = np.zeros_like(y)
    with_threads(1, kernel, *args[:-1], y1)
    assert np.array_equal(y, y1)
    return y


# ---- Slice ---------------------------------------------------------------------------------

SLICES = [
    ((2, 7, 9, 4), [1, -3], [INT64_MAX, 1], [2, 3], [1, -2]),      # negative step, sentinel end
    ((5, 6), [-10], [-20], [0], [-1]),                              # start < -d, step < 0: clamps to 0
    ((5, 6), [4], [INT64_MIN], [1], [-1]),                          # reverse the whole axis
    ((3, 4, 5), [0, 0, 0], [1, 2, 5], [0, 1, 2], [1, 1, 2]),
    ((2, 3, 4, 5, 6, 7), [1, 5], [3, 0], [3, 5], [1, -3]),          # rank 6
    ((2, 3, 4, 5, 6, 7, 2), [0], [1], [6], [1]),                    # rank 7, a dim becomes 1
    ((4, 6), [2], [2], [1], [1]),                                   # empty output
    ((1, 16, 3, 3), [8], [16], [1], [1]),                           # Split's second half
]


@pytest.mark.parametrize("perm", [None, "nhwc"])
@pytest.mark.parametrize("shape, starts, ends, axes, steps", SLICES)
def test_slice_matches_naive(shape, starts, ends, axes, steps, perm):
    rng = np.random.default_rng(len(shape))
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    p = None if perm is None else [0] + list(range(2, len(shape))) + [1]
    want = naive.slice_(x, starts, ends, axes, steps)
    offset, shape6, strides6 = mv.slice_args(x.shape, starts, ends, axes, steps, p)
    y = np.zeros(want.size, np.uint8)
    _run_both(mv.slice_u8, (_physical(x, p).ravel(), offset, shape6, strides6, y), y)
    assert np.array_equal(y, _physical(want, p).ravel())


def test_slice_range_is_onnx_clamping():
    assert mv.slice_range(-10, -20, -1, 5) == (0, 1)
    assert mv.slice_range(-1, INT64_MIN, -1, 5) == (4, 5)
    assert mv.slice_range(1, INT64_MAX, 2, 6) == (1, 3)
    assert mv.slice_range(7, 9, 1, 5) == (5, 0)
    with pytest.raises(ValueError):
        mv.slice_range(0, 1, 0, 5)


# ---- Pad -----------------------------------------------------------------------------------

@pytest.mark.parametrize("perm", [None, "nhwc"])
@pytest.mark.parametrize("shape, pads", [
    ((2, 3, 5, 4), [0, 0, 1, 2, 0, 0, 3, 0]),
    ((1, 8, 1, 1), [0, 1, 0, 0, 0, 2, 0, 0]),
    ((6,), [3, 4]),
    ((2, 2, 2, 2, 2, 3), [1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 2]),
    ((3, 4), [0, 0, 0, 0]),
])
def test_pad_matches_naive(shape, pads, perm):
    rng = np.random.default_rng(sum(pads))
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    p = None if perm is None or len(shape) < 3 else [0] + list(range(2, len(shape))) + [1]
    value = 77
    want = naive.pad(x, pads, value)
    in6, begin6, out6 = mv.pad_args(x.shape, pads, p)
    y = np.zeros(want.size, np.uint8)
    _run_both(mv.pad_u8, (_physical(x, p).ravel(), in6, begin6, out6, value, y), y)
    assert np.array_equal(y, _physical(want, p).ravel())


# ---- ResizeNearest -----------------------------------------------------------------------

COORDS = ["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel", "tf_half_pixel_for_nn"]
NEAREST = ["floor", "ceil", "round_prefer_floor", "round_prefer_ceil"]


@pytest.mark.parametrize("coord, nearest", list(itertools.product(COORDS, NEAREST)))
def test_resize_nearest_modes_match_naive(coord, nearest):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 3, 5, 7), dtype=np.uint8)
    p = [0, 2, 3, 1]
    for scales, sizes in (([1.0, 1.0, 2.0, 2.0], None), ([1.0, 1.0, 0.6, 1.7], None),
                          (None, [2, 3, 9, 4]), (None, [1, 2, 1, 14])):
        want = naive.resize_nearest(x, coord, nearest, scales=scales, sizes=sizes)
        for perm in (None, p):
            in6, out6, index = mv.resize_args(x.shape, coord, nearest, scales=scales, sizes=sizes,
                                              perm=perm)
            y = np.zeros(want.size, np.uint8)
            _run_both(mv.resize_nearest_u8, (_physical(x, perm).ravel(), in6, out6, index, y), y)
            assert np.array_equal(y, _physical(want, perm).ravel()), (scales, sizes, perm)


def test_resize_index_tables_by_hand():
    """Hand-checked tables: x2 nearest of 3 -> 6, and the half_pixel tie at x = 0.5 / 2.5."""
    assert mv.resize_nearest_index(3, 6, 2.0, "asymmetric", "floor").tolist() == [0, 0, 1, 1, 2, 2]
    # half_pixel with s = 0.5: o=0 -> x = 0.5, o=1 -> x = 2.5: ties
    assert mv.resize_nearest_index(6, 3, 0.5, "half_pixel", "round_prefer_floor").tolist() == [0, 2, 4]
    assert mv.resize_nearest_index(6, 3, 0.5, "half_pixel", "round_prefer_ceil").tolist() == [1, 3, 5]
    assert mv.resize_nearest_index(4, 7, 7 / 4, "align_corners", "round_prefer_floor").tolist() == \
        [0, 0, 1, 1, 2, 2, 3]   # x = o * 3 / 6: 0, .5, 1, 1.5, 2, 2.5, 3 (ties to floor)
    assert mv.resize_output_length(5, np.float32(0.6)) == 3 and mv.resize_output_length(7, 1.7) == 11


def test_resize_rank_beyond_six_with_unit_dims():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(1, 1, 2, 1, 3, 1, 4)
    scales = [1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 2.0]
    want = naive.resize_nearest(x, "asymmetric", "floor", scales=scales)
    in6, out6, index = mv.resize_args(x.shape, "asymmetric", "floor", scales=scales)
    y = np.zeros(want.size, np.uint8)
    mv.resize_nearest_u8(x.ravel(), in6, out6, index, y)
    assert np.array_equal(y, want.ravel())


@pytest.mark.parametrize("C", [5, 16, 24])
def test_resize_nearest_channels_last_rows(C):
    """An NHWC upsample / downsample (the channel axis kept: whole rows of C bytes copied, the
    row indices stepped like an odometer from each task's first row) large enough for
    several row blocks, against the naive resize, on 1 and 2 threads."""
    rng = np.random.default_rng(C)
    x = rng.integers(0, 256, (2, C, 30, 41), dtype=np.uint8)
    p = [0, 2, 3, 1]
    for scales, sizes in (([1.0, 1.0, 2.0, 2.0], None), (None, [2, C, 13, 97])):
        want = naive.resize_nearest(x, "asymmetric", "floor", scales=scales, sizes=sizes)
        in6, out6, index = mv.resize_args(x.shape, "asymmetric", "floor", scales=scales,
                                          sizes=sizes, perm=p)
        assert want.size > 2 * (1 << 14) or sizes is not None       # parallel row blocks
        y = np.zeros(want.size, np.uint8)
        _run_both(mv.resize_nearest_u8, (_physical(x, p).ravel(), in6, out6, index, y), y)
        assert np.array_equal(y, _physical(want, p).ravel()), (scales, sizes)
