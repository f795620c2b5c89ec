"""`.nq` writer (formats/nq-v1.md, sections 1-2): NqModel -> deterministic bytes -> atomic file.

Determinism: the same model always gives the same bytes.  Map keys are emitted in the
order of `schema.*_KEYS`; `attrs` and `metadata` maps (recursively) in sorted key order;
tensors and nodes in model order.  Floats are msgpack float64 except `quant.scale`
entries, which are msgpack float32 (0xca): msgpack-python's `use_single_float` is a
per-Packer switch, so the body is built by concatenating msgpack fragments, the scale
arrays packed by a float32 Packer and everything else by a float64 one (msgpack is a
stream format, so the concatenation is one well-formed value).

Validation: the writer converts the model to the plain document form and runs
`nqrt.format.validate.validate_document` on it, exactly as the reader does, so it never
writes a file the reader rejects.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import msgpack
import numpy as np

from nqrt.errors import FormatError
from nqrt.format import schema
from nqrt.format.model import NqModel
from nqrt.format.validate import check_msgpack, validate_document

_P64 = msgpack.Packer(use_bin_type=True, use_single_float=False, autoreset=True)
_P32 = msgpack.Packer(use_bin_type=True, use_single_float=True, autoreset=True)


# ---------------------------------------------------------------------------------------
# NqModel -> plain document (Python types only; numpy scalars accepted and converted)
# ---------------------------------------------------------------------------------------

def _scalar(v, where: str):
    """Python int/float/str/... for numpy scalars; plain values unchanged."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def _plain(v, where: str, depth: int = 0):
    """Attribute/metadata value as plain msgpack-able Python, maps sorted by key."""
    if depth > schema.MAX_MSGPACK_DEPTH:
        raise FormatError(f"{where}: nested deeper than {schema.MAX_MSGPACK_DEPTH} levels")
    v = _scalar(v, where)
    if v is None or type(v) in (bool, int, float, str, bytes):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(e, where, depth + 1) for e in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, dict):
        for k in v:
            if type(k) is not str:
                raise FormatError(f"{where}: map key {k!r} is not a str")
        return {k: _plain(v[k], f"{where}.{k}", depth + 1) for k in sorted(v)}
    raise FormatError(f"{where}: cannot encode a {type(v).__name__} value")


def _shape(shape, where: str) -> list:
    try:
        dims = [_scalar(d, where) for d in shape]
    except TypeError:
        raise FormatError(f"{where}: shape must be a sequence, got {type(shape).__name__}") from None
    return dims


def _data_bytes(t, where: str) -> bytes | None:
    if t.data is None:
        return None
    if t.dtype not in schema.DTYPES:
        raise FormatError(f"{where}: unknown dtype {t.dtype!r}")
    expected = np.dtype(schema.DTYPES[t.dtype][0])
    arr = np.asarray(t.data)
    if arr.dtype.newbyteorder("=") != expected.newbyteorder("="):
        raise FormatError(f"{where}: data dtype {arr.dtype} does not match declared dtype {t.dtype}")
    shape = _shape(t.shape, where)
    if list(arr.shape) != shape:
        raise FormatError(f"{where}: data shape {list(arr.shape)} does not match declared shape {shape}")
    return np.ascontiguousarray(arr, dtype=expected).tobytes()


def _quant(q, where: str):
    if q is None:
        return None
    scale = [_scalar(s, where) for s in q.scale]
    return {
        "scale": [float(s) if type(s) is int else s for s in scale],
        "zero_point": [_scalar(z, where) for z in q.zero_point],
        "axis": _scalar(q.axis, where),
    }


