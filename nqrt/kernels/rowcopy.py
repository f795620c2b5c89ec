"""Row copies for the packers of the fast GEMM / conv paths (generic LLVM vector IR, any ISA):
runs of 8 or more bytes copied in fixed-size vector pieces, the last one overlapping the one
before it, u8 -> u8 or zero-extending u8 -> u16 (the avx2 micro-kernels' int16 operands).  A
loop with a run-time trip count (e.g. 21 bytes: a 7-tap stem row of 3 channels) would leave
the last values to a scalar tail, and a Numba loop over slices adds bounds logic per row."""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def copy_runs(typingctx, dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx):
    """For p < npx, i < kh: dst[doff + p·rowlen + i·n + q] = src[soff + p·pstep + i·rstep + q]
    for q < n, n >= 1 (src u8; dst u8, or u16 zero-extending): the im2col rows of npx
    neighbouring output pixels whose windows lie inside x (kh runs of n = kw·C contiguous
    bytes each), or npx rows of a GEMM operand (kh = 1).  Each run is copied in 16-value
    pieces, the last one ending at n (overlapping the one before it: no scalar tail), or as
    two overlapping 8-value pieces when 8 <= n < 16, or value by value when n < 8 (a 3x3
    window of one channel: 3 values per row); no per-run bounds logic (a 7x7 stem window of
    3 channels: ~80 -> ~20 cycles per pixel).  No access outside the runs."""
    sig = types.void(dst, doff, rowlen, src, soff, pstep, rstep, kh, n, npx)

    def codegen(context, builder, signature, args):
        d_, doff_, rowlen_, s_, soff_, pstep_, rstep_, kh_, n_, npx_ = args
        delt = ir.IntType(signature.args[0].dtype.bitwidth)
        dp = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=d_).data
        sp = cgutils.create_struct_proxy(signature.args[3])(context, builder, value=s_).data
        dp = builder.gep(builder.bitcast(dp, delt.as_pointer()), [doff_])
        sp = builder.gep(builder.bitcast(sp, ir.IntType(8).as_pointer()), [soff_])
        i64 = ir.IntType(64)

        def const(v):
            return ir.Constant(i64, v)

        def copy(width, so, do):
            vs = ir.VectorType(ir.IntType(8), width)
            vd = ir.VectorType(delt, width)
            v = builder.load(builder.bitcast(builder.gep(sp, [so]), vs.as_pointer()), align=1)
            if delt.width != 8:
                v = builder.zext(v, vd)
            builder.store(v, builder.bitcast(builder.gep(dp, [do]), vd.as_pointer()), align=1)

        def run_scalar(so, do):
            """One run of n < 8 values, one at a time (none if n <= 0)."""
            pre = builder.block
            body = builder.append_basic_block("run.value")
            end = builder.append_basic_block("run.done")
            builder.cbranch(builder.icmp_signed(">", n_, const(0)), body, end)
            builder.position_at_end(body)
            c = builder.phi(i64)
            c.add_incoming(const(0), pre)
            v = builder.load(builder.gep(sp, [builder.add(so, c)]))
            if delt.width != 8:
                v = builder.zext(v, delt)
            builder.store(v, builder.gep(dp, [builder.add(do, c)]))
            cn = builder.add(c, const(1))
            c.add_incoming(cn, body)
            builder.cbranch(builder.icmp_signed("<", cn, n_), body, end)
            builder.position_at_end(end)

        def run(width, so, do, pieces):
            """One run of n values from so to do: pieces of `width` at 0, width, ... below
            n − width (pieces=True; else only the one at 0: n <= 2·width), then one at
            n − width."""
            last = builder.sub(n_, const(width))
            if not pieces:
                copy(width, so, do)
                copy(width, builder.add(so, last), builder.add(do, last))
                return
            pre = builder.block
            body = builder.append_basic_block("run.piece")
            end = builder.append_basic_block("run.last")
            builder.cbranch(builder.icmp_signed(">", last, const(0)), body, end)
            builder.position_at_end(body)
            c = builder.phi(i64)
            c.add_incoming(const(0), pre)
            copy(width, builder.add(so, c), builder.add(do, c))
            cn = builder.add(c, const(width))
            c.add_incoming(cn, body)
            builder.cbranch(builder.icmp_signed("<", cn, last), body, end)
            builder.position_at_end(end)
            copy(width, builder.add(so, last), builder.add(do, last))

        def nest(width, pieces):
            """for p < npx: for i < kh: run(width, pieces)."""
            pre = builder.block
            ploop = builder.append_basic_block("win.p")
            iloop = builder.append_basic_block("win.i")
            end = builder.append_basic_block("win.end")
            builder.cbranch(builder.icmp_signed(">", npx_, const(0)), ploop, end)
            builder.position_at_end(ploop)
            p = builder.phi(i64)
            p.add_incoming(const(0), pre)
            sbase = builder.mul(p, pstep_)
            dbase = builder.mul(p, rowlen_)
            builder.branch(iloop)
            builder.position_at_end(iloop)
            i = builder.phi(i64)
            i.add_incoming(const(0), ploop)
            so = builder.add(sbase, builder.mul(i, rstep_))
            do = builder.add(dbase, builder.mul(i, n_))
            if width == 1:
                run_scalar(so, do)
            else:
                run(width, so, do, pieces)
            inext = builder.add(i, const(1))
            i.add_incoming(inext, builder.block)
            pnext = builder.append_basic_block("win.pnext")
            builder.cbranch(builder.icmp_signed("<", inext, kh_), iloop, pnext)
            builder.position_at_end(pnext)
            pn = builder.add(p, const(1))
            p.add_incoming(pn, pnext)
            builder.cbranch(builder.icmp_signed("<", pn, npx_), ploop, end)
            builder.position_at_end(end)

        # four loop nests: n < 8 (value by value), 8..15 (two 8-value pieces), 16..32 (two
        # 16-value pieces: a stem's window rows, without a piece loop), longer runs
        with builder.if_else(builder.icmp_signed(">", n_, const(32))) as (longer, short):
            with longer:
                nest(16, True)
            with short:
                with builder.if_else(builder.icmp_signed(">=", n_, const(16))) as (mid, small):
                    with mid:
                        nest(16, False)
                    with small:
                        with builder.if_else(builder.icmp_signed(">=", n_, const(8))) as (eight, tiny):
                            with eight:
                                nest(8, False)
                            with tiny:
                                nest(1, False)
        return context.get_dummy_value()

    return sig, codegen
