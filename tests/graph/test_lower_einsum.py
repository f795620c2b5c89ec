"""lower_einsum: two-operand Einsums become Transpose / Unsqueeze / MatMul / Squeeze /
Transpose, equal to ONNX Runtime's Einsum; other equations stay Einsum (unsupported)."""

from __future__ import annotations

import numpy as np
import pytest

from nqrt.graph.onnx_import import load_onnx
from nqrt.graph.passes import lower_einsum, optimize

from _graph_helpers import Builder, assert_matches_ort, op_counts

# equation, shape of A (after the batch), shape of B (None: a run-time input with its batch
# dim; a tuple: a constant of that shape), which operand is constant
CASES = {
    "attention_qk": ("nhqd,nhkd->nhqk", (2, 5, 4), (2, 6, 4), None),
    "attention_av": ("nhqk,nhkd->nhqd", (2, 5, 6), (2, 6, 4), None),
    "relpos_const_b": ("nyhwc,hkc->nyhwk", (3, 4, 5, 6), None, (4, 7, 6)),
    "relpos_const_a_swapped": ("hkc,nyhwc->nyhwk", None, (3, 4, 5, 6), (4, 7, 6)),
    "linear_const_b": ("nij,jk->nik", (3, 4), None, (4, 5)),
    "row_dots": ("ni,ni->n", (6,), (6,), None),
    "matvec_free_b_empty": ("nij,nj->ni", (3, 4), (4,), None),
    "outer_order": ("nab,nbc->nca", (3, 4), (4, 5), None),
    "const_a_one_free_each": ("ij,nj->ni", None, (4,), (3, 4)),    # the constant must go right
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_operand_einsum_lowers_to_matmul(name):
    eq, sa, sb, const = CASES[name]
    b = Builder(opset=13, seed=5)
    inputs = []
    if sa is None:
        x_a = b.weight(*const)
        inputs.append(("y", ["N", *sb]))
        x_b = "y"
    else:
        x_a = "x"
        inputs.append(("x", ["N", *sa]))
        if sb is None:
            x_b = b.weight(*const)
        else:
            x_b = "y"
            inputs.append(("y", ["N", *sb]))
    out = b.op("Einsum", [x_a, x_b], equation=eq)
    m = b.model(inputs, [out])
    g = assert_matches_ort(m, {n: tuple(s[1:]) for n, s in inputs})
    ops = op_counts(g)
    assert "Einsum" not in ops and (ops.get("MatMul", 0) + ops.get("Gemm", 0)) == 1, ops


@pytest.mark.parametrize("eq", ["nij,njk->ni",       # k summed in B alone
                                "nij,njk,nkl->nil",   # three operands
                                "nij,njk->nix",       # an output index in no operand
                                "nii,nij->nj",        # an index repeated in one term
                                "n...j,njk->n...k",   # ellipsis
                                "nij,njk"])           # implicit output
def test_other_equations_are_not_parsed(eq):
    assert lower_einsum.parse(eq) is None


def test_two_contracted_indices_stay_einsum_and_are_reported():
    b = Builder(opset=13)
    out = b.op("Einsum", ["x", "y"], equation="nijk,njk->ni")
    m = b.model([("x", ["N", 3, 4, 5]), ("y", ["N", 4, 5])], [out])
    g = optimize(load_onnx(m))
    assert op_counts(g).get("Einsum") == 1
