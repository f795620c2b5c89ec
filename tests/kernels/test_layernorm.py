"""layernorm_f32 (formats/nq-v1.md 4.16) against a numpy float32 transcription of the spec:
the fixed-order sums (eight partial sums over i mod 8, then the tree), every operation rounded
to float32, bit for bit; identical for 1 and 2 threads; NaN / inf rows stay in their row."""

import numpy as np
import pytest

from kernels._util import with_threads
from nqrt.kernels.layernorm import layernorm_f32


def spec_sum(v):
    """S of spec 4.16 over the last axis of a float32 [R, n] array (numpy float32 ops)."""
    R, n = v.shape
    p = np.zeros((R, 8), np.float32)
    n8 = n - n % 8
    for i in range(0, n8, 8):
        p = p + v[:, i:i + 8]
    for l in range(n - n8):
        p[:, l] = p[:, l] + v[:, n8 + l]
    return ((p[:, 0] + p[:, 1]) + (p[:, 2] + p[:, 3])) + ((p[:, 4] + p[:, 5]) + (p[:, 6] + p[:, 7]))


def spec_layernorm(x, scale, bias, eps, rms=0):
    n = np.float32(x.shape[1])
    mean = np.zeros(x.shape[0], np.float32) if rms else spec_sum(x) / n
    d = x - mean[:, None]
    var = spec_sum(d * d) / n
    inv = np.float32(1.0) / np.sqrt(var + np.float32(eps))
    return (d * inv[:, None]) * scale + bias


def _run(x, scale, bias, eps, threads=2, rms=0):
    y = np.full_like(x, np.nan)
    with_threads(threads, layernorm_f32, x, scale, bias, np.float32(eps), rms, y)
    return y


# (R, n): one element, short rows (tails of 1..7), exact multiples of 8, ConvNeXt's channel
# counts, and enough rows for the parallel row blocks
CASES = [(1, 1), (3, 5), (4, 7), (2, 8), (5, 9), (6, 15), (3, 96), (2, 768), (3136, 96)]


@pytest.mark.parametrize("R,n", CASES)
def test_layernorm_matches_spec(R, n):
    rng = np.random.default_rng(R * 1000 + n)
    # an offset mean makes the centring matter; scale/bias of both signs
    x = (rng.standard_normal((R, n)) * 3 + 5).astype(np.float32)
    scale = rng.standard_normal(n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    want = spec_layernorm(x, scale, bias, 1e-6)
    got = _run(x, scale, bias, 1e-6)
    assert np.array_equal(got, want)
    ref64 = (x - x.mean(1, keepdims=True, dtype=np.float64)) / np.sqrt(
        x.var(1, keepdims=True, dtype=np.float64) + 1e-6) * scale + bias
    assert np.allclose(got, ref64, rtol=1e-4, atol=1e-4)       # and it is a layer norm


def test_layernorm_thread_count_invariant():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4000, 40)) * 10).astype(np.float32)
    scale = rng.standard_normal(40).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    assert np.array_equal(_run(x, scale, bias, 1e-5, 1), _run(x, scale, bias, 1e-5, 2))


def test_layernorm_constant_rows_and_non_finite():
    """A constant row has var 0: y = bias (d = 0, inv = 1/sqrt(eps)); a row with an inf or NaN
    gives NaN in that row only."""
    x = np.array([[2.5] * 10, [1.0] * 9 + [np.inf], [0.0] * 9 + [np.nan], list(range(10))],
                 np.float32)
    scale = np.full(10, 3.0, np.float32)
    bias = np.arange(10, dtype=np.float32)
    got = _run(x, scale, bias, 1e-5)
    assert np.array_equal(got[0], bias)
    assert np.isnan(got[1]).all() and np.isnan(got[2]).all()
    assert np.array_equal(got[3], spec_layernorm(x[3:], scale, bias, 1e-5)[0])


@pytest.mark.parametrize("R,n", [(1, 1), (4, 7), (5, 9), (3, 96), (3136, 32)])
def test_rms_normalization_matches_spec(R, n):
    """rms = 1: no mean subtracted, y = (x · inv) · scale + bias with inv = 1 / sqrt(S(x·x) / n
    + eps): bit for bit against the transcription; as the L2 normalization the converter
    rewrites into it (scale 1/sqrt(n), eps' = eps²/n), it is x / ‖x‖."""
    rng = np.random.default_rng(R * 7 + n)
    x = (rng.standard_normal((R, n)) * 3 + 5).astype(np.float32)
    scale = rng.standard_normal(n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    got = _run(x, scale, bias, 1e-6, rms=1)
    assert np.array_equal(got, spec_layernorm(x, scale, bias, 1e-6, rms=1))
    assert np.array_equal(_run(x, scale, bias, 1e-6, threads=1, rms=1), got)
    unit = np.full(n, 1 / np.sqrt(n), np.float32)
    l2 = _run(x, unit, np.zeros(n, np.float32), np.float32(1e-24 / n), rms=1)
    ref = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    assert np.allclose(l2, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, _run(x, scale, bias, 1e-6, rms=0))      # the flag matters


@pytest.mark.parametrize("R,n,rms", [(1, 1, 0), (4, 7, 0), (5, 9, 1), (3, 96, 0), (197, 192, 0),
                                     (3136, 32, 1)])
def test_fused_quantized_layernorm_is_the_three_kernels(R, n, rms):
    """qlayernorm_u8 == quantize_f32(layernorm_f32(dequantize_u8(x))) bit for bit (the fused
    instruction the planner substitutes), for 1 and 2 threads; rows that saturate at both
    ends of the output grid and a constant row (var 0) included."""
    from nqrt.kernels.eltwise import dequantize_u8, quantize_f32
    from nqrt.kernels.layernorm import qlayernorm_u8
    rng = np.random.default_rng(R + 31 * n + rms)
    x = rng.integers(0, 256, (R, n), dtype=np.uint8)
    x[0] = 77                                               # constant row: y = bias
    scale = rng.standard_normal(n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    s_x, z_x, s_y, z_y = np.float32(0.037), 131, np.float32(0.011), 120   # s_y: some saturate
    f = np.empty((R, n), np.float32)
    dequantize_u8(x.reshape(-1), s_x, z_x, f.reshape(-1))
    g = np.empty_like(f)
    layernorm_f32(f, scale, bias, np.float32(1e-5), rms, g)
    want = np.empty((R, n), np.uint8)
    quantize_f32(g.reshape(-1), s_y, z_y, want.reshape(-1))
    for threads in (1, 2):
        got = np.zeros((R, n), np.uint8)
        with_threads(threads, qlayernorm_u8, x, s_x, z_x, scale, bias, np.float32(1e-5), rms, s_y,
                     z_y, got)
        assert np.array_equal(got, want)
    if R * n > 100:
        assert (want == 0).any() and (want == 255).any() and len(np.unique(want)) > 20
