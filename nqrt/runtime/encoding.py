"""The instruction encoding shared by the planner (writer) and the interpreter (reader).

A plan is a program for one @njit interpreter loop:

* ``code``: int64[n_instr, WIDTH]. Row i is one instruction: ``code[i, 0]`` is the opcode,
  ``code[i, 1:]`` its fields in the order of ``FIELDS[opcode]`` (unused tail = 0).
* Operand fields ``x``, ``y``, ``a``, ``b`` are element offsets into an *arena*: the uint8
  arena for uint8 tensors, the float32 arena for float32 tensors (which one is fixed by the
  opcode).  A negative float32 operand -(k + 1) is instead the caller's buffer k, at address
  ``io[k]`` (the interpreter's last argument): the graph inputs in order, then the outputs
  (``Plan.inputs`` / ``Plan.outputs``), so Quantize reads the caller's arrays and each
  output's producer writes the array returned to the caller (no copies in or out).  Tensors are C-contiguous in their physical layout (see layout.py); dims fields
  give that physical shape.  Scratch space for kernels is a separate uint8 arena.
* Constant fields name offsets into the load-time pools: ``wpack`` into the int8 pool
  (packed weights; ``wpack_len`` bytes), ``wsum``/``bias``/``mult``/``shift`` into the int32
  pool (length M, or K+1 for average pooling), ``scale`` into the float32 pool.
* Fields ``shape``, ``perm``, ``a_strides``, ``b_strides``, ``strides``, ``in_shape``,
  ``begin``, ``out_shape`` are offsets of 6 int64 values in
  the plan's int64 parameter pool ``lpool`` (shapes left-padded with 1 to rank 6).
  ``index`` (OP_RESIZE) is the offset of ``index_len`` int64 values there (the six per-axis
  nearest-index tables of ``resize_args``, concatenated).
  ``lpool[0]`` is the plan's GEMM path id (``PATH_IDS``): the weights were packed for that
  path and the interpreter compiled for it runs the plan.
* uint8 constants (QLut tables, QAdd/QMul constant second operands; spec 2.1) live in the
  uint8 arena like activations: ``planner.prepare`` gathers them once per model load into the
  uint8 constant pool ``Consts.upool``; each plan gives every one it uses an arena slot that
  is live for the whole program (never reused by another tensor) and lists it in
  ``Plan.u8_consts``; ``Plan.init_u8(u8)`` copies them into a fresh arena once (Session does
  it when it allocates a plan's arenas).  So ``b`` of OP_ADD / OP_MUL and ``table`` of OP_LUT
  are plain uint8-arena offsets: no kernel, opcode or interpreter branch distinguishes a
  constant from an activation, and any future op can take a uint8 constant operand the same
  way.  (Whoever allocates an arena for a plan other than through Session must call
  ``init_u8`` before the first run.)
* ``scratch`` (QConv, QGemm) is the number of scratch bytes the instruction uses (a prefix of
  the scratch arena, sized for the plan's thread count: the fast kernels derive their thread
  count from it).
* Everything else is a scalar (zero points, clamps, kernel sizes, M0 ``m0`` and shift ``n``).

Extending: a new operator is a new opcode, a new FIELDS entry and one branch in the
interpreter. Float fallbacks use float32-arena operands and float32-pool constants
(e.g. ``OP_GEMM_F32: x, y, P, K, M, w, bias`` with w/bias offsets into the float pool).
Dynamic quantization is two opcodes: ``OP_MINMAX_F32: x, size, q`` writing the computed
scale to float32-arena slot q and the zero point (as float) to q+1, then
``OP_QUANTIZE_DYN: x, y, size, q`` reading them at run time; consumers whose (s, z) is
dynamic would read multipliers from such slots too. Neither needs a new table layout.
"""

from __future__ import annotations

WIDTH = 32

# GEMM paths (nqrt.kernels.cpu): which QConv / QGemm kernels and weight layout a plan uses.
PATH_PORTABLE = 0
PATH_AVX2 = 1
PATH_VNNI512 = 2
PATH_IDS = {"portable": PATH_PORTABLE, "avx2": PATH_AVX2, "vnni512": PATH_VNNI512}
PATH_NAMES = {v: k for k, v in PATH_IDS.items()}

