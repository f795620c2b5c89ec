"""The golden example files in formats/golden/ are reproduced exactly.

Each `<name>.nq` comes with `<name>.io.npz` ("in:<input>", "out:<output>" arrays).  Our reader
must accept the file, re-serializing the model must give the same bytes (the writer is
deterministic and the reader loses nothing), and the integer runtime must reproduce every output
bit for bit, for 1 and 2 threads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nqrt
from nqrt.format.reader import read_nq
from nqrt.format.writer import dumps_nq

GOLDEN = Path(__file__).resolve().parent.parent / "formats" / "golden"
NAMES = sorted(p.name[: -len(".nq")] for p in GOLDEN.glob("*.nq"))


def test_goldens_exist():
    assert len(NAMES) >= 3, f"expected golden files in {GOLDEN}"


@pytest.mark.parametrize("name", NAMES)
def test_golden_reproduced_bit_for_bit(name):
    data = (GOLDEN / f"{name}.nq").read_bytes()
    model = read_nq(data)
    assert dumps_nq(model) == data

    with np.load(GOLDEN / f"{name}.io.npz") as z:
        feeds = {k[3:]: z[k] for k in z.files if k.startswith("in:")}
        expected = {k[4:]: z[k] for k in z.files if k.startswith("out:")}
    assert feeds and expected
    for out in expected.values():  # a golden must exercise real values, not constants
        assert np.all(np.isfinite(out)) and np.unique(out).size > 3

    for threads in (1, 2):
        got = nqrt.load(GOLDEN / f"{name}.nq", threads=threads).run(feeds)
        assert set(got) == set(expected)
        for k, v in expected.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            assert np.array_equal(got[k], v), f"{name}:{k} differs (threads={threads})"
