"""Packed u8 x s8 -> s32 GEMM with a fused requantize epilogue: SIMD micro-kernels + drivers.

Two SIMD back ends share one packed layout and one driver structure:

  "vnni512"  llvm.x86.avx512.vpdpbusd.512: acc(16 x i32) += sum of 4 (u8 x s8) per lane.
             Group G = 4 k, vector = 16 output channels, register tile MR x NR = 6 x 64.
  "avx2"     llvm.x86.avx2.pmadd.wd on int16-widened operands (x zero-extended at packing,
             w sign-extended in registers):
             acc(8 x i32) += sum of 2 (s16 x s16) per lane; exact (no vpmaddubsw saturation).
             Group G = 2 k, vector = 8 output channels, register tile 6 x 16 (16 ymm registers).

  "avx2q"    the avx2 path's kernel for weights in [-64, 63] (e.g. converted with 7-bit
             weights): llvm.x86.avx2.pmadd.ub.sw on u8 x s8, then pmadd.wd with ones.  A pair
             sum a0·w0 + a1·w1 is at most 2·255·64 = 32640 in magnitude, so vpmaddubsw cannot
             saturate: exact, with 3 vector ops per 32 multiply-adds instead of 4.
             Group G = 4 k (A and B stay bytes), register tile 6 x 16.

All compute the exact int32 dot product sum_k x[p,k] * w[m,k] (spec section 3.5: |dot| < 2^31
for K <= 66 000, w in [-127, 127]), so results are bit-identical to the naive reference and to
each other, independent of thread count.

The avx2 path packs each layer for one of its two kernels (avx2_isa: "avx2q" when every weight
lies in [-64, 63], else "avx2") and records which in a LAYOUT_HEADER-byte header in front of B
(byte 0: LAYOUT_PAIRS or LAYOUT_QUADS); the avx2 drivers read it and run the matching kernel.

Packed layouts (private; "group" = G consecutive k):
  B (weights, plan time):  [panel = NR output channels][group][NR][G bytes]
        vnni512: 4 x int8 w[m, 4g..4g+3]; avx2: 2 x int8 w[m, 2g..2g+1] (sign-extended to
        int16 in registers, vpmovsxbw: B stays 1 byte per weight in memory)
        K padded with zeros to a multiple of G * UNROLL, M to a multiple of NR.
  A (activations, per call, in the caller's scratch): row-major [row][group][4 bytes]
        (vnni512: 4 x u8; avx2: 2 x u16, zero-extended), so packing is a vectorized (widening)
        copy; the micro-kernels take the row and group strides (any layout works).  k past K
        may hold stale bytes (B is zero there); rows past the valid ones are never read.

The micro-kernels are Numba intrinsics that emit LLVM IR (a k-loop unrolled by UNROLL groups,
MR x NV vector accumulators held in SSA phis = registers) with the epilogue (zero-point
correction, bias, requantize, clamp, store u8) fused on the registers, so no P x M int32 matrix
exists.  vnni512 fuses it for every panel: a partial one (M not a multiple of 64, e.g. MobileNet's
16..160-channel layers) uses masked loads of its constants and masked byte stores.  avx2 fuses
it with the plan-time table, a partial 8-column vector (M = 12, 20, 36, ...) storing only its
valid bytes; without a usable table (or, in a grouped conv, for a panel that does not start on
a multiple of 8 channels) its kernels store the int32 tile to a small per-thread buffer and
the scalar `_epilogue` finishes it.

The intrinsics are defined at module level (cacheable with cache=True).  Importing this module
compiles nothing; a driver is compiled on first call, so the vnni512 driver must only be called
on a host where nqrt.kernels.cpu.has_vnni512() (LLVM aborts on an unsupported intrinsic).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels import cpu
from nqrt.kernels._jit import JIT, PJIT, fetch_add, xcall
from nqrt.kernels.fixedpoint import offset_requant
from nqrt.kernels.rowcopy import copy_runs

# ----------------------------------------------------------------------------- parameters
UNROLL = 2              # k-groups per loop iteration (K is padded to G * UNROLL)

V512_G, V512_VL, V512_NV, V512_MR = 4, 16, 4, 6
V512_NR = V512_VL * V512_NV          # 64 output channels per panel

AVX2_G, AVX2_VL, AVX2_NV, AVX2_MR = 2, 8, 2, 6
AVX2_NR = AVX2_VL * AVX2_NV          # 16 output channels per panel
AVX2Q_G = 4                          # "avx2q": groups of 4 k, same tile and panels as "avx2"
LAYOUT_HEADER = 64                   # bytes in front of the avx2 path's packed B
LAYOUT_PAIRS, LAYOUT_QUADS = 0, 1    # header byte 0: "avx2" / "avx2q" layout
QUAD_W_MIN, QUAD_W_MAX = -64, 63     # weights for which vpmaddubsw pair sums cannot saturate

A_BLOCK_BYTES = 160 * 1024   # packed A rows kept per thread (L2-resident), see plan_mc
PAR_MIN_MACS = 1 << 16       # portable GEMM: below this, one thread (launch overhead dominates)
# The fast paths run ~50 GMAC/s per thread on small layers, so a parallel region (a wake-up and
# a barrier, 2-4 us on the 2-vCPU VM) only pays from about 300 k MACs: measured 1 vs 2 threads,
# 1x576x144 GEMM 4.0 / 6.4 us, 7x7x72 -> 72 1x1 conv (254 k) 6.2 / 8.9 us, 14x14x40 -> 40
# (314 k) 11.4 / 10.5 us, 7x7x96 -> 96 (452 k) 9.1 / 7.8 us.
PAR_MIN_MACS_FAST = 1 << 18
CALL_ROWS = 2                # a micro-kernel call's B-panel cost in rows of A (fast_threads)

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


# ----------------------------------------------------------------------------- micro-kernels
def _data_ptr(context, builder, aty, val):
    return cgutils.create_struct_proxy(aty)(context, builder, value=val).data


def _make_ukernel(isa, mr, nv, fused=False, bcols=None):
    """Intrinsic for an mr x NR (NR = VL*nv) tile of dot products.

    bcols: columns per k-group of the packed B panel (default NR).  A kernel narrower than the
    panels (avx2 nv = 1 on 16-column panels) reads the panel's first NR columns: the left half
    of the last panel when M is 8 more than a multiple of 16.

    uk(a: u8[:], aoff, ars, ags, b: i8[:], boff, ngroups, c: i32[:]):  c[r*NR + col] = the dot.
    fused: the requantize epilogue in vector IR on the accumulator registers, storing u8
           y[yoff + r*ystride + col]:
      vnni512: uk(a, aoff, ars, ags, b, boff, ngroups, y: u8[:, :], yoff, ystride, wsum, bias,
                  mult, shift (int32[M]), m0, z_x, z_y, act_min, act_max, ncols): columns
                  col < ncols (1 <= ncols <= NR) only, channels m0 .. m0+ncols-1 (masked loads
                  and stores: a partial panel reads no constant and writes no byte past them)
      avx2:    uk(a, aoff, ars, ags, b, boff, ngroups, y, yoff, ystride, tab: i8[:], toff, m0,
                  nst, act_min, act_max) with the plan-time requantize table (requant_table)
                  whose first block starts at byte toff of tab; m0 is a multiple of 8; only
                  nst (1..16) valid columns are computed and stored (whole 8-column vectors,
                  then the first nst mod 8 bytes of a partial one: emit_store_prefix).
    a + aoff: packed A micro-panel: the 4 bytes of row r, k-group g at aoff + r*ars + g*ags
    (GEMM: [group][MR rows][4], ars = 4, ags = 4*MR; conv: [row][group][4], ars = 4*ngroups,
    ags = 4); rows >= mr are not read.
    b + boff: packed B panel; ngroups: multiple of UNROLL.
    """
    if isa == "vnni512":
        vl, name = 16, "llvm.x86.avx512.vpdpbusd.512"
    elif isa in ("avx2", "avx2q", "avx2w"):
        vl, name = 8, "llvm.x86.avx2.pmadd.wd"
    else:
        raise ValueError(isa)
    nr = vl * nv
    bcols = nr if bcols is None else bcols
    bbytes = 2 if isa == "avx2" else 4        # bytes of B per (group, column)
    vty = ir.VectorType(_I32, vl)
    # vpdpbusd has a 4-5 cycle latency: with few accumulators, alternate two sets over the
    # unrolled groups.  (avx2's dependency chain is a 1-cycle vpaddd: one set is enough.)
    nsets = 2 if (isa == "vnni512" and mr * nv < 8) else 1

    if True:
        def codegen(context, builder, signature, args):
            a_, aoff_, ars_, ags_, b_, boff_, ng_ = args[:7]
            mod = builder.module
            v16s = ir.VectorType(_I16, 16)
            v32b = ir.VectorType(_I8, 32)
            if isa == "vnni512" and cpu.emulate_vnni512():     # decided at compile time
                def fn_call(acc, a, b):
                    return emit_vpdpbusd(builder, acc, a, b)
            elif isa == "vnni512":
                fn = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty, vty, vty]), name)

                def fn_call(acc, a, b):
                    return builder.call(fn, [acc, a, b])
            else:
                fn = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [v16s, v16s]), name)
            if isa == "avx2q":
                fub = cgutils.get_or_insert_function(
                    mod, ir.FunctionType(v16s, [v32b, v32b]), "llvm.x86.avx2.pmadd.ub.sw")
                ones = ir.Constant(v16s, [1] * 16)
            sa = signature.args
            ap = builder.gep(builder.bitcast(_data_ptr(context, builder, sa[0], a_), _I8.as_pointer()),
                             [aoff_])
            bp = builder.gep(builder.bitcast(_data_ptr(context, builder, sa[4], b_), _I8.as_pointer()),
                             [boff_])
            pre = builder.block
            loop = builder.append_basic_block("uk.loop")
            done = builder.append_basic_block("uk.done")
            zero = ir.Constant(vty, None)
            builder.cbranch(builder.icmp_signed(">", ng_, ir.Constant(_I64, 0)), loop, done)

            builder.position_at_end(loop)
            i = builder.phi(_I64)
            i.add_incoming(ir.Constant(_I64, 0), pre)
            phis = {}
            for s in range(nsets):
                for r in range(mr):
                    for j in range(nv):
                        ph = builder.phi(vty)
                        ph.add_incoming(zero, pre)
                        phis[s, r, j] = ph
            cur = dict(phis)
            for u in range(UNROLL):
                s = u % nsets
                gi = builder.add(i, ir.Constant(_I64, u))
                bg = builder.gep(bp, [builder.mul(gi, ir.Constant(_I64, bcols * bbytes))])
                ag = builder.gep(ap, [builder.mul(gi, ags_)])
                bv = []
                for j in range(nv):
                    p = builder.gep(bg, [ir.Constant(_I64, vl * bbytes * j)])
                    if isa in ("vnni512", "avx2w"):      # avx2w: B is int16 in memory
                        bv.append(builder.load(builder.bitcast(p, vty.as_pointer()), align=1))
                    elif isa == "avx2q":
                        bv.append(builder.load(builder.bitcast(p, v32b.as_pointer()), align=1))
                    else:   # 16 x i8 -> 16 x i16 (vpmovsxbw): B stays int8 in memory
                        b8 = builder.load(builder.bitcast(p, ir.VectorType(_I8, 16).as_pointer()),
                                          align=1)
                        bv.append(builder.bitcast(builder.sext(b8, ir.VectorType(_I16, 16)), vty))
                for r in range(mr):
                    p = builder.gep(ag, [builder.mul(ars_, ir.Constant(_I64, r))])
                    sc = builder.load(builder.bitcast(p, _I32.as_pointer()), align=1)
                    sv = builder.insert_element(ir.Constant(vty, None), sc, ir.Constant(_I32, 0))
                    sv = builder.shuffle_vector(sv, ir.Constant(vty, None),
                                                ir.Constant(ir.VectorType(_I32, vl), [0] * vl))
                    for j in range(nv):
                        if isa == "vnni512":
                            # operand order: (acc, u8 operand, s8 operand)
                            cur[s, r, j] = fn_call(cur[s, r, j], sv, bv[j])
                        elif isa == "avx2q":
                            # (u8 operand, s8 operand): int16 pair sums, exact for |w| <= 64
                            pairs = builder.call(fub, [builder.bitcast(sv, v32b), bv[j]])
                            cur[s, r, j] = builder.add(cur[s, r, j],
                                                       builder.call(fn, [pairs, ones]))
                        else:
                            v16s = ir.VectorType(_I16, 16)
                            prod = builder.call(fn, [builder.bitcast(sv, v16s),
                                                     builder.bitcast(bv[j], v16s)])
                            cur[s, r, j] = builder.add(cur[s, r, j], prod)
            inext = builder.add(i, ir.Constant(_I64, UNROLL))
            i.add_incoming(inext, loop)
            for key, ph in phis.items():
                ph.add_incoming(cur[key], loop)
            builder.cbranch(builder.icmp_signed("<", inext, ng_), loop, done)

            builder.position_at_end(done)
            fin = {}
            for key in phis:
                v = builder.phi(vty)
                v.add_incoming(zero, pre)
                v.add_incoming(cur[key], loop)
                fin[key] = v
            final = {}
            for r in range(mr):
                for j in range(nv):
                    v = fin[0, r, j]
                    for s in range(1, nsets):
                        v = builder.add(v, fin[s, r, j])
                    final[r, j] = v
            if fused and isa != "vnni512":
                _emit_table_requant_store(context, builder, sa, args, final, mr, nv, vl)
            elif fused:
                _emit_requant_store(context, builder, sa, args, final, mr, nv, vl)
            else:
                cp = builder.bitcast(_data_ptr(context, builder, sa[7], args[7]),
                                     _I32.as_pointer())
                for r in range(mr):
                    for j in range(nv):
                        p = builder.gep(cp, [ir.Constant(_I64, r * nr + vl * j)])
                        builder.store(final[r, j], builder.bitcast(p, vty.as_pointer()), align=4)
            return context.get_dummy_value()

    if fused and isa != "vnni512":
        def ukernel(typingctx, a, aoff, ars, ags, b, boff, ngroups, y, yoff, ystride, tab, toff,
                    m0, nst, act_min, act_max):
            sig = types.void(a, aoff, ars, ags, b, boff, ngroups, y, yoff, ystride, tab, toff, m0,
                             nst, act_min, act_max)
            return sig, codegen
    elif fused:
        def ukernel(typingctx, a, aoff, ars, ags, b, boff, ngroups, y, yoff, ystride, wsum, bias,
                    mult, shift, m0, z_x, z_y, act_min, act_max, ncols):
            sig = types.void(a, aoff, ars, ags, b, boff, ngroups, y, yoff, ystride, wsum, bias,
                             mult, shift, m0, z_x, z_y, act_min, act_max, ncols)
            return sig, codegen
    else:
        def ukernel(typingctx, a, aoff, ars, ags, b, boff, ngroups, c):
            return types.void(a, aoff, ars, ags, b, boff, ngroups, c), codegen

    ukernel.__name__ = (f"uk_{isa}_{mr}x{nr}" + (f"_of{bcols}" if bcols != nr else "")
                        + ("_requant" if fused else ""))
    return intrinsic(ukernel)


def emit_vpdpbusd(builder, acc, a, b):
    """Generic IR with the exact semantics of llvm.x86.avx512.vpdpbusd.512 (acc, a, b: 16 x i32):
    per lane i, acc[i] + Σ_{j<4} zext(a.byte[4i+j])·sext(b.byte[4i+j]), wrapping in int32 (no
    saturation).  Each product is exact in int16 (|255·(−128)| < 2^15).  Only for
    NQRT_EMULATE_VNNI512 (nqrt/kernels/cpu.py): it lets hosts without AVX-512 run the vnni512
    path's code."""
    v64b = ir.VectorType(_I8, 64)
    prod = builder.mul(builder.zext(builder.bitcast(a, v64b), ir.VectorType(_I16, 64)),
                       builder.sext(builder.bitcast(b, v64b), ir.VectorType(_I16, 64)))
    prod = builder.sext(prod, ir.VectorType(_I32, 64))
    total = acc
    for j in range(4):
        idx = ir.Constant(ir.VectorType(_I32, 16), [4 * i + j for i in range(16)])
        total = builder.add(total, builder.shuffle_vector(prod, prod, idx))
    return total


