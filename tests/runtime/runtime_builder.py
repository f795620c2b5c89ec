"""Build tiny NqModels by hand, calibrated on the fly with the spec reference.

Each op draws random int8 weights / int32 biases, computes the real output range of the
calibration input through `spec_ref`, and picks the output (s, z) and the fixed-point
constants from it with qmath (as the converter would), so outputs use the whole uint8 range.
"""

from __future__ import annotations

import math

import numpy as np

from nqrt import qmath
from nqrt.format.model import NqIO, NqModel, NqNode, NqTensor, Quant

import runtime_ref as spec_ref


class Builder:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, NqTensor] = {}
        self.nodes: list[NqNode] = []
        self.inputs: list[NqIO] = []
        self.outputs: list[NqIO] = []
        self.env: dict[str, np.ndarray] = {}
        self._n = 0

    # -- plumbing --------------------------------------------------------------------
    def model(self) -> NqModel:
        return NqModel(list(self.inputs), list(self.outputs), dict(self.tensors), list(self.nodes))

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def _const(self, prefix, dtype, data, quant=None) -> str:
        name = self._name(prefix)
        self.tensors[name] = NqTensor(name, dtype, tuple(data.shape), quant, data)
        return name

    def _node(self, op, inputs, out_dtype, attrs, s=None, z=None) -> str:
        out = self._name(op.lower())
        self.nodes.append(NqNode(op, list(inputs), [out], dict(attrs), name=out))
        quant = Quant([float(np.float32(s))], [int(z)]) if out_dtype == "uint8" else None
        self.tensors[out] = NqTensor(out, out_dtype, (), quant)
        self.env[out] = spec_ref.OPS[op](self.model(), self.nodes[-1], self.env)
        self.tensors[out].shape = tuple(self.env[out].shape)
        return out

    def q(self, name):
        return self.model().qparams(name)

    @staticmethod
    def _qparams(real, relu=False):
        s, z = qmath.choose_activation_qparams(float(real.min()), float(real.max()))
        return s, z, (z if relu else 0), 255

    # -- graph boundary --------------------------------------------------------------
    def input(self, shape, calib_shape=None, name=None, scale=2.0) -> str:
        name = name or self._name("in")
        calib_shape = calib_shape or shape
        self.inputs.append(NqIO(name, tuple(shape)))
        self.tensors[name] = NqTensor(name, "float32", tuple(shape))
        self.env[name] = (self.rng.standard_normal(calib_shape) * scale).astype(np.float32)
        return name

    def quantize(self, x) -> str:
        s, z, _, _ = self._qparams(self.env[x])
        return self._node("Quantize", [x], "uint8", {}, s, z)

    def dequantize(self, x) -> str:
        return self._node("Dequantize", [x], "float32", {})

    def softmax(self, x, axis=-1) -> str:
        return self._node("Softmax", [x], "float32", {"axis": axis})

    def output(self, x) -> str:
        self.outputs.append(NqIO(x, self.tensors[x].shape))
        return x

    # -- compute ops -----------------------------------------------------------------
    def _weights(self, shape, per_channel):
        w = self.rng.integers(-127, 128, size=shape).astype(np.int8)
        m = shape[0]
        s_w = (self.rng.uniform(0.002, 0.02, m) if per_channel else np.full(1, 0.01)).astype(np.float32)
        wq = Quant([float(v) for v in s_w], [0] * len(s_w), 0 if per_channel else None)
        return w, s_w.astype(np.float64), wq

    def _requant_consts(self, mult_real, per_channel):
        m0, n = qmath.quantize_multipliers(mult_real if per_channel else mult_real[:1])
        return self._const("mult", "int32", m0), self._const("shift", "int32", n)

    def conv(self, x, M, k, strides=None, pads=None, dilations=None, group=1, per_channel=True, relu=False):
        sp = len(k)
        strides, dilations = strides or [1] * sp, dilations or [1] * sp
        pads = pads or [0] * (2 * sp)
        s_x, z_x = self.q(x)
        C = self.env[x].shape[1]
        w, s_w, wq = self._weights((M, C // group, *k), per_channel)
        bias = self.rng.integers(-3000, 3000, M).astype(np.int32)
        attrs = {"strides": list(strides), "pads": list(pads), "dilations": list(dilations), "group": group}
        acc = spec_ref.conv_acc(self.env[x], z_x, w, bias, attrs)
        s_wm = np.broadcast_to(s_w, (M,))
        real = acc * (s_x * s_wm).reshape((1, -1) + (1,) * sp)
        s, z, lo, hi = self._qparams(real, relu)
        mult, shift = self._requant_consts(s_x * s_wm / np.float32(s), per_channel)
        wn = self._const("w", "int8", w, wq)
        bq = Quant([float(np.float32(s_x * v)) for v in s_wm], [0] * M, 0)
        bn = self._const("b", "int32", bias, bq)
        return self._node("QConv", [x, wn, bn, mult, shift], "uint8",
                          dict(attrs, act_min=lo, act_max=hi), s, z)

    def gemm(self, x, M, per_channel=True, relu=False):
        s_x, z_x = self.q(x)
        K = self.env[x].shape[-1]
        w, s_w, wq = self._weights((M, K), per_channel)
        bias = self.rng.integers(-3000, 3000, M).astype(np.int32)
        s_wm = np.broadcast_to(s_w, (M,))
        real = spec_ref.gemm_acc(self.env[x], z_x, w, bias) * (s_x * s_wm)
        s, z, lo, hi = self._qparams(real, relu)
        mult, shift = self._requant_consts(s_x * s_wm / np.float32(s), per_channel)
        wn = self._const("w", "int8", w, wq)
        bn = self._const("b", "int32", bias, Quant([float(np.float32(s_x * v)) for v in s_wm], [0] * M, 0))
        return self._node("QGemm", [x, wn, bn, mult, shift], "uint8", {"act_min": lo, "act_max": hi}, s, z)

    def add(self, a, b, relu=False):
        (sa, za), (sb, zb) = self.q(a), self.q(b)
        real = (self.env[a].astype(np.float64) - za) * sa + (self.env[b].astype(np.float64) - zb) * sb
        s, z, lo, hi = self._qparams(real, relu)
        ma, mb, sh = qmath.quantize_multiplier_pair(sa / np.float32(s), sb / np.float32(s))
        return self._node("QAdd", [a, b], "uint8", {"multiplier_a": ma, "multiplier_b": mb, "shift": sh,
                                                   "act_min": lo, "act_max": hi}, s, z)

    def concat(self, xs, axis):
        real = np.concatenate([(self.env[x].astype(np.float64) - self.q(x)[1]) * self.q(x)[0] for x in xs], axis)
        s, z, _, _ = self._qparams(real)
        s32 = float(np.float32(s))
        ms, ns = [], []
        for x in xs:
            if self.q(x) == (s32, z):
                m0, n = 1 << 30, 30
            else:
                m0, n = qmath.quantize_multiplier(self.q(x)[0] / s32)
            ms.append(m0)
            ns.append(n)
        return self._node("QConcat", xs, "uint8", {"axis": axis, "multipliers": ms, "shifts": ns}, s, z)

    def maxpool(self, x, k, strides=None, pads=None, dilations=None, ceil_mode=0, act=(0, 255)):
        sp = len(k)
        attrs = {"kernel_shape": list(k), "strides": list(strides or [1] * sp), "pads": list(pads or [0] * 2 * sp),
                 "dilations": list(dilations or [1] * sp), "ceil_mode": ceil_mode,
                 "act_min": act[0], "act_max": act[1]}
        return self._node("MaxPool", [x], "uint8", attrs, *self.q(x))

    def avgpool(self, x, k, strides=None, pads=None, ceil_mode=0, count_include_pad=0):
        sp = len(k)
        s_x, z_x = self.q(x)
        s, z = float(np.float32(s_x * 0.9)), min(255, z_x + 3)
        K = math.prod(k)
        m0, n = qmath.quantize_multipliers([s_x / (s * c) if c else 0.0 for c in range(K + 1)])
        attrs = {"kernel_shape": list(k), "strides": list(strides or [1] * sp), "pads": list(pads or [0] * 2 * sp),
                 "ceil_mode": ceil_mode, "count_include_pad": count_include_pad, "act_min": 0, "act_max": 255}
        return self._node("QAveragePool", [x, self._const("mult", "int32", m0), self._const("shift", "int32", n)],
                          "uint8", attrs, s, z)

    def reducemean(self, x, axes, keepdims=1, count=None, total=False):
        """QReduceMean; total=True: the sum (attribute sum = 1, M = s_x / s_y)."""
        s_x, z_x = self.q(x)
        xs = self.env[x].shape
        count = count or int(np.prod([xs[a] for a in axes]))
        s = float(np.float32(s_x * (0.6 if not total else 0.6 * count)))
        z = max(0, z_x - 5)
        m0, n = qmath.quantize_multiplier(s_x / (s if total else s * count))
        attrs = {"axes": list(axes), "keepdims": keepdims, "count": count, "act_min": 0, "act_max": 255}
        if total:
            attrs["sum"] = 1
        return self._node("QReduceMean", [x, self._const("mult", "int32", np.array([m0], np.int32)),
                                          self._const("shift", "int32", np.array([n], np.int32))],
                          "uint8", attrs, s, z)

    def clip(self, x, lo, hi):
        return self._node("QClip", [x], "uint8", {"act_min": lo, "act_max": hi}, *self.q(x))

    def reshape(self, x, shape):
        return self._node("Reshape", [x], "uint8", {"shape": list(shape)}, *self.q(x))

    def flatten(self, x, axis=1):
        return self._node("Flatten", [x], "uint8", {"axis": axis}, *self.q(x))

    def transpose(self, x, perm):
        return self._node("Transpose", [x], "uint8", {"perm": list(perm)}, *self.q(x))

    # -- CNN extension ops (spec 4.9-4.14) -------------------------------------------
    def const_u8(self, shape, scale=0.05, zp=None) -> str:
        """A random uint8 constant with per-tensor quant (QAdd/QMul second operand, spec 2.1)."""
        zp = int(self.rng.integers(20, 236)) if zp is None else zp
        data = self.rng.integers(0, 256, size=shape).astype(np.uint8)
        name = self._const("k", "uint8", data, Quant([float(np.float32(scale))], [zp]))
        self.env[name] = data
        return name

    def _real(self, name):
        s, z = self.q(name)
        return (self.env[name].astype(np.float64) - z) * s

    def sub(self, a, b, relu=False, negate_a=False):
        """QAdd with signed multipliers: a − b, or (negate_a) b − a (c − x with a constant b)."""
        return self.add_signed(a, b, (-1.0, 1.0) if negate_a else (1.0, -1.0), relu)

    def add_signed(self, a, b, signs, relu=False):
        (sa, _), (sb, _) = self.q(a), self.q(b)
        real = signs[0] * self._real(a) + signs[1] * self._real(b)
        s, z, lo, hi = self._qparams(real, relu)
        ma, mb, sh = qmath.quantize_multiplier_pair(signs[0] * sa / np.float32(s), signs[1] * sb / np.float32(s))
        return self._node("QAdd", [a, b], "uint8", {"multiplier_a": ma, "multiplier_b": mb, "shift": sh,
                                                   "act_min": lo, "act_max": hi}, s, z)

    def mul(self, a, b, relu=False):
        (sa, _), (sb, _) = self.q(a), self.q(b)
        s, z, lo, hi = self._qparams(self._real(a) * self._real(b), relu)
        m0, n = qmath.quantize_multiplier(sa * sb / np.float32(s))
        return self._node("QMul", [a, b], "uint8", {"multiplier": m0, "shift": n, "act_min": lo,
                                                   "act_max": hi}, s, z)

    def lut(self, x, f, act=None):
        """QLut of the float function f: output grid from f over all 256 input codes, table by
        the spec 4.9 formula (float64, ties to even, clamp)."""
        s_x, z_x = self.q(x)
        fy = f(s_x * (np.arange(256, dtype=np.float64) - z_x))
        s, z = qmath.choose_activation_qparams(float(fy.min()), float(fy.max()))
        lo, hi = act or (0, 255)
        table = np.clip(np.round(fy / s) + z, lo, hi).astype(np.uint8)
        return self._node("QLut", [x, self._const("table", "uint8", table)], "uint8", {}, s, z)

    def slice(self, x, starts, ends, axes, steps=None):
        steps = steps or [1] * len(starts)
        return self._node("Slice", [x], "uint8", {"starts": list(starts), "ends": list(ends),
                                                  "axes": list(axes), "steps": list(steps)}, *self.q(x))

    def squeeze(self, x, axes):
        return self._node("Squeeze", [x], "uint8", {"axes": list(axes)}, *self.q(x))

    def unsqueeze(self, x, axes):
        return self._node("Unsqueeze", [x], "uint8", {"axes": list(axes)}, *self.q(x))

    def pad(self, x, pads, value=None):
        value = self.q(x)[1] if value is None else value
        return self._node("Pad", [x], "uint8", {"pads": list(pads), "value": int(value)}, *self.q(x))

    def resize(self, x, coord="asymmetric", nearest="floor", scales=None, sizes=None):
        attrs = {"coordinate_transformation_mode": coord, "nearest_mode": nearest}
        if scales is not None:
            attrs["scales"] = [float(np.float32(v)) for v in scales]
        else:
            attrs["sizes"] = [int(v) for v in sizes]
        return self._node("ResizeNearest", [x], "uint8", attrs, *self.q(x))
