"""QMatMul (formats/nq-v1.md 4.19): a batch of uint8 × uint8 matrix products of two run-time
tensors (attention's Q·Kᵀ and softmax(·)·V), int32 accumulation, one requantize.

    y[b, m, n] = clamp(requantize(Σ_k (a[b, m, k] − z_a)·(bt[b, n, k] − z_b), M0, sh) + z_y, lo, hi)

Operands are centered once into int16 (|q − z| ≤ 255): B per batch into pairs of rows
([K/2][N][2]: the operand layout of vpmaddwd, read from B's rows in order), A four rows at a
time as they are used.  A register tile of 4 rows x 16 columns accumulates int16 x int16
pair products in int32 (vpmaddwd on AVX2; generic vector IR on other targets).  |Σ| ≤
K·255² < 2^31 for K ≤ 33 025 (the planner checks it), so the sum is exact in int32 whatever
the order and the result is independent of the thread count.  Tasks are (batch, block of
rows of A).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.fixedpoint import offset_requant

K_MAX = 33_025           # K·255² < 2^31
ROWS_PER_TASK = 32       # rows of A per task (when a batch has more); a multiple of MR
MR, NR = 4, 16           # register tile: 4 rows of A x 16 columns of B (8 ymm accumulators)

_I16, _I32 = ir.IntType(16), ir.IntType(32)


def _tile_codegen(madd: bool):
    """Codegen of _tile / _tile_avx2 (arguments ap, a_off, a_stride, bp, b_off, b_stride,
    pairs, out); see _tile."""

    def codegen(context, builder, sig, args):
        ap_, aoff_, ast_, bp_, boff_, bst_, n_, out_ = args
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
        po = data(sig.args[7], out_)
        for i, acc in enumerate(accs):
            dst = builder.gep(po, [ir.Constant(_I32, 8 * i)])
            builder.store(builder.load(acc), builder.bitcast(dst, v8.as_pointer()), align=4)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _tile(typingctx, ap, a_off, a_stride, bp, b_off, b_stride, pairs, out):
    """out[16·r + c] = Σ_{kk < pairs} Σ_{i < 2} ap[a_off + r·a_stride + 2kk + i] ·
    bp[b_off + kk·b_stride + 2c + i]   for r < MR, c < NR (int16 operands, int32 out[64]).
    B is pair-packed: for each k pair, NR columns of (k, k + 1) values.  Generic LLVM vector
    IR (any target: the portable path).  Exact while every partial sum fits int32."""
    return types.void(ap, a_off, a_stride, bp, b_off, b_stride, pairs, out), _tile_codegen(False)


@intrinsic
def _tile_avx2(typingctx, ap, a_off, a_stride, bp, b_off, b_stride, pairs, out):
    """_tile with AVX2's vpmaddwd: per k pair 2 loads of B, 4 broadcasts of an A pair, 8
    multiply-add instructions (128 multiply-adds)."""
    return types.void(ap, a_off, a_stride, bp, b_off, b_stride, pairs, out), _tile_codegen(True)


@njit(**JIT)
def _pack_b(b, off, K, N, z_b, npad, bp):
    """bp[kk, n, i] = b[off + (2kk + i)·N + n] − z_b (int16) for 2kk + i < K, n < N; zero
    elsewhere (bp: [K/2 padded, npad, 2] flattened).  Two rows of B interleaved per pair
    (contiguous reads, contiguous writes: the loop vectorizes)."""
    zb = np.int16(z_b)
    for kk in range(K // 2):
        r0 = b[off + 2 * kk * N:off + (2 * kk + 1) * N]
        r1 = b[off + (2 * kk + 1) * N:off + (2 * kk + 2) * N]
        dst = bp[kk * npad * 2:kk * npad * 2 + 2 * N]
        for n in range(N):
            dst[2 * n] = np.int16(r0[n]) - zb
            dst[2 * n + 1] = np.int16(r1[n]) - zb
    if K % 2:
        kk = K // 2
        r0 = b[off + 2 * kk * N:off + (2 * kk + 1) * N]
        dst = bp[kk * npad * 2:kk * npad * 2 + 2 * N]
        for n in range(N):
            dst[2 * n] = np.int16(r0[n]) - zb


@njit(**JIT)
def _pack_task(b, offs, i, K, N, z_b, npad, bps):
    bps[i, :] = 0                           # the padding (columns >= N, an odd K's last row)
    _pack_b(b, offs[2 * i + 1], K, N, z_b, npad, bps[i])


@njit(**JIT)
def matmul_scratch_size(nb, K, N):
    """Bytes of scratch matmul_u8 needs: every batch's pair-packed B (int16)."""
    return nb * (-(-K // 2)) * (-(-N // NR) * NR) * 2 * 2


@njit(inline="always", **JIT)
def _matmul_rows(a, bps, offs, t, nrb, M, K, N, z_a, m0, sh, z_y, lo, hi, y, avx2):
    bi = t // nrb
    r0 = (t - bi * nrb) * ROWS_PER_TASK
    r1 = min(M, r0 + ROWS_PER_TASK)
    a_off = offs[2 * bi]
    y_off = bi * M * N
    pairs = -(-K // 2)
    kp = 2 * pairs
    npad = -(-N // NR) * NR
    bp = bps[bi]
    rnd = np.int64(1) << np.int64(sh - 1)
    # requantize(d, M0, sh) = ((d·M0 + bc) >>> sh) − off for |d| <= K·255² (fixedpoint.offset_requant)
    fast, bc, off = offset_requant(0, np.int64(K) * 65025, m0, sh)
    m32 = np.int64(np.int32(m0)) if fast else np.int64(0)
    ush = np.uint64(sh)
    zoff = z_y - off
    ac = np.zeros(MR * kp, np.int16)            # MR centered rows of A, zero padded
    tile = np.empty(MR * NR, np.int32)
    for g in range(r0, r1, MR):
        rows = min(MR, r1 - g)
        for r in range(rows):
            src = a[a_off + (g + r) * K:a_off + (g + r + 1) * K]
            for k in range(K):
                ac[r * kp + k] = np.int16(np.int32(src[k]) - z_a)
        for r in range(rows, MR):
            for k in range(kp):
                ac[r * kp + k] = 0
        for c0 in range(0, N, NR):
            if avx2:
                _tile_avx2(ac, 0, kp, bp, 2 * c0, 2 * npad, pairs, tile)
            else:
                _tile(ac, 0, kp, bp, 2 * c0, 2 * npad, pairs, tile)
            cols = min(NR, N - c0)
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
def _matmul_task(a, bps, offs, t, nrb, M, K, N, z_a, m0, sh, z_y, lo, hi, y):
    _matmul_rows(a, bps, offs, t, nrb, M, K, N, z_a, m0, sh, z_y, lo, hi, y, False)


@njit(**JIT)
def _matmul_task_avx2(a, bps, offs, t, nrb, M, K, N, z_a, m0, sh, z_y, lo, hi, y):
    _matmul_rows(a, bps, offs, t, nrb, M, K, N, z_a, m0, sh, z_y, lo, hi, y, True)


@njit(inline="always", **JIT)
def _run(a, b, offs, nb, M, K, N, z_a, z_b, m0, sh, z_y, act_min, act_max, y, scratch, avx2):
    """Phase 1: every batch's B centered and pair-packed (int16 [K/2, N padded to NR, 2],
    zero padding) into scratch; phase 2: tasks of (batch, ROWS_PER_TASK rows of A), MR x NR
    tiles."""
    pairs = -(-K // 2)
    npad = -(-N // NR) * NR
    bps = scratch[:matmul_scratch_size(nb, K, N)].view(np.int16).reshape((nb, pairs * npad * 2))
    zb = np.int32(z_b)
    if nb * K * N <= 1 << 15 or nb == 1:
        for i in range(nb):
            xcall(_pack_task, b, offs, i, K, N, zb, npad, bps)
    else:
        for i in prange(nb):
            xcall(_pack_task, b, offs, np.int64(i), K, N, zb, npad, bps)
    nrb = -(-M // ROWS_PER_TASK)
    za, zy = np.int32(z_a), np.int64(z_y)
    lo, hi = np.int64(act_min), np.int64(act_max)
    if nb * nrb == 1:
        if avx2:
            xcall(_matmul_task_avx2, a, bps, offs, 0, nrb, M, K, N, za, m0, sh, zy, lo, hi, y)
        else:
            xcall(_matmul_task, a, bps, offs, 0, nrb, M, K, N, za, m0, sh, zy, lo, hi, y)
        return
    for t in prange(nb * nrb):
        if avx2:
            xcall(_matmul_task_avx2, a, bps, offs, np.int64(t), nrb, M, K, N, za, m0, sh, zy, lo, hi, y)
        else:
            xcall(_matmul_task, a, bps, offs, np.int64(t), nrb, M, K, N, za, m0, sh, zy, lo, hi, y)


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
