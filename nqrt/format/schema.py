"""Single source of truth for the `.nq` v1 document: names, dtypes, op table, limits.

The normative text is formats/nq-v1.md; this module is its machine-readable twin.  The
reader enforces exactly what is declared here, the writer emits only what is declared
here, and the converter and runtime import op names from here (never spell them again).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nqrt import qmath

FORMAT_NAME = "nqrt.nq"
VERSION_MAJOR = 1
VERSION_MINOR = 0
CHECKSUM_ALGO = "sha256"

# ---------------------------------------------------------------------------------------
# Limits (a reader rejects documents beyond them; they bound memory and int32 accumulation)
# ---------------------------------------------------------------------------------------
MAX_FILE_BYTES = 4 * 2**30          # 4 GiB
MAX_TENSORS = 1_000_000
MAX_NODES = 1_000_000
MAX_RANK = 8
MAX_DIM = 2**31 - 1
MAX_NAME_LEN = 4096
MAX_NODE_INPUTS = 4096              # Concat fan-in
# Dot-product length bound: K * 255 * 127 < 2**31 so the int32 dot product cannot overflow.
MAX_DOT_LENGTH = 66_000
MATMUL_K_MAX = 33_025               # QMatMul: K·255² < 2^31 (section 4.19)
# Window/reduction count bound (QAveragePool, QReduceMean): count * 255 < 2**31.
MAX_POOL_COUNT = 8_421_504
# msgpack decoding limits (section 6): nesting depth (the outermost map is depth 1) and the
# number of items of any one array or map.
MAX_MSGPACK_DEPTH = 16
MAX_CONTAINER_LEN = 10_000_000
MAX_MULTIPLIER = 2**31 - 1          # fixed-point M0 (section 3.2)
SOFTMAX_NUMERATOR_MAX = 2**62 - 1   # QSoftmax G (section 4.21)
SOFTMAX_TABLE_MAX = 2**31 - 1       # QSoftmax table entries (int32, >= 0; entry 0 >= 1)
SHIFT_RANGE = (1, 62)               # fixed-point right shift n (section 3.2)
ACT_RANGE = (0, 255)                # act_min / act_max

# ---------------------------------------------------------------------------------------
# Tensor dtypes: name -> (numpy dtype string, little-endian itemsize)
# ---------------------------------------------------------------------------------------
DTYPES = {
    "float32": ("<f4", 4),
    "uint8": ("u1", 1),
    "int8": ("i1", 1),
    "int32": ("<i4", 4),
    "int64": ("<i8", 8),
}

# Integer value range of each integer dtype (zero points must lie in it).
DTYPE_RANGES = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
QUANTIZABLE_DTYPES = ("uint8", "int8", "int32")

# ---------------------------------------------------------------------------------------
# Document layout: map keys in the order writers emit them (sections 1 and 2)
# ---------------------------------------------------------------------------------------
ENVELOPE_KEYS = ("format", "version", "checksum", "body")
CHECKSUM_KEYS = ("algo", "digest")
DOCUMENT_KEYS = ("producer", "graph_inputs", "graph_outputs", "tensors", "nodes", "metadata")
PRODUCER_KEYS = ("name", "version")
IO_KEYS = ("name", "dtype", "shape")
TENSOR_KEYS = ("name", "dtype", "shape", "quant", "data")
QUANT_KEYS = ("scale", "zero_point", "axis")
NODE_KEYS = ("op", "name", "inputs", "outputs", "attrs")
# Maps whose unknown keys a reader ignores in files of a higher minor version (section 1).
EXTENSIBLE_MAPS = frozenset({"document", "tensor", "node"})

# ---------------------------------------------------------------------------------------
# Op table
# ---------------------------------------------------------------------------------------
# Attribute kinds: "int", "float", "ints", "floats", "str".
# Input roles: "act" = an activation computed at run time (or a graph input);
#              "const" = a tensor with constant data in the document;
#              "any" = either (QAdd/QMul second operand: a uint8 constant with per-tensor quant
#                      is read like an activation; the runtime copies it into its arena).

@dataclass(frozen=True)
class OpSpec:
    name: str
    inputs: tuple[tuple[str, str, str], ...]   # (role name, "act"|"const", dtype) in order
    outputs: tuple[str, ...]                   # output dtypes
    attrs: dict = field(default_factory=dict)  # attr name -> (kind, required: bool)
    variadic: bool = False                     # last input role repeats >= 1 times
    optional_inputs: int = 0                   # trailing inputs that may be omitted
    quantized: bool = True                     # integer op between Quantize and Dequantize


_ACT = {"act_min": ("int", True), "act_max": ("int", True)}

OPS: dict[str, OpSpec] = {}


def _op(spec: OpSpec) -> None:
    OPS[spec.name] = spec


# Float boundary ---------------------------------------------------------------------------
_op(OpSpec("Quantize", (("x", "act", "float32"),), ("uint8",), {}, quantized=False))
_op(OpSpec("Dequantize", (("x", "act", "uint8"),), ("float32",), {}, quantized=False))
# Float ops (after Dequantize): computed in float32.
_op(OpSpec("Softmax", (("x", "act", "float32"),), ("float32",), {"axis": ("int", True)}, quantized=False))
_op(OpSpec("LRN", (("x", "act", "float32"),), ("float32",),
           {"alpha": ("float", True), "beta": ("float", True), "bias": ("float", True),
            "size": ("int", True)}, quantized=False))
_op(OpSpec("LayerNormalization",
           (("x", "act", "float32"), ("scale", "const", "float32"), ("bias", "const", "float32")),
           ("float32",), {"axis": ("int", True), "epsilon": ("float", True), "rms": ("int", False)},
           quantized=False))
# Concat of float32 tensors: at a graph output whose inputs have different grids, each input
# is dequantized with its own (s, z) and the float values concatenated (no shared uint8 grid).
_op(OpSpec("Concat", (("x", "act", "float32"),), ("float32",), {"axis": ("int", True)},
           variadic=True, quantized=False))

# Integer compute ops ---------------------------------------------------------------------
_op(OpSpec(
    "QConv",
    (("x", "act", "uint8"), ("w", "const", "int8"), ("bias", "const", "int32"),
     ("multiplier", "const", "int32"), ("shift", "const", "int32")),
    ("uint8",),
    {"strides": ("ints", True), "pads": ("ints", True), "dilations": ("ints", True),
     "group": ("int", True), **_ACT},
))
_op(OpSpec(
    "QGemm",
    (("x", "act", "uint8"), ("w", "const", "int8"), ("bias", "const", "int32"),
     ("multiplier", "const", "int32"), ("shift", "const", "int32")),
    ("uint8",),
    dict(_ACT),
))
_op(OpSpec(
    "QAdd",
    (("a", "act", "uint8"), ("b", "any", "uint8")),
    ("uint8",),
    {"multiplier_a": ("int", True), "multiplier_b": ("int", True), "shift": ("int", True), **_ACT},
))
_op(OpSpec(
    "QConcat",
    (("x", "any", "uint8"),),
    ("uint8",),
    {"axis": ("int", True), "multipliers": ("ints", True), "shifts": ("ints", True)},
    variadic=True,
))
_op(OpSpec(
    "QAveragePool",
    (("x", "act", "uint8"), ("multiplier", "const", "int32"), ("shift", "const", "int32")),
    ("uint8",),
    {"kernel_shape": ("ints", True), "strides": ("ints", True), "pads": ("ints", True),
     "ceil_mode": ("int", True), "count_include_pad": ("int", True), **_ACT},
))
_op(OpSpec(
    "QReduceMean",
    (("x", "act", "uint8"), ("multiplier", "const", "int32"), ("shift", "const", "int32")),
    ("uint8",),
    {"axes": ("ints", True), "keepdims": ("int", True), "count": ("int", True), "sum": ("int", False),
     **_ACT},
))
# Same-scale ops: output quantization parameters equal the input's.
_op(OpSpec(
    "MaxPool",
    (("x", "act", "uint8"),),
    ("uint8",),
    {"kernel_shape": ("ints", True), "strides": ("ints", True), "pads": ("ints", True),
     "dilations": ("ints", True), "ceil_mode": ("int", True), **_ACT},
))
_op(OpSpec("QClip", (("x", "act", "uint8"),), ("uint8",), dict(_ACT)))
_op(OpSpec("Reshape", (("x", "act", "uint8"),), ("uint8",), {"shape": ("ints", True)}))
_op(OpSpec("Flatten", (("x", "act", "uint8"),), ("uint8",), {"axis": ("int", True)}))
_op(OpSpec("Transpose", (("x", "act", "uint8"),), ("uint8",), {"perm": ("ints", True)}))

# ---------------------------------------------------------------------------------------
# Ops added for MobileNetV3 / EfficientNet / ShuffleNetV2 / FPN necks (still format 1.0).
# They were declared here before the integer runtime executed them (hence the name); the
# runtime now does, so they are merged into `OPS` below.  `PENDING_OPS` stays as the list of
# the extension's ops and `ALL_OPS` (== `OPS`) as the format's op table used by the reader,
# writer, validator and converter.
# ---------------------------------------------------------------------------------------
PENDING_OPS: dict[str, OpSpec] = {}


def _pending(spec: OpSpec) -> None:
    PENDING_OPS[spec.name] = spec


_pending(OpSpec("QLut", (("x", "act", "uint8"), ("table", "const", "uint8")), ("uint8",), {}))
_pending(OpSpec(
    "QMul",
    (("a", "act", "uint8"), ("b", "any", "uint8")),
    ("uint8",),
    {"multiplier": ("int", True), "shift": ("int", True), **_ACT},
))
_pending(OpSpec("Slice", (("x", "act", "uint8"),), ("uint8",),
                {"starts": ("ints", True), "ends": ("ints", True), "axes": ("ints", True),
                 "steps": ("ints", True)}))
_pending(OpSpec("Squeeze", (("x", "act", "uint8"),), ("uint8",), {"axes": ("ints", True)}))
_pending(OpSpec("Unsqueeze", (("x", "act", "uint8"),), ("uint8",), {"axes": ("ints", True)}))
_pending(OpSpec("Pad", (("x", "act", "uint8"),), ("uint8",),
                {"pads": ("ints", True), "value": ("int", True)}))
_pending(OpSpec("PadBorder", (("x", "act", "uint8"),), ("uint8",),
                {"pads": ("ints", True), "mode": ("str", True)}))
_pending(OpSpec("ResizeNearest", (("x", "act", "uint8"),), ("uint8",),
                {"scales": ("floats", False), "sizes": ("ints", False),
                 "coordinate_transformation_mode": ("str", True), "nearest_mode": ("str", True)}))
_pending(OpSpec("ResizeLinear", (("x", "act", "uint8"),), ("uint8",),
                {"scales": ("floats", False), "sizes": ("ints", False),
                 "coordinate_transformation_mode": ("str", True)}))
_pending(OpSpec("ResizeCubic", (("x", "act", "uint8"),), ("uint8",),
                {"scales": ("floats", False), "sizes": ("ints", False),
                 "coordinate_transformation_mode": ("str", True), "cubic_coeff_a": ("float", True),
                 "exclude_outside": ("int", True), "multiplier": ("int", True), "shift": ("int", True)}))

_pending(OpSpec(
    "QMatMul",
    (("a", "act", "uint8"), ("b", "any", "uint8")),
    ("uint8",),
    {"multiplier": ("int", True), "shift": ("int", True), **_ACT},
))

_pending(OpSpec(
    "Expand",
    (("x", "any", "uint8"), ("like", "act", "uint8")),
    ("uint8",),
    {"shape": ("ints", True)},
    optional_inputs=1,
))

_pending(OpSpec("ReduceMax", (("x", "act", "uint8"),), ("uint8",),
                {"axes": ("ints", True), "keepdims": ("int", True), **_ACT}))
_pending(OpSpec("ReduceMin", (("x", "act", "uint8"),), ("uint8",),
                {"axes": ("ints", True), "keepdims": ("int", True), **_ACT}))

_pending(OpSpec("QLut2", (("a", "act", "uint8"), ("b", "any", "uint8"), ("table", "const", "uint8")),
                ("uint8",), {}))

_pending(OpSpec(
    "QSoftmax",
    (("x", "act", "uint8"), ("table", "const", "int32")),
    ("uint8",),
    {"axis": ("int", True), "numerator": ("int", True), "shift": ("int", True), **_ACT},
))

OPS.update(PENDING_OPS)            # wired into the runtime planner/interpreter
ALL_OPS: dict[str, OpSpec] = OPS   # the format's op table (one dict: every op is executable)

SAME_SCALE_OPS = frozenset({"MaxPool", "QClip", "Reshape", "Flatten", "Transpose",
                            "Slice", "Squeeze", "Unsqueeze", "Pad", "PadBorder", "ResizeNearest", "ResizeLinear",
                            "Expand", "ReduceMax", "ReduceMin"})

# PadBorder modes (section 4.13): ONNX Pad's non-constant modes, as numpy.pad names them.
PAD_BORDER_MODES = ("reflect", "edge", "wrap")

# ResizeNearest string attributes (section 4.12).
RESIZE_COORDINATE_MODES = ("asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel",
                           "tf_half_pixel_for_nn")
RESIZE_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
RESIZE_LINEAR_MODES = ("asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel")
# ResizeCubic (section 4.24): the modes of ResizeLinear; cubic_coeff_a in this closed range
# (the field's kernels use -0.5 and -0.75), which bounds the weights' absolute sum.
CUBIC_COEFF_A_RANGE = (-2.0, 0.0)
CUBIC_MULTIPLIER_LIMIT = 1 << qmath.CUBIC_MULTIPLIER_BITS   # its M0: the accumulator may reach 2^34

# ---------------------------------------------------------------------------------------
# Attribute value ranges (section 5): int attributes, and every element of ints attributes,
# must lie in [lo, hi].  Rank-dependent attributes (axis, axes, perm, shape) and list
# lengths are checked per op by nqrt.format.validate.
# ---------------------------------------------------------------------------------------
ATTR_RANGES: dict[str, tuple[int, int]] = {
    "act_min": ACT_RANGE,
    "act_max": ACT_RANGE,
    "strides": (1, MAX_DIM),
    "dilations": (1, MAX_DIM),
    "pads": (0, MAX_DIM),
    "kernel_shape": (1, MAX_DIM),
    "group": (1, MAX_DIM),
    "ceil_mode": (0, 1),
    "exclude_outside": (0, 1),
    "count_include_pad": (0, 1),
    "keepdims": (0, 1),
    "count": (1, MAX_POOL_COUNT),
    "multiplier_a": (-MAX_MULTIPLIER, MAX_MULTIPLIER),   # QAdd: signed (Sub, c - x)
    "multiplier_b": (-MAX_MULTIPLIER, MAX_MULTIPLIER),
    "multiplier": (0, MAX_MULTIPLIER),
    "multipliers": (0, MAX_MULTIPLIER),
    "shift": SHIFT_RANGE,
    "numerator": (1, SOFTMAX_NUMERATOR_MAX),
    "shifts": SHIFT_RANGE,
    "axis": (-MAX_RANK, MAX_RANK),
    "axes": (-MAX_RANK, MAX_RANK - 1),
    "perm": (0, MAX_RANK - 1),
    "shape": (-1, MAX_DIM),
    "value": ACT_RANGE,                 # Pad: the uint8 code written in the padding
    "sizes": (1, MAX_DIM),
}