# Float boundary and float ops
OP_QUANTIZE = 1
OP_DEQUANTIZE = 2
OP_SOFTMAX = 3
OP_TRANSPOSE_F32 = 4
OP_QUANTIZE_T = 5       # Quantize fused with the transpose into the runtime layout (inputs)
OP_DEQUANTIZE_T = 6     # the transpose back fused with Dequantize (outputs)
OP_LRN = 7
OP_LAYERNORM = 8
OP_CONCAT_F32 = 9       # one input of a float Concat: rows copied into a column block
# Integer ops
OP_CONV = 10
OP_GEMM = 11
OP_ADD = 12
OP_REQUANT_COPY = 13
OP_CLIP = 14
OP_MAXPOOL = 15
OP_AVGPOOL = 16
OP_REDUCE_MEAN = 17
OP_TRANSPOSE_U8 = 18
# CNN extension ops (formats/nq-v1.md 4.9-4.14)
OP_LUT = 19
OP_MUL = 20
OP_SLICE = 21
OP_PAD = 22
OP_RESIZE = 23
OP_RESIZE_LINEAR = 24
OP_MATMUL = 25
OP_QSOFTMAX = 26
OP_REDUCE_MAX = 27      # ReduceMax, and ReduceMin with minimum = 1
OP_LUT2 = 28
OP_RESIZE_CUBIC = 29
OP_QLAYERNORM = 30      # Dequantize -> LayerNormalization -> Quantize fused (planner)

FIELDS: dict[int, tuple[str, ...]] = {
    OP_QUANTIZE: ("x", "y", "size", "scale", "z"),
    OP_DEQUANTIZE: ("x", "y", "size", "scale", "z"),
    OP_SOFTMAX: ("x", "y", "O", "A", "I"),
    OP_LRN: ("x", "y", "O", "A", "I", "alpha", "beta", "bias", "size"),
    OP_LAYERNORM: ("x", "y", "R", "n", "scale", "bias", "eps", "rms"),
    OP_CONCAT_F32: ("x", "y", "R", "Cx", "Cy", "col_offset"),
    OP_TRANSPOSE_F32: ("x", "y", "size", "shape", "perm"),
    OP_QUANTIZE_T: ("x", "y", "size", "scale", "z", "shape", "perm"),
    OP_DEQUANTIZE_T: ("x", "y", "size", "scale", "z", "shape", "perm"),
    OP_CONV: ("x", "y", "N", "H", "W", "C", "OH", "OW", "M", "kh", "kw", "sh", "sw", "dh", "dw",
              "pad_t", "pad_l", "group", "z_x", "z_y", "act_min", "act_max",
              "wpack", "wpack_len", "wsum", "bias", "mult", "shift", "scratch"),
    OP_GEMM: ("x", "y", "P", "K", "M", "z_x", "z_y", "act_min", "act_max",
              "wpack", "wpack_len", "wsum", "bias", "mult", "shift", "scratch"),
    OP_ADD: ("a", "b", "y", "a_size", "b_size", "y_size", "shape", "a_strides", "b_strides",
             "z_a", "z_b", "m_a", "m_b", "shift", "z_y", "act_min", "act_max"),
    OP_REQUANT_COPY: ("x", "y", "R", "Cx", "Cy", "col_offset", "z_x", "m0", "n", "z_y",
                      "act_min", "act_max"),
    OP_CLIP: ("x", "y", "size", "act_min", "act_max"),
    OP_MAXPOOL: ("x", "y", "N", "H", "W", "C", "OH", "OW", "kh", "kw", "sh", "sw", "dh", "dw",
                 "pad_t", "pad_l", "act_min", "act_max"),
    OP_AVGPOOL: ("x", "y", "N", "H", "W", "C", "OH", "OW", "kh", "kw", "sh", "sw",
                 "pad_t", "pad_l", "pad_b", "pad_r", "count_include_pad", "mult", "shift", "K1",
                 "z_x", "z_y", "act_min", "act_max"),
    OP_REDUCE_MEAN: ("x", "y", "O", "R", "I", "z_x", "m0", "n", "z_y", "act_min", "act_max"),
    OP_TRANSPOSE_U8: ("x", "y", "size", "shape", "perm"),
    OP_LUT: ("x", "y", "size", "table"),
    OP_MUL: ("a", "b", "y", "a_size", "b_size", "y_size", "shape", "a_strides", "b_strides",
             "z_a", "z_b", "m0", "n", "z_y", "act_min", "act_max"),
    OP_LUT2: ("a", "b", "y", "a_size", "b_size", "y_size", "shape", "a_strides", "b_strides", "table"),
    OP_SLICE: ("x", "y", "x_size", "y_size", "offset", "shape", "strides"),
    OP_PAD: ("x", "y", "x_size", "y_size", "in_shape", "begin", "out_shape", "value"),
    OP_RESIZE: ("x", "y", "x_size", "y_size", "in_shape", "out_shape", "index", "index_len"),
    OP_RESIZE_LINEAR: ("x", "y", "N", "H", "W", "C", "OH", "OW", "tab"),
    OP_RESIZE_CUBIC: ("x", "y", "N", "H", "W", "C", "OH", "OW", "tab", "z_x", "m0", "n", "z_y"),
    OP_MATMUL: ("a", "b", "y", "nb", "M", "K", "N", "z_a", "z_b", "m0", "n", "z_y",
                "act_min", "act_max", "offs", "scratch"),
    OP_QSOFTMAX: ("x", "y", "O", "A", "I", "table", "G", "n", "z_y", "act_min", "act_max"),
    OP_REDUCE_MAX: ("x", "y", "O", "R", "I", "minimum", "act_min", "act_max"),
    OP_QLAYERNORM: ("x", "y", "R", "n", "scale", "bias", "eps", "rms", "s_x", "z_x", "s_y", "z_y"),
}

