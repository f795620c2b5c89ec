"""qparam policy: fused-activation clamps (spec 3.4), weights/bias (3.6 guard), tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nqrt import qmath
from nqrt.errors import ConversionError
from nqrt.quant import qparams as qp


def test_act_clamp_relu_relu6_none():
    s, z = qp.activation_qparams(-2.0, 10.0)
    assert qp.act_clamp(None, s, z) == (0, 255)
    assert qp.act_clamp((0.0, math.inf), s, z) == (z, 255)
    lo, hi = qp.act_clamp((0.0, 6.0), s, z)
    assert lo == z and hi == z + math.floor(6.0 / s)
    # Clip(-1, 1) rounds inwards: ceil for lo, floor for hi
    lo, hi = qp.act_clamp((-1.0, 1.0), s, z)
    assert lo == z + math.ceil(-1.0 / s) and hi == z + math.floor(1.0 / s)
    # bounds outside the representable range saturate
    assert qp.act_clamp((-1e9, 1e9), s, z) == (0, 255)
    assert qp.act_clamp((50.0, 60.0), s, z) == (255, 255)


def test_activation_qparams_rejects_nonfinite():
    with pytest.raises(ConversionError, match="no finite calibration range"):
        qp.activation_qparams(math.nan, math.nan, "t")


def _dequant_bias(wq):
    return wq.bias_q.astype(np.float64) * wq.bias_scale.astype(np.float64)


@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_and_bias_normal_case(per_channel):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    s_x = 0.02
    wq = qp.quantize_weights_and_bias(w, b, s_x, per_channel)
    assert wq.w_q.dtype == np.int8 and wq.w_q.shape == w.shape
    assert np.abs(wq.w_q.astype(int)).max() == 127
    assert wq.w_scale.dtype == np.float32 and wq.w_scale.shape == ((6,) if per_channel else (1,))
    assert wq.axis == (0 if per_channel else None)
    s_w = np.broadcast_to(wq.w_scale, (6,)).astype(np.float64)
    np.testing.assert_allclose(wq.bias_scale, (s_x * s_w).astype(np.float32))
    assert wq.bias_q.dtype == np.int32
    np.testing.assert_allclose(_dequant_bias(wq), b, atol=s_x * s_w.max())
    assert wq.warnings == []


@pytest.mark.parametrize("per_channel", [True, False])
def test_bias_overflow_guard_enlarges_weight_scale(per_channel):
    rng = np.random.default_rng(1)
    w = (rng.normal(size=(4, 2, 3, 3)) * 1e-3).astype(np.float32)
    b = np.array([5e4, -1e-4, 0.0, -8e4], np.float32)   # channels 0 and 3 overflow
    s_x = 1e-5
    plain = qmath.choose_weight_scales(w, 0 if per_channel else None).astype(np.float64)
    assert np.abs(b[0] / (s_x * np.broadcast_to(plain, (4,))[0])) > 2**31   # the premise
    wq = qp.quantize_weights_and_bias(w, b, s_x, per_channel, what="conv_big_bias")
    assert len(wq.warnings) == 1
    assert "conv_big_bias" in wq.warnings[0] and "channels 0, 3" in wq.warnings[0]
    assert np.abs(wq.bias_q.astype(np.int64)).max() <= 2**31 - 1
    assert np.abs(wq.bias_q.astype(np.int64)).max() > 2**30          # not over-enlarged
    s_w = np.broadcast_to(wq.w_scale, (4,)).astype(np.float64)
    if per_channel:
        assert s_w[1] == np.float32(plain[1]) and s_w[2] == np.float32(plain[2])   # untouched
        assert s_w[0] > plain[0] and s_w[3] > plain[3]
    # bias still represents b, weights re-quantized at the new scale (still within int8)
    np.testing.assert_allclose(_dequant_bias(wq), b, rtol=1e-6, atol=s_x * s_w.max())
    assert np.abs(wq.w_q.astype(int)).max() <= 127
    np.testing.assert_allclose(wq.w_q * s_w.reshape(4, 1, 1, 1), w, atol=s_w.max() / 2 + 1e-12)


def test_requant_multipliers_and_average_tables():
    m0, n = qp.requant_multipliers(0.05, np.array([0.01, 0.02], np.float32), 0.1, "x")
    assert m0.dtype == np.int32 and n.dtype == np.int32
    np.testing.assert_allclose(m0 * 2.0 ** -n.astype(float),
                               0.05 * np.array([0.01, 0.02], np.float32).astype(np.float64) / 0.1,
                               rtol=2**-30)
    m0, n = qp.average_tables(0.1, 0.05, 9, "pool")
    assert m0.shape == n.shape == (10,)
    assert (m0[0], n[0]) == (0, 1)
    for c in range(1, 10):
        assert m0[c] * 2.0 ** -int(n[c]) == pytest.approx(0.1 / (0.05 * c), rel=2**-30)
