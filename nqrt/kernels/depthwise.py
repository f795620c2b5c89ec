"""Depthwise QConv (spec 4.1 with group == C == M) on NHWC uint8 activations.

    y[n, oh, ow, c] = clamp(requantize(Σ_{i,j inside x} (x[n, ih, iw, c] − z_x)·w[c, i, j]
                      + bias[c]) + z_y)

Channels are innermost (NHWC), so the work vectorizes over c.  Packed weights: int8 [kh, kw, C]
(`pack_depthwise_weights`).  Parallel over output rows (N·OH): the scratch holds T slices of
`slice_bytes` (T = the planner's thread count); prange iteration t owns rows
[t·R/T, (t+1)·R/T) and slice t, so results do not depend on the thread count.

Fast path (`_dw_pixels`, a Numba intrinsic emitting generic LLVM vector IR, so it runs on any
ISA; on AVX2 it becomes vpmovzxbw/vpmovsxbw/vpmullw/vpmovsxwd/vpaddd + vpmuldq/vpsrlvq): per
output pixel and block of 16 channels, the taps of the window that lie inside x are summed
in 16 x int32 registers, each product (x − z_x)·w computed exactly in int16 (|.| ≤ 255·128 <
2^15); then the requantize runs on the registers and 16 bytes are stored.  A row's interior
pixels (whole window inside x) form one call with a fixed per-pixel input step, border pixels
one call each with only their valid taps (padding contributes (z_x − z_x)·w = 0).

Requantize without a 64-bit arithmetic shift (AVX2 has none): per channel, d ≥ 0 is chosen
so that num = (dot + bias)·M0 + 2^(n−1) + d·2^n ≥ 0 for every possible dot
(|dot| ≤ kh·kw·255·128); then floor(num_spec / 2^n) = (num >>> n) − d exactly, with
num = dot·M0 + Bc, Bc = bias·M0 + 2^(n−1) + d·2^n precomputed.  The prologue checks that all
of this stays inside int64 / int32 (it does for any realistic multiplier); otherwise the
whole call takes the scalar path.  Channels past the last multiple of 16 take a
scalar loop with the spec's formula.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT
from nqrt.kernels.fixedpoint import output_u8

VL = 16                 # channels per vector block
PAR_MIN_MACS = 1 << 16  # below this many MACs, one thread (a parallel launch costs a few us)

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def pack_depthwise_weights(w):
    """int8 w[C, 1, kh, kw] -> int8[kh·kw·C] in (i, j, c) order."""
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)).reshape(-1)


@njit(**JIT)
def _layout(C, kh, kw):
    """Byte offsets inside one thread's slice: Bc (i64[C]), SH (i64[C]), xo, wo (i64[kh·kw]
    tap offsets), ZD (i32[C]); and the total."""
    o_bc = 0
    o_sh = o_bc + 8 * C
    o_xo = o_sh + 8 * C
    o_wo = o_xo + 8 * kh * kw
    o_zd = o_wo + 8 * kh * kw
    return o_bc, o_sh, o_xo, o_wo, o_zd, o_zd + 4 * C


@njit(**JIT)
def depthwise_scratch_bytes(C, kh, kw, OW):
    """Bytes of scratch one thread needs (before alignment)."""
    return _layout(C, kh, kw)[5]


# ----------------------------------------------------------------------------- vector kernel
def _ptr(context, builder, aty, val, elt):
    data = cgutils.create_struct_proxy(aty)(context, builder, value=val).data
    return builder.bitcast(data, elt.as_pointer())


def _splat(builder, v, vty):
    n = vty.count
    sv = builder.insert_element(ir.Constant(vty, None), v, ir.Constant(_I32, 0))
    return builder.shuffle_vector(sv, ir.Constant(vty, None), ir.Constant(ir.VectorType(_I32, n),
                                                                          [0] * n))


@intrinsic
def _dw_pixels(typingctx, x, xo, w, wo, ntaps, npx, xstep, zx, m0, bc, sh, zd, lo, hi, y, yo,
               ystep, nblk):
    """For p < npx, b < nblk (c = 16·b .. 16·b + 15), with t < ntaps:
        acc[c] = Σ_t (x[xo[t] + p·xstep + c] − zx) · w[wo[t] + c]       (int32, exact)
        y[yo + p·ystep + c] = clamp(((acc·m0[c] + bc[c]) >>> sh[c]) + zd[c], lo, hi)
    x u8[:], w i8[:], y u8[:] flat; xo, wo, bc, sh i64[:]; m0, zd i32[:].  npx, nblk >= 1;
    ntaps >= 0.  The caller guarantees acc·m0 + bc in [0, 2^63) and the shifted value + zd
    within int32 (see the module docstring)."""
    sig = types.void(x, xo, w, wo, ntaps, npx, xstep, zx, m0, bc, sh, zd, lo, hi, y, yo, ystep,
                     nblk)

    def codegen(context, builder, signature, args):
        (x_, xo_, w_, wo_, nt_, np_, xs_, zx_, m0_, bc_, sh_, zd_, lo_, hi_, y_, yo_, ys_,
         nb_) = args
        sa = signature.args
        v8 = ir.VectorType(_I8, VL)
        v16 = ir.VectorType(_I16, VL)
        v32 = ir.VectorType(_I32, VL)
        v64 = ir.VectorType(_I64, VL)
        xp = _ptr(context, builder, sa[0], x_, _I8)
        xop = _ptr(context, builder, sa[1], xo_, _I64)
        wp = _ptr(context, builder, sa[2], w_, _I8)
        wop = _ptr(context, builder, sa[3], wo_, _I64)
        m0p = _ptr(context, builder, sa[8], m0_, _I32)
        bcp = _ptr(context, builder, sa[9], bc_, _I64)
        shp = _ptr(context, builder, sa[10], sh_, _I64)
        zdp = _ptr(context, builder, sa[11], zd_, _I32)
        yp = _ptr(context, builder, sa[14], y_, _I8)
        zxv = _splat(builder, builder.trunc(zx_, _I16), v16)
        lov = _splat(builder, builder.trunc(lo_, _I32), v32)
        hiv = _splat(builder, builder.trunc(hi_, _I32), v32)
        zero32 = ir.Constant(v32, None)
        one = ir.Constant(_I64, 1)
        k16 = ir.Constant(_I64, VL)

        pre = builder.block
        px_loop = builder.append_basic_block("dw.px")
        blk_loop = builder.append_basic_block("dw.blk")
        tap_loop = builder.append_basic_block("dw.tap")
        tap_done = builder.append_basic_block("dw.tapdone")
        blk_end = builder.append_basic_block("dw.blkend")
        px_end = builder.append_basic_block("dw.pxend")
        done = builder.append_basic_block("dw.done")
        has_taps = builder.icmp_signed(">", nt_, ir.Constant(_I64, 0))
        builder.branch(px_loop)

        builder.position_at_end(px_loop)
        p = builder.phi(_I64)
        p.add_incoming(ir.Constant(_I64, 0), pre)
        xbase = builder.mul(p, xs_)
        ybase = builder.add(yo_, builder.mul(p, ys_))
        builder.branch(blk_loop)

        builder.position_at_end(blk_loop)
        c = builder.phi(_I64)
        c.add_incoming(ir.Constant(_I64, 0), px_loop)
        xc = builder.add(xbase, c)
        builder.cbranch(has_taps, tap_loop, tap_done)

        builder.position_at_end(tap_loop)
        t = builder.phi(_I64)
        t.add_incoming(ir.Constant(_I64, 0), blk_loop)
        acc = builder.phi(v32)
        acc.add_incoming(zero32, blk_loop)
        xoff = builder.add(builder.load(builder.gep(xop, [t])), xc)
        woff = builder.add(builder.load(builder.gep(wop, [t])), c)
        xv = builder.load(builder.bitcast(builder.gep(xp, [xoff]), v8.as_pointer()), align=1)
        wv = builder.load(builder.bitcast(builder.gep(wp, [woff]), v8.as_pointer()), align=1)
        prod = builder.mul(builder.sub(builder.zext(xv, v16), zxv), builder.sext(wv, v16))
        acc2 = builder.add(acc, builder.sext(prod, v32))
        t2 = builder.add(t, one)
        acc.add_incoming(acc2, tap_loop)
        t.add_incoming(t2, tap_loop)
        builder.cbranch(builder.icmp_signed("<", t2, nt_), tap_loop, tap_done)

        builder.position_at_end(tap_done)
        fin = builder.phi(v32)
        fin.add_incoming(zero32, blk_loop)
        fin.add_incoming(acc2, tap_loop)
        mv = builder.load(builder.bitcast(builder.gep(m0p, [c]), v32.as_pointer()), align=1)
        prod64 = builder.mul(builder.sext(fin, v64), builder.sext(mv, v64))
        bcv = builder.load(builder.bitcast(builder.gep(bcp, [c]), v64.as_pointer()), align=1)
        shv = builder.load(builder.bitcast(builder.gep(shp, [c]), v64.as_pointer()), align=1)
        q = builder.trunc(builder.lshr(builder.add(prod64, bcv), shv), v32)
        zdv = builder.load(builder.bitcast(builder.gep(zdp, [c]), v32.as_pointer()), align=1)
        q = builder.add(q, zdv)
        q = builder.select(builder.icmp_signed("<", q, lov), lov, q)
        q = builder.select(builder.icmp_signed(">", q, hiv), hiv, q)
        yptr = builder.gep(yp, [builder.add(ybase, c)])
        builder.store(builder.trunc(q, v8), builder.bitcast(yptr, v8.as_pointer()), align=1)
        builder.branch(blk_end)

        builder.position_at_end(blk_end)
        c2 = builder.add(c, k16)
        c.add_incoming(c2, blk_end)
        nbc = builder.mul(nb_, k16)
        builder.cbranch(builder.icmp_signed("<", c2, nbc), blk_loop, px_end)

        builder.position_at_end(px_end)
        p2 = builder.add(p, one)
        p.add_incoming(p2, px_end)
        builder.cbranch(builder.icmp_signed("<", p2, np_), px_loop, done)

        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


# ----------------------------------------------------------------------------- drivers
# Few njit levels on purpose: Numba re-optimizes and re-generates the machine code of every
# callee inside each caller's library, so helpers are inlined at the Numba IR level and the
# intrinsic has one call site.
@njit(inline="always", **JIT)
def _prepare(bias, mult, shift, z_y, kh, kw, bc, sh, zd):
    """Per-channel constants of the vector requantize (module docstring); False if some
    channel's values could leave int64 / int32 (then the caller uses the reference path)."""
    C = bias.size
    amax = np.int64(kh * kw) * 255 * 128
    lim = np.int64(1) << np.int64(61)
    ok = True
    for c in range(C):
        m0 = np.int64(mult[c])
        n = np.int64(shift[c])
        if m0 < 0 or n < 1 or n > 60:
            ok = False
            break
        b = np.int64(bias[c])
        rnd = np.int64(1) << (n - 1)
        lo = (b - amax) * m0 + rnd          # |b ± amax| < 2^32, m0 < 2^31: no overflow
        hi = (b + amax) * m0 + rnd
        if lo <= -lim or hi >= lim:
            ok = False
            break
        d = np.int64(0)
        if lo < 0:
            d = (-lo + (np.int64(1) << n) - 1) >> n
        top = (hi + (d << n)) >> n           # hi + d·2^n < 2^61 + 2^61 + 2^60: fits
        if d >= (1 << 30) or top >= (1 << 30):
            ok = False
            break
        bc[c] = b * m0 + rnd + (d << n)
        sh[c] = n
        zd[c] = np.int32(z_y - d)
    return ok


