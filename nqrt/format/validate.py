"""Validation of `.nq` documents (formats/nq-v1.md, sections 5 and 6), shared by reader and writer.

Two layers, both run before anything is built from the bytes:

* `check_msgpack(buf, what)` walks one msgpack value *without decoding it*: it bounds
  nesting depth and container lengths (a container may not declare more items than bytes
  remain), requires str map keys and rejects ext types.  Run on raw bytes before
  `msgpack.unpackb`, so a hostile header can never make the decoder allocate or recurse.
* `validate_document(doc, version)` checks the decoded document (plain dicts, lists, str,
  int, float, bytes, None) field by field: types, ranges, names, the op table of
  `schema.ALL_OPS`, topological order, and the per-op constraints of section 4.  The writer runs
  the same function on the document it is about to encode, so it never writes a file the
  reader rejects.

Every rejection is a `FormatError` with a one-line message naming the offending item.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from nqrt.errors import FormatError
from nqrt.format import schema
from nqrt.format.schema import ALL_OPS, DTYPE_RANGES, DTYPES, MATMUL_K_MAX

_INT64_RANGE = DTYPE_RANGES["int64"]


# ---------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------

def _fail(message: str):
    raise FormatError(message)


def short_repr(name) -> str:
    """repr of a (possibly hostile) name, kept short and on one line."""
    if isinstance(name, str) and len(name) > 64:
        name = name[:61] + "..."
    return repr(name)


_q = short_repr


def _kind(value) -> str:
    """msgpack-flavoured type name for messages."""
    return {dict: "map", list: "array", str: "str", bytes: "bin", int: "int", float: "float",
            bool: "bool", type(None): "nil"}.get(type(value), type(value).__name__)


def _shape_str(dtype: str, shape) -> str:
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


# ---------------------------------------------------------------------------------------
# msgpack structure scan (section 6 limits, enforced before decoding)
# ---------------------------------------------------------------------------------------

# First byte 0xc0..0xdf -> (category, size of the length field or of the payload).
#   "s": scalar with a fixed payload of n bytes;  "b": bin/str with an n-byte length;
#   "a"/"m": array/map with an n-byte item count;  "x": ext (forbidden);  "?": never used.
_MSGPACK_HEADS = {
    0xc0: ("s", 0), 0xc1: ("?", 0), 0xc2: ("s", 0), 0xc3: ("s", 0),
    0xc4: ("b", 1), 0xc5: ("b", 2), 0xc6: ("b", 4),
    0xc7: ("x", 0), 0xc8: ("x", 0), 0xc9: ("x", 0),
    0xca: ("s", 4), 0xcb: ("s", 8),
    0xcc: ("s", 1), 0xcd: ("s", 2), 0xce: ("s", 4), 0xcf: ("s", 8),
    0xd0: ("s", 1), 0xd1: ("s", 2), 0xd2: ("s", 4), 0xd3: ("s", 8),
    0xd4: ("x", 0), 0xd5: ("x", 0), 0xd6: ("x", 0), 0xd7: ("x", 0), 0xd8: ("x", 0),
    0xd9: ("t", 1), 0xda: ("t", 2), 0xdb: ("t", 4),
    0xdc: ("a", 2), 0xdd: ("a", 4), 0xde: ("m", 2), 0xdf: ("m", 4),
}


def check_msgpack(buf: bytes, what: str,
                  max_depth: int = schema.MAX_MSGPACK_DEPTH,
                  max_len: int = schema.MAX_CONTAINER_LEN) -> None:
    """Check that `buf` is exactly one well-formed msgpack value within the section 6 limits.

    Depth counts containers: the outermost map is depth 1.  A container declaring n items
    (2n for a map) needs at least that many remaining bytes, so the total number of items a
    decoder will allocate is bounded by len(buf).
    """
    end = len(buf)
    pos = 0
    stack: list[list] = []          # [items left, is_map] for each open, non-empty container
    while True:
        if pos >= end:
            _fail(f"corrupt {what}: truncated at byte {pos}")
        head = buf[pos]
        at = pos
        is_key = False
        if stack:
            top = stack[-1]
            is_key = top[1] and top[0] % 2 == 0
            top[0] -= 1
        pos += 1
        count = -1                  # item count when the value is a container
        is_map = False
        is_str = False
        if head <= 0x7f or head >= 0xe0:                    # fixint
            pass
        elif head <= 0x8f:                                  # fixmap
            count, is_map = head & 0x0F, True
        elif head <= 0x9f:                                  # fixarray
            count = head & 0x0F
        elif head <= 0xbf:                                  # fixstr
            pos += head & 0x1F
            is_str = True
        else:
            cat, n = _MSGPACK_HEADS[head]
            if cat == "x":
                _fail(f"corrupt {what}: msgpack ext type at byte {at} (not allowed in .nq)")
            if cat == "?":
                _fail(f"corrupt {what}: invalid msgpack byte 0xc1 at byte {at}")
            if pos + n > end and cat != "s":
                _fail(f"corrupt {what}: truncated at byte {end}")
            if cat == "s":
                pos += n
            else:
                length = int.from_bytes(buf[pos:pos + n], "big")
                pos += n
                if cat in ("b", "t"):
                    pos += length
                    is_str = cat == "t"
                else:
                    count, is_map = length, cat == "m"
        if is_key and not is_str:
            _fail(f"corrupt {what}: map key at byte {at} is not a str")
        if pos > end:
            _fail(f"corrupt {what}: truncated at byte {end} (value at byte {at} needs {pos - end} more)")
        if count >= 0:
            if len(stack) + 1 > max_depth:
                _fail(f"corrupt {what}: msgpack nesting deeper than {max_depth} at byte {at}")
            if count > max_len:
                _fail(f"corrupt {what}: container at byte {at} declares {count} items "
                      f"(limit {max_len})")
            items = 2 * count if is_map else count
            if items > end - pos:
                _fail(f"corrupt {what}: container at byte {at} declares {count} items "
                      f"but only {end - pos} bytes remain")
            if items:
                stack.append([items, is_map])
        while stack and stack[-1][0] == 0:
            stack.pop()
        if not stack:
            break
    if pos != end:
        _fail(f"corrupt {what}: {end - pos} extra bytes after the msgpack value")


# ---------------------------------------------------------------------------------------
# Field helpers
# ---------------------------------------------------------------------------------------

def _map(value, keys: tuple, where: str, tolerant: bool = False) -> dict:
    """A map with exactly `keys` (unknown keys allowed only when `tolerant`)."""
    if not isinstance(value, dict):
        _fail(f"{where} must be a map, got {_kind(value)}")
    for k in keys:
        if k not in value:
            _fail(f"{where}: missing key {k!r}")
    if not tolerant:
        for k in value:
            if k not in keys:
                _fail(f"{where}: unknown key {_q(k)}")
    return value


def _list(value, where: str, max_len: int = schema.MAX_CONTAINER_LEN) -> list:
    if not isinstance(value, list):
        _fail(f"{where} must be an array, got {_kind(value)}")
    if len(value) > max_len:
        _fail(f"{where} has {len(value)} entries (limit {max_len})")
    return value


def _int(value, where: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        _fail(f"{where} must be an int, got {_kind(value)}")
    if not lo <= value <= hi:
        _fail(f"{where} = {value} is out of range [{lo}, {hi}]")
    return value


def _str(value, where: str, nonempty: bool = False) -> str:
    if type(value) is not str:
        _fail(f"{where} must be a str, got {_kind(value)}")
    if nonempty and not value:
        _fail(f"{where} must not be empty")
    if len(value) > schema.MAX_NAME_LEN or len(value.encode("utf-8", "surrogatepass")) > schema.MAX_NAME_LEN:
        _fail(f"{where} is longer than {schema.MAX_NAME_LEN} bytes")
    return value


def is_float32(value: float) -> bool:
    """True when the Python float is exactly a (finite or not) IEEE binary32 value."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0] == value
    except (OverflowError, struct.error):
        return False


