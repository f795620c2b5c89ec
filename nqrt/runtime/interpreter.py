"""The interpreter: one @njit loop over a plan's instruction table (encoding.py).

`execute` makes array views into the arenas and pools (slices of 1-D arrays, reshaped;
no copies, no allocation) and dispatches on integer opcodes to the kernels, whose parallel
loops use Numba's current thread count (Session sets it) or, for the fast GEMM paths, the
thread count the plan sized their scratch for.  No Python runs per op.

The loop calls every kernel through `xcall_lazy` (nqrt/kernels/_jit.py): a kernel is
compiled, or loaded from Numba's cache, when a plan first runs an instruction of its op, and
its code is not copied into the loop.  So a first run compiles only the kernels of the ops
its plan uses, each once, and the loop itself stays small.

One compiled loop per GEMM path (encoding.PATH_IDS), created by `_make(FINGERPRINT, path)`:
the path is a closure constant, so Numba prunes the other paths' branches before typing and
a loop never reaches (or compiles) the SIMD kernels of a path the host cannot run.  The
fingerprint of the sources frozen into the loop (opcodes, the call mechanism) is a closure
constant too, hence part of Numba's cache key.  `execute` (plain Python) picks the loop from
the plan's lpool[0] and compiles (or loads from the cache) each loop on first use.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from nqrt.runtime._kernels import (FINGERPRINT, add_u8, add_u8_avx2, avgpool_u8, clip_u8,
                                   conv2d_u8, conv2d_u8_avx2, conv2d_u8_vnni512, copy_cols_f32,
                                   dequantize_transpose_u8, dequantize_u8, gemm_u8, gemm_u8_avx2,
                                   gemm_u8_vnni512, layernorm_f32, qlayernorm_u8, lrn_f32, lut2_u8, matmul_u8, matmul_u8_avx2, lut_u8, lut_u8_avx2, maxpool_u8, mul_u8,
                                   mul_u8_avx2, pad_u8, qsoftmax_u8, quantize_f32, quantize_transpose_f32, reduce_max_u8,
                                   reduce_mean_u8, requant_copy_u8, resize_cubic_u8, resize_linear_u8, resize_nearest_u8, slice_u8,
                                   softmax_f32, transpose_f32, transpose_u8, xcall_lazy)
from nqrt.runtime.encoding import (OP_ADD, OP_AVGPOOL, OP_CLIP, OP_CONCAT_F32, OP_CONV, OP_DEQUANTIZE, OP_MATMUL,
                                   OP_DEQUANTIZE_T, OP_GEMM, OP_LAYERNORM, OP_QLAYERNORM, OP_LRN, OP_LUT, OP_LUT2, OP_MAXPOOL, OP_MUL,
                                   OP_PAD, OP_QSOFTMAX, OP_QUANTIZE, OP_QUANTIZE_T, OP_REDUCE_MAX, OP_REDUCE_MEAN,
                                   OP_REQUANT_COPY, OP_RESIZE, OP_RESIZE_CUBIC, OP_RESIZE_LINEAR, OP_SLICE, OP_SOFTMAX, OP_TRANSPOSE_F32,
                                   OP_TRANSPOSE_U8, PATH_AVX2, PATH_NAMES, PATH_VNNI512, WIDTH)


@intrinsic
def _row(typingctx, code, i):
    """The WIDTH fields of instruction i of code (C-contiguous int64[n, WIDTH]) as a tuple:
    the loop reads fields at constant indices of the tuple (cheaper to compile than indexing
    an array row, the same loads at run time)."""
    if not (isinstance(code, types.Array) and code.dtype == types.int64 and code.ndim == 2
            and code.layout == "C"):
        raise TypingError("the instruction table must be a C-contiguous int64[n, WIDTH] array")
    tup = types.UniTuple(types.int64, WIDTH)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        row = builder.gep(data, [builder.mul(args[1], context.get_constant(types.intp, WIDTH))])
        fields = [builder.load(builder.gep(row, [context.get_constant(types.intp, k)]))
                  for k in range(WIDTH)]
        return context.make_tuple(builder, tup, fields)

    return tup(code, types.intp), codegen


@intrinsic
def _f32_pointer(typingctx, addr):
    """An int64 address as a float32 pointer (for numba.carray)."""
    if addr != types.int64:
        raise TypingError("address must be int64")

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return types.CPointer(types.float32)(types.int64), codegen


@njit(inline="always", cache=True)
def _f32_at(f32, io, off, n):
    """The n float32 elements of a float32 operand: f32[off:off + n] for off >= 0, else the
    caller's buffer number -off - 1, at address io[-off - 1] (encoding.py)."""
    if off >= 0:
        addr = np.int64(f32.ctypes.data) + 4 * off
    else:
        addr = io[-off - 1]
    return carray(_f32_pointer(addr), n)


