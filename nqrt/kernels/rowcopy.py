"""Short-row copies for the packers of the fast GEMM / conv paths (generic LLVM vector IR, any
ISA): rows of 8..32 bytes copied as two fixed-size vector copies overlapping in the middle,
u8 -> u8 or zero-extending u8 -> u16 (the avx2 micro-kernels' int16 operands).  A loop with a
run-time trip count of e.g. 21 would leave the last values to a scalar tail."""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def copy_run_8_32(typingctx, dst, src, n):
    """dst[:n] = src[:n] for 8 <= n <= 32 (src u8; dst u8, or u16 zero-extending), as two
    fixed-size vector copies (16 values if n >= 16, else 8) overlapping in the middle; no
    access outside [0, n).  A loop with a run-time trip count of e.g. 21 (a 7-tap stem row of
    3 channels) would leave the last values to a scalar tail."""
    sig = types.void(dst, src, n)

    def codegen(context, builder, signature, args):
        d_, s_, n_ = args
        delt = ir.IntType(signature.args[0].dtype.bitwidth)
        dp = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=d_).data
        sp = cgutils.create_struct_proxy(signature.args[1])(context, builder, value=s_).data
        dp = builder.bitcast(dp, delt.as_pointer())
        sp = builder.bitcast(sp, ir.IntType(8).as_pointer())

        def copy(width, off):
            vs = ir.VectorType(ir.IntType(8), width)
            vd = ir.VectorType(delt, width)
            v = builder.load(builder.bitcast(builder.gep(sp, [off]), vs.as_pointer()), align=1)
            if delt.width != 8:
                v = builder.zext(v, vd)
            builder.store(v, builder.bitcast(builder.gep(dp, [off]), vd.as_pointer()), align=1)

        wide = builder.icmp_signed(">=", n_, ir.Constant(n_.type, 16))
        with builder.if_else(wide) as (then, other):
            with then:
                copy(16, ir.Constant(n_.type, 0))
                copy(16, builder.sub(n_, ir.Constant(n_.type, 16)))
            with other:
                copy(8, ir.Constant(n_.type, 0))
                copy(8, builder.sub(n_, ir.Constant(n_.type, 8)))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def copy_runs(typingctx, dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx):
    """For p < npx, i < kh: dst[doff + p·rowlen + i·n + q] = src[soff + p·pstep + i·rstep + q]
    for q < n, 8 <= n <= 32 (src u8; dst u8, or u16 zero-extending): the im2col rows of npx
    neighbouring output pixels whose windows lie inside x (kh runs of n = kw·C contiguous
    bytes each), with copy_run_8_32's two overlapping fixed-size copies per run and no
    per-run bounds logic (a 7x7 stem window of 3 channels: ~80 -> ~20 cycles per pixel)."""
    sig = types.void(dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx)

    def codegen(context, builder, signature, args):
        d_, doff_, rowlen_, s_, soff_, pstep_, rstep_, kh_, n_, npx_ = args
        delt = ir.IntType(signature.args[0].dtype.bitwidth)
        dp = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=d_).data
        sp = cgutils.create_struct_proxy(signature.args[3])(context, builder, value=s_).data
        dp = builder.gep(builder.bitcast(dp, delt.as_pointer()), [doff_])
        sp = builder.gep(builder.bitcast(sp, ir.IntType(8).as_pointer()), [soff_])
        i64 = ir.IntType(64)

        def copy(width, so, do):
            vs = ir.VectorType(ir.IntType(8), width)
            vd = ir.VectorType(delt, width)
            v = builder.load(builder.bitcast(builder.gep(sp, [so]), vs.as_pointer()), align=1)
            if delt.width != 8:
                v = builder.zext(v, vd)
            builder.store(v, builder.bitcast(builder.gep(dp, [do]), vd.as_pointer()), align=1)

        def nest(width):
            """for p < npx: for i < kh: two copies of `width` (at 0 and n − width)."""
            tail = builder.sub(n_, ir.Constant(i64, width))
            pre = builder.block
            ploop = builder.append_basic_block("win.p")
            iloop = builder.append_basic_block("win.i")
            pnext = builder.append_basic_block("win.pnext")
            end = builder.append_basic_block("win.end")
            builder.cbranch(builder.icmp_signed(">", npx_, ir.Constant(i64, 0)), ploop, end)
            builder.position_at_end(ploop)
            p = builder.phi(i64)
            p.add_incoming(ir.Constant(i64, 0), pre)
            sbase = builder.mul(p, pstep_)
            dbase = builder.mul(p, rowlen_)
            builder.branch(iloop)
            builder.position_at_end(iloop)
            i = builder.phi(i64)
            i.add_incoming(ir.Constant(i64, 0), ploop)
            so = builder.add(sbase, builder.mul(i, rstep_))
            do = builder.add(dbase, builder.mul(i, n_))
            copy(width, so, do)
            copy(width, builder.add(so, tail), builder.add(do, tail))
            inext = builder.add(i, ir.Constant(i64, 1))
            i.add_incoming(inext, iloop)
            builder.cbranch(builder.icmp_signed("<", inext, kh_), iloop, pnext)
            builder.position_at_end(pnext)
            pn = builder.add(p, ir.Constant(i64, 1))
            p.add_incoming(pn, pnext)
            builder.cbranch(builder.icmp_signed("<", pn, npx_), ploop, end)
            builder.position_at_end(end)

        wide = builder.icmp_signed(">=", n_, ir.Constant(i64, 16))
        with builder.if_else(wide) as (then, other):
            with then:
                nest(16)
            with other:
                nest(8)
        return context.get_dummy_value()

    return sig, codegen
