"""QConv 3x3, stride 1 (any dilation, groups of 48+ channels) by Winograd F(2x2, 3x3) in integers, on the avx2
path: bit-identical to the direct convolution (spec 4.1), with 16 multiply-adds per 2x2
output tile and input channel instead of 36.

Winograd's identity (Lavin & Gray) for one 2x2 output tile and one (input, output) channel
pair, with d the 4x4 input patch and g the 3x3 kernel:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
    Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G  = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]

is exact over the rationals.  With G2 = 2G (integer), U = G2 g G2ᵀ = 4·(G g Gᵀ) is an integer
matrix and Aᵀ [Σ_c U ⊙ V] A = 4·Y exactly, so Y = (that) / 4 with no remainder: the integer
dot products of the direct convolution, whatever the summation order.  Bounds, with
d = x − z_x in [-255, 255] (padding reads real zero, d = 0) and |w| <= 127:

    |V| = |Bᵀ d B| <= 4·255 = 1020            (int16)
    |U| = |G2 g G2ᵀ| <= 3·3·127 = 1143         (int16, plan time)
    |Σ_c U·V| <= C·1020·1143 < 2^31 for C <= WINO_MAX_C   (int32 accumulators, vpmaddwd)
    the output transform sums 9 of those: wrapping int32 (exact, see below) or int64.

Layout: x uint8 NHWC; the tiles of the output, 2x2 each (outputs (oh0 + a·dh, ow0 + e·dw)
for a, e in {0, 1}: with dilation d the d x d residue classes are independent convolutions),
numbered row-major over the batch (`_tile`), run in blocks of TB tiles (block_tiles).  Per
block: the input transform writes V as 16 int16 matrices [TB, C] (one per position ξ of the 4x4 patch) in the micro-kernels' A layout; per
16-channel panel of the output, 16 GEMMs V_ξ · U_ξ (the avx2 micro-kernel with int16 B:
"avx2w") write int32 tiles [16 ξ][TB][16]; the output transform, bias, requantize (spec 3.3)
and clamp then store the panel's outputs (cropped at the map's edges).  Work items are
(block, range of panels); each output is computed by one item, so results do not depend on
the thread count.

A grouped conv runs each group as its own Winograd convolution (its input channels read at
their offset in x, its outputs stored at theirs); work items are then (block, group, panels).

Packed weights (pack_winograd_weights): a LAYOUT_HEADER-byte header (byte 0 LAYOUT_WINOGRAD),
then per conv group, for ξ = 0..15 and each panel of 16 output channels: [k-group of 2 c]
[16 m][2] int16 U, the group's C padded to the avx2 path's k-groups and its M to whole panels
with zeros.  The planner appends
the requantize table of with_winograd_table: per channel (padded to whole panels) M0 int32,
BC int64, SH int64 and ZD int32 such that for every dot product d of the layer
((d·M0 + BC) >> SH) + ZD = requantize(d + bias, M0, SH) + z_y with a non-negative numerator
(fixedpoint.offset_requant), so the output stage runs 16 channels at a time in vector lanes
(32x32 -> 64-bit multiplies, logical shifts).  The output transform itself runs in wrapping
int32 arithmetic: every intermediate is exact modulo 2^32 and the result, 4·d with
|d| <= 9·C·255·127, fits int32 for C <= WINO_MAX_C, so it is exact.  Without a usable table
(another z_y than it was built for, or a channel offset_requant cannot represent) a scalar
int64 output stage runs instead: same results.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.depthwise import _ptr
from nqrt.kernels.vnni import (AVX2_G, AVX2_MR, AVX2_NR, AVX2_NV, AVX2_VL, LAYOUT_HEADER,
                               _make_ukernel, load_table_consts, requant_table, splat_bytes16,
                               table_offset, table_requant_bytes,
                               _split, padded_groups)

LAYOUT_WINOGRAD = 3     # header byte 0 (vnni: 0 pairs, 1 quads; grouped: 2)
WINO_MAX_C = 1024       # C·1020·1143 < 2^31 with margin (int32 accumulators)
# Below these channel counts the transforms (per tile: ∝ C in, ∝ M out) cost more than the
# multiply-adds saved (∝ C·M).  Measured on the avx2 VM, batch 1, 2 threads, Winograd against
# the direct kernel (vector transforms, 63d8b2e+): C=16 M=16 0.92-0.97x, C=16 M=32 0.99-1.02x,
# C=24 M=24 0.97-0.99x; C=24 M=32 1.16x, C=24 M=48 1.15-1.20x, C=28 M=28 1.40x, C=32 M=16
# 1.19-1.27x, C=32 M=24 1.08x, C=32 M=32 1.14-1.34x (14² to 112²), C=48 M=16 1.41x, C=64 M=64
# 1.42x+; C=3 M=32 0.45x.  So: at least WINO_MIN_C input and WINO_MIN_M output channels per
# group, or WINO_MIN_C_WIDE input channels when there are WINO_WIDE_M or more outputs.
WINO_MIN_C, WINO_MIN_M = 28, 16
WINO_MIN_C_WIDE, WINO_WIDE_M = 24, 32
XI = 16                 # positions of the 4x4 transformed patch
A_BUDGET = 96 * 1024    # bytes of V per block (L2-resident while the panels run over it)
CHUNK = 16              # input channels per vector step of the input transform (<16 x i16>)
# per worker after V and the tiles (_slice_bytes): the output stage's u8 [64]; the input
# transform's patch addresses and steps, i64 [16] x 2, twice (in place / staged); z_x bytes
# u8 [16]; the staging patch u8 [16][16]
TAIL_BYTES = 64 + 4 * 8 * XI + CHUNK + XI * CHUNK + 48

_B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.int64)
_G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], np.int64)
_A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.int64)

_uk_w1 = _make_ukernel("avx2w", 1, AVX2_NV)
_uk_w2 = _make_ukernel("avx2w", 2, AVX2_NV)
_uk_w3 = _make_ukernel("avx2w", 3, AVX2_NV)
_uk_w4 = _make_ukernel("avx2w", 4, AVX2_NV)
_uk_w5 = _make_ukernel("avx2w", 5, AVX2_NV)
_uk_w6 = _make_ukernel("avx2w", 6, AVX2_NV)


@njit(**JIT)
def _ukernel_w(mr, a, aoff, ars, ags, b, boff, ng, c):
    if mr == 6:
        _uk_w6(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 5:
        _uk_w5(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 4:
        _uk_w4(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 3:
        _uk_w3(a, aoff, ars, ags, b, boff, ng, c)
    elif mr == 2:
        _uk_w2(a, aoff, ars, ags, b, boff, ng, c)
    else:
        _uk_w1(a, aoff, ars, ags, b, boff, ng, c)


def with_winograd_table(wpack, C, bias, mult, shift, z_y, group=1):
    """Plan time: wpack (pack_winograd_weights, any table it had dropped) followed by the
    requantize table for these bias / multipliers / output zero point (module docstring);
    C = input channels of the whole conv.  The table is vnni.requant_table's for dot products
    of length 9·C/group with no zero-point term (z_x = 0, wsum = 0: the input transform
    already subtracts z_x), over the channels padded to whole panels per group: channel
    m = g·Mg + j sits at g·Mgp + j; the padding channels get bias 0 and channel 0's
    multiplier (representable whenever channel 0 is)."""
    M = len(bias)
    cg, mg = C // group, M // group
    ng = padded_groups(cg, AVX2_G)
    npan = max(1, -(-mg // AVX2_NR))
    ubytes = LAYOUT_HEADER + group * XI * npan * ng * AVX2_NR * AVX2_G * 2
    mgp = npan * AVX2_NR
    mp = group * mgp
    pb = np.zeros(mp, np.int64)
    pm = np.full(mp, int(mult[0]) if M else 1 << 30, np.int64)
    ps = np.full(mp, int(shift[0]) if M else 31, np.int64)
    for c in range(M):
        k = (c // mg) * mgp + c % mg
        pb[k], pm[k], ps[k] = int(bias[c]), int(mult[c]), int(shift[c])
    table = requant_table(9 * cg, np.zeros(mp, np.int64), pb, pm, ps, 0, z_y)
    return np.concatenate([np.asarray(wpack, np.int8).reshape(-1)[:ubytes], table])


def winograd_eligible(C, M, kh, kw, sh, sw, dh, dw, group) -> bool:
    """Whether a QConv runs as Winograd F(2x2, 3x3) on the avx2 path: 3x3, stride 1, any
    dilation (DeepLab's and FCN's dilated ResNets), groups (each its own Winograd
    convolution) of at least WINO_MIN_C input and WINO_MIN_M output channels, or of
    WINO_MIN_C_WIDE input and WINO_WIDE_M output channels."""
    if group < 1 or C % group or M % group:
        return False
    cg, mg = C // group, M // group
    return (kh, kw, sh, sw) == (3, 3, 1, 1) and dh >= 1 and dw >= 1 \
        and cg <= WINO_MAX_C and ((cg >= WINO_MIN_C and mg >= WINO_MIN_M)
                                  or (cg >= WINO_MIN_C_WIDE and mg >= WINO_WIDE_M))


def transform_weights(w):
    """int8 w[M, C, 3, 3] -> int64 U[16, C, M] = G2 g G2ᵀ per (m, c), ξ = 4·i + j."""
    u = np.einsum("ik,mckl,jl->ijcm", _G2, np.asarray(w, np.int64), _G2)
    return u.reshape(XI, w.shape[1], w.shape[0])


def pack_winograd_weights(w, group=1):
    """int8 w[M, C/group, 3, 3] -> the packed int8 bytes described in the module docstring,
    the conv groups one after the other."""
    w = np.asarray(w)
    M, cg = w.shape[:2]
    mg = M // group
    ng = padded_groups(cg, AVX2_G)
    npan = max(1, -(-mg // AVX2_NR))
    parts = []
    for g in range(group):
        u = transform_weights(w[g * mg:(g + 1) * mg])
        assert np.abs(u).max(initial=0) <= 1143
        up = np.zeros((XI, ng * AVX2_G, npan * AVX2_NR), np.int16)
        up[:, :cg, :mg] = u
        # [ξ, k-group, G, panel, NR] -> [ξ, panel, k-group, NR, G]
        up = up.reshape(XI, ng, AVX2_G, npan, AVX2_NR).transpose(0, 3, 1, 4, 2)
        parts.append(np.ascontiguousarray(up).view(np.int8).reshape(-1))
    head = np.zeros(LAYOUT_HEADER, np.int8)
    head[0] = LAYOUT_WINOGRAD
    return np.concatenate([head] + parts)


@njit(**JIT)
def v_cols(C):
    """Row length of the V_ξ matrices (int16): C rounded up to whole CHUNKs, so that the input
    transform stores whole vectors (the micro-kernels read only the first
    padded_groups(C, AVX2_G) k-groups, and the packed U is zero past C)."""
    return (C + CHUNK - 1) // CHUNK * CHUNK


@njit(**JIT)
def block_tiles(C):
    """Tiles per block: a multiple of MR with about A_BUDGET bytes of V, in [6, 48]."""
    tb = (A_BUDGET // (XI * v_cols(C) * 2)) // AVX2_MR * AVX2_MR
    return min(max(tb, AVX2_MR), 8 * AVX2_MR)


@njit(**JIT)
def _slice_bytes(C, M):
    """Bytes of one worker's scratch: V [16][TB][v_cols(C)] int16 and the int32 tiles
    [16][TB][16] (each 64-byte aligned), then TAIL_BYTES of work space."""
    tb = block_tiles(C)
    v = ((XI * tb * v_cols(C) * 2 + 63) // 64) * 64
    t = ((XI * tb * AVX2_NR * 4 + 63) // 64) * 64
    return v + t + TAIL_BYTES


def winograd_scratch_size(C, M, nthreads, group=1):
    return max(int(nthreads), 1) * int(_slice_bytes(C // group, M // group))


@njit(**JIT)
def _tile(t, RH, RW, dh, dw):
    """(n, oh0, ow0) of tile t: its outputs are rows oh0, oh0 + dh and columns ow0, ow0 + dw.
    With dilation d the outputs of one residue class mod d form an ordinary 3x3 convolution
    of the input's same class (the d x d sub-grids are independent), tiled 2x2 each:
    RH = dh·ceil(ceil(OH/dh)/2) tile rows per image (phase = row mod dh), RW likewise."""
    n = t // (RH * RW)
    r = t - n * RH * RW
    ry = r // RW
    rx = r - ry * RW
    ty, ah = ry // dh, ry - (ry // dh) * dh
    tx, aw = rx // dw, rx - (rx // dw) * dw
    return n, ah + 2 * dh * ty, aw + 2 * dw * tx


@njit(**JIT)
def tile_grid(OH, OW, dh, dw):
    """(RH, RW): tile rows and columns per image (see _tile)."""
    return dh * ((-(-OH // dh) + 1) // 2), dw * ((-(-OW // dw) + 1) // 2)


def _in_chunk(typingctx, adr, stp, c, zx, v, vo, vs):
    """Intrinsic: the input transform of one tile for CHUNK input channels.  Patch position
    ξ = 4·i + j reads the 16 bytes at absolute address adr[ξ] + c·stp[ξ] (stp 1: a pixel of
    x at its channel c; stp 0: z_x bytes, padding), d = x − z_x as int16, then
    V = Bᵀ d B is stored as V_ξ at v[vo + ξ·vs ... + 15] (int16 elements).  Bᵀ applied to
    (e0, e1, e2, e3) is (e0 − e2, e1 + e2, e2 − e1, e1 − e3): first down each column of the
    4x4 patch, then along each row.  |V| <= 4·255 = 1020."""
    sig = types.void(adr, stp, c, zx, v, vo, vs)
    vw = ir.VectorType(ir.IntType(16), CHUNK)
    vb = ir.VectorType(ir.IntType(8), CHUNK)
    i64 = ir.IntType(64)

    def codegen(context, builder, signature, args):
        adr_, stp_, c_, zx_, v_, vo_, vs_ = args
        sa = signature.args
        ap = _ptr(context, builder, sa[0], adr_, i64)
        sp = _ptr(context, builder, sa[1], stp_, i64)
        vp = builder.gep(_ptr(context, builder, sa[4], v_, ir.IntType(16)), [vo_])
        z = builder.trunc(zx_, ir.IntType(16))
        zv = builder.insert_element(ir.Constant(vw, None), z, ir.Constant(ir.IntType(32), 0))
        zv = builder.shuffle_vector(zv, ir.Constant(vw, None),
                                    ir.Constant(ir.VectorType(ir.IntType(32), CHUNK), [0] * CHUNK))
        d = []
        for xi in range(XI):
            k = ir.Constant(i64, xi)
            addr = builder.add(builder.load(builder.gep(ap, [k])),
                               builder.mul(c_, builder.load(builder.gep(sp, [k]))))
            xb = builder.load(builder.inttoptr(addr, vb.as_pointer()), align=1)
            d.append(builder.sub(builder.zext(xb, vw), zv))

        def bt(e0, e1, e2, e3):
            return (builder.sub(e0, e2), builder.add(e1, e2), builder.sub(e2, e1),
                    builder.sub(e1, e3))

        for j in range(4):                      # columns: t = Bᵀ d (over the patch rows i)
            d[j], d[4 + j], d[8 + j], d[12 + j] = bt(d[j], d[4 + j], d[8 + j], d[12 + j])
        for i in range(4):                      # rows: V = t B (over the patch columns j)
            d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3] = bt(*d[4 * i:4 * i + 4])
        for xi in range(XI):
            p = builder.gep(vp, [builder.mul(vs_, ir.Constant(i64, xi))])
            builder.store(d[xi], builder.bitcast(p, vw.as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


_in_chunk = intrinsic(_in_chunk)


@njit(**JIT)
def _input_transform(x1, H, W, C, c0, Cg, RH, RW, dh, dw, pad_t, pad_l, z_x, t0, rows, cp, v, adr,
                     stp, zrow, sadr, sstp, stage):
    """V[ξ, q, c] (int16, row stride cp = v_cols(Cg)) of tiles t0 .. t0 + rows − 1, input
    channels c0 .. c0 + Cg − 1 of the C, one CHUNK of channels at a time in vector registers
    (_in_chunk; the patch positions' addresses in adr / stp, padding reading zrow: CHUNK bytes
    of z_x).  A last, partial chunk reads CHUNK bytes in place too (channels past Cg belong
    to the next pixel or group: their V lanes meet zero weights), except where that would read
    past the end of x1: then the valid bytes are staged in `stage` (u8 [16][CHUNK], z_x
    elsewhere) and transformed from there (sadr / sstp)."""
    for c in range(CHUNK):
        zrow[c] = np.uint8(z_x)
    xa = x1.ctypes.data
    xend = xa + x1.size
    za = zrow.ctypes.data
    sa = stage.ctypes.data
    vs = rows * cp
    last = (Cg - 1) // CHUNK * CHUNK            # the last chunk's first channel
    tail = Cg - last
    for q in range(rows):
        n, oh0, ow0 = _tile(t0 + q, RH, RW, dh, dw)
        far = xa                                 # the largest in-place address
        for i in range(4):
            h = oh0 - pad_t + dh * i
            for j in range(4):
                wc = ow0 - pad_l + dw * j
                if 0 <= h < H and 0 <= wc < W:
                    a = xa + ((n * H + h) * W + wc) * C + c0
                    adr[4 * i + j] = a
                    stp[4 * i + j] = 1
                    far = max(far, a)
                else:
                    adr[4 * i + j] = za
                    stp[4 * i + j] = 0
        for c in range(0, last, CHUNK):
            _in_chunk(adr, stp, c, z_x, v, q * cp + c, vs)
        if far + last + CHUNK <= xend:
            _in_chunk(adr, stp, last, z_x, v, q * cp + last, vs)
            continue
        for k in range(XI):                      # staged: the partial chunk near x's end
            sadr[k] = sa + k * CHUNK
            sstp[k] = 0
            for c in range(CHUNK):
                stage[k * CHUNK + c] = np.uint8(z_x)
            if stp[k] != 0:
                o = adr[k] - xa + last
                for c in range(tail):
                    stage[k * CHUNK + c] = x1[o + c]
        _in_chunk(sadr, sstp, 0, z_x, v, q * cp + last, vs)


@njit(**JIT)
def _requant(s4, b, mu, sh, rnd, zy, lo, hi):
    """uint8 of one output: s4 = 4·dot exactly, then bias, requantize (3.3), z_y, clamp."""
    v = ((((s4 >> 2) + b) * mu + rnd) >> sh) + zy
    return np.uint8(min(max(v, lo), hi))


@njit(**JIT)
def _output_panel(mt, rows, t0, p, M, mbase, Mg, OH, OW, RH, RW, dh, dw, bias, mult, shift, z_y,
                  act_min, act_max, y1):
    """The output transform of panel p of the group whose output channels are mbase ..
    mbase + Mg − 1 (of M): its int32 tiles mt[ξ, q, j] (q < rows, j < 16), then bias,
    requantize, clamp and the uint8 stores of the 2x2 outputs inside the map."""
    m0 = mbase + p * AVX2_NR
    cols = min(AVX2_NR, Mg - p * AVX2_NR)
    zy = np.int64(z_y)
    lo = np.int64(act_min)
    hi = np.int64(act_max)
    st = rows * AVX2_NR                       # stride between the ξ matrices
    for q in range(rows):
        n, oh0, ow0 = _tile(t0 + q, RH, RW, dh, dw)
        if oh0 >= OH or ow0 >= OW:              # a phase's last tile row / column may be empty
            continue
        right = ow0 + dw < OW                   # the tile's second column / row exist
        down = oh0 + dh < OH
        o00 = ((n * OH + oh0) * OW + ow0) * M + m0
        o10 = o00 + dh * OW * M
        base = q * AVX2_NR
        for j in range(cols):
            k = base + j
            a0, a1, a2, a3 = np.int64(mt[k]), np.int64(mt[k + st]), np.int64(mt[k + 2 * st]), np.int64(mt[k + 3 * st])
            b0, b1, b2, b3 = np.int64(mt[k + 4 * st]), np.int64(mt[k + 5 * st]), np.int64(mt[k + 6 * st]), np.int64(mt[k + 7 * st])
            c0, c1, c2, c3 = np.int64(mt[k + 8 * st]), np.int64(mt[k + 9 * st]), np.int64(mt[k + 10 * st]), np.int64(mt[k + 11 * st])
            e0, e1, e2, e3 = np.int64(mt[k + 12 * st]), np.int64(mt[k + 13 * st]), np.int64(mt[k + 14 * st]), np.int64(mt[k + 15 * st])
            u00, u01, u02, u03 = a0 + b0 + c0, a1 + b1 + c1, a2 + b2 + c2, a3 + b3 + c3     # Aᵀ · m
            u10, u11, u12, u13 = b0 - c0 - e0, b1 - c1 - e1, b2 - c2 - e2, b3 - c3 - e3
            ch = m0 + j
            b = np.int64(bias[ch])
            mu = np.int64(mult[ch])
            sh = np.int64(shift[ch])
            rnd = np.int64(1) << (sh - 1)
            y1[o00 + j] = _requant(u00 + u01 + u02, b, mu, sh, rnd, zy, lo, hi)      # · A
            if right:
                y1[o00 + dw * M + j] = _requant(u01 - u02 - u03, b, mu, sh, rnd, zy, lo, hi)
            if down:
                y1[o10 + j] = _requant(u10 + u11 + u12, b, mu, sh, rnd, zy, lo, hi)
                if right:
                    y1[o10 + dw * M + j] = _requant(u11 - u12 - u13, b, mu, sh, rnd, zy, lo, hi)


def _out_tile(typingctx, mt, k, st, tab, toff, m0, nst, y, o00, dx, dy, right, down, lo, hi):
    """Intrinsic: the output stage of one tile for the first nst (1 or 2) 8-channel vectors of a
    16-channel panel.  mt int32: the tile's 16 dot-product vectors M_ξ at mt[k + ξ·st + c]
    (c < 16); the table (vnni.requant_table) starts at byte toff of tab, channel m0 (a multiple
    of 8) being the panel's first.  Output transform in wrapping int32 (module docstring)

        u0c = M_c + M_{4+c} + M_{8+c},   u1c = M_{4+c} − M_{8+c} − M_{12+c}    (c = 0..3)
        d00 = (u00 + u01 + u02) >> 2,    d01 = (u01 − u02 − u03) >> 2          (exact: 4 | sum)
        d10 = (u10 + u11 + u12) >> 2,    d11 = (u11 − u12 − u13) >> 2

    then requantize, z_y and clamp to [lo, hi] from the table (vnni.table_requant_bytes), and
    8·nst byte stores: d00 at y[o00], d01 at y[o00 + dx] if right, d10 at y[o00 + dy] if down,
    d11 at y[o00 + dy + dx] if right and down."""
    sig = types.void(mt, k, st, tab, toff, m0, nst, y, o00, dx, dy, right, down, lo, hi)
    vd = ir.VectorType(ir.IntType(32), AVX2_VL)
    i64 = ir.IntType(64)

    def codegen(context, builder, signature, args):
        (mt_, k_, st_, tab_, toff_, m0_, nst_, y_, o00_, dx_, dy_, right_, down_, lo_, hi_) = args
        sa = signature.args
        mp = builder.gep(_ptr(context, builder, sa[0], mt_, ir.IntType(32)), [k_])
        tp = builder.gep(_ptr(context, builder, sa[3], tab_, ir.IntType(8)), [toff_])
        yp = builder.gep(_ptr(context, builder, sa[7], y_, ir.IntType(8)), [o00_])
        lo = splat_bytes16(builder, lo_)
        hi = splat_bytes16(builder, hi_)
        two = ir.Constant(vd, [2] * AVX2_VL)
        zero = ir.Constant(i64, 0)
        has_r = builder.icmp_signed("!=", right_, zero)
        has_d = builder.icmp_signed("!=", down_, zero)

        def emit(nvec):
            consts = load_table_consts(builder, tp, m0_, nvec, AVX2_VL)
            dots = [[], [], [], []]
            for j in range(nvec):
                m = []
                for xi in range(XI):
                    off = builder.add(builder.mul(st_, ir.Constant(i64, xi)),
                                      ir.Constant(i64, AVX2_VL * j))
                    m.append(builder.load(builder.bitcast(builder.gep(mp, [off]),
                                                          vd.as_pointer()), align=4))
                u0 = [builder.add(builder.add(m[c], m[4 + c]), m[8 + c]) for c in range(4)]
                u1 = [builder.sub(builder.sub(m[4 + c], m[8 + c]), m[12 + c]) for c in range(4)]
                for o, (u, sgn) in enumerate(((u0, 1), (u0, -1), (u1, 1), (u1, -1))):
                    if sgn > 0:
                        v = builder.add(builder.add(u[0], u[1]), u[2])
                    else:
                        v = builder.sub(builder.sub(u[1], u[2]), u[3])
                    dots[2 * (o // 2) + o % 2].append(builder.ashr(v, two))
            outs = [table_requant_bytes(builder, consts, dots[o], AVX2_VL, lo, hi) for o in range(4)]
            bty = outs[0].type

            def store(b, off):
                p = yp if off is None else builder.gep(yp, [off])
                builder.store(b, builder.bitcast(p, bty.as_pointer()), align=1)

            store(outs[0], None)
            with builder.if_then(has_r):
                store(outs[1], dx_)
            with builder.if_then(has_d):
                store(outs[2], dy_)
                with builder.if_then(has_r):
                    store(outs[3], builder.add(dy_, dx_))

        pair = builder.icmp_signed(">", nst_, ir.Constant(i64, 1))
        with builder.if_else(pair) as (both, single):
            with both:
                emit(2)
            with single:
                emit(1)
        return context.get_dummy_value()

    return sig, codegen


_out_tile = intrinsic(_out_tile)


@njit(**JIT)
def _output_panel_table(mt, rows, t0, p, M, mbase, Mg, tcol, OH, OW, RH, RW, dh, dw, tab, toff,
                        act_min, act_max, y1, tmp):
    """_output_panel with the plan-time table (whose channel tcol is the panel's first): 8 or
    16 channels per step in vector lanes (_out_tile).  A panel of another width (the last
    of a group whose width is not a multiple of 8) is computed whole into tmp (u8 [64]) and
    its valid channels copied."""
    m0 = mbase + p * AVX2_NR
    cols = min(AVX2_NR, Mg - p * AVX2_NR)
    whole = cols == AVX2_NR or cols == AVX2_VL
    nst = 2 if cols > AVX2_VL else 1
    st = rows * AVX2_NR
    dx = dw * M
    dy = dh * OW * M
    for q in range(rows):
        n, oh0, ow0 = _tile(t0 + q, RH, RW, dh, dw)
        if oh0 >= OH or ow0 >= OW:              # a phase's last tile row / column may be empty
            continue
        right = 1 if ow0 + dw < OW else 0       # the tile's second column / row exist
        down = 1 if oh0 + dh < OH else 0
        o00 = ((n * OH + oh0) * OW + ow0) * M + m0
        if whole:
            _out_tile(mt, q * AVX2_NR, st, tab, toff, tcol, nst, y1, o00, dx, dy, right, down,
                      act_min, act_max)
        else:
            _out_tile(mt, q * AVX2_NR, st, tab, toff, tcol, 2, tmp, 0, AVX2_NR, 2 * AVX2_NR, 1, 1,
                      act_min, act_max)
            for a in range(1 + down):
                for e in range(1 + right):
                    o = o00 + a * dy + e * dx
                    src = (2 * a + e) * AVX2_NR
                    for j in range(cols):
                        y1[o + j] = tmp[src + j]


@njit(**JIT)
def _item(x1, geo, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, y1, blk, g, pa, pb,
          slot):
    """One work item: tile block blk, conv group g, its panels pa .. pb − 1, in the scratch
    slice `slot`."""
    N, H, W, C, OH, OW, M, pad_t, pad_l, dh, dw, group = geo
    Cg, Mg = C // group, M // group
    RH, RW = tile_grid(OH, OW, dh, dw)
    T = N * RH * RW
    tb = block_tiles(Cg)
    t0 = blk * tb
    rows = min(tb, T - t0)
    ng = padded_groups(Cg, AVX2_G)
    cp = v_cols(Cg)
    npan = (Mg + AVX2_NR - 1) // AVX2_NR
    vbytes = ((XI * tb * cp * 2 + 63) // 64) * 64
    v = slot[:XI * tb * cp * 2].view(np.int16)
    tbytes = ((XI * tb * AVX2_NR * 4 + 63) // 64) * 64
    mt = slot[vbytes:vbytes + XI * tb * AVX2_NR * 4].view(np.int32)
    e = vbytes + tbytes                          # TAIL_BYTES of work space (see its comment)
    tmp = slot[e:e + 4 * AVX2_NR]
    e += 64
    adr = slot[e:e + 8 * XI].view(np.int64)
    stp = slot[e + 8 * XI:e + 16 * XI].view(np.int64)
    sadr = slot[e + 16 * XI:e + 24 * XI].view(np.int64)
    sstp = slot[e + 24 * XI:e + 32 * XI].view(np.int64)
    e += 32 * XI
    zrow = slot[e:e + CHUNK]
    stage = slot[e + CHUNK:e + CHUNK + XI * CHUNK]
    _input_transform(x1, H, W, C, g * Cg, Cg, RH, RW, dh, dw, pad_t, pad_l, z_x, t0, rows, cp, v,
                     adr, stp, zrow, sadr, sstp, stage)
    va = slot[:XI * tb * cp * 2]
    ars = 2 * cp                                 # bytes per row of V_ξ
    pbytes = ng * AVX2_NR * AVX2_G * 2           # bytes per (ξ, panel) of U
    mgp = npan * AVX2_NR
    toff = table_offset(wpack, LAYOUT_HEADER + group * XI * npan * pbytes, group * mgp, 9 * Cg, 0,
                        z_y)
    for p in range(pa, pb):
        for xi in range(XI):
            boff = LAYOUT_HEADER + ((g * XI + xi) * npan + p) * pbytes
            for r0 in range(0, rows, AVX2_MR):
                mr = min(AVX2_MR, rows - r0)
                _ukernel_w(mr, va, (xi * rows + r0) * ars, ars, 4, wpack, boff, ng,
                           mt[(xi * rows + r0) * AVX2_NR:])
        if toff >= 0:
            _output_panel_table(mt, rows, t0, p, M, g * Mg, Mg, g * mgp + p * AVX2_NR, OH, OW, RH,
                                RW, dh, dw, wpack, toff, act_min, act_max, y1, tmp)
        else:
            _output_panel(mt, rows, t0, p, M, g * Mg, Mg, OH, OW, RH, RW, dh, dw, bias, mult,
                          shift, z_y, act_min, act_max, y1)


@njit(**JIT)
def _plan(N, OH, OW, dh, dw, Cg, Mg, group, nthreads):
    """(blocks, panel splits, workers) for the per-group widths Cg, Mg: at least as many
    items (block, group, panel range) as workers where possible."""
    RH, RW = tile_grid(OH, OW, dh, dw)
    tb = block_tiles(Cg)
    nblk = (N * RH * RW + tb - 1) // tb
    npan = (Mg + AVX2_NR - 1) // AVX2_NR
    nsplit = 1 if nblk * group >= 4 * nthreads else min(npan, nthreads)
    nt = min(nthreads, nblk * group * nsplit)
    return nblk, nsplit, nt


@njit(**JIT)
def _worker(w, nt, nsplit, nitems, x1, geo, z_x, wpack, bias, mult, shift, z_y, act_min,
            act_max, y1, scratch, sb):
    group = geo[11]
    npan = (geo[6] // group + AVX2_NR - 1) // AVX2_NR
    slot = scratch[w * sb:(w + 1) * sb]
    for it in range(w, nitems, nt):               # item = (block, group, panel range)
        blk = it // (group * nsplit)
        r = it - blk * group * nsplit
        g = r // nsplit
        pa, pb = _split(npan, nsplit, r - g * nsplit)
        if pb > pa:
            _item(x1, geo, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, y1, blk, g, pa,
                  pb, slot)


@njit(**PJIT)
def _par(nt, nsplit, nitems, x1, geo, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, y1,
         scratch, sb):
    for w in prange(nt):
        xcall(_worker, w, nt, nsplit, nitems, x1, geo, z_x, wpack, bias, mult, shift, z_y,
              act_min, act_max, y1, scratch, sb)


@njit(**JIT)
def winograd_conv_u8_avx2(x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, pad_t, pad_l,
                          dh, dw, group, y, scratch):
    """y uint8 [N, OH, OW, M] = the 3x3 stride-1 QConv (dilations dh, dw; `group` groups) of
    x uint8 [N, H, W, C] (NHWC) with the weights of pack_winograd_weights; scratch:
    winograd_scratch_size(C, M, threads, group) bytes."""
    N, H, W, C = x.shape
    OH, OW, M = y.shape[1], y.shape[2], y.shape[3]
    if N * OH * OW * M == 0:
        return
    if group < 1 or C % group or M % group:
        raise ValueError("winograd_conv_u8_avx2: group does not divide C and M")
    sb = _slice_bytes(C // group, M // group)
    if scratch.size < sb:
        raise ValueError("winograd_conv_u8_avx2: scratch smaller than one worker's slice")
    nblk, nsplit, nt = _plan(N, OH, OW, dh, dw, C // group, M // group, group, scratch.size // sb)
    geo = (N, H, W, C, OH, OW, M, pad_t, pad_l, dh, dw, group)
    x1 = x.reshape(-1)
    y1 = y.reshape(-1)
    nitems = nblk * group * nsplit
    if nt == 1:
        xcall(_worker, 0, 1, nsplit, nitems, x1, geo, z_x, wpack, bias, mult, shift, z_y,
              act_min, act_max, y1, scratch, sb)
    else:
        xcall(_par, nt, nsplit, nitems, x1, geo, z_x, wpack, bias, mult, shift, z_y,
              act_min, act_max, y1, scratch, sb)
