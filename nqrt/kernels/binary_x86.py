"""QAdd (formats/nq-v1.md 4.3) and QMul (4.10) on x86 hosts with AVX2 (the avx2 and vnni512
GEMM paths): `add_u8_avx2` and `mul_u8_avx2`, the same arguments, tasks and results as
`eltwise.add_u8` and `binary.mul_u8`, bit for bit.  The portable kernels compute in int64 per
element; AVX2 has no 64-bit arithmetic shift or min/max, so LLVM emulates them (QAdd ~1.5,
QMul ~1.5 cycles per element).  Here, where both operands are contiguous (a residual add of
two equal shapes; an SE block's x times its per-image channel scale, whose short rows are
run as one flat loop against the scale row repeated), 16 elements per step:

QAdd   y = clamp(((a − z_a)·Ma + (b − z_b)·Mb + 2^(n−1)) >> n) + z_y, act_min, act_max)
  * da = a − z_a and db = b − z_b (int16, |.| <= 255) are interleaved as pairs (da, db);
  * each multiplier splits as M = M1·2^16 + M0 with M0 its signed low half (|M0| <= 2^15);
  * H = vpmaddwd((da, db), (Ma1, Mb1)) = da·Ma1 + db·Mb1 and
    L = vpmaddwd((da, db), (Ma0, Mb0)) = da·Ma0 + db·Mb0, both exact (|.| <= 2·255·2^15);
  * with 2^(n−1) = R1·2^16 + R0 (R0 < 2^16), S = n − 16 and T = R1 + z_y·2^S, the numerator
    of the spec plus z_y·2^n is (H + T)·2^16 + (L + R0), so
        floor(num / 2^n) + z_y = (H + T + ((L + R0) >> 16)) >> S       (arithmetic shifts)
    because floor(floor(X / 2^16) / 2^S) = floor(X / 2^n) and H + T is an integer.
  This needs 16 <= n <= 47 (S a valid 32-bit shift), Ma1, Mb1 within int16 and
  255·(|Ma1| + |Mb1|) + |T| + 257 < 2^31 (no 32-bit overflow): `pair_consts`.
QMul   y = clamp(((a − z_a)·(b − z_b)·M0 + 2^(n−1)) >> n) + z_y, act_min, act_max)
  * p = da·db exactly as vpmaddwd((da, 0), (db, 0)) (|p| <= 65 025);
  * p·M0 + BC in 64 bits (vpmuldq on the even and the odd lanes), BC = 2^(n−1) + z_y·2^n;
    its high dword shifted by n − 32 (vpsravd) is the result (fixedpoint.signed_requant:
    32 <= n <= 62 and no 64-bit overflow).
Both: vpackssdw + vpackuswb saturate the int32 results to [0, 255] (exactly the clamp of the
value), then the clamp to [act_min, act_max] works on the bytes.  Anything the forms do not
cover (other multipliers, broadcast operands, the last L mod 16 elements of a run) runs the
portable kernels' loops.  Each output is computed independently, so results do not depend on
the thread count.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.binary import PRODUCT_MAX, _mul_row
from nqrt.kernels.eltwise import (CHUNK, _add_row, merge_broadcast_rows, next_row, row_start,
                                  task_layout, task_offsets)
from nqrt.kernels.fixedpoint import signed_requant
from nqrt.kernels.rowcopy import copy_runs

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
STEP = 16                 # elements per step of _add_step / _mul_step
HALF = 1 << 15


@njit(inline="always", **JIT)
def pair_consts(m_a, m_b, n, z_y):
    """(ok, mh, ml, r0, t, s): the constants of the 32-bit form (module docstring) with the
    multiplier halves packed as int32 pairs, mh = Ma1 | Mb1 << 16 and ml = Ma0 | Mb0 << 16
    (little-endian int16 pairs: vpmaddwd's operand for (da, db)).  ok is False when the form
    is not exact for these values."""
    m_a = np.int64(m_a)
    m_b = np.int64(m_b)
    n = np.int64(n)
    z_y = np.int64(z_y)
    bad = (False, np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0))
    if n < 16 or n > 47:
        return bad
    a0 = ((m_a + HALF) & 0xFFFF) - HALF          # the signed low halves
    b0 = ((m_b + HALF) & 0xFFFF) - HALF
    a1 = (m_a - a0) >> 16
    b1 = (m_b - b0) >> 16
    if a1 < -HALF or a1 >= HALF or b1 < -HALF or b1 >= HALF:
        return bad
    s = n - 16
    rnd = np.int64(1) << (n - 1)
    r0 = rnd & 0xFFFF
    t = (rnd >> 16) + (z_y << s)
    if 255 * (abs(a1) + abs(b1)) + abs(t) + 257 >= (np.int64(1) << 31):
        return bad
    mh = (a1 & 0xFFFF) | ((b1 & 0xFFFF) << 16)
    ml = (a0 & 0xFFFF) | ((b0 & 0xFFFF) << 16)
    return True, mh, ml, r0, t, s


def _step_codegen(op):
    """Codegen of the 16-element step of `op` ("add" or "mul"), arguments
    (a, oa, b, ob, za, zb, *consts, lo, hi, y, oy): u8[:] arrays a, b, y and int64 scalars;
    consts = add: (mh, ml, r0, t, s) of pair_consts; mul: (m0, bc, sh) of signed_requant."""

    def codegen(context, builder, signature, args):
        a_, oa_, b_, ob_, za_, zb_ = args[:6]
        consts = args[6:-4]
        lo_, hi_, y_, oy_ = args[-4:]
        sa = signature.args
        mod = builder.module
        v16b = ir.VectorType(_I8, 16)
        v16w = ir.VectorType(_I16, 16)
        v8d = ir.VectorType(_I32, 8)
        v4q = ir.VectorType(_I64, 4)
        v32b = ir.VectorType(_I8, 32)
        pmaddwd = cgutils.get_or_insert_function(
            mod, ir.FunctionType(v8d, [v16w, v16w]), "llvm.x86.avx2.pmadd.wd")
        packssdw = cgutils.get_or_insert_function(
            mod, ir.FunctionType(v16w, [v8d, v8d]), "llvm.x86.avx2.packssdw")
        packuswb = cgutils.get_or_insert_function(
            mod, ir.FunctionType(v32b, [v16w, v16w]), "llvm.x86.avx2.packuswb")

        def ptr(aty, val, off):
            data = cgutils.create_struct_proxy(aty)(context, builder, value=val).data
            return builder.gep(builder.bitcast(data, _I8.as_pointer()), [off])

        def splat(v, ty, n):
            vty = ir.VectorType(ty, n)
            x = builder.insert_element(ir.Constant(vty, None), v, ir.Constant(_I32, 0))
            return builder.shuffle_vector(x, ir.Constant(vty, None),
                                          ir.Constant(ir.VectorType(_I32, n), [0] * n))

        def diff(aty, val, off, z):              # int16 lanes x − z
            v = builder.load(builder.bitcast(ptr(aty, val, off), v16b.as_pointer()), align=1)
            return builder.sub(builder.zext(v, v16w), splat(builder.trunc(z, _I16), _I16, 16))

        def pairs(u, v, half):                   # (u_k, v_k) for k in half·8 .. half·8 + 7
            order = [x for k in range(8 * half, 8 * half + 8) for x in (k, 16 + k)]
            return builder.shuffle_vector(u, v, ir.Constant(ir.VectorType(_I32, 16), order))

        da = diff(sa[0], a_, oa_, za_)
        db = diff(sa[2], b_, ob_, zb_)
        vals = []
        if op == "add":
            mh_, ml_, r0_, t_, s_ = consts
            mh = builder.bitcast(splat(builder.trunc(mh_, _I32), _I32, 8), v16w)
            ml = builder.bitcast(splat(builder.trunc(ml_, _I32), _I32, 8), v16w)
            r0 = splat(builder.trunc(r0_, _I32), _I32, 8)
            t = splat(builder.trunc(t_, _I32), _I32, 8)
            s = splat(builder.trunc(s_, _I32), _I32, 8)
            c16 = ir.Constant(v8d, [16] * 8)
            for half in range(2):                # elements 0-7, then 8-15
                ab = pairs(da, db, half)
                h = builder.call(pmaddwd, [ab, mh])
                low = builder.ashr(builder.add(builder.call(pmaddwd, [ab, ml]), r0), c16)
                vals.append(builder.ashr(builder.add(builder.add(h, t), low), s))
        else:
            m0_, bc_, sh_ = consts
            c32 = ir.Constant(v4q, [32] * 4)
            m0 = splat(m0_, _I64, 4)
            m0 = builder.ashr(builder.shl(m0, c32), c32)   # M0 < 2^31: lets LLVM use vpmuldq
            bc = splat(bc_, _I64, 4)
            sh = splat(builder.trunc(sh_, _I32), _I32, 8)
            zero = ir.Constant(v16w, None)
            for half in range(2):
                p = builder.call(pmaddwd, [pairs(da, zero, half), pairs(db, zero, half)])
                p64 = builder.bitcast(p, v4q)
                even = builder.add(builder.mul(builder.ashr(builder.shl(p64, c32), c32), m0), bc)
                odd = builder.add(builder.mul(builder.ashr(p64, c32), m0), bc)
                high = builder.shuffle_vector(builder.bitcast(even, v8d), builder.bitcast(odd, v8d),
                                              ir.Constant(v8d, [1, 9, 3, 11, 5, 13, 7, 15]))
                vals.append(builder.ashr(high, sh))
        packed = builder.call(packuswb, [builder.call(packssdw, vals)] * 2)
        # dwords of `packed`: [e0-3, e8-11, e0-3, e8-11 | e4-7, e12-15, ...]
        q = builder.shuffle_vector(builder.bitcast(packed, v8d), ir.Constant(v8d, None),
                                   ir.Constant(ir.VectorType(_I32, 4), [0, 4, 1, 5]))
        q = builder.bitcast(q, v16b)
        lo = splat(builder.trunc(lo_, _I8), _I8, 16)
        hi = splat(builder.trunc(hi_, _I8), _I8, 16)
        q = builder.select(builder.icmp_unsigned("<", q, lo), lo, q)
        q = builder.select(builder.icmp_unsigned(">", q, hi), hi, q)
        builder.store(q, builder.bitcast(ptr(sa[-2], y_, oy_), v16b.as_pointer()), align=1)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _add_step(typingctx, a, oa, b, ob, za, zb, mh, ml, r0, t, s, lo, hi, y, oy):
    """QAdd: y[oy + k] for k < 16 from a[oa + k], b[ob + k] (u8[:] arrays) with pair_consts'
    constants (module docstring); za, zb, lo, hi as int64 in [0, 255]."""
    return (types.void(a, oa, b, ob, za, zb, mh, ml, r0, t, s, lo, hi, y, oy),
            _step_codegen("add"))


@intrinsic
def _mul_step(typingctx, a, oa, b, ob, za, zb, m0, bc, sh, lo, hi, y, oy):
    """QMul: y[oy + k] for k < 16 from a[oa + k], b[ob + k] with signed_requant's constants
    for |p| <= PRODUCT_MAX (module docstring); za, zb, lo, hi as int64 in [0, 255]."""
    return (types.void(a, oa, b, ob, za, zb, m0, bc, sh, lo, hi, y, oy),
            _step_codegen("mul"))


@njit(inline="always", **JIT)
def _add_row_x86(a, oa, sa, b, ob, sb, L, z_a, z_b, m_a, m_b, rnd, shift, z_y, lo, hi, y, oy):
    """eltwise._add_row with the 16-element steps where both operands are contiguous."""
    ok, mh, ml, r0, t, s = pair_consts(m_a, m_b, shift, z_y)
    done = 0
    if ok and sa == 1 and sb == 1:
        done = L // STEP * STEP
        for k in range(0, done, STEP):
            _add_step(a, oa + k, b, ob + k, np.int64(z_a), np.int64(z_b), mh, ml, r0, t, s,
                      np.int64(lo), np.int64(hi), y, oy + k)
    if done < L:
        _add_row(a, oa + done * sa, sa, b, ob + done * sb, sb, L - done, z_a, z_b, m_a, m_b,
                 rnd, shift, z_y, lo, hi, y, oy + done)


@njit(**JIT)
def _add_task_x86(t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb, z_a, z_b, m_a,
                  m_b, rnd, shift, z_y, lo, hi, y):
    """Task t of add_u8_avx2: eltwise._add_task's rows through _add_row_x86."""
    if G == 1:
        n, oa, ob, oy = task_offsets(t, nch, K, L, shape, a_strides, b_strides, sa, sb)
        _add_row_x86(a, oa, sa, b, ob, sb, n, z_a, z_b, m_a, m_b, rnd, shift, z_y, lo, hi, y, oy)
        return
    idx = np.zeros(6, np.int64)
    r0 = t * G
    oa, ob = row_start(r0, K, shape, a_strides, b_strides, idx)
    for r in range(r0, min(R, r0 + G)):
        _add_row_x86(a, oa, sa, b, ob, sb, L, z_a, z_b, m_a, m_b, rnd, shift, z_y, lo, hi, y,
                     r * L)
        oa, ob = next_row(K, shape, a_strides, b_strides, idx, oa, ob)


@njit(**PJIT)
def add_u8_avx2(a, b, shape, a_strides, b_strides, z_a, z_b, m_a, m_b, shift, z_y, act_min,
                act_max, y):
    """eltwise.add_u8 for x86 hosts with AVX2 (the avx2 / vnni512 GEMM paths only: LLVM
    cannot compile it for other CPUs).  Same arguments, tasks and results."""
    K, L, R, sa, sb = merge_broadcast_rows(shape, a_strides, b_strides)
    rnd = np.int64(1) << np.int64(shift - 1)
    sft = np.int64(shift)
    lo = np.int64(act_min)
    hi = np.int64(act_max)
    nch, G, ntask = task_layout(L, R)
    if R * L <= CHUNK:
        for t in range(ntask):
            xcall(_add_task_x86, t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb,
                  z_a, z_b, m_a, m_b, rnd, sft, z_y, lo, hi, y)
        return
    for t in prange(ntask):
        xcall(_add_task_x86, np.int64(t), nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa,
              sb, z_a, z_b, m_a, m_b, rnd, sft, z_y, lo, hi, y)


@njit(inline="always", **JIT)
def _mul_run_x86(a, oa, b, ob, n, z_a, z_b, m0, rnd, shift, z_y, lo, hi, y, oy, ok, bc, sh):
    """n elements of a contiguous product run: 16-element steps when signed_requant's form
    holds (ok), the rest (or all) through binary._mul_row."""
    done = 0
    if ok:
        done = n // STEP * STEP
        for k in range(0, done, STEP):
            _mul_step(a, oa + k, b, ob + k, np.int64(z_a), np.int64(z_b), np.int64(m0), bc, sh,
                      np.int64(lo), np.int64(hi), y, oy + k)
    if done < n:
        _mul_row(a, oa + done, 1, b, ob + done, 1, n - done, z_a, z_b, m0, rnd, shift, z_y, lo,
                 hi, y, oy + done)


@njit(inline="always", **JIT)
def _repeat_row(b, ob, L, n, rep):
    """rep[:n] = b[ob:ob + L] repeated (n a multiple of L): vector pieces (rowcopy.copy_runs,
    ~0.03 ns per byte) where L >= 8; a byte loop here runs at ~0.45 ns per byte."""
    if L >= 8:
        copy_runs(rep, 0, L, b, ob, 0, 0, 1, L, n // L)
        return
    for j in range(0, n, L):
        for k in range(L):
            rep[j + k] = b[ob + k]


@njit(**JIT)
def _mul_task_x86(t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb, z_a, z_b, m0,
                  rnd, shift, z_y, lo, hi, y):
    """Task t of mul_u8_avx2: binary._mul_task's rows, contiguous runs through _mul_run_x86.
    Rows that are contiguous in a and read the same row of b (an SE block's x times its
    per-image channel scale) run as one flat run per image against that row repeated (u8,
    rebuilt only when the run reads another row of b): 16-element steps across row ends,
    and no per-row call (each costs reference counting on the arrays, shared by the
    threads)."""
    ok, bc, sh = signed_requant(0, PRODUCT_MAX, m0, shift, z_y)
    if G == 1:
        cnt, oa, ob, oy = task_offsets(t, nch, K, L, shape, a_strides, b_strides, sa, sb)
        if sa == 1 and sb == 1:
            _mul_run_x86(a, oa, b, ob, cnt, z_a, z_b, m0, rnd, shift, z_y, lo, hi, y, oy, ok, bc,
                         sh)
        else:
            _mul_row(a, oa, sa, b, ob, sb, cnt, z_a, z_b, m0, rnd, shift, z_y, lo, hi, y, oy)
        return
    idx = np.zeros(6, np.int64)
    r0 = t * G
    r1 = min(R, r0 + G)
    oa, ob = row_start(r0, K, shape, a_strides, b_strides, idx)
    if sa == 1 and sb == 1 and K >= 1 and a_strides[K - 1] == L and b_strides[K - 1] == 0:
        rep = np.empty(min(r1 - r0, shape[K - 1]) * L, np.uint8)
        rep_ob = np.int64(-1)
        rep_n = 0
        r = r0
        while r < r1:
            nrun = min(r1 - r, shape[K - 1] - idx[K - 1])   # rows until the last row dim wraps
            if ob != rep_ob or nrun * L > rep_n:
                _repeat_row(b, ob, L, nrun * L, rep)
                rep_ob = ob
                rep_n = nrun * L
            _mul_run_x86(a, oa, rep, 0, nrun * L, z_a, z_b, m0, rnd, shift, z_y, lo, hi, y,
                         r * L, ok, bc, sh)
            r += nrun
            if r < r1:
                oa, ob = row_start(r, K, shape, a_strides, b_strides, idx)
        return
    for r in range(r0, r1):
        if sa == 1 and sb == 1:
            _mul_run_x86(a, oa, b, ob, L, z_a, z_b, m0, rnd, shift, z_y, lo, hi, y, r * L, ok,
                         bc, sh)
        else:
            _mul_row(a, oa, sa, b, ob, sb, L, z_a, z_b, m0, rnd, shift, z_y, lo, hi, y, r * L)
        oa, ob = next_row(K, shape, a_strides, b_strides, idx, oa, ob)


@njit(**PJIT)
def mul_u8_avx2(a, b, shape, a_strides, b_strides, z_a, z_b, m0, n, z_y, act_min, act_max, y):
    """binary.mul_u8 for x86 hosts with AVX2 (the avx2 / vnni512 GEMM paths only: LLVM
    cannot compile it for other CPUs).  Same arguments, tasks and results."""
    K, L, R, sa, sb = merge_broadcast_rows(shape, a_strides, b_strides)
    rnd = np.int64(1) << np.int64(n - 1)
    sft = np.int64(n)
    lo = np.int64(act_min)
    hi = np.int64(act_max)
    nch, G, ntask = task_layout(L, R)
    if R * L <= CHUNK:
        for t in range(ntask):
            xcall(_mul_task_x86, t, nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa, sb,
                  z_a, z_b, m0, rnd, sft, z_y, lo, hi, y)
        return
    for t in prange(ntask):
        xcall(_mul_task_x86, np.int64(t), nch, G, R, K, L, a, b, shape, a_strides, b_strides, sa,
              sb, z_a, z_b, m0, rnd, sft, z_y, lo, hi, y)