@njit(**JIT)
def _dw_task(fast, x, z_x, wf, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw, dh, dw,
             pad_t, pad_l, y, sl, r0, r1):
    """Output rows r0..r1-1 (r = n·OH + oh) with the thread slice `sl`, by row segments:
    border pixels one by one with their valid taps, the interior as one run with a fixed
    input step.  fast: the vector kernel for the 16-channel blocks and the spec's scalar
    formula for the remaining channels; else the scalar formula for all (any multiplier)."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    o_bc, o_sh, o_xo, o_wo, o_zd, _ = _layout(C, kh, kw)
    xo = sl[o_xo:o_xo + 8 * kh * kw].view(np.int64)
    wo = sl[o_wo:o_wo + 8 * kh * kw].view(np.int64)
    bc = sl[o_bc:o_bc + 8 * C].view(np.int64)
    shv = sl[o_sh:o_sh + 8 * C].view(np.int64)
    zd = sl[o_zd:o_zd + 4 * C].view(np.int32)
    nblk = 0                                     # reference: every channel in the tail loop
    if fast:
        _prepare(bias, mult, shift, z_y, kh, kw, bc, shv, zd)
        nblk = C // VL
    c0 = nblk * VL
    # interior columns: the whole window inside x horizontally
    ow_lo = min(OW, -(-pad_l // sw))
    span = W - 1 + pad_l - (kw - 1) * dw
    ow_hi = max(ow_lo, min(OW, span // sw + 1)) if span >= 0 else ow_lo
    for r in range(r0, r1):
        n = r // OH
        oh = r - n * OH
        ih0 = oh * sh - pad_t
        rows_ok = ih0 >= 0 and ih0 + (kh - 1) * dh < H
        lo_b = ow_lo if rows_ok else OW          # the interior run: [lo_b, hi_b)
        hi_b = ow_hi if rows_ok else OW
        ow = 0
        while ow < OW:
            run = ow == lo_b and hi_b > lo_b
            npx = hi_b - lo_b if run else 1
            iw0 = ow * sw - pad_l
            t = 0
            for i in range(kh):
                ih = ih0 + i * dh
                if ih < 0 or ih >= H:
                    continue
                rb = (n * H + ih) * W
                for j in range(kw):
                    iw = iw0 + j * dw
                    if iw < 0 or iw >= W:
                        continue
                    xo[t] = (rb + iw) * C
                    wo[t] = (i * kw + j) * C
                    t += 1
            yo = ((n * OH + oh) * OW + ow) * C
            if nblk > 0:
                _dw_pixels(xf, xo, wf, wo, t, npx, sw * C, z_x, mult, bc, shv, zd, act_min,
                           act_max, yf, yo, C, nblk)
            for p in range(npx):                 # channels past the vector blocks
                for c in range(c0, C):
                    s = np.int64(0)
                    for k in range(t):
                        s += (np.int64(xf[xo[k] + p * sw * C + c]) - z_x) * np.int64(wf[wo[k] + c])
                    yf[yo + p * C + c] = output_u8(s + bias[c], mult[c], shift[c], z_y, act_min,
                                                   act_max)
            ow += npx


@njit(**PJIT)
def depthwise_conv_u8(x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                      dh, dw, pad_t, pad_l, y, scratch, slice_bytes):
    """Depthwise conv; wpack from pack_depthwise_weights; scratch of >= 1 slice of slice_bytes
    (>= depthwise_scratch_bytes).  One thread below PAR_MIN_MACS."""
    N, OH, OW, C = y.shape
    R = N * OH
    if R * OW * C == 0:
        return
    # can the vector requantize represent every channel? (checked once, on slice 0)
    o_bc, o_sh, _, _, o_zd, _ = _layout(C, kh, kw)
    fast = _prepare(bias, mult, shift, z_y, kh, kw, scratch[o_bc:o_bc + 8 * C].view(np.int64),
                    scratch[o_sh:o_sh + 8 * C].view(np.int64),
                    scratch[o_zd:o_zd + 4 * C].view(np.int32))
    nt = min(scratch.size // slice_bytes, R)
    if nt <= 1 or R * OW * C * kh * kw < PAR_MIN_MACS:
        _dw_task(fast, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                 dh, dw, pad_t, pad_l, y, scratch[:slice_bytes], 0, R)
        return
    for t in prange(nt):
        _dw_task(fast, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                 dh, dw, pad_t, pad_l, y, scratch[t * slice_bytes:(t + 1) * slice_bytes],
                 t * R // nt, (t + 1) * R // nt)
