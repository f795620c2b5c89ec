"""The arithmetic contract of nqrt (leaf module; see formats/nq-v1.md, section "Arithmetic").

Symbols follow the spec:  r = s * (q - z)  (real value r, scale s, zero point z, integer q).

A real multiplier M > 0 is represented as  M ~= M0 * 2**(-n)  with an integer M0 in
[2**30, 2**31 - 1] (or M0 = 0 when M underflows) and a right shift n in [1, 62].
Requantization of an integer accumulator `acc` (|acc| < 2**31 * 2**8 is enough, any int64
whose product with M0 fits in int64) is

    requantize(acc, M0, n) = (acc * M0 + 2**(n-1)) >> n          (int64, arithmetic shift)

i.e. a single rounding, half toward +infinity.  Everything float in this module runs at
convert/plan time only; kernels see M0 and n.
"""

from __future__ import annotations

import math

import numpy as np

MULTIPLIER_BITS = 31          # M0 < 2**31: fits int32
CUBIC_BITS = 11               # ResizeCubic (spec 4.24): fraction bits of the tap weights per axis
CUBIC_MULTIPLIER_BITS = 23    # ... and its M0 < 2**23, as its accumulator may reach 2**34
SHIFT_MIN = 1                 # n >= 1 so the rounding term 2**(n-1) is an integer
SHIFT_MAX = 62                # acc * M0 + 2**(n-1) must fit in int64
UINT8_MIN, UINT8_MAX = 0, 255
INT8_WEIGHT_MAX = 127         # weights are symmetric int8 in [-127, 127]
WEIGHT_BITS = {8: 127, 7: 63}  # converter option -> largest |q| (7 bits: the AVX2 fast kernel)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real_multiplier: float, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """Return (M0, n) with M0 * 2**-n closest to `real_multiplier` (relative error < 2**-31).
    `bits` < 31 gives M0 < 2**bits (relative error < 2**-bits), for ops whose accumulator may
    exceed 2**32 (ResizeCubic: bits = 23, spec 4.24).

    Raises ValueError for M < 0, non-finite M, or M too large to express with n >= 1
    (M >= 2**30).  Values too small for n <= 62 become (0, SHIFT_MIN): requantize gives 0
    (plus the rounding bit, which is 0 because 2**(n-1) >> n == 0 for M0 = 0).
    """
    m = float(real_multiplier)
    if not math.isfinite(m) or m < 0.0:
        raise ValueError(f"multiplier must be finite and >= 0, got {real_multiplier!r}")
    if m == 0.0:
        return 0, SHIFT_MIN
    frac, exp = math.frexp(m)                 # m = frac * 2**exp, frac in [0.5, 1)
    m0 = int(round(frac * (1 << bits)))
    if m0 == 1 << bits:                       # frac rounded up to 1.0
        m0 //= 2
        exp += 1
    n = bits - exp
    if n < SHIFT_MIN:
        raise ValueError(f"multiplier {m!r} too large (needs shift {n} < {SHIFT_MIN})")
    if n > SHIFT_MAX:
        # Shift the mantissa right so that n == SHIFT_MAX; it may vanish entirely.
        m0 = int(round(m0 / 2 ** (n - SHIFT_MAX)))
        n = SHIFT_MAX
        if m0 == 0:
            return 0, SHIFT_MIN
    return m0, n


def quantize_multipliers(real_multipliers) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of quantize_multiplier: returns (M0 int32[], n int32[])."""
    pairs = [quantize_multiplier(float(m)) for m in np.asarray(real_multipliers, dtype=np.float64).ravel()]
    m0 = np.array([p[0] for p in pairs], dtype=np.int32)
    n = np.array([p[1] for p in pairs], dtype=np.int32)
    return m0, n


def quantize_multiplier_pair(ma: float, mb: float) -> tuple[int, int, int]:
    """Two signed multipliers sharing one shift n (used by QAdd): returns (Ma0, Mb0, n).

    The one of larger magnitude gets full 31-bit precision (3.2 on |M|, then its sign); the
    other is rounded (half to even) at the same shift.  Magnitudes must be < 2**30.  A
    negative multiplier expresses a difference (ONNX Sub, or c - x).
    """
    ma, mb = float(ma), float(mb)
    big = max(abs(ma), abs(mb))
    if not math.isfinite(big):
        raise ValueError(f"multipliers must be finite, got {ma!r}, {mb!r}")
    if big == 0.0:
        return 0, 0, SHIFT_MIN
    _, n = quantize_multiplier(big)
    if n == SHIFT_MIN and big >= 2.0 ** 30:
        raise ValueError("Add multipliers too large")
    return int(round(ma * 2.0 ** n)), int(round(mb * 2.0 ** n)), n


def requantize_ref(acc, m0, n):
    """Exact numpy reference of requantize on int64 arrays (broadcasting)."""
    acc = np.asarray(acc, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    return (acc * m0 + (np.int64(1) << (n - 1))) >> n


def choose_activation_qparams(rmin: float, rmax: float) -> tuple[float, int]:
    """Asymmetric uint8 (scale, zero_point) covering [rmin, rmax] with 0 exactly representable.

    The range is first widened to include 0.  A degenerate range (rmin == rmax == 0) gets
    scale 1.0 and zero point 0, so every value maps to q = 0 exactly.
    """
    rmin = min(float(rmin), 0.0)
    rmax = max(float(rmax), 0.0)
    if not (math.isfinite(rmin) and math.isfinite(rmax)):
        raise ValueError(f"non-finite activation range [{rmin}, {rmax}]")
    if rmax == rmin:
        return 1.0, 0
    scale = (rmax - rmin) / (UINT8_MAX - UINT8_MIN)
    zero_point = int(round(UINT8_MIN - rmin / scale))
    zero_point = max(UINT8_MIN, min(UINT8_MAX, zero_point))
    return float(np.float32(scale)), zero_point


def choose_weight_scales(w: np.ndarray, axis: int | None, qmax: int = INT8_WEIGHT_MAX) -> np.ndarray:
    """Symmetric int8 weight scales: max|w| / qmax (127, or 63 for 7-bit weights) per channel
    (axis) or per tensor (axis None).

    All-zero channels get scale 1.0 (their quantized weights are 0 whatever the scale).
    Returned as float32 so that the value stored in the file is the value used.
    """
    w = np.asarray(w, dtype=np.float64)
    if axis is None:
        amax = np.array([np.max(np.abs(w))]) if w.size else np.array([0.0])
    else:
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        amax = np.max(np.abs(moved), axis=1) if moved.shape[1] else np.zeros(w.shape[axis])
    scale = amax / qmax
    scale[scale == 0.0] = 1.0
    return scale.astype(np.float32)


def quantize_weights(w: np.ndarray, scales: np.ndarray, axis: int | None,
                     qmax: int = INT8_WEIGHT_MAX) -> np.ndarray:
    """int8 weights q = clamp(round_half_even(w / s), -qmax, qmax) (qmax 127, or 63)."""
    w = np.asarray(w, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    if axis is not None:
        shape = [1] * w.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    q = np.rint(w / s)
    return np.clip(q, -qmax, qmax).astype(np.int8)


def quantize_float_ref(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Graph-entry quantization: q = clamp(round_half_even(x / s) + z, 0, 255), float32 math."""
    x = np.asarray(x, dtype=np.float32)
    q = np.rint(x / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, UINT8_MIN, UINT8_MAX).astype(np.uint8)


def dequantize_ref(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Graph-exit dequantization: r = float32(q - z) * float32(s)."""
    return (np.asarray(q, dtype=np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale)
