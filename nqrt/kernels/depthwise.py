"""Depthwise QConv (spec 4.1 with group == C == M) on NHWC uint8 activations.

Two kernels, same results: `depthwise_conv_u8` (portable: generic LLVM vector IR, any ISA;
weights from `pack_depthwise_weights`) and `depthwise_conv_u8_x86` (avx2 / vnni512 GEMM
paths: tap pairs through vpmaddwd; weights from `pack_depthwise_weights_x86`; see the
"AVX2 path" section below).  Pack and run with the same kernel.

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
whole call takes the scalar path.  When C is not a multiple of 16 (72, 88, 120 in
MobileNetV3), the last vector block starts at C − 16 and overlaps the one before it: its
overlapping channels are computed again by the same formula, so they are written with the
same values.  Only C < 16 leaves channels to a scalar loop with the spec's formula (on x86 at
stride 1, a row's interior pixels are one flat span instead: _dw_flat); on x86 such a layer is
normally packed for 16 channels at load time and run staged (section "C < 16 (x86)" at the end).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, fetch_add, xcall
from nqrt.kernels.fixedpoint import offset_requant, output_u8

VL = 16                 # channels per vector block
PAR_MIN_MACS = 1 << 16  # below this many MACs, one thread (a parallel launch costs a few us)

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


@njit(inline="always", **JIT)
def vector_blocks(C):
    """Vector blocks of C channels: block b covers channels [block_start(b, C), + VL); the last
    one starts at C − VL when VL does not divide C (it overlaps its neighbour); none if C < VL."""
    if C < VL:
        return 0
    return -(-C // VL)


@njit(inline="always", **JIT)
def block_start(b, C):
    """First channel of vector block b (b < vector_blocks(C))."""
    return min(b * VL, C - VL)


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


def emit_pixel_runs(builder, npx, px, pixels, done):
    """IR for the pixel loop the x86 kernels share: pixels(p, px, exit) for p = 0, px, ...
    while p + px <= npx, then pixels(p, 1, exit) for the rest; continues in block `done`.
    pixels(p, u, exit_block) emits the code of pixels p .. p+u-1 at the builder's position and
    ends with a branch to exit_block.  npx >= 1 (i64)."""
    pre = builder.block
    loop = builder.append_basic_block("px.loop")
    many = builder.append_basic_block("px.many")
    single = builder.append_basic_block("px.one")
    nxt = builder.append_basic_block("px.next")
    nxt1 = builder.append_basic_block("px.next1")
    builder.branch(loop)

    builder.position_at_end(loop)
    p = builder.phi(_I64)
    p.add_incoming(ir.Constant(_I64, 0), pre)
    builder.cbranch(builder.icmp_signed("<=", builder.add(p, ir.Constant(_I64, px)), npx),
                    many, single)
    builder.position_at_end(many)
    pixels(p, px, nxt)
    builder.position_at_end(single)
    pixels(p, 1, nxt1)

    for block, step in ((nxt, px), (nxt1, 1)):
        builder.position_at_end(block)
        p2 = builder.add(p, ir.Constant(_I64, step))
        p.add_incoming(p2, block)
        builder.cbranch(builder.icmp_signed("<", p2, npx), loop, done)
    builder.position_at_end(done)


def emit_record_requant(builder, recp, acc, j):
    """IR: ((acc·M0 + BC) >>> SH) + ZD per lane of the 8 x i32 vector acc, with the constants
    of requantize record j (i64 pointer recp; _layout_x86).  The 64-bit products are vpmuldq
    on the even lanes and on the odd lanes shifted down, recombined after the logical shift;
    the caller guarantees acc·M0 + BC in [0, 2^63) and the shifted value + ZD within int32
    (_prepare_x86)."""
    q64 = ir.VectorType(_I64, 4)
    vd = ir.VectorType(_I32, 8)
    c32v = ir.Constant(q64, [32] * 4)
    base = builder.mul(j, ir.Constant(_I64, REC_I64))

    def load(k, vty):
        ptr = builder.gep(recp, [builder.add(base, ir.Constant(_I64, k))])
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)

    def low_sext(v):            # the low 32 bits of each 64-bit lane, sign-extended
        return builder.ashr(builder.shl(v, c32v), c32v)

    a64 = builder.bitcast(acc, q64)
    ev = builder.mul(low_sext(a64), low_sext(load(0, q64)))               # vpmuldq
    od = builder.mul(builder.ashr(a64, c32v), low_sext(load(4, q64)))
    ev = builder.lshr(builder.add(ev, load(8, q64)), load(16, q64))
    od = builder.lshr(builder.add(od, load(12, q64)), load(20, q64))
    q = builder.bitcast(builder.or_(ev, builder.shl(od, c32v)), vd)
    return builder.add(q, load(24, vd))


@intrinsic
def _dw_pixels(typingctx, x, xo, w, wo, ntaps, npx, xstep, zx, m0, bc, sh, zd, lo, hi, y, yo,
               ystep, cl):
    """For p < npx, for the channel blocks c .. c + 15, c = 0, 16, ... below cl, then c = cl
    (cl = C − 16 >= 0: the last block may overlap the one before it), with t < ntaps:
        acc[c] = Σ_t (x[xo[t] + p·xstep + c] − zx) · w[wo[t] + c]       (int32, exact)
        y[yo + p·ystep + c] = clamp(((acc·m0[c] + bc[c]) >>> sh[c]) + zd[c], lo, hi)
    x u8[:], w i8[:], y u8[:] flat; xo, wo, bc, sh i64[:]; m0, zd i32[:].  npx >= 1;
    ntaps >= 0.  The caller guarantees acc·m0 + bc in [0, 2^63) and the shifted value + zd
    within int32 (see the module docstring)."""
    sig = types.void(x, xo, w, wo, ntaps, npx, xstep, zx, m0, bc, sh, zd, lo, hi, y, yo, ystep,
                     cl)

    def codegen(context, builder, signature, args):
        (x_, xo_, w_, wo_, nt_, np_, xs_, zx_, m0_, bc_, sh_, zd_, lo_, hi_, y_, yo_, ys_,
         cl_) = args
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
        c16 = builder.add(c, k16)
        c2 = builder.select(builder.icmp_signed("<", c16, cl_), c16, cl_)   # min(c + 16, cl)
        c.add_incoming(c2, blk_end)
        builder.cbranch(builder.icmp_signed("<", c, cl_), blk_loop, px_end)

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
    for c in range(C):
        ok, bcc, d = offset_requant(bias[c], amax, mult[c], shift[c])
        if not ok:
            return False
        bc[c] = bcc
        sh[c] = shift[c]
        zd[c] = np.int32(z_y - d)
    return True


@njit(**JIT)
def _dw_task(fast, x, z_x, wf, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw, dh, dw,
             pad_t, pad_l, y, sl, r0, r1):
    """Output rows r0..r1-1 (r = n·OH + oh) with the thread slice `sl`, by row segments:
    border pixels one by one with their valid taps, the interior as one run with a fixed
    input step.  fast: the vector kernel for every channel if C >= 16 (else the spec's scalar
    formula); else the scalar formula for all (any multiplier)."""
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
        nblk = vector_blocks(C)
    c0 = C if nblk > 0 else 0                    # channels [c0, C) take the scalar formula
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
                           act_max, yf, yo, C, C - VL)
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
        xcall(_dw_task, fast, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh,
              sw, dh, dw, pad_t, pad_l, y, scratch[:slice_bytes], 0, R)
        return
    for t in prange(nt):
        ti = np.int64(t)                       # (prange indices are unsigned)
        xcall(_dw_task, fast, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh,
              sw, dh, dw, pad_t, pad_l, y, scratch[ti * slice_bytes:(ti + 1) * slice_bytes],
              ti * R // nt, (ti + 1) * R // nt)


# ============================================================================= AVX2 path
# Tap pairs through vpmaddwd (x86 only: compiled into the avx2 / vnni512 conv kernels, never
# into the portable one).
#
#   acc[c] = Σ_t x_t[c]·w_t[c] + bias2[c],  bias2 = bias − z_x·Σ_t w_t[c]   (all kh·kw taps)
#
# Every output pixel uses all T = kh·kw taps: a tap that falls in the padding reads a row of
# z_x bytes in the thread's slice (`zrow`), which contributes z_x·w, cancelled by bias2 exactly
# as the spec's (z_x − z_x)·w = 0.  Taps go in pairs (t = 2q, 2q + 1; an odd T gets a last
# pair with a zero weight reading the previous tap's address): for 16 channels, the two taps'
# bytes are zero-extended to int16, interleaved (vpunpcklwd / vpunpckhwd: channels
# 0-3, 8-11 / 4-7, 12-15) and multiplied by the pair's interleaved int16 weights with
# vpmaddwd: x_a·w_a + x_b·w_b per channel in int32, exact (x ≤ 255, |w| ≤ 127).  The
# requantize works on the two permuted halves with per-lane constants stored in that order,
# and a final shuffle restores channel order for the 16-byte store.
#
# Packed weights ("avx2"/"vnni512" paths, pack_depthwise_weights_x86), for 16 <= C < 32:
#   int16 [npairs, nblk, 32] (per 16-channel block, nblk = x86_blocks(C), the last one starting
#   at C − 16: lo half interleaved, then hi half) as bytes (for C >= 32 the wide layout
#   below; x86_weight_bytes gives the size of either), followed by the portable int8
#   [kh, kw, C] layout (read by the scalar formula: C < 16, or a multiplier out of range),
#   and optionally (append_depthwise_table, at plan time) a 64-byte header + the requantize
#   records for one (z_x, z_y); without a matching table each task builds them in its slice.
#
# Wide blocks (C >= 32; `_dw_bytepairs_x86`): the kernel above spends 4 shuffles per tap pair
# and 16 channels (2 zero-extensions, 2 word interleaves) and is bound by the shuffle ports.
# For 32 channels, the two taps' bytes are interleaved as bytes instead (vpunpcklbw /
# vpunpckhbw: channels 0-7, 16-23 / 8-15, 24-31; 2 shuffles per pair and 32 channels) and
# multiplied with vpmaddubsw (u8 x s8 pair sums in int16) by the two halves of each weight,
#   w = 16·wh + wl,   wl = ((w + 8) mod 16) − 8 in [-8, 7],   wh = (w − wl) / 16 in [-8, 8]
# (exact for w in [-127, 127]).  A pair sum is at most 2·255·8 = 4080 in magnitude, so
# vpmaddubsw cannot saturate, and the int16 sums Sh = Σ x·wh, Sl = Σ x·wl of up to
# FLUSH_PAIRS pairs (16 taps: 16·255·8 = 32640 < 2^15) cannot wrap.  Every FLUSH_PAIRS pairs
# (once for a 3x3 window) they are widened exactly: vpmaddwd(interleave(Sl, Sh), (1, 16)) =
# Sl + 16·Sh = Σ x·w in int32, in 4 vectors of 8 lanes holding channels
#   group g (0..3), lane i (0..7):  4·g + (i mod 4) + 16·(i div 4)
# of the block.  The requantize runs per group with records in that lane order; then
# vpackssdw(g0, g1), vpackssdw(g2, g3) and vpackuswb give the 32 bytes in channel order
# (saturating: exactly a clamp to [0, 255], as the shifted values + ZD are within int32),
# and the clamp to [act_min, act_max] works on the bytes: one 32-byte store.  Packed weights
# (C >= 32): int8 [npairs, nblk, 4, 32]: wh and wl of the vpunpcklbw order, then of the
# vpunpckhbw order, each as (tap 2q, tap 2q + 1) byte pairs.  16 <= C < 32 keeps the 16-channel
# kernel above.
#
# Work split: chunks of output rows taken from a shared counter (down to single rows on small
# maps: a 7x7 map at batch 1 goes 4 + 3 rows); only with fewer rows than threads, by channel
# blocks instead (split_block).

_PERM_LO = (0, 1, 2, 3, 8, 9, 10, 11)     # channel (within a 16-block) of each lo lane
_PERM_HI = (4, 5, 6, 7, 12, 13, 14, 15)
_UNPACK_LO = [0, 16, 1, 17, 2, 18, 3, 19, 8, 24, 9, 25, 10, 26, 11, 27]
_UNPACK_HI = [4, 20, 5, 21, 6, 22, 7, 23, 12, 28, 13, 29, 14, 30, 15, 31]
_RESTORE = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]
PX = 4                  # output pixels per iteration of the x86 kernel (sharing tap loads)
WIDE = 32               # channels per block of the wide kernel (C >= WIDE)
PX_WIDE = 2             # output pixels per iteration of the wide kernel
FLUSH_PAIRS = 8         # tap pairs summed in int16 by the wide kernel before widening
# channel (within a wide block) of int16 lane k of the vpunpcklbw / vpunpckhbw products
_WIDE_LO = tuple((k & 7) + 16 * (k >> 3) for k in range(16))
_WIDE_HI = tuple(8 + c for c in _WIDE_LO)


@njit(inline="always", **JIT)
def x86_block_width(C):
    """Channels per vector block of the x86 kernels: WIDE for C >= WIDE, else VL."""
    return WIDE if C >= WIDE else VL


@njit(inline="always", **JIT)
def x86_blocks(C):
    """Vector blocks of the x86 kernels; block b covers [x86_block_start(b, C), + width), the
    last one starting at C − width (overlapping its neighbour) when width does not divide C."""
    if C < VL:
        return 0
    bw = x86_block_width(C)
    return -(-C // bw)


@njit(inline="always", **JIT)
def x86_block_start(b, C):
    bw = x86_block_width(C)
    return min(b * bw, C - bw)


@njit(inline="always", **JIT)
def x86_records(C):
    """Requantize records (one per 8 lanes) of the x86 kernels' vector blocks."""
    return x86_blocks(C) * x86_block_width(C) // 8