def _dims(value, where: str) -> list:
    shape = _list(value, f"{where}: shape", schema.MAX_RANK)
    for i, d in enumerate(shape):
        if type(d) is str:
            _str(d, f"{where}: shape[{i}] (symbol)", nonempty=True)
        elif type(d) is int:
            _int(d, f"{where}: shape[{i}]", 0, schema.MAX_DIM)
        else:
            _fail(f"{where}: shape[{i}] must be an int or a str symbol, got {_kind(d)}")
    return shape


# ---------------------------------------------------------------------------------------
# Document
# ---------------------------------------------------------------------------------------

def validate_document(doc, version: tuple[int, int] = (schema.VERSION_MAJOR, schema.VERSION_MINOR)) -> None:
    """Raise FormatError unless `doc` is a valid v1 document (section 5, items 3-6).

    `version` is the file's (major, minor); unknown keys of extensible maps are tolerated
    only when its minor is higher than this reader's.
    """
    newer = tuple(version) > (schema.VERSION_MAJOR, schema.VERSION_MINOR)
    _map(doc, schema.DOCUMENT_KEYS, "document", tolerant=newer)
    producer = _map(doc["producer"], schema.PRODUCER_KEYS, "producer")
    for k in schema.PRODUCER_KEYS:
        _str(producer[k], f"producer.{k}")
    if not isinstance(doc["metadata"], dict):
        _fail(f"metadata must be a map, got {_kind(doc['metadata'])}")

    tensors = _check_tensors(doc["tensors"], newer)
    graph_inputs = _check_io(doc["graph_inputs"], "graph_inputs", "graph input", tensors)
    produced = _check_nodes(doc["nodes"], tensors, set(graph_inputs), version, newer)

    for name, t in tensors.items():
        if t["data"] is None and name not in graph_inputs and name not in produced:
            _fail(f"tensor {_q(name)}: run-time tensor (data nil) is neither a graph input "
                  f"nor produced by a node")
    graph_outputs = _check_io(doc["graph_outputs"], "graph_outputs", "graph output", tensors)
    if not graph_outputs:
        _fail("graph_outputs is empty: the graph has no outputs")
    for name in graph_outputs:
        if name not in produced:
            _fail(f"graph output {_q(name)} is not produced by any node")


def _check_tensors(value, newer: bool) -> dict:
    tensors: dict[str, dict] = {}
    for i, t in enumerate(_list(value, "tensors", schema.MAX_TENSORS)):
        _map(t, schema.TENSOR_KEYS, f"tensors[{i}]", tolerant=newer)
        name = _str(t["name"], f"tensors[{i}].name", nonempty=True)
        where = f"tensor {_q(name)}"
        if name in tensors:
            _fail(f"duplicate tensor name {_q(name)}")
        dtype = t["dtype"]
        if type(dtype) is not str or dtype not in DTYPES:
            _fail(f"{where}: unknown dtype {_q(dtype)}")
        shape = _dims(t["shape"], where)
        data = t["data"]
        if data is not None:
            if type(data) is not bytes:
                _fail(f"{where}: data must be bin or nil, got {_kind(data)}")
            for d in shape:
                if type(d) is str:
                    _fail(f"{where}: constant tensor has symbolic dim {_q(d)}")
            expected = math.prod(shape) * DTYPES[dtype][1]
            if len(data) != expected:
                _fail(f"{where}: data has {len(data)} bytes, expected {expected} for "
                      f"{_shape_str(dtype, shape)}")
            if dtype == "int8" and expected:
                lowest = int(np.frombuffer(data, dtype=np.int8).min())
                if lowest == -128:
                    _fail(f"{where}: int8 weight value -128 (weights must be in [-127, 127])")
        _check_quant(t["quant"], dtype, shape, where)
        if data is None and dtype == "uint8" and (t["quant"] is None or t["quant"]["axis"] is not None):
            _fail(f"{where}: run-time uint8 tensor needs per-tensor quant")
        tensors[name] = t
    return tensors


