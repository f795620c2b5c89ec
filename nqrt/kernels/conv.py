"""QConv (spec 4.1) on NHWC uint8 activations.

    y[n, oh, ow, m] = clamp(requantize(Σ_{i,j,c∈group(m)} (x_pad[n, oh·sh − pad_t + i·dh,
                      ow·sw − pad_l + j·dw, c] − z_x)·w[m, c, i, j] + bias[m]) + z_y)

x uint8 [N, H, W, C], y uint8 [N, OH, OW, M], both C-contiguous; OH/OW come from y (the
planner resolves pads/ceil); positions outside x read as z_x, so they contribute exactly 0.

One kernel per GEMM path (nqrt.kernels.cpu: "portable", "avx2", "vnni512"), same signature:
`conv2d_u8` (portable), `conv2d_u8_avx2`, `conv2d_u8_vnni512`.  Weights are packed for one path
(`pack_conv_weights(w, group, path)`) and the scratch sized for it (`conv_scratch_size(...,
path)`).  Within a kernel, four cases chosen from shapes only (the same predicates as the
packer):

* depthwise (group == C == M): `nqrt.kernels.depthwise`.  Portable: generic vector kernel,
  packed int8 [kh, kw, C]; avx2 / vnni512: tap pairs through vpmaddwd, packed by
  pack_depthwise_weights_x86 (interleaved int16 tap pairs, then the int8 [kh, kw, C] layout).
* narrow groups on the x86 paths (8 or 16 output and a multiple of 4 input channels per group,
  or pairs of 4 x 4 groups: `grouped.grouped_direct`): `nqrt.kernels.grouped`, an avx2 kernel
  also on the vnni512 path, no im2col (pack_grouped_weights).
* pointwise (1x1, stride 1, no padding, group 1): a GEMM on x viewed as [N·H·W, C] (portable:
  gemm.gemm_u8; fast: the packed GEMM of vnni.py).
* general:
  - portable: per output row (n, oh) and group g, an im2col row block col[OW, Kg] (Kg =
    kh·kw·Cg, order (i, j, c), padding = z_x) in the thread's scratch, then `gemm_tile` against
    the group's weights int8 [Mgp, Kg] (Mgp = Mg rounded up to NR, zero rows).
  - fast: output pixels (rows of y viewed as [N·OH·OW, M]) in chunks of `plan_mc` rows
    (~160 KB of packed A per thread, L2); each chunk is gathered pixel by pixel (im2col, MR
    pixels at a time into a small L1 buffer) and transposed straight into the micro-kernel's
    A-panel layout (vnni.py), then the fused-requantize micro-kernels write y directly (row
    stride M; group g's columns start at g·Mg).  Packed weights: per group, vnni.pack_b of
    w_g[Mg, Kg] (k order (i, j, c)), groups concatenated.

Threads: the scratch holds T slices (T = the planner's thread count; the kernels derive T from
the scratch size, not numba.get_num_threads(), which would make them uncacheable).  Each output
is computed by exactly one thread with exact int32/int64 arithmetic, so results are identical
for any thread count.  The fast general path splits pixel micro-panels between threads, or
(few pixels, many channels: deep layers at batch 1) the output channel panels.
"""

import numpy as np
from numba import njit, prange

from nqrt.kernels import vnni
from nqrt.kernels._jit import JIT, PJIT, fetch_add, xcall, xcall_lazy
from nqrt.kernels.depthwise import VL as DW_VL
from nqrt.kernels.depthwise import (append_depthwise_table, depthwise_conv_u8, depthwise_conv_u8_x86,
                                    depthwise_scratch_bytes, depthwise_scratch_bytes_x86,
                                    pack_depthwise_weights, pack_depthwise_weights_x86,
                                    pack_staged_depthwise)
from nqrt.kernels.gemm import NR, gemm_tile, gemm_u8
from nqrt.kernels.rowcopy import copy_runs
from nqrt.kernels.winograd import LAYOUT_WINOGRAD, winograd_conv_u8_avx2
from nqrt.kernels.grouped import (LAYOUT_GROUPED, direct_shape, grouped_conv_u8_avx2,
                                  grouped_direct, grouped_slice_bytes, pack_grouped_weights)
from nqrt.kernels.vnni import (AVX2_G, AVX2_MR, AVX2_NR, AVX2_VL, V512_G, V512_MR, V512_NR,
                               _epilogue, _ukernel_avx2, _ukernel_avx2q,
                               _ukernelq_avx2, _ukernelq_avx2q, _ukernelq_v512, fast_threads,
                               block_rows, padded_groups, plan_mc, work_blocks)

