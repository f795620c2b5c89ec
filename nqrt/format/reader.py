"""`.nq` reader: bytes -> validated NqModel (formats/nq-v1.md, section 5, in order).

1. size limit; msgpack structure scan of the envelope (depth, lengths, str keys, no ext);
   decode with explicit limits; `format`, `version` (major must be 1, a higher minor is
   accepted), then exactly the four envelope keys with their types;
2. sha256(body) against the envelope's digest;
3. the body: structure scan, decode with limits, full document validation
   (nqrt.format.validate);
4. only then numpy arrays are built: read-only views over each tensor's `data` bytes.

Every rejection is a `nqrt.FormatError` with a one-line message; nothing in the file is
executed or followed.
"""

from __future__ import annotations

import hashlib
import os
import stat

import msgpack
import numpy as np

from nqrt.errors import FormatError
from nqrt.format import schema
from nqrt.format.model import NqIO, NqModel, NqNode, NqTensor, Quant
from nqrt.format.validate import check_msgpack, short_repr, validate_document

_MAP_HEADS = frozenset(range(0x80, 0x90)) | {0xde, 0xdf}


def _pairs(pairs: list) -> dict:
    """object_pairs_hook: a dict, rejecting duplicate keys (msgpack would keep the last)."""
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise FormatError(f"duplicate map key {k!r}")
            seen.add(k)
    return d


def _unpack(buf: bytes, what: str):
    """Decode one msgpack value that check_msgpack already accepted, with explicit limits."""
    check_msgpack(buf, what)
    try:
        return msgpack.unpackb(
            buf, raw=False, strict_map_key=True, use_list=True, object_pairs_hook=_pairs,
            max_bin_len=len(buf), max_str_len=len(buf), max_ext_len=0,
            max_array_len=schema.MAX_CONTAINER_LEN, max_map_len=schema.MAX_CONTAINER_LEN)
    except FormatError as e:
        raise FormatError(f"corrupt {what}: {e}") from None
    except Exception as e:          # msgpack's ValueErrors, UnicodeDecodeError, ...
        detail = " ".join(str(e).split()) or type(e).__name__
        raise FormatError(f"corrupt {what}: {detail}") from None