def _check_quant(q, dtype: str, shape: list, where: str) -> None:
    if q is None:
        return
    _map(q, schema.QUANT_KEYS, f"{where}: quant")
    if dtype not in schema.QUANTIZABLE_DTYPES:
        _fail(f"{where}: a {dtype} tensor cannot have quant (must be nil)")
    scale = _list(q["scale"], f"{where}: quant.scale")
    zero_point = _list(q["zero_point"], f"{where}: quant.zero_point")
    axis = q["axis"]
    if axis is None:
        expected = 1
        layout = "per-tensor"
    else:
        _int(axis, f"{where}: quant.axis", 0, max(len(shape) - 1, 0))
        if not shape:
            _fail(f"{where}: quant.axis {axis} on a rank-0 tensor")
        expected = shape[axis]
        if type(expected) is str:
            _fail(f"{where}: per-channel quant along symbolic dim {_q(expected)}")
        layout = f"per-channel along axis {axis} of {_shape_str(dtype, shape)}"
    if len(scale) != expected:
        _fail(f"{where}: quant has {len(scale)} scales, expected {expected} ({layout})")
    if len(zero_point) != len(scale):
        _fail(f"{where}: quant has {len(zero_point)} zero points for {len(scale)} scales")
    if not scale:
        _fail(f"{where}: quant has no scales")
    for i, s in enumerate(scale):
        if type(s) is not float:
            _fail(f"{where}: quant.scale[{i}] must be a float, got {_kind(s)}")
        if not (math.isfinite(s) and s > 0.0):
            _fail(f"{where}: quant.scale[{i}] = {s!r} must be finite and > 0")
        if not is_float32(s):
            _fail(f"{where}: quant.scale[{i}] = {s!r} is not a float32 value")
    lo, hi = DTYPE_RANGES[dtype]
    for i, z in enumerate(zero_point):
        _int(z, f"{where}: quant.zero_point[{i}]", lo, hi)


def _check_io(value, key: str, label: str, tensors: dict) -> dict:
    seen: dict[str, dict] = {}
    for i, io in enumerate(_list(value, key, schema.MAX_TENSORS)):
        _map(io, schema.IO_KEYS, f"{key}[{i}]")
        name = _str(io["name"], f"{key}[{i}].name", nonempty=True)
        where = f"{label} {_q(name)}"
        if name in seen:
            _fail(f"duplicate {label} {_q(name)}")
        if io["dtype"] != "float32":
            _fail(f"{where}: dtype must be 'float32', got {_q(io['dtype'])}")
        shape = _dims(io["shape"], where)
        t = tensors.get(name)
        if t is None:
            _fail(f"{where} is not in tensors")
        if t["dtype"] != "float32" or t["data"] is not None or t["quant"] is not None:
            _fail(f"{where}: its tensor must be a run-time float32 tensor without quant")
        if shape != t["shape"]:
            _fail(f"{where}: shape {shape} differs from the tensor's {t['shape']}")
        seen[name] = io
    return seen


def _check_nodes(value, tensors: dict, graph_inputs: set, version, newer: bool) -> dict:
    """Check every node in order; return {run-time tensor name: producing node index}."""
    produced: dict[str, int] = {}
    available = set(graph_inputs)
    for i, node in enumerate(_list(value, "nodes", schema.MAX_NODES)):
        _map(node, schema.NODE_KEYS, f"nodes[{i}]", tolerant=newer)
        op = _str(node["op"], f"nodes[{i}].op", nonempty=True)
        name = _str(node["name"], f"nodes[{i}].name")
        shown = op if op.isprintable() and len(op) <= 64 else _q(op)
        where = f"node {_q(name)} ({shown})" if name else f"nodes[{i}] ({shown})"
        spec = ALL_OPS.get(op)
        if spec is None:
            if newer:
                _fail(f"{where}: op {_q(op)} is unknown to this reader (the file is version "
                      f"{version[0]}.{version[1]}, this reader implements "
                      f"{schema.VERSION_MAJOR}.{schema.VERSION_MINOR})")
            _fail(f"{where}: unknown op {_q(op)}")
        inputs = _list(node["inputs"], f"{where}: inputs", schema.MAX_NODE_INPUTS)
        outputs = _list(node["outputs"], f"{where}: outputs", schema.MAX_NODE_INPUTS)
        for j, x in enumerate(inputs):
            _str(x, f"{where}: inputs[{j}]", nonempty=True)
        for j, y in enumerate(outputs):
            _str(y, f"{where}: outputs[{j}]", nonempty=True)

        # Input and output counts and roles (schema.ALL_OPS).
        n_roles = len(spec.inputs)
        if spec.variadic:
            if len(inputs) < n_roles:
                _fail(f"{where}: expected at least {n_roles} inputs, got {len(inputs)}")
        elif not n_roles - spec.optional_inputs <= len(inputs) <= n_roles:
            _fail(f"{where}: expected {n_roles} inputs, got {len(inputs)}")
        if len(outputs) != len(spec.outputs):
            _fail(f"{where}: expected {len(spec.outputs)} outputs, got {len(outputs)}")
        ins = []
        for j, x in enumerate(inputs):
            role, kind, dtype = spec.inputs[min(j, n_roles - 1)]
            label = f"{where}: input {role} {_q(x)}"
            t = tensors.get(x)
            if t is None:
                _fail(f"{label} is not in tensors")
            if kind == "const":
                if t["data"] is None:
                    _fail(f"{label} must be a constant tensor")
            elif t["data"] is not None:
                if kind != "any":
                    _fail(f"{label} must be a run-time tensor, got a constant")
            elif x not in available:
                _fail(f"{label} is read before it is produced")
            if t["dtype"] != dtype:
                _fail(f"{label} has dtype {t['dtype']}, expected {dtype}")
            ins.append(t)
        outs = []
        for j, y in enumerate(outputs):
            label = f"{where}: output {_q(y)}"
            t = tensors.get(y)
            if t is None:
                _fail(f"{label} is not in tensors")
            if t["data"] is not None:
                _fail(f"{label} is a constant tensor")
            if y in graph_inputs:
                _fail(f"{label} is a graph input")
            if y in produced or y in outputs[:j]:
                _fail(f"{label} is produced more than once")
            if t["dtype"] != spec.outputs[j]:
                _fail(f"{label} has dtype {t['dtype']}, expected {spec.outputs[j]}")
            outs.append(t)

        attrs = _check_attrs(node["attrs"], spec, where)
        if op in schema.SAME_SCALE_OPS and outs[0]["quant"] != ins[0]["quant"]:
            _fail(f"{where}: output {_q(outs[0]['name'])} must have the input's quant "
                  f"(same scale and zero point)")
        _OP_CHECKS[op](where, ins, outs, attrs)
        for y in outputs:
            produced[y] = i
            available.add(y)
    return produced


