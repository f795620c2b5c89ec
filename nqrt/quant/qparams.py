"""Quantization-parameter policy (formats/nq-v1.md 3.4, 3.6, 4.8).

  * activations: uint8 asymmetric, per tensor, from a real range (0 always representable);
  * weights: int8 symmetric in [-127, 127] (or [-63, 63], converter option weight_bits=7),
    per output channel (axis 0) or per tensor;
  * biases: int32, scale s_x·s_w[m], zero point 0, with the 3.6 overflow guard;
  * fused activations: (lo, hi) -> (act_min, act_max) in the output's integer domain.

All float work happens here at convert time; the arrays returned are what the file stores.
Scales are float32 values, and every derived quantity (bias, multipliers) is computed from
those float32 values so that the integer model and its simulation agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nqrt import qmath
from nqrt.errors import ConversionError

ACT_NONE = (-math.inf, math.inf)


def activation_qparams(rmin: float, rmax: float, what: str = "tensor") -> tuple[float, int]:
    """(s, z) for a uint8 tensor whose real values lie in [rmin, rmax]."""
    if not (math.isfinite(rmin) and math.isfinite(rmax)):
        raise ConversionError(
            f"no finite calibration range for {what} (got [{rmin}, {rmax}]); the calibration "
            "data never produced a finite value there")
    s, z = qmath.choose_activation_qparams(rmin, rmax)
    return float(np.float32(s)), int(z)


def qparams_range(s: float, z: int) -> tuple[float, float]:
    """The real range a uint8 tensor with (s, z) can represent."""
    return s * (qmath.UINT8_MIN - z), s * (qmath.UINT8_MAX - z)


def act_clamp(act, s_out: float, z_out: int) -> tuple[int, int]:
    """Spec 3.4: fused clamp (lo, hi) -> (act_min, act_max); None means no activation."""
    lo, hi = ACT_NONE if act is None else (float(act[0]), float(act[1]))
    act_min, act_max = qmath.UINT8_MIN, qmath.UINT8_MAX
    if lo > -math.inf:
        v = z_out + math.ceil(lo / s_out) if math.isfinite(lo / s_out) else (math.inf if lo > 0 else -math.inf)
        act_min = int(max(qmath.UINT8_MIN, min(qmath.UINT8_MAX, v)))
    if hi < math.inf:
        v = z_out + math.floor(hi / s_out) if math.isfinite(hi / s_out) else (math.inf if hi > 0 else -math.inf)
        act_max = int(min(qmath.UINT8_MAX, max(qmath.UINT8_MIN, v)))
    if act_min > act_max:
        # Clip with lo > hi (ONNX: output = hi) or a range entirely outside the
        # representable one: every output is the single value closest to the bound.
        act_min = act_max
    return act_min, act_max


def multiplier(real: float, what: str, bits: int = qmath.MULTIPLIER_BITS) -> tuple[int, int]:
    """Spec 3.2 with a converter-level error message."""
    try:
        return qmath.quantize_multiplier(real, bits)
    except ValueError as e:
        raise ConversionError(f"{what}: cannot represent multiplier {real!r}: {e}") from None


def multipliers(reals, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return qmath.quantize_multipliers(reals)
    except ValueError as e:
        raise ConversionError(f"{what}: cannot represent multipliers: {e}") from None


@dataclass
class WeightQuant:
    """A quantized weight/bias pair of a QConv or QGemm."""

    w_q: np.ndarray                   # int8 [M, ...]
    w_scale: np.ndarray               # float32 [M] (per-channel) or [1] (per-tensor)
    axis: int | None                  # 0 or None
    bias_q: np.ndarray                # int32 [M]
    bias_scale: np.ndarray            # float32 [M] = s_x * s_w[m]
    warnings: list[str] = field(default_factory=list)


INT32_LIMIT = float(qmath.INT32_MAX)


def _bias_overflows(b: np.ndarray, s_x: float, s_w: np.ndarray) -> np.ndarray:
    q = np.rint(np.asarray(b, np.float64) / (s_x * s_w.astype(np.float64)))
    return np.abs(q) > INT32_LIMIT


def quantize_weights_and_bias(w: np.ndarray, b: np.ndarray | None, s_x: float, per_channel: bool,
                              what: str = "node", qmax: int = qmath.INT8_WEIGHT_MAX) -> WeightQuant:
    """Symmetric int8 weights in [-qmax, qmax] (axis 0 = output channel) and int32 bias at s_x·s_w.

    Overflow guard (3.6): where round(b / (s_x·s_w[m])) would leave int32, s_w[m] is enlarged
    to |b[m]| / (s_x·(2^31 − 1))·(1 + 2^−20) (per tensor: the single scale takes the largest
    requirement) and the weights are re-quantized with it; a warning says which channels.
    """
    w = np.asarray(w, dtype=np.float32)
    m_out = int(w.shape[0])
    b = np.zeros(m_out, np.float32) if b is None else np.broadcast_to(np.asarray(b, np.float32).reshape(-1), (m_out,))
    axis = 0 if per_channel else None
    s_w = qmath.choose_weight_scales(w, axis, qmax).astype(np.float32)
    s_w_full = np.broadcast_to(s_w, (m_out,)).astype(np.float32)
    warnings: list[str] = []

    bad = _bias_overflows(b, s_x, s_w_full)
    if bad.any():
        need = np.abs(b.astype(np.float64)) / (s_x * INT32_LIMIT) * (1.0 + 2.0**-20)
        old = s_w.copy()
        if axis is None:
            s_w = np.array([max(float(s_w[0]), float(need.max()))], np.float32)
        else:
            s_w = np.where(bad, need, s_w.astype(np.float64)).astype(np.float32)
        # float32 rounding may have gone down: step up until the bias fits.
        for _ in range(8):
            s_w_full = np.broadcast_to(s_w, (m_out,)).astype(np.float32)
            still = _bias_overflows(b, s_x, s_w_full)
            if not still.any():
                break
            idx = 0 if axis is None else still
            s_w[idx] = np.nextafter(s_w[idx], np.float32(np.inf), dtype=np.float32) * np.float32(1 + 2**-20)
        channels = np.flatnonzero(bad).tolist()
        ratio = float(np.max(s_w.astype(np.float64) / old.astype(np.float64)))
        shown = ", ".join(str(c) for c in channels[:8]) + (", ..." if len(channels) > 8 else "")
        warnings.append(
            f"{what}: bias would overflow int32 at scale s_x*s_w (channels {shown}); weight scale "
            f"enlarged up to {ratio:.4g}x (formats/nq-v1.md 3.6)")

    s_w_full = np.broadcast_to(s_w, (m_out,)).astype(np.float32)
    w_q = qmath.quantize_weights(w, s_w, axis, qmax)
    s_b = s_x * s_w_full.astype(np.float64)
    bias_q = np.clip(np.rint(b.astype(np.float64) / s_b), qmath.INT32_MIN, qmath.INT32_MAX).astype(np.int32)
    return WeightQuant(w_q=w_q, w_scale=s_w, axis=axis, bias_q=bias_q,
                       bias_scale=s_b.astype(np.float32), warnings=warnings)


def requant_multipliers(s_x: float, w_scale: np.ndarray, s_y: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(M0, n) int32 arrays encoding s_x·s_w[m]/s_y (length of w_scale: M or 1)."""
    real = float(s_x) * np.asarray(w_scale, np.float64) / float(s_y)
    return multipliers(real, what)


