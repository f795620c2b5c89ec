"""The `nqrt` command line, run as a user runs it (a new process per command).

Happy path: convert -> inspect -> run (integer and simulated) on a bundled model.
Bad input: every failure is one line on stderr starting with "error:", a non-zero exit code,
no traceback, and no output file left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import nqrt

EXAMPLES = Path(nqrt.__file__).parent / "examples"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def nqrt_cli(*args, cwd=None):
    env = dict(os.environ)
    env.pop("NQRT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "nqrt.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cnn.nq"
    proc = nqrt_cli("convert", EXAMPLES / "digits_cnn.onnx", "-o", out, "--calib", EXAMPLES / "digits_calib.npz")
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    return out


def test_convert_inspect_run(converted, tmp_path):
    proc = nqrt_cli("inspect", converted)
    assert proc.returncode == 0, proc.stderr
    assert "QConv" in proc.stdout and "input:  input float32[N, 1, 8, 8]" in proc.stdout
    assert "per-channel" in proc.stdout

    with np.load(EXAMPLES / "digits_test.npz") as z:
        x = z["input"][:7]
    np.savez(tmp_path / "x.npz", input=x)
    outs = {}
    for mode in ("integer", "simulate"):
        out_npz = tmp_path / f"{mode}.npz"
        args = ["run", converted, "--input", tmp_path / "x.npz", "-o", out_npz]
        if mode == "simulate":
            args.append("--simulate")
        proc = nqrt_cli(*args)
        assert proc.returncode == 0, proc.stderr
        with np.load(out_npz) as z:
            outs[mode] = z["logits"]
    assert outs["integer"].shape == (7, 10)
    assert np.array_equal(outs["integer"], nqrt.load(converted).run({"input": x})["logits"])
    # both modes agree on the predicted digit
    assert np.array_equal(outs["integer"].argmax(1), outs["simulate"].argmax(1))


def test_truncated_nq(converted, tmp_path):
    bad = tmp_path / "trunc.nq"
    bad.write_bytes(converted.read_bytes()[:500])
    np.savez(tmp_path / "x.npz", input=np.zeros((1, 1, 8, 8), np.float32))
    assert_one_line_error(nqrt_cli("run", bad, "--input", tmp_path / "x.npz"), "truncated")
    assert_one_line_error(nqrt_cli("inspect", bad))


def test_wrong_input_shape_and_name(converted, tmp_path):
    np.savez(tmp_path / "x.npz", input=np.zeros((1, 64), np.float32))
    assert_one_line_error(nqrt_cli("run", converted, "--input", tmp_path / "x.npz"), "input")
    np.savez(tmp_path / "y.npz", image=np.zeros((1, 1, 8, 8), np.float32))
    assert_one_line_error(nqrt_cli("run", converted, "--input", tmp_path / "y.npz"), "image")


def test_unsupported_op_names_op_and_nodes(tmp_path):
    """AlexNet with its two LRN nodes turned into Hardmax (no kernel in nqrt)."""
    m = onnx.load(LIGHT / "light_bvlc_alexnet.onnx")
    names = []
    for n in m.graph.node:
        if n.op_type == "LRN":
            n.op_type = "Hardmax"
            del n.attribute[:]
            names.append(n.name)
    src = tmp_path / "alexnet_lp.onnx"
    onnx.save(m, src)
    np.savez(tmp_path / "c.npz", data_0=np.zeros((1, 3, 224, 224), np.float32))
    out = tmp_path / "alexnet.nq"
    proc = nqrt_cli("convert", src, "-o", out, "--calib", tmp_path / "c.npz")
    assert_one_line_error(proc, f"Hardmax (2 nodes: {', '.join(names)})")
    assert not out.exists()


def test_not_onnx_and_missing_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    out = tmp_path / "o.nq"
    assert_one_line_error(nqrt_cli("convert", junk, "-o", out, "--calib", EXAMPLES / "digits_calib.npz"))
    assert_one_line_error(nqrt_cli("convert", tmp_path / "missing.onnx", "-o", out,
                                   "--calib", EXAMPLES / "digits_calib.npz"))
    assert_one_line_error(nqrt_cli("run", tmp_path / "missing.nq", "--input", EXAMPLES / "digits_calib.npz"))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["junk.onnx"]  # no temp files left


def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes((EXAMPLES / "digits_mlp.onnx").read_bytes())
    before = src.read_bytes()
    proc = nqrt_cli("convert", src, "-o", src, "--calib", EXAMPLES / "digits_calib_flat.npz")
    assert_one_line_error(proc)
    assert src.read_bytes() == before


def test_bad_calibration_file(tmp_path):
    bad = tmp_path / "c.npz"
    bad.write_bytes(b"PK\x03\x04 broken zip")
    out = tmp_path / "o.nq"
    assert_one_line_error(nqrt_cli("convert", EXAMPLES / "digits_mlp.onnx", "-o", out, "--calib", bad))
    assert not out.exists()


def test_model_inconsistent_with_calibration_shapes(tmp_path):
    """A Reshape whose target does not fit the fed shape is named in a one-line error."""
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([0, -1, 7], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["y"], name="bad_reshape")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=np.ones((2, 4, 3), np.float32))
    out = tmp_path / "m.nq"
    proc = nqrt_cli("convert", tmp_path / "m.onnx", "-o", out, "--calib", tmp_path / "c.npz")
    assert_one_line_error(proc, "bad_reshape")
    assert not out.exists()


def test_weight_bits_option(tmp_path):
    out = tmp_path / "m7.nq"
    proc = nqrt_cli("convert", EXAMPLES / "digits_mlp.onnx", "-o", out, "--calib",
                    EXAMPLES / "digits_calib_flat.npz", "--weight-bits", "7")
    assert proc.returncode == 0, proc.stderr
    model = nqrt.load(out).model
    assert model.metadata["weights"]["bits"] == 7
    assert max(int(np.abs(t.data).max()) for t in model.tensors.values() if t.dtype == "int8") == 63
    bad = tmp_path / "m5.nq"
    assert_one_line_error(nqrt_cli("convert", EXAMPLES / "digits_mlp.onnx", "-o", bad, "--calib",
                                   EXAMPLES / "digits_calib_flat.npz", "--weight-bits", "5"),
                          "weight_bits must be one of [7, 8]")
    assert not bad.exists()


def test_bench_times_the_model(converted, tmp_path):
    """`nqrt bench`: random inputs for the symbolic batch, or an .npz; prints the latency
    statistics (ordered min <= median <= p90) and the throughput."""
    import re
    proc = nqrt_cli("bench", converted, "-b", "3", "-n", "5", "--warmup", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    head, stats, tput = proc.stdout.strip().splitlines()
    assert "integer mode (" in head and " kernels), 1 thread(s)" in head and "[3, 1, 8, 8]" in head
    from nqrt.kernels import cpu
    assert f"({cpu.gemm_path()} kernels)" in head
    nums = [float(v) for v in re.findall(r"(\d+\.\d+) ms", stats)]
    assert stats.startswith("latency over 5 runs") and len(nums) == 4
    assert 0 < nums[0] <= nums[1] <= nums[2]
    assert "(batch 3, from the median)" in tput
    feeds = tmp_path / "x.npz"
    np.savez(feeds, input=np.zeros((2, 1, 8, 8), np.float32))
    proc = nqrt_cli("bench", converted, "-i", feeds, "-n", "2", "--pause", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert "[2, 1, 8, 8]" in proc.stdout and "pause before each run" in proc.stdout
    assert "throughput" not in proc.stdout          # sporadic calls: no throughput claim


def test_output_read_by_a_closed_pipe_is_not_an_error(converted):
    """`nqrt bench m.nq | head -1`: the reader closes the pipe before nqrt writes; nqrt stops
    quietly with exit code 0 (it used to report an 'internal error (BrokenPipeError)')."""
    env = dict(os.environ)
    env.pop("NQRT_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "nqrt.cli", "bench", str(converted), "-n", "2",
                             "--warmup", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    proc.stdout.close()                     # before the first line is written
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and err == "", err


@pytest.mark.parametrize("args,fragment", [
    (["--dim", "M=2"], "unknown dim 'M'; the model's symbolic dims: "),
    (["--dim", "N=two"], "--dim expects NAME=SIZE"),
    (["-n", "0"], "need repeats >= 1"),
])
def test_bench_bad_options(converted, args, fragment):
    assert_one_line_error(nqrt_cli("bench", converted, *args), fragment)


def _batch_range_model(path):
    """y = relu(x[arange(N)] @ W): the Range over the batch only folds once N is fixed."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "i0"),
             numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.5, (4, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Range", ["zero", "n", "one"], ["idx"]),
             helper.make_node("Gather", ["x", "idx"], ["g"], axis=0),
             helper.make_node("MatMul", ["g", "w"], ["m"]),
             helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_input_shape_fixes_a_dynamic_dim(tmp_path):
    """--input-shape: a shape computation over the batch that cannot fold symbolically (a
    one-line error without it) converts with the batch fixed; the calibration set (6 samples)
    runs in batches of the fixed size; bad specifications are one-line errors, no file."""
    src = tmp_path / "m.onnx"
    _batch_range_model(src)
    x = np.random.default_rng(1).normal(0, 1, (6, 4)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    out = tmp_path / "m.nq"
    assert_one_line_error(nqrt_cli("convert", src, "-o", out, "--calib", tmp_path / "c.npz"),
                          "dynamic shape computation not foldable", "--input-shape", "inputs: x")
    assert not out.exists()
    proc = nqrt_cli("convert", src, "-o", out, "--calib", tmp_path / "c.npz", "--input-shape", "x=2,4")
    assert proc.returncode == 0, proc.stderr
    sess = nqrt.load(out)
    assert sess.inputs[0].shape == (2, 4)
    want = np.maximum(x[:2] @ onnx.numpy_helper.to_array(onnx.load(src).graph.initializer[3]), 0)
    got = sess.run({"x": x[:2]})["y"]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    for spec, fragment in (("x=2,4,1", "has rank 3; the model's input has rank 2"),
                           ("x=2,5", "dim 1 is 5, but the model fixes it at 4"),
                           ("x=2,four!", "--input-shape expects NAME=D0,D1,..."),
                           ("x=0,4", "dim 0 is neither a size >= 1 nor a symbol name"),
                           ("z=2,4", "input shape given for unknown input(s) z (model inputs: x)")):
        bad = tmp_path / "bad.nq"
        assert_one_line_error(nqrt_cli("convert", src, "-o", bad, "--calib", tmp_path / "c.npz",
                                       "--input-shape", spec), fragment)
        assert not bad.exists()
    assert_one_line_error(nqrt_cli("convert", src, "-o", tmp_path / "b.nq", "--calib", tmp_path / "c.npz",
                                   "--input-shape", "x=4,4"), "cannot be split")
