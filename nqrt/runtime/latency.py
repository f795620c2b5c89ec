"""Latency of a loaded model: synthetic feeds for its declared input shapes and timed runs.

    feeds = synthetic_feeds(sess, dims={"N": 8})          # float32 N(0, 1) per input
    stats = measure(sess, feeds, repeats=100, warmup=10)   # LatencyStats (seconds)
    print(stats.summary(batch=8))

What `nqrt bench` prints.  The timed calls are the public `Session.run` (input checks, the
interpreter, fresh output arrays): what an embedding application pays per call.  `pause`
sleeps between calls, to measure the latency of sporadic requests (the thread pool and the
caches cool down between them) rather than of back-to-back ones.  The kernels have no
data-dependent branches, so random inputs time the same as real ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from nqrt.errors import InputError


@dataclass(frozen=True)
class LatencyStats:
    samples: tuple          # seconds per call, in call order

    @property
    def min(self) -> float:
        return float(np.min(self.samples))

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    def summary(self, batch: int | None = None) -> str:
        ms = lambda s: f"{s * 1e3:.3f} ms"  # noqa: E731
        line = (f"latency over {len(self.samples)} runs: min {ms(self.min)}, median {ms(self.median)}, "
                f"p90 {ms(self.p90)}, mean {ms(self.mean)}")
        if batch:
            line += f"\nthroughput: {batch / self.median:.1f} samples/s (batch {batch}, from the median)"
        return line


def resolve_shape(name: str, shape, dims: dict) -> tuple:
    """The declared shape of input `name` with its symbolic dims taken from `dims` (missing
    symbols: 1)."""
    out = []
    for d in shape:
        if isinstance(d, str):
            v = dims.get(d, 1)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"input {name!r}: dim {d!r} must be a positive int, got {v!r}")
            out.append(int(v))
        else:
            out.append(int(d))
    return tuple(out)


def synthetic_feeds(sess, dims: dict | None = None, seed: int = 0) -> dict:
    """float32 standard-normal arrays for every input of `sess` (a Session), symbolic dims
    from `dims` (name -> size; others 1).  Unknown names in dims are an error (a typo would
    otherwise silently time batch 1)."""
    dims = dict(dims or {})
    symbols = {d for i in sess.inputs for d in i.shape if isinstance(d, str)}
    unknown = sorted(set(dims) - symbols)
    if unknown:
        have = ", ".join(sorted(symbols)) or "none"
        raise InputError(f"unknown dim {unknown[0]!r}; the model's symbolic dims: {have}")
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal(resolve_shape(i.name, i.shape, dims)).astype(np.float32)
            for i in sess.inputs}


def measure(sess, feeds: dict, repeats: int = 100, warmup: int = 10, pause: float = 0.0) -> LatencyStats:
    """Time `repeats` calls of sess.run(feeds) after `warmup` untimed ones (the first call
    plans and compiles or loads the kernels), sleeping `pause` seconds before each timed call."""
    if repeats < 1 or warmup < 0 or pause < 0:
        raise InputError("need repeats >= 1, warmup >= 0 and pause >= 0")
    for _ in range(max(warmup, 1)):
        sess.run(feeds)
    samples = []
    for _ in range(repeats):
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        sess.run(feeds)
        samples.append(time.perf_counter() - t0)
    return LatencyStats(tuple(samples))
