"""Data-movement kernels of the CNN extension ops (formats/nq-v1.md 4.11-4.14): Slice (and
Split, which the converter writes as Slices), Pad, ResizeNearest.  No arithmetic: outputs
are bytes of the input (or the pad code), so every kernel is exact.

Operands are flat C-contiguous uint8 arrays viewed through rank-6 shapes (left-padded with
1s).  The geometry is computed at plan time by the plain-python helpers at the bottom
(`slice_args`, `pad_args`, `resize_args`), which also take the physical layout `perm` of the
tensor (physical axis j holds logical axis perm[j]; None = logical order), so the kernels
run on any layout.  Rows (the first five dims) are split between threads in blocks of
eltwise.row_block rows (serial below eltwise.CHUNK output elements; the block function is
called through xcall, so it is compiled once); each output element is written once, so
results do not depend on the thread count.
"""

import math

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, copy_bytes, xcall
from nqrt.kernels.eltwise import CHUNK, _step5, _unravel5, row_block
from nqrt.kernels.rowcopy import copy_runs

KERNEL_RANK = 6


@njit(inline="always", **JIT)
def _tuple6(a):
    """The six entries of a rank-6 shape/strides array as a tuple (locals in registers: LLVM
    need not reload them after every store to the output)."""
    return a[0], a[1], a[2], a[3], a[4], a[5]


@njit(inline="always", **JIT)
def _copy_row(y, yo, x, xo, L, ya, xa):
    """y[yo:yo + L] = x[xo:xo + L] (ya, xa: the arrays' addresses): vector pieces from 8 bytes
    (copy_runs), else byte copies.  x and y are distinct buffers (an op's output never shares
    its input's slot)."""
    if L >= 8:
        copy_runs(y, yo, 0, x, xo, 0, 0, 1, L, 1)
    else:
        copy_bytes(ya + yo, xa + xo, L)


@njit(**JIT)
def _slice_rows(x, offset, shape, strides, y, r0, r1):
    """Output rows r0..r1-1 of slice_u8."""
    shape = _tuple6(shape)
    strides = _tuple6(strides)
    L = shape[5]
    s5 = strides[5]
    xa = x.ctypes.data
    ya = y.ctypes.data
    # the row's input offset steps like an odometer over dims 0..4 (no divisions per row)
    i0, i1, i2, i3, i4 = _unravel5(r0, shape)
    o = (offset + i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3]
         + i4 * strides[4])
    for r in range(r0, r1):
        if s5 == 1:
            _copy_row(y, r * L, x, o, L, ya, xa)
        else:
            yr = y[r * L:(r + 1) * L]
            for k in range(L):
                yr[k] = x[o + k * s5]
        i0, i1, i2, i3, i4, o = _step5(i0, i1, i2, i3, i4, o, shape, strides)


@njit(**PJIT)
def slice_u8(x, offset, shape, strides, y):
    """y (C order over `shape`) [i0..i5] = x[offset + Σ i_d·strides[d]]: a strided copy
    (strides in elements, negative for negative steps, 0 to repeat)."""
    R = shape[0] * shape[1] * shape[2] * shape[3] * shape[4]
    if R * shape[5] <= CHUNK:
        xcall(_slice_rows, x, offset, shape, strides, y, 0, R)
        return
    rb = row_block(R, shape[5])
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        xcall(_slice_rows, x, offset, shape, strides, y, r0, min(R, r0 + rb))


