import numpy as np
import pytest

from nqrt.kernels.softmax import softmax_f32
import naive
from kernels._util import with_threads


@pytest.mark.parametrize("shape", [(1, 1000, 1), (4, 10, 1), (2, 7, 5), (3, 1, 4), (1, 64, 33)])
def test_softmax_close_to_float64(shape):
    rng = np.random.default_rng(shape[1])
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    x.flat[0] = 80.0                                  # exp would overflow without the max
    y = np.zeros(shape, np.float32)
    softmax_f32(x, y)
    want = naive.softmax(x, axis=1)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-6)
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-5)
    y1 = np.zeros_like(y)
    with_threads(1, softmax_f32, x, y1)
    assert np.array_equal(y, y1)


def test_softmax_large_values_and_ties():
    x = np.array([[[1e30], [1e30], [-1e30]]], np.float32)
    y = np.zeros_like(x)
    softmax_f32(x, y)
    assert y.ravel().tolist() == [0.5, 0.5, 0.0]
