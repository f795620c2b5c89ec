"""Elementwise and data-movement kernels: Quantize/Dequantize (spec 3.1), QAdd (4.3), one
QConcat input (4.4), QClip, Transpose.

Arrays are C-contiguous; flat kernels take 1-D views.  Parallel kernels split independent
outputs between threads (chunks of CHUNK elements, or rows), so results do not depend on the
thread count.  Rank-6 shapes/strides/perms are left-padded by the caller (shape with 1s,
strides with 0s, perm with the identity on the leading axes).
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT
from nqrt.kernels.fixedpoint import output_u8

CHUNK = 1 << 14   # elements per parallel chunk of the flat kernels


@njit(**JIT)
def quantize_one(v, s, zf):
    """Spec 3.1 for one float32 v: clamp(rint(v / s) + z, 0, 255), float32 division, ties to
    even (np.rint = llvm.rint, round-to-nearest-even); NaN -> z; ±inf -> 255/0."""
    q = np.rint(v / s)                       # float32 / float32 stays float32
    if q != q:
        return np.uint8(zf)
    # |q| < 2^24 keeps q + z exact; beyond that the sum is far outside [0, 255] anyway
    return np.uint8(min(max(q + zf, np.float32(0.0)), np.float32(255.0)))


@njit(**PJIT)
def quantize_f32(x, scale, z, y):
    """y uint8[n] = Quantize(x float32[n]) with float32 scale and zero point z."""
    n = x.size
    s = np.float32(scale)
    zf = np.float32(z)
    for ci in prange(-(-n // CHUNK)):
        for i in range(ci * CHUNK, min(n, ci * CHUNK + CHUNK)):
            y[i] = quantize_one(x[i], s, zf)


@njit(**PJIT)
def dequantize_u8(x, scale, z, y):
    """y float32[n] = float32(x − z) · float32(scale) (one float32 multiply per element)."""
    n = x.size
    s = np.float32(scale)
    for ci in prange(-(-n // CHUNK)):
        for i in range(ci * CHUNK, min(n, ci * CHUNK + CHUNK)):
            y[i] = np.float32(np.int32(x[i]) - np.int32(z)) * s


@njit(**PJIT)
def clip_u8(x, act_min, act_max, y):
    """y[i] = clamp(x[i], act_min, act_max) (QClip; x may be y)."""
    n = x.size
    lo = np.uint8(act_min)
    hi = np.uint8(act_max)
    for ci in prange(-(-n // CHUNK)):
        for i in range(ci * CHUNK, min(n, ci * CHUNK + CHUNK)):
            y[i] = min(max(x[i], lo), hi)


@njit(**JIT)
def _unravel5(r, shape):
    """Offsets of row r (index over shape[0:5], C order) as a 5-tuple of indices."""
    i4 = r % shape[4]
    r //= shape[4]
    i3 = r % shape[3]
    r //= shape[3]
    i2 = r % shape[2]
    r //= shape[2]
    i1 = r % shape[1]
    return r // shape[1], i1, i2, i3, i4


@njit(**PJIT)
def add_u8(a, b, shape, a_strides, b_strides, z_a, z_b, m_a, m_b, shift, z_y, act_min,
           act_max, y):
    """QAdd (spec 4.3): y[i] (C order over `shape`) =
    clamp(((a[i]−z_a)·Ma + (b[i]−z_b)·Mb + 2^(shift−1)) >> shift) + z_y), a and b read at
    Σ idx·stride (element strides, 0 = broadcast).  |da·Ma + db·Mb| < 2^40: exact int64."""
    L = shape[5]
    R = shape[0] * shape[1] * shape[2] * shape[3] * shape[4]
    sa = a_strides[5]
    sb = b_strides[5]
    rnd = np.int64(1) << np.int64(shift - 1)
    for r in prange(R):
        i0, i1, i2, i3, i4 = _unravel5(r, shape)
        oa = (i0 * a_strides[0] + i1 * a_strides[1] + i2 * a_strides[2] + i3 * a_strides[3]
              + i4 * a_strides[4])
        ob = (i0 * b_strides[0] + i1 * b_strides[1] + i2 * b_strides[2] + i3 * b_strides[3]
              + i4 * b_strides[4])
        yr = y[r * L:(r + 1) * L]
        for k in range(L):
            da = np.int64(a[oa + k * sa]) - z_a
            db = np.int64(b[ob + k * sb]) - z_b
            v = ((da * m_a + db * m_b + rnd) >> np.int64(shift)) + z_y
            yr[k] = np.uint8(min(max(v, act_min), act_max))


@njit(**PJIT)
def requant_copy_u8(x, z_x, m0, n, z_y, act_min, act_max, y, col_offset):
    """One QConcat input (spec 4.4): y[r, col_offset + c] = clamp(requantize(x[r, c] − z_x,
    M0, n) + z_y, act_min, act_max) for x uint8 [R, Cx], y uint8 [R, Cy].  The identity pair
    (2^30, 30) with z_x == z_y reproduces x exactly."""
    R, Cx = x.shape
    for r in prange(R):
        xr = x[r]
        yr = y[r, col_offset:col_offset + Cx]
        for c in range(Cx):
            yr[c] = output_u8(np.int64(xr[c]) - z_x, m0, n, z_y, act_min, act_max)


@njit(**PJIT)
def transpose_u8(x, shape, perm, y):
    """y = x.reshape(shape).transpose(perm) written C-contiguous into y (flat); shape/perm
    rank 6 (left-padded).  Generic over the dtype: transpose_f32 is the same function."""
    x5 = np.int64(1)                           # element strides of x, as scalars
    x4 = x5 * shape[5]
    x3 = x4 * shape[4]
    x2 = x3 * shape[3]
    x1 = x2 * shape[2]
    x0 = x1 * shape[1]
    xs = (x0, x1, x2, x3, x4, x5)
    ys = (shape[perm[0]], shape[perm[1]], shape[perm[2]], shape[perm[3]], shape[perm[4]],
          shape[perm[5]])                      # y's shape
    st = (xs[perm[0]], xs[perm[1]], xs[perm[2]], xs[perm[3]], xs[perm[4]], xs[perm[5]])
    L = ys[5]
    s5 = st[5]
    R = ys[0] * ys[1] * ys[2] * ys[3] * ys[4]
    for r in prange(R):
        i0, i1, i2, i3, i4 = _unravel5(r, ys)
        o = i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3] + i4 * st[4]
        yr = y[r * L:(r + 1) * L]
        for k in range(L):
            yr[k] = x[o + k * s5]


transpose_f32 = transpose_u8
