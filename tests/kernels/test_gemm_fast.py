"""Bit-exactness of the GEMM fast paths (nqrt/kernels/gemm_fast.py) vs a numpy int64 reference.

Every path this host can run is tested ("portable" always; "avx2" / "vnni512" when the CPU has
them).  When the host lacks AVX-512 VNNI, the vnni512 driver is compiled (not run) for a znver4
target in a subprocess, opt-in with NQRT_SLOW_TESTS=1 (it costs a cold Numba compile), and
test_vnni512_emulated.py runs this module's vnni512 cases with vpdpbusd emulated.
"""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nqrt.kernels import cpu, gemm_fast, vnni
from nqrt.kernels.vnni import with_requant_table

PATHS = list(cpu.available_paths())


def reference(x, z_x, w, bias, mult, shift, z_y, act_min, act_max):
    """Spec 4.2 in numpy int64: clamp(((acc*M0 + 2^(n-1)) >> n) + z_y)."""
    acc = (x.astype(np.int64) - z_x) @ w.astype(np.int64).T + bias.astype(np.int64)
    n = shift.astype(np.int64)
    v = ((acc * mult.astype(np.int64) + (np.int64(1) << (n - 1))) >> n) + z_y
    return np.clip(v, act_min, act_max).astype(np.uint8)


def quant_mult(real):
    """Spec 3.2 (M0, n) for real multipliers (float64 array)."""
    m0s, ns = [], []
    for r in np.asarray(real, dtype=np.float64):
        f, e = math.frexp(float(r))
        m0 = int(round(f * (1 << 31)))
        if m0 == 1 << 31:
            m0 //= 2
            e += 1
        n = 31 - e
        if n > 62:
            m0 = int(round(m0 / 2 ** (n - 62)))
            n = 62
        if m0 == 0:
            n = 1
        m0s.append(m0)
        ns.append(n)
    return np.array(m0s, np.int32), np.array(ns, np.int32)


def make_case(rng, P, K, M, z_x=None, x=None, w=None, out_std=60.0):
    if x is None:
        x = rng.integers(0, 256, (P, K), dtype=np.uint8)
    if w is None:
        w = rng.integers(-127, 128, (M, K), dtype=np.int64).astype(np.int8)
    if z_x is None:
        z_x = int(rng.integers(0, 256))
    bias = rng.integers(-20000, 20000, M).astype(np.int32)
    acc = (x.astype(np.int64) - z_x) @ w.astype(np.int64).T + bias
    spread = np.maximum(acc.std(axis=0), 1.0) if P > 1 else np.maximum(np.abs(acc[0]), 1.0)
    real = out_std / spread * rng.uniform(0.5, 2.0, M)
    mult, shift = quant_mult(real)
    return x, z_x, w, bias, mult, shift


def run(path, x, z_x, w, bias, mult, shift, z_y, act_min, act_max, nthreads=2, table=True):
    """table: with the plan-time requantize table (avx2; the planner always adds it), else the
    avx2 fallback epilogue."""
    P, K = x.shape
    M = w.shape[0]
    wpack, wsum = gemm_fast.pack_b(w, path)
    assert np.array_equal(wsum, w.astype(np.int64).sum(axis=1))
    if table:
        wpack = with_requant_table(wpack, path, K, wsum, bias, mult, shift, z_x, z_y)
    scratch = np.zeros(gemm_fast.gemm_scratch_size(P, K, M, nthreads, path), np.uint8)
    y = np.full((P, M), 77, np.uint8)
    gemm_fast.gemm_kernel(path)(x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, act_min,
                                act_max, y, scratch)
    return y


