"""Planner: NqModel + concrete input shapes -> an executable `Plan` (see encoding.py).

Two stages, following "prepare vs eval":

* `prepare(model)` (once per model load, shape-independent): chooses the GEMM path
  (`nqrt.kernels.cpu.gemm_path()`: vnni512 / avx2 / portable, `NQRT_GEMM_PATH` overrides), packs
  every QConv/QGemm weight for it with the kernels' packers (on avx2, 3x3 stride-1 convs
  for the Winograd kernel unless NQRT_WINOGRAD=0), expands per-tensor
  multiplier/shift [1] to [M], and places every constant in four pools (int8 packed weights,
  int32, float32, and uint8 for QLut tables and QAdd/QMul constant operands).
* `plan(model, consts, input_shapes)` (once per input-shape tuple): infers every tensor's
  logical shape (spec section 4), chooses physical layouts (layout.py), inserts transposes
  where a producer's layout differs from what a consumer accepts, lowers each node to
  instructions, assigns every run-time tensor a slot in the uint8 / float32 arenas (greedy
  first-fit by offset over instruction lifetimes) and sizes the shared scratch arena (each
  QConv/QGemm gets the prefix its path's kernel needs for the plan's thread count).

Layout policy (each op declares what it accepts; `_ensure` transposes otherwise):

| op | input layout accepted | output layout |
|---|---|---|
| QConv, MaxPool, QAveragePool, ResizeLinear, ResizeCubic | channels-last | channels-last |
| QReduceMean, ReduceMax, ReduceMin | any in which the reduced axes are adjacent | input's, reduced dims dropped |
| QGemm | any with the last logical dim physically last | input's |
| QAdd, QMul, QClip, QLut | any (QAdd/QMul read each input through strides) | a full-shape input's |
| Slice, Pad, PadBorder, ResizeNearest | any (the kernels' geometry helpers take the perm) | input's |
| Squeeze, Unsqueeze | any: size-1 dims move no bytes | input's, dims dropped / inserted: no instruction |
| QConcat | the first input's (others transposed to it) | the first input's |
| Quantize | logical (graph input) | input's |
| Dequantize, Softmax, QSoftmax, Flatten, graph outputs | logical | logical |
| Reshape | its groups of split/merged dims each one block in logical order (layout.reshape_layouts) | the input's bytes relabelled |
| Transpose | any | input's bytes relabelled: no instruction |

Reshape, Flatten, Transpose, Squeeze and Unsqueeze never copy: their output aliases the input's
storage (no kernel ever writes into its input, so aliasing is always safe; lifetimes are per
storage).  Squeeze/Unsqueeze keep any layout (Reshape keeps it where the dims it splits or
merges allow, e.g. a channel shuffle of a channels-last tensor): the
dims they remove or insert have size 1, so the physical order of the other dims, and hence
the bytes, are unchanged (the output perm is the input's with those dims dropped / inserted).

uint8 constants (QLut tables, QAdd/QMul constant second operands) get an arena slot live over
the whole program, filled once per plan from `Consts.upool` (`Plan.init_u8`; encoding.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from nqrt import qmath
from nqrt.errors import FormatError, InputError
from nqrt.format import schema
from nqrt.format.model import NqModel, NqNode
from nqrt.format.validate import pad_border_limit
from nqrt.runtime import _kernels as K
from nqrt.runtime import encoding as E
from nqrt.runtime import layout as L
from nqrt.runtime.limits import check_elements as _check_elements
from nqrt.runtime.limits import check_resize as _check_resize

U8_ALIGN = 64          # bytes
F32_ALIGN = 16         # elements (64 bytes)
SCRATCH_MIN = 64
# ---------------------------------------------------------------------------------------
# Load time: constant pools
# ---------------------------------------------------------------------------------------

@dataclass
class Consts:
    """Shape-independent constants of a model, laid out in pools for the interpreter."""
    wpool: np.ndarray                 # int8: packed weights
    ipool: np.ndarray                 # int32: wsum, bias, multipliers, shifts
    fpool: np.ndarray                 # float32: scales
    node: list[dict]                  # per node: pool offsets of its constants
    path: str = "portable"            # GEMM path the weights are packed for (encoding.PATH_IDS)
    upool: np.ndarray = field(default_factory=lambda: np.zeros(1, np.uint8))
    # uint8 constants (QLut tables, QAdd/QMul constant operands), copied into each plan's arena
    u8_const: dict = field(default_factory=dict)   # tensor name -> offset in upool


WEIGHT_ALIGN = 64      # bytes: every packed weight array starts on a cache line (see _Pools)


class _Pools:
    """The constant pools: arrays of one dtype concatenated, addressed by element offset.
    The weight pool ("w", int8) starts every part on a WEIGHT_ALIGN-byte boundary (zero
    padding between parts), so the micro-kernels' panel loads do not straddle cache lines
    (a 256x1024x1024 GEMM: ~2 % faster than at an offset of 8 bytes)."""

    def __init__(self):
        self.parts = {"w": [], "i": [], "f": [], "u": []}
        self.size = {"w": 0, "i": 0, "f": 0, "u": 0}

    def add(self, kind: str, arr) -> int:
        arr = np.ascontiguousarray(arr).ravel()
        if kind == "w" and self.size[kind] % WEIGHT_ALIGN:
            pad = WEIGHT_ALIGN - self.size[kind] % WEIGHT_ALIGN
            self.parts[kind].append(np.zeros(pad, np.int8))
            self.size[kind] += pad
        off = self.size[kind]
        self.parts[kind].append(arr)
        self.size[kind] += arr.size
        return off

    def array(self, kind: str, dtype) -> np.ndarray:
        parts = [p.astype(dtype, copy=False) for p in self.parts[kind]]
        if kind != "w":
            return np.concatenate(parts) if parts else np.zeros(1, dtype)
        raw = np.zeros(max(self.size[kind], 1) + WEIGHT_ALIGN, np.int8)
        start = (-raw.ctypes.data) % WEIGHT_ALIGN
        out = raw[start:start + max(self.size[kind], 1)]
        if parts:
            np.concatenate(parts, out=out[:self.size[kind]])
        return out


def _per_channel(arr, m: int, what: str, node: NqNode) -> np.ndarray:
    a = np.asarray(arr, dtype=np.int32).ravel()
    if a.size == 1:
        return np.full(m, a[0], dtype=np.int32)
    if a.size != m:
        raise FormatError(f"node {node.name!r} ({node.op}): {what} has {a.size} values, expected 1 or {m}")
    return a


def prepare(model: NqModel, path: str | None = None) -> Consts:
    """Pack weights for the GEMM `path` (default: the host's, kernels.cpu.gemm_path()) and pool every
    constant (once per model load)."""
    path = K.gemm_path() if path is None else path
    if path not in E.PATH_IDS:
        raise ValueError(f"unknown GEMM path {path!r}; expected one of {tuple(E.PATH_IDS)}")
    if path not in K.available_paths():
        raise ValueError(f"GEMM path {path!r} cannot run on this host ({K.available_paths()})")
    pools = _Pools()
    per_node = []
    u8_const: dict[str, int] = {}
    for node in model.nodes:
        if node.op not in _HANDLERS:
            raise FormatError(f"op {node.op!r} (node {node.name!r}) is not supported by this runtime")
        for name in node.inputs:          # uint8 constants: QLut table, QAdd/QMul operand b
            t = model.tensor(name)
            if t.data is not None and t.dtype == "uint8" and name not in u8_const:
                u8_const[name] = pools.add("u", np.asarray(t.data, np.uint8))
        c: dict = {}
        const = lambda k: model.tensor(node.inputs[k]).data  # noqa: E731
        if node.op in ("QConv", "QGemm"):
            w = np.asarray(const(1), dtype=np.int8)
            m = w.shape[0]
            if node.op == "QConv":
                w4 = w[:, :, None, :] if w.ndim == 3 else w
                g0 = int(node.attrs["group"])
                f = K.merge_groups(w4.shape[1] * g0, m, g0, path)
                if f > 1:                  # narrow groups run f at a time (block diagonal)
                    w4 = K.merge_group_weights(w4, g0, f)
                    w = w4[:, :, 0, :] if w.ndim == 3 else w4
                c["group"] = g0 // f
                wpack, wsum = K.pack_conv_weights(np.ascontiguousarray(w4), c["group"], path)
                a = node.attrs
                if path == "avx2" and w.ndim == 4 and K.winograd_enabled() and K.winograd_eligible(
                        w4.shape[1] * c["group"], m, w4.shape[2], w4.shape[3], *a["strides"],
                        *a["dilations"], c["group"]):
                    wpack = K.pack_winograd_weights(w4, c["group"])  # bit-identical, 16 vs 36 MACs / 4 px
                    c["winograd"] = True
            else:
                wpack, wsum = K.pack_gemm_weights(np.ascontiguousarray(w), path)
            c["wsum"] = pools.add("i", np.asarray(wsum, dtype=np.int32))
            if np.asarray(const(2)).size != m:
                raise FormatError(f"node {node.name!r} ({node.op}): bias must have {m} values")
            bias = np.asarray(const(2), np.int32).ravel()
            mult = _per_channel(const(3), m, "multiplier", node)
            shift = _per_channel(const(4), m, "shift", node)
            group = c.get("group", 1)
            z_x, z_y = model.qparams(node.inputs[0])[1], model.qparams(node.outputs[0])[1]
            # the fast paths' requantize constants, from the input/output zero points
            if c.get("winograd"):
                wpack = K.with_winograd_table(wpack, w.shape[1] * group, bias, mult, shift, z_y, group)
            elif node.op == "QConv" and group > 1 and group == m and w.shape[1] == 1:
                wpack = K.with_depthwise_table(wpack, path, m, w4.shape[2], w4.shape[3], bias, mult,
                                               shift, z_x, z_y, sw=int(node.attrs["strides"][-1]))
            else:
                wpack = K.with_requant_table(wpack, path, int(np.prod(w.shape[1:])), wsum, bias,
                                             mult, shift, z_x, z_y)
            c["wpack"] = pools.add("w", np.asarray(wpack, dtype=np.int8))
            c["wpack_len"] = int(np.asarray(wpack).size)
            c["bias"] = pools.add("i", bias)
            c["mult"] = pools.add("i", mult)
            c["shift"] = pools.add("i", shift)
        elif node.op == "QAveragePool":
            k1 = math.prod(node.attrs["kernel_shape"]) + 1
            mult, shift = np.asarray(const(1), np.int32).ravel(), np.asarray(const(2), np.int32).ravel()
            if mult.size != k1 or shift.size != k1:
                raise FormatError(f"node {node.name!r} (QAveragePool): multiplier/shift need {k1} values")
            c["mult"], c["shift"], c["K1"] = pools.add("i", mult), pools.add("i", shift), k1
        elif node.op == "QReduceMean":
            c["m0"] = int(np.asarray(const(1)).ravel()[0])
            c["n"] = int(np.asarray(const(2)).ravel()[0])
        elif node.op == "LRN":
            for key in ("alpha", "beta", "bias"):
                c[key] = pools.add("f", np.array([node.attrs[key]], np.float32))
        elif node.op == "LayerNormalization":
            c["scale"] = pools.add("f", np.asarray(const(1), np.float32))
            c["bias"] = pools.add("f", np.asarray(const(2), np.float32))
            c["eps"] = pools.add("f", np.array([node.attrs["epsilon"]], np.float32))
        elif node.op in ("Quantize", "Dequantize"):
            qname = node.outputs[0] if node.op == "Quantize" else node.inputs[0]
            s, z = model.qparams(qname)
            c["scale"] = pools.add("f", np.array([s], np.float32))
            c["z"] = z
        per_node.append(c)
    return Consts(pools.array("w", np.int8), pools.array("i", np.int32),
                  pools.array("f", np.float32), per_node, path, pools.array("u", np.uint8), u8_const)


# ---------------------------------------------------------------------------------------
# Plan time
# ---------------------------------------------------------------------------------------

@dataclass
class Value:
    """A run-time tensor as planned: logical shape, physical layout, storage."""
    kind: str                          # "u8" | "f32"
    shape: tuple[int, ...]
    perm: tuple[int, ...]
    storage: int
    scale: float = 1.0
    zp: int = 0


@dataclass
class Slot:
    """One storage: a contiguous region of an arena, live over instructions [first, last]
    (-1 = before the first instruction, n_instr = after the last)."""
    arena: str                         # "u8" | "f32"
    size: int                          # elements
    names: list[str] = field(default_factory=list)
    first: int = 10**18
    last: int = -(10**18)
    offset: int = -1


@dataclass
class Plan:
    code: np.ndarray                   # int64 [n_instr, encoding.WIDTH]
    lpool: np.ndarray                  # int64 shape/perm/stride parameters
    u8_size: int
    f32_size: int
    scratch_size: int
    # The caller's float32 buffers (encoding.py): io[k] for k < len(inputs) is inputs[k], then
    # io[len(inputs) + j] the j-th output; instructions address buffer k as offset -(k + 1).
    inputs: list[tuple[str, tuple[int, ...]]]           # (name, shape), in io order
    outputs: dict[str, tuple[int, tuple[int, ...]]]     # name -> (io index, shape)
    shapes: dict[str, tuple[int, ...]]                  # logical shape of every run-time tensor
    layouts: dict[str, tuple[int, ...]]                 # physical perm of every run-time tensor
    slots: list[Slot]
    path: str = "portable"                              # GEMM path (lpool[0]), see prepare
    u8_consts: list = field(default_factory=list)       # (u8 arena offset, uint8 bytes): constants

    def init_u8(self, u8: np.ndarray) -> None:
        """Copy the plan's uint8 constants into its uint8 arena `u8` (once, before the first run;
        their slots are never written by any instruction)."""
        for off, data in self.u8_consts:
            u8[off:off + data.size] = data

    def describe(self) -> str:
        """Human-readable listing of the program (for debugging and tests)."""
        lines = []
        for row in self.code:
            op = int(row[0])
            names = E.FIELDS[op]
            args = ", ".join(f"{n}={int(v)}" for n, v in zip(names, row[1:]))
            lines.append(f"{E.OP_NAMES[op]}({args})")
        return "\n".join(lines)


def _norm_axis(axis: int, rank: int, node: NqNode) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise FormatError(f"node {node.name!r} ({node.op}): axis {axis} out of range for rank {rank}")
    return a


def _window_out(size, k, stride, dil, pb, pe, ceil_mode, node) -> int:
    """Spec section 4 output size, with the ONNX ceil_mode rule."""
    span = size + pb + pe - dil * (k - 1) - 1
    if span < 0:
        raise InputError(f"node {node.name!r} ({node.op}): input size {size} is smaller than the window")
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pb:
        out -= 1
    return out


class _Builder:
    def __init__(self, model: NqModel, consts: Consts, input_shapes: dict, nthreads: int):
        self.model, self.consts, self.nthreads = model, consts, nthreads
        self.values: dict[str, Value] = {}
        self.slots: list[Slot] = []
        self.instrs: list[tuple[int, dict]] = []
        self.lpool: list[int] = [E.PATH_IDS[consts.path]]     # lpool[0]: the GEMM path
        self.scratch = SCRATCH_MIN
        self._transposed: dict = {}
        self._consts_used: list[tuple[int, str]] = []      # (slot, tensor name) of uint8 constants
        for io in model.graph_inputs:
            shape = tuple(int(d) for d in input_shapes[io.name])
            v = self._new(io.name, "f32", shape, L.identity(len(shape)))
            self.slots[v.storage].first = -1
            self.slots[v.storage].last = -1

    # -- helpers ---------------------------------------------------------------------
    def _new(self, name, kind, shape, perm, scale=1.0, zp=0) -> Value:
        if any(d <= 0 for d in shape):
            raise InputError(f"tensor {name!r} would have an empty shape {list(shape)}")
        _check_elements(name, shape)
        self.slots.append(Slot(kind, L.numel(shape), [name]))
        v = Value(kind, tuple(shape), tuple(perm), len(self.slots) - 1, scale, zp)
        self.values[name] = v
        return v

    def _out_u8(self, name, shape, perm) -> Value:
        s, z = self.model.qparams(name)
        return self._new(name, "u8", shape, perm, s, z)

    def _alias(self, name, v: Value, shape, perm) -> Value:
        a = Value(v.kind, tuple(shape), tuple(perm), v.storage, v.scale, v.zp)
        self.slots[v.storage].names.append(name)
        if v.kind == "u8":
            a.scale, a.zp = self.model.qparams(name)
        self.values[name] = a
        return a

    def _lp(self, values) -> int:
        off = len(self.lpool)
        self.lpool.extend(int(x) for x in values)
        return off

    def emit(self, opcode, **fields):
        self.instrs.append((opcode, fields))

    def _ensure(self, v: Value, perm) -> Value:
        """`v` stored in layout `perm`: itself (relabelled) or a transposed copy."""
        perm = tuple(perm)
        if L.same_bytes(v.shape, v.perm, perm):
            return v if v.perm == perm else replace(v, perm=perm)
        key = (v.storage, v.perm, perm)
        if key not in self._transposed:
            shape6, perm6 = L.transpose_args(v.shape, v.perm, perm)
            name = f"{self.slots[v.storage].names[0]}@{''.join(map(str, perm))}"
            t = self._new(name, v.kind, v.shape, perm, v.scale, v.zp)
            op = E.OP_TRANSPOSE_U8 if v.kind == "u8" else E.OP_TRANSPOSE_F32
            self.emit(op, x=v.storage, y=t.storage, size=L.numel(v.shape),
                      shape=self._lp(shape6), perm=self._lp(perm6))
            self._transposed[key] = t
        return self._transposed[key]

    def _copy_f32(self, v: Value, name: str) -> Value:
        """A float32 copy of `v` (same layout) in a fresh tensor (an identity transpose)."""
        shape6, perm6 = L.transpose_args(v.shape, v.perm, v.perm)
        t = self._new(f"{name}@copy", "f32", v.shape, v.perm)
        self.emit(E.OP_TRANSPOSE_F32, x=v.storage, y=t.storage, size=L.numel(v.shape),
                  shape=self._lp(shape6), perm=self._lp(perm6))
        return t

    def _u8_const(self, name) -> Value:
        """A uint8 constant as a run-time tensor: logical layout, a slot live over the whole
        program (first = -1 here, last = end in build), filled by Plan.init_u8."""
        t = self.model.tensor(name)
        shape = tuple(int(d) for d in t.data.shape)
        s, z = self.model.qparams(name) if t.quant is not None else (1.0, 0)
        v = self._new(name, "u8", shape, L.identity(len(shape)), s, z)
        self.slots[v.storage].first = -1
        self._consts_used.append((v.storage, name))
        return v

    def _input(self, node, k=0, kind="u8") -> Value:
        name = node.inputs[k]
        if name not in self.values and name in self.consts.u8_const:
            self._u8_const(name)
        v = self.values[name]
        if v.kind != kind:
            raise FormatError(f"node {node.name!r} ({node.op}): input {node.inputs[k]!r} must be {kind}")
        return v

    # -- ops -------------------------------------------------------------------------
    def _spatial_args(self, node, x: Value, k, strides, dil, pads, ceil_mode):
        """Common QConv/MaxPool/QAveragePool geometry: NHWC dims and the output shape."""
        rank = len(x.shape)
        if rank not in (3, 4):
            raise FormatError(f"node {node.name!r} ({node.op}): input rank must be 3 or 4, got {rank}")
        sp = rank - 2
        if not (len(k) == len(strides) == len(dil) == sp and len(pads) == 2 * sp):
            raise FormatError(f"node {node.name!r} ({node.op}): attributes do not match spatial rank {sp}")
        S = x.shape[2:]
        So = tuple(_window_out(S[i], k[i], strides[i], dil[i], pads[i], pads[sp + i], ceil_mode, node)
                   for i in range(sp))
        if sp == 1:
            g = dict(H=1, W=S[0], kh=1, kw=k[0], sh=1, sw=strides[0], dh=1, dw=dil[0],
                     pad_t=0, pad_l=pads[0], pad_b=0, pad_r=pads[1], OH=1, OW=So[0])
        else:
            g = dict(H=S[0], W=S[1], kh=k[0], kw=k[1], sh=strides[0], sw=strides[1],
                     dh=dil[0], dw=dil[1], pad_t=pads[0], pad_l=pads[1], pad_b=pads[2],
                     pad_r=pads[3], OH=So[0], OW=So[1])
        return g, So

    def QConv(self, node, i):
        x = self._input(node)
        w = self.model.tensor(node.inputs[1]).data
        a = node.attrs
        group = int(a["group"])
        N, C = x.shape[:2]
        M = w.shape[0]
        if C != w.shape[1] * group:
            raise InputError(f"node {node.name!r} (QConv): input has {C} channels, "
                             f"weights expect {w.shape[1] * group}")
        g, So = self._spatial_args(node, x, list(w.shape[2:]), a["strides"], a["dilations"], a["pads"], 0)
        cl = L.channels_last(len(x.shape))
        xv = self._ensure(x, cl)
        y = self._out_u8(node.outputs[0], (N, M, *So), cl)
        c = self.consts.node[i]
        group = c["group"]          # the packed weights' grouping (prepare may merge groups)
        if c.get("winograd"):
            scratch = int(K.winograd_scratch_size(C, M, self.nthreads, group))
        else:
            scratch = int(K.conv_scratch_size(N, g["H"], g["W"], C, M, g["kh"], g["kw"], g["OH"],
                                              g["OW"], group, self.nthreads, self.consts.path))
        self.scratch = max(self.scratch, scratch)
        self.emit(E.OP_CONV, x=xv.storage, y=y.storage, N=N, C=C, M=M, group=group,
                  scratch=scratch,
                  **{k: g[k] for k in ("H", "W", "OH", "OW", "kh", "kw", "sh", "sw", "dh", "dw",
                                       "pad_t", "pad_l")},
                  z_x=x.zp, z_y=y.zp, act_min=a["act_min"], act_max=a["act_max"],
                  **{k: c[k] for k in ("wpack", "wpack_len", "wsum", "bias", "mult", "shift")})

    def QGemm(self, node, i):
        x = self._input(node)
        w = self.model.tensor(node.inputs[1]).data
        M, Kw = w.shape
        r = len(x.shape)
        if x.shape[-1] != Kw:
            raise InputError(f"node {node.name!r} (QGemm): input has K = {x.shape[-1]}, weights expect {Kw}")
        perm = x.perm if x.perm[-1] == r - 1 else L.identity(r)
        xv = self._ensure(x, perm)
        y = self._out_u8(node.outputs[0], (*x.shape[:-1], M), perm)
        c = self.consts.node[i]
        P = L.numel(x.shape[:-1])
        scratch = int(K.gemm_scratch_size(P, Kw, M, self.nthreads, self.consts.path))
        self.scratch = max(self.scratch, scratch)
        self.emit(E.OP_GEMM, x=xv.storage, y=y.storage, P=P, K=Kw, M=M, scratch=scratch,
                  z_x=x.zp, z_y=y.zp, act_min=node.attrs["act_min"], act_max=node.attrs["act_max"],
                  **{k: c[k] for k in ("wpack", "wpack_len", "wsum", "bias", "mult", "shift")})

    def _binary(self, node, full_first=False):
        """Shared by QAdd/QMul: inputs, output Value and the kernel's rank-6 broadcast geometry.
        The output takes the layout of a full-shape input (logical order if neither has the
        output's shape); each input is read through element strides in its own layout.
        full_first (a commutative op): when only the second input has the output's shape, the
        two are swapped, so that the kernel sees the broadcast operand second (the operand
        order its repeated-row path for SE products expects)."""
        a, b = self._input(node, 0), self._input(node, 1)
        try:
            out = L.broadcast_shapes(a.shape, b.shape)
        except ValueError as e:
            raise InputError(f"node {node.name!r} ({node.op}): {e}") from None
        if full_first and a.shape != out and b.shape == out:
            a, b = b, a
        if a.shape == out and b.shape == out and not L.same_bytes(out, a.perm, b.perm):
            # two full operands in different layouts (MobileViT's residual after its unfold /
            # fold transposes): reading one through transposed strides touches a new cache line
            # per element (a 64 K-element QAdd took 0.5 ms); one blocked byte transpose first
            b = self._ensure(b, a.perm)
        perm = a.perm if a.shape == out else b.perm if b.shape == out else L.identity(len(out))
        y = self._out_u8(node.outputs[0], out, perm)
        r = len(out)

        def strides(v):
            ls, off = L.logical_strides(v.shape, v.perm), r - len(v.shape)
            return [0 if d - off < 0 or v.shape[d - off] == 1 else ls[d - off] for d in perm]

        keep = [j for j, d in enumerate(perm) if out[d] != 1]
        if len(keep) > L.KERNEL_RANK:
            raise FormatError(f"node {node.name!r} ({node.op}): more than {L.KERNEL_RANK} non-unit dims")
        pad = L.KERNEL_RANK - len(keep)
        shape6 = [1] * pad + [out[perm[j]] for j in keep]
        sa, sb = strides(a), strides(b)
        geo = dict(a=a.storage, b=b.storage, y=y.storage, a_size=L.numel(a.shape),
                   b_size=L.numel(b.shape), y_size=L.numel(out), shape=self._lp(shape6),
                   a_strides=self._lp([0] * pad + [sa[j] for j in keep]),
                   b_strides=self._lp([0] * pad + [sb[j] for j in keep]))
        return a, b, y, geo

    def QAdd(self, node, i):
        a, b, y, geo = self._binary(node)
        at = node.attrs
        self.emit(E.OP_ADD, **geo, z_a=a.zp, z_b=b.zp, m_a=at["multiplier_a"], m_b=at["multiplier_b"],
                  shift=at["shift"], z_y=y.zp, act_min=at["act_min"], act_max=at["act_max"])

    def QMul(self, node, i):
        # (a − z_a)·(b − z_b) is symmetric in the two operands: swapping them is exact
        a, b, y, geo = self._binary(node, full_first=True)
        at = node.attrs
        self.emit(E.OP_MUL, **geo, z_a=a.zp, z_b=b.zp, m0=at["multiplier"], n=at["shift"],
                  z_y=y.zp, act_min=at["act_min"], act_max=at["act_max"])

    def QMatMul(self, node, i):
        """a [..., M, K] x b [..., K, N] in logical layout; the batch dims broadcast (numpy
        matmul), each output batch's (a, b) offsets in an lpool table."""
        a, b = self._input(node, 0), self._input(node, 1)
        if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[-1] != b.shape[-2]:
            raise InputError(f"node {node.name!r} (QMatMul): shapes {list(a.shape)} and "
                             f"{list(b.shape)} do not multiply")
        M, Kd, N = a.shape[-2], a.shape[-1], b.shape[-1]
        if Kd > schema.MATMUL_K_MAX:
            raise InputError(f"node {node.name!r} (QMatMul): inner dim {Kd} > {schema.MATMUL_K_MAX}")
        ba, bb = a.shape[:-2], b.shape[:-2]
        r = max(len(ba), len(bb))
        ba, bb = (1,) * (r - len(ba)) + tuple(ba), (1,) * (r - len(bb)) + tuple(bb)
        if any(p != q and 1 not in (p, q) for p, q in zip(ba, bb)):
            raise InputError(f"node {node.name!r} (QMatMul): batch dims {list(a.shape[:-2])} and "
                             f"{list(b.shape[:-2])} do not broadcast")
        batch = tuple(max(p, q) for p, q in zip(ba, bb))
        av = self._ensure(a, L.identity(len(a.shape)))
        bv = self._ensure(b, L.identity(len(b.shape)))
        offs = []
        for idx in np.ndindex(*batch):
            ia = ib = 0
            for d, i_d in enumerate(idx):
                ia = ia * ba[d] + (i_d if ba[d] > 1 else 0)
                ib = ib * bb[d] + (i_d if bb[d] > 1 else 0)
            offs += [ia * M * Kd, ib * Kd * N]
        nb = L.numel(batch)
        y = self._out_u8(node.outputs[0], batch + (M, N), L.identity(r + 2))
        at = node.attrs
        scratch = int(K.matmul_scratch_size(nb, Kd, N))
        self.scratch = max(self.scratch, scratch)
        self.emit(E.OP_MATMUL, a=av.storage, b=bv.storage, y=y.storage, nb=nb, M=M, K=Kd, N=N,
                  z_a=a.zp, z_b=b.zp, m0=at["multiplier"], n=at["shift"], z_y=y.zp,
                  act_min=at["act_min"], act_max=at["act_max"], offs=self._lp(offs), scratch=scratch)

    def Expand(self, node, i):
        """Broadcast copy: a Slice read with stride 0 on the broadcast dims (x in logical
        layout, output logical)."""
        x = self._input(node, 0)
        spec = [int(v) for v in node.attrs["shape"]]
        if -1 in spec:
            like = self.values[node.inputs[1]]
            spec = [like.shape[k] if v == -1 else v for k, v in enumerate(spec)]
        r = max(len(spec), len(x.shape))
        xs = (1,) * (r - len(x.shape)) + tuple(x.shape)
        ts = (1,) * (r - len(spec)) + tuple(spec)
        if any(d != t and 1 not in (d, t) for d, t in zip(xs, ts)):
            raise InputError(f"node {node.name!r} (Expand): input {list(x.shape)} does not broadcast to {spec}")
        out = tuple(max(d, t) for d, t in zip(xs, ts))
        xv = self._ensure(x, L.identity(len(x.shape)))
        step, strides = 1, [0] * r
        for k in range(r - 1, -1, -1):
            strides[k] = step if xs[k] == out[k] else 0
            step *= xs[k]
        keep = [k for k in range(r) if out[k] != 1]
        if len(keep) > L.KERNEL_RANK:
            raise FormatError(f"node {node.name!r} (Expand): more than {L.KERNEL_RANK} non-trivial dims")
        pad = L.KERNEL_RANK - len(keep)
        shape6 = [1] * pad + [out[k] for k in keep]
        strides6 = [0] * pad + [strides[k] for k in keep]
        y = self._out_u8(node.outputs[0], out, L.identity(r))
        self.emit(E.OP_SLICE, x=xv.storage, y=y.storage, x_size=L.numel(x.shape), y_size=L.numel(out),
                  offset=0, shape=self._lp(shape6), strides=self._lp(strides6))

    def QLut(self, node, i):
        x = self._input(node, 0)
        table = self._input(node, 1)
        if table.shape != (256,):
            raise FormatError(f"node {node.name!r} (QLut): table must have shape [256]")
        y = self._out_u8(node.outputs[0], x.shape, x.perm)
        self.emit(E.OP_LUT, x=x.storage, y=y.storage, size=L.numel(x.shape), table=table.storage)

    def QLut2(self, node, i):
        # not symmetric in its operands (table[a·256 + b]): a and b keep their places
        table = self._input(node, 2)
        if table.shape != (65536,):
            raise FormatError(f"node {node.name!r} (QLut2): table must have shape [65536]")
        a, b, y, geo = self._binary(node)
        self.emit(E.OP_LUT2, **geo, table=table.storage)

    def Slice(self, node, i):
        x = self._input(node)
        r = len(x.shape)
        a = node.attrs
        starts, ends, steps = (list(a[k]) for k in ("starts", "ends", "steps"))
        axes = [_norm_axis(int(ax), r, node) for ax in a["axes"]]
        if not len(starts) == len(ends) == len(axes) == len(steps) or len(set(axes)) != len(axes) \
                or 0 in steps:
            raise FormatError(f"node {node.name!r} (Slice): invalid starts/ends/axes/steps")
        shape = list(x.shape)
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            shape[ax] = K.slice_range(int(st), int(en), int(sp), x.shape[ax])[1]
        if 0 in shape:
            raise InputError(f"node {node.name!r} (Slice): empty output {shape} for input {list(x.shape)}")
        try:
            offset, shape6, strides6 = K.slice_args(x.shape, starts, ends, axes, steps, x.perm)
        except ValueError as e:
            raise FormatError(f"node {node.name!r} (Slice): {e}") from None
        y = self._out_u8(node.outputs[0], tuple(shape), x.perm)
        self.emit(E.OP_SLICE, x=x.storage, y=y.storage, x_size=L.numel(x.shape),
                  y_size=L.numel(shape), offset=offset, shape=self._lp(shape6),
                  strides=self._lp(strides6))

    def Squeeze(self, node, i):
        x = self._input(node)
        r = len(x.shape)
        axes = {_norm_axis(int(ax), r, node) for ax in node.attrs["axes"]}
        if len(axes) != len(node.attrs["axes"]):
            raise FormatError(f"node {node.name!r} (Squeeze): repeated axes {node.attrs['axes']}")
        if any(x.shape[ax] != 1 for ax in axes):
            raise InputError(f"node {node.name!r} (Squeeze): cannot squeeze axes {sorted(axes)} "
                             f"of shape {list(x.shape)}")
        # Dropping size-1 dims leaves the bytes as they are, in any layout.
        perm = tuple(d - sum(ax < d for ax in axes) for d in x.perm if d not in axes)
        self._alias(node.outputs[0], x, tuple(d for k, d in enumerate(x.shape) if k not in axes), perm)

    def Unsqueeze(self, node, i):
        x = self._input(node)
        r = len(x.shape) + len(node.attrs["axes"])
        axes = sorted({_norm_axis(int(ax), r, node) for ax in node.attrs["axes"]})
        if len(axes) != len(node.attrs["axes"]):
            raise FormatError(f"node {node.name!r} (Unsqueeze): repeated axes {node.attrs['axes']}")
        new_of = [k for k in range(r) if k not in axes]          # input dim j -> output dim new_of[j]
        # Inserting size-1 dims moves no bytes: keep x's physical order and put each new dim
        # after the output dim before it (so a logical-order input stays in logical order).
        phys = [new_of[d] for d in x.perm]
        for ax in axes:
            phys.insert(phys.index(ax - 1) + 1 if ax > 0 else 0, ax)
        shape = [1] * r
        for j, k in enumerate(new_of):
            shape[k] = x.shape[j]
        self._alias(node.outputs[0], x, tuple(shape), tuple(phys))

    def Pad(self, node, i):
        x = self._input(node)
        r = len(x.shape)
        pads = [int(p) for p in node.attrs["pads"]]
        if len(pads) != 2 * r or min(pads, default=0) < 0:
            raise FormatError(f"node {node.name!r} (Pad): pads {pads} invalid for rank {r}")
        try:
            in6, begin6, out6 = K.pad_args(x.shape, pads, x.perm)
        except ValueError as e:
            raise FormatError(f"node {node.name!r} (Pad): {e}") from None
        shape = tuple(x.shape[d] + pads[d] + pads[d + r] for d in range(r))
        y = self._out_u8(node.outputs[0], shape, x.perm)
        self.emit(E.OP_PAD, x=x.storage, y=y.storage, x_size=L.numel(x.shape), y_size=L.numel(shape),
                  in_shape=self._lp(in6), begin=self._lp(begin6), out_shape=self._lp(out6),
                  value=int(node.attrs["value"]))

    def PadBorder(self, node, i):
        """Reflect / edge / wrap padding: a gather along each axis by the index tables of
        pad_border_args, run by the nearest-resize kernel (whole-row copies along an unpadded
        last axis)."""
        x = self._input(node)
        r = len(x.shape)
        pads = [int(p) for p in node.attrs["pads"]]
        mode = node.attrs["mode"]
        if len(pads) != 2 * r or min(pads, default=0) < 0 or mode not in schema.PAD_BORDER_MODES:
            raise FormatError(f"node {node.name!r} (PadBorder): pads {pads} / mode {mode!r} invalid "
                              f"for rank {r}")
        for d in range(r):
            if pads[d] or pads[d + r]:
                msg = pad_border_limit(mode, x.shape[d], pads[d], pads[d + r])
                if msg:
                    raise InputError(f"node {node.name!r} (PadBorder): input {list(x.shape)}, "
                                     f"axis {d}: {msg}")
        try:
            in6, out6, index = K.pad_border_args(x.shape, pads, mode, x.perm)
        except ValueError as e:
            raise FormatError(f"node {node.name!r} (PadBorder): {e}") from None
        shape = tuple(x.shape[d] + pads[d] + pads[d + r] for d in range(r))
        y = self._out_u8(node.outputs[0], shape, x.perm)
        self.emit(E.OP_RESIZE, x=x.storage, y=y.storage, x_size=L.numel(x.shape),
                  y_size=L.numel(shape), in_shape=self._lp(in6), out_shape=self._lp(out6),
                  index=self._lp(index), index_len=int(index.size))

    def ResizeNearest(self, node, i):
        x = self._input(node)
        a = node.attrs
        scales, sizes = a.get("scales"), a.get("sizes")
        if (scales is None) == (sizes is None) or len(scales if sizes is None else sizes) != len(x.shape):
            raise FormatError(f"node {node.name!r} (ResizeNearest): need one of scales/sizes per axis")
        shape = tuple(n for n, _ in K.resize_geometry(x.shape, scales, sizes))
        if min(shape) < 1:
            raise InputError(f"node {node.name!r} (ResizeNearest): input {list(x.shape)} resizes to "
                             f"an empty output {list(shape)}")
        _check_resize(node, x.shape, shape)           # before the index tables are built
        try:
            in6, out6, index = K.resize_args(x.shape, a["coordinate_transformation_mode"],
                                             a["nearest_mode"], scales, sizes, x.perm)
        except ValueError as e:
            raise FormatError(f"node {node.name!r} (ResizeNearest): {e}") from None
        y = self._out_u8(node.outputs[0], shape, x.perm)
        self.emit(E.OP_RESIZE, x=x.storage, y=y.storage, x_size=L.numel(x.shape),
                  y_size=L.numel(shape), in_shape=self._lp(in6), out_shape=self._lp(out6),
                  index=self._lp(index), index_len=int(index.size))

    def ResizeLinear(self, node, i):
        a = node.attrs
        self._resize_hw(node, E.OP_RESIZE_LINEAR, lambda shape, scales, sizes: K.resize_linear_args(
            shape, a["coordinate_transformation_mode"], scales, sizes))

    def ResizeCubic(self, node, i):
        a = node.attrs
        self._resize_hw(node, E.OP_RESIZE_CUBIC, lambda shape, scales, sizes: K.resize_cubic_args(
            shape, a["coordinate_transformation_mode"], float(a["cubic_coeff_a"]),
            bool(a["exclude_outside"]), scales, sizes),
            lambda x, y: dict(z_x=x.zp, m0=a["multiplier"], n=a["shift"], z_y=y.zp))

    def _resize_hw(self, node, opcode, tables, requant=lambda x, y: {}):
        """ResizeLinear / ResizeCubic: interpolation over H and W of a 4-D input, run on the
        channels-last view with the per-axis tap tables `tables(shape, scales, sizes)` gives
        (and, for ResizeCubic, the requantize fields `requant(x, y)` gives)."""
        x = self._input(node)
        a = node.attrs
        scales, sizes = a.get("scales"), a.get("sizes")
        if len(x.shape) != 4 or (scales is None) == (sizes is None) \
                or len(scales if sizes is None else sizes) != 4:
            raise FormatError(f"node {node.name!r} ({node.op}): need a 4-D input and one of "
                              "scales/sizes per axis")
        N, C, H, W = x.shape
        if sizes is not None and (int(sizes[0]) != N or int(sizes[1]) != C):
            raise InputError(f"node {node.name!r} ({node.op}): sizes {list(sizes)} resize N or C "
                             f"of the input {list(x.shape)}")
        geo = K.resize_geometry(x.shape, scales, sizes)
        _check_resize(node, x.shape, (N, C, geo[2][0], geo[3][0]))  # before the tap tables
        try:
            OH, OW, tab = tables(x.shape, scales, sizes)
        except ValueError as e:
            raise FormatError(f"node {node.name!r} ({node.op}): {e}") from None
        if min(N, C, OH, OW) < 1:
            raise InputError(f"node {node.name!r} ({node.op}): input {list(x.shape)} resizes to "
                             f"an empty output {[N, C, OH, OW]}")
        cl = L.channels_last(4)
        xv = self._ensure(x, cl)
        y = self._out_u8(node.outputs[0], (N, C, OH, OW), cl)
        self.emit(opcode, x=xv.storage, y=y.storage, N=N, H=H, W=W, C=C, OH=OH, OW=OW,
                  tab=self._lp(tab), **requant(xv, y))

    def QConcat(self, node, i):
        vs = [self._input(node, k) for k in range(len(node.inputs))]
        r = len(vs[0].shape)
        axis = _norm_axis(int(node.attrs["axis"]), r, node)
        mults, shifts = node.attrs["multipliers"], node.attrs["shifts"]
        if len(mults) != len(vs) or len(shifts) != len(vs):
            raise FormatError(f"node {node.name!r} (QConcat): need {len(vs)} multipliers and shifts")
        for v in vs[1:]:
            if len(v.shape) != r or any(v.shape[d] != vs[0].shape[d] for d in range(r) if d != axis):
                raise InputError(f"node {node.name!r} (QConcat): input shapes {[list(u.shape) for u in vs]} "
                                 f"differ outside axis {axis}")
        perm = vs[0].perm
        vs = [self._ensure(v, perm) for v in vs]
        out = list(vs[0].shape)
        out[axis] = sum(v.shape[axis] for v in vs)
        y = self._out_u8(node.outputs[0], tuple(out), perm)
        j = perm.index(axis)
        phys = L.physical_shape(out, perm)
        R, Cy, col = L.numel(phys[:j]), L.numel(phys[j:]), 0
        for v, m0, n in zip(vs, mults, shifts):
            cx = L.numel(L.physical_shape(v.shape, perm)[j:])
            self.emit(E.OP_REQUANT_COPY, x=v.storage, y=y.storage, R=R, Cx=cx, Cy=Cy, col_offset=col,
                      z_x=v.zp, m0=m0, n=n, z_y=y.zp, act_min=0, act_max=255)
            col += cx

    def MaxPool(self, node, i):
        x = self._input(node)
        a = node.attrs
        g, So = self._spatial_args(node, x, a["kernel_shape"], a["strides"], a["dilations"],
                                   a["pads"], a["ceil_mode"])
        cl = L.channels_last(len(x.shape))
        xv = self._ensure(x, cl)
        y = self._out_u8(node.outputs[0], (*x.shape[:2], *So), cl)
        self.emit(E.OP_MAXPOOL, x=xv.storage, y=y.storage, N=x.shape[0], C=x.shape[1],
                  **{k: g[k] for k in ("H", "W", "OH", "OW", "kh", "kw", "sh", "sw", "dh", "dw",
                                       "pad_t", "pad_l")},
                  act_min=a["act_min"], act_max=a["act_max"])

    def QAveragePool(self, node, i):
        x = self._input(node)
        a = node.attrs
        k = a["kernel_shape"]
        g, So = self._spatial_args(node, x, k, a["strides"], [1] * len(k), a["pads"], a["ceil_mode"])
        cl = L.channels_last(len(x.shape))
        xv = self._ensure(x, cl)
        y = self._out_u8(node.outputs[0], (*x.shape[:2], *So), cl)
        c = self.consts.node[i]
        self.emit(E.OP_AVGPOOL, x=xv.storage, y=y.storage, N=x.shape[0], C=x.shape[1],
                  **{k: g[k] for k in ("H", "W", "OH", "OW", "kh", "kw", "sh", "sw",
                                       "pad_t", "pad_l", "pad_b", "pad_r")},
                  count_include_pad=a["count_include_pad"], mult=c["mult"], shift=c["shift"],
                  K1=c["K1"], z_x=x.zp, z_y=y.zp, act_min=a["act_min"], act_max=a["act_max"])

    def _reduction(self, node):
        """x viewed as [O, R, I] with the reduced axes R adjacent (the input's layout when
        they already are, else logical, else the kept dims first): (x storage view, y, O, R, I)."""
        x = self._input(node)
        r = len(x.shape)
        a = node.attrs
        axes = sorted({_norm_axis(int(ax), r, node) for ax in a["axes"]})
        kept = [d for d in range(r) if d not in axes]

        def adjacent(perm):
            pos = [perm.index(d) for d in axes]
            return pos == list(range(pos[0], pos[0] + len(pos)))

        perm = x.perm if adjacent(x.perm) else L.identity(r) if adjacent(L.identity(r)) \
            else tuple(kept + axes)
        xv = self._ensure(x, perm)
        j0 = perm.index(axes[0])
        phys = L.physical_shape(x.shape, perm)
        O, R, I = L.numel(phys[:j0]), L.numel(phys[j0:j0 + len(axes)]), L.numel(phys[j0 + len(axes):])
        if a["keepdims"]:
            shape = tuple(1 if d in axes else x.shape[d] for d in range(r))
            out_perm = perm
        else:
            shape = tuple(x.shape[d] for d in kept)
            out_perm = tuple(d - sum(ax < d for ax in axes) for d in perm if d not in axes)
        y = self._out_u8(node.outputs[0], shape, out_perm)
        return x, xv, y, O, R, I

    def ReduceMax(self, node, i):
        _, xv, y, O, R, I = self._reduction(node)
        if R == 0:
            raise InputError(f"node {node.name!r} ({node.op}): reduces an empty axis")
        a = node.attrs
        self.emit(E.OP_REDUCE_MAX, x=xv.storage, y=y.storage, O=O, R=R, I=I,
                  minimum=int(node.op == "ReduceMin"), act_min=a["act_min"], act_max=a["act_max"])

    ReduceMin = ReduceMax

    def QReduceMean(self, node, i):
        x, xv, y, O, R, I = self._reduction(node)
        a = node.attrs
        c = self.consts.node[i]
        m0, n = c["m0"], c["n"]
        if R != int(a["count"]):
            if R * 255 >= 2**31:
                raise InputError(f"node {node.name!r} (QReduceMean): {R} reduced positions exceed the int32 bound")
            if not a.get("sum", 0):          # a sum's (M0, n) do not depend on the count
                m0, n = qmath.quantize_multiplier(x.scale / (y.scale * R))
        self.emit(E.OP_REDUCE_MEAN, x=xv.storage, y=y.storage, O=O, R=R, I=I, z_x=x.zp, m0=m0, n=n,
                  z_y=y.zp, act_min=a["act_min"], act_max=a["act_max"])

    def QClip(self, node, i):
        x = self._input(node)
        y = self._out_u8(node.outputs[0], x.shape, x.perm)
        self.emit(E.OP_CLIP, x=x.storage, y=y.storage, size=L.numel(x.shape),
                  act_min=node.attrs["act_min"], act_max=node.attrs["act_max"])

    def Reshape(self, node, i):
        x = self.values[node.inputs[0]]
        spec = [int(d) for d in node.attrs["shape"]]
        shape = [x.shape[k] if d == 0 else d for k, d in enumerate(spec)]
        if any(d == 0 for d in spec[len(x.shape):]) or sum(d == -1 for d in shape) > 1:
            raise FormatError(f"node {node.name!r} (Reshape): invalid shape {spec}")
        total = L.numel(x.shape)
        if -1 in shape:
            rest = L.numel(d for d in shape if d != -1)
            if rest == 0 or total % rest:
                raise InputError(f"node {node.name!r} (Reshape): cannot reshape {list(x.shape)} to {spec}")
            shape[shape.index(-1)] = total // rest
        if L.numel(shape) != total or any(d < 1 for d in shape):
            raise InputError(f"node {node.name!r} (Reshape): cannot reshape {list(x.shape)} to {spec}")
        # relabel the bytes where the layout allows it (a channel split or merge of a
        # channels-last tensor), else one transpose first (L.reshape_layouts)
        src, out = L.reshape_layouts(x.shape, x.perm, shape)
        xv = self._ensure(x, src)
        self._alias(node.outputs[0], xv, shape, out)

    def Flatten(self, node, i):
        x = self.values[node.inputs[0]]
        r = len(x.shape)
        axis = int(node.attrs["axis"])
        axis = axis + r if axis < 0 else axis
        if not 0 <= axis <= r:
            raise FormatError(f"node {node.name!r} (Flatten): axis out of range")
        xv = self._ensure(x, L.identity(r))
        self._alias(node.outputs[0], xv, (L.numel(x.shape[:axis]), L.numel(x.shape[axis:])), (0, 1))

    def Transpose(self, node, i):
        x = self.values[node.inputs[0]]
        perm = [int(p) for p in node.attrs["perm"]]
        if sorted(perm) != list(range(len(x.shape))):
            raise FormatError(f"node {node.name!r} (Transpose): perm {perm} invalid for rank {len(x.shape)}")
        inv = L.inverse(perm)
        # Output logical dim i = input logical dim perm[i]; the bytes stay, relabelled.
        self._alias(node.outputs[0], x, tuple(x.shape[p] for p in perm), tuple(inv[d] for d in x.perm))

    def Quantize(self, node, i):
        x = self._input(node, 0, "f32")
        y = self._out_u8(node.outputs[0], x.shape, x.perm)
        c = self.consts.node[i]
        self.emit(E.OP_QUANTIZE, x=x.storage, y=y.storage, size=L.numel(x.shape), scale=c["scale"], z=c["z"])

    def Dequantize(self, node, i):
        x = self._input(node)
        r = len(x.shape)
        xv = self._ensure(x, L.identity(r))
        y = self._new(node.outputs[0], "f32", x.shape, L.identity(r))
        c = self.consts.node[i]
        self.emit(E.OP_DEQUANTIZE, x=xv.storage, y=y.storage, size=L.numel(x.shape), scale=c["scale"], z=c["z"])

    def Softmax(self, node, i):
        x = self._input(node, 0, "f32")
        r = len(x.shape)
        axis = _norm_axis(int(node.attrs["axis"]), r, node)
        xv = self._ensure(x, L.identity(r))
        y = self._new(node.outputs[0], "f32", x.shape, L.identity(r))
        self.emit(E.OP_SOFTMAX, x=xv.storage, y=y.storage, O=L.numel(x.shape[:axis]), A=x.shape[axis],
                  I=L.numel(x.shape[axis + 1:]))

    def QSoftmax(self, node, i):
        """Integer softmax (spec 4.21) over `axis` of x in logical layout; the table goes into
        the plan's int64 pool."""
        x = self._input(node, 0)
        r = len(x.shape)
        axis = _norm_axis(int(node.attrs["axis"]), r, node)
        xv = self._ensure(x, L.identity(r))
        y = self._out_u8(node.outputs[0], x.shape, L.identity(r))
        table = np.asarray(self.model.tensor(node.inputs[1]).data).ravel()
        at = node.attrs
        self.emit(E.OP_QSOFTMAX, x=xv.storage, y=y.storage, O=L.numel(x.shape[:axis]),
                  A=x.shape[axis], I=L.numel(x.shape[axis + 1:]), table=self._lp(table),
                  G=at["numerator"], n=at["shift"], z_y=y.zp, act_min=at["act_min"],
                  act_max=at["act_max"])

    def Concat(self, node, i):
        """Float Concat (a graph output): every input in logical layout, each copied into its
        column block of the output rows (rows = the dims before the axis)."""
        vs = [self._input(node, k, "f32") for k in range(len(node.inputs))]
        r = len(vs[0].shape)
        axis = _norm_axis(int(node.attrs["axis"]), r, node)
        for v in vs[1:]:
            if len(v.shape) != r or any(v.shape[d] != vs[0].shape[d] for d in range(r) if d != axis):
                raise InputError(f"node {node.name!r} (Concat): input shapes {[list(u.shape) for u in vs]} "
                                 f"differ outside axis {axis}")
        vs = [self._ensure(v, L.identity(r)) for v in vs]
        out = list(vs[0].shape)
        out[axis] = sum(v.shape[axis] for v in vs)
        y = self._new(node.outputs[0], "f32", tuple(out), L.identity(r))
        R, Cy, col = L.numel(out[:axis]), L.numel(out[axis:]), 0
        for v in vs:
            cx = L.numel(v.shape[axis:])
            self.emit(E.OP_CONCAT_F32, x=v.storage, y=y.storage, R=R, Cx=cx, Cy=Cy, col_offset=col)
            col += cx

    def LRN(self, node, i):
        x = self._input(node, 0, "f32")
        r = len(x.shape)
        xv = self._ensure(x, L.identity(r))
        y = self._new(node.outputs[0], "f32", x.shape, L.identity(r))
        c = self.consts.node[i]
        self.emit(E.OP_LRN, x=xv.storage, y=y.storage, O=x.shape[0], A=x.shape[1],
                  I=L.numel(x.shape[2:]), alpha=c["alpha"], beta=c["beta"], bias=c["bias"],
                  size=int(node.attrs["size"]))

    def LayerNormalization(self, node, i):
        x = self._input(node, 0, "f32")
        r = len(x.shape)
        axis = int(node.attrs["axis"])
        xv = self._ensure(x, L.identity(r))
        y = self._new(node.outputs[0], "f32", x.shape, L.identity(r))
        c = self.consts.node[i]
        self.emit(E.OP_LAYERNORM, x=xv.storage, y=y.storage, R=L.numel(x.shape[:axis]),
                  n=L.numel(x.shape[axis:]), scale=c["scale"], bias=c["bias"], eps=c["eps"],
                  rms=int(node.attrs.get("rms", 0)))

    # -- whole graph -----------------------------------------------------------------
    def build(self) -> Plan:
        for i, node in enumerate(self.model.nodes):
            _HANDLERS[node.op](self, node, i)
        # Graph inputs and outputs live in the caller's buffers (io), not in the arena: the
        # first Quantize reads the caller's array and each output's producer writes the array
        # returned to the caller.  Each output needs a buffer of its own: one that is a graph
        # input's (an input passed through) or another output's (two names of one tensor) is
        # copied into a fresh tensor first.
        io_slot: dict[int, int] = {}
        for k, io in enumerate(self.model.graph_inputs):
            io_slot[self.values[io.name].storage] = k
        outputs = {}
        for io in self.model.graph_outputs:
            v = self.values[io.name]
            if v.kind != "f32":
                raise FormatError(f"graph output {io.name!r} must be float32")
            v = self._ensure(v, L.identity(len(v.shape)))
            if v.storage in io_slot:
                v = self._copy_f32(v, io.name)
            io_slot[v.storage] = len(io_slot)
            outputs[io.name] = v
        self._fuse_boundary()
        self._fuse_layernorm(set(io_slot))
        n = len(self.instrs)
        for k, (op, f) in enumerate(self.instrs):
            for fname in E.U8_OPERANDS.get(op, ()) + E.F32_OPERANDS.get(op, ()):
                s = self.slots[f[fname]]
                if fname == "y":
                    s.first = min(s.first, k)
                s.last = max(s.last, k)
        for v in outputs.values():
            self.slots[v.storage].last = n
        for slot, _ in self._consts_used:            # uint8 constants: live over the whole program
            self.slots[slot].last = n
        live = [s for s in self.slots if s.first <= s.last]   # drop never-produced transients
        for slot, k in io_slot.items():
            self.slots[slot].offset = -(k + 1)
        u8_size = _allocate([s for s in live if s.arena == "u8"], U8_ALIGN, n)
        external = {id(self.slots[slot]) for slot in io_slot}
        f32_size = _allocate([s for s in live if s.arena == "f32" and id(s) not in external],
                             F32_ALIGN, n)
        rows = []
        for op, f in self.instrs:
            f = dict(f)
            for fname in E.U8_OPERANDS.get(op, ()) + E.F32_OPERANDS.get(op, ()):
                f[fname] = self.slots[f[fname]].offset
            rows.append(E.encode_row(op, f))
        code = np.array(rows, dtype=np.int64).reshape(len(rows), E.WIDTH)
        lpool = np.array(self.lpool, dtype=np.int64)
        model_names = set(self.model.tensors) | {io.name for io in self.model.graph_inputs}
        named = {k: v for k, v in self.values.items() if k in model_names}
        return Plan(
            code=code, lpool=lpool, u8_size=max(u8_size, 1), f32_size=max(f32_size, 1),
            scratch_size=self.scratch,
            inputs=[(io.name, self.values[io.name].shape) for io in self.model.graph_inputs],
            outputs={k: (io_slot[v.storage], v.shape) for k, v in outputs.items()},
            shapes={k: v.shape for k, v in named.items()},
            layouts={k: v.perm for k, v in named.items()},
            slots=live,
            path=self.consts.path,
            u8_consts=[(self.slots[slot].offset, self._const_bytes(name)) for slot, name in self._consts_used],
        )

    def _fuse_boundary(self) -> None:
        """Quantize then a uint8 transpose (a graph input into the runtime layout) becomes one
        OP_QUANTIZE_T, and a uint8 transpose then Dequantize (back to a graph output's layout)
        one OP_DEQUANTIZE_T, when no other instruction reads the uint8 tensor between them:
        the float tensor is then read or written once, in the other layout."""
        readers: dict[int, list[int]] = {}          # uint8 slot -> instructions reading it
        producer: dict[int, int] = {}               # uint8 slot -> the instruction writing it
        for k, (op, f) in enumerate(self.instrs):
            for fname in E.U8_OPERANDS.get(op, ()):
                if fname == "y":
                    producer[f[fname]] = k
                else:
                    readers.setdefault(f[fname], []).append(k)
        drop = set()
        for k, (op, f) in enumerate(self.instrs):
            if op != E.OP_TRANSPOSE_U8:
                continue
            src = producer.get(f["x"])
            users = readers.get(f["y"], [])
            if readers[f["x"]] == [k] and src is not None and self.instrs[src][0] == E.OP_QUANTIZE:
                q = self.instrs[src][1]
                self.instrs[src] = (E.OP_QUANTIZE_T, dict(q, y=f["y"], shape=f["shape"], perm=f["perm"]))
                drop.add(k)
            elif len(users) == 1 and self.instrs[users[0]][0] == E.OP_DEQUANTIZE:
                d = self.instrs[users[0]][1]
                self.instrs[users[0]] = (E.OP_DEQUANTIZE_T,
                                         dict(d, x=f["x"], shape=f["shape"], perm=f["perm"]))
                drop.add(k)
        self.instrs = [ins for k, ins in enumerate(self.instrs) if k not in drop]

    def _fuse_layernorm(self, io_slots: set[int]) -> None:
        """Dequantize -> LayerNormalization -> Quantize becomes one OP_QLAYERNORM (uint8 rows
        in and out, kernels/layernorm.qlayernorm_u8: the same float32 operations, bit for
        bit) when the LayerNormalization is the only reader of the dequantized tensor, the
        Quantize the only reader of its result, and neither float tensor is a graph input or
        output: the two float tensors are then never written.  The fused instruction takes
        the LayerNormalization's place (its uint8 input exists by then, and its output is
        read only after the Quantize's place)."""
        readers: dict[int, list[int]] = {}          # float32 slot -> instructions reading it
        writers: dict[int, list[int]] = {}          # float32 slot -> instructions writing it
        for k, (op, f) in enumerate(self.instrs):
            for fname in E.F32_OPERANDS.get(op, ()):
                (writers if fname == "y" else readers).setdefault(f[fname], []).append(k)
        drop = set()
        for k, (op, f) in enumerate(self.instrs):
            if op != E.OP_LAYERNORM or f["x"] in io_slots or f["y"] in io_slots:
                continue
            src, users = writers.get(f["x"], []), readers.get(f["y"], [])
            if len(src) != 1 or readers.get(f["x"]) != [k] or len(users) != 1 \
                    or writers.get(f["y"]) != [k]:
                continue
            (dop, d), (qop, q) = self.instrs[src[0]], self.instrs[users[0]]
            if dop != E.OP_DEQUANTIZE or qop != E.OP_QUANTIZE:
                continue
            self.instrs[k] = (E.OP_QLAYERNORM, dict(
                x=d["x"], y=q["y"], R=f["R"], n=f["n"], scale=f["scale"], bias=f["bias"],
                eps=f["eps"], rms=f["rms"], s_x=d["scale"], z_x=d["z"], s_y=q["scale"], z_y=q["z"]))
            drop.update((src[0], users[0]))
        self.instrs = [ins for k, ins in enumerate(self.instrs) if k not in drop]

    def _const_bytes(self, name) -> np.ndarray:
        off = self.consts.u8_const[name]
        return self.consts.upool[off:off + L.numel(self.model.tensor(name).data.shape)]


_HANDLERS = {name: getattr(_Builder, name) for name in schema.OPS if hasattr(_Builder, name)}
assert set(_HANDLERS) == set(schema.OPS), "runtime handlers must cover the schema's op table"


def _allocate(slots: list[Slot], align: int, n_instr: int) -> int:
    """Greedy first-fit by offset in order of definition; returns the arena size.

    A slot defined by instruction t is placed before slots last used at t are freed, so an
    instruction's output never overlaps its inputs.
    """
    by_first: dict[int, list[Slot]] = {}
    by_last: dict[int, list[Slot]] = {}
    for s in slots:
        by_first.setdefault(s.first, []).append(s)
        by_last.setdefault(s.last, []).append(s)
    live: list[Slot] = []
    top = 0
    for t in range(-1, n_instr + 1):
        for s in by_first.get(t, ()):
            off = 0
            for b in sorted(live, key=lambda b: b.offset):
                if off + s.size <= b.offset:
                    break
                off = max(off, -(-(b.offset + b.size) // align) * align)
            s.offset = off
            live.append(s)
            top = max(top, off + s.size)
        for s in by_last.get(t, ()):
            live.remove(s)
    return top


def plan(model: NqModel, consts: Consts, input_shapes: dict, nthreads: int) -> Plan:
    """Plan `model` for concrete `input_shapes` (graph input name -> tuple of ints).

    `nthreads` is the largest thread count the plan will run with (sizes the scratch).
    """
    return _Builder(model, consts, input_shapes, nthreads).build()