@njit(**JIT)
def _pad_rows(x, in_shape, begin, out_shape, v, y, r0, r1):
    """Output rows r0..r1-1 of pad_u8."""
    osh = _tuple6(out_shape)
    ish = _tuple6(in_shape)
    bg = _tuple6(begin)
    L = osh[5]
    b5 = bg[5]
    n5 = ish[5]
    for r in range(r0, r1):
        i0, i1, i2, i3, i4 = _unravel5(r, osh)
        j0 = i0 - bg[0]
        j1 = i1 - bg[1]
        j2 = i2 - bg[2]
        j3 = i3 - bg[3]
        j4 = i4 - bg[4]
        yr = y[r * L:(r + 1) * L]
        inside = (0 <= j0 < ish[0] and 0 <= j1 < ish[1] and 0 <= j2 < ish[2]
                  and 0 <= j3 < ish[3] and 0 <= j4 < ish[4])
        if not inside:
            for k in range(L):
                yr[k] = v
            continue
        row = ((((j0 * ish[1] + j1) * ish[2] + j2) * ish[3] + j3) * ish[4] + j4) * n5
        for k in range(b5):
            yr[k] = v
        xs = x[row:row + n5]            # views indexed from 0: the copy vectorizes
        ys = yr[b5:b5 + n5]
        for k in range(n5):
            ys[k] = xs[k]
        for k in range(b5 + n5, L):
            yr[k] = v


@njit(**PJIT)
def pad_u8(x, in_shape, begin, out_shape, value, y):
    """Constant Pad: y[o] = x[o − begin] where that lies inside x (shape `in_shape`), else
    the code `value`.  out_shape[d] = begin[d] + in_shape[d] + end[d]."""
    v = np.uint8(value)
    R = out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3] * out_shape[4]
    if R * out_shape[5] <= CHUNK:
        xcall(_pad_rows, x, in_shape, begin, out_shape, v, y, 0, R)
        return
    rb = row_block(R, out_shape[5])
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        xcall(_pad_rows, x, in_shape, begin, out_shape, v, y, r0, min(R, r0 + rb))


@njit(**JIT)
def _resize_rows(x, in_shape, out_shape, index, y, r0, r1):
    """Output rows r0..r1-1 of resize_nearest_u8."""
    out_shape = _tuple6(out_shape)
    in_shape = _tuple6(in_shape)
    L = out_shape[5]
    t1 = out_shape[0]
    t2 = t1 + out_shape[1]
    t3 = t2 + out_shape[2]
    t4 = t3 + out_shape[3]
    t5 = t4 + out_shape[4]
    s4 = in_shape[5]
    s3 = s4 * in_shape[4]
    s2 = s3 * in_shape[3]
    s1 = s2 * in_shape[2]
    s0 = s1 * in_shape[1]
    # an identity table on the last axis (the channels of an NHWC resize) copies whole rows
    ident = True
    for k in range(L):
        if index[t5 + k] != k:
            ident = False
            break
    xa = x.ctypes.data
    ya = y.ctypes.data
    ix = index[t5:t5 + L]
    # the row's indices step like an odometer over dims 0..4 (_step5, its offset unused: the
    # input offset comes from the tables; no divisions per row: a row of an NHWC upsample is
    # only C bytes)
    i0, i1, i2, i3, i4 = _unravel5(r0, out_shape)
    for r in range(r0, r1):
        o = (index[i0] * s0 + index[t1 + i1] * s1 + index[t2 + i2] * s2 + index[t3 + i3] * s3
             + index[t4 + i4] * s4)
        if ident:
            _copy_row(y, r * L, x, o, L, ya, xa)
        else:
            yr = y[r * L:(r + 1) * L]
            for k in range(L):
                yr[k] = x[o + ix[k]]
        i0, i1, i2, i3, i4, _ = _step5(i0, i1, i2, i3, i4, 0, out_shape, (0, 0, 0, 0, 0, 0))


@njit(**PJIT)
def resize_nearest_u8(x, in_shape, out_shape, index, y):
    """ResizeNearest: y[o0..o5] = x[index_0[o0], ..., index_5[o5]] with x of shape
    `in_shape`; `index` concatenates the six per-axis tables (axis d: out_shape[d] entries in
    [0, in_shape[d]), starting at Σ_{e<d} out_shape[e])."""
    R = out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3] * out_shape[4]
    if R * out_shape[5] <= CHUNK:
        xcall(_resize_rows, x, in_shape, out_shape, index, y, 0, R)
        return
    rb = row_block(R, out_shape[5])
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        xcall(_resize_rows, x, in_shape, out_shape, index, y, r0, min(R, r0 + rb))


