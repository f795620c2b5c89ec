"""The import seam between the runtime and `nqrt.kernels` (CONTRACT.md names only).

Every kernel the interpreter calls is a module global here, and `xcall_lazy`, the call the
interpreter makes them with (nqrt/kernels/_jit.py: kernel code is compiled separately, on
first use, never into the interpreter).  `FINGERPRINT` hashes the other sources whose code is
frozen into the compiled interpreter (the opcodes, the call mechanism), so that Numba's
on-disk cache of the interpreter, which would otherwise only notice changes of
interpreter.py, is invalidated when one of them changes.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from pathlib import Path

import nqrt.kernels as _pkg   # sets NUMBA_CACHE_DIR before anything is decorated
from nqrt.kernels._jit import xcall_lazy  # noqa: F401  (how the interpreter calls kernels)
from nqrt.kernels.cpu import available_paths, gemm_path  # noqa: F401  (GEMM path choice)

# Kernels that must come from one source together (a packer and the kernels reading its layout).
# QConv / QGemm have one kernel per GEMM path (encoding.PATH_IDS): portable, avx2, vnni512.
GROUPS = (
    ("pack_conv_weights", "conv_scratch_size", "conv2d_u8", "conv2d_u8_avx2", "conv2d_u8_vnni512"),
    ("pack_gemm_weights", "gemm_scratch_size", "gemm_u8", "gemm_u8_avx2", "gemm_u8_vnni512"),
    ("with_requant_table",),            # avx2 QConv / QGemm: the epilogue's plan-time table
    ("merge_groups", "merge_group_weights"),   # x86 grouped QConv: narrow groups run together
    ("with_depthwise_table",),          # x86 depthwise QConv: its requantize records
    # avx2 QConv 3x3 stride 1: Winograd F(2x2, 3x3) weights, epilogue table and scratch
    ("winograd_eligible", "pack_winograd_weights", "with_winograd_table", "winograd_scratch_size",
     "winograd_enabled"),
    ("add_u8", "add_u8_avx2"), ("requant_copy_u8",), ("clip_u8",), ("maxpool_u8",), ("avgpool_u8",),
    ("reduce_mean_u8",), ("transpose_u8",), ("transpose_f32",), ("quantize_f32",),
    ("dequantize_u8",), ("softmax_f32",), ("lrn_f32",), ("layernorm_f32", "qlayernorm_u8"), ("copy_cols_f32",), ("quantize_transpose_f32",), ("dequantize_transpose_u8",),
    # CNN extension ops: run-time kernels with their plan-time geometry helpers
    ("lut_u8", "lut_u8_avx2"), ("mul_u8", "mul_u8_avx2"), ("slice_u8", "slice_args", "slice_range"), ("pad_u8", "pad_args"),
    ("resize_nearest_u8", "resize_args", "resize_geometry", "pad_border_args"),
    ("resize_linear_u8", "resize_linear_args"), ("resize_cubic_u8", "resize_cubic_args"),
    ("matmul_u8", "matmul_u8_avx2", "matmul_scratch_size"),
    ("qsoftmax_u8",), ("reduce_max_u8",), ("lut2_u8",),
)


def _kernel_modules():
    mods = [_pkg]
    for info in pkgutil.iter_modules(_pkg.__path__):
        if not info.name.startswith("_"):
            mods.append(importlib.import_module(f"{_pkg.__name__}.{info.name}"))
    return mods


def _resolve():
    found = {}
    mods = _kernel_modules()
    for group in GROUPS:
        impl = {}
        for name in group:
            for m in mods:
                if hasattr(m, name):
                    impl[name] = getattr(m, name)
                    break
        missing = [name for name in group if name not in impl]
        if missing:
            raise ImportError(f"nqrt.kernels lacks {', '.join(missing)} (CONTRACT.md)")
        found.update(impl)
    sources = [Path(_pkg.__file__).parent / "_jit.py",        # the xcall_lazy code
               Path(__file__).parent / "encoding.py"]          # the opcodes
    h = hashlib.sha256()
    for p in sources:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return found, h.hexdigest()


_found, FINGERPRINT = _resolve()
globals().update(_found)
