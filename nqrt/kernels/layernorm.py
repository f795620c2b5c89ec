"""LayerNormalization (formats/nq-v1.md 4.16: ONNX LayerNormalization-17 in float32) over the
rows of x float32 [R, n] (n = the product of the normalized trailing dims), a float op between
Dequantize and Quantize.

    mean = S(x) / n;  d_i = x_i − mean;  var = S(d·d) / n;  inv = 1 / sqrt(var + eps)
    y_i  = (d_i · inv) · scale_i + bias_i
every operation rounded to float32 (fastmath is off: no reassociation, no fused multiply-add;
see _jit.py).  S is the spec's fixed-order sum: eight partial sums p_l over i ≡ l (mod 8) in
ascending i, combined as ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)); eight independent
chains, so the sums do not wait on one add's latency per element (a sequential sum would).
With rms = 1 (RMS normalization: ONNX RMSNormalization, and the L2 normalization
x / ‖x‖ the converter rewrites into it) the mean is not subtracted: mean = 0, d_i = x_i.
Rows are split between threads in blocks; each row is computed by one thread, so results do
not depend on the thread count.

`qlayernorm_u8` is Dequantize -> LayerNormalization -> Quantize in one pass over uint8 rows
(the runtime fuses the three when nothing else reads the float tensors between them).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nqrt.kernels._jit import JIT, PJIT, xcall
from nqrt.kernels.eltwise import CHUNK, row_block

LANES = 8     # partial sums of S (spec 4.16)


@njit(inline="always", **JIT)
def _tree(p0, p1, p2, p3, p4, p5, p6, p7):
    return ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))


def _lane_sums(typingctx, v, n8, mean, centered, p):
    """Intrinsic: p[l] = the partial sum p_l of S over the first n8 (a multiple of LANES)
    elements of the float32 row v: Σ v[i] (centered = 0) or Σ (v[i] − mean)² (centered = 1)
    over i ≡ l (mod 8), in ascending i, each lane one float32 add per element (separate
    multiply and add: LLVM does not contract them without the flag) as eight <8 x float>
    lanes, so exactly the scalar chains of the spec."""
    sig = types.void(v, n8, mean, centered, p)
    f32 = ir.FloatType()
    vf = ir.VectorType(f32, LANES)
    i64 = ir.IntType(64)

    def codegen(context, builder, signature, args):
        v_, n8_, mean_, cen_, p_ = args
        sa = signature.args
        vp = builder.bitcast(cgutils.create_struct_proxy(sa[0])(context, builder, value=v_).data,
                             f32.as_pointer())
        pp = builder.bitcast(cgutils.create_struct_proxy(sa[4])(context, builder, value=p_).data,
                             vf.as_pointer())
        m = builder.insert_element(ir.Constant(vf, None), mean_, ir.Constant(ir.IntType(32), 0))
        m = builder.shuffle_vector(m, ir.Constant(vf, None),
                                   ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        centered = builder.icmp_signed("!=", cen_, ir.Constant(cen_.type, 0))
        pre = builder.block
        loop = builder.append_basic_block("ls.loop")
        done = builder.append_basic_block("ls.done")
        zero = ir.Constant(vf, [0.0] * LANES)
        builder.cbranch(builder.icmp_signed(">", n8_, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        acc = builder.phi(vf)
        i.add_incoming(ir.Constant(i64, 0), pre)
        acc.add_incoming(zero, pre)
        x = builder.load(builder.bitcast(builder.gep(vp, [i]), vf.as_pointer()), align=4)
        d = builder.fsub(x, m)
        term = builder.select(centered, builder.fmul(d, d), x)
        nxt = builder.fadd(acc, term)
        inext = builder.add(i, ir.Constant(i64, LANES))
        i.add_incoming(inext, loop)
        acc.add_incoming(nxt, loop)
        builder.cbranch(builder.icmp_signed("<", inext, n8_), loop, done)
        builder.position_at_end(done)
        res = builder.phi(vf)
        res.add_incoming(zero, pre)
        res.add_incoming(nxt, loop)
        builder.store(res, pp, align=4)
        return context.get_dummy_value()

    return sig, codegen


_lane_sums = intrinsic(_lane_sums)


@njit(**JIT)
def _row_sums(v, mean, centered, p):
    """S(v) (centered=False) or S((v − mean)²) (centered=True) of the float32 row v; p:
    float32 [LANES] work space.  The tail (element n8 + l, l < n − n8 <= 7) goes to partial
    sum l: lanes 0..6 each add their tail element or +0.0, as the spec's reference does."""
    n = v.size
    n8 = n - n % LANES
    _lane_sums(v, n8, mean, 1 if centered else 0, p)
    z = np.float32(0.0)
    for l in range(LANES - 1):
        e = z
        if l < n - n8:
            e = v[n8 + l]
            if centered:
                e = (e - mean) * (e - mean)
        p[l] += e
    return _tree(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7])