def _emit_requant_store(context, builder, sa, args, final, mr, nv, vl):
    """Vector IR of the epilogue (spec 3.3) on final[r, j] (<vl x i32> dots), u8 stores to y.

    Generic i64 vector ops: LLVM lowers them (AVX2 has no vpmullq / vpsravq and emulates them,
    still far cheaper than scalar code)."""
    (y_, yoff_, ystride_, wsum_, bias_, mult_, shift_, m0_, zx_, zy_, lo_, hi_,
     ncols_) = args[7:20]
    v32 = ir.VectorType(_I32, vl)
    v64 = ir.VectorType(_I64, vl)
    v8 = ir.VectorType(_I8, vl)
    v1 = ir.VectorType(ir.IntType(1), vl)
    mod = builder.module
    mload = cgutils.get_or_insert_function(
        mod, ir.FunctionType(v32, [v32.as_pointer(), _I32, v1, v32]),
        f"llvm.masked.load.v{vl}i32.p0")
    mstore = cgutils.get_or_insert_function(
        mod, ir.FunctionType(ir.VoidType(), [v8, v8.as_pointer(), _I32, v1]),
        f"llvm.masked.store.v{vl}i8.p0")
    lanes = ir.Constant(v64, list(range(vl)))

    def splat64(x):
        if x.type != _I64:
            x = builder.sext(x, _I64)
        sv = builder.insert_element(ir.Constant(v64, None), x, ir.Constant(_I32, 0))
        return builder.shuffle_vector(sv, ir.Constant(v64, None),
                                      ir.Constant(ir.VectorType(_I32, vl), [0] * vl))

    def chan_vec(arr_ty, arr, j, mask, fill):
        """The per-channel int32 constants of vector j, lanes past ncols = fill (not read)."""
        ptr = builder.bitcast(_data_ptr(context, builder, arr_ty, arr), _I32.as_pointer())
        ptr = builder.gep(ptr, [builder.add(m0_, ir.Constant(_I64, vl * j))])
        val = builder.call(mload, [builder.bitcast(ptr, v32.as_pointer()), ir.Constant(_I32, 4),
                                   mask, ir.Constant(v32, [fill] * vl)])
        return builder.sext(val, v64)

    zx = splat64(zx_)
    zy = splat64(zy_)
    lo = splat64(lo_)
    hi = splat64(hi_)
    one = ir.Constant(v64, [1] * vl)
    yp = builder.bitcast(_data_ptr(context, builder, sa[7], y_), _I8.as_pointer())
    yp = builder.gep(yp, [yoff_])
    for j in range(nv):
        # vector j holds columns vl*j .. vl*j+vl-1; skipped when none is valid (j >= 1 only:
        # ncols >= 1), masked when some are
        valid = builder.sub(ncols_, ir.Constant(_I64, vl * j))
        ctx = builder.if_then(builder.icmp_signed(">", valid, ir.Constant(_I64, 0))) \
            if j else None
        if ctx is not None:
            ctx.__enter__()
        vsplat = splat64(valid)
        mask = builder.icmp_signed("<", lanes, vsplat)
        corr = builder.sub(chan_vec(sa[11], bias_, j, mask, 0),
                           builder.mul(zx, chan_vec(sa[10], wsum_, j, mask, 0)))
        mu = chan_vec(sa[12], mult_, j, mask, 0)
        n = chan_vec(sa[13], shift_, j, mask, 1)      # 1: a defined shift in unused lanes
        rnd = builder.shl(one, builder.sub(n, one))
        for r in range(mr):
            acc = builder.add(builder.sext(final[r, j], v64), corr)
            v = builder.ashr(builder.add(builder.mul(acc, mu), rnd), n)
            v = builder.add(v, zy)
            v = builder.select(builder.icmp_signed("<", v, lo), lo, v)
            v = builder.select(builder.icmp_signed(">", v, hi), hi, v)
            off = builder.add(builder.mul(ystride_, ir.Constant(_I64, r)),
                              ir.Constant(_I64, vl * j))
            p = builder.gep(yp, [off])
            builder.call(mstore, [builder.trunc(v, v8), builder.bitcast(p, v8.as_pointer()),
                                  ir.Constant(_I32, 1), mask])
        if ctx is not None:
            ctx.__exit__(None, None, None)


