"""Elementwise and data-movement kernels: Quantize/Dequantize (spec 3.1), QAdd (4.3), one
QConcat input (4.4), QClip, Transpose.

Arrays are C-contiguous; flat kernels take 1-D views.  Parallel kernels split independent
outputs between threads as a list of tasks (chunks of CHUNK elements, blocks of whole rows of
about ROW_BLOCK elements, or transpose tiles), so results do not depend on the thread count.
A kernel runs its task list serially when the tensor has at most CHUNK elements (no parallel
launch), else in a prange; both loops call the task function through xcall (_jit.py), so each
task is compiled once instead of once per call site and per parallel-loop library.  Helpers
of one task are inlined at the Numba IR level (inline="always"): no dispatcher (and library)
of their own to compile.  Rank-6 shapes/strides/perms are left-padded by the caller (shape
with 1s, strides with 0s, perm with the identity on the leading axes).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, copy_bytes, xcall
from nqrt.kernels.fixedpoint import offset_requant
from nqrt.kernels.rowcopy import copy_runs

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)

CHUNK = 1 << 14      # elements per task of the flat kernels (and the serial threshold)
ROW_BLOCK = 1 << 12  # elements per task of the row kernels (whole rows, at least one) ...
MIN_TASKS = 32       # ... but at least this many tasks when there are as many rows (balance)


@njit(inline="always", **JIT)
def row_block(R, L):
    """Rows per task for R rows of L elements."""
    return max(1, min(ROW_BLOCK // max(L, 1), R // MIN_TASKS))


@njit(**JIT)
def quantize_one(v, s, zf):
    """Spec 3.1 for one float32 v: clamp(rint(v / s) + z, 0, 255), float32 division, ties to
    even (np.rint = llvm.rint, round-to-nearest-even); NaN -> z; ±inf -> 255/0."""
    q = np.rint(v / s)                       # float32 / float32 stays float32
    if q != q:
        return np.uint8(zf)
    # |q| < 2^24 keeps q + z exact; beyond that the sum is far outside [0, 255] anyway
    return np.uint8(min(max(q + zf, np.float32(0.0)), np.float32(255.0)))


@njit(**JIT)
def _quantize_span(x, s, zf, y, i0, i1):
    """quantize_one over [i0, i1), branch-free so that it vectorizes (vdivps, vroundps)."""
    xs = x[i0:i1]
    ys = y[i0:i1]
    zu = np.uint8(zf)
    for i in range(xs.size):
        q = np.rint(xs[i] / s)
        t = np.uint8(min(max(q + zf, np.float32(0.0)), np.float32(255.0)))
        ys[i] = zu if q != q else t


@njit(**PJIT)
def quantize_f32(x, scale, z, y):
    """y uint8[n] = Quantize(x float32[n]) with float32 scale and zero point z."""
    n = x.size
    s = np.float32(scale)
    zf = np.float32(z)
    if n <= CHUNK:
        xcall(_quantize_span, x, s, zf, y, 0, n)
        return
    for ci in prange(-(-n // CHUNK)):
        i0 = np.int64(ci) * CHUNK
        xcall(_quantize_span, x, s, zf, y, i0, min(n, i0 + CHUNK))


@njit(**JIT)
def _dequantize_span(x, s, zi, y, i0, i1):
    xs = x[i0:i1]
    ys = y[i0:i1]
    for i in range(xs.size):
        ys[i] = np.float32(np.int32(np.int32(xs[i]) - zi)) * s      # int32 -> f32 exact


@njit(**PJIT)
def dequantize_u8(x, scale, z, y):
    """y float32[n] = float32(x − z) · float32(scale) (one float32 multiply per element)."""
    n = x.size
    s = np.float32(scale)
    zi = np.int32(z)
    if n <= CHUNK:
        xcall(_dequantize_span, x, s, zi, y, 0, n)
        return
    for ci in prange(-(-n // CHUNK)):
        i0 = np.int64(ci) * CHUNK
        xcall(_dequantize_span, x, s, zi, y, i0, min(n, i0 + CHUNK))


@njit(**JIT)
def _clip_span(x, lo, hi, y, i0, i1):
    xs = x[i0:i1]
    ys = y[i0:i1]
    for i in range(xs.size):
        ys[i] = min(max(xs[i], lo), hi)


@njit(**PJIT)
def clip_u8(x, act_min, act_max, y):
    """y[i] = clamp(x[i], act_min, act_max) (QClip; x may be y)."""
    n = x.size
    lo = np.uint8(act_min)
    hi = np.uint8(act_max)
    if n <= CHUNK:
        xcall(_clip_span, x, lo, hi, y, 0, n)
        return
    for ci in prange(-(-n // CHUNK)):
        i0 = np.int64(ci) * CHUNK
        xcall(_clip_span, x, lo, hi, y, i0, min(n, i0 + CHUNK))


@njit(inline="always", **JIT)
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


@njit(inline="always", **JIT)
def _step5(i0, i1, i2, i3, i4, o, shape, strides):
    """The row after (i0..i4) over shape[0:5] and its offset o (element strides), as an
    odometer: no divisions (the rows of a slice or a transpose are 8..128 bytes, where an
    unravel's four 64-bit divisions per row cost as much as the copy)."""
    i4 += 1
    o += strides[4]
    if i4 == shape[4]:
        i4 = 0
        o -= shape[4] * strides[4]
        i3 += 1
        o += strides[3]
        if i3 == shape[3]:
            i3 = 0
            o -= shape[3] * strides[3]
            i2 += 1
            o += strides[2]
            if i2 == shape[2]:
                i2 = 0
                o -= shape[2] * strides[2]
                i1 += 1
                o += strides[1]
                if i1 == shape[1]:
                    i1 = 0
                    o -= shape[1] * strides[1]
                    i0 += 1
                    o += strides[0]
    return i0, i1, i2, i3, i4, o


@njit(inline="always", **JIT)
def _add_row(a, oa, sa, b, ob, sb, L, z_a, z_b, m_a, m_b, rnd, shift, z_y, lo, hi, y, oy):
    """y[oy + k] for k < L from a[oa + k·sa], b[ob + k·sb]; specialized loops for unit / zero
    strides so that they vectorize (int32 differences × int32 multipliers: vpmuldq)."""
    ys = y[oy:oy + L]
    za = np.int32(z_a)
    zb = np.int32(z_b)
    ma = np.int64(np.int32(m_a))
    mb = np.int64(np.int32(m_b))
    if sa == 1 and sb == 1:
        xa = a[oa:oa + L]
        xb = b[ob:ob + L]
        for k in range(L):
            v = np.int64(np.int32(np.int32(xa[k]) - za)) * ma + \
                np.int64(np.int32(np.int32(xb[k]) - zb)) * mb + rnd
            ys[k] = np.uint8(min(max((v >> shift) + z_y, lo), hi))
    elif sa == 1 and sb == 0:
        xa = a[oa:oa + L]
        cb = np.int64(np.int32(np.int32(b[ob]) - zb)) * mb + rnd
        for k in range(L):
            v = np.int64(np.int32(np.int32(xa[k]) - za)) * ma + cb
            ys[k] = np.uint8(min(max((v >> shift) + z_y, lo), hi))
    elif sa == 0 and sb == 1:
        xb = b[ob:ob + L]
        ca = np.int64(np.int32(np.int32(a[oa]) - za)) * ma + rnd
        for k in range(L):
            v = np.int64(np.int32(np.int32(xb[k]) - zb)) * mb + ca
            ys[k] = np.uint8(min(max((v >> shift) + z_y, lo), hi))
    else:
        for k in range(L):
            da = np.int64(a[oa + k * sa]) - z_a
            db = np.int64(b[ob + k * sb]) - z_b
            v = da * m_a + db * m_b + rnd
            ys[k] = np.uint8(min(max((v >> shift) + z_y, lo), hi))


@njit(inline="always", **JIT)
def merge_broadcast_rows(shape, a_strides, b_strides):
    """View a rank-6 broadcast pair as R rows of L elements: trailing dims that are contiguous
    (or broadcast) in both operands merge into one row.  Returns (K, L, R, sa, sb): rows index
    dims 0..K-1 of `shape`; (sa, sb) are the inner element strides."""
    L = shape[5]
    sa = a_strides[5]
    sb = b_strides[5]
    K = 5
    while K > 0 and a_strides[K - 1] == sa * L and b_strides[K - 1] == sb * L:
        K -= 1
        L *= shape[K]
    R = np.int64(1)
    for d in range(K):
        R *= shape[d]
    return K, L, R, sa, sb


@njit(inline="always", **JIT)
def task_layout(L, R):
    """(nch, G, ntask) for R merged rows of L elements: a row longer than CHUNK is cut into
    nch = ceil(L / CHUNK) chunk tasks (G = 1); shorter rows go G = CHUNK // L to a task, so a
    task is never tiny (an SE block's (N, H, W, C) x (N, 1, 1, C) product has rows of C)."""
    nch = -(-L // CHUNK)
    if nch > 1 or L == 0:
        return nch, np.int64(1), R * nch
    G = np.int64(max(1, CHUNK // L))
    return np.int64(1), G, -(-R // G)


@njit(inline="always", **JIT)
def row_start(r0, K, shape, a_strides, b_strides, idx):
    """Offsets in a and b of merged row r0; idx[:K] = its multi-index (for next_row)."""
    oa = np.int64(0)
    ob = np.int64(0)
    rem = r0
    for d in range(K - 1, -1, -1):
        i = rem % shape[d]
        rem //= shape[d]
        idx[d] = i
        oa += i * a_strides[d]
        ob += i * b_strides[d]
    return oa, ob


@njit(inline="always", **JIT)
def task_offsets(t, nch, K, L, shape, a_strides, b_strides, sa, sb):
    """Chunk t of a merged pair (row t // nch, chunk t % nch of CHUNK elements): returns
    (element count, offset in a, offset in b, offset in y)."""
    r = t // nch
    k0 = (t - r * nch) * CHUNK
    oa, ob = row_start(r, K, shape, a_strides, b_strides, np.empty(6, np.int64))
    return min(CHUNK, L - k0), oa + k0 * sa, ob + k0 * sb, r * L + k0


@njit(inline="always", **JIT)
def next_row(K, shape, a_strides, b_strides, idx, oa, ob):
    """Offsets of the merged row after the one at (oa, ob) (odometer step over dims < K)."""
    d = K - 1
    while d >= 0:
        idx[d] += 1
        oa += a_strides[d]
        ob += b_strides[d]
        if idx[d] < shape[d]:
            break
        oa -= shape[d] * a_strides[d]
        ob -= shape[d] * b_strides[d]
        idx[d] = 0
        d -= 1
    return oa, ob


@njit(**JIT)
def _add_task(t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb, z_a, z_b, m_a, m_b,
              rnd, shift, z_y, lo, hi, y):
    """Task t of the merged add (see task_layout): one chunk of a long row, or G short rows."""
    if G == 1:
        n, oa, ob, oy = task_offsets(t, nch, K, L, shape, a_strides, b_strides, sa, sb)
        _add_row(a, oa, sa, b, ob, sb, n, z_a, z_b, m_a, m_b, rnd, shift, z_y, lo, hi, y, oy)
        return
    idx = np.zeros(6, np.int64)
    r0 = t * G
    oa, ob = row_start(r0, K, shape, a_strides, b_strides, idx)
    for r in range(r0, min(R, r0 + G)):
        _add_row(a, oa, sa, b, ob, sb, L, z_a, z_b, m_a, m_b, rnd, shift, z_y, lo, hi, y, r * L)
        oa, ob = next_row(K, shape, a_strides, b_strides, idx, oa, ob)


@njit(**PJIT)
def add_u8(a, b, shape, a_strides, b_strides, z_a, z_b, m_a, m_b, shift, z_y, act_min,
           act_max, y):
    """QAdd (spec 4.3): y[i] (C order over `shape`) =
    clamp(((a[i]−z_a)·Ma + (b[i]−z_b)·Mb + 2^(shift−1)) >> shift) + z_y), a and b read at
    Σ idx·stride (element strides, 0 = broadcast).  Multipliers are signed int32;
    |da·Ma + db·Mb| < 2^40: exact int64.  Trailing dims that are contiguous (or broadcast)
    in both a and b are merged into one row first; tasks are chunks of long rows or groups of
    short rows (task_layout)."""
    K, L, R, sa, sb = merge_broadcast_rows(shape, a_strides, b_strides)
    rnd = np.int64(1) << np.int64(shift - 1)
    sft = np.int64(shift)
    lo = np.int64(act_min)
    hi = np.int64(act_max)
    nch, G, ntask = task_layout(L, R)
    if R * L <= CHUNK:
        for t in range(ntask):
            xcall(_add_task, t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb, z_a,
                  z_b, m_a, m_b, rnd, sft, z_y, lo, hi, y)
        return
    for t in prange(ntask):
        xcall(_add_task, np.int64(t), nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb,
              z_a, z_b, m_a, m_b, rnd, sft, z_y, lo, hi, y)


@njit(**JIT)
def _requant_rows(x, zx, m0, rnd, n, z_y, lo, hi, y, col_offset, r0, r1):
    """Rows r0..r1-1 of requant_copy_u8.  With fixedpoint.offset_requant's constants for the
    raw byte x in [0, 255] (the zero-point term −z_x folded in), each value is a 64-bit
    vpmuldq product, a logical shift and 32-bit clamps (AVX2 has no 64-bit arithmetic shift
    or min/max, which the int64 formula needs); the int64 formula where that form is not
    representable."""
    Cx = x.shape[1]
    ok, bc, off = offset_requant(-np.int64(zx), 255, m0, n)
    m = np.int64(np.int32(m0))
    un = np.uint64(n)
    dz = np.int32(off - z_y)
    lo32 = np.int32(lo)
    hi32 = np.int32(hi)
    for r in range(r0, r1):
        xr = x[r]
        yr = y[r, col_offset:col_offset + Cx]
        if ok:
            for c in range(Cx):
                u = np.uint64(np.int64(np.int32(xr[c])) * m + bc)
                q = np.int32(np.int32(np.uint32(u >> un)) - dz)
                yr[c] = np.uint8(np.int32(max(np.int32(min(q, hi32)), lo32)))
        else:
            for c in range(Cx):
                v = (np.int64(np.int32(np.int32(xr[c]) - zx)) * m0 + rnd) >> n
                yr[c] = np.uint8(min(max(v + z_y, lo), hi))


@njit(**JIT)
def _copy_rows(x, y, col_offset, r0, r1):
    """Rows r0..r1-1 of requant_copy_u8 with the identity requantize: rows copied as vector
    pieces (rowcopy.copy_runs; a memcpy per row for rows under 8 bytes) when both rows are
    contiguous (x and y are distinct buffers: a Concat input is never its output)."""
    Cx = x.shape[1]
    if x.strides[1] == 1 and y.strides[1] == 1:
        if Cx >= 8:                        # one loop of vector pieces, no call per row
            copy_runs(y, col_offset + r0 * y.strides[0], y.strides[0], x, r0 * x.strides[0],
                      x.strides[0], 0, 1, Cx, r1 - r0)
            return
        xa = x.ctypes.data
        ya = y.ctypes.data + col_offset
        for r in range(r0, r1):
            copy_bytes(ya + r * y.strides[0], xa + r * x.strides[0], Cx)
        return
    for r in range(r0, r1):
        y[r, col_offset:col_offset + Cx] = x[r]


IDENTITY_M0, IDENTITY_N = 1 << 30, 30     # the identity pair of formats/nq-v1.md (QConcat)


@njit(**JIT)
def _copy_cols_rows(x, y, col_offset, r0, r1):
    for r in range(r0, r1):
        yr = y[r, col_offset:col_offset + x.shape[1]]
        xr = x[r]
        for c in range(x.shape[1]):
            yr[c] = xr[c]


@njit(**PJIT)
def copy_cols_f32(x, y, col_offset):
    """One input of a float Concat: y[r, col_offset + c] = x[r, c] for x float32 [R, Cx], y
    float32 [R, Cy] (distinct buffers)."""
    R, Cx = x.shape
    if R * Cx <= CHUNK:
        xcall(_copy_cols_rows, x, y, col_offset, 0, R)
        return
    rb = row_block(R, 4 * Cx)
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        xcall(_copy_cols_rows, x, y, col_offset, r0, min(R, r0 + rb))


@njit(**PJIT)
def requant_copy_u8(x, z_x, m0, n, z_y, act_min, act_max, y, col_offset):
    """One QConcat input (spec 4.4): y[r, col_offset + c] = clamp(requantize(x[r, c] − z_x,
    M0, n) + z_y, act_min, act_max) for x uint8 [R, Cx], y uint8 [R, Cy].  The identity pair
    (2^30, 30) with z_x == z_y reproduces x exactly."""
    R, Cx = x.shape
    zx = np.int32(z_x)
    m = np.int64(np.int32(m0))
    rnd = np.int64(1) << np.int64(n - 1)
    sft = np.int64(n)
    lo = np.int64(act_min)
    hi = np.int64(act_max)
    # the identity pair with equal zero points and no clamp is a copy (|x − z_x| < 2^8, so
    # ((x − z_x)·2^30 + 2^29) >> 30 = x − z_x): Concat inputs that share its scale
    copy = m0 == IDENTITY_M0 and n == IDENTITY_N and z_x == z_y and act_min <= 0 and act_max >= 255
    if R * Cx <= CHUNK:
        if copy:
            xcall(_copy_rows, x, y, col_offset, 0, R)
        else:
            xcall(_requant_rows, x, zx, m, rnd, sft, z_y, lo, hi, y, col_offset, 0, R)
        return
    rb = row_block(R, Cx)
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        if copy:
            xcall(_copy_rows, x, y, col_offset, r0, min(R, r0 + rb))
        else:
            xcall(_requant_rows, x, zx, m, rnd, sft, z_y, lo, hi, y, col_offset, r0,
                  min(R, r0 + rb))


# ----------------------------------------------------------------------------- transpose
def _vptr(context, builder, aty, val, off):
    data = cgutils.create_struct_proxy(aty)(context, builder, value=val).data
    return builder.gep(builder.bitcast(data, _I8.as_pointer()), [off])


_F32 = ir.FloatType()


def _fptr(context, builder, aty, val, off):
    data = cgutils.create_struct_proxy(aty)(context, builder, value=val).data
    return builder.gep(builder.bitcast(data, _F32.as_pointer()), [off])


def _splat(builder, value, n):
    vty = ir.VectorType(value.type, n)
    v = builder.insert_element(ir.Constant(vty, None), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, None),
                                  ir.Constant(ir.VectorType(_I32, n), [0] * n))


def _quantize_vector(builder, v, s, zf):
    """quantize_one on every lane of a float vector v (spec 3.1): clamp(rint(v / s) + z, 0,
    255) as uint8, NaN -> z; the same IEEE operations as the scalar code."""
    n = v.type.count
    vf = v.type
    rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf]),
                                          f"llvm.rint.v{n}f32")
    q = builder.call(rint, [builder.fdiv(v, _splat(builder, s, n))])
    nan = builder.fcmp_unordered("uno", q, q)
    t = builder.fadd(q, _splat(builder, zf, n))
    zero = ir.Constant(vf, [0.0] * n)
    top = ir.Constant(vf, [255.0] * n)
    t = builder.select(builder.fcmp_ordered("<", t, zero), zero, t)
    t = builder.select(builder.fcmp_ordered(">", t, top), top, t)
    u = builder.fptoui(t, ir.VectorType(_I8, n))
    return builder.select(nan, builder.fptoui(_splat(builder, zf, n), u.type), u)


def _dequantize_vector(builder, b, s, z):
    """float32(int32(b) - z) * s on every lane of a uint8 vector b (as dequantize_u8)."""
    n = b.type.count
    d = builder.sub(builder.zext(b, ir.VectorType(_I32, n)),
                    _splat(builder, builder.trunc(z, _I32), n))
    return builder.fmul(builder.sitofp(d, ir.VectorType(_F32, n)), _splat(builder, s, n))


def _row_io(context, builder, sig, args, conv):
    """(load(r_offset) -> <16 x i8>, store(vector of i8, offset)) for the byte-shuffle
    intrinsics: plain uint8 rows, or float32 rows quantized on load (conv "quantize": x is
    float32, args end with s, zf) or dequantized on store (conv "dequantize": y is float32,
    args end with s, z).  Offsets are in elements of the array they index."""
    x_, xo_, y_, yo_ = args[0], args[1], args[3], args[4]
    v16 = ir.VectorType(_I8, 16)
    if conv == "quantize":
        xp = _fptr(context, builder, sig.args[0], x_, xo_)
        s_, zf_ = args[-2], args[-1]

        def load(off):
            p = builder.gep(xp, [off])
            v = builder.load(builder.bitcast(p, ir.VectorType(_F32, 16).as_pointer()), align=4)
            return _quantize_vector(builder, v, s_, zf_)
    else:
        xp = _vptr(context, builder, sig.args[0], x_, xo_)

        def load(off):
            return builder.load(builder.bitcast(builder.gep(xp, [off]), v16.as_pointer()), align=1)
    if conv == "dequantize":
        yp = _fptr(context, builder, sig.args[3], y_, yo_)
        s_, z_ = args[-2], args[-1]

        def store(v, off):
            f = _dequantize_vector(builder, v, s_, z_)
            builder.store(f, builder.bitcast(builder.gep(yp, [off]), f.type.as_pointer()), align=4)
    else:
        yp = _vptr(context, builder, sig.args[3], y_, yo_)

        def store(v, off):
            builder.store(v, builder.bitcast(builder.gep(yp, [off]), v.type.as_pointer()), align=1)
    return load, store


def make_t16x16(conv=None):
    """Intrinsic t(x, xo, xrs, y, yo, yrs[, s, z]): y[yo + i·yrs + j] = x[xo + j·xrs + i] for
    i, j < 16: 16 row loads, four rounds of byte interleaves (rows k and k + 8, low / high
    halves), 16 row stores; uint8 -> uint8, or fused with Quantize / Dequantize (_row_io)."""
    def codegen(context, builder, sig, args):
        xrs_, yrs_ = args[2], args[5]
        load, store = _row_io(context, builder, sig, args, conv)
        rows = [load(builder.mul(xrs_, ir.Constant(_I64, r))) for r in range(16)]
        lo_m = ir.Constant(ir.VectorType(_I32, 16), [v for k in range(8) for v in (k, 16 + k)])
        hi_m = ir.Constant(ir.VectorType(_I32, 16), [v for k in range(8, 16) for v in (k, 16 + k)])
        for _ in range(4):
            nxt = []
            for k in range(8):
                nxt.append(builder.shuffle_vector(rows[k], rows[k + 8], lo_m))
                nxt.append(builder.shuffle_vector(rows[k], rows[k + 8], hi_m))
            rows = nxt
        for r in range(16):
            store(rows[r], builder.mul(yrs_, ir.Constant(_I64, r)))
        return context.get_dummy_value()

    if conv is None:
        def t16(typingctx, x, xo, xrs, y, yo, yrs):
            return types.void(x, xo, xrs, y, yo, yrs), codegen
    else:
        def t16(typingctx, x, xo, xrs, y, yo, yrs, s, z):
            return types.void(x, xo, xrs, y, yo, yrs, s, z), codegen
    t16.__name__ = "_t16x16" + ("" if conv is None else "_" + conv)
    return intrinsic(t16)


def make_interleave(K, conv=None):
    """Intrinsic: y[yo + i·K + j] = x[xo + j·xrs + i] for i < 16, j < K (K = 2, 3, 4, 8): K
    row loads, one interleaving shuffle of the rows concatenated in order (a missing fourth
    row of K = 3 is undefined and never selected), one 16·K-element store; conv as
    make_t16x16."""
    def codegen(context, builder, sig, args):
        xrs_ = args[2]
        load, store = _row_io(context, builder, sig, args, conv)
        rows = [load(builder.mul(xrs_, ir.Constant(_I64, r))) for r in range(K)]
        if K == 3:
            rows.append(ir.Constant(rows[0].type, None))
        while len(rows) > 2:                    # concatenate neighbours: 8 -> 4 -> 2 vectors
            n = rows[0].type.count
            cat = ir.Constant(ir.VectorType(_I32, 2 * n), list(range(2 * n)))
            rows = [builder.shuffle_vector(rows[k], rows[k + 1], cat) for k in range(0, len(rows), 2)]
        a, b = rows
        mask = ir.Constant(ir.VectorType(_I32, 16 * K), [16 * j + i for i in range(16) for j in range(K)])
        store(builder.shuffle_vector(a, b, mask), ir.Constant(_I64, 0))
        return context.get_dummy_value()

    if conv is None:
        def interleave(typingctx, x, xo, xrs, y, yo):
            return types.void(x, xo, xrs, y, yo), codegen
    else:
        def interleave(typingctx, x, xo, xrs, y, yo, s, z):
            return types.void(x, xo, xrs, y, yo, s, z), codegen
    interleave.__name__ = f"_interleave{K}" + ("" if conv is None else "_" + conv)
    return intrinsic(interleave)


def make_deinterleave(K):
    """Intrinsic: y[yo + r·yrs + i] = x[xo + i·K + r] for i < 16, r < K (K = 2, 3, 4, 8): one
    16·K-byte load, K gathering shuffles, K 16-byte row stores (the inverse of
    make_interleave: a [rows, K] byte matrix into K rows)."""
    def codegen(context, builder, sig, args):
        x_, xo_, y_, yo_, yrs_ = args
        xp = _vptr(context, builder, sig.args[0], x_, xo_)
        yp = _vptr(context, builder, sig.args[2], y_, yo_)
        vin = ir.VectorType(_I8, 16 * K)
        v = builder.load(builder.bitcast(xp, vin.as_pointer()), align=1)
        for r in range(K):
            row = builder.shuffle_vector(v, ir.Constant(vin, None),
                                         ir.Constant(ir.VectorType(_I32, 16), [i * K + r for i in range(16)]))
            q = builder.gep(yp, [builder.mul(yrs_, ir.Constant(_I64, r))])
            builder.store(row, builder.bitcast(q, row.type.as_pointer()), align=1)
        return context.get_dummy_value()

    def deinterleave(typingctx, x, xo, y, yo, yrs):
        return types.void(x, xo, y, yo, yrs), codegen
    deinterleave.__name__ = f"_deinterleave{K}"
    return intrinsic(deinterleave)


_t16x16 = make_t16x16()
_deinterleave2 = make_deinterleave(2)
_deinterleave3 = make_deinterleave(3)
_deinterleave4 = make_deinterleave(4)
_deinterleave8 = make_deinterleave(8)
_interleave2 = make_interleave(2)
_interleave3 = make_interleave(3)
_interleave4 = make_interleave(4)
_interleave8 = make_interleave(8)

TI = 64          # i-rows (output rows) per parallel task of the 2-D transpose
TI_INTERLEAVE = 1024  # the same when each output row has only 2..8 elements (interleaves)
GROUP_BYTES = 4096  # bytes per task when whole 2-D transposes are grouped (transpose_u8)


@njit(inline="always", **JIT)
def _t2d_task(x, xo, xrs, y, yo, i0, i1, Nj):
    """Output rows i0..i1-1 of Y[i, j] = x[xo + j·xrs + i] (j < Nj), Y row i at y[yo + i·Nj].
    Blocks of 16 rows (and 16 columns); where a dim is not a multiple of 16, its last block
    starts 16 before its end and overlaps the one before it (it rewrites the same values, all
    inside this task's rows), so no scalar tail is left once i1 − i0 >= 16: a ShuffleNet
    channel shuffle (2 x 58 bytes per pixel) went from 0.39 to 0.1 ns per byte."""
    i = i0
    if (Nj == 2 or Nj == 3 or Nj == 4 or Nj == 8) and i1 - i0 >= 16:
        while i < i1:
            ib = min(i, i1 - 16)
            if Nj == 2:
                _interleave2(x, xo + ib, xrs, y, yo + ib * Nj)
            elif Nj == 3:
                _interleave3(x, xo + ib, xrs, y, yo + ib * Nj)
            elif Nj == 4:
                _interleave4(x, xo + ib, xrs, y, yo + ib * Nj)
            else:
                _interleave8(x, xo + ib, xrs, y, yo + ib * Nj)
            i += 16
        i = i1
    elif Nj >= 16 and i1 - i0 >= 16:
        while i < i1:
            ib = min(i, i1 - 16)
            j = 0
            while j < Nj:
                jb = min(j, Nj - 16)
                _t16x16(x, xo + jb * xrs + ib, xrs, y, yo + ib * Nj + jb, Nj)
                j += 16
            i += 16
        i = i1
    for ii in range(i, i1):
        for jj in range(Nj):
            y[yo + ii * Nj + jj] = x[xo + jj * xrs + ii]


@njit(inline="always", **JIT)
def _outer_offset(o, K, ys, st):
    """Input offset of outer index o over output dims 0..K-1 (sizes ys, input strides st)."""
    off = np.int64(0)
    for d in range(K - 1, -1, -1):
        i = o % ys[d]
        o //= ys[d]
        off += i * st[d]
    return off


@njit(**JIT)
def _transpose_generic(x, shape, perm, y):
    """y = x.reshape(shape).transpose(perm) written C-contiguous into y (flat); shape/perm
    rank 6 (left-padded).  Generic over the dtype."""
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
    return ys, st


@njit(**JIT)
def _transpose_rows(x, y, ys, st, r0, r1):
    """Rows r0..r1-1 of y (ys[5] elements each); the x offset of each row follows an odometer
    over ys[0:5] (_step5: one unravel per call)."""
    L = ys[5]
    s5 = st[5]
    if r0 >= r1:
        return
    i0, i1, i2, i3, i4 = _unravel5(r0, ys)
    o = i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3] + i4 * st[4]
    for r in range(r0, r1):
        yr = y[r * L:(r + 1) * L]
        if s5 == 1:
            xr = x[o:o + L]
            for k in range(L):
                yr[k] = xr[k]
        else:
            for k in range(L):
                yr[k] = x[o + k * s5]
        i0, i1, i2, i3, i4, o = _step5(i0, i1, i2, i3, i4, o, ys, st)