@njit(**JIT)
def _ln_rows(x, scale, bias, eps, rms, y, r0, r1):
    """Rows r0..r1-1 of layernorm_f32."""
    n = x.shape[1]
    nf = np.float32(n)
    one = np.float32(1.0)
    p = np.empty(LANES, np.float32)
    for r in range(r0, r1):
        v = x[r]
        mean = np.float32(0.0) if rms else _row_sums(v, np.float32(0.0), False, p) / nf
        var = _row_sums(v, mean, True, p) / nf
        inv = one / np.sqrt(var + eps)
        out = y[r]
        for i in range(n):
            out[i] = ((v[i] - mean) * inv) * scale[i] + bias[i]


@njit(**PJIT)
def layernorm_f32(x, scale, bias, eps, rms, y):
    """y float32 [R, n] = LayerNormalization (rms = 0) or RMS normalization (rms = 1) of each
    row of x float32 [R, n] (n >= 1) with scale, bias float32 [n] and eps float32 (x and y
    may not overlap)."""
    R, n = x.shape
    if R == 0:
        return
    e = np.float32(eps)
    if R * n <= CHUNK:
        xcall(_ln_rows, x, scale, bias, e, rms, y, 0, R)
        return
    rb = row_block(R, n)
    for b in prange(-(-R // rb)):
        r0 = np.int64(b) * rb
        xcall(_ln_rows, x, scale, bias, e, rms, y, r0, min(R, r0 + rb))


@njit(**JIT)
def _qln_rows(x, sx, zx, scale, bias, eps, rms, sy, zy, y, r0, r1):
    """Rows r0..r1-1 of qlayernorm_u8: each row dequantized into a float32 row buffer, the
    row's LayerNormalization as _ln_rows computes it into a second buffer, then quantized."""
    n = x.shape[1]
    nf = np.float32(n)
    one = np.float32(1.0)
    zi = np.int32(zx)
    zf = np.float32(zy)
    zu = np.uint8(zy)
    v = np.empty(n, np.float32)
    g = np.empty(n, np.float32)
    p = np.empty(LANES, np.float32)
    for r in range(r0, r1):
        xr = x[r]
        for i in range(n):
            v[i] = np.float32(np.int32(np.int32(xr[i]) - zi)) * sx     # eltwise.dequantize_u8
        mean = np.float32(0.0) if rms else _row_sums(v, np.float32(0.0), False, p) / nf
        var = _row_sums(v, mean, True, p) / nf
        inv = one / np.sqrt(var + eps)
        for i in range(n):
            g[i] = ((v[i] - mean) * inv) * scale[i] + bias[i]
        out = y[r]
        for i in range(n):                                              # eltwise.quantize_f32
            q = np.rint(g[i] / sy)
            t = np.uint8(min(max(q + zf, np.float32(0.0)), np.float32(255.0)))
            out[i] = zu if q != q else t


@njit(**PJIT)
def qlayernorm_u8(x, s_x, z_x, scale, bias, eps, rms, s_y, z_y, y):
    """y uint8 [R, n] = Quantize(layernorm_f32(Dequantize(x))) for x uint8 [R, n] (n >= 1):
    Dequantize with scale s_x / zero point z_x, Quantize with s_y / z_y (float32 scales), the
    LayerNormalization (rms = 0) or RMS normalization (rms = 1) with scale, bias float32 [n]
    and eps, bit for bit as the three kernels in sequence (the same float32 operations in the
    same order), without the two float32 tensors between them: a row at a time in two
    float32 row buffers per task."""
    R, n = x.shape
    if R == 0:
        return
    e = np.float32(eps)
    sx = np.float32(s_x)
    sy = np.float32(s_y)
    if R * n <= CHUNK:
        xcall(_qln_rows, x, sx, z_x, scale, bias, e, rms, sy, z_y, y, 0, R)
        return
    rb = row_block(R, n)
    for b in prange(-(-R // rb)):
        r0 = np.int64(b) * rb
        xcall(_qln_rows, x, sx, z_x, scale, bias, e, rms, sy, z_y, y, r0, min(R, r0 + rb))
