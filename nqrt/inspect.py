"""Human-readable description of a `.nq` model (used by `nqrt inspect`)."""

from __future__ import annotations

from collections import Counter

from nqrt.format.model import NqModel


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def describe(nq: NqModel, file_size: int | None = None, show_tensors: bool = True) -> str:
    lines: list[str] = []
    producer = nq.producer or {}
    lines.append(f"format: nqrt.nq {nq.version[0]}.{nq.version[1]}  producer: "
                 f"{producer.get('name', '?')} {producer.get('version', '?')}")
    for io in nq.graph_inputs:
        lines.append(f"input:  {io.name} {io.dtype}{_shape(io.shape)}")
    for io in nq.graph_outputs:
        lines.append(f"output: {io.name} {io.dtype}{_shape(io.shape)}")

    counts = Counter(n.op for n in nq.nodes)
    lines.append("ops: " + ", ".join(f"{op} x{c}" for op, c in sorted(counts.items())))

    const_bytes = sum(t.data.nbytes for t in nq.tensors.values() if t.data is not None)
    weights = [t for t in nq.tensors.values() if t.data is not None and t.dtype == "int8"]
    n_params = sum(t.data.size for t in weights)
    meta = nq.metadata or {}
    src = meta.get("source_bytes")
    size_line = f"size: file {_bytes(file_size)}, constants {_bytes(const_bytes)}, int8 weights {n_params} params"
    if isinstance(src, int) and src > 0 and file_size:
        size_line += f"; source model {_bytes(src)} ({file_size / src:.2f}x)"
    lines.append(size_line)
    calib = meta.get("calibration")
    if isinstance(calib, dict):
        lines.append("calibration: " + ", ".join(f"{k}={v}" for k, v in sorted(calib.items())))
    wq = meta.get("weights")
    if isinstance(wq, dict):
        lines.append("weights: " + ", ".join(f"{k}={v}" for k, v in sorted(wq.items())))
    for w in meta.get("warnings", []) or []:
        lines.append(f"warning: {w}")

    if show_tensors:
        lines.append("quantized tensors (dtype shape: scale / zero point):")
        for t in nq.tensors.values():
            if t.quant is None:
                continue
            q = t.quant
            if q.axis is None:
                qs = f"scale {q.scale[0]:.6g} zp {q.zero_point[0]}"
            else:
                qs = (f"per-channel axis {q.axis}: {len(q.scale)} scales in "
                      f"[{min(q.scale):.4g}, {max(q.scale):.4g}], zp 0")
            lines.append(f"  {t.name}: {t.dtype}{_shape(t.shape)}  {qs}")
    return "\n".join(lines)
