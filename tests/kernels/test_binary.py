"""QMul kernel (spec 4.10): bit-exact vs tests/naive.py over broadcast shapes and layouts,
thread-count independent, not vacuous (outputs hit both clamp bounds and values between)."""

import numpy as np
import pytest

import naive
from kernels._util import assert_same, with_threads
from nqrt import qmath
from nqrt.kernels import cpu
from nqrt.kernels.binary import mul_u8

# QMul kernels: the portable one, and the x86 one where this host can run it
KERNELS = {"portable": mul_u8}
if "avx2" in cpu.available_paths():
    from nqrt.kernels.binary_x86 import mul_u8_avx2
    KERNELS["avx2"] = mul_u8_avx2


def _strides6(shape, out_shape, perm=None):
    """Rank-6 element strides of an array of logical `shape` (stored C-contiguous in the
    physical order perm) read at the logical indices of out_shape (0 = broadcast)."""
    r = len(out_shape)
    shape = (1,) * (r - len(shape)) + tuple(shape)
    perm = list(range(r)) if perm is None else list(perm)
    phys = [shape[p] for p in perm]
    st_phys = [1] * r
    for j in range(r - 2, -1, -1):
        st_phys[j] = st_phys[j + 1] * phys[j + 1]
    logical = [0] * r
    for j, p in enumerate(perm):
        logical[p] = st_phys[j] if shape[p] != 1 else 0
    return np.array([0] * (6 - r) + logical, np.int64)


def _run(a, b, z_a, z_b, m0, n, z_y, lo, hi, a_perm=None, threads=None, kernel="portable"):
    out = np.broadcast_shapes(a.shape, b.shape)
    r = len(out)
    a_flat = np.ascontiguousarray(a.transpose(a_perm)).ravel() if a_perm else a.ravel()
    y = np.zeros(int(np.prod(out)), np.uint8)
    args = (a_flat, np.ascontiguousarray(b).ravel(), np.array((1,) * (6 - r) + out, np.int64),
            _strides6(a.shape, out, a_perm), _strides6(b.shape, out), z_a, z_b, m0, n, z_y, lo, hi, y)
    if threads:
        with_threads(threads, KERNELS[kernel], *args)
    else:
        KERNELS[kernel](*args)
    return y.reshape(out)


CASES = [
    ((2, 16, 7, 9), (2, 16, 1, 1)),          # SE block: x * sigmoid(pool(x))
    ((3, 5, 4), (3, 5, 4)),
    ((5, 1, 6), (1, 4, 1)),                  # both broadcast
    ((40,), (1,)),
    ((1, 2, 3, 2, 2, 5), (2, 1, 1, 2, 1, 5)),
    ((2, 8, 6, 6), (8, 1, 1)),               # a constant operand of lower rank
    # more than CHUNK elements in short rows: grouped-row tasks in a prange, crossing the
    # batch boundary and a broadcast middle axis
    ((2, 40, 40, 24), (2, 1, 1, 24)),
    ((3, 50, 1, 120), (1, 50, 4, 120)),
    ((3, 4, 5, 8), (3, 1, 1, 8)),            # channels-last SE, one serial task over 3 images
]


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("sa, sb", CASES)
def test_mul_matches_naive(sa, sb, kernel):
    rng = np.random.default_rng(len(sa) * 7 + len(sb))
    a = rng.integers(0, 256, sa, dtype=np.uint8)
    b = rng.integers(0, 256, sb, dtype=np.uint8)
    b.flat[0] = 255                          # a large |db| somewhere, even for b of one element
    z_a, z_b, z_y = 131, 97, 120
    m0, n = qmath.quantize_multiplier(250.0 / (74.0 * 74.0))  # ~250 codes of output spread
    lo, hi = 3, 250
    y = _run(a, b, z_a, z_b, m0, n, z_y, lo, hi, kernel=kernel)
    want = naive.qmul(a, b, z_a, z_b, m0, n, z_y, lo, hi)
    assert_same(y, want, lo, hi)
    assert np.array_equal(y, _run(a, b, z_a, z_b, m0, n, z_y, lo, hi, threads=1, kernel=kernel))
    assert np.array_equal(y, _run(a, b, z_a, z_b, m0, n, z_y, lo, hi, threads=2, kernel=kernel))


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_mul_channels_last_operand_and_extremes(kernel):
    """a stored NHWC (the planner's layout), b broadcast; zero points at 0 and 255 give the
    largest |da·db| = 65025; a tiny multiplier with n = 62 still rounds exactly."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (2, 6, 5, 7), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 6, 1, 1), dtype=np.uint8)
    a[0, 0, 0, 0], b[0, 0, 0, 0] = 255, 0
    # 2^-40 (n > 60) and 2^15 (D would reach 2^30): offset_requant is not ok, the int64 loops run
    for z_a, z_b, real in ((0, 255, 90.0 / 65025), (255, 0, 1.7e-5), (128, 128, 2.0**-40),
                           (0, 255, 2.0**15), (3, 250, 1.0)):
        m0, n = qmath.quantize_multiplier(real)
        y = _run(a, b, z_a, z_b, m0, n, 128, 0, 255, a_perm=(0, 2, 3, 1), kernel=kernel)
        assert_same(y, naive.qmul(a, b, z_a, z_b, m0, n, 128, 0, 255))


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("C", [16, 21, 150])
def test_mul_se_block_channels_last_many_rows(kernel, C):
    """The SE product as the runtime runs it (x NHWC, per-image channel scale), big enough for
    grouped-row tasks that span two images, with rows of 16, 21 (16-element steps crossing
    row ends, a tail per run) and 150 channels: bit-exact for 1 and 2 threads."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (2, C, 48, 40), dtype=np.uint8)
    b = rng.integers(0, 256, (2, C, 1, 1), dtype=np.uint8)
    m0, n = qmath.quantize_multiplier(250.0 / (74.0 * 74.0))
    want = naive.qmul(a, b, 131, 97, m0, n, 120, 3, 250)
    for threads in (1, 2):
        y = _run(a, b, 131, 97, m0, n, 120, 3, 250, a_perm=(0, 2, 3, 1), threads=threads,
                 kernel=kernel)
        assert_same(y, want, 3, 250)


