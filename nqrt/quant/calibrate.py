"""Activation range calibration: per-tensor observers with bounded memory.

A calibrator sees every batch of one float tensor (`observe`) and finally answers one real
range `[lo, hi]` (`range`).  Memory per tensor is O(1) in the number of samples: a running
min/max, plus (percentile) a histogram of a fixed number of bins.

Histogram invariant: bins have width `w` and start at `origin`; bin i counts values in
[origin + i·w, origin + (i+1)·w) (the last bin also takes its right edge).  When a batch
falls outside, the width grows by a power of two f and the origin moves left by a whole
number of old bins, so every old bin lies inside exactly one new bin and re-binning is
exact (no interpolation): old bin i maps to new bin (i + m) // f.

`CALIBRATORS` maps a method name to its class; `RangeCollector` owns one calibrator per
tensor name and is the `observe(name, array)` callback handed to the float executor.
"""

from __future__ import annotations

import math

import numpy as np


def _finite_values(array) -> np.ndarray:
    x = np.asarray(array)
    if x.dtype.kind not in "fiu":
        return np.empty(0, dtype=np.float64)
    x = x.reshape(-1)
    if x.dtype.kind == "f":
        x = x[np.isfinite(x)]     # NaN/inf never widen a range
    return x


class Calibrator:
    """Base class: running min/max of the finite values seen."""

    def __init__(self) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    def observe(self, array) -> None:
        x = _finite_values(array)
        if x.size == 0:
            return
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.count += int(x.size)
        self._observe_finite(x)

    def _observe_finite(self, x: np.ndarray) -> None:  # hook for subclasses
        pass

    def range(self) -> tuple[float, float]:
        """(lo, hi) to quantize this tensor with; (nan, nan) if nothing finite was seen."""
        if self.count == 0:
            return math.nan, math.nan
        return self.min, self.max


class MinMaxCalibrator(Calibrator):
    """Range = [min, max] of every value observed."""


class Histogram:
    """Fixed-size streaming histogram with exact power-of-two re-binning (see module doc)."""

    def __init__(self, bins: int = 2048) -> None:
        if bins < 2:
            raise ValueError("a histogram needs at least 2 bins")
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.origin = 0.0
        self.width = 0.0          # 0 until the first value arrives

    @property
    def edges(self) -> np.ndarray:
        return self.origin + self.width * np.arange(self.bins + 1, dtype=np.float64)

    def _start(self, lo: float, hi: float) -> None:
        span = hi - lo
        if span <= 0.0:
            # Degenerate first batch (all values equal): a tiny window around the value; a
            # later batch grows it by powers of two.
            span = max(abs(lo) * 2.0**-20, 2.0**-40)
            lo -= span / 2.0
        # Slightly wider than the data so that `hi` falls strictly inside the last bin.
        self.width = span / self.bins * (1.0 + 2.0**-20)
        self.origin = lo

    def _grow(self, lo: float, hi: float) -> None:
        """Re-bin so that [lo, hi] and the current range are covered (exact merge)."""
        w = self.width
        lo = min(lo, self.origin)
        hi = max(hi, self.origin + self.bins * w)
        m = math.ceil((self.origin - lo) / w)             # old bins added on the left
        f = 1
        while True:
            if self.origin - m * w <= lo and self.origin - m * w + self.bins * f * w > hi:
                break
            f *= 2
        new_counts = np.zeros(self.bins, dtype=np.int64)
        np.add.at(new_counts, (np.arange(self.bins) + m) // f, self.counts)
        self.counts = new_counts
        self.origin = self.origin - m * w
        self.width = w * f

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if self.width == 0.0:
            self._start(lo, hi)
        if lo < self.origin or hi >= self.origin + self.bins * self.width:
            self._grow(lo, hi)
        idx = np.floor((x - self.origin) / self.width).astype(np.int64)
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.bins)

    def quantile(self, q: float) -> float:
        """Value below which a fraction q of the counts lie (linear inside the bin)."""
        total = int(self.counts.sum())
        if total == 0:
            return math.nan
        target = min(max(q, 0.0), 1.0) * total
        cdf = np.cumsum(self.counts)
        i = int(np.searchsorted(cdf, target, side="left"))
        i = min(i, self.bins - 1)
        before = float(cdf[i - 1]) if i > 0 else 0.0
        inside = float(self.counts[i])
        frac = (target - before) / inside if inside > 0 else 0.0
        return self.origin + (i + min(max(frac, 0.0), 1.0)) * self.width


class PercentileCalibrator(Calibrator):
    """Range = [P(100 − p), P(p)] of the values seen, from a streaming histogram.

    Two-sided: a lone outlier on either side is clipped.  The result never exceeds the
    observed [min, max]; it is exact up to one histogram bin.
    """

    def __init__(self, percentile: float = 99.99, bins: int = 2048) -> None:
        super().__init__()
        if not 50.0 < float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
        self.percentile = float(percentile)
        self.hist = Histogram(bins)

    def _observe_finite(self, x: np.ndarray) -> None:
        self.hist.add(x)

    def range(self) -> tuple[float, float]:
        if self.count == 0:
            return math.nan, math.nan
        if self.percentile >= 100.0:
            return self.min, self.max
        q = self.percentile / 100.0
        lo = min(max(self.min, self.hist.quantile(1.0 - q)), self.max)
        hi = max(min(self.max, self.hist.quantile(q)), self.min)
        if lo > hi:                                     # only possible on ~empty histograms
            lo = hi = 0.5 * (lo + hi)
        return lo, hi


# Method name -> calibrator class.  Entropy / MSE calibrators slot in here; the constructor
# takes keyword options (unknown ones are filtered by RangeCollector).
CALIBRATORS: dict[str, type[Calibrator]] = {
    "minmax": MinMaxCalibrator,
    "percentile": PercentileCalibrator,
}


def make_calibrator(method: str, **options) -> Calibrator:
    try:
        cls = CALIBRATORS[method]
    except KeyError:
        raise ValueError(f"unknown calibration method {method!r}; "
                         f"known: {', '.join(sorted(CALIBRATORS))}") from None
    if cls is PercentileCalibrator:
        return cls(**{k: v for k, v in options.items() if k in ("percentile", "bins")})
    return cls()


class RangeCollector:
    """One calibrator per tensor name; use `collector.observe` as the executor's callback.

    Also remembers the last shape seen per tensor (shape inference help for the quantizer:
    pool windows, reduced element counts).
    """

    def __init__(self, method: str = "minmax", **options) -> None:
        make_calibrator(method, **options)          # validate early
        self.method = method
        self.options = options
        self.calibrators: dict[str, Calibrator] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def observe(self, name: str, array) -> None:
        cal = self.calibrators.get(name)
        if cal is None:
            cal = self.calibrators[name] = make_calibrator(self.method, **self.options)
        cal.observe(array)
        self.shapes[name] = tuple(int(d) for d in np.shape(array))

    __call__ = observe

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: cal.range() for name, cal in self.calibrators.items()}

    def minmax(self) -> dict[str, tuple[float, float]]:
        """Observed [min, max] per tensor (what the metadata records)."""
        return {name: (cal.min, cal.max) for name, cal in self.calibrators.items() if cal.count}
