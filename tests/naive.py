"""Slow, obviously-correct numpy references for every kernel, written from formats/nq-v1.md
(sections 3 and 4) in the *logical* ONNX layout (NCHW), with int64 arithmetic throughout.

They never call nqrt.kernels.  Tests transpose to the kernels' NHWC layout and compare with
np.array_equal.  Per-channel arrays (bias, multiplier, shift) are int arrays of length M.
"""

import numpy as np


def requantize(acc, m0, n):
    """Spec 3.3: (acc·M0 + 2^(n−1)) >> n, int64, floor shift (Python ints: exact)."""
    acc = np.asarray(acc, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    return (acc * m0 + (np.int64(1) << (n - 1))) >> n


def _finish(acc, m0, n, z_y, act_min, act_max):
    return np.clip(requantize(acc, m0, n) + z_y, act_min, act_max).astype(np.uint8)


def out_size(S, k, stride, pad_begin, pad_end, dilation=1, ceil_mode=0):
    """Spec 4 output size, with the ONNX rule that the last window starts inside S + pad_begin."""
    span = S + pad_begin + pad_end - dilation * (k - 1) - 1
    o = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (o - 1) * stride >= S + pad_begin:
        o -= 1
    return o


def qconv(x, z_x, w, bias, mult, shift, z_y, act_min, act_max, strides, pads, dilations, group,
          out_hw):
    """QConv, x uint8 [N, C, H, W], w int8 [M, C/g, kh, kw] -> y uint8 [N, M, OH, OW].
    pads = (top, left, bottom, right); out_hw = (OH, OW) as the planner gives them."""
    N, C, H, W = x.shape
    M, Cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    pt, pl, pb, pr = pads
    OH, OW = out_hw
    # x_pad is z_x outside the input; make it large enough for every window the shape allows
    big_h = max(H + pt + pb, (OH - 1) * sh + dh * (kh - 1) + 1)
    big_w = max(W + pl + pr, (OW - 1) * sw + dw * (kw - 1) + 1)
    xp = np.full((N, C, big_h, big_w), z_x, dtype=np.int64)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    xc = xp - z_x
    Mg = M // group
    acc = np.zeros((N, M, OH, OW), dtype=np.int64)
    for m in range(M):
        g = m // Mg
        for c in range(Cg):
            for i in range(kh):
                for j in range(kw):
                    win = xc[:, g * Cg + c, i * dh:i * dh + (OH - 1) * sh + 1:sh,
                             j * dw:j * dw + (OW - 1) * sw + 1:sw]
                    acc[:, m] += win * np.int64(w[m, c, i, j])
    acc += np.asarray(bias, np.int64)[None, :, None, None]
    return _finish(acc, np.asarray(mult)[None, :, None, None], np.asarray(shift)[None, :, None, None],
                   z_y, act_min, act_max)


def qgemm(x, z_x, w, bias, mult, shift, z_y, act_min, act_max):
    """QGemm, x uint8 [P, K], w int8 [M, K] -> y uint8 [P, M]."""
    acc = (x.astype(np.int64) - z_x) @ w.astype(np.int64).T + np.asarray(bias, np.int64)
    return _finish(acc, np.asarray(mult)[None], np.asarray(shift)[None], z_y, act_min, act_max)