@pytest.mark.parametrize("real", [90.0 / 65025, 1.7e-5, 2.0**-20, 0.4, 2.0**-22])
@pytest.mark.parametrize("z", [0, 128, 255])
def test_signed_requant_is_exact_for_every_product(real, z):
    """The x86 QMul's constants (fixedpoint.signed_requant for |p| <= PRODUCT_MAX):
    ((p·M0 + bc) >> 32) >> sh == floor((p·M0 + 2^(n-1)) / 2^n) + z for every product p the
    kernel can see, with the numerator inside int64 and its high dword inside int32."""
    from nqrt.kernels.binary import PRODUCT_MAX
    from nqrt.kernels.fixedpoint import signed_requant
    m0, n = qmath.quantize_multiplier(real)
    ok, bc, sh = signed_requant(0, PRODUCT_MAX, m0, n, z)
    assert ok and sh == n - 32
    p = np.arange(-PRODUCT_MAX, PRODUCT_MAX + 1, dtype=object)     # Python ints: no overflow
    num = p * m0 + int(bc)
    assert all(-2**63 <= v < 2**63 for v in (num.min(), num.max()))
    high = np.array([v >> 32 for v in num], dtype=object)
    assert all(-2**31 <= v < 2**31 for v in (high.min(), high.max()))
    want = np.array([((v * m0 + (1 << (n - 1))) >> n) + z for v in p], dtype=object)
    assert np.array_equal(np.array([v >> int(sh) for v in high], dtype=object), want)


def test_signed_requant_refuses_what_it_cannot_represent():
    from nqrt.kernels.binary import PRODUCT_MAX
    from nqrt.kernels.fixedpoint import signed_requant
    for real, z in ((0.6, 0), (3000.0, 0), (2.0**-40, 255), (2.0**-32, 200)):
        m0, n = qmath.quantize_multiplier(real)
        assert not signed_requant(0, PRODUCT_MAX, m0, n, z)[0], (real, z)
    assert signed_requant(0, PRODUCT_MAX, 0, 5, 7)[0]      # a zero multiplier: any shift


@pytest.mark.parametrize("real", [90.0 / 65025, 1.7e-5, 2.0**-20, 0.5, 1.0, 3000.0])
def test_product_offsets_are_exact_for_every_product(real):
    """The fast loops' constants (fixedpoint.offset_requant for |p| <= PRODUCT_MAX):
    ((p·M0 + C) >>> n) − D == floor((p·M0 + 2^(n-1)) / 2^n) for every product p the kernel
    can see, with both terms inside int32."""
    from nqrt.kernels.binary import PRODUCT_MAX
    from nqrt.kernels.fixedpoint import offset_requant
    m0, n = qmath.quantize_multiplier(real)
    ok, c, d = offset_requant(0, PRODUCT_MAX, m0, n)
    assert ok
    p = np.arange(-PRODUCT_MAX, PRODUCT_MAX + 1, dtype=np.int64)
    v = p * m0 + c
    assert (v >= 0).all() and (v < 2**62).all()
    want = (p * m0 + (1 << (n - 1))) >> n               # numpy: arithmetic shift = floor
    assert np.array_equal((v >> n) - d, want)
    assert (v >> n).max() < 2**30 and d < 2**30


def test_product_offsets_refuse_what_they_cannot_represent():
    from nqrt.kernels.binary import PRODUCT_MAX
    from nqrt.kernels.fixedpoint import offset_requant
    for real in (2.0**-40, 2.0**15):
        m0, n = qmath.quantize_multiplier(real)
        assert not offset_requant(0, PRODUCT_MAX, m0, n)[0]