def _check_attrs(value, spec, where: str) -> dict:
    if not isinstance(value, dict):
        _fail(f"{where}: attrs must be a map, got {_kind(value)}")
    for key in value:
        if type(key) is not str:
            _fail(f"{where}: attribute name {_q(key)} is not a str")
        if key not in spec.attrs:
            _fail(f"{where}: unknown attribute {_q(key)}")
    for key, (kind, required) in spec.attrs.items():
        if key not in value:
            if required:
                _fail(f"{where}: missing attribute {key!r}")
            continue
        v = value[key]
        label = f"{where}: attribute {key}"
        lo, hi = schema.ATTR_RANGES.get(key, _INT64_RANGE)
        if kind == "int":
            _int(v, label, lo, hi)
        elif kind == "ints":
            for j, e in enumerate(_list(v, label)):
                _int(e, f"{label}[{j}]", lo, hi)
        elif kind == "float":
            if type(v) is not float:
                _fail(f"{label} must be a float, got {_kind(v)}")
        elif kind == "floats":
            for j, e in enumerate(_list(v, label)):
                if type(e) is not float:
                    _fail(f"{label}[{j}] must be a float, got {_kind(e)}")
        elif kind == "str":
            _str(v, label)
    return value


# ---------------------------------------------------------------------------------------
# Per-op constraints (section 4).  Dims that are symbols are checked at run time.
# ---------------------------------------------------------------------------------------

def _act(where: str, attrs: dict) -> None:
    if attrs["act_min"] > attrs["act_max"]:
        _fail(f"{where}: act_min {attrs['act_min']} > act_max {attrs['act_max']}")


def _rank(where: str, t: dict, ranks) -> int:
    r = len(t["shape"])
    if r not in ranks:
        _fail(f"{where}: {_q(t['name'])} has rank {r}, expected {' or '.join(map(str, ranks))}")
    return r


def _same_rank(where: str, y: dict, r: int) -> None:
    if len(y["shape"]) != r:
        _fail(f"{where}: output {_q(y['name'])} has rank {len(y['shape'])}, expected {r}")


def _length(where: str, attrs: dict, key: str, n: int) -> list:
    v = attrs[key]
    if len(v) != n:
        _fail(f"{where}: attribute {key} has {len(v)} values, expected {n}")
    return v


def _axis(where: str, key: str, axis: int, r: int, inclusive_end: bool = False) -> int:
    hi = r if inclusive_end else r - 1
    if not -r <= axis <= hi:
        _fail(f"{where}: attribute {key} = {axis} is out of range [{-r}, {hi}] for rank {r}")
    return axis + r if axis < 0 else axis


def _requant_consts(where: str, mult: dict, shift: dict, lengths: tuple) -> None:
    """Requantization constants: int32 [L] with L in `lengths`, M0 in range, n in [1, 62]."""
    for t, (lo, hi) in ((mult, (0, schema.MAX_MULTIPLIER)), (shift, schema.SHIFT_RANGE)):
        label = f"{where}: {_q(t['name'])}"
        if t["quant"] is not None:
            _fail(f"{label} is a requantization constant and must have quant nil")
        if len(t["shape"]) != 1 or t["shape"][0] not in lengths:
            want = " or ".join(f"[{n}]" for n in dict.fromkeys(lengths))
            _fail(f"{label} has shape {t['shape']}, expected {want}")
        values = np.frombuffer(t["data"], dtype=DTYPES["int32"][0])
        bad = np.flatnonzero((values < lo) | (values > hi))
        if bad.size:
            _fail(f"{label}[{bad[0]}] = {int(values[bad[0]])} is out of range [{lo}, {hi}]")


