"""Writer and reader round trip: identical model, identical bytes, float32 scales, atomic write."""

from __future__ import annotations

import copy
import os
import re
import struct

import numpy as np
import pytest

from nqrt import FormatError
from nqrt.format import schema, writer
from nqrt.format.model import NqModel, Quant
from nqrt.format.reader import read_nq
from nqrt.format.writer import dumps_nq, write_nq

from conftest import doc_of


def assert_same_model(a: NqModel, b: NqModel) -> None:
    assert a.graph_inputs == b.graph_inputs
    assert a.graph_outputs == b.graph_outputs
    assert a.metadata == b.metadata
    assert a.producer == b.producer
    assert tuple(a.version) == tuple(b.version)
    assert a.nodes == b.nodes
    assert list(a.tensors) == list(b.tensors)
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        assert (ta.name, ta.dtype, tuple(ta.shape), ta.quant) == (tb.name, tb.dtype, tuple(tb.shape), tb.quant), name
        if ta.data is None:
            assert tb.data is None, name
        else:
            assert tb.data.dtype == np.dtype(schema.DTYPES[tb.dtype][0]) and tb.data.shape == ta.data.shape
            assert np.array_equal(ta.data, tb.data), name


def test_sample_uses_every_op(model):
    # the CNN extension ops (schema.PENDING_OPS, now part of OPS) have their own sample model
    # in test_nq_new_ops.py
    assert {n.op for n in model.nodes} == set(schema.OPS) - set(schema.PENDING_OPS)


def test_round_trip_identical_model_and_bytes(model, tmp_path):
    path = tmp_path / "m.nq"
    write_nq(model, path)
    back = read_nq(path)
    assert_same_model(model, back)
    assert read_nq(str(path)).metadata == model.metadata
    assert dumps_nq(back) == path.read_bytes()               # re-write is byte-identical
    assert read_nq(path.read_bytes()).nodes == model.nodes   # bytes input too
    assert back.tensors["x"].shape == ("N", 3, 8, 8)         # symbolic dims survive
    assert back.tensors["c1.w"].quant.axis == 0 and back.tensors["c2.w"].quant.axis is None


def test_deterministic_regardless_of_dict_order(model):
    reordered = copy.deepcopy(model)
    reordered.metadata = dict(reversed(list(model.metadata.items())))
    reordered.metadata["calibration"] = dict(reversed(list(model.metadata["calibration"].items())))
    for node in reordered.nodes:
        node.attrs = dict(reversed(list(node.attrs.items())))
    assert dumps_nq(reordered) == dumps_nq(model) == dumps_nq(model)


def test_numpy_scalars_are_normalized(model):
    m = copy.deepcopy(model)
    conv = next(n for n in m.nodes if n.name == "conv1")
    conv.attrs["group"] = np.int64(1)
    conv.attrs["strides"] = np.array([1, 1])
    m.tensors["xq"].quant = Quant([np.float32(0.05)], [np.uint8(128)])
    m.metadata["ranges"]["x"] = (np.float64(-1.5), 2.25)
    assert dumps_nq(m) == dumps_nq(model)


def test_scales_are_msgpack_float32_other_floats_float64(model):
    data = dumps_nq(model)
    assert b"\xca" + struct.pack(">f", 0.05) in data          # xq's scale as float32
    assert b"\xcb" + struct.pack(">d", float(np.float32(0.05))) not in data
    assert b"\xcb" + struct.pack(">d", 99.99) in data          # metadata float stays float64


def test_read_arrays_are_read_only_views(model):
    back = read_nq(dumps_nq(model))
    w = back.tensors["c1.w"].data
    assert w.dtype == np.int8 and w.shape == (4, 3, 3, 3) and not w.flags.writeable


def test_higher_minor_version_is_accepted_and_reported(model):
    from conftest import file_of
    back = read_nq(file_of(doc_of(dumps_nq(model)), version=(1, 7)))
    assert back.version == (1, 7)
    back.version = (1, 0)
    assert_same_model(model, back)
    assert dumps_nq(back) == dumps_nq(model)     # writers write the lowest version: 1.0