def splat_bytes16(builder, x):
    """IR: the low byte of the integer x in all 16 lanes of a 16 x i8 vector (the clamp bounds
    of emit_table_rows)."""
    v8 = ir.VectorType(_I8, 16)
    sv = builder.insert_element(ir.Constant(v8, None), builder.trunc(x, _I8), ir.Constant(_I32, 0))
    return builder.shuffle_vector(sv, ir.Constant(v8, None),
                                  ir.Constant(ir.VectorType(_I32, 16), [0] * 16))


def _emit_table_requant_store(context, builder, sa, args, final, mr, nv, vl):
    """AVX2 epilogue from the requantize table (requant_table): per lane
        y = clamp(((dot·M0 + BC) >>> SH) + ZD, act_min, act_max)
    dot is the raw int32 sum of x·w (no zero-point term: BC holds it), so the 64-bit product is
    vpmuldq on the even lanes and on the odd lanes shifted down (both operands are exact
    sign-extended 32-bit values), the shift is logical (BC makes the sum non-negative) and the
    result fits the low 32 bits of each 64-bit lane.  The table stores every constant already
    split into even and odd lanes (TABLE_BLOCK layout), so the kernel uses it as memory
    operands with no shuffles.  The int32 results of a row's two 8-column vectors are narrowed
    together by vpackssdw + vpackuswb (saturating, so exactly a clamp to [0, 255]), put back in
    column order (vpermd) and clamped to [act_min, act_max] as bytes: one 16-byte store per
    row.  nst is the number of valid columns (1..8·nv) of the panel: vectors past them are not
    computed, and a last partial vector (nst not a multiple of 8: M = 12, 20, 36 ...) stores
    only its first nst mod 8 bytes, in 8/4/2/1-byte pieces (emit_store_prefix), so no byte
    past column m0 + nst − 1 is written (it belongs to the next row, or to another thread).
    Its table constants are read from whole blocks: requant_table pads past the last channel."""
    if nv not in (1, 2):
        raise NotImplementedError("the avx2 table epilogue stores one or two 8-column vectors")
    (y_, yoff_, ystride_, tab_, toff_, m0_, nst_, lo_, hi_) = args[7:16]
    tp = builder.gep(_data_ptr(context, builder, sa[10], tab_), [toff_])
    tp = builder.bitcast(tp, _I8.as_pointer())
    lo = splat_bytes16(builder, lo_)
    hi = splat_bytes16(builder, hi_)
    yp = builder.bitcast(_data_ptr(context, builder, sa[7], y_), _I8.as_pointer())
    yp = builder.gep(yp, [yoff_])
    def whole_or_prefix(nvec):
        full = builder.icmp_signed(">=", nst_, ir.Constant(_I64, vl * nvec))
        with builder.if_else(full) as (whole, part):
            with whole:
                emit_table_rows(builder, tp, m0_, nvec, vl, final, mr, lo, hi, ystride_, yp)
            with part:
                emit_table_rows(builder, tp, m0_, nvec, vl, final, mr, lo, hi, ystride_, yp, nst_)

    if nv == 1:
        whole_or_prefix(1)
        return
    both = builder.icmp_signed(">", nst_, ir.Constant(_I64, vl))
    with builder.if_else(both) as (pair, single):
        with pair:
            whole_or_prefix(2)
        with single:
            whole_or_prefix(1)