@njit(inline="always", **JIT)
def record_channel(j, lane, C):
    """Channel of lane `lane` (0..7) of requantize record j (module comment above)."""
    if C >= WIDE:
        g = j & 3
        return x86_block_start(j >> 2, C) + 4 * g + (lane & 3) + 16 * (lane >> 2)
    half = j & 1        # 16-channel blocks: lo lanes hold channels 0-3, 8-11, hi 4-7, 12-15
    return x86_block_start(j >> 1, C) + (lane & 3) + (8 if lane >= 4 else 0) + 4 * half


def split_weight(w):
    """w = 16·wh + wl with wl in [-8, 7], wh in [-8, 8] (w in [-127, 127]); int8 arrays."""
    w = np.asarray(w, np.int16)
    wl = ((w + 8) & 15) - 8
    wh = (w - wl) >> 4
    return wh.astype(np.int8), wl.astype(np.int8)


def pack_depthwise_weights_x86(w):
    """int8 w[C, 1, kh, kw] (values in [-127, 127]) -> int8[:] (module comment above)."""
    C, _, kh, kw = w.shape
    T = kh * kw
    npairs = (T + 1) // 2
    nblk = x86_blocks(C)
    wt = np.zeros((2 * npairs, C), np.int16)
    wt[:T] = w[:, 0].reshape(C, T).T
    bw = x86_block_width(C)
    chans = [x86_block_start(b, C) + k for b in range(nblk) for k in range(bw)]
    blk = wt[:, chans].reshape(npairs, 2, nblk, bw)              # [q, a/b, block, channel]
    if C >= WIDE:
        wh, wl = split_weight(blk)
        out = np.empty((npairs, nblk, 4, 16, 2), np.int8)        # [q, block, part, lane, a/b]
        for half, order in enumerate((_WIDE_LO, _WIDE_HI)):
            for k, part in enumerate((wh, wl)):
                out[:, :, 2 * half + k, :, 0] = part[:, 0][:, :, list(order)]
                out[:, :, 2 * half + k, :, 1] = part[:, 1][:, :, list(order)]
        return np.concatenate([out.reshape(-1), pack_depthwise_weights(w)])
    out = np.empty((npairs, nblk, 2, 8, 2), np.int16)            # [q, block, lo/hi, lane, a/b]
    for half, perm in enumerate((_PERM_LO, _PERM_HI)):
        out[:, :, half, :, 0] = blk[:, 0][:, :, list(perm)]
        out[:, :, half, :, 1] = blk[:, 1][:, :, list(perm)]
    return np.concatenate([out.reshape(-1).view(np.int8), pack_depthwise_weights(w)])


