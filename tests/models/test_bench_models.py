"""tools/make_bench_models.py: the benchmark graphs have the real topologies (op counts, parameter
and MAC counts equal torchvision's ResNet-18 / MobileNetV2), a dynamic batch axis, BN statistics
that are not identities, and run in onnxruntime with sane outputs."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime")

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_bench_models.py"
_spec = importlib.util.spec_from_file_location("make_bench_models", _TOOL)
mbm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mbm)

# torchvision's parameter counts; MACs of Conv + Gemm per 224x224 image
EXPECTED = {
    "resnet18": {"params": 11_689_512, "macs": 1_814_073_344, "input": ["N", 3, 224, 224],
                 "ops": {"Conv": 20, "BatchNormalization": 20, "Relu": 17, "Add": 8,
                         "MaxPool": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}},
    "mobilenetv2": {"params": 3_504_872, "macs": 300_774_272, "input": ["N", 3, 224, 224],
                    "ops": {"Conv": 52, "BatchNormalization": 52, "Clip": 35, "Add": 10,
                            "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}},
    "mlp_784_512_512_10": {"params": 669_706, "macs": 668_672, "input": ["N", 784],
                           "ops": {"Gemm": 3, "Relu": 2}},
}


@pytest.fixture(scope="module")
def built():
    return {name: build() for name, build in mbm.MODELS.items()}


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_topology_and_counts(built, name):
    model, want = built[name], EXPECTED[name]
    assert set(mbm.MODELS) == set(EXPECTED)
    assert dict(Counter(n.op_type for n in model.graph.node)) == want["ops"]
    assert mbm.model_stats(model) == {"params": want["params"], "macs": want["macs"]}
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert _dims(model.graph.input[0]) == want["input"]
    assert _dims(model.graph.output[0]) == ["N", 1000 if want["input"][1] == 3 else 10]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_runs_with_sane_outputs(built, name):
    logits = mbm.check(built[name])           # raises on non-finite / batch-dependent / flat
    assert logits.shape[0] == 8 and np.all(np.isfinite(logits))
    assert 0.1 < float(logits.std()) < 10.0


def test_mobilenetv2_structure(built):
    graph = built["mobilenetv2"].graph
    inits = {t.name: t for t in graph.initializer}
    depthwise = [n for n in graph.node if n.op_type == "Conv"
                 and next(a.i for a in n.attribute if a.name == "group") > 1]
    assert len(depthwise) == 17
    for n in depthwise:
        group = next(a.i for a in n.attribute if a.name == "group")
        assert list(inits[n.input[1]].dims) == [group, 1, 3, 3]
    for n in (n for n in graph.node if n.op_type == "Clip"):
        assert [list(inits[i].dims) for i in n.input[1:]] == [[], []]   # opset 13: scalars
        lo, hi = (float(onnx.numpy_helper.to_array(inits[i])) for i in n.input[1:])
        assert (lo, hi) == (0.0, 6.0)
    # linear bottlenecks: every residual Add takes a BN output directly (no activation after it)
    producers = {n.output[0]: n.op_type for n in graph.node}
    for n in (n for n in graph.node if n.op_type == "Add"):
        assert "BatchNormalization" in [producers.get(i) for i in n.input]


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_batchnorm_is_not_identity(built, name):
    graph = built[name].graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    for bn in (n for n in graph.node if n.op_type == "BatchNormalization"):
        gamma, beta, mean, var = (inits[i] for i in bn.input[1:5])
        assert np.all(np.isfinite(mean)) and np.all(var > 0)
        assert gamma.std() > 0.1 and beta.std() > 0.05
        assert not np.allclose(mean, 0.0, atol=1e-3) and not np.allclose(var, 1.0, atol=1e-2)


def test_cli_writes_models(tmp_path, capsys):
    mbm.main([str(tmp_path), "mlp_784_512_512_10"])
    path = tmp_path / "mlp_784_512_512_10.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert mbm.model_stats(model)["params"] == EXPECTED["mlp_784_512_512_10"]["params"]
    assert "669,706" in capsys.readouterr().out
