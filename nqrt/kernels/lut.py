"""QLut (formats/nq-v1.md 4.9): y = table[x], elementwise through a 256-entry uint8 table.

The table is computed at convert time (float work in the *prepare* step); this kernel only
indexes.  Flat, C-contiguous operands; independent chunks per thread (serial for at most one
chunk; the chunk function is called through xcall), so the result does not depend on the
thread count.

Two kernels, same results: `lut_u8` (portable: eight scalar lookups per 64-bit word) and
`lut_u8_avx2` (x86 hosts with AVX2, i.e. the avx2 and vnni512 GEMM paths): 32 bytes per step
through vpshufb.  vpshufb looks up 16-entry tables (per 128-bit lane, by the index's low four
bits) and yields 0 where the index byte has bit 7 set.  The 256-entry table is 16 slices
T_h = table[16h : 16h+16], and table[x] = T_h[x & 15] for h = x >> 4:
  * the 16 lookups T_h[x & 15] come from 8 pairs (T_h, T_{h+8}), h < 8: with i0 = x & 0x8F
    (zero where bit 7 is set) and i1 = i0 XOR 0x80 (zero where it is clear),
    vpshufb(T_h, i0) OR vpshufb(T_{h+8}, i1) is the lookup in the slice bit 7 of x selects;
  * bits 6, 5, 4 of x then select among the 8 results with vpblendvb (each bit shifted to
    the byte's top bit): 4 + 2 + 1 blends.
16 vpshufb, 8 OR, 7 blends and 5 mask ops per 32 bytes (~0.38 cycles per byte on Zen 3,
against ~0.53 for OR-ing 16 masked lookups and ~1.1 for the scalar words).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, xcall

CHUNK = 1 << 14   # elements per parallel chunk (and the serial threshold)


@njit(**JIT)
def _lut_span(x, table, y, i0, i1):
    """y[i] = table[x[i]] for i0 <= i < i1, eight bytes per step: one 64-bit load of x, eight
    lookups in a zero-extended copy of the table, one 64-bit store (a byte loop runs at ~2.3
    cycles per byte on Zen 3, this at about half of that).  x may be y: each word is read
    before it is written."""
    n8 = (i1 - i0) // 8
    xw = x[i0:i0 + 8 * n8].view(np.uint64)
    yw = y[i0:i0 + 8 * n8].view(np.uint64)
    t = table.astype(np.uint64)
    for j in range(n8):
        v = xw[j]
        yw[j] = (t[v & 0xFF] | (t[(v >> 8) & 0xFF] << 8) | (t[(v >> 16) & 0xFF] << 16)
                 | (t[(v >> 24) & 0xFF] << 24) | (t[(v >> 32) & 0xFF] << 32)
                 | (t[(v >> 40) & 0xFF] << 40) | (t[(v >> 48) & 0xFF] << 48) | (t[v >> 56] << 56))
    for i in range(i0 + 8 * n8, i1):
        y[i] = table[np.int64(x[i])]


@njit(**PJIT)
def lut_u8(x, table, y):
    """y[i] = table[x[i]] for x, y uint8[n] (x may be y) and table uint8[256]."""
    n = x.size
    if n <= CHUNK:
        xcall(_lut_span, x, table, y, 0, n)
        return
    for ci in prange(-(-n // CHUNK)):
        i0 = np.int64(ci) * CHUNK
        xcall(_lut_span, x, table, y, i0, min(n, i0 + CHUNK))


# ----------------------------------------------------------------------------- AVX2 path
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V32 = ir.VectorType(_I8, 32)
_V16W = ir.VectorType(ir.IntType(16), 16)
VEC = 32          # bytes per step of _lut_blocks_avx2


@intrinsic
def _lut_blocks_avx2(typingctx, x, xo, table, y, yo, nblk):
    """y[yo + 32b + k] = table[x[xo + 32b + k]] for b < nblk, k < 32 (vpshufb + vpblendvb, see
    the module docstring); x u8[:], table u8[256], y u8[:].  A block of x is loaded before its block of y
    is stored, so x may be y."""
    sig = types.void(x, xo, table, y, yo, nblk)

    def codegen(context, builder, signature, args):
        x_, xo_, t_, y_, yo_, nb_ = args
        sa = signature.args
        mod = builder.module

        def ptr(aty, val, off):
            data = cgutils.create_struct_proxy(aty)(context, builder, value=val).data
            return builder.gep(builder.bitcast(data, _I8.as_pointer()), [off])

        pshufb = cgutils.get_or_insert_function(
            mod, ir.FunctionType(_V32, [_V32, _V32]), "llvm.x86.avx2.pshuf.b")
        blendv = cgutils.get_or_insert_function(
            mod, ir.FunctionType(_V32, [_V32, _V32, _V32]), "llvm.x86.avx2.pblendvb")
        tp = ptr(sa[2], t_, ir.Constant(_I64, 0))
        both_lanes = ir.Constant(ir.VectorType(_I32, 32), [k % 16 for k in range(32)])
        slices = []
        for h in range(16):
            v16 = builder.load(builder.bitcast(builder.gep(tp, [ir.Constant(_I64, 16 * h)]),
                                               ir.VectorType(_I8, 16).as_pointer()), align=1)
            slices.append(builder.shuffle_vector(v16, v16, both_lanes))
        xp = ptr(sa[0], x_, xo_)
        yp = ptr(sa[3], y_, yo_)
        pre = builder.block
        loop = builder.append_basic_block("lut.loop")
        done = builder.append_basic_block("lut.done")
        builder.cbranch(builder.icmp_signed(">", nb_, ir.Constant(_I64, 0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(_I64)
        i.add_incoming(ir.Constant(_I64, 0), pre)
        off = builder.mul(i, ir.Constant(_I64, VEC))
        v = builder.load(builder.bitcast(builder.gep(xp, [off]), _V32.as_pointer()), align=1)
        i0 = builder.and_(v, ir.Constant(_V32, [0x8F] * 32))      # 0 where bit 7 is set
        i1 = builder.xor(i0, ir.Constant(_V32, [0x80] * 32))      # 0 where bit 7 is clear
        r = [builder.or_(builder.call(pshufb, [slices[h], i0]),
                         builder.call(pshufb, [slices[h + 8], i1])) for h in range(8)]
        for bit in (4, 5, 6):              # after bit b: r[k] for the slices with h >> (b − 3) == k
            top = builder.bitcast(builder.shl(builder.bitcast(v, _V16W),
                                              ir.Constant(_V16W, [7 - bit] * 16)), _V32)
            r = [builder.call(blendv, [r[2 * k], r[2 * k + 1], top]) for k in range(len(r) // 2)]
        acc = r[0]
        builder.store(acc, builder.bitcast(builder.gep(yp, [off]), _V32.as_pointer()), align=1)
        nxt = builder.add(i, ir.Constant(_I64, 1))
        i.add_incoming(nxt, loop)
        builder.cbranch(builder.icmp_signed("<", nxt, nb_), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@njit(**JIT)
def _lut_span_avx2(x, table, y, i0, i1):
    """_lut_span through 32-byte vpshufb steps; the last (i1 − i0) mod 32 bytes scalar."""
    nblk = (i1 - i0) // VEC
    _lut_blocks_avx2(x, i0, table, y, i0, nblk)
    _lut_span(x, table, y, i0 + VEC * nblk, i1)


# One thread up to this many elements: at ~5 GB/s per thread a parallel region (2-4 us) only
# pays from about 50 k elements (measured, 1 / 2 threads, medians: 47 k 11.0 / 13.5 us,
# 94 k 20.4 / 12.9 us).
SERIAL_MAX_AVX2 = 4 * CHUNK


@njit(**PJIT)
def lut_u8_avx2(x, table, y):
    """lut_u8 for x86 hosts with AVX2 (the avx2 / vnni512 GEMM paths only: LLVM cannot compile
    it for other CPUs).  Same arguments and results."""
    n = x.size
    if n <= SERIAL_MAX_AVX2:
        xcall(_lut_span_avx2, x, table, y, 0, n)
        return
    for ci in prange(-(-n // CHUNK)):
        i0 = np.int64(ci) * CHUNK
        xcall(_lut_span_avx2, x, table, y, i0, min(n, i0 + CHUNK))
