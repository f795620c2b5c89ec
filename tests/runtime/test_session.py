"""Session API: feed validation, output selection, plan cache, threads, loading from a file."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import runtime_ref
from runtime_builder import Builder

import nqrt
from nqrt.errors import InputError
from nqrt.runtime.session import Session


def _model(symbolic=True):
    b = Builder(21)
    x = b.quantize(b.input(("N", 3, 8, 8) if symbolic else (2, 3, 8, 8), calib_shape=(2, 3, 8, 8), name="x"))
    c = b.conv(x, 8, (3, 3), pads=[1, 1, 1, 1], relu=True)
    c2 = b.conv(c, 8, (3, 3), [2, 2], [1, 1, 1, 1])
    g = b.reducemean(c2, [2, 3], keepdims=0)
    b.output(b.dequantize(b.gemm(g, 5)))
    b.output(b.dequantize(c))
    return b.model()


def feed(n=2, seed=0):
    return {"x": (np.random.default_rng(seed).standard_normal((n, 3, 8, 8)) * 2).astype(np.float32)}


def test_info_and_output_selection():
    m = _model()
    s = Session.load(m)
    assert [(i.name, i.shape, i.dtype) for i in s.inputs] == [("x", ("N", 3, 8, 8), "float32")]
    assert [o.name for o in s.outputs] == [io.name for io in m.graph_outputs]
    first = m.graph_outputs[0].name
    out = s.run(feed(), output_names=[first])
    assert list(out) == [first]
    full = s.run(feed())
    assert np.array_equal(full[first], out[first])


@pytest.mark.parametrize("feeds,msg", [
    ({}, "missing input 'x'"),
    ({"x": np.zeros((2, 3, 8, 8), np.float32), "y": np.zeros(1, np.float32)}, "unknown input 'y'"),
    ({"x": np.zeros((2, 3, 8, 8), np.float64)}, "input 'x': expected dtype float32, got float64"),
    ({"x": np.zeros((3, 8, 8), np.float32)}, "expected rank 4"),
    ({"x": np.zeros((2, 4, 8, 8), np.float32)}, "expected shape ['N', 3, 8, 8], got [2, 4, 8, 8]"),
    ({"x": np.zeros((0, 3, 8, 8), np.float32)}, "dim 0 ('N') must be >= 1"),
    ({"x": [[1.0]]}, "expected a numpy array, got list"),
])
def test_input_errors(feeds, msg):
    s = Session(_model())
    with pytest.raises(InputError) as e:
        s.run(feeds)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_inconsistent_symbol_and_unknown_output():
    b = Builder(22)
    x = b.quantize(b.input(("N", 4), calib_shape=(2, 4), name="a"))
    y = b.quantize(b.input(("N", 4), calib_shape=(2, 4), name="b"))
    b.output(b.dequantize(b.add(x, y)))
    s = Session(b.model())
    with pytest.raises(InputError, match="input 'b': dim 0 \\('N'\\) is 3 but 'N' = 2 from input 'a'"):
        s.run({"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 4), np.float32)})
    with pytest.raises(InputError, match="unknown output 'nope'"):
        s.run({"a": np.zeros((2, 4), np.float32), "b": np.zeros((2, 4), np.float32)}, output_names=["nope"])
    with pytest.raises(InputError, match="mode must be"):
        Session(b.model(), mode="fast")
    with pytest.raises(InputError, match="threads must be"):
        Session(b.model(), threads=0)


def test_non_contiguous_feed_and_plan_cache():
    m = _model()
    s = Session(m)
    x = feed(3)["x"]
    nc = np.asfortranarray(x)
    assert not nc.flags.c_contiguous
    a = s.run({"x": nc})
    ref = runtime_ref.run(m, {"x": x})
    for k in a:
        assert np.array_equal(a[k], ref[k])
    p1 = s.plan_for({"x": (3, 3, 8, 8)})
    s.run(feed(3, seed=1))
    assert s.plan_cache_size == 1 and s.plan_for({"x": (3, 3, 8, 8)}) is p1
    s.run(feed(1))
    assert s.plan_cache_size == 2


def test_outputs_are_fresh_arrays():
    s = Session(_model())
    a = s.run(feed(seed=1))
    keep = {k: v.copy() for k, v in a.items()}
    s.run(feed(seed=2))
    for k in a:
        assert np.array_equal(a[k], keep[k])


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
def test_thread_count_invariance():
    m = _model()
    f = feed(4, seed=3)
    one = Session(m, threads=1).run(f)
    two = Session(m, threads=2).run(f)
    for k in one:
        assert np.array_equal(one[k], two[k])
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS   # restored


def test_load_from_file_and_simulate_mode(tmp_path):
    from nqrt.format.writer import write_nq
    m = _model()
    path = tmp_path / "m.nq"
    write_nq(m, path)
    f = feed(2, seed=4)
    direct = Session(m).run(f)
    loaded = nqrt.load(str(path)).run(f)
    for k in direct:
        assert np.array_equal(direct[k], loaded[k])
    sim = Session.load(path, mode="simulate").run(f)
    assert set(sim) == set(direct) and all(sim[k].dtype == np.float32 for k in sim)


def test_output_that_is_an_input_gets_its_own_array():
    """Graph inputs and outputs are the caller's arrays (no arena copies).  A file cannot list
    a graph input as an output (validate.py: outputs are produced by nodes), but an in-memory
    model can: the output must still come back as an array of its own, equal to the input,
    and the caller's input must never be written."""
    b = Builder(23)
    x = b.input((2, 3, 4, 4), name="x")
    d = b.dequantize(b.conv(b.quantize(x), 4, (3, 3), pads=[1, 1, 1, 1]))
    b.output(x)
    b.output(d)
    m = b.model()
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32)}
    keep = feeds["x"].copy()
    out = Session(m).run(feeds)
    ref = runtime_ref.run(m, {"x": keep})
    assert np.array_equal(out["x"], keep) and np.array_equal(out[d], ref[d])
    assert np.array_equal(feeds["x"], keep)
    assert not np.shares_memory(out["x"], feeds["x"]) and not np.shares_memory(out["x"], out[d])