def _make(fingerprint: str, path: int):
    @njit(cache=True, nogil=True)
    def execute(code, lpool, wpool, ipool, fpool, u8, f32, scratch, io):
        """Run every instruction of `code` in order (see encoding.FIELDS for the fields);
        io: int64 addresses of the caller's float32 buffers (graph inputs, then outputs)."""
        _fp = fingerprint  # noqa: F841  (cache key)
        if code.shape[1] != WIDTH:
            raise ValueError("the instruction table must have WIDTH columns")
        for i in range(code.shape[0]):
            c = _row(code, i)
            op = c[0]
            if op == OP_CONV:
                x, y, N, H, W, C, OH, OW, M = c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
                wp, wl, ws, bi, mu, sh = c[23], c[24], c[25], c[26], c[27], c[28]
                xa = u8[x:x + N * H * W * C].reshape((N, H, W, C))
                ya = u8[y:y + N * OH * OW * M].reshape((N, OH, OW, M))
                sa = scratch[:c[29]]
                if path == PATH_VNNI512:
                    xcall_lazy(conv2d_u8_vnni512, xa, c[19], wpool[wp:wp + wl], ipool[ws:ws + M],
                               ipool[bi:bi + M], ipool[mu:mu + M], ipool[sh:sh + M], c[20], c[21],
                               c[22], c[10], c[11], c[12], c[13], c[14], c[15], c[16], c[17],
                               c[18], ya, sa)
                elif path == PATH_AVX2:
                    xcall_lazy(conv2d_u8_avx2, xa, c[19], wpool[wp:wp + wl], ipool[ws:ws + M],
                               ipool[bi:bi + M], ipool[mu:mu + M], ipool[sh:sh + M], c[20], c[21],
                               c[22], c[10], c[11], c[12], c[13], c[14], c[15], c[16], c[17],
                               c[18], ya, sa)
                else:
                    xcall_lazy(conv2d_u8, xa, c[19], wpool[wp:wp + wl], ipool[ws:ws + M],
                               ipool[bi:bi + M], ipool[mu:mu + M], ipool[sh:sh + M], c[20], c[21],
                               c[22], c[10], c[11], c[12], c[13], c[14], c[15], c[16], c[17],
                               c[18], ya, sa)
            elif op == OP_GEMM:
                x, y, P, K, M = c[1], c[2], c[3], c[4], c[5]
                wp, wl, ws, bi, mu, sh = c[10], c[11], c[12], c[13], c[14], c[15]
                xa = u8[x:x + P * K].reshape((P, K))
                ya = u8[y:y + P * M].reshape((P, M))
                if path == PATH_VNNI512:
                    xcall_lazy(gemm_u8_vnni512, xa, c[6], wpool[wp:wp + wl], ipool[ws:ws + M], M,
                               K, ipool[bi:bi + M], ipool[mu:mu + M], ipool[sh:sh + M], c[7],
                               c[8], c[9], ya, scratch[:c[16]])
                elif path == PATH_AVX2:
                    xcall_lazy(gemm_u8_avx2, xa, c[6], wpool[wp:wp + wl], ipool[ws:ws + M], M, K,
                               ipool[bi:bi + M], ipool[mu:mu + M], ipool[sh:sh + M], c[7], c[8],
                               c[9], ya, scratch[:c[16]])
                else:
                    xcall_lazy(gemm_u8, xa, c[6], wpool[wp:wp + wl], ipool[ws:ws + M],
                               ipool[bi:bi + M], ipool[mu:mu + M], ipool[sh:sh + M], c[7], c[8],
                               c[9], ya)
            elif op == OP_ADD:
                a, b, y = c[1], c[2], c[3]
                if path == PATH_AVX2 or path == PATH_VNNI512:     # x86 with AVX2
                    xcall_lazy(add_u8_avx2, u8[a:a + c[4]], u8[b:b + c[5]], lpool[c[7]:c[7] + 6],
                               lpool[c[8]:c[8] + 6], lpool[c[9]:c[9] + 6], c[10], c[11], c[12],
                               c[13], c[14], c[15], c[16], c[17], u8[y:y + c[6]])
                else:
                    xcall_lazy(add_u8, u8[a:a + c[4]], u8[b:b + c[5]], lpool[c[7]:c[7] + 6],
                               lpool[c[8]:c[8] + 6], lpool[c[9]:c[9] + 6], c[10], c[11], c[12],
                               c[13], c[14], c[15], c[16], c[17], u8[y:y + c[6]])
            elif op == OP_MATMUL:
                a, b, y, nb, M, K, N = c[1], c[2], c[3], c[4], c[5], c[6], c[7]
                offs = lpool[c[15]:c[15] + 2 * nb]
                if path == PATH_AVX2 or path == PATH_VNNI512:     # x86 with AVX2
                    xcall_lazy(matmul_u8_avx2, u8[a:], u8[b:], offs, nb, M, K, N, c[8], c[9],
                               c[10], c[11], c[12], c[13], c[14], u8[y:y + nb * M * N],
                               scratch[:c[16]])
                else:
                    xcall_lazy(matmul_u8, u8[a:], u8[b:], offs, nb, M, K, N, c[8], c[9],
                               c[10], c[11], c[12], c[13], c[14], u8[y:y + nb * M * N],
                               scratch[:c[16]])
            elif op == OP_REDUCE_MAX:
                x, y, O, R, I = c[1], c[2], c[3], c[4], c[5]
                xcall_lazy(reduce_max_u8, u8[x:x + O * R * I].reshape((O, R, I)),
                           u8[y:y + O * I].reshape((O, I)), c[6] != 0, c[7], c[8])
            elif op == OP_QSOFTMAX:
                x, y, n = c[1], c[2], c[3] * c[4] * c[5]
                xcall_lazy(qsoftmax_u8, u8[x:x + n], u8[y:y + n], c[3], c[4], c[5],
                           lpool[c[6]:c[6] + 256], c[7], c[8], c[9], c[10], c[11])
            elif op == OP_REQUANT_COPY:
                x, y, R, Cx, Cy = c[1], c[2], c[3], c[4], c[5]
                xcall_lazy(requant_copy_u8, u8[x:x + R * Cx].reshape((R, Cx)), c[7], c[8], c[9],
                           c[10], c[11], c[12], u8[y:y + R * Cy].reshape((R, Cy)), c[6])
            elif op == OP_CLIP:
                x, y, n = c[1], c[2], c[3]
                xcall_lazy(clip_u8, u8[x:x + n], c[4], c[5], u8[y:y + n])
            elif op == OP_MAXPOOL:
                x, y, N, H, W, C, OH, OW = c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
                xcall_lazy(maxpool_u8, u8[x:x + N * H * W * C].reshape((N, H, W, C)), c[9], c[10],
                           c[11], c[12], c[13], c[14], c[15], c[16], c[17], c[18],
                           u8[y:y + N * OH * OW * C].reshape((N, OH, OW, C)))
            elif op == OP_AVGPOOL:
                x, y, N, H, W, C, OH, OW = c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
                mu, sh, k1 = c[18], c[19], c[20]
                xcall_lazy(avgpool_u8, u8[x:x + N * H * W * C].reshape((N, H, W, C)), c[21], c[9],
                           c[10], c[11], c[12], c[13], c[14], c[15], c[16], c[17],
                           ipool[mu:mu + k1], ipool[sh:sh + k1], c[22], c[23], c[24],
                           u8[y:y + N * OH * OW * C].reshape((N, OH, OW, C)))
            elif op == OP_REDUCE_MEAN:
                x, y, O, R, I = c[1], c[2], c[3], c[4], c[5]
                xcall_lazy(reduce_mean_u8, u8[x:x + O * R * I].reshape((O, R, I)), c[6], c[7],
                           c[8], c[9], c[10], c[11], u8[y:y + O * I].reshape((O, I)))
            elif op == OP_TRANSPOSE_U8:
                x, y, n = c[1], c[2], c[3]
                xcall_lazy(transpose_u8, u8[x:x + n], lpool[c[4]:c[4] + 6], lpool[c[5]:c[5] + 6],
                           u8[y:y + n])
            elif op == OP_LUT:
                x, y, n, t = c[1], c[2], c[3], c[4]
                if path == PATH_AVX2 or path == PATH_VNNI512:     # x86 with AVX2
                    xcall_lazy(lut_u8_avx2, u8[x:x + n], u8[t:t + 256], u8[y:y + n])
                else:
                    xcall_lazy(lut_u8, u8[x:x + n], u8[t:t + 256], u8[y:y + n])
            elif op == OP_LUT2:
                a, b, y = c[1], c[2], c[3]
                xcall_lazy(lut2_u8, u8[a:a + c[4]], u8[b:b + c[5]], lpool[c[7]:c[7] + 6],
                           lpool[c[8]:c[8] + 6], lpool[c[9]:c[9] + 6], u8[c[10]:c[10] + 65536],
                           u8[y:y + c[6]])
            elif op == OP_MUL:
                a, b, y = c[1], c[2], c[3]
                if path == PATH_AVX2 or path == PATH_VNNI512:     # x86 with AVX2
                    xcall_lazy(mul_u8_avx2, u8[a:a + c[4]], u8[b:b + c[5]], lpool[c[7]:c[7] + 6],
                               lpool[c[8]:c[8] + 6], lpool[c[9]:c[9] + 6], c[10], c[11], c[12],
                               c[13], c[14], c[15], c[16], u8[y:y + c[6]])
                else:
                    xcall_lazy(mul_u8, u8[a:a + c[4]], u8[b:b + c[5]], lpool[c[7]:c[7] + 6],
                               lpool[c[8]:c[8] + 6], lpool[c[9]:c[9] + 6], c[10], c[11], c[12],
                               c[13], c[14], c[15], c[16], u8[y:y + c[6]])
            elif op == OP_SLICE:
                x, y = c[1], c[2]
                xcall_lazy(slice_u8, u8[x:x + c[3]], c[5], lpool[c[6]:c[6] + 6],
                           lpool[c[7]:c[7] + 6], u8[y:y + c[4]])
            elif op == OP_PAD:
                x, y = c[1], c[2]
                xcall_lazy(pad_u8, u8[x:x + c[3]], lpool[c[5]:c[5] + 6], lpool[c[6]:c[6] + 6],
                           lpool[c[7]:c[7] + 6], c[8], u8[y:y + c[4]])
            elif op == OP_RESIZE:
                x, y = c[1], c[2]
                xcall_lazy(resize_nearest_u8, u8[x:x + c[3]], lpool[c[5]:c[5] + 6],
                           lpool[c[6]:c[6] + 6], lpool[c[7]:c[7] + c[8]], u8[y:y + c[4]])
            elif op == OP_RESIZE_LINEAR:
                x, y, N, H, W, C, OH, OW = c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
                xcall_lazy(resize_linear_u8, u8[x:x + N * H * W * C].reshape((N, H, W, C)),
                           lpool[c[9]:c[9] + 3 * (OH + OW)],
                           u8[y:y + N * OH * OW * C].reshape((N, OH, OW, C)))
            elif op == OP_RESIZE_CUBIC:
                x, y, N, H, W, C, OH, OW = c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
                xcall_lazy(resize_cubic_u8, u8[x:x + N * H * W * C].reshape((N, H, W, C)),
                           lpool[c[9]:c[9] + 8 * (OH + OW)], c[10], c[11], c[12], c[13],
                           u8[y:y + N * OH * OW * C].reshape((N, OH, OW, C)))
            elif op == OP_QUANTIZE:
                x, y, n = c[1], c[2], c[3]
                xcall_lazy(quantize_f32, _f32_at(f32, io, x, n), fpool[c[4]], c[5], u8[y:y + n])
            elif op == OP_DEQUANTIZE:
                x, y, n = c[1], c[2], c[3]
                xcall_lazy(dequantize_u8, u8[x:x + n], fpool[c[4]], c[5], _f32_at(f32, io, y, n))
            elif op == OP_QUANTIZE_T:
                x, y, n = c[1], c[2], c[3]
                xcall_lazy(quantize_transpose_f32, _f32_at(f32, io, x, n), fpool[c[4]], c[5],
                           lpool[c[6]:c[6] + 6], lpool[c[7]:c[7] + 6], u8[y:y + n])
            elif op == OP_DEQUANTIZE_T:
                x, y, n = c[1], c[2], c[3]
                xcall_lazy(dequantize_transpose_u8, u8[x:x + n], fpool[c[4]], c[5],
                           lpool[c[6]:c[6] + 6], lpool[c[7]:c[7] + 6], _f32_at(f32, io, y, n))
            elif op == OP_LRN:
                x, y, O, A, I = c[1], c[2], c[3], c[4], c[5]
                xcall_lazy(lrn_f32, _f32_at(f32, io, x, O * A * I).reshape((O, A, I)),
                           _f32_at(f32, io, y, O * A * I).reshape((O, A, I)), fpool[c[6]],
                           fpool[c[7]], fpool[c[8]], c[9])
            elif op == OP_LAYERNORM:
                x, y, R, n = c[1], c[2], c[3], c[4]
                xcall_lazy(layernorm_f32, _f32_at(f32, io, x, R * n).reshape((R, n)),
                           fpool[c[5]:c[5] + n], fpool[c[6]:c[6] + n], fpool[c[7]], c[8],
                           _f32_at(f32, io, y, R * n).reshape((R, n)))
            elif op == OP_QLAYERNORM:
                x, y, R, n = c[1], c[2], c[3], c[4]
                xcall_lazy(qlayernorm_u8, u8[x:x + R * n].reshape((R, n)), fpool[c[9]], c[10],
                           fpool[c[5]:c[5] + n], fpool[c[6]:c[6] + n], fpool[c[7]], c[8],
                           fpool[c[11]], c[12], u8[y:y + R * n].reshape((R, n)))
            elif op == OP_CONCAT_F32:
                x, y, R, Cx, Cy = c[1], c[2], c[3], c[4], c[5]
                xcall_lazy(copy_cols_f32, _f32_at(f32, io, x, R * Cx).reshape((R, Cx)),
                           _f32_at(f32, io, y, R * Cy).reshape((R, Cy)), c[6])
            elif op == OP_SOFTMAX:
                x, y, O, A, I = c[1], c[2], c[3], c[4], c[5]
                xcall_lazy(softmax_f32, _f32_at(f32, io, x, O * A * I).reshape((O, A, I)),
                           _f32_at(f32, io, y, O * A * I).reshape((O, A, I)))
            elif op == OP_TRANSPOSE_F32:
                x, y, n = c[1], c[2], c[3]
                xcall_lazy(transpose_f32, _f32_at(f32, io, x, n), lpool[c[4]:c[4] + 6],
                           lpool[c[5]:c[5] + 6], _f32_at(f32, io, y, n))
            else:
                raise ValueError("unknown opcode")

    return execute