ALIGN = 64        # scratch slices start on cache lines
PATHS = ("vnni512", "avx2", "portable")


@njit(**JIT)
def is_depthwise(C, M, group):
    """The depthwise path (and packed layout) is used iff group == C == M."""
    return group == C and group == M


def merge_groups(C, M, group, path="portable"):
    """How many neighbouring groups of a grouped (not depthwise) conv to run as one, with
    block-diagonal weights (merge_group_weights), on the x86 paths: groups narrower than a
    micro-panel (NR = 16 output channels on avx2, 64 on vnni512; RegNet's 8 or ResNeXt's 4
    channels per group) otherwise fill a fraction of each panel, take the scalar epilogue when
    the group is not a multiple of 8 channels (avx2), and pack im2col rows in runs of C/group
    bytes.
    Merged, a panel holds f groups and the runs are f times longer; the added products are
    with zero weights, so results are unchanged.  Returns f >= 1 dividing `group`."""
    if path not in ("avx2", "vnni512") or group <= 1 or is_depthwise(C, M, group):
        return 1
    if grouped_direct(C, M, group, path):
        return 1                            # the direct grouped kernel reads x as it is
    nr = V512_NR if path == "vnni512" else AVX2_NR
    mg = M // group
    f = 1
    for d in range(2, group + 1):
        if group % d == 0 and d * mg <= nr:
            f = d
    return f