@njit(**JIT)
def x86_weight_bytes(C, kh, kw):
    """Bytes of the vector part of pack_depthwise_weights_x86 (64 per tap pair and 16
    channels, in either layout)."""
    return ((kh * kw + 1) // 2) * x86_blocks(C) * x86_block_width(C) * 4


REC_I64 = 28    # one requantize record = 28 int64 = 224 bytes (see _layout_x86)


@njit(**JIT)
def _records_bytes(C):
    """Bytes of the requantize records of the vector blocks of C channels."""
    return 8 * REC_I64 * x86_records(C)


@njit(**JIT)
def _layout_x86(C, kh, kw, W):
    """Byte offsets inside one thread's slice: the requantize records, tap addresses
    (i64[2·npairs]), zrow (u8[W·C]); and the total.  One record per 8-lane half-block
    j = 2·b + (0: lo, 1: hi), int64 units: [0:4] M0 of the even lanes, [4:8] M0 odd, [8:12] BC
    even, [12:16] BC odd, [16:20] shift even, [20:24] shift odd, then ZD int32[8] in lane order
    (lane = 2·i + odd)."""
    npairs = (kh * kw + 1) // 2
    o_rec = 0
    o_ad = o_rec + _records_bytes(C)
    o_zr = o_ad + 16 * npairs
    return o_rec, o_ad, o_zr, o_zr + W * C


@intrinsic
def _load_u8(typingctx, addr):
    """The byte at absolute address `addr` (an address inside x or the slice's zrow)."""
    def codegen(context, builder, signature, args):
        p = builder.inttoptr(args[0], _I8.as_pointer())
        return builder.zext(builder.load(p), _I64)
    return types.int64(addr), codegen


@intrinsic
def _dw_pairs_x86(typingctx, ad, npairs, npx, xstep, wq, b0, b1, nblk, rec, lo, hi, y, yo,
                  ystep, cl):
    """For p < npx, b0 <= b < b1 (channels c = min(16·b, cl) .. + 15 in lane order, see above;
    nblk blocks in all, b0 < b1 <= nblk; cl = C − 16, where the last block starts):
        acc = Σ_q vpmaddwd(interleave(x[ad[2q] + p·xstep + c], x[ad[2q+1] + p·xstep + c]),
                           wq[(q·nblk + b)·32 ...])                               (int32, exact)
        y[yo + p·ystep + c] = clamp(((acc·M0 + BC) >>> shift) + ZD, lo, hi)
    with the lane constants of the records `rec` (int64[:], _layout_x86): the 64-bit products
    are vpmuldq on the even lanes and on the odd lanes shifted down, recombined after the
    shift.  ad: i64[2·npairs] absolute byte addresses; wq i16[:]; y u8[:] flat.  npairs, npx,
    nblk >= 1.  The caller guarantees acc·M0 + BC in [0, 2^63) and the shifted value + ZD
    within int32 (_prepare_x86), so the result fits the low 32 bits of each 64-bit lane."""
    sig = types.void(ad, npairs, npx, xstep, wq, b0, b1, nblk, rec, lo, hi, y, yo, ystep, cl)

    def codegen(context, builder, signature, args):
        (ad_, nq_, np_, xs_, wq_, b0_, b1_, nb_, rec_, lo_, hi_, y_, yo_, ys_, cl_) = args
        sa = signature.args
        v8 = ir.VectorType(_I8, VL)
        v16 = ir.VectorType(_I16, VL)
        h32 = ir.VectorType(_I32, 8)
        mod = builder.module
        madd = cgutils.get_or_insert_function(mod, ir.FunctionType(h32, [v16, v16]),
                                              "llvm.x86.avx2.pmadd.wd")
        adp = _ptr(context, builder, sa[0], ad_, _I64)
        wqp = _ptr(context, builder, sa[4], wq_, _I16)
        recp = _ptr(context, builder, sa[8], rec_, _I64)
        yp = _ptr(context, builder, sa[11], y_, _I8)
        lov = _splat(builder, builder.trunc(lo_, _I32), h32)
        hiv = _splat(builder, builder.trunc(hi_, _I32), h32)
        zero32 = ir.Constant(h32, None)
        one = ir.Constant(_I64, 1)
        two = ir.Constant(_I64, 2)
        k16 = ir.Constant(_I64, VL)
        k32 = ir.Constant(_I64, 32)
        m_lo = ir.Constant(ir.VectorType(_I32, 16), _UNPACK_LO)
        m_hi = ir.Constant(ir.VectorType(_I32, 16), _UNPACK_HI)
        m_restore = ir.Constant(ir.VectorType(_I32, 16), _RESTORE)
        wstep = builder.mul(nb_, k32)                       # int16 elements per pair

        def load_x(addr, xoff):
            a = builder.add(addr, xoff)
            return builder.zext(builder.load(builder.inttoptr(a, v8.as_pointer()), align=1), v16)

        def requant(acc, j):
            q = emit_record_requant(builder, recp, acc, j)
            q = builder.select(builder.icmp_signed("<", q, lov), lov, q)
            return builder.select(builder.icmp_signed(">", q, hiv), hiv, q)

        def pixels(p, u, exit_block):
            """Blocks computing pixels p .. p+u-1 (all 16-channel blocks); the weight and
            address loads of a tap pair are shared by the u pixels.  Ends in exit_block."""
            entry = builder.block
            blk_loop = builder.append_basic_block(f"dwx{u}.blk")
            pair_loop = builder.append_basic_block(f"dwx{u}.pair")
            blk_end = builder.append_basic_block(f"dwx{u}.blkend")
            xbases = [builder.mul(builder.add(p, ir.Constant(_I64, k)), xs_) for k in range(u)]
            ybases = [builder.add(yo_, builder.mul(builder.add(p, ir.Constant(_I64, k)), ys_))
                      for k in range(u)]
            builder.branch(blk_loop)

            builder.position_at_end(blk_loop)
            b = builder.phi(_I64)
            b.add_incoming(b0_, entry)
            c16 = builder.mul(b, k16)
            c = builder.select(builder.icmp_signed("<", c16, cl_), c16, cl_)   # min(16·b, cl)
            w0 = builder.mul(b, k32)
            builder.branch(pair_loop)

            builder.position_at_end(pair_loop)
            q = builder.phi(_I64)
            q.add_incoming(ir.Constant(_I64, 0), blk_loop)
            wo = builder.phi(_I64)
            wo.add_incoming(w0, blk_loop)
            accs = []
            for k in range(2 * u):
                ph = builder.phi(h32)
                ph.add_incoming(zero32, blk_loop)
                accs.append(ph)
            i2 = builder.mul(q, two)
            aa = builder.add(builder.load(builder.gep(adp, [i2])), c)
            ab = builder.add(builder.load(builder.gep(adp, [builder.add(i2, one)])), c)
            wlo = builder.load(builder.bitcast(builder.gep(wqp, [wo]), v16.as_pointer()), align=1)
            whi = builder.load(builder.bitcast(builder.gep(wqp, [builder.add(wo, k16)]),
                                               v16.as_pointer()), align=1)
            new = []
            for k in range(u):
                xa = load_x(aa, xbases[k])
                xb = load_x(ab, xbases[k])
                ilo = builder.shuffle_vector(xa, xb, m_lo)
                ihi = builder.shuffle_vector(xa, xb, m_hi)
                new.append(builder.add(accs[2 * k], builder.call(madd, [ilo, wlo])))
                new.append(builder.add(accs[2 * k + 1], builder.call(madd, [ihi, whi])))
            q2 = builder.add(q, one)
            q.add_incoming(q2, pair_loop)
            wo.add_incoming(builder.add(wo, wstep), pair_loop)
            for ph, v in zip(accs, new):
                ph.add_incoming(v, pair_loop)
            builder.cbranch(builder.icmp_signed("<", q2, nq_), pair_loop, blk_end)

            builder.position_at_end(blk_end)
            j0 = builder.mul(b, two)
            for k in range(u):
                rlo = requant(new[2 * k], j0)
                rhi = requant(new[2 * k + 1], builder.add(j0, one))
                cat = builder.shuffle_vector(rlo, rhi, m_restore)
                yptr = builder.gep(yp, [builder.add(ybases[k], c)])
                builder.store(builder.trunc(cat, v8), builder.bitcast(yptr, v8.as_pointer()),
                              align=1)
            b2 = builder.add(b, one)
            b.add_incoming(b2, blk_end)
            builder.cbranch(builder.icmp_signed("<", b2, b1_), blk_loop, exit_block)

        emit_pixel_runs(builder, np_, PX, pixels, builder.append_basic_block("dwx.done"))
        return context.get_dummy_value()

    return sig, codegen


# shuffle masks of the wide kernel: vpunpcklbw / vpunpckhbw (x bytes of taps a, b) and
# vpunpcklwd / vpunpckhwd (int16 sums Sl, Sh), within each 128-bit lane
_BYTES_LO = [i + 16 * L + 32 * k for L in range(2) for i in range(8) for k in range(2)]
_BYTES_HI = [i + 8 + 16 * L + 32 * k for L in range(2) for i in range(8) for k in range(2)]
_WORDS_LO = [i + 8 * L + 16 * k for L in range(2) for i in range(4) for k in range(2)]
_WORDS_HI = [i + 4 + 8 * L + 16 * k for L in range(2) for i in range(4) for k in range(2)]


@intrinsic
def _dw_bytepairs_x86(typingctx, ad, npairs, npx, xstep, wq, b0, b1, nblk, rec, lo, hi, y, yo,
                      ystep, cl):
    """The wide kernel (C >= 32; module comment above): for p < npx, b0 <= b < b1 (channels
    c = min(32·b, cl) .. + 31; cl = C − 32, where the last block starts):
        dot = Σ_q Σ_{t = 2q, 2q+1} x[ad[t] + p·xstep + c] · w_t                (int32, exact)
        y[yo + p·ystep + c] = clamp(((dot·M0 + BC) >>> shift) + ZD, lo, hi)
    with records j = 4·b + g (rec, _layout_x86) in the lane order of the module comment.
    ad: i64[2·npairs] absolute byte addresses; wq i8[:] (the wide packed weights); y u8[:]
    flat.  npairs, npx >= 1, b0 < b1 <= nblk.  The caller guarantees dot·M0 + BC in [0, 2^63)
    and the shifted value + ZD within int32 (_prepare_x86)."""
    sig = types.void(ad, npairs, npx, xstep, wq, b0, b1, nblk, rec, lo, hi, y, yo, ystep, cl)

    def codegen(context, builder, signature, args):
        (ad_, nq_, np_, xs_, wq_, b0_, b1_, nb_, rec_, lo_, hi_, y_, yo_, ys_, cl_) = args
        sa = signature.args
        vb = ir.VectorType(_I8, 32)
        vw = ir.VectorType(_I16, 16)
        vd = ir.VectorType(_I32, 8)
        mod = builder.module
        maddubs = cgutils.get_or_insert_function(mod, ir.FunctionType(vw, [vb, vb]),
                                                 "llvm.x86.avx2.pmadd.ub.sw")
        madd = cgutils.get_or_insert_function(mod, ir.FunctionType(vd, [vw, vw]),
                                              "llvm.x86.avx2.pmadd.wd")
        packssdw = cgutils.get_or_insert_function(mod, ir.FunctionType(vw, [vd, vd]),
                                                  "llvm.x86.avx2.packssdw")
        packuswb = cgutils.get_or_insert_function(mod, ir.FunctionType(vb, [vw, vw]),
                                                  "llvm.x86.avx2.packuswb")
        adp = _ptr(context, builder, sa[0], ad_, _I64)
        wqp = _ptr(context, builder, sa[4], wq_, _I8)
        recp = _ptr(context, builder, sa[8], rec_, _I64)
        yp = _ptr(context, builder, sa[11], y_, _I8)
        lov = _splat(builder, builder.trunc(lo_, _I8), vb)
        hiv = _splat(builder, builder.trunc(hi_, _I8), vb)
        zw = ir.Constant(vw, None)
        zd = ir.Constant(vd, None)
        one = ir.Constant(_I64, 1)
        two = ir.Constant(_I64, 2)
        k128 = ir.Constant(_I64, 128)
        kflush = ir.Constant(_I64, FLUSH_PAIRS)
        sixteen = ir.Constant(vw, [1, 16] * 8)        # (Sl, Sh) pairs -> Sl + 16·Sh
        m_blo = ir.Constant(ir.VectorType(_I32, 32), _BYTES_LO)
        m_bhi = ir.Constant(ir.VectorType(_I32, 32), _BYTES_HI)
        m_wlo = ir.Constant(ir.VectorType(_I32, 16), _WORDS_LO)
        m_whi = ir.Constant(ir.VectorType(_I32, 16), _WORDS_HI)
        wstep = builder.mul(nb_, k128)                      # bytes of weights per pair

        def load_bytes(addr):
            return builder.load(builder.inttoptr(addr, vb.as_pointer()), align=1)

        def pixels(p, u, exit_block):
            """Blocks computing pixels p .. p+u-1 (all 32-channel blocks b0..b1-1); the weight
            and address loads of a tap pair are shared by the u pixels.  Ends in exit_block."""
            entry = builder.block
            blk_loop = builder.append_basic_block(f"dwb{u}.blk")
            chunk_loop = builder.append_basic_block(f"dwb{u}.chunk")
            pair_loop = builder.append_basic_block(f"dwb{u}.pair")
            chunk_end = builder.append_basic_block(f"dwb{u}.chunkend")
            blk_end = builder.append_basic_block(f"dwb{u}.blkend")
            xbases = [builder.mul(builder.add(p, ir.Constant(_I64, k)), xs_) for k in range(u)]
            ybases = [builder.add(yo_, builder.mul(builder.add(p, ir.Constant(_I64, k)), ys_))
                      for k in range(u)]
            builder.branch(blk_loop)

            builder.position_at_end(blk_loop)
            b = builder.phi(_I64)
            b.add_incoming(b0_, entry)
            c32 = builder.mul(b, ir.Constant(_I64, WIDE))
            c = builder.select(builder.icmp_signed("<", c32, cl_), c32, cl_)   # min(32·b, cl)
            w0 = builder.mul(b, k128)
            builder.branch(chunk_loop)

            # chunks of FLUSH_PAIRS pairs: int16 sums, then widened into the int32 sums
            builder.position_at_end(chunk_loop)
            q0 = builder.phi(_I64)
            q0.add_incoming(ir.Constant(_I64, 0), blk_loop)
            dots = []
            for k in range(4 * u):
                ph = builder.phi(vd)
                ph.add_incoming(zd, blk_loop)
                dots.append(ph)
            qe = builder.add(q0, kflush)
            qe = builder.select(builder.icmp_signed("<", qe, nq_), qe, nq_)
            builder.branch(pair_loop)

            builder.position_at_end(pair_loop)
            q = builder.phi(_I64)
            q.add_incoming(q0, chunk_loop)
            sums = []
            for k in range(4 * u):          # per pixel: Sh lo, Sl lo, Sh hi, Sl hi
                ph = builder.phi(vw)
                ph.add_incoming(zw, chunk_loop)
                sums.append(ph)
            i2 = builder.mul(q, two)
            aa = builder.add(builder.load(builder.gep(adp, [i2])), c)
            ab = builder.add(builder.load(builder.gep(adp, [builder.add(i2, one)])), c)
            wo = builder.add(w0, builder.mul(q, wstep))
            wv = [builder.load(builder.bitcast(builder.gep(wqp, [builder.add(
                wo, ir.Constant(_I64, 32 * k))]), vb.as_pointer()), align=1) for k in range(4)]
            new = []
            for k in range(u):
                xa = load_bytes(builder.add(aa, xbases[k]))
                xb = load_bytes(builder.add(ab, xbases[k]))
                ilo = builder.shuffle_vector(xa, xb, m_blo)          # vpunpcklbw
                ihi = builder.shuffle_vector(xa, xb, m_bhi)          # vpunpckhbw
                for part, (iv, wpart) in enumerate(((ilo, wv[0]), (ilo, wv[1]), (ihi, wv[2]),
                                                    (ihi, wv[3]))):
                    new.append(builder.add(sums[4 * k + part],
                                           builder.call(maddubs, [iv, wpart])))
            q2 = builder.add(q, one)
            q.add_incoming(q2, pair_loop)
            for ph, v in zip(sums, new):
                ph.add_incoming(v, pair_loop)
            builder.cbranch(builder.icmp_signed("<", q2, qe), pair_loop, chunk_end)

            builder.position_at_end(chunk_end)
            widened = []
            for k in range(u):
                sh_lo, sl_lo, sh_hi, sl_hi = new[4 * k:4 * k + 4]
                for g, (sl, sh_, m) in enumerate(((sl_lo, sh_lo, m_wlo), (sl_lo, sh_lo, m_whi),
                                                  (sl_hi, sh_hi, m_wlo), (sl_hi, sh_hi, m_whi))):
                    pairs = builder.shuffle_vector(sl, sh_, m)       # vpunpck[lh]wd
                    widened.append(builder.add(dots[4 * k + g],
                                               builder.call(madd, [pairs, sixteen])))
            for ph, v in zip(dots, widened):
                ph.add_incoming(v, chunk_end)
            q0.add_incoming(qe, chunk_end)
            builder.cbranch(builder.icmp_signed("<", qe, nq_), chunk_loop, blk_end)

            builder.position_at_end(blk_end)
            j0 = builder.mul(b, ir.Constant(_I64, 4))
            for k in range(u):
                r = [emit_record_requant(builder, recp, widened[4 * k + g],
                                         builder.add(j0, ir.Constant(_I64, g))) for g in range(4)]
                v = builder.call(packuswb, [builder.call(packssdw, [r[0], r[1]]),
                                            builder.call(packssdw, [r[2], r[3]])])
                v = builder.select(builder.icmp_unsigned("<", v, lov), lov, v)
                v = builder.select(builder.icmp_unsigned(">", v, hiv), hiv, v)
                yptr = builder.gep(yp, [builder.add(ybases[k], c)])
                builder.store(v, builder.bitcast(yptr, vb.as_pointer()), align=1)
            b2 = builder.add(b, one)
            b.add_incoming(b2, blk_end)
            builder.cbranch(builder.icmp_signed("<", b2, b1_), blk_loop, exit_block)

        emit_pixel_runs(builder, np_, PX_WIDE, pixels, builder.append_basic_block("dwb.done"))
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", **JIT)
def _prepare_x86(wf, bias, mult, shift, z_x, z_y, T, C, rec, rec32):
    """The requantize records (_layout_x86; rec and rec32 are int64 / int32 views of them) for
    the vector blocks, with bias2 = bias − z_x·Σ_t w_t (module docstring); False if some
    channel's values could leave int64 / int32 (then the caller uses the scalar formula for
    every channel)."""
    amax = np.int64(T) * 255 * 127
    for j in range(x86_records(C)):
        for lane in range(8):
            ch = record_channel(j, lane, C)
            ws = np.int64(0)
            for t in range(T):
                ws += np.int64(wf[t * C + ch])
            b2 = np.int64(bias[ch]) - np.int64(z_x) * ws      # |b2| < 2^31 + 2^15·T
            ok, bc, d = offset_requant(b2, amax, mult[ch], shift[ch])
            if not ok:
                return False
            r = j * REC_I64 + 4 * (lane & 1) + (lane >> 1)
            rec[r] = mult[ch]
            rec[r + 8] = bc
            rec[r + 16] = shift[ch]
            rec32[2 * (j * REC_I64 + 24) + lane] = np.int32(z_y - d)
    return True


DW_TABLE_HEADER = 64    # bytes before the records of a plan-time table (append_depthwise_table)
TABLE_USABLE = 1        # header byte 0: the records hold every vector block
TABLE_SCALAR = 2        # header byte 0: some channel cannot be represented: scalar formula


def append_depthwise_table(wpack, C, kh, kw, bias, mult, shift, z_x, z_y):
    """Plan time: wpack (pack_depthwise_weights_x86) followed by the requantize records of
    every vector block for these zero points (_prepare_x86), so that the kernel does not
    rebuild them per call and thread.  Layout: a DW_TABLE_HEADER-byte header (byte 0
    TABLE_USABLE or TABLE_SCALAR, bytes 1, 2 the z_x, z_y it was built for) then the records
    (_layout_x86).  A kernel given other zero points ignores the table and builds its own."""
    wpack = np.asarray(wpack, np.int8)
    T = kh * kw
    tab = np.zeros(DW_TABLE_HEADER + _records_bytes(C), np.uint8)
    wf = wpack[x86_weight_bytes(C, kh, kw):x86_weight_bytes(C, kh, kw) + T * C]
    ok = C < VL or _prepare_x86(wf, np.asarray(bias, np.int32), np.asarray(mult, np.int32),
                                np.asarray(shift, np.int32), int(z_x), int(z_y), T, C,
                                tab[DW_TABLE_HEADER:].view(np.int64),
                                tab[DW_TABLE_HEADER:].view(np.int32))
    tab[0] = TABLE_USABLE if ok else TABLE_SCALAR
    tab[1], tab[2] = z_x, z_y
    return np.concatenate([wpack, tab.view(np.int8)])


@njit(**JIT)
def _table_state(wpack, base, C, z_x, z_y):
    """0: wpack has no table for these zero points; else its header byte 0."""
    if wpack.size != base + DW_TABLE_HEADER + _records_bytes(C):
        return 0
    h = wpack[base:base + DW_TABLE_HEADER].view(np.uint8)
    if np.int64(h[1]) != z_x or np.int64(h[2]) != z_y:
        return 0
    return np.int64(h[0])


@njit(inline="always", **JIT)
def interior_columns(OW, W, kw, sw, dw, pad_l):
    """(ow_lo, ow_hi): the output columns whose kw taps all lie inside x horizontally; the
    x86 drivers run them as one call with a fixed input step (sw·C), border columns one call
    each."""
    ow_lo = min(OW, -(-pad_l // sw))
    span = W - 1 + pad_l - (kw - 1) * dw
    ow_hi = max(ow_lo, min(OW, span // sw + 1)) if span >= 0 else ow_lo
    return ow_lo, ow_hi


@njit(inline="always", **JIT)
def tap_addresses(ad, xa, za, n, H, W, C, ih0, iw0, kh, kw, dh, dw):
    """ad[i·kw + j] = the absolute address of x[n, ih0 + i·dh, iw0 + j·dw, 0] (x at address
    xa, NHWC), or za (a row of z_x bytes) where that tap is in the padding."""
    for i in range(kh):
        ih = ih0 + i * dh
        for j in range(kw):
            iw = iw0 + j * dw
            a = za
            if ih >= 0 and ih < H and iw >= 0 and iw < W:
                a = xa + ((n * H + ih) * W + iw) * C
            ad[i * kw + j] = a


@njit(inline="always", **JIT)
def next_rows(ctr, r0, r1, rchunk, nchunk):
    """A task's next range of output rows: all of [r0, r1) when rchunk == 0 (nchunk = 1), else
    chunk c = fetch_add(ctr) of rchunk rows (threads take chunks until none is left, so a
    slower thread takes fewer); an empty range once c >= nchunk."""
    if rchunk <= 0:
        return r0, r1
    c = fetch_add(ctr, 0)
    if c >= nchunk:
        return r0, r0
    ra = r0 + c * rchunk
    return ra, min(r1, ra + rchunk)


@njit(**JIT)
def _dw_task_x86(x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw, dh,
                 dw, pad_t, pad_l, y, sl, r0, r1, b0, b1, tail, ctr, rchunk):
    """Output rows r0..r1-1 (r = n·OH + oh) (rchunk > 0: in chunks of rchunk rows taken from
    the shared counter ctr[0], fetch_add, so that a slower thread takes fewer; else all of
    them), vector blocks b0..b1-1 and, if `tail`, the channels past them (none once C >= 16),
    with the thread slice `sl`: per row, the border pixels one
    call each and the horizontal interior as one run with a fixed input step; the vector
    kernel for the blocks (unless a multiplier is out of its range) and the spec's scalar
    formula for the remaining channels.  The records come from wpack's plan-time table when
    it matches z_x, z_y, else they are built in `sl`."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    T = kh * kw
    npairs = (T + 1) // 2
    nb16 = x86_weight_bytes(C, kh, kw)             # bytes of the vector weight part
    wide = C >= WIDE
    wq = wpack[:nb16]
    wf = wpack[nb16:nb16 + T * C]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    o_rec, o_ad, o_zr, _ = _layout_x86(C, kh, kw, W)
    nblk = x86_blocks(C)
    bw = x86_block_width(C)
    ad = sl[o_ad:o_ad + 16 * npairs].view(np.int64)
    zrow = sl[o_zr:o_zr + W * C]
    zrow[:] = np.uint8(z_x)
    state = _table_state(wpack, nb16 + T * C, C, z_x, z_y)
    usable = True
    if state == TABLE_USABLE:
        t0 = nb16 + T * C + DW_TABLE_HEADER
        rec = wpack[t0:t0 + _records_bytes(C)].view(np.int64)
    else:
        rec = sl[o_rec:o_ad].view(np.int64)
        usable = state != TABLE_SCALAR and (nblk == 0 or _prepare_x86(
            wf, bias, mult, shift, z_x, z_y, T, C, rec, sl[o_rec:o_ad].view(np.int32)))
    # the scalar formula's channels [cs, ce): all of them if C < 16, or, when some channel
    # cannot use the vector requantize, this task's blocks (the blocks cover every channel
    # when C >= 16: the last one ends at C)
    cs = min(b0 * bw, C) if not usable else (C if nblk > 0 else 0)
    ce = C if tail else (min(b1 * bw, C) if not usable else cs)
    if not usable:
        b1 = b0
    xa = xf.ctypes.data
    za = zrow.ctypes.data
    ow_lo, ow_hi = interior_columns(OW, W, kw, sw, dw, pad_l)
    # C < 16 at stride 1: the interior run's npx·C outputs are one contiguous span of x per
    # tap (zrow for taps in the vertical padding), so the scalar channels become flat loops
    # over that span with the weights and requantize constants repeated along it
    flat = nblk == 0 and sw == 1 and ce > cs and cs == 0 and ce == C and ow_hi > ow_lo
    L = (ow_hi - ow_lo) * C if flat else 1
    wrep = np.empty((T, L), np.int16)
    m0rep = np.empty(L, np.int32)
    bcrep = np.empty(L, np.int64)
    shrep = np.empty(L, np.uint64)
    zdrep = np.empty(L, np.int64)
    acc = np.empty(L, np.int32)
    if flat:
        flat = _flat_constants(wf, bias, mult, shift, z_x, z_y, T, C, L, wrep, m0rep, bcrep, shrep,
                               zdrep)
    nchunk = (r1 - r0 + rchunk - 1) // rchunk if rchunk > 0 else 1
    for _ in range(nchunk):
        ra, rb = next_rows(ctr, r0, r1, rchunk, nchunk)
        if rb <= ra:
            break
        for r in range(ra, rb):
            n = r // OH
            oh = r - n * OH
            ih0 = oh * sh - pad_t
            ow = 0
            while ow < OW:
                run = ow == ow_lo and ow_hi > ow_lo
                npx = ow_hi - ow_lo if run else 1
                tap_addresses(ad, xa, za, n, H, W, C, ih0, ow * sw - pad_l, kh, kw, dh, dw)
                if T & 1:
                    ad[T] = ad[T - 1]                  # its weight is 0
                yo = ((n * OH + oh) * OW + ow) * C
                if flat and run:
                    _dw_flat(ad, xa, xf, zrow, T, npx * C, wrep, m0rep, bcrep, shrep, zdrep,
                             act_min, act_max, yf, yo, acc)
                    ow += npx
                    continue
                if b1 > b0 and wide:
                    _dw_bytepairs_x86(ad, npairs, npx, sw * C, wq, b0, b1, nblk, rec, act_min,
                                      act_max, yf, yo, C, C - WIDE)
                elif b1 > b0:
                    _dw_pairs_x86(ad, npairs, npx, sw * C, wq.view(np.int16), b0, b1, nblk, rec,
                                  act_min, act_max, yf, yo, C, C - VL)
                for p in range(npx):
                    for c in range(cs, ce):
                        s = np.int64(0)
                        for k in range(T):
                            s += (_load_u8(ad[k] + p * sw * C + c) - z_x) * np.int64(wf[k * C + c])
                        yf[yo + p * C + c] = output_u8(s + bias[c], mult[c], shift[c], z_y, act_min,
                                                       act_max)
                ow += npx


@njit(**JIT)
def _flat_constants(wf, bias, mult, shift, z_x, z_y, T, C, L, wrep, m0rep, bcrep, shrep, zdrep):
    """The flat path's constants along a span of L = npx·C outputs (element e is channel e % C):
    the weights of each tap, and requantize records such that for the plain sum
    d = Σ_t x_t·w_t (all T taps: padding reads z_x bytes) ((d·M0 + BC) >> SH) + ZD is the
    spec's output (BC from offset_requant with bias − z_x·Σ_t w_t).  False when some channel
    cannot be represented that way (then the scalar formula runs)."""
    amax = np.int64(T) * 255 * 127
    if amax >= np.int64(1) << 31:
        return False                      # the int32 sums could overflow
    for c in range(C):
        ws = np.int64(0)
        for t in range(T):
            ws += np.int64(wf[t * C + c])
        ok, bc, off = offset_requant(np.int64(bias[c]) - np.int64(z_x) * ws, amax, np.int64(mult[c]),
                                     np.int64(shift[c]))
        if not ok:
            return False
        for e in range(c, L, C):
            m0rep[e] = mult[c]
            bcrep[e] = bc
            shrep[e] = shift[c]
            zdrep[e] = np.int64(z_y) - off
    for t in range(T):
        for e in range(L):
            wrep[t, e] = wf[t * C + e % C]
    return True


@njit(inline="always", **JIT)
def _dw_flat(ad, xa, xf, zrow, T, n, wrep, m0rep, bcrep, shrep, zdrep, lo, hi, yf, yo, acc):
    """n contiguous outputs from the tap addresses ad (inside x at xa, or zrow): int32 sums
    (|d| <= T·255·127 < 2^31 for T < 66 000: any depthwise kernel), then the records.
    The numerator d·M0 + BC is >= 0 (offset_requant), so it is shifted as uint64 (vpsrlvq; AVX2
    has no 64-bit arithmetic shift), and M0 is int32, so d·M0 is one vpmuldq: the loop
    vectorizes."""
    acc[:n] = 0
    za = zrow.ctypes.data
    for t in range(T):
        a = ad[t]
        xs = zrow[:n] if a == za else xf[a - xa:a - xa + n]
        wt = wrep[t]
        for e in range(n):
            acc[e] += np.int32(xs[e]) * np.int32(wt[e])
    for e in range(n):
        num = np.uint64(np.int64(acc[e]) * np.int64(m0rep[e]) + bcrep[e])
        v = np.int64(num >> shrep[e]) + zdrep[e]
        yf[yo + e] = np.uint8(min(max(v, np.int64(lo)), np.int64(hi)))


SPLIT_ROWS_MIN = 4      # rows per chunk of the row split when the map has that many per thread
LINE_BYTES = 64         # a cache line: the channel split's boundaries are multiples of it


@njit(inline="always", **JIT)
def split_block(t, nt, B, C):
    """First vector block of task t of nt in the channel split (split_block(nt, ...) = B): the
    even share t·B/nt rounded down to a block that starts at a multiple of LINE_BYTES channels
    (bytes), so that two threads never write the same cache line of a pixel.  (Boundaries
    inside a line made the two threads of a 7x7x960 layer slower than one: 32 vs 27 µs.)"""
    if t >= nt:
        return B
    bw = x86_block_width(C)
    step = max(1, LINE_BYTES // bw)
    return t * B // nt // step * step


@njit(**PJIT)
def depthwise_conv_u8_x86(x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh,
                          sw, dh, dw, pad_t, pad_l, y, scratch, slice_bytes):
    """Depthwise conv on the avx2 / vnni512 paths; wpack from pack_depthwise_weights_x86
    (optionally with append_depthwise_table); scratch of >= 1 slice of slice_bytes
    (>= depthwise_scratch_bytes).  One thread below PAR_MIN_MACS.  The threads take chunks of
    output rows (all channels) from a shared counter: ceil(R / (SPLIT_ROWS_MIN·nt)) rows each,
    so single rows on small maps (measured on 7x7 maps with 576 / 960 channels: 12.2 / 18.8 µs
    on 2 threads, against 14.3–20.6 / 22–32 µs when the threads split the channels).  With
    fewer rows than threads (R < nt, e.g. a 1x1 map), task t computes all rows of blocks
    [split_block(t), split_block(t + 1)) (the last task also the channel tail).  Each output
    is computed the same way in either split, so results do not depend on the thread count."""
    N, OH, OW, C = y.shape
    R = N * OH
    if R * OW * C == 0:
        return
    B = x86_blocks(C)
    nt = scratch.size // slice_bytes
    ctr = np.zeros(8, np.int64)
    if C < VL and wpack.size == np.int64(x86_weight_bytes(VL, kh, kw) + kh * kw * VL
                                         + DW_TABLE_HEADER + _records_bytes(VL)):
        # staged: pack_staged_depthwise's layout (a C < VL conv run as VL channels)
        if slice_bytes < _layout_staged(kh, kw, x.shape[2])[5]:
            raise ValueError("depthwise_conv_u8_x86: slice too small for the staged path")
        if nt <= 1 or R * OW * VL * kh * kw < PAR_MIN_MACS:
            xcall(_dw_task_staged, x, z_x, wpack, z_y, act_min, act_max, kh, kw, sh, sw, dh, dw,
                  pad_t, pad_l, y, scratch[:slice_bytes], 0, R, ctr, 0)
            return
        nt = min(nt, R)
        rchunk = -(-R // (SPLIT_ROWS_MIN * nt))
        for t in prange(nt):
            ti = np.int64(t)
            xcall(_dw_task_staged, x, z_x, wpack, z_y, act_min, act_max, kh, kw, sh, sw, dh, dw,
                  pad_t, pad_l, y, scratch[ti * slice_bytes:(ti + 1) * slice_bytes], 0, R, ctr,
                  rchunk)
        return
    if nt <= 1 or R * OW * C * kh * kw < PAR_MIN_MACS:
        xcall(_dw_task_x86, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh,
              sw, dh, dw, pad_t, pad_l, y, scratch[:slice_bytes], 0, R, 0, B, True, ctr, 0)
        return
    if R < nt and B >= nt:
        for t in prange(nt):
            ti = np.int64(t)                   # (prange indices are unsigned)
            xcall(_dw_task_x86, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw,
                  sh, sw, dh, dw, pad_t, pad_l, y,
                  scratch[ti * slice_bytes:(ti + 1) * slice_bytes], 0, R,
                  split_block(ti, nt, B, C), split_block(ti + 1, nt, B, C), ti == nt - 1, ctr, 0)
        return
    nt = min(nt, R)
    rchunk = -(-R // (SPLIT_ROWS_MIN * nt))    # >= SPLIT_ROWS_MIN chunks per thread
    for t in prange(nt):
        ti = np.int64(t)                       # (prange indices are unsigned)
        xcall(_dw_task_x86, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh,
              sw, dh, dw, pad_t, pad_l, y, scratch[ti * slice_bytes:(ti + 1) * slice_bytes],
              0, R, 0, B, True, ctr, rchunk)


@njit(**JIT)
def depthwise_scratch_bytes_x86(C, kh, kw, W):
    """Bytes of scratch one thread needs on the avx2 / vnni512 paths (before alignment); for
    C < VL enough for either the staged or the unstaged code."""
    if C < VL:
        return max(_layout_x86(C, kh, kw, W)[3], _layout_staged(kh, kw, W)[5])
    return _layout_x86(C, kh, kw, W)[3]


# ----------------------------------------------------------------------------- C < 16 (x86)
# A depthwise conv with fewer than VL channels (RepGhost / LCNet at width 0.5: 4, 8, 12
# channels) has no whole vector block, and ran the spec's scalar formula (or, at stride 1,
# _dw_flat): RepGhostNet-0.5's 12-channel stride-2 layer on 112x112 took 250 us.  At plan time
# its weights and requantize records are packed for VL channels instead (pack_staged_depthwise:
# the extra channels have weight, bias and multiplier 0).  The kernel (_dw_task_staged) copies
# each input row it reads into a ring of rows with VL channels per pixel (channels past C hold
# z_x, which meet zero weights), runs the 16-channel vector kernel over a chunk of output
# pixels into a row buffer, and keeps each pixel's first C bytes: the same dot products and
# records as a 16-channel layer, so the same results as the scalar formula.  A row is staged
# once while it stays in the ring (kh slots, slot ih mod kh for dilation 1).
STAGE_CHUNK = 256       # output pixels per vector-kernel call of the staged path (row buffer)


def staged_wpack_bytes(kh, kw):
    """Size of pack_staged_depthwise's result: how the kernel recognizes that layout."""
    return int(x86_weight_bytes(VL, kh, kw)) + kh * kw * VL + DW_TABLE_HEADER + int(_records_bytes(VL))


def pack_staged_depthwise(w, bias, mult, shift, z_x, z_y):
    """Plan time, int8 w[C, 1, kh, kw] with C < VL: pack_depthwise_weights_x86 and
    append_depthwise_table for VL channels (w, bias, multiplier padded with 0; shift with 31),
    or None when some channel's records cannot be represented (the kernel then runs the
    unstaged C < VL code)."""
    w = np.asarray(w, np.int8)
    C, _, kh, kw = w.shape
    if C >= VL:
        raise ValueError(f"pack_staged_depthwise: {C} channels (only C < {VL} is staged)")
    w16 = np.zeros((VL, 1, kh, kw), np.int8)
    w16[:C] = w

    def pad(a, fill):
        return np.concatenate([np.asarray(a, np.int32).ravel(), np.full(VL - C, fill, np.int32)])

    packed = append_depthwise_table(pack_depthwise_weights_x86(w16), VL, kh, kw, pad(bias, 0),
                                    pad(mult, 0), pad(shift, 31), z_x, z_y)
    state = np.asarray(packed).view(np.uint8)[x86_weight_bytes(VL, kh, kw) + kh * kw * VL]
    return packed if state == TABLE_USABLE else None


@njit(**JIT)
def _layout_staged(kh, kw, W):
    """Byte offsets inside one thread's slice on the staged path: tap addresses
    (i64[2·npairs]), ring tags (i64[kh]), zrow (u8[(W + 1)·VL] of z_x), the ring
    (u8[kh·W·VL]), the output row buffer (u8[STAGE_CHUNK·VL]); and the total."""
    npairs = (kh * kw + 1) // 2
    o_ad = 0
    o_tag = o_ad + 16 * npairs
    o_zr = o_tag + 8 * kh
    o_ring = o_zr + (W + 1) * VL
    o_yrow = o_ring + kh * W * VL
    return o_ad, o_tag, o_zr, o_ring, o_yrow, o_yrow + STAGE_CHUNK * VL


def _pixel_copy(expand):
    """Intrinsic (src, C, npx, z, dst): for p < npx, per pixel one 16-byte load and store;
    expand: dst[16p + c] = src[p·C + c] for c < C, else z (the load reads 16 − C bytes past
    the pixel: the caller bounds npx); not expand: dst[p·C .. p·C + 15] = src[16p .. 16p + 15]
    in increasing p, so each store's last 16 − C bytes are overwritten by the next pixel's (the
    caller bounds npx so the last store stays inside the row).  src, dst: absolute addresses."""
    def impl(typingctx, src, C, npx, z, dst):
        sig = types.void(src, C, npx, z, dst)

        def codegen(context, builder, signature, args):
            src_, c_, n_, z_, dst_ = args
            v8 = ir.VectorType(_I8, VL)
            lanes = ir.Constant(ir.VectorType(_I64, VL), list(range(VL)))
            keep = builder.icmp_signed("<", lanes, _splat(builder, c_, ir.VectorType(_I64, VL)))
            zv = _splat(builder, builder.trunc(z_, _I8), v8)
            pre = builder.block
            loop = builder.append_basic_block("pc.loop")
            done = builder.append_basic_block("pc.done")
            builder.cbranch(builder.icmp_signed(">", n_, ir.Constant(_I64, 0)), loop, done)
            builder.position_at_end(loop)
            p = builder.phi(_I64)
            p.add_incoming(ir.Constant(_I64, 0), pre)
            sstep, dstep = (c_, ir.Constant(_I64, VL)) if expand else (ir.Constant(_I64, VL), c_)
            sa = builder.add(src_, builder.mul(p, sstep))
            da = builder.add(dst_, builder.mul(p, dstep))
            v = builder.load(builder.inttoptr(sa, v8.as_pointer()), align=1)
            if expand:
                v = builder.select(keep, v, zv)
            builder.store(v, builder.inttoptr(da, v8.as_pointer()), align=1)
            p2 = builder.add(p, ir.Constant(_I64, 1))
            p.add_incoming(p2, loop)
            builder.cbranch(builder.icmp_signed("<", p2, n_), loop, done)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return sig, codegen

    impl.__name__ = "expand_pixels" if expand else "compact_pixels"
    return intrinsic(impl)


_expand_pixels = _pixel_copy(True)
_compact_pixels = _pixel_copy(False)


@njit(inline="always", **JIT)
def _stage_row(xf, off, W, C, z_x, ring, roff):
    """ring[roff + 16·w + c] = xf[off + w·C + c] (c < C), z_x for C <= c < 16, w < W: vector
    copies while the 16-byte load stays inside xf, the spec's bytes after that."""
    avail = xf.size - off
    nv = min(W, (avail - VL) // C + 1) if avail >= VL else 0
    _expand_pixels(xf.ctypes.data + off, C, nv, z_x, ring.ctypes.data + roff)
    for w in range(nv, W):
        for c in range(VL):
            ring[roff + w * VL + c] = xf[off + w * C + c] if c < C else np.uint8(z_x)


@njit(inline="always", **JIT)
def _unstage(yrow, npx, C, yf, yo, row_end):
    """yf[yo + p·C + c] = yrow[16p + c] for p < npx, c < C; no byte at or past row_end."""
    nv = min(npx, (row_end - yo - VL) // C + 1) if row_end - yo >= VL else 0
    _compact_pixels(yrow.ctypes.data, C, nv, np.int64(0), yf.ctypes.data + yo)
    for p in range(nv, npx):
        for c in range(C):
            yf[yo + p * C + c] = yrow[p * VL + c]


@njit(**JIT)
def _dw_task_staged(x, z_x, wpack, z_y, act_min, act_max, kh, kw, sh, sw, dh, dw, pad_t, pad_l,
                    y, sl, r0, r1, ctr, rchunk):
    """Output rows r0..r1-1 (in chunks of rchunk rows from the shared counter ctr[0] when
    rchunk > 0) of a C < VL depthwise conv whose wpack is pack_staged_depthwise's (see above),
    with the thread slice sl (_layout_staged)."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    T = kh * kw
    npairs = (T + 1) // 2
    nb16 = x86_weight_bytes(VL, kh, kw)
    base = nb16 + T * VL
    if _table_state(wpack, base, VL, z_x, z_y) != TABLE_USABLE:
        raise ValueError("depthwise_conv_u8_x86: staged weights without records for these zero points")
    wq = wpack[:nb16].view(np.int16)
    t0 = base + DW_TABLE_HEADER
    rec = wpack[t0:t0 + _records_bytes(VL)].view(np.int64)
    o_ad, o_tag, o_zr, o_ring, o_yrow, _ = _layout_staged(kh, kw, W)
    ad = sl[o_ad:o_ad + 16 * npairs].view(np.int64)
    tags = sl[o_tag:o_tag + 8 * kh].view(np.int64)
    tags[:] = -1
    zrow = sl[o_zr:o_zr + (W + 1) * VL]
    zrow[:] = np.uint8(z_x)
    ring = sl[o_ring:o_ring + kh * W * VL]
    yrow = sl[o_yrow:o_yrow + STAGE_CHUNK * VL]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    za = zrow.ctypes.data
    ra = ring.ctypes.data
    ow_lo, ow_hi = interior_columns(OW, W, kw, sw, dw, pad_l)
    nchunk = (r1 - r0 + rchunk - 1) // rchunk if rchunk > 0 else 1
    for _ in range(nchunk):
        rs, re = next_rows(ctr, r0, r1, rchunk, nchunk)
        if re <= rs:
            break
        for r in range(rs, re):
            n = r // OH
            oh = r - n * OH
            ih0 = oh * sh - pad_t
            for i in range(kh):
                ih = ih0 + i * dh
                if ih >= 0 and ih < H:
                    slot = ih % kh if dh == 1 else i
                    if tags[slot] != n * H + ih:
                        _stage_row(xf, (n * H + ih) * W * C, W, C, z_x, ring, slot * W * VL)
                        tags[slot] = n * H + ih
            row_end = (r * OW + OW) * C
            ow = 0
            while ow < OW:
                npx = min(ow_hi - ow, STAGE_CHUNK) if ow >= ow_lo and ow < ow_hi else 1
                iw0 = ow * sw - pad_l
                for i in range(kh):
                    ih = ih0 + i * dh
                    slot = ih % kh if dh == 1 else i
                    for j in range(kw):
                        iw = iw0 + j * dw
                        a = za
                        if ih >= 0 and ih < H and iw >= 0 and iw < W:
                            a = ra + (slot * W + iw) * VL
                        ad[i * kw + j] = a
                if T & 1:
                    ad[T] = ad[T - 1]                  # its weight is 0
                _dw_pairs_x86(ad, npairs, npx, sw * VL, wq, 0, 1, 1, rec, act_min, act_max, yrow,
                              0, VL, 0)
                _unstage(yrow, npx, C, yf, (r * OW + ow) * C, row_end)
                ow += npx