@njit(**PJIT)
def transpose_f32(x, shape, perm, y):
    """y = x.reshape(shape).transpose(perm) written C-contiguous into y (flat); shape/perm
    rank 6 (left-padded)."""
    ys, st = _transpose_generic(x, shape, perm, y)
    R = ys[0] * ys[1] * ys[2] * ys[3] * ys[4]
    if R * ys[5] <= CHUNK:
        xcall(_transpose_rows, x, y, ys, st, 0, R)
        return
    rb = row_block(R, ys[5])
    for t in prange(-(-R // rb)):
        r0 = np.int64(t) * rb
        xcall(_transpose_rows, x, y, ys, st, r0, min(R, r0 + rb))


@njit(**JIT)
def _transpose_task(t, K, Ni, Nj, xrs, rb, G, nb, ti, x, y, ys, st):
    """Task t of transpose_u8: K >= 0 (K = number of outer dims): with G > 0, the whole 2-D
    transposes of outer indices t·G .. t·G + G − 1 (of nb); else the tile rows of outer index
    t // nti; K < 0: output rows t·rb .. t·rb + rb − 1 (rows of ys[5] elements)."""
    if K >= 0 and G > 0:
        o0 = t * G
        idx = np.zeros(6, np.int64)            # outer index of o, odometer (no divisions)
        rem = o0
        for d in range(K - 1, -1, -1):
            idx[d] = rem % ys[d]
            rem //= ys[d]
        xo = _outer_offset(o0, K, ys, st)
        for o in range(o0, min(nb, o0 + G)):
            _t2d_task(x, xo, xrs, y, o * Ni * Nj, 0, Ni, Nj)
            d = K - 1
            while d >= 0:
                idx[d] += 1
                xo += st[d]
                if idx[d] < ys[d]:
                    break
                xo -= ys[d] * st[d]
                idx[d] = 0
                d -= 1
    elif K >= 0:
        nti = -(-Ni // ti)
        o = t // nti
        i0 = (t - o * nti) * ti
        _t2d_task(x, _outer_offset(o, K, ys, st), xrs, y, o * Ni * Nj, i0, min(Ni, i0 + ti), Nj)
    else:
        R = ys[0] * ys[1] * ys[2] * ys[3] * ys[4]
        xcall(_transpose_rows, x, y, ys, st, t * rb, min(R, t * rb + rb))


TJ_SPLIT = 4096    # columns per task of a split few-row transpose (_split_rows_task)


@njit(inline="always", **JIT)
def split_rows_ok(Ni, Nj, xrs):
    """Whether a 2-D transpose Y[i, j] = X[j, i] (transpose_tasks) runs as _split_rows_task:
    few output rows (Ni = 2, 3, 4 or 8: the rows of a [Nj, Ni] byte matrix, i.e. a
    channels-last tensor with that many channels into channels-first, as CaiT's talking heads
    and EfficientFormerV2's attention do), X's rows contiguous (xrs = Ni) and at least one
    16-column block.  The tile path would leave such a transpose to scalar code on one
    thread: [38416, 4] -> [4, 38416] took 146 us, its inverse 17 us."""
    return (Ni == 2 or Ni == 3 or Ni == 4 or Ni == 8) and xrs == Ni and Nj >= 16


@njit(**JIT)
def _split_rows_task(t, nch, K, Ni, Nj, x, y, ys, st):
    """Task t of a batch of few-row transposes (split_rows_ok): outer index t // nch, columns
    [c·TJ_SPLIT, (c + 1)·TJ_SPLIT) with c = t mod nch (nch = max(1, Nj // TJ_SPLIT): the last
    chunk also takes the remainder, so every chunk has 16 columns or more), in 16-column
    de-interleaves; a chunk's last block starts 16 before the chunk's end and overlaps the
    one before it (the same values, written by the same task)."""
    o = t // nch
    c = t - o * nch
    j0 = c * TJ_SPLIT
    j1 = Nj if c == nch - 1 else j0 + TJ_SPLIT
    xo = _outer_offset(o, K, ys, st)
    yo = o * Ni * Nj
    j = j0
    while j < j1:
        jb = min(j, j1 - 16)
        if Ni == 2:
            _deinterleave2(x, xo + jb * Ni, y, yo + jb, Nj)
        elif Ni == 3:
            _deinterleave3(x, xo + jb * Ni, y, yo + jb, Nj)
        elif Ni == 4:
            _deinterleave4(x, xo + jb * Ni, y, yo + jb, Nj)
        else:
            _deinterleave8(x, xo + jb * Ni, y, yo + jb, Nj)
        j += 16


@njit(inline="always", **JIT)
def transpose_tasks(n, ys, st, ti):
    """The task list of a rank-6 transpose of n elements (y's shape ys, x's strides st in y's
    dim order; see transpose_u8): (K, Ni, Nj, xrs, rb, ntask).  K >= 0: batches of 2-D
    transposes Y[i, j] = X[j, i] (K batch dims, Ni x Nj, x's j stride xrs), task t = batch
    t // ceil(Ni / ti), ti output rows i; K = -1: rows of y, rb rows per task."""
    K = -1                                     # 2-D mode: number of batch dims (>= 0)
    Ni = Nj = xrs = np.int64(1)
    R = ys[0] * ys[1] * ys[2] * ys[3] * ys[4]
    rb = max(R, 1) if n <= CHUNK else row_block(R, ys[5])     # rows per task (row mode)
    ntask = -(-R // rb)
    if st[5] != 1 and ys[5] > 1:
        ki = -1                                # y's dim holding x's innermost (stride 1) dim
        for k in range(6):
            if st[k] == 1 and ys[k] > 1:
                ki = k
        if ki >= 0:
            Ni = ys[ki]
            klo = ki
            while klo > 0 and st[klo - 1] == Ni:
                klo -= 1
                Ni *= ys[klo]
            Nj = ys[5]
            xrs = st[5]
            kj = 5
            while kj - 1 > ki and st[kj - 1] == xrs * Nj:
                kj -= 1
                Nj *= ys[kj]
            if kj == ki + 1:
                K = klo
                ntask = (n // (Ni * Nj)) * -(-Ni // ti)
    return K, Ni, Nj, xrs, rb, ntask


@njit(**PJIT)
def transpose_u8(x, shape, perm, y):
    """y = x.reshape(shape).transpose(perm) written C-contiguous into y (flat); shape/perm
    rank 6 (left-padded with size-1 dims, as layout.transpose_args gives them).

    When y's innermost dim is strided in x, the transpose is a batch of 2-D transposes
    Y[i, j] = X[j, i]: i = the output dims that are contiguous in x (x's innermost dims,
    merged), j = y's innermost dims (merged while contiguous in x), batch = the dims before
    i (any strides); needs nothing between i and j in y's order.  Those run as 16 x 16 byte
    tiles (vector shuffles), or interleaves when j has 2, 3, 4 or 8 elements (NCHW -> NHWC
    of an RGB image), or de-interleaves when i has 2, 3, 4 or 8 (split_rows_ok: the other
    way round, tasks over column chunks).  Otherwise rows of y are copied (contiguous or
    strided reads).  One task list either way: serial for small tensors, else prange."""
    ys, st = _transpose_generic(x, shape, perm, y)
    n = x.size
    K, Ni, Nj, xrs, rb, ntask = transpose_tasks(n, ys, st, TI)
    if K >= 0 and split_rows_ok(Ni, Nj, xrs) and 4 * Ni * Nj > GROUP_BYTES:
        nch = max(np.int64(1), Nj // TJ_SPLIT)
        ntask = (n // (Ni * Nj)) * nch
        if n <= CHUNK:
            for t in range(ntask):
                xcall(_split_rows_task, t, nch, K, Ni, Nj, x, y, ys, st)
            return
        for t in prange(ntask):
            xcall(_split_rows_task, np.int64(t), nch, K, Ni, Nj, x, y, ys, st)
        return
    ti = np.int64(TI)                          # output rows per task (tile rows)
    if K >= 0 and Nj <= 8:                     # interleaves of 16·Nj bytes: 16x the rows, so
        ti = np.int64(TI_INTERLEAVE)           # that a task moves 2-8 KB, not 128-512 bytes
        ntask = (n // (Ni * Nj)) * -(-Ni // ti)
    G = np.int64(0)                            # 2-D transposes per task (0: tile rows)
    nb = np.int64(0)
    if K >= 0 and 4 * Ni * Nj <= GROUP_BYTES:  # small transposes (a channel shuffle per
        nb = n // (Ni * Nj)                    # pixel): many to a task, not a task each
        G = max(np.int64(1), GROUP_BYTES // (Ni * Nj))
        ntask = -(-nb // G)
    if n <= CHUNK:
        for t in range(ntask):
            xcall(_transpose_task, t, K, Ni, Nj, xrs, rb, G, nb, ti, x, y, ys, st)
        return
    for t in prange(ntask):
        xcall(_transpose_task, np.int64(t), K, Ni, Nj, xrs, rb, G, nb, ti, x, y, ys, st)
