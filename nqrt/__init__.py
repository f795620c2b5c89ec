"""nqrt: CPU INT8 inference toolchain (ONNX -> .nq integer models, Numba integer runtime)."""

from nqrt.errors import ConversionError, FormatError, InputError, NqrtError, UnsupportedOpError

__version__ = "0.1.0"

__all__ = [
    "ConversionError", "FormatError", "InputError", "NqrtError", "UnsupportedOpError",
    "__version__",
]