def model_to_document(model: NqModel) -> dict:
    """The plain document (section 2) a model serializes to; validated by the caller."""
    if tuple(model.version)[:1] != (schema.VERSION_MAJOR,):
        raise FormatError(f"model.version {tuple(model.version)} is not a {schema.VERSION_MAJOR}.x "
                          f"version (this writer writes {schema.VERSION_MAJOR}.{schema.VERSION_MINOR})")
    producer = model.producer if isinstance(model.producer, dict) else {}
    tensors = []
    for key, t in model.tensors.items():
        where = f"tensor {t.name!r}"
        if key != t.name:
            raise FormatError(f"{where}: stored under key {key!r} in model.tensors")
        tensors.append({
            "name": t.name,
            "dtype": t.dtype,
            "shape": _shape(t.shape, where),
            "quant": _quant(t.quant, where),
            "data": _data_bytes(t, where),
        })
    nodes = []
    for i, n in enumerate(model.nodes):
        where = f"node {n.name!r} ({n.op})"
        if not isinstance(n.attrs, dict):
            raise FormatError(f"{where}: attrs must be a dict")
        nodes.append({
            "op": n.op,
            "name": n.name,
            "inputs": list(n.inputs),
            "outputs": list(n.outputs),
            "attrs": _plain(n.attrs, f"{where}: attrs", depth=3),
        })
    if not isinstance(model.metadata, dict):
        raise FormatError("metadata must be a dict")
    return {
        "producer": {"name": producer.get("name"), "version": producer.get("version"),
                     **{k: v for k, v in producer.items() if k not in schema.PRODUCER_KEYS}},
        "graph_inputs": [{"name": io.name, "dtype": io.dtype, "shape": _shape(io.shape, io.name)}
                         for io in model.graph_inputs],
        "graph_outputs": [{"name": io.name, "dtype": io.dtype, "shape": _shape(io.shape, io.name)}
                          for io in model.graph_outputs],
        "tensors": tensors,
        "nodes": nodes,
        "metadata": _plain(model.metadata, "metadata", depth=1),
    }


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------

def _encode_document(doc: dict) -> bytes:
    """msgpack body: dict insertion order everywhere, quant.scale as float32."""
    pack = _P64.pack
    out = [_P64.pack_map_header(len(doc))]
    for key, value in doc.items():
        out.append(pack(key))
        if key != "tensors":
            out.append(pack(value))
            continue
        out.append(_P64.pack_array_header(len(value)))
        for t in value:
            out.append(_P64.pack_map_header(len(t)))
            for k, v in t.items():
                out.append(pack(k))
                if k != "quant" or v is None:
                    out.append(pack(v))
                    continue
                out.append(_P64.pack_map_header(len(v)))
                for qk, qv in v.items():
                    out.append(pack(qk))
                    out.append(_P32.pack(qv) if qk == "scale" else pack(qv))
    return b"".join(out)


def dumps_nq(model: NqModel) -> bytes:
    """Validate `model` and return its `.nq` bytes (deterministic).  Raises FormatError."""
    doc = model_to_document(model)
    version = (schema.VERSION_MAJOR, schema.VERSION_MINOR)
    validate_document(doc, version)
    try:
        body = _encode_document(doc)
    except (ValueError, TypeError, OverflowError) as e:   # e.g. a str that is not UTF-8
        raise FormatError(f"cannot encode the document: {e}") from None
    check_msgpack(body, "body")                            # depth/length limits of section 6
    if len(body) > schema.MAX_FILE_BYTES - 256:
        raise FormatError(f"document is {len(body)} bytes, above the {schema.MAX_FILE_BYTES}-byte file limit")
    pack = _P64.pack
    return b"".join([
        _P64.pack_map_header(len(schema.ENVELOPE_KEYS)),
        pack("format"), pack(schema.FORMAT_NAME),
        pack("version"), pack(list(version)),
        pack("checksum"), pack({"algo": schema.CHECKSUM_ALGO, "digest": hashlib.sha256(body).digest()}),
        pack("body"), pack(body),
    ])


# ---------------------------------------------------------------------------------------
# Atomic file write
# ---------------------------------------------------------------------------------------

def _same_path(a: str, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(os.fspath(b)))


def write_nq(model: NqModel, path, *, forbid_paths=()) -> None:
    """Write `model` to `path` atomically.

    The model is validated and serialized first; the bytes go to a temporary file in the
    target's directory, which is fsynced and then `os.replace`d onto `path`.  On any
    failure the temporary file is removed and an existing `path` is left untouched.
    `forbid_paths` (e.g. the converter's input model) may not be the output.
    """
    path = os.fspath(path)
    for p in forbid_paths:
        if p is not None and _same_path(path, p):
            raise FormatError(f"output path {path!r} is the input model")
    data = dumps_nq(model)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(directory)
    except OSError as e:
        raise FormatError(f"cannot write {path!r}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _fsync_dir(directory: str) -> None:
    """Persist the rename (POSIX); best effort where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