def _load(source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > schema.MAX_FILE_BYTES:
            raise FormatError(f"file is {len(data)} bytes, above the {schema.MAX_FILE_BYTES}-byte limit")
        return data
    try:
        path = os.fspath(source)
    except TypeError:
        raise FormatError(f"cannot read a .nq model from a {type(source).__name__}") from None
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise FormatError(f"cannot read {path!r}: is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"cannot read {path!r}: not a regular file")
        if st.st_size > schema.MAX_FILE_BYTES:
            raise FormatError(f"{path!r} is {st.st_size} bytes, above the "
                              f"{schema.MAX_FILE_BYTES}-byte limit")
        with open(path, "rb") as f:
            data = f.read(schema.MAX_FILE_BYTES + 1)
    except OSError as e:
        raise FormatError(f"cannot read {path!r}: {e.strerror or e}") from None
    if len(data) > schema.MAX_FILE_BYTES:
        raise FormatError(f"{path!r} is above the {schema.MAX_FILE_BYTES}-byte limit")
    return data


def _envelope(data: bytes) -> tuple[tuple[int, int], bytes]:
    """Steps 1-2: return (version, body bytes) of a checked envelope."""
    if not data:
        raise FormatError("not a .nq file: it is empty")
    if data[0] not in _MAP_HEADS:
        raise FormatError("not a .nq file: it does not start with a msgpack map")
    env = _unpack(data, "envelope")
    fmt = env.get("format")
    if fmt != schema.FORMAT_NAME or type(fmt) is not str:
        raise FormatError(f"not a .nq file: envelope format is {short_repr(fmt)}, "
                          f"expected {schema.FORMAT_NAME!r}")
    version = env.get("version")
    if (type(version) is not list or len(version) != 2
            or any(type(v) is not int or v < 0 for v in version)):
        raise FormatError(f"envelope: version must be [major, minor] (two ints >= 0), "
                          f"got {short_repr(version)}"[:200])
    major, minor = version
    if major != schema.VERSION_MAJOR:
        raise FormatError(f"unsupported .nq major version {major} "
                          f"(this reader implements {schema.VERSION_MAJOR})")
    for k in schema.ENVELOPE_KEYS:
        if k not in env:
            raise FormatError(f"envelope: missing key {k!r}")
    for k in env:
        if k not in schema.ENVELOPE_KEYS:
            raise FormatError(f"envelope: unknown key {short_repr(k)}")
    if tuple(env) != schema.ENVELOPE_KEYS:
        raise FormatError(f"envelope: keys must be in the order {', '.join(schema.ENVELOPE_KEYS)}")
    checksum = env["checksum"]
    if type(checksum) is not dict or set(checksum) != set(schema.CHECKSUM_KEYS):
        raise FormatError("envelope: checksum must be a map with exactly the keys 'algo' and 'digest'")
    if checksum["algo"] != schema.CHECKSUM_ALGO:
        raise FormatError(f"envelope: unsupported checksum algorithm {short_repr(checksum['algo'])} "
                          f"(expected {schema.CHECKSUM_ALGO!r})")
    digest = checksum["digest"]
    if type(digest) is not bytes or len(digest) != 32:
        raise FormatError("envelope: checksum digest must be 32 bytes of bin")
    body = env["body"]
    if type(body) is not bytes:
        raise FormatError(f"envelope: body must be bin, got {type(body).__name__}")
    actual = hashlib.sha256(body).digest()
    if actual != digest:
        raise FormatError(f"checksum mismatch: sha256(body) is {actual.hex()[:16]}..., the envelope "
                          f"records {digest.hex()[:16]}... (the file is corrupted)")
    return (major, minor), body


def loads_nq(data: bytes) -> NqModel:
    """Validate `.nq` bytes and build the model (see read_nq)."""
    version, body = _envelope(data)
    if not body or body[0] not in _MAP_HEADS:
        raise FormatError("corrupt body: it is not a msgpack map")
    doc = _unpack(body, "body")
    validate_document(doc, version)
    return _build(doc, version)


def read_nq(source) -> NqModel:
    """Read a `.nq` model from a path or from bytes.  Raises nqrt.FormatError only.

    Constant tensors are returned as read-only numpy views of the decoded data (declared
    dtype, shape, C order); copy them to modify.
    """
    return loads_nq(_load(source))


def _build(doc: dict, version: tuple[int, int]) -> NqModel:
    tensors: dict[str, NqTensor] = {}
    for t in doc["tensors"]:
        q = t["quant"]
        quant = None if q is None else Quant(scale=list(q["scale"]), zero_point=list(q["zero_point"]),
                                             axis=q["axis"])
        data = None
        if t["data"] is not None:
            data = np.frombuffer(t["data"], dtype=schema.DTYPES[t["dtype"]][0]).reshape(t["shape"])
        tensors[t["name"]] = NqTensor(name=t["name"], dtype=t["dtype"], shape=tuple(t["shape"]),
                                      quant=quant, data=data)
    nodes = [NqNode(op=n["op"], inputs=list(n["inputs"]), outputs=list(n["outputs"]),
                    attrs=dict(n["attrs"]), name=n["name"]) for n in doc["nodes"]]
    return NqModel(
        graph_inputs=[NqIO(name=io["name"], shape=tuple(io["shape"]), dtype=io["dtype"])
                      for io in doc["graph_inputs"]],
        graph_outputs=[NqIO(name=io["name"], shape=tuple(io["shape"]), dtype=io["dtype"])
                       for io in doc["graph_outputs"]],
        tensors=tensors,
        nodes=nodes,
        metadata=doc["metadata"],
        producer={k: doc["producer"][k] for k in schema.PRODUCER_KEYS},
        version=tuple(version),
    )