_LOOPS: dict = {}


def loop_for(path_id: int):
    """The compiled interpreter loop of GEMM path `path_id` (created once per process)."""
    f = _LOOPS.get(path_id)
    if f is None:
        if path_id not in PATH_NAMES:
            raise ValueError(f"plan has an unknown GEMM path id {path_id}")
        f = _LOOPS[path_id] = _make(FINGERPRINT, int(path_id))
    return f


def execute(code, lpool, wpool, ipool, fpool, u8, f32, scratch, io):
    """Run a plan (see encoding.py) with the loop of the plan's GEMM path (lpool[0])."""
    loop_for(int(lpool[0]))(code, lpool, wpool, ipool, fpool, u8, f32, scratch, io)


def instruction_runner(code, lpool, wpool, ipool, fpool, u8, f32, scratch, io, i):
    """A zero-argument callable that runs instruction i of a plan alone, through the compiled
    loop on a one-row table (the same machine code as in `execute`).  It reads the arenas as
    the last run left them, so call it after one run of the whole plan: then every operand
    holds real data.  An instruction never writes its own inputs, so repeating it is
    idempotent.  Costs one dispatch (a few microseconds) on top of the kernel.  For per-layer
    timing (profile, the kernel benchmarks)."""
    loop = loop_for(int(lpool[0]))
    row = code[i:i + 1]

    def run():
        loop(row, lpool, wpool, ipool, fpool, u8, f32, scratch, io)
    return run


def profile(code, lpool, wpool, ipool, fpool, u8, f32, scratch, io, repeats=5):
    """Debug/profiling hook: run a plan instruction by instruction (instruction_runner), each
    `repeats` times in a row; returns the median seconds per instruction (float64 [n_instr]).
    The plan's outputs are computed as by `execute`; repeats after the first run with warm
    caches."""
    import time

    import numpy as np

    n = code.shape[0]
    t = np.zeros((n, max(int(repeats), 1)))
    for i in range(n):
        run = instruction_runner(code, lpool, wpool, ipool, fpool, u8, f32, scratch, io, i)
        for r in range(t.shape[1]):
            t0 = time.perf_counter()
            run()
            t[i, r] = time.perf_counter() - t0
    return np.median(t, axis=1)
