"""The conversion pipeline: ONNX -> float IR -> passes -> calibration -> quantization -> `.nq`.

    report = convert("model.onnx", "model.nq", "calib.npz", calibration_method="percentile")

Calibration streams batch by batch through the float reference executor; only the range
observers keep state, so memory is bounded by one batch's activations plus O(bins) per
tensor.  Nothing is written until the model is fully built, the writer is atomic, and the
input model is never overwritten.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from nqrt import qmath
from nqrt.errors import FormatError, InputError, NqrtError
from nqrt.format.model import NqModel
from nqrt.graph.ir import Graph
from nqrt.quant.calibrate import CALIBRATORS, RangeCollector
from nqrt.quant.quantize import op_counts, quantize_graph
from nqrt.quant.quantizers import check_supported

__all__ = ["ConversionReport", "convert", "quantize_graph", "calibrate_graph"]


@dataclass
class ConversionReport:
    output_path: str
    source_bytes: int
    output_bytes: int
    node_counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    calibration_method: str = "minmax"
    calibration_samples: int = 0

    def summary(self) -> str:
        ops = ", ".join(f"{op} x{c}" for op, c in sorted(self.node_counts.items()))
        ratio = f" ({self.output_bytes / self.source_bytes:.2f}x)" if self.source_bytes else ""
        lines = [f"wrote {self.output_path}: {self.output_bytes} bytes, source {self.source_bytes} bytes{ratio}",
                 f"calibration: {self.calibration_method}, {self.calibration_samples} samples",
                 f"nodes: {ops}"]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Source model
# ---------------------------------------------------------------------------------------

def _read_source(model) -> tuple[bytes, str | None, object]:
    """(serialized bytes, source path or None, what to hand to load_onnx)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InputError(f"cannot read model {path}: {e.strerror or e}") from None
        return data, path, path
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        return data, None, data
    serialize = getattr(model, "SerializeToString", None)
    if serialize is None:
        raise InputError(f"model must be a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    return serialize(), None, model


def _external_data_bytes(data: bytes, path: str | None) -> int:
    """Bytes of the external data files a model file refers to (weights saved next to the
    .onnx file, as PyTorch's dynamo exporter writes them), each file counted once; 0 for a
    model without them or that is not a file."""
    if path is None:
        return 0
    import onnx
    try:
        proto = onnx.load_from_string(data)
    except Exception:            # malformed: load_graph reports it
        return 0
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node for a in n.attribute
                                                if a.type == onnx.AttributeProto.TENSOR]
    files = set()
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            files.update(e.value for e in t.external_data if e.key == "location")
    base = os.path.dirname(os.path.abspath(path))
    return sum(os.path.getsize(os.path.join(base, f)) for f in files
               if os.path.isfile(os.path.join(base, f)))


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def load_graph(model, input_shapes=None, merge_branches: bool = True) -> Graph:
    """Import and optimize; any failure to parse the model is a FormatError."""
    from nqrt.graph.onnx_import import load_onnx
    from nqrt.graph.passes import optimize

    try:
        graph = load_onnx(model)
    except NqrtError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf/onnx raise many types for a bad file
        raise FormatError(f"cannot read the ONNX model: {type(e).__name__}: {e}") from None
    return optimize(graph, input_shapes=input_shapes,
                    skip=() if merge_branches else ("merge_parallel_convs",))


# ---------------------------------------------------------------------------------------
# Calibration data
# ---------------------------------------------------------------------------------------