SHAPES = [
    (1, 1, 1), (1, 7, 5), (1, 768, 768), (2, 3, 17), (3, 1, 70), (5, 13, 63), (6, 8, 64),
    (7, 33, 65), (13, 4096, 40), (37, 100, 129), (64, 257, 96), (130, 50, 33), (8, 768, 200),
    (9, 40, 24), (4, 64, 8),      # a last panel of exactly 8 columns: avx2's fused epilogue
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_random_shapes(path, shape):
    rng = np.random.default_rng(hash(shape) % (1 << 32))
    P, K, M = shape
    x, z_x, w, bias, mult, shift = make_case(rng, P, K, M)
    z_y = int(rng.integers(0, 256))
    ref = reference(x, z_x, w, bias, mult, shift, z_y, 0, 255)
    y = run(path, x, z_x, w, bias, mult, shift, z_y, 0, 255)
    assert np.array_equal(y, ref)
    assert P * M < 4 or 0 < ref.std()   # exercises the requantizer, not only the clamps


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("z_x", [0, 128, 255])
def test_zero_points_and_clamps(path, z_x):
    rng = np.random.default_rng(z_x)
    P, K, M = 19, 131, 77
    x, z_x, w, bias, mult, shift = make_case(rng, P, K, M, z_x=z_x)
    for z_y, lo, hi in [(0, 0, 255), (128, 128, 255), (255, 0, 255), (100, 90, 140), (7, 7, 7)]:
        ref = reference(x, z_x, w, bias, mult, shift, z_y, lo, hi)
        assert np.array_equal(run(path, x, z_x, w, bias, mult, shift, z_y, lo, hi), ref)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("wval", [127, -127])
def test_extremes_no_overflow(path, wval):
    """x = 255, w = +-127 at K = 66 000 (the v1 limit): the raw dot is +-2 137 410 000."""
    rng = np.random.default_rng(1)
    P, K, M = 2, 66000, 19
    x = np.full((P, K), 255, np.uint8)
    w = np.full((M, K), wval, np.int8)
    w[::3, ::7] = -wval       # a few flipped signs: still near the int32 limit
    for z_x in (0, 255):
        x_, z_x, w_, bias, mult, shift = make_case(rng, P, K, M, z_x=z_x, x=x, w=w)
        mult[:] = 1 << 30
        shift[:] = 45         # acc / 2^15 -> about 65 000: saturates, exercising both clamps
        ref = reference(x, z_x, w, bias, mult, shift, 128, 0, 255)
        shift[:] = 55
        ref2 = reference(x, z_x, w, bias, mult, shift, 128, 0, 255)
        assert len(np.unique(ref2)) > 1 or z_x == 255
        assert np.array_equal(run(path, x, z_x, w, bias, mult, shift, 128, 0, 255), ref2)
        shift[:] = 45
        assert np.array_equal(run(path, x, z_x, w, bias, mult, shift, 128, 0, 255), ref)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(1, 768, 768), (8, 300, 250), (100, 200, 90), (257, 64, 129)],
                         ids=lambda s: "x".join(map(str, s)))
def test_thread_count_independent(path, shape):
    rng = np.random.default_rng(7)
    P, K, M = shape
    x, z_x, w, bias, mult, shift = make_case(rng, P, K, M)
    ys = [run(path, x, z_x, w, bias, mult, shift, 3, 0, 255, nthreads=nt) for nt in (1, 2, 3)]
    assert np.array_equal(ys[0], ys[1]) and np.array_equal(ys[0], ys[2])
    assert np.array_equal(ys[0], reference(x, z_x, w, bias, mult, shift, 3, 0, 255))


@pytest.mark.skipif("avx2" not in PATHS, reason="no AVX2 on this CPU")
@pytest.mark.parametrize("kind", ["table", "no_table", "shift_61", "huge_corr", "other_zps"])
def test_avx2_epilogue_table(kind):
    """The avx2 fused epilogue reads the plan-time table; without a usable one (none, a shift
    beyond 60, |bias - z_x·wsum| + K·255·127 >= 2^32, a table built for other zero points) the
    kernel takes the scalar epilogue.  Exact either way."""
    rng = np.random.default_rng(21)
    P, K, M = 23, 75, 40
    x, z_x, w, bias, mult, shift = make_case(rng, P, K, M)
    z_y = 9
    if kind == "shift_61":
        shift[::3] = 61
        mult[::3] = rng.integers(1 << 30, 1 << 31, len(mult[::3]))
    elif kind == "huge_corr":
        bias[:] = 2**31 - 100
        shift[:] = 60
    ref = reference(x, z_x, w, bias, mult, shift, z_y, 0, 255)
    wpack, wsum = gemm_fast.pack_b(w, "avx2")
    tz = (z_x + 1, z_y) if kind == "other_zps" else (z_x, z_y)
    table = vnni.requant_table(K, wsum, bias, mult, shift, *tz)
    assert table[0] == (0 if kind in ("shift_61", "huge_corr") else 1)
    if kind != "no_table":
        wpack = with_requant_table(wpack, "avx2", K, wsum, bias, mult, shift, *tz)
    scratch = np.zeros(gemm_fast.gemm_scratch_size(P, K, M, 2, "avx2"), np.uint8)
    y = np.full((P, M), 77, np.uint8)
    gemm_fast.gemm_kernel("avx2")(x, z_x, wpack, wsum, M, K, bias, mult, shift, z_y, 0, 255, y,
                                  scratch)
    assert np.array_equal(y, ref)