def _weights_and_bias(where: str, w: dict, bias: dict, m: int) -> None:
    for t, what in ((w, "weights"), (bias, "bias")):
        q = t["quant"]
        label = f"{where}: {what} {_q(t['name'])}"
        if q is None:
            _fail(f"{label} must have quant (symmetric, zero point 0)")
        if q["axis"] not in (None, 0):
            _fail(f"{label}: quant.axis must be nil or 0, got {q['axis']}")
        if any(z != 0 for z in q["zero_point"]):
            _fail(f"{label}: zero points must be 0 (symmetric)")
    if bias["shape"] != [m]:
        _fail(f"{where}: bias {_q(bias['name'])} has shape {bias['shape']}, expected [{m}]")


def _check_qconv(where, ins, outs, attrs):
    x, w, bias, mult, shift = ins
    r = _rank(where, x, (3, 4))
    _rank(where, w, (r,))
    sp = r - 2
    _length(where, attrs, "strides", sp)
    _length(where, attrs, "dilations", sp)
    _length(where, attrs, "pads", 2 * sp)
    m, cg, *kernel = w["shape"]
    if m < 1 or cg < 1 or min(kernel) < 1:
        _fail(f"{where}: weights {_q(w['name'])} have an empty dim: {w['shape']}")
    group = attrs["group"]
    if m % group:
        _fail(f"{where}: group {group} does not divide the {m} output channels")
    c = x["shape"][1]
    if type(c) is int:
        if c % group:
            _fail(f"{where}: group {group} does not divide the {c} input channels")
        if c != cg * group:
            _fail(f"{where}: weights expect {cg * group} input channels (C/group = {cg}), "
                  f"x has {c}")
    k = cg * math.prod(kernel)
    if k > schema.MAX_DOT_LENGTH:
        _fail(f"{where}: dot-product length K = {k} exceeds {schema.MAX_DOT_LENGTH}")
    _weights_and_bias(where, w, bias, m)
    _requant_consts(where, mult, shift, (m, 1))
    y = outs[0]
    _same_rank(where, y, r)
    if type(y["shape"][1]) is int and y["shape"][1] != m:
        _fail(f"{where}: output {_q(y['name'])} has {y['shape'][1]} channels, expected {m}")
    _act(where, attrs)


def _check_qgemm(where, ins, outs, attrs):
    x, w, bias, mult, shift = ins
    r = len(x["shape"])
    if r == 0:
        _fail(f"{where}: x {_q(x['name'])} must have rank >= 1")
    _rank(where, w, (2,))
    m, k = w["shape"]
    if m < 1 or k < 1:
        _fail(f"{where}: weights {_q(w['name'])} have an empty dim: {w['shape']}")
    if k > schema.MAX_DOT_LENGTH:
        _fail(f"{where}: dot-product length K = {k} exceeds {schema.MAX_DOT_LENGTH}")
    if type(x["shape"][-1]) is int and x["shape"][-1] != k:
        _fail(f"{where}: x has last dim {x['shape'][-1]}, weights expect K = {k}")
    _weights_and_bias(where, w, bias, m)
    _requant_consts(where, mult, shift, (m, 1))
    y = outs[0]
    _same_rank(where, y, r)
    if type(y["shape"][-1]) is int and y["shape"][-1] != m:
        _fail(f"{where}: output {_q(y['name'])} has last dim {y['shape'][-1]}, expected {m}")
    _act(where, attrs)


def _check_binary(where, ins, outs, attrs):
    """QAdd / QMul: ONNX broadcasting; a constant operand is uint8 with per-tensor quant."""
    a, b = ins
    if b["data"] is not None and (b["quant"] is None or b["quant"]["axis"] is not None):
        _fail(f"{where}: constant operand {_q(b['name'])} needs per-tensor quant")
    sa, sb = a["shape"], b["shape"]
    for da, db in zip(reversed(sa), reversed(sb)):
        if type(da) is int and type(db) is int and da != db and 1 not in (da, db):
            _fail(f"{where}: shapes {sa} and {sb} do not broadcast")
    _same_rank(where, outs[0], max(len(sa), len(sb)))
    _act(where, attrs)


def _check_qmatmul(where, ins, outs, attrs):
    """QMatMul: a [..., M, K] x b [..., K, N] (ranks >= 2, batch dims broadcast), K <= 33 025."""
    a, b = ins
    sa, sb = a["shape"], b["shape"]
    if len(sa) < 2 or len(sb) < 2:
        _fail(f"{where}: operands need rank >= 2, got {len(sa)} and {len(sb)}")
    ka, kb = sa[-1], sb[-2]
    if type(ka) is int and type(kb) is int and ka != kb:
        _fail(f"{where}: inner dims differ ({ka} vs {kb})")
    if type(ka) is int and ka > MATMUL_K_MAX:
        _fail(f"{where}: inner dim {ka} > {MATMUL_K_MAX} (the int32 accumulator bound)")
    for da, db in zip(reversed(sa[:-2]), reversed(sb[:-2])):
        if type(da) is int and type(db) is int and da != db and 1 not in (da, db):
            _fail(f"{where}: batch dims {sa[:-2]} and {sb[:-2]} do not broadcast")
    _same_rank(where, outs[0], max(len(sa), len(sb)))
    _act(where, attrs)


def _check_qsoftmax(where, ins, outs, attrs):
    """QSoftmax: x rank >= 1, axis in range; table int32 [256], entries in [0, 2^31), entry 0
    >= 1 (so S >= 1); numerator and shift ranges are ATTR_RANGES'."""
    x, table = ins
    r = len(x["shape"])
    if r == 0:
        _fail(f"{where}: x must have rank >= 1")
    _axis(where, "axis", attrs["axis"], r)
    if table["shape"] != [256]:
        _fail(f"{where}: table {_q(table['name'])} has shape {table['shape']}, expected [256]")
    if table["quant"] is not None:
        _fail(f"{where}: table {_q(table['name'])} holds fixed-point exponentials and must have quant nil")
    t = np.frombuffer(table["data"], dtype=DTYPES["int32"][0])
    if t.min() < 0 or t[0] < 1:
        _fail(f"{where}: table {_q(table['name'])} needs entries >= 0 and entry 0 >= 1")
    _same_rank(where, outs[0], r)
    _act(where, attrs)