# ---------------------------------------------------------------------------------------
# The writer validates with the reader's rules
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, message", [
    (lambda m: setattr(m.tensors["xq"], "quant", Quant([0.05], [128])),
     "tensor 'xq': quant.scale[0] = 0.05 is not a float32 value"),
    (lambda m: setattr(m.tensors["c1.w"], "data", m.tensors["c1.w"].data.astype(np.float64)),
     "tensor 'c1.w': data dtype float64 does not match declared dtype int8"),
    (lambda m: setattr(m.tensors["c1.w"], "data", m.tensors["c1.w"].data.reshape(4, 27)),
     "tensor 'c1.w': data shape [4, 27] does not match declared shape [4, 3, 3, 3]"),
    (lambda m: m.nodes[1].attrs.update(act_min=9, act_max=8),
     "node 'conv1' (QConv): act_min 9 > act_max 8"),
    (lambda m: m.tensors["c1.w"].data.__setitem__((0, 0, 0, 0), -128),
     "tensor 'c1.w': int8 weight value -128"),
    (lambda m: m.metadata.update(bad=object()), "metadata.bad: cannot encode a object value"),
    (lambda m: m.metadata.update({1: 2}), "metadata: map key 1 is not a str"),
    (lambda m: m.tensors.update(other=m.tensors["x"]), "tensor 'x': stored under key 'other'"),
    (lambda m: setattr(m, "version", (2, 0)), "model.version (2, 0) is not a 1.x version"),
    (lambda m: m.producer.update(extra="1"), "producer: unknown key 'extra'"),
    (lambda m: m.nodes.reverse(), "node 'concat_f' (Concat): input x 'ccf' is read before it is produced"),
])
def test_writer_rejects_invalid_models(model, mutate, message):
    mutate(model)
    with pytest.raises(FormatError, match="^" + re.escape(message)):
        dumps_nq(model)


def test_writer_rejects_deep_metadata(model):
    deep = []
    for _ in range(20):
        deep = [deep]
    model.metadata["deep"] = deep
    with pytest.raises(FormatError, match="nested deeper than 16"):
        dumps_nq(model)
    cyclic = {}
    cyclic["self"] = cyclic
    model.metadata["deep"] = cyclic
    with pytest.raises(FormatError, match="nested deeper than 16"):
        dumps_nq(model)


def test_writer_rejects_unencodable_strings(model):
    model.metadata["s"] = "\udc80"
    with pytest.raises(FormatError, match="cannot encode the document"):
        dumps_nq(model)


# ---------------------------------------------------------------------------------------
# Atomic write
# ---------------------------------------------------------------------------------------

def _listing(directory):
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("target", ["fsync", "replace", "fchmod"])
@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), RuntimeError("boom")])
def test_failed_write_leaves_target_untouched_and_no_temp_files(model, tmp_path, monkeypatch, target, error):
    path = tmp_path / "m.nq"
    path.write_bytes(b"previous contents")

    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(writer.os, target, fail)
    expected = FormatError if isinstance(error, OSError) else RuntimeError
    with pytest.raises(expected) as info:
        write_nq(model, path)
    if expected is FormatError:
        assert str(info.value) == f"cannot write {str(path)!r}: Input/output error"
    monkeypatch.undo()
    assert path.read_bytes() == b"previous contents"
    assert _listing(tmp_path) == ["m.nq"]


def test_failure_mid_write(model, tmp_path, monkeypatch):
    path = tmp_path / "m.nq"
    path.write_bytes(b"old")
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()
        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(writer.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(FormatError, match="No space left on device"):
        write_nq(model, path)
    assert path.read_bytes() == b"old" and _listing(tmp_path) == ["m.nq"]


def test_invalid_model_touches_nothing(model, tmp_path):
    path = tmp_path / "m.nq"
    path.write_bytes(b"old")
    model.nodes[1].attrs["group"] = 0
    with pytest.raises(FormatError, match="attribute group = 0 is out of range"):
        write_nq(model, path)
    assert path.read_bytes() == b"old" and _listing(tmp_path) == ["m.nq"]


def test_write_replaces_existing_file_and_keeps_mode(model, tmp_path):
    path = tmp_path / "m.nq"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    write_nq(model, path)
    assert path.read_bytes() == dumps_nq(model)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert _listing(tmp_path) == ["m.nq"]


def test_forbid_paths_refuses_the_input_model(model, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx bytes")
    for out in (src, tmp_path / "." / "model.onnx", str(src)):
        with pytest.raises(FormatError, match=r"^output path .* is the input model$"):
            write_nq(model, out, forbid_paths=[src])
    link = tmp_path / "link.onnx"
    link.symlink_to(src)
    with pytest.raises(FormatError, match="is the input model"):
        write_nq(model, link, forbid_paths=[str(src)])
    assert src.read_bytes() == b"onnx bytes"
    write_nq(model, tmp_path / "model.nq", forbid_paths=[src])   # another path is fine


def test_write_into_missing_directory(model, tmp_path):
    with pytest.raises(FormatError, match="^cannot write .*: No such file or directory$"):
        write_nq(model, tmp_path / "nope" / "m.nq")
