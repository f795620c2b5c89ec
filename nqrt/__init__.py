"""nqrt: CPU INT8 inference toolchain (ONNX -> .nq integer models, Numba integer runtime).

    import nqrt
    report = nqrt.convert("model.onnx", "model.nq", calibration="calib.npz")
    sess = nqrt.load("model.nq")                 # mode="integer" (default) or "simulate"
    outputs = sess.run({"input": x})             # dict: output name -> float32 array

Heavy modules (onnx, numba) are imported on first use, so `import nqrt` stays cheap.
"""

from nqrt.errors import ConversionError, FormatError, InputError, NqrtError, UnsupportedOpError

__version__ = "0.1.0"

__all__ = [
    "ConversionError", "FormatError", "InputError", "NqrtError", "UnsupportedOpError",
    "Session", "convert", "load", "__version__",
]


def convert(model, output_path, calibration, **options):
    """Convert an FP32 ONNX model to a static int8 `.nq` file; see `nqrt.converter.convert`."""
    from nqrt.converter import convert as _convert

    return _convert(model, output_path, calibration, **options)


def load(path, threads=None, mode="integer"):
    """Load a `.nq` model for inference; returns a `nqrt.Session`."""
    from nqrt.runtime.session import Session as _Session

    return _Session.load(path, threads=threads, mode=mode)


def __getattr__(name):
    if name == "Session":
        from nqrt.runtime.session import Session as _Session

        return _Session
    raise AttributeError(f"module 'nqrt' has no attribute {name!r}")
