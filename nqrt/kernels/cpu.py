"""Host CPU feature detection for the GEMM fast paths (nqrt/kernels/gemm_fast.py).

A fast path is usable only when BOTH the CPU/OS report the feature (/proc/cpuinfo on Linux:
the kernel drops AVX-512 flags when the OS does not save zmm state) AND LLVM, which Numba
compiles for (`-mcpu=host`), enables it.  Numba cannot compile an x86 intrinsic whose feature
LLVM's host target lacks (LLVM aborts the process), so the LLVM view is the one that decides.

Paths, best first:
  "vnni512"  AVX-512 VNNI `vpdpbusd` zmm (u8 x s8, 4 k per instruction) - Ice Lake+, Zen 4+
  "avx2"     AVX2 `vpmaddwd` on int16-widened operands (exact, 2 k per instruction)
  "portable" plain Numba loops (any CPU)

Environment: NQRT_DISABLE_VNNI=1 forces the portable path (also disables "avx2");
NQRT_GEMM_PATH=<name> asks for a path (ignored, falling back, if the CPU cannot run it).

NQRT_EMULATE_VNNI512=1 (testing only) makes an AVX2 host offer the "vnni512" path with its one
AVX-512 instruction, `vpdpbusd`, emitted as generic LLVM vector IR of the same exact semantics
(nqrt/kernels/vnni.py, emit_vpdpbusd): every other line of the vnni512 path (packing, drivers,
epilogues, 16-lane vectors, which LLVM splits into ymm halves) then runs on hosts without
AVX-512, so the tests can check it bit for bit.  Slow; its machine code goes to a cache
directory of its own (nqrt/numba_config.py), never mixed with real builds.
"""

from __future__ import annotations

import functools
import os

PATHS = ("vnni512", "avx2", "portable")


@functools.lru_cache(maxsize=None)
def cpuinfo_flags() -> frozenset:
    """Feature flags of the first CPU in /proc/cpuinfo (empty set when unavailable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=None)
def llvm_host() -> tuple:
    """(cpu name, frozenset of enabled LLVM feature names) for the host, as Numba sees it."""
    try:
        import llvmlite.binding as llb
        name = llb.get_host_cpu_name()
        feats = llb.get_host_cpu_features()
        return name, frozenset(k for k, v in feats.items() if v)
    except Exception:   # pragma: no cover - llvmlite always there with numba
        return "", frozenset()


def _numba_overrides_cpu() -> bool:
    """True when the user pinned Numba's target CPU (then LLVM's host view is not what we get)."""
    return bool(os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"))


@functools.lru_cache(maxsize=None)
def features() -> dict:
    """Booleans: avx2, avx512bw, avx512_vnni, avx_vnni (CPU and LLVM both agree)."""
    flags = cpuinfo_flags()
    _, ll = llvm_host()
    have_flags = bool(flags)

    def both(cpu_flag, llvm_feat):
        in_llvm = llvm_feat in ll
        return in_llvm and (cpu_flag in flags if have_flags else True)

    f = {
        "avx2": both("avx2", "avx2"),
        "avx512bw": both("avx512bw", "avx512bw"),
        "avx512_vnni": both("avx512_vnni", "avx512vnni"),
        "avx_vnni": both("avx_vnni", "avxvnni"),
    }
    # LLVM >= 18 splits 512-bit vectors off AVX-512 as "evex512": when LLVM knows that feature,
    # it must be on for zmm code.
    f["zmm"] = f["avx512bw"] and ("evex512" not in _all_llvm_feature_names() or "evex512" in ll)
    return f


@functools.lru_cache(maxsize=None)
def _all_llvm_feature_names() -> frozenset:
    try:
        import llvmlite.binding as llb
        return frozenset(llb.get_host_cpu_features().keys())
    except Exception:   # pragma: no cover
        return frozenset()


EMULATE_VNNI512_VAR = "NQRT_EMULATE_VNNI512"


def emulate_vnni512() -> bool:
    """True when NQRT_EMULATE_VNNI512 asks for the emulated vnni512 path (see the docstring)
    and this host can run it (AVX2)."""
    return os.environ.get(EMULATE_VNNI512_VAR, "") not in ("", "0") and has_avx2()


def has_vnni512() -> bool:
    f = features()
    real = f["avx512_vnni"] and f["avx512bw"] and f["zmm"] and not _numba_overrides_cpu()
    return real or emulate_vnni512()


def has_avx2() -> bool:
    return features()["avx2"] and not _numba_overrides_cpu()


def available_paths() -> tuple:
    """Paths this host can run, best first ("portable" always)."""
    out = []
    if has_vnni512():
        out.append("vnni512")
    if has_avx2():
        out.append("avx2")
    out.append("portable")
    return tuple(out)


def gemm_path() -> str:
    """The GEMM path to use: the best available, subject to NQRT_DISABLE_VNNI / NQRT_GEMM_PATH."""
    if os.environ.get("NQRT_DISABLE_VNNI", "") not in ("", "0"):
        return "portable"
    avail = available_paths()
    want = os.environ.get("NQRT_GEMM_PATH", "")
    if want in avail:
        return want
    return avail[0]


def winograd_enabled() -> bool:
    """Whether the avx2 path runs eligible 3x3 convolutions as Winograd F(2x2, 3x3)
    (kernels/winograd.py; bit-identical either way).  NQRT_WINOGRAD=0 turns it off."""
    return os.environ.get("NQRT_WINOGRAD", "") in ("", "1")


def describe() -> str:
    name, _ = llvm_host()
    return f"llvm cpu {name}; features {features()}; paths {available_paths()}; using {gemm_path()}"