def merge_group_weights(w, group, f):
    """int8 w[M, C/group, kh, kw] -> the same conv with group / f groups: w'[M, f·C/group, kh,
    kw], output channel m of old group g reading its own C/group input channels at offset
    (g mod f)·C/group of its new group's, zeros elsewhere (block diagonal)."""
    M, cg = w.shape[:2]
    mg = M // group
    out = np.zeros((M, f * cg, *w.shape[2:]), dtype=w.dtype)
    for m in range(M):
        j = (m // mg) % f
        out[m, j * cg:(j + 1) * cg] = w[m]
    return out


@njit(**JIT)
def is_pointwise(kh, kw, sh, sw, pad_t, pad_l, group, H, W, OH, OW):
    """The pointwise (plain GEMM) path: 1x1, stride 1, no padding, group 1."""
    return (kh == 1 and kw == 1 and sh == 1 and sw == 1 and pad_t == 0 and pad_l == 0
            and group == 1 and OH == H and OW == W)


@njit(**JIT)
def _align(n):
    return -(-n // ALIGN) * ALIGN


@njit(**JIT)
def scratch_slice_bytes(C, M, kh, kw, OW, group):
    """Bytes of scratch one thread needs on the portable path (a multiple of ALIGN)."""
    if is_depthwise(C, M, group):
        need = depthwise_scratch_bytes(C, kh, kw, OW)
    else:
        need = OW * kh * kw * (C // group)            # one im2col row block col[OW, Kg]
    return max(ALIGN, _align(need))


@njit(**JIT)
def _fast_geometry(P, Kg, G, MR, NR_):
    """(ng, mc, tile, per): k-groups, pixels per chunk (~A_BLOCK_BYTES of packed A), bytes of
    the int32 edge tile, and the bytes of one thread's slice (tile + packed A chunk)."""
    ng = padded_groups(Kg, G)
    mc = plan_mc(P, ng, MR)
    tile = _align(MR * NR_ * 4)
    return ng, mc, tile, tile + _align(mc * ng * 4)


@njit(**JIT)
def _isa_consts(isa512):
    if isa512:
        return V512_G, V512_MR, V512_NR
    return AVX2_G, AVX2_MR, AVX2_NR


@njit(**JIT)
def fast_slice_bytes(N, H, W, C, M, kh, kw, OH, OW, group, isa512):
    """Bytes of one thread's scratch slice for a non-depthwise conv on a fast path: the general
    path's, or for a 1x1 group-1 shape (pointwise when stride 1 and no padding, which the size
    does not know) the larger of it and the GEMM's."""
    G, MR, NR_ = _isa_consts(isa512)
    P = max(N * OH * OW, 1)
    per = _fast_geometry(P, kh * kw * (C // group), G, MR, NR_)[3]
    if kh == 1 and kw == 1 and group == 1 and OH == H and OW == W:
        per = max(per, vnni.thread_scratch_bytes(max(N * H * W, 1), padded_groups(C, G), MR, NR_))
    return per


def _check_path(path):
    if path not in PATHS:
        raise ValueError(f"unknown GEMM path {path!r}; expected one of {PATHS}")
    return path


def conv_scratch_size(N, H, W, C, M, kh, kw, OH, OW, group, nthreads, path="portable"):
    """Bytes of uint8 scratch the `path` conv kernel needs to run with up to `nthreads` threads."""
    _check_path(path)
    nthreads = max(int(nthreads), 1)
    if path == "portable":
        return nthreads * int(scratch_slice_bytes(C, M, kh, kw, OW, group))
    if is_depthwise(C, M, group):
        return nthreads * int(x86_dw_slice_bytes(C, kh, kw, W))
    if grouped_direct(C, M, group, path):
        return nthreads * int(_align(grouped_slice_bytes(C, kh, kw, W, group)))
    return nthreads * int(fast_slice_bytes(N, H, W, C, M, kh, kw, OH, OW, group,
                                           path == "vnni512"))


FLAT_MAX_C = 4      # C <= this at stride 1 in W: the unstaged flat loop beats staging
# (RepGhostNet-0.5, 112x112 at batch 1, 2 threads: C = 4 flat 57 us vs staged 74 us; C = 8
# flat 103 vs staged 74; C = 12 flat 152 vs staged 74; stride 2: scalar 167-252 vs staged 26)


def with_depthwise_table(wpack, path, C, kh, kw, bias, mult, shift, z_x, z_y, sw=1):
    """Plan time, for a depthwise QConv packed for `path`: on the x86 paths (avx2, vnni512)
    wpack with the requantize records for these zero points appended (built once instead of
    per call and thread; a kernel given other zero points builds its own: same results), or,
    for C < 16 channels (but not C <= FLAT_MAX_C at stride sw = 1 along W), repacked for 16
    (the staged kernel, depthwise.pack_staged_depthwise);
    the portable packing unchanged."""
    _check_path(path)
    if path == "portable":
        return wpack
    if C < DW_VL and not (sw == 1 and C <= FLAT_MAX_C):   # run as DW_VL channels (staged)
        w = np.asarray(wpack, np.int8)[:kh * kw * C].reshape(kh, kw, C).transpose(2, 0, 1)
        staged = pack_staged_depthwise(w[:, None], bias, mult, shift, z_x, z_y)
        if staged is not None:
            return staged
    return append_depthwise_table(wpack, C, kh, kw, bias, mult, shift, z_x, z_y)


def pack_conv_weights(w, group, path="portable"):
    """int8 w[M, C/g, kh, kw] -> (wpack int8[:], wsum int32[M]) in `path`'s layout (private)."""
    _check_path(path)
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 4:
        raise ValueError(f"expected int8[M, C/g, kh, kw] weights, got {w.dtype}{list(w.shape)}")
    M, cg, kh, kw = w.shape
    if group < 1 or M % group:
        raise ValueError(f"group {group} does not divide M = {M}")
    wsum = w.reshape(M, -1).astype(np.int32).sum(axis=1, dtype=np.int32)
    if is_depthwise(cg * group, M, group):
        if path == "portable":
            return pack_depthwise_weights(w), wsum
        return pack_depthwise_weights_x86(w), wsum
    if grouped_direct(cg * group, M, group, path):
        return pack_grouped_weights(w, group), wsum
    mg = M // group
    kg = kh * kw * cg
    wk = w.transpose(0, 2, 3, 1).reshape(group, mg, kg)          # k order (i, j, c)
    if path == "avx2":          # the layout (and kernel) the weights' range allows
        isa = vnni.avx2_isa(w)
        parts = [vnni.pack_b(wk[g], isa)[0] for g in range(group)]
        return vnni.with_layout_header(np.concatenate(parts), isa), wsum
    if path != "portable":
        parts = [vnni.pack_b(wk[g], path)[0] for g in range(group)]
        return np.concatenate(parts), wsum
    mgp = -(-mg // NR) * NR
    wpack = np.zeros((group, mgp, kg), dtype=np.int8)
    wpack[:, :mg] = wk
    return wpack.reshape(-1), wsum


# ----------------------------------------------------------------------------- portable path
@njit(**JIT)
def _im2col_row(x, n, oh, c0, Cg, kh, kw, sh, sw, dh, dw, pad_t, pad_l, z_x, col):
    """col[ow, (i·kw + j)·Cg + c] = x_pad[n, oh·sh − pad_t + i·dh, ow·sw − pad_l + j·dw, c0 + c]."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    OW = col.shape[0]
    zx = np.uint8(z_x)
    for ow in range(OW):
        dst = col[ow]
        iw0 = ow * sw - pad_l
        for i in range(kh):
            ih = oh * sh - pad_t + i * dh
            k0 = i * kw * Cg
            if ih < 0 or ih >= H:
                row = dst[k0:k0 + kw * Cg]
                for k in range(kw * Cg):
                    row[k] = zx
            elif dw == 1 and Cg == C and iw0 >= 0 and iw0 + kw <= W:
                src = x[n, ih, iw0:iw0 + kw].reshape(kw * C)     # kw·C contiguous bytes
                row = dst[k0:k0 + kw * C]
                for k in range(kw * C):
                    row[k] = src[k]
            else:
                for j in range(kw):
                    iw = iw0 + j * dw
                    seg = dst[k0 + j * Cg:k0 + (j + 1) * Cg]
                    if iw < 0 or iw >= W:
                        for c in range(Cg):
                            seg[c] = zx
                    else:
                        src = x[n, ih, iw, c0:c0 + Cg]
                        for c in range(Cg):
                            seg[c] = src[c]


@njit(**PJIT)
def _conv_im2col(x, z_x, w3, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                 dh, dw, pad_t, pad_l, group, y, scratch, slice_bytes):
    N, OH, OW, M = y.shape
    C = x.shape[3]
    Cg = C // group
    Mg = M // group
    Kg = kh * kw * Cg
    Mgp = w3.shape[1]
    R = N * OH
    nt = min(scratch.size // slice_bytes, R)    # one scratch slice per prange iteration
    for t in prange(nt):
        col = scratch[t * slice_bytes:t * slice_bytes + OW * Kg].reshape((OW, Kg))
        for r in range(t * R // nt, (t + 1) * R // nt):
            n = r // OH
            oh = r - n * OH
            for g in range(group):
                _im2col_row(x, n, oh, g * Cg, Cg, kh, kw, sh, sw, dh, dw, pad_t, pad_l, z_x, col)
                gemm_tile(col, 0, OW, w3[g], 0, Mgp, Mg, g * Mg, z_x, wsum, bias, mult, shift,
                          z_y, act_min, act_max, y[n, oh])


@njit(**JIT)
def conv2d_u8(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
              dh, dw, pad_t, pad_l, group, y, scratch):
    """QConv, portable path (weights from pack_conv_weights(w, group)); see the module
    docstring.  bias/mult/shift int32 [M]; scratch uint8 of at least
    one slice; conv_scratch_size(..., nthreads) gives nthreads slices = nthreads parallel
    chunks of rows."""
    N, H, W, C = x.shape
    OH, OW, M = y.shape[1], y.shape[2], y.shape[3]
    if N * OH * OW * M == 0:
        return
    if is_depthwise(C, M, group):
        sb = scratch_slice_bytes(C, M, kh, kw, OW, group)
        if scratch.size < sb:
            raise ValueError("conv2d_u8: scratch smaller than one thread's slice")
        depthwise_conv_u8(x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                          dh, dw, pad_t, pad_l, y, scratch, sb)
    elif is_pointwise(kh, kw, sh, sw, pad_t, pad_l, group, H, W, OH, OW):
        gemm_u8(x.reshape((N * H * W, C)), z_x, wpack, wsum, bias, mult, shift, z_y, act_min,
                act_max, y.reshape((N * OH * OW, M)))
    else:
        sb = scratch_slice_bytes(C, M, kh, kw, OW, group)
        if scratch.size < sb:
            raise ValueError("conv2d_u8: scratch smaller than one thread's slice")
        Mgp = -(-(M // group) // NR) * NR
        _conv_im2col(x, z_x, wpack.reshape((group, Mgp, kh * kw * (C // group))), wsum, bias,
                     mult, shift, z_y, act_min, act_max, kh, kw, sh, sw, dh, dw, pad_t, pad_l,
                     group, y, scratch, sb)


# ----------------------------------------------------------------------------- fast paths
@njit(inline="always", **JIT)
def _fill(t, o, n, zx):
    """t[o:o + n] = zx: through a slice view for n >= 8 (indexed from 0, so LLVM vectorizes
    the loop), value by value for fewer (a slice view costs more than a few stores)."""
    if n >= 8:
        seg = t[o:o + n]
        for q in range(n):
            seg[q] = zx
    else:
        for q in range(o, o + n):
            t[q] = zx


@njit(inline="always", **JIT)
def _im2col_pixel(x1, H, W, C, n, oh, ow, c0, Cg, kh, kw, sh, sw, dh, dw, pad_t, pad_l, zx, t):
    """t[(i·kw + j)·Cg + c] = x_pad[n, oh·sh − pad_t + i·dh, ow·sw − pad_l + j·dw, c0 + c]
    (x1: x flattened, NHWC; t: u8, or u16 for zero-extended values).  Inside x the values are
    copied by copy_runs (a window row at once when its kw·Cg bytes are contiguous, else tap by
    tap), padding by _fill; short runs are not sliced (a slice view costs tens of cycles: a
    border pixel of a one-channel 3x3 window took ~100 cycles with one slice per tap)."""
    iw0 = ow * sw - pad_l
    rowrun = dw == 1 and Cg == C and iw0 >= 0 and iw0 + kw <= W   # kw·C contiguous bytes
    L = kw * Cg
    for i in range(kh):
        ih = oh * sh - pad_t + i * dh
        o = i * L
        if ih < 0 or ih >= H:
            _fill(t, o, L, zx)
        elif rowrun:
            copy_runs(t, o, 0, x1, ((n * H + ih) * W + iw0) * C, 0, 0, 1, L, 1)
        else:
            for j in range(kw):
                iw = iw0 + j * dw
                oj = o + j * Cg
                if iw < 0 or iw >= W:
                    _fill(t, oj, Cg, zx)
                else:
                    copy_runs(t, oj, 0, x1, ((n * H + ih) * W + iw) * C + c0, 0, 0, 1, Cg, 1)


@njit(**JIT)
def _pack_conv_rows(x1, H, W, C, OH, OW, p0, rows, c0, Cg, kh, kw, sh, sw, dh, dw, pad_t, pad_l,
                    z_x, a, rowlen):
    """A rows of output pixels [p0, p0+rows) (flat n·OH·OW + oh·OW + ow), group c0/Cg: row q at
    a[q·rowlen:], the im2col of the pixel in k order (i, j, c).  a is u8 (vnni512: groups of
    4 bytes) or u16 (avx2: the exact vpmaddwd operands, zero-extended here, vectorized).  The
    micro-kernels read row r of a micro-panel at r·rowlen (ars), group g at 4·g (ags = 4).
    k past Kg keeps stale values: the packed B is zero there."""
    zx = np.uint8(z_x)
    ohw = OH * OW
    n = p0 // ohw
    rem = p0 - n * ohw
    oh = rem // OW
    ow = rem - oh * OW
    # window runs: each of the kh rows of a window is kw·C contiguous bytes (group 1, no
    # horizontal dilation); pixels [ow_lo, ow_hi) of an output row whose rows all lie inside
    # x are copied together by copy_runs
    L = kw * Cg
    runs = dw == 1 and Cg == C
    ow_lo = min(OW, -(-pad_l // sw))
    span = W - kw - (ow_lo * sw - pad_l)
    ow_hi = min(OW, ow_lo + span // sw + 1) if span >= 0 else ow_lo
    q = 0
    while q < rows:
        ih0 = oh * sh - pad_t
        npx = 0
        if runs and ow >= ow_lo and ow < ow_hi and ih0 >= 0 and ih0 + (kh - 1) * dh < H:
            npx = min(rows - q, ow_hi - ow)
            copy_runs(a, q * rowlen, rowlen, x1, ((n * H + ih0) * W + ow * sw - pad_l) * C,
                              sw * C, dh * W * C, kh, L, npx)
        else:
            npx = 1
            _im2col_pixel(x1, H, W, C, n, oh, ow, c0, Cg, kh, kw, sh, sw, dh, dw, pad_t, pad_l,
                          zx, a[q * rowlen:(q + 1) * rowlen])
        q += npx
        ow += npx
        if ow == OW:
            ow = 0
            oh += 1
            if oh == OH:
                oh = 0
                n += 1


# The avx2 and vnni512 workers differ only in constants and the micro-kernels they call (one
# function per ISA: a runtime branch would compile the vnni512 intrinsics on every host).
@njit(**JIT)
def _conv_worker_avx2(t, nt, split_rows, x1, geo, z_x, wpack, wsum, bias, mult, shift, z_y,
                      act_min, act_max, y2, scratch, per, ctr):
    """Both avx2 layouts (vnni.avx2_groups): im2col rows packed as u16 pairs (avx2) or u8
    quads (avx2q) in the same scratch (mc from the pairs layout, which needs the more bytes)."""
    MR, NR_ = AVX2_MR, AVX2_NR
    N, H, W, C, OH, OW, M, kh, kw, sh, sw, dh, dw, pad_t, pad_l, group = geo
    Cg = C // group
    Mg = M // group
    P = N * OH * OW
    quads, G, ng = vnni.avx2_groups(wpack, kh * kw * Cg)
    _, mc, tileb, _ = _fast_geometry(P, kh * kw * Cg, AVX2_G, MR, NR_)
    gbytes = ((Mg + NR_ - 1) // NR_) * ng * NR_ * G          # packed B bytes per group
    base = t * per
    tile = scratch[base:base + MR * NR_ * 4].view(np.int32)
    abase = base + tileb
    ys = y2.strides[0]
    toff = vnni.table_offset(wpack, vnni.LAYOUT_HEADER + group * gbytes, M, kh * kw * Cg, z_x,
                             z_y)
    nblk, j_lo, j_hi = work_blocks(MR, NR_, P, Mg, mc, t, nt, split_rows)   # per group
    for i in range(nblk):
        b = fetch_add(ctr, 0) if split_rows else i
        if b >= nblk:
            break
        pc, rows = block_rows(b, nblk, P, MR)
        for g in range(group):
            if quads:
                _pack_conv_rows(x1, H, W, C, OH, OW, pc, rows, g * Cg, Cg, kh, kw, sh, sw, dh,
                                dw, pad_t, pad_l, z_x, scratch[abase:abase + mc * ng * 4], 4 * ng)
            else:
                _pack_conv_rows(x1, H, W, C, OH, OW, pc, rows, g * Cg, Cg, kh, kw, sh, sw, dh,
                                dw, pad_t, pad_l, z_x,
                                scratch[abase:abase + mc * ng * 4].view(np.uint16), 2 * ng)
            for j in range(j_lo, j_hi):
                m0 = g * Mg + j * NR_
                cols = min(NR_, Mg - j * NR_)
                boff = vnni.LAYOUT_HEADER + g * gbytes + j * ng * NR_ * G
                for ip in range((rows + MR - 1) // MR):
                    mr = min(MR, rows - ip * MR)
                    aoff = abase + ip * ng * MR * 4
                    p0 = pc + ip * MR
                    # panels that start on a table block (the fused epilogue reads whole
                    # blocks; a group of Mg channels not a multiple of 8 shifts later ones)
                    if toff >= 0 and m0 % AVX2_VL == 0:
                        if quads:
                            _ukernelq_avx2q(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, y2,
                                            p0 * ys + m0, ys, wpack, toff, m0, cols,
                                            act_min, act_max)
                        else:
                            _ukernelq_avx2(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, y2,
                                           p0 * ys + m0, ys, wpack, toff, m0, cols,
                                           act_min, act_max)
                    else:
                        if quads:
                            _ukernel_avx2q(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, tile)
                        else:
                            _ukernel_avx2(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, tile)
                        _epilogue(tile, NR_, mr, cols, y2, p0, m0, wsum, z_x, bias, mult, shift,
                                  z_y, act_min, act_max)


@njit(**JIT)
def _conv_worker_v512(t, nt, split_rows, x1, geo, z_x, wpack, wsum, bias, mult, shift, z_y,
                      act_min, act_max, y2, scratch, per, ctr):
    MR, NR_, G = V512_MR, V512_NR, V512_G
    N, H, W, C, OH, OW, M, kh, kw, sh, sw, dh, dw, pad_t, pad_l, group = geo
    Cg = C // group
    Mg = M // group
    P = N * OH * OW
    ng, mc, tileb, _ = _fast_geometry(P, kh * kw * Cg, G, MR, NR_)
    gbytes = ((Mg + NR_ - 1) // NR_) * ng * NR_ * G
    base = t * per
    abase = base + tileb                    # (the slice's tile bytes: avx2 only)
    arows = scratch[abase:abase + mc * ng * 4]
    ys = y2.strides[0]
    nblk, j_lo, j_hi = work_blocks(MR, NR_, P, Mg, mc, t, nt, split_rows)   # per group
    for i in range(nblk):
        b = fetch_add(ctr, 0) if split_rows else i
        if b >= nblk:
            break
        pc, rows = block_rows(b, nblk, P, MR)
        for g in range(group):
            _pack_conv_rows(x1, H, W, C, OH, OW, pc, rows, g * Cg, Cg, kh, kw, sh, sw, dh, dw,
                            pad_t, pad_l, z_x, arows, 4 * ng)
            for j in range(j_lo, j_hi):
                m0 = g * Mg + j * NR_
                cols = min(NR_, Mg - j * NR_)
                boff = g * gbytes + j * ng * NR_ * G
                for ip in range((rows + MR - 1) // MR):
                    mr = min(MR, rows - ip * MR)
                    aoff = abase + ip * ng * MR * 4
                    p0 = pc + ip * MR
                    _ukernelq_v512(mr, scratch, aoff, 4 * ng, 4, wpack, boff, ng, y2, p0 * ys + m0, ys,
                                   wsum, bias, mult, shift, m0, z_x, z_y, act_min, act_max, cols)


@njit(**PJIT)
def _conv_par_avx2(nt, split_rows, x1, geo, z_x, wpack, wsum, bias, mult, shift, z_y, act_min,
                   act_max, y2, scratch, per, ctr):
    for t in prange(nt):
        xcall(_conv_worker_avx2, np.int64(t), nt, split_rows, x1, geo, z_x, wpack, wsum, bias, mult,
              shift, z_y, act_min, act_max, y2, scratch, per, ctr)


@njit(**PJIT)
def _conv_par_v512(nt, split_rows, x1, geo, z_x, wpack, wsum, bias, mult, shift, z_y, act_min,
                   act_max, y2, scratch, per, ctr):
    for t in prange(nt):
        xcall(_conv_worker_v512, np.int64(t), nt, split_rows, x1, geo, z_x, wpack, wsum, bias, mult,
              shift, z_y, act_min, act_max, y2, scratch, per, ctr)


@njit(**JIT)
def x86_dw_slice_bytes(C, kh, kw, W):
    """Bytes of one thread's scratch slice for a depthwise conv on a fast path (ALIGN multiple)."""
    return max(ALIGN, _align(depthwise_scratch_bytes_x86(C, kh, kw, W)))


@njit(**JIT)
def _depthwise(x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw, dh, dw,
               pad_t, pad_l, y, scratch):
    """Depthwise conv on the fast paths (x86 vpmaddwd tap pairs; weights from
    pack_depthwise_weights_x86)."""
    W, C = x.shape[2], x.shape[3]
    sb = x86_dw_slice_bytes(C, kh, kw, W)
    if scratch.size < sb:
        raise ValueError("conv2d_u8: scratch smaller than one thread's slice")
    xcall(depthwise_conv_u8_x86, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw,
          sh, sw, dh, dw, pad_t, pad_l, y, scratch, sb)


@njit(**JIT)
def conv2d_u8_avx2(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
                   dh, dw, pad_t, pad_l, group, y, scratch):
    """QConv on the avx2 path (weights from pack_conv_weights(w, group, "avx2")); see the module
    docstring.  Same arguments as conv2d_u8."""
    N, H, W, C = x.shape
    OH, OW, M = y.shape[1], y.shape[2], y.shape[3]
    if N * OH * OW * M == 0:
        return
    if is_depthwise(C, M, group):
        xcall_lazy(_depthwise, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw,
                   sh, sw, dh, dw, pad_t, pad_l, y, scratch)
        return
    if wpack[0] == LAYOUT_WINOGRAD:                     # weights of pack_winograd_weights
        if (kh, kw, sh, sw) != (3, 3, 1, 1):
            raise ValueError("conv2d_u8_avx2: Winograd weights for a conv that is not 3x3 stride 1")
        xcall_lazy(winograd_conv_u8_avx2, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max,
                   pad_t, pad_l, dh, dw, group, y, scratch)
        return
    if group > 1 and wpack[0] == LAYOUT_GROUPED:
        gs = _align(grouped_slice_bytes(C, kh, kw, W, group))
        if scratch.size < gs:
            raise ValueError("conv2d_u8_avx2: scratch smaller than one thread's slice")
        xcall_lazy(grouped_conv_u8_avx2, x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min,
                   act_max, kh, kw, sh, sw, dh, dw, pad_t, pad_l, group, y, scratch, gs)
        return
    per = fast_slice_bytes(N, H, W, C, M, kh, kw, OH, OW, group, False)
    if scratch.size < per:
        raise ValueError("conv2d_u8_avx2: scratch smaller than one thread's slice")
    T = scratch.size // per                      # the planner's thread count
    P = N * OH * OW
    if is_pointwise(kh, kw, sh, sw, pad_t, pad_l, group, H, W, OH, OW):
        pg = vnni.thread_scratch_bytes(P, padded_groups(C, AVX2_G), AVX2_MR, AVX2_NR)
        xcall_lazy(vnni.gemm_avx2, x.reshape((P, C)), z_x, wpack, wsum, M, C, bias, mult, shift,
                   z_y, act_min, act_max, y.reshape((P, M)), scratch[:T * pg])
        return
    Kg = kh * kw * (C // group)
    pg = _fast_geometry(P, Kg, AVX2_G, AVX2_MR, AVX2_NR)[3]
    nt, split_rows = fast_threads(P, Kg * group, M // group, AVX2_MR, AVX2_NR, T)
    geo = (N, H, W, C, OH, OW, M, kh, kw, sh, sw, dh, dw, pad_t, pad_l, group)
    x1 = x.reshape(-1)
    y2 = y.reshape((P, M))
    ctr = np.zeros(8, np.int64)               # the shared block counter (vnni.work_blocks)
    if nt == 1:
        xcall(_conv_worker_avx2, 0, 1, split_rows, x1, geo, z_x, wpack, wsum, bias, mult, shift,
              z_y, act_min, act_max, y2, scratch, pg, ctr)
    else:
        xcall(_conv_par_avx2, nt, split_rows, x1, geo, z_x, wpack, wsum, bias, mult, shift, z_y,
                       act_min, act_max, y2, scratch, pg, ctr)


@njit(**JIT)
def conv2d_u8_vnni512(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh,
                      sw, dh, dw, pad_t, pad_l, group, y, scratch):
    """QConv on the vnni512 path (call only when cpu.has_vnni512()).  Same as conv2d_u8_avx2."""
    N, H, W, C = x.shape
    OH, OW, M = y.shape[1], y.shape[2], y.shape[3]
    if N * OH * OW * M == 0:
        return
    if is_depthwise(C, M, group):
        xcall_lazy(_depthwise, x, z_x, wpack, bias, mult, shift, z_y, act_min, act_max, kh, kw,
                   sh, sw, dh, dw, pad_t, pad_l, y, scratch)
        return
    if direct_shape(C, M, group):        # packed for the direct grouped (avx2) kernel
        gs = _align(grouped_slice_bytes(C, kh, kw, W, group))
        if scratch.size < gs:
            raise ValueError("conv2d_u8_vnni512: scratch smaller than one thread's slice")
        xcall_lazy(grouped_conv_u8_avx2, x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min,
                   act_max, kh, kw, sh, sw, dh, dw, pad_t, pad_l, group, y, scratch, gs)
        return
    per = fast_slice_bytes(N, H, W, C, M, kh, kw, OH, OW, group, True)
    if scratch.size < per:
        raise ValueError("conv2d_u8_vnni512: scratch smaller than one thread's slice")
    T = scratch.size // per                      # the planner's thread count
    P = N * OH * OW
    if is_pointwise(kh, kw, sh, sw, pad_t, pad_l, group, H, W, OH, OW):
        pg = vnni.thread_scratch_bytes(P, padded_groups(C, V512_G), V512_MR, V512_NR)
        xcall_lazy(vnni.gemm_vnni512, x.reshape((P, C)), z_x, wpack, wsum, M, C, bias, mult,
                   shift, z_y, act_min, act_max, y.reshape((P, M)), scratch[:T * pg])
        return
    Kg = kh * kw * (C // group)
    pg = _fast_geometry(P, Kg, V512_G, V512_MR, V512_NR)[3]
    nt, split_rows = fast_threads(P, Kg * group, M // group, V512_MR, V512_NR, T)
    geo = (N, H, W, C, OH, OW, M, kh, kw, sh, sw, dh, dw, pad_t, pad_l, group)
    x1 = x.reshape(-1)
    y2 = y.reshape((P, M))
    ctr = np.zeros(8, np.int64)               # the shared block counter (vnni.work_blocks)
    if nt == 1:
        xcall(_conv_worker_v512, 0, 1, split_rows, x1, geo, z_x, wpack, wsum, bias, mult, shift,
              z_y, act_min, act_max, y2, scratch, pg, ctr)
    else:
        xcall(_conv_par_v512, nt, split_rows, x1, geo, z_x, wpack, wsum, bias, mult, shift, z_y,
                       act_min, act_max, y2, scratch, pg, ctr)