def test_paths_agree_and_wrapper():
    rng = np.random.default_rng(3)
    P, K, M = 9, 70, 45
    x, z_x, w, bias, mult, shift = make_case(rng, P, K, M)
    ref = reference(x, z_x, w, bias, mult, shift, 11, 5, 250)
    for path in PATHS:
        wpack, wsum = gemm_fast.pack_b(w, path)
        y = np.empty((P, M), np.uint8)
        gemm_fast.gemm_u8s8_requant(x, z_x, wpack, wsum, M, K, bias, mult, shift, 11, 5, 250, y,
                                    path=path)
        assert np.array_equal(y, ref), path
    with pytest.raises(ValueError):
        gemm_fast.gemm_u8s8_requant(x.astype(np.int8), z_x, wpack, wsum, M, K, bias, mult, shift,
                                    11, 5, 250, y)


def test_pack_b_vnni_layout():
    """Groups of 4 k, 64-channel panels, zero padding (checked on any host: numpy only)."""
    rng = np.random.default_rng(5)
    M, K = 70, 10
    w = rng.integers(-127, 128, (M, K), dtype=np.int64).astype(np.int8)
    wpack, wsum = gemm_fast.pack_b_vnni(w)
    assert wpack.dtype == np.int8 and wsum.dtype == np.int32
    ng = 4                                     # K = 10 -> padded to 16 (4 * UNROLL = 8 multiple)
    panels = wpack.reshape(2, ng, 64, 4)       # [panel][group][channel][4 k]
    full = np.zeros((128, ng * 4), np.int8)
    full[:M, :K] = w
    for m in (0, 5, 63, 64, 69, 127):
        for k in range(ng * 4):
            assert panels[m // 64, k // 4, m % 64, k % 4] == full[m, k]
    assert np.array_equal(wsum, w.astype(np.int64).sum(axis=1))


def test_cpu_detection_and_env(monkeypatch):
    assert "portable" in cpu.available_paths()
    assert cpu.gemm_path() in cpu.available_paths()
    monkeypatch.setenv("NQRT_DISABLE_VNNI", "1")
    assert cpu.gemm_path() == "portable"
    assert gemm_fast.select_path() == "portable"
    monkeypatch.delenv("NQRT_DISABLE_VNNI")
    monkeypatch.setenv("NQRT_GEMM_PATH", "portable")
    assert cpu.gemm_path() == "portable"
    if not cpu.has_vnni512():
        with pytest.raises(RuntimeError):
            gemm_fast.gemm_kernel("vnni512")


def test_import_compiles_nothing():
    """Importing the modules must not compile (and so never touch VNNI on a non-VNNI host)."""
    code = textwrap.dedent("""
        import time
        t = time.perf_counter()
        from nqrt.kernels import gemm_fast, vnni
        assert not vnni.gemm_vnni512.signatures and not vnni.gemm_avx2.signatures
        assert not gemm_fast.gemm_portable.signatures
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


@pytest.mark.skipif(cpu.has_vnni512() or not os.environ.get("NQRT_SLOW_TESTS"),
                    reason="host runs vnni512 for real / set NQRT_SLOW_TESTS=1")
def test_vnni512_compiles_for_znver4(tmp_path):
    """Compile (never run) the vnni512 GEMM driver and conv kernel for a Zen 4 target: the IR is
    valid and the hot loops are vpdpbusd on zmm registers."""
    code = textwrap.dedent("""
        import numpy as np
        from numba import types
        from nqrt.kernels import vnni
        u8, i8, i32 = (types.Array(t, 1, "C") for t in (types.uint8, types.int8, types.int32))
        i64 = types.int64
        sig = (types.Array(types.uint8, 2, "C"), i64, i8, i32, i64, i64, i32, i32, i32, i64, i64,
               i64, types.Array(types.uint8, 2, "C"), u8)
        vnni._worker_v512.compile((i64, i64, types.boolean) + sig[:-1] + (u8, i64,
                                  types.Array(types.int64, 1, "C")))
        asm = vnni._worker_v512.inspect_asm(vnni._worker_v512.signatures[0])
        n = asm.count("vpdpbusd")
        assert n >= 24 * 2, n
        assert "zmm" in asm
        # the runtime's fast conv (im2col chunks + the same micro-kernels), whole entry point
        from nqrt.kernels import conv
        u8_4, i8_1, i32_1 = (types.Array(types.uint8, 4, "C"), i8, i32)
        csig = (u8_4, i64, i8_1, i32_1, i32_1, i32_1, i32_1, i64, i64, i64) + (i64,) * 9 + (
            u8_4, u8)
        conv.conv2d_u8_vnni512.compile(csig)
        casm = "".join(conv._conv_worker_v512.inspect_asm(s)
                       for s in conv._conv_worker_v512.signatures)
        assert casm.count("vpdpbusd") >= 24 * 2 and "zmm" in casm
        print("vpdpbusd", n)
    """)
    # NUMBA_CPU_NAME alone keeps the host's feature list: name the AVX-512 features too.
    feats = "+avx512f,+avx512bw,+avx512vl,+avx512dq,+avx512cd,+avx512vnni,+avx2,+fma,+bmi2"
    env = dict(os.environ, NUMBA_CPU_NAME="znver4", NUMBA_CPU_FEATURES=feats,
               NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0 and "vpdpbusd" in out.stdout, out.stderr[-3000:]


@pytest.mark.skipif("avx2" not in PATHS, reason="host has no AVX2")
@pytest.mark.parametrize("P,K,M", [(1, 768, 768), (23, 75, 40), (100, 5, 17), (64, 300, 24),
                                   (7, 1, 9), (130, 64, 96)])
@pytest.mark.parametrize("table", [True, False])
def test_avx2q_seven_bit_weights(P, K, M, table):
    """Weights in [-64, 63]: the avx2 path's vpmaddubsw layout (header byte LAYOUT_QUADS),
    exact at the largest pair sums (x = 255 against w = -64 / 63), for 1, 2 and 3 threads."""
    rng = np.random.default_rng(P * K + M)
    w = rng.integers(-64, 64, (M, K)).astype(np.int8)
    w.reshape(-1)[::3] = -64
    w.reshape(-1)[1::4] = 63
    x = rng.integers(0, 256, (P, K), dtype=np.uint8)
    x[:, ::2] = 255
    x, z_x, w, bias, mult, shift = make_case(rng, P, K, M, x=x, w=w)
    assert gemm_fast.pack_b(w, "avx2")[0][0] == vnni.LAYOUT_QUADS
    ref = reference(x, z_x, w, bias, mult, shift, 3, 0, 250)
    for nt in (1, 2, 3):
        y = run("avx2", x, z_x, w, bias, mult, shift, 3, 0, 250, nthreads=nt, table=table)
        assert np.array_equal(y, ref), nt


@pytest.mark.parametrize("P,M,split_rows", [
    (1, 768, False),      # one micro-panel: only a channel split uses both threads
    (8, 3072, False),     # 6 + 2 rows: a row split leaves one thread 6 rows against all of B
    (49, 512, False),     # 9 micro-panels, 5 / 4
    (3136, 64, True),     # many micro-panels, 4 panels: a channel split packs every row twice
    (1024, 1024, True),
])
def test_thread_split_choice(P, M, split_rows):
    nt, rows = vnni.fast_threads(P, 768, M, vnni.AVX2_MR, vnni.AVX2_NR, 2)
    assert (nt, rows) == (2, split_rows)
    assert vnni.fast_threads(P, 768, M, vnni.AVX2_MR, vnni.AVX2_NR, 1) == (1, True)


def test_small_products_run_on_one_thread():
    """Below PAR_MIN_MACS_FAST a parallel region costs more than it saves (an SE block's
    1x576x144 GEMV: 4.0 us on one thread, 6.4 us on two)."""
    assert vnni.fast_threads(1, 576, 144, vnni.AVX2_MR, vnni.AVX2_NR, 2) == (1, True)
    assert vnni.fast_threads(1, 768, 768, vnni.AVX2_MR, vnni.AVX2_NR, 2)[0] == 2
