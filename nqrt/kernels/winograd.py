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
from numba import njit, prange

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.fixedpoint import offset_requant
from nqrt.kernels.vnni import (AVX2_G, AVX2_MR, AVX2_NR, AVX2_NV, LAYOUT_HEADER, _make_ukernel,
                               _split, padded_groups)

LAYOUT_WINOGRAD = 3     # header byte 0 (vnni: 0 pairs, 1 quads; grouped: 2)
WINO_MAX_C = 1024       # C·1020·1143 < 2^31 with margin (int32 accumulators)
# Below these channel counts the transforms (per tile: ∝ C in, ∝ M out) cost more than the
# multiply-adds saved (∝ C·M): measured on the avx2 VM, batch 1 and 8, 2 threads, Winograd
# against the direct kernel: C=3 M=32 224² 0.24x, C=16 M=16 0.57x, C=32 M=32 0.93-0.96x,
# C=40 M=40 0.94x, C=96 M=24 0.96x, C=64 M=16 1.07x; C=48 M=48 1.20x, C=64 M=32 1.27x,
# C=64 M=64 1.42x, C=128 M=32 1.49x, C=256 M=256 1.76x.
WINO_MIN_C, WINO_MIN_M = 48, 32
XI = 16                 # positions of the 4x4 transformed patch
A_BUDGET = 96 * 1024    # bytes of V per block (L2-resident while the panels run over it)

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


TABLE_HEAD = 8          # flag (1: usable), z_y, pad, M (u32)