# ---------------------------------------------------------------------------------------
# Plan time (plain python): geometry of the kernels above
# ---------------------------------------------------------------------------------------

def _perm(perm, r):
    return list(range(r)) if perm is None else [int(p) for p in perm]


def _c_strides(dims):
    st = [1] * len(dims)
    for j in range(len(dims) - 2, -1, -1):
        st[j] = st[j + 1] * dims[j + 1]
    return st


def _pad6(rows, fill):
    """Left-pad per-axis tuples to KERNEL_RANK entries (ValueError beyond it)."""
    if len(rows) > KERNEL_RANK:
        raise ValueError(f"more than {KERNEL_RANK} non-trivial dims ({len(rows)})")
    return [fill] * (KERNEL_RANK - len(rows)) + rows


def slice_range(start: int, end: int, step: int, d: int) -> tuple[int, int]:
    """One axis of ONNX Slice (spec 4.11) on a dim of length d: (first index, length)."""
    if step == 0:
        raise ValueError("Slice step 0")
    start = start + d if start < 0 else start
    end = end + d if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), d), min(max(end, 0), d)
        return start, max(0, -(-(end - start) // step))
    start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)
    return start, max(0, -(-(start - end) // -step))


def slice_args(shape, starts, ends, axes, steps, perm=None):
    """(offset, shape6 int64[6], strides6 int64[6]) for slice_u8 on x of logical `shape`
    stored C-contiguous in physical order `perm`; y is written in the same physical order."""
    r = len(shape)
    first, length, step = [0] * r, [int(d) for d in shape], [1] * r
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        a = int(ax) + r if ax < 0 else int(ax)
        first[a], length[a] = slice_range(int(st), int(en), int(sp), int(shape[a]))
        step[a] = int(sp)
    p = _perm(perm, r)
    xst = _c_strides([int(shape[a]) for a in p])
    offset = 0
    rows = []
    for j, a in enumerate(p):
        if length[a] == 0:
            return 0, np.array([0] + [1] * (KERNEL_RANK - 1), np.int64), np.zeros(KERNEL_RANK, np.int64)
        offset += first[a] * xst[j]
        if length[a] != 1:
            rows.append((length[a], step[a] * xst[j]))
    rows = _pad6(rows, (1, 0))
    return (offset, np.array([d for d, _ in rows], np.int64), np.array([s for _, s in rows], np.int64))


def pad_args(shape, pads, perm=None):
    """(in6, begin6, out6) int64[6] for pad_u8; pads = [b_0.., e_0..] in logical order."""
    r = len(shape)
    rows = []
    for a in _perm(perm, r):
        d, b, e = int(shape[a]), int(pads[a]), int(pads[a + r])
        if d == 1 and b == 0 and e == 0:
            continue
        rows.append((d, b, d + b + e))
    rows = _pad6(rows, (1, 0, 1))
    return tuple(np.array([row[i] for row in rows], np.int64) for i in range(3))


def pad_border_index(d: int, b: int, e: int, mode: str) -> np.ndarray:
    """PadBorder (spec 4.13) along one axis of length d: the input index of each of the
    b + d + e outputs, numpy.pad's `mode` ("reflect": mirror without repeating the edge,
    b, e <= d - 1; "edge": the nearest end; "wrap": periodic, b, e <= d) applied to 0..d-1."""
    return np.pad(np.arange(d, dtype=np.int64), (b, e), mode=mode)


def pad_border_args(shape, pads, mode, perm=None):
    """(in6, out6 int64[6], index int64[Σ out6]) for resize_nearest_u8 (a gather along each
    axis by an index table) computing PadBorder on x of logical `shape` stored in physical
    order `perm`; pads = [b_0.., e_0..] in logical order."""
    r = len(shape)
    rows = []
    for a in _perm(perm, r):
        d, b, e = int(shape[a]), int(pads[a]), int(pads[a + r])
        if b == 0 and e == 0:
            if d != 1:
                rows.append((d, d, np.arange(d, dtype=np.int64)))
            continue
        rows.append((d, d + b + e, pad_border_index(d, b, e, mode)))
    rows = _pad6(rows, (1, 1, np.zeros(1, np.int64)))
    return (np.array([row[0] for row in rows], np.int64), np.array([row[1] for row in rows], np.int64),
            np.concatenate([row[2] for row in rows]).astype(np.int64))


def resize_output_length(length_in: int, scale: float) -> int:
    """Spec 4.14: trunc(float32(scale) · float32(L_in)) in float32."""
    return int(np.float32(scale) * np.float32(length_in))


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))   # exact: x is a float32 value


def source_coordinate(o: int, length_in: int, length_out: int, scale: float,
                      coordinate_mode: str) -> np.float32:
    """Spec 4.14: the float32 input coordinate of output index o."""
    f32 = np.float32
    s, half, xr = f32(scale), f32(0.5), f32(o)
    if coordinate_mode == "asymmetric":
        return xr / s
    if coordinate_mode == "half_pixel":
        return (xr + half) / s - half
    if coordinate_mode == "pytorch_half_pixel":
        return (xr + half) / s - half if length_out > 1 else f32(0)
    if coordinate_mode == "tf_half_pixel_for_nn":
        return (xr + half) / s
    if coordinate_mode == "align_corners":
        return xr * f32(length_in - 1) / f32(length_out - 1) if length_out > 1 else f32(0)
    raise ValueError(f"unknown coordinate_transformation_mode {coordinate_mode!r}")


def resize_nearest_index(length_in: int, length_out: int, scale: float, coordinate_mode: str,
                         nearest_mode: str) -> np.ndarray:
    """int64[length_out]: the input index read by each output index (spec 4.14, float32)."""
    half = np.float32(0.5)
    f32 = np.float32
    idx = np.empty(length_out, np.int64)
    for o in range(length_out):
        x = float(source_coordinate(o, length_in, length_out, scale, coordinate_mode))
        if nearest_mode == "floor":
            i = math.floor(x)
        elif nearest_mode == "ceil":
            i = math.ceil(x)
        elif nearest_mode == "round_prefer_ceil":
            i = _round_half_away(x)
        elif nearest_mode == "round_prefer_floor":
            i = math.floor(x) if x == float(f32(math.trunc(x)) + half) else _round_half_away(x)
        else:
            raise ValueError(f"unknown nearest_mode {nearest_mode!r}")
        idx[o] = min(max(i, 0), length_in - 1)
    return idx


def resize_geometry(shape, scales=None, sizes=None):
    """Per logical axis (L_out, float32 scale) for ResizeNearest with `scales` or `sizes`."""
    out = []
    for a, d in enumerate(shape):
        if sizes is not None:
            n = int(sizes[a])
            out.append((n, float(np.float32(n) / np.float32(d)) if d else 1.0))
        else:
            out.append((resize_output_length(int(d), scales[a]), float(np.float32(scales[a]))))
    return out


def resize_args(shape, coordinate_mode, nearest_mode, scales=None, sizes=None, perm=None):
    """(in6, out6 int64[6], index int64[Σ out6]) for resize_nearest_u8, physical order `perm`."""
    geo = resize_geometry(shape, scales, sizes)
    rows = []
    for a in _perm(perm, len(shape)):
        d = int(shape[a])
        n, s = geo[a]
        if d == 1 and n == 1:
            continue
        rows.append((d, n, resize_nearest_index(d, n, s, coordinate_mode, nearest_mode)))
    rows = _pad6(rows, (1, 1, np.zeros(1, np.int64)))
    return (np.array([row[0] for row in rows], np.int64), np.array([row[1] for row in rows], np.int64),
            np.concatenate([row[2] for row in rows]).astype(np.int64))