def emit_table_rows(builder, tp, m0_, nvec, vl, final, mr, lo, hi, ystride_, yp, ncols_=None):
    """Rows of the tile for the first nvec (1 or 2) 8-column vectors (_emit_table_requant_store);
    with ncols_ (an i64 below 8·nvec), only each row's first ncols_ bytes are stored."""
    consts = load_table_consts(builder, tp, m0_, nvec, vl)
    for r in range(mr):
        b = table_requant_bytes(builder, consts, [final[r, j] for j in range(nvec)], vl, lo, hi)
        p = builder.gep(yp, [builder.mul(ystride_, ir.Constant(_I64, r))])
        if ncols_ is None:
            builder.store(b, builder.bitcast(p, b.type.as_pointer()), align=1)
        else:
            emit_store_prefix(builder, b, p, ncols_)


def emit_store_prefix(builder, b, p, n_):
    """IR: store the first n_ bytes of the byte vector b (L = 8 or 16 lanes; 0 <= n_ < L, an i64)
    at the i8* p, as at most one 8-, 4-, 2- and 1-byte piece (the bits of n_; AVX2 has no
    byte-masked store): bytes from p + n_ on are not touched."""
    nbytes = b.type.count
    wide = ir.IntType(8 * nbytes)
    v = builder.bitcast(b, wide)
    off = ir.Constant(_I64, 0)
    for size in (8, 4, 2, 1):
        if size >= nbytes:
            continue
        bit = builder.icmp_unsigned("!=", builder.and_(n_, ir.Constant(_I64, size)), ir.Constant(_I64, 0))
        with builder.if_then(bit):
            shifted = builder.lshr(v, builder.zext(builder.mul(off, ir.Constant(_I64, 8)), wide)
                                   if nbytes > 8 else builder.mul(off, ir.Constant(_I64, 8)))
            piece = builder.trunc(shifted, ir.IntType(8 * size))
            q = builder.bitcast(builder.gep(p, [off]), piece.type.as_pointer())
            builder.store(piece, q, align=1)
        off = builder.select(bit, builder.add(off, ir.Constant(_I64, size)), off)