def with_winograd_table(wpack, C, bias, mult, shift, z_y, group=1):
    """Plan time: wpack (pack_winograd_weights, any table it had dropped) followed by the
    requantize table for these bias / multipliers / output zero point (module docstring);
    C = input channels of the whole conv.  Each group's channels are padded to whole panels:
    channel m = g·Mg + j sits at g·Mgp + j."""
    M = len(bias)
    cg, mg = C // group, M // group
    ng = padded_groups(cg, AVX2_G)
    npan = max(1, -(-mg // AVX2_NR))
    ubytes = LAYOUT_HEADER + group * XI * npan * ng * AVX2_NR * AVX2_G * 2
    mgp = npan * AVX2_NR
    mp = group * mgp
    amax = 9 * int(cg) * 255 * 127
    m0s = np.zeros(mp, np.int32)
    bcs = np.zeros(mp, np.int64)
    shs = np.ones(mp, np.int64)
    zds = np.zeros(mp, np.int32)
    ok = 1
    for c in range(M):
        good, bc, off = offset_requant(int(bias[c]), amax, int(mult[c]), int(shift[c]))
        if not good:
            ok = 0
            break
        k = (c // mg) * mgp + c % mg
        m0s[k], bcs[k], shs[k], zds[k] = int(mult[c]), bc, int(shift[c]), int(z_y) - off
    head = np.zeros(TABLE_HEAD, np.uint8)
    head[0], head[1] = ok, int(z_y)
    head[4:8] = np.array([M], np.uint32).view(np.uint8)
    parts = [np.asarray(wpack, np.int8).reshape(-1)[:ubytes], head.view(np.int8)] + \
        [a.view(np.int8) for a in (m0s, bcs, shs, zds)]
    return np.concatenate(parts)


def winograd_eligible(C, M, kh, kw, sh, sw, dh, dw, group) -> bool:
    """Whether a QConv runs as Winograd F(2x2, 3x3) on the avx2 path: 3x3, stride 1, any
    dilation (DeepLab's and FCN's dilated ResNets), groups of at least WINO_MIN_C input and
    WINO_MIN_M output channels (each group is its own Winograd convolution)."""
    if group < 1 or C % group or M % group:
        return False
    cg, mg = C // group, M // group
    return (kh, kw, sh, sw) == (3, 3, 1, 1) and dh >= 1 and dw >= 1 \
        and WINO_MIN_C <= cg <= WINO_MAX_C and mg >= WINO_MIN_M


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
def block_tiles(C):
    """Tiles per block: a multiple of MR with about A_BUDGET bytes of V, in [6, 48]."""
    ng = padded_groups(C, AVX2_G)
    tb = (A_BUDGET // (XI * ng * AVX2_G * 2)) // AVX2_MR * AVX2_MR
    return min(max(tb, AVX2_MR), 8 * AVX2_MR)


@njit(**JIT)
def _slice_bytes(C, M):
    """Bytes of one worker's scratch: V [16][TB][Cp] int16, the int32 tiles [16][TB][16] and
    the input patch being transformed, [16][C] int16 (each part 64-byte aligned)."""
    tb = block_tiles(C)
    cp = padded_groups(C, AVX2_G) * AVX2_G
    v = ((XI * tb * cp * 2 + 63) // 64) * 64
    t = ((XI * tb * AVX2_NR * 4 + 63) // 64) * 64
    return v + t + ((XI * C * 2 + 63) // 64) * 64 + 256


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


@njit(**JIT)
def _input_transform(x1, H, W, C, c0, Cg, RH, RW, dh, dw, pad_t, pad_l, z_x, t0, rows, cp, v, d):
    """V[ξ, q, c] (int16, row stride cp) of tiles t0 .. t0 + rows − 1, input channels
    c0 .. c0 + Cg − 1 of the C; d: int16 [16, Cg] work space for one patch."""
    zx = np.int16(z_x)
    for q in range(rows):
        n, oh0, ow0 = _tile(t0 + q, RH, RW, dh, dw)
        for i in range(4):
            h = oh0 - pad_t + dh * i
            for j in range(4):
                wc = ow0 - pad_l + dw * j
                row = d[4 * i + j]
                if 0 <= h < H and 0 <= wc < W:
                    o = ((n * H + h) * W + wc) * C + c0
                    src = x1[o:o + Cg]
                    for c in range(Cg):
                        row[c] = np.int16(src[c]) - zx
                else:
                    row[:] = 0
        for j in range(4):                      # columns: t = Bᵀ d (over the patch rows i)
            _bt(d[j], d[4 + j], d[8 + j], d[12 + j], d[j], d[4 + j], d[8 + j], d[12 + j], Cg)
        for i in range(4):                      # rows: V = t B (over the patch columns j)
            o = ((4 * i) * rows + q) * cp       # V_ξ rows of ξ = 4i .. 4i + 3 are rows·cp apart
            s = rows * cp
            _bt(d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3], v[o:o + Cg], v[o + s:o + s + Cg],
                v[o + 2 * s:o + 2 * s + Cg], v[o + 3 * s:o + 3 * s + Cg], Cg)


@njit(inline="always", **JIT)
def _bt(e0, e1, e2, e3, o0, o1, o2, o3, C):
    """(o0, o1, o2, o3) = Bᵀ (e0, e1, e2, e3), vectors of C int16: e0 − e2, e1 + e2, e2 − e1,
    e1 − e3 (the outputs may be the inputs: each c is read before it is written)."""
    for c in range(C):
        a0, a1, a2, a3 = e0[c], e1[c], e2[c], e3[c]
        o0[c] = a0 - a2
        o1[c] = a1 + a2
        o2[c] = a2 - a1
        o3[c] = a1 - a3


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


@njit(**JIT)
def _output_panel_table(mt, rows, t0, p, M, mbase, Mg, tbase, OH, OW, RH, RW, dh, dw, tm0, tbc,
                        tsh, tzd, act_min, act_max, y1, dots):
    """_output_panel with the plan-time table (the group's entries from tbase): 16 channels
    per step in vector lanes; dots: int32 [4, 16] work space."""
    m0 = mbase + p * AVX2_NR
    cols = min(AVX2_NR, Mg - p * AVX2_NR)
    lo = np.int32(act_min)
    hi = np.int32(act_max)
    st = rows * AVX2_NR
    k0 = tbase + p * AVX2_NR
    cm0 = tm0[k0:k0 + AVX2_NR]
    cbc = tbc[k0:k0 + AVX2_NR]
    csh = tsh[k0:k0 + AVX2_NR]
    czd = tzd[k0:k0 + AVX2_NR]
    for q in range(rows):
        n, oh0, ow0 = _tile(t0 + q, RH, RW, dh, dw)
        if oh0 >= OH or ow0 >= OW:
            continue
        k = q * AVX2_NR
        for j in range(AVX2_NR):              # wrapping int32: exact mod 2^32 (docstring)
            a0, a1, a2, a3 = mt[k + j], mt[k + st + j], mt[k + 2 * st + j], mt[k + 3 * st + j]
            b0, b1, b2, b3 = mt[k + 4 * st + j], mt[k + 5 * st + j], mt[k + 6 * st + j], mt[k + 7 * st + j]
            c0, c1, c2, c3 = mt[k + 8 * st + j], mt[k + 9 * st + j], mt[k + 10 * st + j], mt[k + 11 * st + j]
            e0, e1, e2, e3 = mt[k + 12 * st + j], mt[k + 13 * st + j], mt[k + 14 * st + j], mt[k + 15 * st + j]
            u00 = np.int32(np.int32(a0 + b0) + c0)
            u01 = np.int32(np.int32(a1 + b1) + c1)
            u02 = np.int32(np.int32(a2 + b2) + c2)
            u03 = np.int32(np.int32(a3 + b3) + c3)
            u10 = np.int32(np.int32(b0 - c0) - e0)
            u11 = np.int32(np.int32(b1 - c1) - e1)
            u12 = np.int32(np.int32(b2 - c2) - e2)
            u13 = np.int32(np.int32(b3 - c3) - e3)
            dots[0, j] = np.int32(np.int32(u00 + u01) + u02) >> 2
            dots[1, j] = np.int32(np.int32(u01 - u02) - u03) >> 2
            dots[2, j] = np.int32(np.int32(u10 + u11) + u12) >> 2
            dots[3, j] = np.int32(np.int32(u11 - u12) - u13) >> 2
        o00 = ((n * OH + oh0) * OW + ow0) * M + m0
        for a in range(2):
            if oh0 + a * dh >= OH:
                break
            for e in range(2):
                if ow0 + e * dw >= OW:
                    break
                dd = dots[2 * a + e]
                o = o00 + (a * dh * OW + e * dw) * M
                out = y1[o:o + cols]
                for j in range(cols):     # num in [0, 2^62), num >> SH < 2^30 (offset_requant)
                    num = np.uint64(np.int64(dd[j]) * np.int64(cm0[j]) + cbc[j])
                    v = np.int32(np.int32(num >> np.uint64(csh[j])) + czd[j])
                    out[j] = np.uint8(min(max(v, lo), hi))


@njit(**JIT)
def _table(wpack, ubytes, mp, M, z_y):
    """(ok, M0, BC, SH, ZD) views of the table of mp entries after ubytes bytes of U; ok False
    when absent or built for another M or output zero point, or unusable."""
    size = TABLE_HEAD + mp * 24
    e32 = np.zeros(0, np.int32)
    e64 = np.zeros(0, np.int64)
    if wpack.size != ubytes + size:
        return False, e32, e64, e64, e32
    h = wpack[ubytes:ubytes + TABLE_HEAD].view(np.uint8)
    m = np.int64(h[4]) | (np.int64(h[5]) << 8) | (np.int64(h[6]) << 16) | (np.int64(h[7]) << 24)
    if h[0] != 1 or np.int64(h[1]) != z_y or m != M:
        return False, e32, e64, e64, e32
    o = ubytes + TABLE_HEAD
    tm0 = wpack[o:o + 4 * mp].view(np.int32)
    tbc = wpack[o + 4 * mp:o + 12 * mp].view(np.int64)
    tsh = wpack[o + 12 * mp:o + 20 * mp].view(np.int64)
    tzd = wpack[o + 20 * mp:o + 24 * mp].view(np.int32)
    return True, tm0, tbc, tsh, tzd


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
    cp = ng * AVX2_G
    npan = (Mg + AVX2_NR - 1) // AVX2_NR
    vbytes = ((XI * tb * cp * 2 + 63) // 64) * 64
    v = slot[:XI * tb * cp * 2].view(np.int16)
    tbytes = ((XI * tb * AVX2_NR * 4 + 63) // 64) * 64
    mt = slot[vbytes:vbytes + XI * tb * AVX2_NR * 4].view(np.int32)
    d = slot[vbytes + tbytes:vbytes + tbytes + XI * Cg * 2].view(np.int16).reshape((XI, Cg))
    dbytes = ((XI * Cg * 2 + 63) // 64) * 64
    dots = slot[vbytes + tbytes + dbytes:vbytes + tbytes + dbytes + 256].view(np.int32).reshape((4, AVX2_NR))
    _input_transform(x1, H, W, C, g * Cg, Cg, RH, RW, dh, dw, pad_t, pad_l, z_x, t0, rows, cp, v, d)
    va = slot[:XI * tb * cp * 2]
    ars = 2 * cp                                 # bytes per row of V_ξ
    pbytes = ng * AVX2_NR * AVX2_G * 2           # bytes per (ξ, panel) of U
    mgp = npan * AVX2_NR
    ok, tm0, tbc, tsh, tzd = _table(wpack, LAYOUT_HEADER + group * XI * npan * pbytes, group * mgp,
                                    M, z_y)
    for p in range(pa, pb):
        for xi in range(XI):
            boff = LAYOUT_HEADER + ((g * XI + xi) * npan + p) * pbytes
            for r0 in range(0, rows, AVX2_MR):
                mr = min(AVX2_MR, rows - r0)
                _ukernel_w(mr, va, (xi * rows + r0) * ars, ars, 4, wpack, boff, ng,
                           mt[(xi * rows + r0) * AVX2_NR:])
        if ok:
            _output_panel_table(mt, rows, t0, p, M, g * Mg, Mg, g * mgp, OH, OW, RH, RW, dh, dw,
                                tm0, tbc, tsh, tzd, act_min, act_max, y1, dots)
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
