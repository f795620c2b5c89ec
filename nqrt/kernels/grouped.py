"""Direct grouped QConv for narrow groups on the x86 paths (spec 4.1, 1 < group, not
depthwise): 8 or 16 output channels per group and a multiple of 4 input channels per group
(RegNet's groups of 8, 16, 24, ... channels), or an even number of groups with 4 inputs and 4
outputs each (ResNeXt 32x4d's first stage), with no im2col.

The im2col + GEMM path packs kh·kw·C/group bytes (widened to int16) of every output pixel for
every group, and with 8 or 16 output channels per group that packing costs more than the
multiply-adds: RegNetY-400MF's 3x3 convs with 13 groups of 8 ran at 19 GMAC/s.  Here each
output pixel reads its input straight from x:

    for a group's 8-channel output vector v and each quad (tap t, input channels c..c+3):
        Sh += vpmaddubsw(broadcast4(x[tap t, c..c+3]), wh[t, c..c+3, v's 8 channels])
        Sl += vpmaddubsw(broadcast4(x[tap t, c..c+3]), wl[...])

with the weights split as in the wide depthwise kernel (depthwise.split_weight: w = 16·wh + wl,
|wh|, |wl| <= 8): an int16 lane (output channel m, pair of input channels) gains at most
2·255·8 = 4080 per quad, so vpmaddubsw cannot saturate and QUADS_PER_FLUSH = 8 quads sum
exactly in int16 (32640 < 2^15).  Every QUADS_PER_FLUSH quads the sums are widened exactly:
dot_m += vpmaddwd(Sh, 16) + vpmaddwd(Sl, 1) (the two lanes of channel m summed).  The dot is
the raw Σ x·w over all kh·kw taps, a tap in the padding reading a row of z_x bytes (`zrow`),
so it equals the GEMM path's dot and the requantize table of the avx2 GEMM epilogue
(vnni.requant_table: zero-point correction, bias, rounding, 64-bit multiply, logical shift)
applies unchanged, through the same epilogue code (vnni.emit_table_rows).  Without a usable
table the kernel computes the spec's formula in scalar code.

Groups of 4 go in pairs (2j, 2j + 1), one 8-lane unit: an 8-byte broadcast puts group 2j's
4 input bytes in the even 32-bit lanes and group 2j + 1's in the odd ones, lane m computes
output m div 2 of group 2j + (m mod 2), and one vpermd before the epilogue puts the 8 results
in y's channel order.

Packed weights (pack_grouped_weights): a LAYOUT_HEADER-byte header (byte 0 LAYOUT_GROUPED) then
int8 [unit][quad q][vector v][wh | wl][8 lanes][4 input channels], a unit being a group (quad
q = tap t·(Cg/4) + c/4, taps in (i, j) order, lane = output channel) or a pair of 4-channel
groups (q = t, lanes as above); then (with_requant_table) the table.

Work split: output rows (n, oh) in chunks from a shared counter; each output byte is computed
by one thread in a fixed order, so results do not depend on the thread count.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, fetch_add, xcall
from nqrt.kernels.depthwise import (_ptr, emit_pixel_runs, interior_columns, split_weight,
                                    tap_addresses)
from nqrt.kernels.fixedpoint import output_u8
from nqrt.kernels.vnni import (AVX2_VL, LAYOUT_HEADER, PAR_MIN_MACS_FAST, emit_table_rows,
                               splat_bytes16, table_offset)

LAYOUT_GROUPED = 2       # header byte 0 of pack_grouped_weights (vnni: 0 pairs, 1 quads)
QUADS_PER_FLUSH = 8      # quads summed in int16 before widening: 8·2·255·8 = 32640 < 2^15
PX_G = 2                 # output pixels per iteration (sharing the weight loads)
ROWS_PER_CHUNK = 2       # output rows per work item taken from the shared counter

_PAIR_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]    # y channel n of a pair <- lane 2·(n mod 4) + n div 4
_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


@njit(**JIT)
def direct_shape(C, M, group):
    """True for the group shapes the direct kernel takes (module docstring)."""
    if group <= 1 or C % group or M % group:
        return False
    cg, mg = C // group, M // group
    if cg == 1 and mg == 1:
        return False                                    # depthwise
    return ((mg == 8 or mg == 16) and cg % 4 == 0) or (mg == 4 and cg == 4 and group % 2 == 0)


def grouped_direct(C, M, group, path):
    """True when `path` runs this grouped conv with the direct kernel: an AVX2 kernel, used on
    both x86 paths (every AVX-512 VNNI CPU has AVX2; on vnni512 the alternative, groups merged
    into 64-channel panels, would multiply mostly zero weights: 8 of 64 channels per group of
    RegNet's)."""
    return path in ("avx2", "vnni512") and bool(direct_shape(C, M, group))


def pack_grouped_weights(w, group):
    """int8 w[M, Cg, kh, kw] (values in [-127, 127]) -> int8[:] (module docstring)."""
    M, cg, kh, kw = w.shape
    mg = M // group
    T = kh * kw
    if mg == 4:
        # pairs of groups (2j, 2j + 1) as one unit of 8 lanes: lane m is output channel m // 2
        # of group 2j + m % 2 and reads that group's 4 inputs (_make_gconv(1, pairs=True))
        units = group // 2
        wt = np.asarray(w).reshape(units, 2, 4, 4, T)               # [j, gsel, out, c, tap]
        wt = wt.transpose(0, 2, 1, 4, 3).reshape(units, 1, AVX2_VL, T, 4)
    else:
        # [group, vector, lane m, c, tap] -> [group, vector, m, quad, 4]
        units = group
        wt = np.asarray(w).reshape(group, mg // AVX2_VL, AVX2_VL, cg, T)
        wt = wt.transpose(0, 1, 2, 4, 3).reshape(group, mg // AVX2_VL, AVX2_VL, T * cg // 4, 4)
    wh, wl = split_weight(wt)
    out = np.stack([wh, wl], axis=2)                    # [unit, v, h/l, lane, quad, 4]
    out = out.transpose(0, 4, 1, 2, 3, 5)               # [unit, quad, v, h/l, lane, 4]
    assert out.shape[0] == units
    head = np.zeros(LAYOUT_HEADER, np.int8)
    head[0] = LAYOUT_GROUPED
    return np.concatenate([head, np.ascontiguousarray(out).reshape(-1)])


@njit(**JIT)
def grouped_weight_bytes(M, C, kh, kw, group):
    """Bytes of pack_grouped_weights' output (header included, table excluded)."""
    return LAYOUT_HEADER + M * kh * kw * (C // group) * 2


def _make_gconv(nv, pairs=False):
    """Intrinsic for one unit's nv·8 output channels (a group's; pairs: nv = 1, a pair of
    4-channel groups) of npx output pixels:
        gk(adq: i64[nq], nq, npx, xstep, xo, wq: i8[:], wo, tab: i8[:], toff, m0, lo, hi,
           y: u8[:], yo, ystep)
    load q of pixel p reads the 4 (pairs: 8) bytes at absolute address adq[q] + xo + p·xstep
    (xo: the unit's first input channel, so that adq serves every unit); its
    weights are at wq[wo + (q·nv + v)·64 ...]; the outputs y[yo + p·ystep + 0 .. 8·nv − 1]
    (channels m0 .. of the table that starts at byte toff of tab; m0 a multiple of 8).
    nq, npx >= 1."""
    vb = ir.VectorType(_I8, 32)
    vw = ir.VectorType(_I16, 16)
    vd = ir.VectorType(_I32, 8)

    def codegen(context, builder, signature, args):
        (adq_, nq_, np_, xs_, xo_, wq_, wo_, tab_, toff_, m0_, lo_, hi_, y_, yo_, ys_) = args
        sa = signature.args
        mod = builder.module
        maddubs = cgutils.get_or_insert_function(mod, ir.FunctionType(vw, [vb, vb]),
                                                 "llvm.x86.avx2.pmadd.ub.sw")
        madd = cgutils.get_or_insert_function(mod, ir.FunctionType(vd, [vw, vw]),
                                              "llvm.x86.avx2.pmadd.wd")
        adp = _ptr(context, builder, sa[0], adq_, _I64)
        wqp = builder.gep(_ptr(context, builder, sa[5], wq_, _I8), [wo_])
        tp = builder.gep(_ptr(context, builder, sa[7], tab_, _I8), [toff_])
        yb = _ptr(context, builder, sa[12], y_, _I8)
        lo = splat_bytes16(builder, lo_)
        hi = splat_bytes16(builder, hi_)
        zw = ir.Constant(vw, None)
        zd = ir.Constant(vd, None)
        ones = ir.Constant(vw, [1] * 16)
        sixteens = ir.Constant(vw, [16] * 16)
        one = ir.Constant(_I64, 1)
        kflush = ir.Constant(_I64, QUADS_PER_FLUSH)
        qbytes = ir.Constant(_I64, 64 * nv)                 # weight bytes per quad

        def broadcast4(addr):
            """The 4 bytes at addr in every 32-bit lane (pairs: the 8 bytes at addr in every
            64-bit lane, i.e. the quads of the pair's two groups in even / odd lanes)."""
            ety = _I64 if pairs else _I32
            vty = ir.VectorType(ety, 4 if pairs else 8)
            v = builder.load(builder.inttoptr(addr, ety.as_pointer()), align=1)
            v8 = builder.insert_element(ir.Constant(vty, None), v, ir.Constant(_I32, 0))
            v8 = builder.shuffle_vector(v8, ir.Constant(vty, None),
                                        ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count))
            return builder.bitcast(v8, vb)

        def pixels(p, u, exit_block):
            entry = builder.block
            chunk = builder.append_basic_block(f"gc{u}.chunk")
            quad = builder.append_basic_block(f"gc{u}.quad")
            chunk_end = builder.append_basic_block(f"gc{u}.chunkend")
            store = builder.append_basic_block(f"gc{u}.store")
            xbases = [builder.add(xo_, builder.mul(builder.add(p, ir.Constant(_I64, k)), xs_))
                      for k in range(u)]
            builder.branch(chunk)

            builder.position_at_end(chunk)
            q0 = builder.phi(_I64)
            q0.add_incoming(ir.Constant(_I64, 0), entry)
            dots = {}
            for k in range(u):
                for v in range(nv):
                    ph = builder.phi(vd)
                    ph.add_incoming(zd, entry)
                    dots[k, v] = ph
            qe = builder.add(q0, kflush)
            qe = builder.select(builder.icmp_signed("<", qe, nq_), qe, nq_)
            builder.branch(quad)

            builder.position_at_end(quad)
            q = builder.phi(_I64)
            q.add_incoming(q0, chunk)
            sums = {}
            for k in range(u):
                for v in range(nv):
                    for part in range(2):          # Sh, Sl
                        ph = builder.phi(vw)
                        ph.add_incoming(zw, chunk)
                        sums[k, v, part] = ph
            a = builder.load(builder.gep(adp, [q]))
            wbase = builder.gep(wqp, [builder.mul(q, qbytes)])
            wv = {}
            for v in range(nv):
                for part in range(2):
                    ptr = builder.gep(wbase, [ir.Constant(_I64, 64 * v + 32 * part)])
                    wv[v, part] = builder.load(builder.bitcast(ptr, vb.as_pointer()), align=1)
            new = {}
            for k in range(u):
                xv = broadcast4(builder.add(a, xbases[k]))
                for v in range(nv):
                    for part in range(2):
                        new[k, v, part] = builder.add(sums[k, v, part],
                                                      builder.call(maddubs, [xv, wv[v, part]]))
            q2 = builder.add(q, one)
            q.add_incoming(q2, quad)
            for key, ph in sums.items():
                ph.add_incoming(new[key], quad)
            builder.cbranch(builder.icmp_signed("<", q2, qe), quad, chunk_end)

            builder.position_at_end(chunk_end)
            widened = {}
            for k in range(u):
                for v in range(nv):
                    d = builder.add(builder.call(madd, [new[k, v, 0], sixteens]),
                                    builder.call(madd, [new[k, v, 1], ones]))
                    widened[k, v] = builder.add(dots[k, v], d)
            for key, ph in dots.items():
                ph.add_incoming(widened[key], chunk_end)
            q0.add_incoming(qe, chunk_end)
            builder.cbranch(builder.icmp_signed("<", qe, nq_), chunk, store)

            builder.position_at_end(store)
            yp = builder.gep(yb, [builder.add(yo_, builder.mul(p, ys_))])
            if pairs:       # lane m holds output m // 2 of the pair's group m % 2: to y's order
                widened = {key: builder.shuffle_vector(
                    v, ir.Constant(vd, None), ir.Constant(ir.VectorType(_I32, 8), _PAIR_ORDER))
                    for key, v in widened.items()}
            emit_table_rows(builder, tp, m0_, nv, AVX2_VL, widened, u, lo, hi, ys_, yp)
            builder.branch(exit_block)

        emit_pixel_runs(builder, np_, PX_G, pixels, builder.append_basic_block("gc.done"))
        return context.get_dummy_value()

    def gk(typingctx, adq, nq, npx, xstep, xo, wq, wo, tab, toff, m0, lo, hi, y, yo, ystep):
        sig = types.void(adq, nq, npx, xstep, xo, wq, wo, tab, toff, m0, lo, hi, y, yo, ystep)
        return sig, codegen

    gk.__name__ = f"gconv_avx2_{8 * nv}" + ("_pairs" if pairs else "")
    return intrinsic(gk)


_gconv_8 = _make_gconv(1)
_gconv_16 = _make_gconv(2)
_gconv_pairs = _make_gconv(1, pairs=True)


@njit(**JIT)
def grouped_slice_bytes(C, kh, kw, W, group):
    """Bytes of scratch one thread needs (before alignment): the quad addresses (i64 per quad
    of one group), the tap addresses (i64 per tap) and zrow (W·C bytes of z_x: a run of
    interior pixels in a row whose window crosses the top or bottom padding reads it at
    p·sw·C + channel < W·C, like x)."""
    nq = kh * kw * (C // group) // 4
    return 8 * nq + 8 * kh * kw + W * C


@njit(**JIT)
def _grouped_task(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                  dh, dw, pad_t, pad_l, group, y, sl, ctr, nchunk, toff):
    """Output rows in chunks of ROWS_PER_CHUNK taken from ctr[0] (fetch_add) until nchunk; per
    row: the border pixels one call each, the interior (every tap inside x) as one run with a
    fixed input step; per pixel run, every group.  toff < 0: the scalar formula instead."""
    N, H, W, C = x.shape
    OH, OW, M = y.shape[1], y.shape[2], y.shape[3]
    T = kh * kw
    cg = C // group
    mg = M // group
    pairs = mg == 4                            # units: pairs of 4-channel groups, else groups
    units = group // 2 if pairs else group
    uc = 2 * cg if pairs else cg               # input channels per unit
    um = 2 * mg if pairs else mg               # output channels per unit
    cq = cg // 4
    nq = T if pairs else T * cq                # loads per unit and pixel (pairs: 8 bytes)
    R = N * OH
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    adq = sl[:8 * nq].view(np.int64)
    ad = sl[8 * nq:8 * nq + 8 * T].view(np.int64)
    zrow = sl[8 * nq + 8 * T:8 * nq + 8 * T + W * C]
    zrow[:] = np.uint8(z_x)
    xa = xf.ctypes.data
    za = zrow.ctypes.data
    ubytes = nq * um * 8                      # packed weight bytes per unit
    ow_lo, ow_hi = interior_columns(OW, W, kw, sw, dw, pad_l)
    while True:
        ck = fetch_add(ctr, 0)
        if ck >= nchunk:
            break
        for r in range(ck * ROWS_PER_CHUNK, min(R, (ck + 1) * ROWS_PER_CHUNK)):
            n = r // OH
            oh = r - n * OH
            ih0 = oh * sh - pad_t
            ow = 0
            while ow < OW:
                run = ow == ow_lo and ow_hi > ow_lo
                npx = ow_hi - ow_lo if run else 1
                tap_addresses(ad, xa, za, n, H, W, C, ih0, ow * sw - pad_l, kh, kw, dh, dw)
                yo = ((n * OH + oh) * OW + ow) * M
                for t in range(T):                 # the unit's offset is added by the kernel
                    for c in range(nq // T):
                        adq[t * (nq // T) + c] = ad[t] + 4 * c
                for u in range(units):
                    wo = LAYOUT_HEADER + u * ubytes
                    if toff < 0:
                        _grouped_scalar(ad, npx, sw * C, wpack, wo, u * uc, u * um, cg, mg,
                                        pairs, T, z_x, wsum, bias, mult, shift, z_y, act_min,
                                        act_max, yf, yo, M)
                        continue
                    if pairs:
                        _gconv_pairs(adq, nq, npx, sw * C, u * uc, wpack, wo, wpack, toff,
                                     u * um, act_min, act_max, yf, yo + u * um, M)
                    elif mg == 8:
                        _gconv_8(adq, nq, npx, sw * C, u * uc, wpack, wo, wpack, toff, u * um,
                                 act_min, act_max, yf, yo + u * um, M)
                    else:
                        _gconv_16(adq, nq, npx, sw * C, u * uc, wpack, wo, wpack, toff, u * um,
                                  act_min, act_max, yf, yo + u * um, M)
                ow += npx


@njit(inline="always", **JIT)
def _grouped_scalar(ad, npx, xstep, wpack, wo, c0, m0, cg, mg, pairs, T, z_x, wsum, bias, mult,
                    shift, z_y, act_min, act_max, yf, yo, M):
    """The spec's formula for one unit's outputs m0 .. (a group's mg, or a pair's 2·mg) of npx
    pixels, reading the packed weights at wo (w = 16·wh + wl, lane layout of
    pack_grouped_weights) and x through the tap addresses (a tap in the padding reads z_x,
    whose products z_x·w the correction − z_x·wsum cancels)."""
    um = 2 * mg if pairs else mg
    nv = um // 8
    qpt = 1 if pairs else cg // 4              # weight quads per tap
    for p in range(npx):
        for m in range(um):
            if pairs:                          # channel m of the pair: group m // 4
                lane = 2 * (m % 4) + m // 4
                v = 0
                cx = c0 + (m // 4) * cg
            else:
                v = m // 8
                lane = m - 8 * v
                cx = c0
            dot = np.int64(0)
            for t in range(T):
                for c in range(cg):
                    q = t * qpt + c // 4
                    o = wo + (q * nv + v) * 64 + lane * 4 + (c & 3)
                    wv = 16 * np.int64(wpack[o]) + np.int64(wpack[o + 32])
                    dot += np.int64(_load_u8_at(ad[t] + p * xstep + cx + c)) * wv
            ch = m0 + m
            acc = dot - np.int64(z_x) * np.int64(wsum[ch]) + np.int64(bias[ch])
            yf[yo + p * M + ch] = output_u8(acc, mult[ch], shift[ch], z_y, act_min, act_max)


@intrinsic
def _load_u8_at(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.zext(builder.load(builder.inttoptr(args[0], _I8.as_pointer())), _I64)
    return types.int64(addr), codegen


@njit(**PJIT)
def grouped_conv_u8_avx2(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw,
                         sh, sw, dh, dw, pad_t, pad_l, group, y, scratch, slice_bytes):
    """Grouped QConv with the direct kernel (grouped_direct(C, M, group, "avx2") shapes; wpack
    from pack_grouped_weights, with_requant_table appended for the table epilogue); scratch of
    >= 1 slice of slice_bytes (>= grouped_slice_bytes).  One thread below PAR_MIN_MACS_FAST."""
    N, H, W, C = x.shape
    OH, OW, M = y.shape[1], y.shape[2], y.shape[3]
    R = N * OH
    if R * OW * M == 0:
        return
    K = kh * kw * (C // group)
    toff = table_offset(wpack, grouped_weight_bytes(M, C, kh, kw, group), M, K, z_x, z_y)
    nchunk = -(-R // ROWS_PER_CHUNK)
    nt = min(scratch.size // slice_bytes, nchunk)
    ctr = np.zeros(8, np.int64)
    if nt <= 1 or R * OW * M * K < PAR_MIN_MACS_FAST:
        xcall(_grouped_task, x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh,
              kw, sh, sw, dh, dw, pad_t, pad_l, group, y, scratch[:slice_bytes], ctr, nchunk,
              toff)
        return
    for t in prange(nt):
        ti = np.int64(t)                       # (prange indices are unsigned)
        xcall(_grouped_task, x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh,
              kw, sh, sw, dh, dw, pad_t, pad_l, group, y,
              scratch[ti * slice_bytes:(ti + 1) * slice_bytes], ctr, nchunk, toff)