def load_table_consts(builder, tp, m0_, nvec, vl):
    """IR: the requant_table constants of channels m0 .. m0 + 8·nvec − 1 (m0 a multiple of 8;
    tp: i8* to the table's first block), per 8-column vector: [M0 even, M0 odd (sign-extended
    low dwords: lets LLVM select vpmuldq), BC even, BC odd, SH even, SH odd (<4 x i64>), ZD
    (<8 x i32>)]."""
    v32 = ir.VectorType(_I32, vl)
    h64 = ir.VectorType(_I64, vl // 2)
    blk = builder.mul(builder.udiv(m0_, ir.Constant(_I64, vl)), ir.Constant(_I64, TABLE_BLOCK))

    def load(j, field, vty):
        off = builder.add(blk, ir.Constant(_I64, j * TABLE_BLOCK + 32 * field))
        return builder.load(builder.bitcast(builder.gep(tp, [off]), vty.as_pointer()), align=1)

    consts = []
    for j in range(nvec):
        c = [load(j, f, h64) for f in range(6)] + [load(j, 6, v32)]
        c[0], c[1] = _low_sext(builder, c[0]), _low_sext(builder, c[1])   # M0 < 2^31: exact
        consts.append(c)
    return consts


def _low_sext(builder, v):
    """Each i64 lane's low dword, sign-extended (the operand form of vpmuldq)."""
    c32 = ir.Constant(v.type, [32] * v.type.count)
    return builder.ashr(builder.shl(v, c32), c32)


def table_requant_bytes(builder, consts, dots, vl, lo, hi):
    """IR: the clamped uint8 outputs of one row: dots = nvec (1 or 2) <8 x i32> raw dot
    vectors of the channels of `consts` (load_table_consts) -> <8·nvec x i8> in column order,
        clamp(((dot·M0 + BC) >>> SH) + ZD, lo, hi)      (requant_table).
    The 64-bit product is vpmuldq on the even lanes and on the odd lanes shifted down; the int32
    results of the two vectors are narrowed together by vpackssdw + vpackuswb (saturating, so
    exactly a clamp to [0, 255]), put back in column order (vpermd) and clamped to [lo, hi]
    (16-byte splats, splat_bytes16) as bytes."""
    nvec = len(dots)
    v32 = ir.VectorType(_I32, vl)
    h64 = ir.VectorType(_I64, vl // 2)
    v16s = ir.VectorType(_I16, 16)
    v32b = ir.VectorType(_I8, 32)
    c32 = ir.Constant(h64, [32] * (vl // 2))
    mod = builder.module
    packssdw = mod.declare_intrinsic("llvm.x86.avx2.packssdw", fnty=ir.FunctionType(v16s, [v32, v32]))
    packuswb = mod.declare_intrinsic("llvm.x86.avx2.packuswb", fnty=ir.FunctionType(v32b, [v16s, v16s]))
    vals = []
    for j in range(nvec):
        me, mo, be, bo, se, so, zd = consts[j]
        a64 = builder.bitcast(dots[j], h64)
        a_even = _low_sext(builder, a64)
        a_odd = builder.ashr(a64, c32)
        even = builder.lshr(builder.add(builder.mul(a_even, me), be), se)
        odd = builder.lshr(builder.add(builder.mul(a_odd, mo), bo), so)
        v = builder.bitcast(builder.or_(even, builder.shl(odd, c32)), v32)
        vals.append(builder.add(v, zd))
    second = vals[1] if nvec == 2 else vals[0]
    packed = builder.call(packuswb, [builder.call(packssdw, [vals[0], second])] * 2)
    # dwords of `packed`: [v0 0-3, v1 0-3, v0 0-3, v1 0-3 | v0 4-7, v1 4-7, ...]
    order = [0, 4, 1, 5] if nvec == 2 else [0, 4]
    q = builder.shuffle_vector(builder.bitcast(packed, v32), ir.Constant(v32, None),
                               ir.Constant(ir.VectorType(_I32, len(order)), order))
    nb = 4 * len(order)
    bty = ir.VectorType(_I8, nb)
    b = builder.bitcast(q, bty)
    lo_n = lo if nb == 16 else builder.shuffle_vector(
        lo, lo, ir.Constant(ir.VectorType(_I32, nb), list(range(nb))))
    hi_n = hi if nb == 16 else builder.shuffle_vector(
        hi, hi, ir.Constant(ir.VectorType(_I32, nb), list(range(nb))))
    b = builder.select(builder.icmp_unsigned("<", b, lo_n), lo_n, b)
    return builder.select(builder.icmp_unsigned(">", b, hi_n), hi_n, b)


# One intrinsic per row count 1..MR (the last micro-panel of a block may be short).

_uk_avx2_1 = _make_ukernel("avx2", 1, AVX2_NV)
_uk_avx2_2 = _make_ukernel("avx2", 2, AVX2_NV)
_uk_avx2_3 = _make_ukernel("avx2", 3, AVX2_NV)
_uk_avx2_4 = _make_ukernel("avx2", 4, AVX2_NV)
_uk_avx2_5 = _make_ukernel("avx2", 5, AVX2_NV)
_uk_avx2_6 = _make_ukernel("avx2", 6, AVX2_NV)


_uk_avx2q_1 = _make_ukernel("avx2q", 1, AVX2_NV)
_uk_avx2q_2 = _make_ukernel("avx2q", 2, AVX2_NV)
_uk_avx2q_3 = _make_ukernel("avx2q", 3, AVX2_NV)
_uk_avx2q_4 = _make_ukernel("avx2q", 4, AVX2_NV)
_uk_avx2q_5 = _make_ukernel("avx2q", 5, AVX2_NV)
_uk_avx2q_6 = _make_ukernel("avx2q", 6, AVX2_NV)

_ukq_v512_1 = _make_ukernel("vnni512", 1, V512_NV, True)
_ukq_v512_2 = _make_ukernel("vnni512", 2, V512_NV, True)
_ukq_v512_3 = _make_ukernel("vnni512", 3, V512_NV, True)
_ukq_v512_4 = _make_ukernel("vnni512", 4, V512_NV, True)
_ukq_v512_5 = _make_ukernel("vnni512", 5, V512_NV, True)
_ukq_v512_6 = _make_ukernel("vnni512", 6, V512_NV, True)
# Full micro-panels against the first 16 / 32 / 48 columns of a 64-column panel: a partial
# panel (M not a multiple of 64: MobileNet's 16..160-channel layers, the 16 or 32 channels left
# of 96 / 144 / 160) would otherwise run all 4 vectors' vpdpbusd, up to 4x the multiply-adds it
# keeps.  Shorter micro-panels keep the 64-column kernels (compile time, as for avx2's 6h).
_ukq_v512_6n1 = _make_ukernel("vnni512", 6, 1, True, bcols=V512_NR)
_ukq_v512_6n2 = _make_ukernel("vnni512", 6, 2, True, bcols=V512_NR)
_ukq_v512_6n3 = _make_ukernel("vnni512", 6, 3, True, bcols=V512_NR)

_ukq_avx2_1 = _make_ukernel("avx2", 1, AVX2_NV, True)
_ukq_avx2_2 = _make_ukernel("avx2", 2, AVX2_NV, True)
_ukq_avx2_3 = _make_ukernel("avx2", 3, AVX2_NV, True)
_ukq_avx2_4 = _make_ukernel("avx2", 4, AVX2_NV, True)
_ukq_avx2_5 = _make_ukernel("avx2", 5, AVX2_NV, True)
_ukq_avx2_6 = _make_ukernel("avx2", 6, AVX2_NV, True)

_ukq_avx2q_1 = _make_ukernel("avx2q", 1, AVX2_NV, True)
_ukq_avx2q_2 = _make_ukernel("avx2q", 2, AVX2_NV, True)
_ukq_avx2q_3 = _make_ukernel("avx2q", 3, AVX2_NV, True)
_ukq_avx2q_4 = _make_ukernel("avx2q", 4, AVX2_NV, True)
_ukq_avx2q_5 = _make_ukernel("avx2q", 5, AVX2_NV, True)
_ukq_avx2q_6 = _make_ukernel("avx2q", 6, AVX2_NV, True)

# Full micro-panels against the left half of a 16-column panel (nst = 1: M is 8 more than a
# multiple of 16, e.g. 24 or 40 channels): 6 x 8 tiles, half the multiply-adds of a 6 x 16 tile
# whose right half would be discarded (a 1x1 conv 56x56x144 -> 24: 0.120 -> 0.099 ms).
# Shorter micro-panels keep the 16-column kernels: an intrinsic per row count would cost
# compile time for the few rows at the end of a block.
_ukq_avx2_6h = _make_ukernel("avx2", 6, 1, True, bcols=AVX2_NR)
_ukq_avx2q_6h = _make_ukernel("avx2q", 6, 1, True, bcols=AVX2_NR)


@njit(**JIT)
def _ukernel_avx2(mr, a, aoff, ars, ags, b, boff, ng, c):
    if mr == 6:
        _uk_avx2_6(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 5:
        _uk_avx2_5(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 4:
        _uk_avx2_4(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 3:
        _uk_avx2_3(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 2:
        _uk_avx2_2(a, aoff, ars, ags, b, boff, ng, c)
    else:
        _uk_avx2_1(a, aoff, ars, ags, b, boff, ng, c)


@njit(**JIT)
def _ukernel_avx2q(mr, a, aoff, ars, ags, b, boff, ng, c):
    if mr == 6:
        _uk_avx2q_6(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 5:
        _uk_avx2q_5(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 4:
        _uk_avx2q_4(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 3:
        _uk_avx2q_3(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 2:
        _uk_avx2q_2(a, aoff, ars, ags, b, boff, ng, c)
    else:
        _uk_avx2q_1(a, aoff, ars, ags, b, boff, ng, c)


@njit(**JIT)
def _ukernelq_v512(mr, a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx,
                   zy, lo, hi, ncols):
    if mr == 6 and ncols > 48:
        _ukq_v512_6(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy, lo,
                    hi, ncols)
    elif mr == 6 and ncols > 32:
        _ukq_v512_6n3(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy,
                      lo, hi, ncols)
    elif mr == 6 and ncols > 16:
        _ukq_v512_6n2(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy,
                      lo, hi, ncols)
    elif mr == 6:
        _ukq_v512_6n1(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy,
                      lo, hi, ncols)
    elif mr == 5:
        _ukq_v512_5(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy, lo,
                    hi, ncols)
    elif mr == 4:
        _ukq_v512_4(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy, lo,
                    hi, ncols)
    elif mr == 3:
        _ukq_v512_3(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy, lo,
                    hi, ncols)
    elif mr == 2:
        _ukq_v512_2(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy, lo,
                    hi, ncols)
    else:
        _ukq_v512_1(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, wsum, bias, mult, shift, m0, zx, zy, lo,
                    hi, ncols)


# Inlined into the two avx2 workers at the Numba IR level: the call with its ~40 argument words
# cost ~9% on small-K GEMMs (12544x16x96: 0.92 -> 0.83 ms), for ~1.6 s more compile.
@njit(inline="always", **JIT)
def _ukernelq_avx2(mr, a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi):
    """The fused avx2 micro-kernel for mr rows; nst: valid columns of the panel (1..16)."""
    if mr == 6 and nst <= AVX2_VL:
        _ukq_avx2_6h(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 6:
        _ukq_avx2_6(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 5:
        _ukq_avx2_5(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 4:
        _ukq_avx2_4(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 3:
        _ukq_avx2_3(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 2:
        _ukq_avx2_2(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    else:
        _ukq_avx2_1(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)


@njit(inline="always", **JIT)
def _ukernelq_avx2q(mr, a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi):
    if mr == 6 and nst <= AVX2_VL:
        _ukq_avx2q_6h(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 6:
        _ukq_avx2q_6(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 5:
        _ukq_avx2q_5(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 4:
        _ukq_avx2q_4(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 3:
        _ukq_avx2q_3(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    elif mr == 2:
        _ukq_avx2q_2(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)
    else:
        _ukq_avx2q_1(a, aoff, ars, ags, b, boff, ng, y, yoff, ys, tab, toff, m0, nst, lo, hi)


# ----------------------------------------------------------------------------- plan-time packing
@njit(**JIT)
def padded_groups(K, G):
    """Number of k-groups after padding K to a multiple of G * UNROLL."""
    step = G * UNROLL
    return ((K + step - 1) // step) * step // G


def pack_b(w, isa):
    """w: int8[M, K] -> packed bytes int8[:] for `isa` ("vnni512" or "avx2"), wsum int32[M]."""
    w = np.ascontiguousarray(w, dtype=np.int8)
    if w.ndim != 2:
        raise ValueError("w must be [M, K]")
    M, K = w.shape
    if isa == "vnni512":
        G, NR, dt = V512_G, V512_NR, np.int8
    elif isa == "avx2":
        G, NR, dt = AVX2_G, AVX2_NR, np.int8
    elif isa == "avx2q":
        G, NR, dt = AVX2Q_G, AVX2_NR, np.int8
        if w.size and (w.min() < QUAD_W_MIN or w.max() > QUAD_W_MAX):
            raise ValueError("the avx2q layout needs weights in [-64, 63]")
    else:
        raise ValueError(isa)
    ng = padded_groups(K, G)
    npan = max(1, (M + NR - 1) // NR)
    wp = np.zeros((npan * NR, ng * G), dtype=dt)
    wp[:M, :K] = w
    # [panel, NR, group, G] -> [panel, group, NR, G]
    wp = wp.reshape(npan, NR, ng, G).transpose(0, 2, 1, 3)
    packed = np.ascontiguousarray(wp).view(np.int8).reshape(-1)
    wsum = w.astype(np.int64).sum(axis=1).astype(np.int32)
    return packed, wsum


def avx2_isa(w):
    """The avx2 path's kernel for int8 weights w: "avx2q" (vpmaddubsw, exact because every
    weight lies in [-64, 63]) or "avx2" (vpmaddwd)."""
    w = np.asarray(w)
    if w.size and QUAD_W_MIN <= int(w.min()) and int(w.max()) <= QUAD_W_MAX:
        return "avx2q"
    return "avx2"


def with_layout_header(packed, isa):
    """The avx2 path's weights: a LAYOUT_HEADER-byte header naming the layout, then `packed`
    (pack_b(..., isa) of every group, concatenated)."""
    head = np.zeros(LAYOUT_HEADER, np.int8)
    head[0] = LAYOUT_QUADS if isa == "avx2q" else LAYOUT_PAIRS
    return np.concatenate([head, np.asarray(packed, np.int8).reshape(-1)])


def pack_for_path(w, path):
    """Plan time, a fast path's GEMM weights: int8 w[M, K] -> (wpack, wsum).  vnni512: pack_b;
    avx2: the layout avx2_isa(w) allows, behind its header."""
    if path == "avx2":
        isa = avx2_isa(w)
        packed, wsum = pack_b(w, isa)
        return with_layout_header(packed, isa), wsum
    return pack_b(w, path)


@njit(**JIT)
def avx2_groups(wpack, K):
    """(quads, G, ng) of the avx2 path's weights wpack for dot length K: whether the header
    names the avx2q layout, its k-group size and the number of k-groups per panel."""
    quads = wpack[0] == LAYOUT_QUADS
    G = AVX2Q_G if quads else AVX2_G
    return quads, G, padded_groups(K, G)


TABLE_HEADER = 8      # flag (1: usable), z_x, z_y (u8), a pad byte, K (u32 little-endian)
TABLE_BLOCK = 224     # bytes of constants per 8 output channels (see requant_table)
TABLE_PAD_BLOCKS = 2  # zero blocks past the last channel: a 16-column panel never reads past them


@njit(**JIT)
def table_blocks(M):
    """Number of TABLE_BLOCKs in requant_table for M output channels."""
    return (M + AVX2_VL - 1) // AVX2_VL + TABLE_PAD_BLOCKS


def requant_table(K, wsum, bias, mult, shift, z_x, z_y):
    """The avx2 fused epilogue's per-channel constants, computed once at plan time and appended
    to the packed weights (append_requant_table): int8 bytes
        [flag u8, z_x u8, z_y u8, pad, K u32] then one TABLE_BLOCK per 8 channels c0 .. c0+7:
        [M0 i64 of c0, c0+2, c0+4, c0+6][M0 i64 of c0+1, c0+3, c0+5, c0+7]   (even, odd lanes)
        [BC even][BC odd][SH even][SH odd] (i64 x 4 each)  [ZD i32 of c0 .. c0+7]
    (TABLE_PAD_BLOCKS zero blocks follow the last channel) such that for every raw dot
    d = Σ_k x·w with |d| ≤ K·255·127 (x in [0, 255], w in [-127, 127]):
        ((d·M0 + BC) mod 2^64) in [0, 2^62),  ((d·M0 + BC) >> SH) + ZD  is exactly
        requantize(d − z_x·wsum + bias, M0, SH) + z_y   (spec 3.3, round half up),
    with BC = corr·M0 + 2^(SH−1) + D·2^SH, corr = bias − z_x·wsum, ZD = z_y − D and D ≥ 0 the
    smallest offset that makes every numerator non-negative.  The flag is 0 when some channel
    cannot be represented that way (a shift above 60, |corr| + K·255·127 ≥ 2^32, a numerator
    range of 2^61 or more, or an offset / shifted value of 2^30 or more: never for the
    multipliers of spec 3.2 and realistic K); the kernels then use the scalar epilogue.
    Exact integer arithmetic (Python ints)."""
    M = len(bias)
    n = AVX2_VL * table_blocks(M)
    amax = int(K) * 255 * 127
    m0s = np.zeros(n, np.int64)
    bcs = np.zeros(n, np.int64)
    shs = np.zeros(n, np.int64)
    zds = np.zeros(n, np.int32)
    ok = True
    for c in range(M):
        corr = int(bias[c]) - int(z_x) * int(wsum[c])
        good, bc, d = offset_requant(corr, amax, int(mult[c]), int(shift[c]))
        if not good:
            ok = False
            break
        m0s[c], bcs[c], shs[c], zds[c] = int(mult[c]), bc, int(shift[c]), int(z_y) - d
    head = np.zeros(TABLE_HEADER, np.uint8)
    head[0] = 1 if ok else 0
    head[1], head[2] = int(z_x), int(z_y)
    head[4:8] = np.array([K], np.uint32).view(np.uint8)

    def lanes(a):            # [blocks, 8] -> [blocks, even 4 | odd 4] as bytes
        a = a.reshape(-1, AVX2_VL)
        return np.concatenate([a[:, 0::2], a[:, 1::2]], axis=1).view(np.int8)

    blocks = np.concatenate([lanes(m0s), lanes(bcs), lanes(shs), zds.reshape(-1, AVX2_VL).view(np.int8)],
                            axis=1)
    assert blocks.shape[1] == TABLE_BLOCK
    return np.concatenate([head.view(np.int8), blocks.reshape(-1)])


def append_requant_table(wpack, K, wsum, bias, mult, shift, z_x, z_y):
    """wpack (packed for the avx2 path) followed by requant_table(...)."""
    return np.concatenate([np.asarray(wpack, np.int8).reshape(-1),
                           requant_table(K, wsum, bias, mult, shift, z_x, z_y)])


def with_requant_table(wpack, path, K, wsum, bias, mult, shift, z_x, z_y):
    """Plan time, for a GEMM or a non-depthwise conv packed for `path` (dot length K per
    output): the packed weights the path's kernels read, i.e. with the avx2 epilogue table
    appended on the x86 paths (without it the avx2 kernels fall back to the scalar epilogue;
    on the vnni512 path only the direct grouped kernel, an avx2 kernel, reads it) and
    unchanged on the portable one."""
    if path not in ("avx2", "vnni512"):
        return wpack
    return append_requant_table(wpack, K, wsum, bias, mult, shift, z_x, z_y)


@njit(**JIT)
def table_offset(wpack, bbytes, M, K, z_x, z_y):
    """Byte offset of the first block of the requant table that follows `bbytes` bytes of packed B
    in wpack; -1 when wpack has no table, its flag says it is unusable, or it was built for
    another K or other zero points than this call's."""
    if wpack.size != bbytes + TABLE_HEADER + TABLE_BLOCK * table_blocks(M):
        return -1
    h = wpack[bbytes:bbytes + TABLE_HEADER].view(np.uint8)
    k = np.int64(h[4]) | (np.int64(h[5]) << 8) | (np.int64(h[6]) << 16) | (np.int64(h[7]) << 24)
    if h[0] != 1 or np.int64(h[1]) != z_x or np.int64(h[2]) != z_y or k != K:
        return -1
    return bbytes + TABLE_HEADER


# ----------------------------------------------------------------------------- run-time helpers
@njit(**JIT)
def plan_mc(P, ng, MR):
    """Rows of A packed at once per thread: a multiple of MR, ~A_BLOCK_BYTES of packed A."""
    mc = (A_BLOCK_BYTES // (ng * 4 * MR)) * MR
    if mc < MR:
        mc = MR
    pr = ((P + MR - 1) // MR) * MR
    if mc > pr:
        mc = pr
    return mc


@njit(**JIT)
def thread_scratch_bytes(P, ng, MR, NR):
    """Bytes of u8 scratch one thread needs: int32 tile (MR x NR) + packed A block, 64-aligned."""
    tile = ((MR * NR * 4 + 63) // 64) * 64
    apack = ((plan_mc(P, ng, MR) * ng * 4 + 63) // 64) * 64
    return tile + apack


@njit(**JIT)
def _pack_a(x, p0, rows, K, ng, widen, MR, apack, base):
    """Pack rows [p0, p0+rows) of x (u8[P, K]) row-major at apack[base:]: row q at base + q·4·ng
    bytes, k-group g at 4·g within it (micro-kernel strides ars = 4·ng, ags = 4).

    widen=False: group = 4 u8 (vnni512); widen=True: group = 2 u16, zero-extended (avx2).  The
    copies run through slice views indexed from 0, so LLVM vectorizes them.  k past K keeps
    stale bytes (the packed B is zero there); rows past `rows` are never read."""
    rb = 4 * ng
    if K >= 8:                             # fixed-size vector pieces (rowcopy.py)
        if widen:
            copy_runs(apack[base:base + rows * rb].view(np.uint16), 0, 2 * ng, x, p0 * K, K, 0,
                      1, K, rows)
        else:
            copy_runs(apack, base, rb, x, p0 * K, K, 0, 1, K, rows)
        return
    if widen:
        dst = apack[base:base + rows * rb].view(np.uint16)     # one view for the block
        for q in range(rows):
            drow = dst[q * 2 * ng:q * 2 * ng + K]
            srow = x[p0 + q]
            for k in range(K):
                drow[k] = srow[k]
    else:
        for q in range(rows):
            drow8 = apack[base + q * rb:base + q * rb + K]
            srow = x[p0 + q]
            for k in range(K):
                drow8[k] = srow[k]


@njit(**JIT)
def _epilogue(tile, NR, rows, cols, y, p0, m0, wsum, z_x, bias, mult, shift, z_y, act_min,
              act_max):
    """y[p0+r, m0+j] = clamp(requantize(dot - z_x*wsum + bias) + z_y) for the tile's valid part.

    Column-outer: the per-channel constants are loaded once per column of the tile."""
    zx = np.int64(z_x)
    zy = np.int64(z_y)
    lo = np.int64(act_min)
    hi = np.int64(act_max)
    for j in range(cols):
        m = m0 + j
        corr = np.int64(bias[m]) - zx * np.int64(wsum[m])
        mu = np.int64(mult[m])
        n = np.int64(shift[m])
        rnd = np.int64(1) << (n - 1)
        for r in range(rows):
            v = (((np.int64(tile[r * NR + j]) + corr) * mu + rnd) >> n) + zy
            v = min(max(v, lo), hi)
            y[p0 + r, m] = np.uint8(v)


@njit(**JIT)
def _split(n, parts, i):
    """[lo, hi) of the i-th of `parts` near-equal chunks of range(n)."""
    q = n // parts
    rem = n % parts
    lo = i * q + min(i, rem)
    hi = lo + q + (1 if i < rem else 0)
    return lo, hi


@njit(**JIT)
def fast_threads(P, K, M, MR, NR, nthreads):
    """(nt, split_rows) for the packed GEMM/conv paths: split pixel micro-panels (rows) or
    output-channel panels between threads, whichever leaves the busiest thread less work.

    Cost model, in row-panels (one row of A against one NR-column panel of B over all of K):
    a micro-kernel call with mr rows costs mr + CALL_ROWS (loading and widening its B panel
    costs about CALL_ROWS rows of multiply-adds), and packing a micro-panel of A about half a
    full call.  A row split gives each thread whole micro-panels against every panel; a
    channel split packs every row on every thread.  The channel split wins where few
    micro-panels divide unevenly, e.g. 1x1 convs on 7x7 maps at batch 1 (P = 49 is 9
    micro-panels, 5/4 on 2 threads), and where the last micro-panel is short (P = 8 is 6 + 2
    rows: a row split leaves one thread 6 rows against all of B, which it must also stream
    from memory, a channel split 8 rows against half of B)."""
    nt = max(nthreads, 1)
    if P * K * M < PAR_MIN_MACS_FAST:
        nt = 1
    nrow = (P + MR - 1) // MR
    npan = (M + NR - 1) // NR
    if nt == 1:
        return 1, True
    pack = (MR + CALL_ROWS) // 2                      # packing one micro-panel
    per_thread = -(-nrow // nt)                       # micro-panels of the busiest thread
    rows_busiest = min(per_thread * MR, P)
    cost_rows = (rows_busiest + CALL_ROWS * per_thread) * npan + pack * per_thread
    cost_cols = (P + CALL_ROWS * nrow) * (-(-npan // nt)) + pack * nrow
    if cost_rows <= cost_cols:
        return min(nt, nrow), True
    return min(nt, npan), False


@njit(**JIT)
def plan_threads(P, K, M, MR, NR, nthreads):
    """(nt, split_rows) for the portable GEMM (no A packing): rows when there are at least
    4 row blocks per thread, else output panels."""
    nt = nthreads
    if P * K * M < PAR_MIN_MACS:
        nt = 1
    npan = (M + NR - 1) // NR
    nrow = (P + MR - 1) // MR
    split_rows = nrow >= 4 * nt
    if split_rows:
        nt = min(nt, nrow)
    else:
        nt = min(nt, npan)
    return max(nt, 1), split_rows


@njit(**JIT)
def work_blocks(MR, NR, P, M, mc, t, nt, split_rows):
    """(nblk, j_lo, j_hi): the number of row blocks of the output (block_rows) and the panels
    [j_lo, j_hi) of thread t.  split_rows: every thread computes all panels of the blocks it
    takes from a shared counter (_jit.fetch_add), at least two per thread and a multiple of
    the thread count, of near-equal size, so equal threads finish together and a slower one
    (a busy or shared core) takes fewer blocks instead of holding the others at the end.
    Else the threads split the panels statically and each computes every block.  Blocks
    never exceed mc rows (the packed A block).  Which thread computes a block never changes
    how it is computed."""
    npan = (M + NR - 1) // NR
    nrow = (P + MR - 1) // MR
    mcp = max(1, mc // MR)                                 # micro-panels per packed A block
    fewest = (nrow + mcp - 1) // mcp
    if split_rows:
        k = max(2, (fewest + nt - 1) // nt)
        return max(fewest, min(nt * k, nrow)), 0, npan
    j_lo, j_hi = _split(npan, nt, t)
    return fewest, j_lo, j_hi


@njit(**JIT)
def block_rows(b, nblk, P, MR):
    """(first row, rows) of row block b of nblk: micro-panels split as evenly as _split."""
    lo, hi = _split((P + MR - 1) // MR, nblk, b)
    return lo * MR, min(hi * MR, P) - lo * MR


# The two workers differ only in the micro-kernel they call (a function passed as a value would
# make the drivers uncacheable, and a runtime branch would compile both kernels).
@njit(**JIT)
def _worker_v512(t, nt, split_rows, x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y,
                 act_min, act_max, y, scratch, per, ctr):
    MR, NR = V512_MR, V512_NR
    P = x.shape[0]
    ng = padded_groups(K, V512_G)
    base = t * per
    abase = base + ((MR * NR * 4 + 63) // 64) * 64     # (the slice's tile bytes: avx2 only)
    mc = plan_mc(P, ng, MR)
    ys = y.strides[0]
    nblk, j_lo, j_hi = work_blocks(MR, NR, P, M, mc, t, nt, split_rows)
    for i in range(nblk):
        b = fetch_add(ctr, 0) if split_rows else i
        if b >= nblk:
            break
        pc, rows = block_rows(b, nblk, P, MR)
        _pack_a(x, pc, rows, K, ng, False, MR, scratch, abase)
        for j in range(j_lo, j_hi):
            cols = min(NR, M - j * NR)
            for ip in range((rows + MR - 1) // MR):
                mr = min(MR, rows - ip * MR)
                aoff = abase + ip * MR * ng * 4
                boff = j * ng * NR * 4
                p0 = pc + ip * MR
                _ukernelq_v512(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, y, p0 * ys + j * NR, ys,
                               wsum, bias, mult, shift, j * NR, z_x, z_y, act_min, act_max, cols)


@njit(**JIT)
def _worker_avx2(t, nt, split_rows, x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y,
                 act_min, act_max, y, scratch, per, ctr):
    """Both avx2 layouts (avx2_groups): A packed as u16 pairs (avx2) or u8 quads (avx2q), in
    the same per-thread scratch (mc from the pairs layout, which needs the more bytes)."""
    MR, NR = AVX2_MR, AVX2_NR
    P = x.shape[0]
    quads, G, ng = avx2_groups(wpack, K)
    base = t * per
    tile = scratch[base:base + MR * NR * 4].view(np.int32)
    abase = base + ((MR * NR * 4 + 63) // 64) * 64
    mc = plan_mc(P, padded_groups(K, AVX2_G), MR)
    ys = y.strides[0]
    toff = table_offset(wpack, LAYOUT_HEADER + max(1, (M + NR - 1) // NR) * NR * ng * G, M, K,
                        z_x, z_y)
    nblk, j_lo, j_hi = work_blocks(MR, NR, P, M, mc, t, nt, split_rows)
    for i in range(nblk):
        b = fetch_add(ctr, 0) if split_rows else i
        if b >= nblk:
            break
        pc, rows = block_rows(b, nblk, P, MR)
        _pack_a(x, pc, rows, K, ng, not quads, MR, scratch, abase)
        for j in range(j_lo, j_hi):
            cols = min(NR, M - j * NR)
            for ip in range((rows + MR - 1) // MR):
                mr = min(MR, rows - ip * MR)
                aoff = abase + ip * MR * ng * 4
                boff = LAYOUT_HEADER + j * ng * NR * G
                p0 = pc + ip * MR
                if toff >= 0:
                    if quads:
                        _ukernelq_avx2q(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, y,
                                        p0 * ys + j * NR, ys, wpack, toff, j * NR, cols,
                                        act_min, act_max)
                    else:
                        _ukernelq_avx2(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, y,
                                       p0 * ys + j * NR, ys, wpack, toff, j * NR, cols,
                                       act_min, act_max)
                else:
                    if quads:
                        _ukernel_avx2q(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, tile)
                    else:
                        _ukernel_avx2(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, tile)
                    _epilogue(tile, NR, mr, cols, y, p0, j * NR, wsum, z_x, bias, mult, shift,
                              z_y, act_min, act_max)


@njit(**JIT)
def scratch_size(P, K, M, nthreads, isa512):
    """Bytes of u8 scratch for gemm_*(P, K, M) on up to nthreads threads."""
    if isa512:
        MR, NR, G = V512_MR, V512_NR, V512_G
    else:
        MR, NR, G = AVX2_MR, AVX2_NR, AVX2_G
    ng = padded_groups(K, G)
    return max(nthreads, 1) * thread_scratch_bytes(max(P, 1), ng, MR, NR)


@njit(**PJIT)
def _par_vnni512(nt, split_rows, x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min,
                 act_max, y, scratch, per, ctr):
    for t in prange(nt):
        xcall(_worker_v512, np.int64(t), nt, split_rows, x, z_x, wpack, wsum, M, K, bias, mult,
              shift, z_y, act_min, act_max, y, scratch, per, ctr)


@njit(**PJIT)
def _par_avx2(nt, split_rows, x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min,
              act_max, y, scratch, per, ctr):
    for t in prange(nt):
        xcall(_worker_avx2, np.int64(t), nt, split_rows, x, z_x, wpack, wsum, M, K, bias, mult,
              shift, z_y, act_min, act_max, y, scratch, per, ctr)


# Entry points: serial functions that enter a parallel region only when more than one thread
# has work (a region costs a thread wake-up and a barrier, ~10 us idle, milliseconds on an
# oversubscribed machine).  The thread count is the one the scratch was sized for.
@njit(**JIT)
def gemm_vnni512(x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min, act_max, y, scratch):
    """AVX-512 VNNI path (call only when cpu.has_vnni512()).  See nqrt/kernels/gemm_fast.py."""
    P = x.shape[0]
    per = thread_scratch_bytes(P, padded_groups(K, V512_G), V512_MR, V512_NR)
    nt, split_rows = fast_threads(P, K, M, V512_MR, V512_NR, scratch.size // per)
    ctr = np.zeros(8, np.int64)               # the shared block counter (work_blocks)
    if nt == 1:
        xcall(_worker_v512, 0, 1, split_rows, x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y,
                     act_min, act_max, y, scratch, per, ctr)
    else:
        xcall(_par_vnni512, nt, split_rows, x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y,
              act_min, act_max, y, scratch, per, ctr)


@njit(**JIT)
def gemm_avx2(x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min, act_max, y, scratch):
    """AVX2 path (exact int16 vpmaddwd).  See nqrt/kernels/gemm_fast.py."""
    P = x.shape[0]
    per = thread_scratch_bytes(P, padded_groups(K, AVX2_G), AVX2_MR, AVX2_NR)
    nt, split_rows = fast_threads(P, K, M, AVX2_MR, AVX2_NR, scratch.size // per)
    ctr = np.zeros(8, np.int64)               # the shared block counter (work_blocks)
    if nt == 1:
        xcall(_worker_avx2, 0, 1, split_rows, x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y,
                     act_min, act_max, y, scratch, per, ctr)
    else:
        xcall(_par_avx2, nt, split_rows, x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min,
                  act_max, y, scratch, per, ctr)
