"""TEMPORARY serial stand-ins for kernels of CONTRACT.md that have not landed yet.

`_kernels.py` uses a stand-in only for a kernel group absent from `nqrt.kernels` (and
warns).  Plain loops straight from formats/nq-v1.md; delete this file once every kernel
has landed.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _out(acc, m0, n, z_y, lo, hi):
    v = ((acc * m0 + (np.int64(1) << (n - 1))) >> n) + z_y
    return np.uint8(min(max(v, lo), hi))


def pack_conv_weights(w, group):
    w = np.asarray(w, dtype=np.int8)
    wsum = w.astype(np.int32).reshape(w.shape[0], -1).sum(axis=1).astype(np.int32)
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(-1), wsum    # [M, kh, kw, C/g]


def conv_scratch_size(N, H, W, C, M, kh, kw, OH, OW, group, nthreads):
    return 0


@njit(cache=True)
def conv2d_u8(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, kh, kw, sh, sw,
              dh, dw, pad_t, pad_l, group, y, scratch):
    N, H, W, C = x.shape
    M = y.shape[3]
    cg, mg = C // group, M // group
    w = wpack.reshape((M, kh, kw, cg))
    for n in range(N):
        for oh in range(y.shape[1]):
            for ow in range(y.shape[2]):
                for m in range(M):
                    c0 = (m // mg) * cg
                    acc = np.int64(0)
                    for i in range(kh):
                        ih = oh * sh + i * dh - pad_t
                        if ih < 0 or ih >= H:
                            continue
                        for j in range(kw):
                            iw = ow * sw + j * dw - pad_l
                            if iw < 0 or iw >= W:
                                continue
                            for c in range(cg):
                                acc += (np.int64(x[n, ih, iw, c0 + c]) - z_x) * w[m, i, j, c]
                    y[n, oh, ow, m] = _out(acc + bias[m], np.int64(mult[m]), np.int64(shift[m]), z_y,
                                           act_min, act_max)


def pack_gemm_weights(w):
    w = np.asarray(w, dtype=np.int8)
    return np.ascontiguousarray(w).reshape(-1), w.astype(np.int32).sum(axis=1).astype(np.int32)


@njit(cache=True)
def gemm_u8(x, z_x, wpack, wsum, bias, mult, shift, z_y, act_min, act_max, y):
    P, K = x.shape
    M = y.shape[1]
    w = wpack[:M * K].reshape((M, K))
    for p in range(P):
        for m in range(M):
            acc = np.int64(0)
            for k in range(K):
                acc += (np.int64(x[p, k]) - z_x) * w[m, k]
            y[p, m] = _out(acc + bias[m], np.int64(mult[m]), np.int64(shift[m]), z_y, act_min, act_max)


@njit(cache=True)
def add_u8(a, b, shape, a_strides, b_strides, z_a, z_b, m_a, m_b, shift, z_y, act_min, act_max, y):
    i = 0
    for i0 in range(shape[0]):
        for i1 in range(shape[1]):
            for i2 in range(shape[2]):
                for i3 in range(shape[3]):
                    for i4 in range(shape[4]):
                        for i5 in range(shape[5]):
                            ia = (i0 * a_strides[0] + i1 * a_strides[1] + i2 * a_strides[2]
                                  + i3 * a_strides[3] + i4 * a_strides[4] + i5 * a_strides[5])
                            ib = (i0 * b_strides[0] + i1 * b_strides[1] + i2 * b_strides[2]
                                  + i3 * b_strides[3] + i4 * b_strides[4] + i5 * b_strides[5])
                            acc = ((np.int64(a[ia]) - z_a) * m_a + (np.int64(b[ib]) - z_b) * m_b
                                   + (np.int64(1) << (shift - 1))) >> shift
                            y[i] = np.uint8(min(max(acc + z_y, act_min), act_max))
                            i += 1


@njit(cache=True)
def requant_copy_u8(x, z_x, m0, n, z_y, act_min, act_max, y, col_offset):
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            y[r, col_offset + c] = _out(np.int64(x[r, c]) - z_x, m0, n, z_y, act_min, act_max)


@njit(cache=True)
def clip_u8(x, act_min, act_max, y):
    for i in range(x.shape[0]):
        y[i] = min(max(x[i], act_min), act_max)


@njit(cache=True)
def maxpool_u8(x, kh, kw, sh, sw, dh, dw, pad_t, pad_l, act_min, act_max, y):
    N, H, W, C = x.shape
    for n in range(N):
        for oh in range(y.shape[1]):
            for ow in range(y.shape[2]):
                for c in range(C):
                    best = -1
                    for i in range(kh):
                        ih = oh * sh + i * dh - pad_t
                        for j in range(kw):
                            iw = ow * sw + j * dw - pad_l
                            if 0 <= ih < H and 0 <= iw < W:
                                best = max(best, np.int64(x[n, ih, iw, c]))
                    y[n, oh, ow, c] = min(max(best, act_min), act_max)


@njit(cache=True)
def avgpool_u8(x, z_x, kh, kw, sh, sw, pad_t, pad_l, pad_b, pad_r, count_include_pad,
               mult, shift, z_y, act_min, act_max, y):
    N, H, W, C = x.shape
    for n in range(N):
        for oh in range(y.shape[1]):
            for ow in range(y.shape[2]):
                h0, w0 = oh * sh - pad_t, ow * sw - pad_l
                if count_include_pad:
                    cnt = (min(h0 + kh, H + pad_b) - h0) * (min(w0 + kw, W + pad_r) - w0)
                else:
                    cnt = (min(h0 + kh, H) - max(h0, 0)) * (min(w0 + kw, W) - max(w0, 0))
                for c in range(C):
                    s = np.int64(0)
                    for ih in range(max(h0, 0), min(h0 + kh, H)):
                        for iw in range(max(w0, 0), min(w0 + kw, W)):
                            s += np.int64(x[n, ih, iw, c]) - z_x
                    y[n, oh, ow, c] = _out(s, np.int64(mult[cnt]), np.int64(shift[cnt]), z_y, act_min, act_max)


@njit(cache=True)
def reduce_mean_u8(x, z_x, m0, n, z_y, act_min, act_max, y):
    for o in range(x.shape[0]):
        for i in range(x.shape[2]):
            s = np.int64(0)
            for r in range(x.shape[1]):
                s += np.int64(x[o, r, i]) - z_x
            y[o, i] = _out(s, m0, n, z_y, act_min, act_max)


@njit(cache=True)
def _transpose(x, shape, perm, y):
    st = np.zeros(6, np.int64)
    acc = 1
    for d in range(5, -1, -1):
        st[d] = acc
        acc *= shape[d]
    ys = np.empty(6, np.int64)
    ss = np.empty(6, np.int64)
    for d in range(6):
        ys[d] = shape[perm[d]]
        ss[d] = st[perm[d]]
    i = 0
    for i0 in range(ys[0]):
        for i1 in range(ys[1]):
            for i2 in range(ys[2]):
                for i3 in range(ys[3]):
                    for i4 in range(ys[4]):
                        for i5 in range(ys[5]):
                            y[i] = x[i0 * ss[0] + i1 * ss[1] + i2 * ss[2] + i3 * ss[3] + i4 * ss[4] + i5 * ss[5]]
                            i += 1


@njit(cache=True)
def transpose_u8(x, shape, perm, y):
    _transpose(x, shape, perm, y)


@njit(cache=True)
def transpose_f32(x, shape, perm, y):
    _transpose(x, shape, perm, y)


@njit(cache=True)
def quantize_f32(x, scale, z, y):
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            y[i] = z
            continue
        q = np.rint(v / scale) + z
        y[i] = np.uint8(min(max(q, 0.0), 255.0))


@njit(cache=True)
def dequantize_u8(x, scale, z, y):
    for i in range(x.shape[0]):
        y[i] = np.float32(np.int32(x[i]) - z) * scale


@njit(cache=True)
def softmax_f32(x, y):
    for o in range(x.shape[0]):
        for i in range(x.shape[2]):
            mx = x[o, 0, i]
            for a in range(x.shape[1]):
                mx = max(mx, x[o, a, i])
            s = np.float32(0.0)
            for a in range(x.shape[1]):
                e = np.exp(x[o, a, i] - mx)
                y[o, a, i] = e
                s += e
            for a in range(x.shape[1]):
                y[o, a, i] = y[o, a, i] / s