def _check_expand(where, ins, outs, attrs):
    """Expand: shape entries >= 1, or -1 = that dim of `like` (which is then required); x's
    int dims broadcast to the int entries (right-aligned); output rank = max(len(shape), r)."""
    x = ins[0]
    shape = attrs["shape"]
    if any(v == 0 or v < -1 for v in shape):
        _fail(f"{where}: shape entries must be >= 1 or -1, got {shape}")
    if -1 in shape:
        if len(ins) < 2:
            _fail(f"{where}: shape has -1 entries but there is no like input")
        if max(i for i, v in enumerate(shape) if v == -1) >= len(ins[1]["shape"]):
            _fail(f"{where}: shape {shape} takes a dim beyond the like input's rank {len(ins[1]['shape'])}")
    if x["data"] is not None and (x["quant"] is None or x["quant"]["axis"] is not None):
        _fail(f"{where}: constant input {_q(x['name'])} needs per-tensor quant")
    for d, v in zip(reversed(x["shape"]), reversed(shape)):
        if type(d) is int and v != -1 and d != v and 1 not in (d, v):
            _fail(f"{where}: input shape {x['shape']} does not broadcast to {shape}")
    _same_rank(where, outs[0], max(len(shape), len(x["shape"])))


def _check_concat(where, ins, outs, attrs):
    r = len(ins[0]["shape"])
    if r == 0:
        _fail(f"{where}: cannot concatenate rank-0 tensors")
    axis = _axis(where, "axis", attrs["axis"], r)
    for t in ins[1:]:
        _rank(where, t, (r,))
        for d, (p, q) in enumerate(zip(ins[0]["shape"], t["shape"])):
            if d != axis and type(p) is int and type(q) is int and p != q:
                _fail(f"{where}: inputs disagree on dim {d} ({p} vs {q}) outside the concat axis")
    _same_rank(where, outs[0], r)


def _check_qconcat(where, ins, outs, attrs):
    _check_concat(where, ins, outs, attrs)
    for t in ins:
        if t["data"] is not None and (t["quant"] is None or t["quant"]["axis"] is not None):
            _fail(f"{where}: constant input {_q(t['name'])} needs per-tensor quant")
    _length(where, attrs, "multipliers", len(ins))
    _length(where, attrs, "shifts", len(ins))


def _pool_window(where, ins, outs, attrs, dilations: bool) -> int:
    x = ins[0]
    r = _rank(where, x, (3, 4))
    sp = r - 2
    kernel = _length(where, attrs, "kernel_shape", sp)
    _length(where, attrs, "strides", sp)
    pads = _length(where, attrs, "pads", 2 * sp)
    if dilations:
        _length(where, attrs, "dilations", sp)
    for i, p in enumerate(pads):
        if p >= kernel[i % sp]:
            _fail(f"{where}: pads[{i}] = {p} must be smaller than kernel_shape[{i % sp}] = "
                  f"{kernel[i % sp]}")
    _same_rank(where, outs[0], r)
    _act(where, attrs)
    return math.prod(kernel)


def _check_maxpool(where, ins, outs, attrs):
    _pool_window(where, ins, outs, attrs, dilations=True)


def _check_qaveragepool(where, ins, outs, attrs):
    k = _pool_window(where, ins, outs, attrs, dilations=False)
    if k > schema.MAX_POOL_COUNT:
        _fail(f"{where}: window size {k} exceeds {schema.MAX_POOL_COUNT}")
    _requant_consts(where, ins[1], ins[2], (k + 1,))


def _check_qreducemean(where, ins, outs, attrs):
    x = ins[0]
    r = len(x["shape"])
    axes = attrs["axes"]
    if not axes:
        _fail(f"{where}: attribute axes is empty")
    norm = [_axis(where, "axes", a, r) for a in axes]
    if len(set(norm)) != len(norm):
        _fail(f"{where}: attribute axes {axes} repeats an axis")
    _requant_consts(where, ins[1], ins[2], (1,))
    if attrs.get("sum", 0) not in (0, 1):
        _fail(f"{where}: attribute sum must be 0 or 1, got {attrs['sum']!r}")
    _same_rank(where, outs[0], r if attrs["keepdims"] else r - len(norm))
    _act(where, attrs)


def _check_reduce_extreme(where, ins, outs, attrs):
    """ReduceMax / ReduceMin: axes non-empty, distinct, in range; output rank."""
    r = len(ins[0]["shape"])
    axes = attrs["axes"]
    if not axes:
        _fail(f"{where}: attribute axes is empty")
    norm = _distinct_axes(where, "axes", axes, r)
    _same_rank(where, outs[0], r if attrs["keepdims"] else r - len(norm))
    _act(where, attrs)


def _check_qclip(where, ins, outs, attrs):
    _same_rank(where, outs[0], len(ins[0]["shape"]))
    _act(where, attrs)


def _check_reshape(where, ins, outs, attrs):
    shape = attrs["shape"]
    if len(shape) > schema.MAX_RANK:
        _fail(f"{where}: attribute shape has rank {len(shape)} (limit {schema.MAX_RANK})")
    if shape.count(-1) > 1:
        _fail(f"{where}: attribute shape {shape} has more than one -1")
    r = len(ins[0]["shape"])
    for i, d in enumerate(shape):
        if d == 0 and i >= r:
            _fail(f"{where}: attribute shape[{i}] = 0 copies a dim the rank-{r} input lacks")
    _same_rank(where, outs[0], len(shape))


