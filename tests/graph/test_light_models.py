"""The nine structure models shipped with the onnx package (backend/test/data/light)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import helper

from nqrt.graph import reference
from nqrt.graph.onnx_import import load_onnx
from nqrt.graph.passes import optimize

from _graph_helpers import LIGHT_DIR, ort_run, randomize_light, rel_err, REL_TOL

ALLOWED = {"Conv", "Gemm", "Add", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
           "Relu", "Clip", "Flatten", "Reshape", "Transpose", "Softmax"}
WITH_LRN = ["bvlc_alexnet", "zfnet512", "inception_v1"]
CONVERTIBLE = ["shufflenet", "squeezenet", "resnet50", "densenet121", "vgg19", "inception_v2"]


def _path(name):
    return os.path.join(LIGHT_DIR, f"light_{name}.onnx")


@pytest.mark.parametrize("name", WITH_LRN)
def test_lrn_models_optimize_to_allowed_ops_and_their_lrns(name):
    lrn_nodes = [n.name for n in onnx.load(_path(name)).graph.node if n.op_type == "LRN"]
    g = optimize(load_onnx(_path(name)))
    assert {n.op for n in g.nodes} <= ALLOWED | {"LRN"}
    assert [n.name for n in g.nodes if n.op == "LRN"] == lrn_nodes and len(lrn_nodes) == 2


@pytest.mark.parametrize("name", CONVERTIBLE)
def test_light_model_optimizes_to_allowed_ops(name):
    g = optimize(load_onnx(_path(name)))
    ops = {n.op for n in g.nodes}
    assert ops <= ALLOWED, f"left over: {sorted(ops - ALLOWED)}"
    assert "Conv" in ops
    g.validate()
    before = [(n.op, n.inputs, n.outputs, n.attrs) for n in g.nodes]
    assert [(n.op, n.inputs, n.outputs, n.attrs) for n in optimize(g).nodes] == before   # fixed point


def _with_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """Expose the Softmax input as an extra (first) output: the softmax itself saturates."""
    (sm,) = [n for n in model.graph.node if n.op_type == "Softmax"]
    model.graph.output.insert(0, helper.make_empty_tensor_value_info(sm.input[0]))
    return model


@pytest.mark.parametrize("name", ["resnet50", "squeezenet", "bvlc_alexnet"])
def test_light_model_reference_matches_onnxruntime(name):
    original = onnx.load(_path(name))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    in_name = load_onnx(original).inputs[0].name
    # (a) the shipped constant-filled weights, compared before the (degenerate) softmax
    # (b) random weights, so channels differ and BN folding is really exercised.
    for model in (_with_logits(original), _with_logits(randomize_light(original))):
        expected = ort_run(model, {in_name: x})
        for g in (load_onnx(model), optimize(load_onnx(model))):
            got = reference.run(g, {in_name: x})
            err = rel_err(got[g.outputs[0].name], expected[0])
            assert err <= REL_TOL, f"{name}: logits rel err {err:.3g}"