def test_unaligned_and_strided_inputs_are_read_correctly():
    m = _model()
    s = Session(m)
    x = feed(2, seed=6)["x"]
    ref = Session(m).run({"x": x})
    raw = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, dtype=np.float32, count=x.size, offset=1).reshape(x.shape)
    assert not unaligned.flags.aligned
    raw[1:] = x.view(np.uint8).ravel()
    strided = np.zeros((2, 3, 8, 16), np.float32)[..., ::2]
    strided[...] = x
    for a in (unaligned, strided):
        got = s.run({"x": a})
        for k in ref:
            assert np.array_equal(got[k], ref[k])


def test_fast_path_matches_checked_path():
    """Repeated runs take the fast path (a plan exists for the shapes): outputs in the model's
    order, fresh values per call (the io addresses are rebound every run), and a float32
    descriptor equal to numpy's but not the same object (here: with metadata) still runs,
    through the checked path."""
    m = _model()
    s = Session(m)
    want_order = [io.name for io in m.graph_outputs]
    for seed in range(3):
        f = feed(2, seed=10 + seed)
        got = s.run(f)
        ref = runtime_ref.run(m, f)
        assert list(got) == want_order
        for k in got:
            assert np.array_equal(got[k], ref[k])
    last = list(reversed(want_order))
    assert list(s.run(feed(2), output_names=last)) == last
    odd = np.dtype(np.float32, metadata={"unit": "volt"})
    assert odd == np.float32 and odd is not np.dtype(np.float32)
    x = feed(2, seed=20)["x"]
    got = s.run({"x": x.astype(odd)})
    ref = s.run({"x": x})
    for k in ref:
        assert np.array_equal(got[k], ref[k])


def test_latency_helpers():
    from nqrt.runtime.latency import LatencyStats, measure, synthetic_feeds
    s = Session(_model())
    feeds = synthetic_feeds(s, {"N": 3})
    assert feeds["x"].shape == (3, 3, 8, 8) and feeds["x"].dtype == np.float32
    assert synthetic_feeds(s)["x"].shape == (1, 3, 8, 8)          # unset symbols: 1
    with pytest.raises(InputError, match="unknown dim 'B'"):
        synthetic_feeds(s, {"B": 2})
    with pytest.raises(InputError, match="positive int"):
        synthetic_feeds(s, {"N": 0})
    stats = measure(s, feeds, repeats=4, warmup=0)
    assert len(stats.samples) == 4 and 0 < stats.min <= stats.median <= stats.p90
    fixed = LatencyStats((0.004, 0.001, 0.002, 0.003))
    assert (fixed.min, fixed.median, fixed.mean) == (0.001, 0.0025, 0.0025)
    assert "throughput: 1600.0 samples/s (batch 4" in fixed.summary(batch=4)
    assert s.nthreads == numba.config.NUMBA_NUM_THREADS