def _check_flatten(where, ins, outs, attrs):
    _axis(where, "axis", attrs["axis"], len(ins[0]["shape"]), inclusive_end=True)
    _same_rank(where, outs[0], 2)


def _check_transpose(where, ins, outs, attrs):
    r = len(ins[0]["shape"])
    if sorted(attrs["perm"]) != list(range(r)):
        _fail(f"{where}: attribute perm {attrs['perm']} is not a permutation of 0..{r - 1}")
    _same_rank(where, outs[0], r)


def _check_softmax(where, ins, outs, attrs):
    r = len(ins[0]["shape"])
    if r == 0:
        _fail(f"{where}: x must have rank >= 1")
    _axis(where, "axis", attrs["axis"], r)
    _same_rank(where, outs[0], r)


def _check_lrn(where, ins, outs, attrs):
    r = len(ins[0]["shape"])
    if r < 3:
        _fail(f"{where}: x must have rank >= 3 ([N, C, D1, ...]), got {r}")
    if attrs["size"] < 1:
        _fail(f"{where}: size must be >= 1, got {attrs['size']}")
    for key in ("alpha", "beta", "bias"):
        if not math.isfinite(attrs[key]):
            _fail(f"{where}: {key} must be finite, got {attrs[key]}")
    _same_rank(where, outs[0], r)


def _check_layernorm(where, ins, outs, attrs):
    x, scale, bias = ins
    r = len(x["shape"])
    if r == 0:
        _fail(f"{where}: x must have rank >= 1")
    axis = attrs["axis"]
    if not 0 <= axis < r:
        _fail(f"{where}: attribute axis must be in [0, {r - 1}], got {axis}")
    eps = attrs["epsilon"]
    if not (math.isfinite(eps) and eps >= 0.0):
        _fail(f"{where}: epsilon must be finite and >= 0, got {eps}")
    if attrs.get("rms", 0) not in (0, 1):
        _fail(f"{where}: attribute rms must be 0 or 1, got {attrs['rms']!r}")
    norm = x["shape"][axis:]
    if any(type(d) is not int for d in norm):
        _fail(f"{where}: the normalized dims {norm} of x must be ints")
    for t, what in ((scale, "scale"), (bias, "bias")):
        if t["shape"] != norm:
            _fail(f"{where}: {what} {_q(t['name'])} has shape {t['shape']}, expected {norm}")
        if not np.isfinite(np.frombuffer(t["data"], dtype=DTYPES["float32"][0])).all():
            _fail(f"{where}: {what} {_q(t['name'])} has a non-finite value")
    _same_rank(where, outs[0], r)


def _check_float_boundary(where, ins, outs, attrs):
    _same_rank(where, outs[0], len(ins[0]["shape"]))


# -- ops of the CNN extension (schema.PENDING_OPS) -------------------------------------------

def _code_table(where, table, size):
    """A QLut / QLut2 table: `size` output codes, quant nil."""
    if table["shape"] != [size]:
        _fail(f"{where}: table {_q(table['name'])} has shape {table['shape']}, expected [{size}]")
    if table["quant"] is not None:
        _fail(f"{where}: table {_q(table['name'])} holds output codes and must have quant nil")


def _check_qlut(where, ins, outs, attrs):
    _code_table(where, ins[1], 256)
    _same_rank(where, outs[0], len(ins[0]["shape"]))


def _check_qlut2(where, ins, outs, attrs):
    """QLut2: a table of 65 536 output codes; a and b broadcast as QMul's operands."""
    _code_table(where, ins[2], 65536)
    _check_binary(where, ins[:2], outs, {"act_min": 0, "act_max": 255})


def _distinct_axes(where, key, axes, r) -> list:
    norm = [_axis(where, key, a, r) for a in axes]
    if len(set(norm)) != len(norm):
        _fail(f"{where}: attribute {key} {axes} repeats an axis")
    return norm


def _check_slice(where, ins, outs, attrs):
    r = len(ins[0]["shape"])
    if r == 0:
        _fail(f"{where}: x must have rank >= 1")
    n = len(attrs["starts"])
    for key in ("ends", "axes", "steps"):
        _length(where, attrs, key, n)
    _distinct_axes(where, "axes", attrs["axes"], r)
    if 0 in attrs["steps"]:
        _fail(f"{where}: attribute steps {attrs['steps']} contains 0")
    _same_rank(where, outs[0], r)


def _check_squeeze(where, ins, outs, attrs):
    x = ins[0]
    r = len(x["shape"])
    for a in _distinct_axes(where, "axes", attrs["axes"], r):
        d = x["shape"][a]
        if type(d) is int and d != 1:
            _fail(f"{where}: cannot squeeze axis {a} of size {d}")
    _same_rank(where, outs[0], r - len(attrs["axes"]))


def _check_unsqueeze(where, ins, outs, attrs):
    r = len(ins[0]["shape"]) + len(attrs["axes"])
    if r > schema.MAX_RANK:
        _fail(f"{where}: output rank {r} exceeds {schema.MAX_RANK}")
    _distinct_axes(where, "axes", attrs["axes"], r)
    _same_rank(where, outs[0], r)


def _check_pad(where, ins, outs, attrs):
    r = len(ins[0]["shape"])
    _length(where, attrs, "pads", 2 * r)
    _same_rank(where, outs[0], r)