def average_tables(s_x: float, s_y: float, k: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """QAveragePool tables [K+1]: entry c encodes s_x / (s_y·c); entry 0 = (0, 1), unused."""
    m0 = np.zeros(k + 1, np.int32)
    n = np.full(k + 1, qmath.SHIFT_MIN, np.int32)
    if k >= 1:
        counts = np.arange(1, k + 1, dtype=np.float64)
        m0[1:], n[1:] = multipliers(float(s_x) / (float(s_y) * counts), what)
    return m0, n


SOFTMAX_ONE_BITS = 24      # QSoftmax table[0] = 2^24 (exp(0) in fixed point)
SOFTMAX_G_BITS = 55        # G < 2^55, so R = G // S < 2^31 (S >= 2^24)


def softmax_constants(s_x: float, s_y: float, what: str) -> tuple[np.ndarray, int, int]:
    """QSoftmax (spec 4.21) constants: table[d] = round_half_even(2^24·exp(−s_x·d)) for
    d = 0..255 (int32), and (G, n) with G = round_half_even(2^n / s_y) < 2^55, n ≤ 62 as large
    as possible.  Errors against the real softmax, in output steps: the table's rounding moves
    S = Σ table by at most A/2 out of S ≥ 2^24 (relative ≤ A·2^−25), and R = G // S truncates
    by less than one unit of R, i.e. < table[d]/2^n ≤ 2^(24−n) steps (2^−23 for s_y = 1/255)."""
    d = np.arange(256, dtype=np.float64)
    table = np.rint(np.exp(-float(s_x) * d) * 2.0 ** SOFTMAX_ONE_BITS).astype(np.int32)
    inv = 1.0 / float(s_y)
    if not (math.isfinite(inv) and inv > 0):
        raise ConversionError(f"{what}: softmax output scale {s_y} is not usable")
    n = 62
    while n >= 1 and round(math.ldexp(inv, n)) >= 1 << SOFTMAX_G_BITS:
        n -= 1
    if n < 1:
        raise ConversionError(f"{what}: softmax output scale {s_y} is too small to represent")
    return table, int(round(math.ldexp(inv, n))), n
