"""Damaged files: truncation at every offset, bit flips, and a mutation fuzz loop.  The only
acceptable outcomes are a FormatError or (for mutations that keep the file valid) a model
that the writer can write back."""

from __future__ import annotations

import math
import random

import msgpack
import pytest

from nqrt import FormatError
from nqrt.format.reader import read_nq
from nqrt.format.writer import dumps_nq

from conftest import doc_of, pack_file, sample_model

VALID = dumps_nq(sample_model())
BODY = msgpack.unpackb(VALID, raw=False)["body"]
BODY_START = len(VALID) - len(BODY)
MINOR_AT = VALID.index(b"\xa7version\x92\x01\x00") + 10


def test_layout_assumptions():
    assert VALID[BODY_START:] == BODY and VALID[MINOR_AT] == 0 and len(VALID) < 8000


def test_truncation_at_every_offset():
    for n in range(len(VALID)):
        with pytest.raises(FormatError):
            read_nq(VALID[:n])


def test_truncated_body_with_valid_checksum_at_every_offset():
    for n in range(0, len(BODY), 3):
        with pytest.raises(FormatError):
            read_nq(pack_file(BODY[:n]))


def test_appended_bytes():
    with pytest.raises(FormatError, match="^corrupt envelope: 1 extra bytes after the msgpack value$"):
        read_nq(VALID + b"\x00")


def test_every_bit_flip_outside_the_body_is_rejected():
    for pos in range(BODY_START):
        for bit in range(8):
            data = bytearray(VALID)
            data[pos] ^= 1 << bit
            if pos == MINOR_AT and data[pos] < 0x80:
                assert read_nq(bytes(data)).version == (1, data[pos])   # a valid newer minor
                continue
            with pytest.raises(FormatError):
                read_nq(bytes(data))


def test_body_bit_flips_are_caught_by_the_checksum():
    rng = random.Random(1)
    for pos in range(BODY_START, len(VALID)):
        data = bytearray(VALID)
        data[pos] ^= 1 << rng.randrange(8)
        with pytest.raises(FormatError, match="^checksum mismatch: sha256"):
            read_nq(bytes(data))


# ---------------------------------------------------------------------------------------
# Fuzz: raw mutations, body mutations re-sealed with a valid checksum, and structured
# document mutations (type confusion, hostile values).
# ---------------------------------------------------------------------------------------

HOSTILE_VALUES = [None, True, 0, -1, 1, 7, 255, 256, -129, 2**31, 2**63 - 1, -(2**63), 2**64 - 1,
                  0.0, -0.0, 1.5, math.nan, math.inf, 1e-45, "", "x", "N", "c1", "uint8", "int8",
                  "QConv", b"", b"\x80" * 4, [], [0], [-1], ["N"], [1, 2, 3, 4], {}, {"a": 1},
                  {"scale": [0.5], "zero_point": [0], "axis": None}]


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        pos = rng.randrange(len(b)) if b else 0
        if kind == 0 and b:
            b[pos] = rng.randrange(256)
        elif kind == 1:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2:
            del b[pos:pos + rng.randint(1, 16)]
        elif kind == 3:
            b[pos:pos + 1] = rng.choice([b"\xdf\xff\xff\xff\xff", b"\xdd\x00\x98\x96\x80", b"\xc6\x7f\xff\xff\xff",
                                         b"\x91" * 40, b"\xc1", b"\xd4\x00\x00", b"\xcb\x7f\xf8" + bytes(6)])
        else:
            b = b[:pos]
    return bytes(b)


def _containers(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _containers(v, path + (k,))
    elif isinstance(value, list) and len(value) <= 64:
        for i, v in enumerate(value):
            yield from _containers(v, path + (i,))


def _mutate_doc(rng: random.Random, doc: dict) -> dict:
    for _ in range(rng.randint(1, 3)):
        paths = [p for p, _ in _containers(doc) if p]
        path = rng.choice(paths)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        kind = rng.randrange(4)
        if kind == 0 and isinstance(parent, dict):
            del parent[key]
        elif kind == 1 and isinstance(parent, list):
            parent.insert(key, rng.choice(HOSTILE_VALUES))
        else:
            parent[key] = rng.choice(HOSTILE_VALUES)
    return doc


def test_fuzz_2000_mutations_only_format_errors():
    rng = random.Random(20240607)
    outcomes = {"ok": 0, "error": 0}
    for i in range(2000):
        kind = i % 3
        if kind == 0:
            data = _mutate_bytes(rng, VALID)
        elif kind == 1:
            data = pack_file(_mutate_bytes(rng, BODY))
        else:
            data = pack_file(msgpack.packb(_mutate_doc(rng, doc_of(VALID)), use_bin_type=True))
        try:
            model = read_nq(data)
        except FormatError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
            continue
        except Exception as e:  # pragma: no cover - the failure report
            pytest.fail(f"mutation {i} (kind {kind}) raised {type(e).__name__}: {e}")
        outcomes["ok"] += 1
        # whatever the reader accepts, the writer writes back and the reader re-reads
        again = read_nq(dumps_nq(model))
        assert again.nodes == model.nodes and list(again.tensors) == list(model.tensors)
    assert outcomes["error"] > 1500 and outcomes["ok"] > 0, outcomes
