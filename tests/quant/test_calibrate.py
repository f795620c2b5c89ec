"""Calibrators: MinMax, streaming Percentile (exact re-binning), the collector and registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nqrt.quant.calibrate import (
    CALIBRATORS, Histogram, MinMaxCalibrator, PercentileCalibrator, RangeCollector, make_calibrator,
)


def test_registry_names_classes():
    assert CALIBRATORS["minmax"] is MinMaxCalibrator
    assert CALIBRATORS["percentile"] is PercentileCalibrator
    assert isinstance(make_calibrator("percentile", percentile=99.0), PercentileCalibrator)
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        make_calibrator("kl")


def test_minmax_streams_batches_and_ignores_nonfinite():
    cal = MinMaxCalibrator()
    assert all(math.isnan(v) for v in cal.range())
    cal.observe(np.array([[0.5, -1.0], [2.0, np.nan]], np.float32))
    cal.observe(np.array([np.inf, -np.inf, 3.0], np.float32))
    cal.observe(np.empty((0, 4), np.float32))
    assert cal.range() == (-1.0, 3.0)


def test_histogram_regrowth_is_exact():
    """Counts after several growths equal a one-shot histogram over the final edges."""
    rng = np.random.default_rng(1)
    h = Histogram(bins=64)
    batches = [rng.normal(0, 0.1, 500), rng.normal(2, 1, 500), rng.uniform(-30, 5, 500),
               np.array([250.0]), rng.normal(0, 1, 500)]
    for b in batches:
        h.add(b)
    data = np.concatenate(batches)
    edges = h.edges
    assert edges[0] <= data.min() and data.max() < edges[-1]
    idx = np.floor((data - h.origin) / h.width).astype(int)
    direct = np.bincount(idx, minlength=64)
    assert np.array_equal(h.counts, direct)
    assert h.counts.shape == (64,) and h.counts.sum() == data.size


def test_histogram_degenerate_first_batch():
    h = Histogram(bins=16)
    h.add(np.zeros(10))
    h.add(np.array([1.0, -2.0]))
    assert h.counts.sum() == 12
    assert h.origin <= -2.0 and h.origin + 16 * h.width > 1.0


def test_percentile_narrower_than_minmax_and_matches_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(0.5, 1.0, size=(40, 1000)).astype(np.float32)
    data[3, 7] = 80.0                                   # outliers on both sides
    data[11, 2] = -60.0
    data[25, 9] = 55.0
    p = 99.9
    perc = PercentileCalibrator(percentile=p, bins=2048)
    mm = MinMaxCalibrator()
    for batch in np.split(data, 8):                    # streamed: 8 batches
        perc.observe(batch)
        mm.observe(batch)
    lo, hi = perc.range()
    mlo, mhi = mm.range()
    assert (mlo, mhi) == (-60.0, 80.0)
    assert mlo < lo < hi < mhi
    assert hi - lo < 0.2 * (mhi - mlo)
    bin_width = perc.hist.width
    assert abs(hi - np.percentile(data, p)) <= bin_width
    assert abs(lo - np.percentile(data, 100 - p)) <= bin_width


def test_percentile_within_observed_range_and_100_is_minmax():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 2, 5000)
    c = PercentileCalibrator(percentile=100.0)
    c.observe(x)
    assert c.range() == (x.min(), x.max())
    c2 = PercentileCalibrator(percentile=99.0, bins=128)
    c2.observe(np.full(100, 4.0))                       # constant tensor: range is the value
    lo, hi = c2.range()
    assert lo == hi == 4.0
    with pytest.raises(ValueError):
        PercentileCalibrator(percentile=20.0)


def test_collector_keeps_one_calibrator_per_tensor_and_last_shape():
    col = RangeCollector("percentile", percentile=99.0, bins=256)
    rng = np.random.default_rng(2)
    for _ in range(3):
        col.observe("a", rng.normal(size=(4, 3)))
        col("b", np.abs(rng.normal(size=(4, 5, 2))))
    assert set(col.ranges()) == {"a", "b"}
    assert col.shapes == {"a": (4, 3), "b": (4, 5, 2)}
    assert all(isinstance(c, PercentileCalibrator) and c.hist.bins == 256 for c in col.calibrators.values())
    lo, hi = col.minmax()["b"]
    assert 0 <= lo < hi