OP_NAMES = {v: k for k, v in list(globals().items()) if k.startswith("OP_") and isinstance(v, int)}

# Fields that hold arena offsets, per arena, for each opcode (the planner patches them).
U8_OPERANDS = {
    OP_QUANTIZE: ("y",), OP_DEQUANTIZE: ("x",), OP_QUANTIZE_T: ("y",), OP_DEQUANTIZE_T: ("x",),
    OP_CONV: ("x", "y"), OP_GEMM: ("x", "y"),
    OP_ADD: ("a", "b", "y"), OP_REQUANT_COPY: ("x", "y"), OP_CLIP: ("x", "y"),
    OP_MAXPOOL: ("x", "y"), OP_AVGPOOL: ("x", "y"), OP_REDUCE_MEAN: ("x", "y"),
    OP_TRANSPOSE_U8: ("x", "y"), OP_LUT: ("x", "table", "y"), OP_MUL: ("a", "b", "y"), OP_LUT2: ("a", "b", "table", "y"),
    OP_SLICE: ("x", "y"), OP_PAD: ("x", "y"), OP_RESIZE: ("x", "y"), OP_RESIZE_LINEAR: ("x", "y"),
    OP_RESIZE_CUBIC: ("x", "y"),
    OP_MATMUL: ("a", "b", "y"), OP_QSOFTMAX: ("x", "y"), OP_REDUCE_MAX: ("x", "y"),
    OP_QLAYERNORM: ("x", "y"),
}
F32_OPERANDS = {
    OP_QUANTIZE: ("x",), OP_DEQUANTIZE: ("y",), OP_SOFTMAX: ("x", "y"), OP_LRN: ("x", "y"),
    OP_LAYERNORM: ("x", "y"), OP_CONCAT_F32: ("x", "y"),
    OP_QUANTIZE_T: ("x",), OP_DEQUANTIZE_T: ("y",),
    OP_TRANSPOSE_F32: ("x", "y"),
}

assert max(len(f) for f in FIELDS.values()) < WIDTH


def encode_row(opcode: int, fields: dict) -> list[int]:
    """One table row; `fields` must name exactly FIELDS[opcode]."""
    names = FIELDS[opcode]
    if set(fields) != set(names):
        missing = set(names) - set(fields)
        extra = set(fields) - set(names)
        raise KeyError(f"{OP_NAMES[opcode]}: missing {sorted(missing)}, unexpected {sorted(extra)}")
    row = [opcode] + [int(fields[n]) for n in names]
    return row + [0] * (WIDTH - len(row))