def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except OSError as e:
        raise InputError(f"cannot read calibration file {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - numpy raises many types for a bad npz
        raise InputError(f"cannot read calibration file {path} as .npz: {e}") from None


def _slices(arrays: Mapping, batch: int, what: str) -> Iterator[dict]:
    lengths = {k: (np.shape(v)[0] if np.ndim(v) else None) for k, v in arrays.items()}
    if any(n is None for n in lengths.values()):
        bad = [k for k, n in lengths.items() if n is None]
        raise InputError(f"{what}: array(s) {', '.join(bad)} have no sample axis (rank 0)")
    if len(set(lengths.values())) > 1:
        raise InputError(f"{what}: arrays have different numbers of samples: "
                         + ", ".join(f"{k}={n}" for k, n in lengths.items()))
    total = next(iter(lengths.values()), 0)
    for i in range(0, total, batch):
        yield {k: v[i:i + batch] for k, v in arrays.items()}


def iter_calibration(calibration, batch_size: int) -> Iterator[dict]:
    """Feed dicts from an .npz path, a mapping of arrays (first axis = samples), or an
    iterable of feed dicts (used as given)."""
    if isinstance(calibration, (str, os.PathLike)):
        path = os.fspath(calibration)
        yield from _slices(_load_npz(path), batch_size, f"calibration file {path}")
    elif isinstance(calibration, Mapping):
        yield from _slices(calibration, batch_size, "calibration data")
    elif isinstance(calibration, Iterable):
        for i, feeds in enumerate(calibration):
            if not isinstance(feeds, Mapping):
                raise InputError(f"calibration item {i} is a {type(feeds).__name__}, "
                                 "expected a dict of input name -> array")
            yield feeds
    else:
        raise InputError("calibration must be a path to an .npz, a dict of arrays, or an "
                         f"iterable of feed dicts; got {type(calibration).__name__}")


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_feeds(graph: Graph, feeds: Mapping, where: str) -> dict[str, np.ndarray]:
    """Validate one calibration batch against the graph inputs; returns float32 arrays."""
    names = [v.name for v in graph.inputs]
    missing = [n for n in names if n not in feeds]
    unknown = [k for k in feeds if k not in names]
    if missing or unknown:
        msg = []
        if missing:
            msg.append(f"missing input(s) {', '.join(missing)}")
        if unknown:
            msg.append(f"unknown input(s) {', '.join(map(str, unknown))}")
        raise InputError(f"{where}: {'; '.join(msg)} (model inputs: {', '.join(names)})")
    out: dict[str, np.ndarray] = {}
    batch = None
    for v in graph.inputs:
        arr = np.asarray(feeds[v.name])
        if arr.dtype.kind != "f":
            raise InputError(f"{where}: input {v.name!r} has dtype {arr.dtype}; expected float32")
        expect = tuple(v.shape) if v.shape is not None else None
        if expect is not None:
            ok = arr.ndim == len(expect) and all(
                not isinstance(d, (int, np.integer)) or i == 0 or arr.shape[i] == d
                for i, d in enumerate(expect))
            if not ok:
                raise InputError(f"{where}: input {v.name!r} has shape {list(arr.shape)}; the model "
                                 f"expects {_fmt_shape(expect)} (first axis = batch)")
        if arr.ndim == 0:
            raise InputError(f"{where}: input {v.name!r} is a scalar; expected a batch axis")
        if batch is not None and arr.shape[0] != batch:
            raise InputError(f"{where}: inputs have different batch sizes ({batch} and {arr.shape[0]})")
        batch = arr.shape[0]
        out[v.name] = arr.astype(np.float32, copy=False)
    return out


def _fixed_batches(graph: Graph, feeds: dict, where: str) -> Iterator[dict]:
    """Split a batch when the model's batch dim is a fixed int (e.g. 1)."""
    fixed = {v.shape[0] for v in graph.inputs if v.shape and isinstance(v.shape[0], (int, np.integer))}
    n = next(iter(feeds.values())).shape[0] if feeds else 0
    if not fixed or n == 0:
        yield feeds
        return
    b0 = int(next(iter(fixed)))
    if len(fixed) > 1 or b0 <= 0 or n % b0:
        raise InputError(f"{where}: the model's batch dimension is fixed at {sorted(fixed)}; "
                         f"a batch of {n} samples cannot be split into such batches")
    for i in range(0, n, b0):
        yield {k: v[i:i + b0] for k, v in feeds.items()}


def calibrate_graph(graph: Graph, calibration, *, method: str = "minmax", percentile: float = 99.99,
                    batch_size: int = 32) -> tuple[RangeCollector, int]:
    """Stream calibration batches through the float executor; returns (collector, samples)."""
    from nqrt.graph import reference

    collector = RangeCollector(method, percentile=percentile)
    samples = 0
    for i, raw in enumerate(iter_calibration(calibration, batch_size)):
        where = f"calibration batch {i}"
        feeds = check_feeds(graph, raw, where)
        for part in _fixed_batches(graph, feeds, where):
            n = next(iter(part.values())).shape[0] if part else 0
            if n == 0:
                continue
            reference.run(graph, part, observe=collector.observe)
            samples += n
    if samples == 0:
        raise InputError("the calibration set is empty: at least one sample is needed")
    return collector, samples


# ---------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------

def convert(model, output_path, calibration, *, calibration_method: str = "minmax",
            percentile: float = 99.99, per_channel: bool = True, batch_size: int = 32,
            input_shapes: dict | None = None, weight_bits: int = 8,
            merge_branches: bool = True) -> ConversionReport:
    """Convert an FP32 ONNX model (path, bytes or ModelProto) to an integer `.nq` file.

    calibration: path to an .npz (arrays keyed by input name, first axis = samples), a dict
    of such arrays, or an iterable of feed dicts (each name -> array with a batch axis).
    weight_bits: 8 (int8 weights in [-127, 127]) or 7 ([-63, 63]: about 6 dB less weight
    SQNR, and on AVX2 CPUs without VNNI the exact vpmaddubsw kernel, ~1.2x faster convs/GEMMs;
    depthwise convs keep 8 bits).
    merge_branches: merge parallel Conv branches of equal groups that an Add sums (RepVGG /
    MobileOne blocks exported without re-parameterization, x + dwconv(x) position encodings)
    into one Conv
    (graph/passes/merge_parallel_convs.py); False keeps each branch quantized on its own.
    Raises FormatError (unreadable model), UnsupportedOpError (every unsupported op at once),
    InputError (bad calibration data or arguments), ConversionError (no valid integer model).
    """
    from nqrt.format.writer import write_nq

    if calibration_method not in CALIBRATORS:
        raise InputError(f"unknown calibration method {calibration_method!r}; "
                         f"known: {', '.join(sorted(CALIBRATORS))}")
    if calibration_method == "percentile" and not (50.0 < float(percentile) <= 100.0):
        raise InputError(f"percentile must be in (50, 100], got {percentile!r}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size!r}")
    if weight_bits not in qmath.WEIGHT_BITS:
        raise InputError(f"weight_bits must be one of {sorted(qmath.WEIGHT_BITS)}, got {weight_bits!r}")
    output_path = os.fspath(output_path)
    data, source_path, handle = _read_source(model)
    if source_path is not None and _same_file(source_path, output_path):
        raise InputError(f"refusing to overwrite the input model {source_path}: choose another output path")

    graph = load_graph(handle, input_shapes, merge_branches=bool(merge_branches))
    source_bytes = len(data) + _external_data_bytes(data, source_path)
    check_supported(graph)
    collector, samples = calibrate_graph(graph, calibration, method=calibration_method,
                                         percentile=percentile, batch_size=int(batch_size))
    nq = quantize_graph(graph, collector.ranges(), per_channel, shapes=collector.shapes,
                        weight_bits=int(weight_bits))
    conv_warnings = list(nq.metadata.get("warnings", []))
    nq.metadata = {
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "source_bytes": source_bytes,
        "source_format": "onnx",
        "calibration": {"method": calibration_method,
                        "percentile": float(percentile) if calibration_method == "percentile" else None,
                        "samples": int(samples)},
        "weights": {"granularity": "per-channel" if per_channel else "per-tensor",
                    "bits": int(weight_bits)},
        "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in collector.minmax().items()
                   if math.isfinite(lo) and math.isfinite(hi)},
        "warnings": conv_warnings,
    }
    write_nq(nq, output_path, forbid_paths=[source_path] if source_path else ())
    for w in conv_warnings:
        warnings.warn(w, stacklevel=2)
    return ConversionReport(
        output_path=output_path, source_bytes=source_bytes, output_bytes=os.path.getsize(output_path),
        node_counts=op_counts(nq), warnings=conv_warnings, calibration_method=calibration_method,
        calibration_samples=samples)


def build_model(model, calibration, **options) -> NqModel:
    """Like `convert` but returns the NqModel instead of writing it (for tests and tools)."""
    per_channel = options.pop("per_channel", True)
    input_shapes = options.pop("input_shapes", None)
    merge_branches = options.pop("merge_branches", True)
    graph = load_graph(_read_source(model)[2], input_shapes, merge_branches=merge_branches)
    check_supported(graph)
    collector, _ = calibrate_graph(graph, calibration, **options)
    return quantize_graph(graph, collector.ranges(), per_channel, shapes=collector.shapes)
