"""nqrt.qmath's multiplier encoding against exact Fractions, and the njit requantize against
qmath.requantize_ref on edge accumulators (gemmlowp style edge tables)."""

from fractions import Fraction

import pytest

from nqrt import qmath
from nqrt.kernels.fixedpoint import clamp, output_u8, requantize

EPS = 2.0 ** -40
MULTIPLIERS = ([2.0 ** e for e in range(-40, 30)]
               + [2.0 ** e * (1 + s) for e in (-20, -1, 0, 5) for s in (EPS, -EPS, 2 ** -31, -2 ** -32)]
               + [1e-12, 1e-9, 0.1, 0.3, 0.5, 0.75, 0.999999, 1.0, 1.5, 3.0, 1000.0,
                  (2 ** 31 - 0.5) / 2 ** 31, (2 ** 31 - 0.25) / 2 ** 31 * 2 ** -7,
                  2.0 ** 29 * 1.999, 2.0 ** -62 * 1.5])


@pytest.mark.parametrize("m", MULTIPLIERS)
def test_quantize_multiplier_exact(m):
    m0, n = qmath.quantize_multiplier(m)
    assert 1 <= n <= 62
    if m0 == 0:
        assert m < 2.0 ** -62
        return
    if n < 62:
        assert 2 ** 30 <= m0 <= 2 ** 31 - 1
    err = abs(Fraction(m0, 2 ** n) - Fraction(m)) / Fraction(m)
    limit = Fraction(1, 2 ** 31) if n < 62 else Fraction(1, m0)   # n = 62: M0 re-rounded
    assert err <= limit, (m, m0, n, float(err))


def test_quantize_multiplier_rounds_up_to_2_31():
    m0, n = qmath.quantize_multiplier((2 ** 31 - 0.25) / 2 ** 31)     # frac rounds to 1.0
    assert (m0, n) == (2 ** 30, 30)


def test_quantize_multiplier_edges():
    assert qmath.quantize_multiplier(0.0) == (0, 1)
    assert qmath.quantize_multiplier(1e-30) == (0, 1)
    assert qmath.quantize_multiplier(2.0 ** -62) == (1, 62)
    assert qmath.quantize_multiplier(2.0 ** -62 * 1.5) == (2, 62)
    assert qmath.quantize_multiplier(2.0 ** -63) == (0, 1)            # round(0.5) = 0
    assert qmath.quantize_multiplier(2.0 ** 29 * 1.999) == (round(0.9995 * 2 ** 31), 1)
    # M >= 2^30, and M just below 2^30 whose M0 rounds up to 2^31 (needs n = 0), are rejected
    for bad in (2.0 ** 30, 2.0 ** 30 * (1 - 2 ** -40), 1e12, float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError):
            qmath.quantize_multiplier(bad)


def _edge_accs():
    vals = {0, 1, -1, 2 ** 31, -(2 ** 31), 2 ** 31 - 1, 2 ** 32, -(2 ** 32)}
    for i in range(0, 33):
        for d in (0, 1, 2):
            vals |= {2 ** i + d, 2 ** i - d, -(2 ** i) + d, -(2 ** i) - d}
    return sorted(vals)


@pytest.mark.parametrize("m0,n", [(2 ** 30, 1), (2 ** 30, 31), (2 ** 31 - 1, 31), (1518500250, 37),
                                  (2 ** 30 + 1, 62), (0, 1), (1, 1), (1 << 30, 30)])
def test_requantize_edges(m0, n):
    for acc in _edge_accs():
        if abs(acc * m0) >= 2 ** 62:
            continue                                   # outside the spec's int64 domain
        want = int(qmath.requantize_ref(acc, m0, n))
        assert requantize(acc, m0, n) == want, (acc, m0, n)
        assert want == (acc * m0 + 2 ** (n - 1)) >> n  # Python ints: exact


@pytest.mark.parametrize("n", [1, 2, 10, 31, 40])
def test_requantize_ties_round_toward_plus_inf(n):
    """acc·M0 = k·2^n + 2^(n−1) exactly: the result is k + 1 (2.5 -> 3, −2.5 -> −2)."""
    m0 = 1 << 30
    for k in (-7, -3, -2, -1, 0, 1, 2, 5):
        num = k * 2 ** n + 2 ** (n - 1)              # acc·M0 must equal num: acc = num / 2^30
        if n - 1 >= 30:
            acc = num >> 30
            assert requantize(acc, m0, n) == k + 1
            assert int(qmath.requantize_ref(acc, m0, n)) == k + 1
    # with M0 = 1 every tie is reachable: acc = k·2^n + 2^(n−1)
    for k in (-5, -1, 0, 4):
        acc = k * 2 ** n + 2 ** (n - 1)
        assert requantize(acc, 1, n) == k + 1 == int(qmath.requantize_ref(acc, 1, n))
        assert requantize(acc - 1, 1, n) == k                 # just below the tie
    assert requantize(-5, 1, 1) == -2 and requantize(5, 1, 1) == 3


def test_output_clamp():
    assert output_u8(10 ** 6, 1 << 30, 31, 128, 0, 255) == 255
    assert output_u8(-(10 ** 6), 1 << 30, 31, 128, 0, 255) == 0
    assert output_u8(10, 1 << 30, 31, 128, 0, 255) == 133
    assert output_u8(10, 1 << 30, 31, 128, 140, 200) == 140
    assert clamp(5, 6, 9) == 6 and clamp(10, 6, 9) == 9 and clamp(7, 6, 9) == 7


def test_offset_requant_matches_requantize():
    """The logical-shift form of the SIMD epilogues equals the spec's requantize for every dot
    in [-amax, amax] (the ends and random points), with a non-negative numerator below 2^62;
    unrepresentable constants are reported, never wrong."""
    import numpy as np

    from nqrt.kernels.fixedpoint import offset_requant
    rng = np.random.default_rng(4)
    n_ok = 0
    for _ in range(300):
        amax = int(rng.integers(1, 2000)) * 255 * 127
        b = int(rng.integers(-2**31, 2**31))
        m0 = int(rng.integers(2**30, 2**31))
        n = int(rng.integers(20, 63))
        ok, bc, off = offset_requant(b, amax, m0, n)
        if not ok:
            continue
        n_ok += 1
        for d in [-amax, amax, 0, *rng.integers(-amax, amax + 1, 20).tolist()]:
            num = d * m0 + int(bc)
            assert 0 <= num < 2**62
            want = ((d + b) * m0 + (1 << (n - 1))) >> n
            assert (num >> n) - int(off) == want
    assert n_ok > 100
    assert not offset_requant(0, 255 * 127, 2**30, 61)[0]          # shift beyond 60
    assert not offset_requant(2**31 - 1, 2**32, 2**31 - 1, 40)[0]  # numerator range too wide