def _check_pad_border(where, ins, outs, attrs):
    shape = ins[0]["shape"]
    r = len(shape)
    pads = _length(where, attrs, "pads", 2 * r)
    if attrs["mode"] not in schema.PAD_BORDER_MODES:
        _fail(f"{where}: attribute mode = {_q(attrs['mode'])} is not one of "
              f"{', '.join(schema.PAD_BORDER_MODES)}")
    for d in range(r):
        if isinstance(shape[d], int) and (pads[d] or pads[d + r]):
            msg = pad_border_limit(attrs["mode"], shape[d], pads[d], pads[d + r])
            if msg:
                _fail(f"{where}: axis {d}: {msg}")
    _same_rank(where, outs[0], r)


def pad_border_limit(mode: str, d: int, b: int, e: int) -> str | None:
    """Why PadBorder cannot pad an axis of length d by (b, e) in `mode`, or None (section
    4.13: reflect needs b, e <= d - 1, wrap b, e <= d, edge d >= 1)."""
    if mode == "reflect" and (d < 2 or b > d - 1 or e > d - 1):
        return f"reflect pads ({b}, {e}) need pads <= length - 1 = {d - 1}"
    if mode == "wrap" and (b > d or e > d):
        return f"wrap pads ({b}, {e}) exceed the length {d}"
    if d < 1:
        return "an empty axis cannot be padded"
    return None


def _check_resize_nearest(where, ins, outs, attrs):
    r = len(ins[0]["shape"])
    if r == 0:
        _fail(f"{where}: x must have rank >= 1")
    given = [k for k in ("scales", "sizes") if k in attrs]
    if len(given) != 1:
        _fail(f"{where}: exactly one of the attributes scales and sizes must be present")
    values = _length(where, attrs, given[0], r)
    if given[0] == "scales":
        for j, v in enumerate(values):
            if not (math.isfinite(v) and v > 0.0 and is_float32(v)):
                _fail(f"{where}: attribute scales[{j}] = {v!r} must be a finite float32 value > 0")
    for key, allowed in (("coordinate_transformation_mode", schema.RESIZE_COORDINATE_MODES),
                         ("nearest_mode", schema.RESIZE_NEAREST_MODES)):
        if attrs[key] not in allowed:
            _fail(f"{where}: attribute {key} = {_q(attrs[key])} is not one of {', '.join(allowed)}")
    _same_rank(where, outs[0], r)


def _check_resize_linear(where, ins, outs, attrs):
    shape = ins[0]["shape"]
    if len(shape) != 4:
        _fail(f"{where}: x must have rank 4 ([N, C, H, W]), got {len(shape)}")
    given = [k for k in ("scales", "sizes") if k in attrs]
    if len(given) != 1:
        _fail(f"{where}: exactly one of the attributes scales and sizes must be present")
    values = _length(where, attrs, given[0], 4)
    if given[0] == "scales":
        for j, v in enumerate(values):
            if not (math.isfinite(v) and v > 0.0 and is_float32(v)):
                _fail(f"{where}: attribute scales[{j}] = {v!r} must be a finite float32 value > 0")
        if values[0] != 1.0 or values[1] != 1.0:
            _fail(f"{where}: scales[0] and scales[1] (N, C) must be 1, got {values[:2]}")
    elif any(type(d) is int and v != d for v, d in zip(values[:2], shape[:2])):
        _fail(f"{where}: sizes[0] and sizes[1] (N, C) must equal x's, got {values[:2]}")
    mode = attrs["coordinate_transformation_mode"]
    if mode not in schema.RESIZE_LINEAR_MODES:
        _fail(f"{where}: attribute coordinate_transformation_mode = {_q(mode)} is not one of "
              f"{', '.join(schema.RESIZE_LINEAR_MODES)}")
    _same_rank(where, outs[0], 4)


def _check_resize_cubic(where, ins, outs, attrs):
    _check_resize_linear(where, ins, outs, attrs)
    if attrs["multiplier"] >= schema.CUBIC_MULTIPLIER_LIMIT:
        _fail(f"{where}: attribute multiplier = {attrs['multiplier']} must be below 2^23 "
              "(its accumulator may reach 2^34)")
    a = attrs["cubic_coeff_a"]
    lo, hi = schema.CUBIC_COEFF_A_RANGE
    if not (math.isfinite(a) and lo <= a <= hi):
        _fail(f"{where}: attribute cubic_coeff_a = {a!r} must lie in [{lo}, {hi}]")


_OP_CHECKS = {
    "Quantize": _check_float_boundary,
    "Dequantize": _check_float_boundary,
    "Softmax": _check_softmax,
    "LRN": _check_lrn,
    "LayerNormalization": _check_layernorm,
    "QConv": _check_qconv,
    "QGemm": _check_qgemm,
    "QAdd": _check_binary,
    "QConcat": _check_qconcat,
    "Concat": _check_concat,
    "QAveragePool": _check_qaveragepool,
    "QReduceMean": _check_qreducemean,
    "MaxPool": _check_maxpool,
    "QClip": _check_qclip,
    "Reshape": _check_reshape,
    "Flatten": _check_flatten,
    "Transpose": _check_transpose,
    "QLut": _check_qlut,
    "QLut2": _check_qlut2,
    "QMul": _check_binary,
    "QMatMul": _check_qmatmul,
    "QSoftmax": _check_qsoftmax,
    "ReduceMax": _check_reduce_extreme,
    "ReduceMin": _check_reduce_extreme,
    "Expand": _check_expand,
    "Slice": _check_slice,
    "Squeeze": _check_squeeze,
    "Unsqueeze": _check_unsqueeze,
    "Pad": _check_pad,
    "PadBorder": _check_pad_border,
    "ResizeNearest": _check_resize_nearest,
    "ResizeLinear": _check_resize_linear,
    "ResizeCubic": _check_resize_cubic,
}
assert set(_OP_CHECKS) == set(ALL_OPS), "every op of schema.ALL_OPS needs its constraint check"
