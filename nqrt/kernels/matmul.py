"""QMatMul (formats/nq-v1.md 4.19): a batch of uint8 × uint8 matrix products of two run-time
tensors (attention's Q·Kᵀ and softmax(·)·V), int32 accumulation, one requantize.

    y[b, m, n] = clamp(requantize(Σ_k (a[b, m, k] − z_a)·(bt[b, n, k] − z_b), M0, sh) + z_y, lo, hi)

computed as Σ_k a·(b − z_b) + corr[n], corr[n] = −z_a·Σ_k (b[k, n] − z_b): B is centered
once per batch into pairs of rows ([K/2][N][2] int16: the operand layout of vpmaddwd, read
from B's rows in order) together with its column corrections; A's rows are only widened to
int16 (a vector copy), MR at a time.  A register tile of MR = 6 rows x NR = 16 columns (12 ymm
accumulators) sums int16 x int16 pair products in int32 (vpmaddwd on AVX2; generic vector IR
on other targets).  |a·(b − z_b)| sums, |corr| and the total are all at most K·255² < 2^31 for
K ≤ 33 025 (the planner checks it), so every sum is exact in int32 whatever the order and the
result is independent of the thread count.  On AVX2 the requantize runs on the tile's
registers (the GEMM's table epilogue, vnni.emit_table_rows, with one tensor-wide set of
constants); elsewhere, or when its logical-shift form cannot represent the multiplier, the
int32 tile is requantized by scalar code.  Tasks are (batch, block of rows of A).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.fixedpoint import offset_requant
from nqrt.kernels.rowcopy import copy_runs
from nqrt.kernels.vnni import TABLE_BLOCK, emit_table_rows, splat_bytes16

K_MAX = 33_025           # K·255² < 2^31
ROWS_PER_TASK = 36       # about this many rows of A per task (when a batch has more)
TASK_GROUPS = 64         # parallel iterations; each runs every TASK_GROUPS-th task
MR, NR = 6, 16           # register tile: 6 rows of A x 16 columns of B (12 ymm accumulators)

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def _tile_codegen(madd: bool, fused: bool = False):
    """Codegen of _tile / _tile_avx2 (arguments ap, a_off, a_stride, bp, b_off, b_stride,
    pairs, corr, c_off, out) and of _tile_avx2_requant (the same through c_off, then y, y_off,
    y_stride, tab, lo, hi); see those."""

    def codegen(context, builder, sig, args):
        ap_, aoff_, ast_, bp_, boff_, bst_, n_, corr_, coff_ = args[:9]
        v16 = ir.VectorType(_I16, 16)
        v8 = ir.VectorType(_I32, 8)
        even = ir.Constant(ir.VectorType(_I32, 8), list(range(0, 16, 2)))
        odd = ir.Constant(ir.VectorType(_I32, 8), list(range(1, 16, 2)))
        zero8 = ir.Constant(ir.VectorType(_I32, 8), [0] * 8)
        pmaddwd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8, [v16, v16]), "llvm.x86.avx2.pmadd.wd") if madd else None

        def data(aty, val):
            return cgutils.create_struct_proxy(aty)(context, builder, value=val).data

        pa = builder.gep(data(sig.args[0], ap_), [aoff_])
        pb = builder.gep(data(sig.args[3], bp_), [boff_])
        accs = [cgutils.alloca_once_value(builder, ir.Constant(v8, None)) for _ in range(2 * MR)]

        def madd16(x, y):
            if madd:                              # exact: |pair sum| <= 2·255² < 2^31
                return builder.call(pmaddwd, [x, y])
            xe = builder.sext(builder.shuffle_vector(x, x, even), v8)
            xo = builder.sext(builder.shuffle_vector(x, x, odd), v8)
            ye = builder.sext(builder.shuffle_vector(y, y, even), v8)
            yo = builder.sext(builder.shuffle_vector(y, y, odd), v8)
            return builder.add(builder.mul(xe, ye), builder.mul(xo, yo))

        with cgutils.for_range(builder, n_) as loop:
            kk = loop.index
            brow = builder.gep(pb, [builder.mul(kk, bst_)])
            b0 = builder.load(builder.bitcast(brow, v16.as_pointer()), align=2)
            b1 = builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(kk.type, 16)]),
                                              v16.as_pointer()), align=2)
            for r in range(MR):
                q = builder.gep(pa, [builder.add(builder.mul(ir.Constant(kk.type, r), ast_),
                                                 builder.mul(kk, ir.Constant(kk.type, 2)))])
                pair = builder.load(builder.bitcast(q, _I32.as_pointer()), align=2)
                x = builder.insert_element(ir.Constant(v8, None), pair, ir.Constant(_I32, 0))
                x = builder.bitcast(builder.shuffle_vector(x, x, zero8), v16)
                for h, bv in enumerate((b0, b1)):
                    acc = accs[2 * r + h]
                    builder.store(builder.add(builder.load(acc), madd16(x, bv)), acc)
        # + the columns' zero-point terms: wrapping int32 adds, exact as the total fits int32
        pc = builder.gep(data(sig.args[7], corr_), [coff_])
        cv = [builder.load(builder.bitcast(builder.gep(pc, [ir.Constant(_I64, 8 * j)]),
                                           v8.as_pointer()), align=4) for j in range(2)]
        final = {(r, j): builder.add(builder.load(accs[2 * r + j]), cv[j])
                 for r in range(MR) for j in range(2)}
        if fused:
            y_, yoff_, yst_, tab_, lo_, hi_ = args[9:15]
            tp = builder.bitcast(data(sig.args[12], tab_), _I8.as_pointer())
            yp = builder.gep(builder.bitcast(data(sig.args[9], y_), _I8.as_pointer()), [yoff_])
            emit_table_rows(builder, tp, ir.Constant(_I64, 0), 2, 8, final, MR,
                            splat_bytes16(builder, lo_), splat_bytes16(builder, hi_), yst_, yp)
            return context.get_dummy_value()
        po = data(sig.args[9], args[9])
        for (r, j), v in final.items():
            dst = builder.gep(po, [ir.Constant(_I32, 16 * r + 8 * j)])
            builder.store(v, builder.bitcast(dst, v8.as_pointer()), align=4)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _tile(typingctx, ap, a_off, a_stride, bp, b_off, b_stride, pairs, corr, c_off, out):
    """out[NR·r + c] = corr[c_off + c] + Σ_{kk < pairs} Σ_{i < 2} ap[a_off + r·a_stride + 2kk + i]
    · bp[b_off + kk·b_stride + 2c + i]   for r < MR, c < NR (int16 operands, int32 corr and
    out).  B is pair-packed: for each k pair, NR columns of (k, k + 1) values.  Generic LLVM
    vector IR (any target: the portable path).  Exact while every partial sum and the total
    fit int32."""
    sig = types.void(ap, a_off, a_stride, bp, b_off, b_stride, pairs, corr, c_off, out)
    return sig, _tile_codegen(False)


@intrinsic
def _tile_avx2(typingctx, ap, a_off, a_stride, bp, b_off, b_stride, pairs, corr, c_off, out):
    """_tile with AVX2's vpmaddwd: per k pair 2 loads of B, MR broadcasts of an A pair, 2·MR
    multiply-add instructions (32·MR multiply-adds)."""
    sig = types.void(ap, a_off, a_stride, bp, b_off, b_stride, pairs, corr, c_off, out)
    return sig, _tile_codegen(True)


@intrinsic
def _tile_avx2_requant(typingctx, ap, a_off, a_stride, bp, b_off, b_stride, pairs, corr, c_off,
                       y, y_off, y_stride, tab, lo, hi):
    """_tile_avx2 with the requantize fused on the registers (vnni.emit_table_rows, the GEMM's
    AVX2 epilogue): y[y_off + r·y_stride + c] = clamp(((dot·M0 + BC) >>> SH) + ZD, lo, hi) for
    r < MR, c < NR, the constants read from tab (int8, two TABLE_BLOCKs: _fill_table).  Stores
    whole 16-byte rows: a partial tile goes through a 64-byte buffer."""
    sig = types.void(ap, a_off, a_stride, bp, b_off, b_stride, pairs, corr, c_off, y, y_off,
                     y_stride, tab, lo, hi)
    return sig, _tile_codegen(True, fused=True)


@njit(**JIT)
def _fill_table(tab, K, m0, sh, z_y):
    """The fused epilogue's constants (vnni.requant_table's block layout, every lane alike: one
    tensor-wide M0, shift and zero point) for dots |d| <= K·255², in two TABLE_BLOCKs (16
    columns).  Returns False, and leaves tab unused, when the logical-shift form cannot
    represent them (fixedpoint.offset_requant; the caller then uses the scalar epilogue)."""
    fast, bc, off = offset_requant(0, np.int64(K) * 65025, m0, sh)
    if not fast:
        return False
    for blk in range(2):
        q = tab[blk * TABLE_BLOCK:(blk + 1) * TABLE_BLOCK]
        w64 = q[:192].view(np.int64)          # M0 even, odd; BC even, odd; SH even, odd (x4)
        w64[:8] = m0
        w64[8:16] = bc
        w64[16:24] = sh
        q[192:].view(np.int32)[:] = np.int32(z_y - off)
    return True


@njit(**JIT)
def _pack_b(b, off, K, N, z_a, z_b, npad, bp, corr):
    """bp[kk, n, i] = b[off + (2kk + i)·N + n] − z_b (int16) for 2kk + i < K, n < N; zero
    elsewhere (bp: [K/2 padded, npad, 2] flattened).  Two rows of B interleaved per pair
    (contiguous reads, contiguous writes: the loop vectorizes).  corr[n] = −z_a·Σ_k bp[., n, .]
    (int32[npad], zero past N): the A zero point's term, added to each column's dot of the
    raw A codes (|corr| <= 255·K·255 < 2^31)."""
    zb = np.int16(z_b)
    cs = corr[:N]
    cs[:] = 0
    for kk in range(K // 2):
        r0 = b[off + 2 * kk * N:off + (2 * kk + 1) * N]
        r1 = b[off + (2 * kk + 1) * N:off + (2 * kk + 2) * N]
        dst = bp[kk * npad * 2:(kk + 1) * npad * 2]
        for n in range(N):
            v0 = np.int16(r0[n]) - zb
            v1 = np.int16(r1[n]) - zb
            dst[2 * n] = v0
            dst[2 * n + 1] = v1
            cs[n] += np.int32(v0) + np.int32(v1)
        dst[2 * N:] = 0
    if K % 2:
        kk = K // 2
        r0 = b[off + 2 * kk * N:off + (2 * kk + 1) * N]
        dst = bp[kk * npad * 2:(kk + 1) * npad * 2]
        for n in range(N):
            v0 = np.int16(r0[n]) - zb
            dst[2 * n] = v0
            dst[2 * n + 1] = 0
            cs[n] += np.int32(v0)
        dst[2 * N:] = 0
    za = np.int32(z_a)
    for n in range(N):
        cs[n] = -za * cs[n]
    corr[N:] = 0


@njit(**JIT)
def _pack_task(b, offs, i, K, N, z_a, z_b, npad, bps, corrs):
    _pack_b(b, offs[2 * i + 1], K, N, z_a, z_b, npad, bps[i], corrs[i])


@njit(**JIT)
def matmul_scratch_size(nb, K, N):
    """Bytes of scratch matmul_u8 needs: every batch's pair-packed B (int16) and its
    column corrections (int32)."""
    npad = -(-N // NR) * NR
    return nb * ((-(-K // 2)) * npad * 2 * 2 + npad * 4)


@njit(inline="always", **JIT)
def _matmul_rows(a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi, y, tab,
                 fused, avx2):
    """Tasks t0, t0 + tstep, .. < T (one group: its buffers are allocated once, which matters
    for many small products such as Swin's 49-row windows).  Task t: batch t // nrb, rows
    (t mod nrb)·rpt .. +rpt of A, MR rows at a time against every NR-column panel of the
    batch's packed B.  The rows are widened (u8 -> int16, not centered: corr holds the A
    zero point's term) into a small buffer.  fused (avx2 only): the requantize runs on the
    tile's registers (_tile_avx2_requant with tab); otherwise the int32 tile is stored and
    requantized here."""
    pairs = -(-K // 2)
    kp = 2 * pairs
    # MR rows of A as int16.  Entries past K (an odd K's pad) and rows past the valid ones
    # may hold anything: B is zero at the pad, and invalid rows' results are never stored.
    ac = np.empty(MR * kp, np.int16)
    tile = np.empty(MR * NR, np.int32)
    ybuf = np.empty(MR * NR, np.uint8)          # a partial tile's bytes (fused)
    for t in range(t0, T, tstep):
        _task_rows(a, bps, corrs, offs, t, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi, y, tab, fused,
                   avx2, ac, tile, ybuf)


@njit(inline="always", **JIT)
def _task_rows(a, bps, corrs, offs, t, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi, y, tab, fused, avx2,
               ac, tile, ybuf):
    bi = t // nrb
    r0 = (t - bi * nrb) * rpt
    r1 = min(M, r0 + rpt)
    a_off = offs[2 * bi]
    y_off = bi * M * N
    pairs = -(-K // 2)
    kp = 2 * pairs
    npad = -(-N // NR) * NR
    bp = bps[bi]
    corr = corrs[bi]
    rnd = np.int64(1) << np.int64(sh - 1)
    # requantize(d, M0, sh) = ((d·M0 + bc) >>> sh) − off for |d| <= K·255² (fixedpoint.offset_requant)
    fast, bc, off = offset_requant(0, np.int64(K) * 65025, m0, sh)
    m32 = np.int64(np.int32(m0)) if fast else np.int64(0)
    ush = np.uint64(sh)
    zoff = z_y - off
    for g in range(r0, r1, MR):
        rows = min(MR, r1 - g)
        if K >= 8:                              # vector pieces (rowcopy.copy_runs)
            copy_runs(ac, 0, kp, a, a_off + g * K, K, 0, 1, K, rows)
        else:
            for r in range(rows):
                for k in range(K):
                    ac[r * kp + k] = a[a_off + (g + r) * K + k]
        for c0 in range(0, N, NR):
            cols = min(NR, N - c0)
            if fused:
                yo = y_off + g * N + c0
                if rows == MR and cols == NR:
                    _tile_avx2_requant(ac, 0, kp, bp, 2 * c0, 2 * npad, pairs, corr, c0, y, yo, N,
                                       tab, lo, hi)
                else:
                    _tile_avx2_requant(ac, 0, kp, bp, 2 * c0, 2 * npad, pairs, corr, c0, ybuf, 0,
                                       NR, tab, lo, hi)
                    for r in range(rows):
                        for c in range(cols):
                            y[yo + r * N + c] = ybuf[r * NR + c]
                continue
            if avx2:
                _tile_avx2(ac, 0, kp, bp, 2 * c0, 2 * npad, pairs, corr, c0, tile)
            else:
                _tile(ac, 0, kp, bp, 2 * c0, 2 * npad, pairs, corr, c0, tile)
            for r in range(rows):             # spec 3.3 on a row of the tile
                yo = y_off + (g + r) * N + c0
                if fast:                      # logical-shift form: vectorizes (vpmuldq, vpsrlq)
                    for c in range(cols):
                        num = np.int64(tile[r * NR + c]) * m32 + bc
                        v = np.int64(np.uint64(num) >> ush) + zoff
                        y[yo + c] = np.uint8(min(max(v, lo), hi))
                else:
                    for c in range(cols):
                        v = ((np.int64(tile[r * NR + c]) * m0 + rnd) >> sh) + z_y
                        y[yo + c] = np.uint8(min(max(v, lo), hi))


@njit(**JIT)
def _matmul_task(a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi, y, tab):
    _matmul_rows(a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi, y, tab,
                 False, False)


@njit(**JIT)
def _matmul_task_avx2(a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi, y, tab):
    _matmul_rows(a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi, y, tab,
                 False, True)


@njit(**JIT)
def _matmul_task_avx2_fused(a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi,
                            y, tab):
    _matmul_rows(a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, z_y, lo, hi, y, tab,
                 True, True)


@njit(inline="always", **JIT)
def _task(a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, zy, lo, hi, y, tab, fused, avx2):
    if fused:
        xcall(_matmul_task_avx2_fused, a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh,
              zy, lo, hi, y, tab)
    elif avx2:
        xcall(_matmul_task_avx2, a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, zy, lo,
              hi, y, tab)
    else:
        xcall(_matmul_task, a, bps, corrs, offs, t0, tstep, T, nrb, rpt, M, K, N, m0, sh, zy, lo, hi,
              y, tab)


@njit(inline="always", **JIT)
def _run(a, b, offs, nb, M, K, N, z_a, z_b, m0, sh, z_y, act_min, act_max, y, scratch, avx2):
    """Phase 1: every batch's B centered and pair-packed (int16 [K/2, N padded to NR, 2],
    zero padding) and its column corrections into scratch; phase 2: tasks of (batch,
    ROWS_PER_TASK rows of A), MR x NR tiles."""
    pairs = -(-K // 2)
    npad = -(-N // NR) * NR
    nbp = nb * pairs * npad * 2 * 2
    bps = scratch[:nbp].view(np.int16).reshape((nb, pairs * npad * 2))
    corrs = scratch[nbp:nbp + nb * npad * 4].view(np.int32).reshape((nb, npad))
    za, zb = np.int32(z_a), np.int32(z_b)
    if nb * K * N <= 1 << 15 or nb == 1:
        for i in range(nb):
            xcall(_pack_task, b, offs, i, K, N, za, zb, npad, bps, corrs)
    else:
        for i in prange(nb):
            xcall(_pack_task, b, offs, np.int64(i), K, N, za, zb, npad, bps, corrs)
    # rows per task: about ROWS_PER_TASK, a multiple of MR, as even as the row count allows
    # (197 rows: 5 tasks of 42 and 29; 49 rows: one task)
    nrb = max(1, (M + ROWS_PER_TASK // 2) // ROWS_PER_TASK)
    rpt = -(-(-(-M // nrb)) // MR) * MR
    nrb = -(-M // rpt)
    T = nb * nrb
    zy = np.int64(z_y)
    lo, hi = np.int64(act_min), np.int64(act_max)
    tab = np.empty(2 * TABLE_BLOCK, np.int8)     # fixed size: one tensor-wide set of constants
    fused = avx2 and _fill_table(tab, K, m0, sh, z_y)
    if T == 1:
        _task(a, bps, corrs, offs, 0, 1, 1, nrb, rpt, M, K, N, m0, sh, zy, lo, hi, y, tab, fused, avx2)
        return
    G = min(T, TASK_GROUPS)                      # task t runs in group t mod G
    for g in prange(G):
        _task(a, bps, corrs, offs, np.int64(g), G, T, nrb, rpt, M, K, N, m0, sh, zy, lo, hi, y, tab,
              fused, avx2)


@njit(**PJIT)
def matmul_u8(a, b, offs, nb, M, K, N, z_a, z_b, m0, sh, z_y, act_min, act_max, y, scratch):
    """y (uint8, [nb, M, N] flat) from a, b (uint8, flat): batch i reads A at offs[2i] ([M, K]
    C-ordered) and B at offs[2i + 1] ([K, N]); broadcast batches repeat an offset.  scratch:
    uint8, 2-byte aligned, at least matmul_scratch_size(nb, K, N) bytes.  Portable."""
    _run(a, b, offs, nb, M, K, N, z_a, z_b, m0, sh, z_y, act_min, act_max, y, scratch, False)


@njit(**PJIT)
def matmul_u8_avx2(a, b, offs, nb, M, K, N, z_a, z_b, m0, sh, z_y, act_min, act_max, y, scratch):
    """matmul_u8 with vpmaddwd (AVX2 and up); the same integers."""
    _run(a, b, offs, nb, M, K, N, z_a, z_b, m0, sh, z_y, act_min, act_max, y, scratch, True)
