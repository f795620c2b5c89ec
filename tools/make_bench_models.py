"""Write the benchmark models: real topologies with random weights, built with onnx.helper.

    python tools/make_bench_models.py OUT_DIR [NAME ...]     # default: all of MODELS

No torch: graphs are written node by node, as the ONNX exporters lay them out (opset 13,
input "input", output "logits", dynamic batch axis "N"). Weights come from a fixed numpy seed per
model; BN statistics are measured with onnxruntime, so the files are byte-reproducible on one
machine and equal up to float rounding across machines.

    resnet18              [N,3,224,224] -> [N,1000]  torchvision ResNet-18: conv7x7/2,
                          maxpool 3x3/2, 4 stages x 2 BasicBlocks (64,128,256,512), 1x1/2
                          downsample conv + BN in the first block of stages 2-4,
                          GlobalAveragePool, Flatten, Gemm 512->1000.
                          11,689,512 parameters, 1.814 GMAC.
    mobilenetv2           [N,3,224,224] -> [N,1000]  torchvision MobileNetV2 1.0: conv3x3/2 to 32,
                          17 inverted residuals (expansion 6 except the first, depthwise 3x3,
                          ReLU6 as Clip(0,6), linear bottleneck, residual Add when stride 1 and
                          cin == cout), 1x1 conv to 1280, GlobalAveragePool, Flatten,
                          Gemm 1280->1000. 3,504,872 parameters, 0.30 GMAC.
    mlp_784_512_512_10    [N,784] -> [N,10]  Gemm+Relu, Gemm+Relu, Gemm. 669,706 parameters.

Weight scales keep activations in the range of a trained network: convs and hidden Gemms are
He-initialised (std = sqrt(2 / fan_in)); BN scale and bias are random (gamma in [0.5, 1.5], beta
~ N(0, 0.2)) and BN running statistics are measured on image-like random inputs, layer by layer
with onnxruntime, then jittered (see calibrate_batchnorm). So every BN is far from an identity and
folding it changes its conv's weights and bias, while activations keep the scale of a trained
network (residual sums of a few units, no blow-up or collapse with depth). Parameter counts
follow torchvision (BN scale and bias count, running statistics do not).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8      # what opset-13 era exporters write; every onnxruntime >= 1.10 reads it
BN_EPS = 1e-5


class GraphBuilder:
    """Appends nodes and random initializers, tracking each activation's channel count.
    BatchNormalization statistics start as placeholders (mean 0, var 1); `calibrate_batchnorm`
    replaces them with measured ones."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.channels: dict[str, int] = {}

    def _init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def _node(self, op: str, inputs: list[str], output: str, channels: int, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        self.channels[output] = channels
        return output

    def conv(self, x: str, name: str, cout: int, k: int, stride: int = 1,
             groups: int = 1) -> str:
        cin = self.channels[x]
        fan_in = cin // groups * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k))   # He
        return self._node("Conv", [x, self._init(f"{name}.weight", w)], name, cout,
                          kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
                          group=groups, dilations=[1, 1])

    def batchnorm(self, x: str, name: str) -> str:
        c = self.channels[x]
        inputs = [x, self._init(f"{name}.weight", self.rng.uniform(0.5, 1.5, c)),
                  self._init(f"{name}.bias", self.rng.normal(0.0, 0.2, c)),
                  self._init(f"{name}.running_mean", np.zeros(c)),
                  self._init(f"{name}.running_var", np.ones(c))]
        return self._node("BatchNormalization", inputs, name, c, epsilon=BN_EPS, momentum=0.9)

    def relu(self, x: str, name: str) -> str:
        return self._node("Relu", [x], name, self.channels[x])

    def relu6(self, x: str, name: str) -> str:
        if not any(t.name == "relu6_min" for t in self.inits):
            self._init("relu6_min", np.array(0.0))
            self._init("relu6_max", np.array(6.0))
        return self._node("Clip", [x, "relu6_min", "relu6_max"], name, self.channels[x])

    def add(self, a: str, b: str, name: str) -> str:
        return self._node("Add", [a, b], name, self.channels[a])

    def maxpool(self, x: str, name: str, k: int, stride: int) -> str:
        return self._node("MaxPool", [x], name, self.channels[x], kernel_shape=[k, k],
                          strides=[stride, stride], pads=[k // 2] * 4)

    def global_pool_flatten(self, x: str, name: str) -> str:
        pooled = self._node("GlobalAveragePool", [x], f"{name}.pool", self.channels[x])
        return self._node("Flatten", [pooled], f"{name}.flatten", self.channels[x], axis=1)

    def gemm(self, x: str, name: str, cout: int, gain: float = 1.0,
             output: str | None = None) -> str:
        """gain 2 (He) before a ReLU, 1 for the logits layer."""
        cin = self.channels[x]
        w = self.rng.normal(0.0, np.sqrt(gain / cin), (cout, cin))    # torch layout, transB=1
        b = self.rng.normal(0.0, 0.05, cout)
        return self._node("Gemm", [x, self._init(f"{name}.weight", w),
                                   self._init(f"{name}.bias", b)],
                          output or name, cout, alpha=1.0, beta=1.0, transB=1)

    def model(self, name: str, x: str, input_shape: list, y: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["N", self.channels[y]])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="nqrt tools/make_bench_models.py")
        model.ir_version = IR_VERSION
        if any(n.op_type == "BatchNormalization" for n in self.nodes):
            calibrate_batchnorm(model, self.rng)
        return model


def calibrate_batchnorm(model: onnx.ModelProto, rng: np.random.Generator,
                        batch: int = 2) -> None:
    """Set every BN's running statistics from its input on `sample_input` images, in graph
    order (each BN sees the already-calibrated ones upstream), then jitter them (mean by 0.1 std,
    variance by a factor in [0.8, 1.25]): BN outputs get roughly unit scale, as in a trained
    network, and no BN is an identity. The statistics are fed as graph inputs so one
    onnxruntime session serves all passes; the result is written back into the initializers."""
    import onnxruntime as ort

    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    inits = {t.name: t for t in model.graph.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    stats = [name for bn in bns for name in bn.input[3:5]]
    probe.graph.input.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                           list(inits[name].dims))
                             for name in stats)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=bn.input[0]) for bn in bns)
    sess = ort.InferenceSession(probe.SerializeToString(), _ort_options(),
                                providers=["CPUExecutionProvider"])
    feeds = {"input": sample_input(model, batch, seed=1)}
    feeds.update((name, numpy_helper.to_array(inits[name])) for name in stats)
    for bn in bns:
        a = sess.run([bn.input[0]], feeds)[0].astype(np.float64)
        mean, std = a.mean(axis=(0, 2, 3)), a.std(axis=(0, 2, 3))
        # channels that are constant (dead ReLU6 upstream of a depthwise conv) keep a floor
        std = np.maximum(std, 1e-3 * max(float(np.median(std)), 1e-6))
        feeds[bn.input[3]] = (mean + rng.normal(0.0, 0.1, mean.shape) * std).astype(np.float32)
        feeds[bn.input[4]] = (std**2 * np.exp(rng.uniform(np.log(0.8), np.log(1.25), std.shape))
                              ).astype(np.float32)
    for name in stats:
        inits[name].CopyFrom(numpy_helper.from_array(feeds[name], name))


def _ort_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3     # the probe's overridable initializers draw a warning each
    return opts


def resnet18() -> onnx.ModelProto:
    g = GraphBuilder(seed=18)
    x = "input"
    g.channels[x] = 3
    h = g.relu(g.batchnorm(g.conv(x, "conv1", 64, 7, stride=2), "bn1"), "relu")
    h = g.maxpool(h, "maxpool", 3, 2)
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            branch = g.relu(g.batchnorm(g.conv(h, f"{p}.conv1", cout, 3, stride), f"{p}.bn1"),
                            f"{p}.relu1")
            branch = g.batchnorm(g.conv(branch, f"{p}.conv2", cout, 3), f"{p}.bn2")
            shortcut = h
            if stride != 1 or g.channels[h] != cout:
                shortcut = g.batchnorm(g.conv(h, f"{p}.downsample.0", cout, 1, stride),
                                       f"{p}.downsample.1")
            h = g.relu(g.add(branch, shortcut, f"{p}.add"), f"{p}.relu2")
    h = g.global_pool_flatten(h, "avgpool")
    y = g.gemm(h, "fc", 1000, output="logits")
    return g.model("resnet18", x, ["N", 3, 224, 224], y)


# torchvision MobileNetV2 1.0: (expansion t, output channels c, repeats n, first stride s)
MOBILENETV2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenetv2() -> onnx.ModelProto:
    g = GraphBuilder(seed=2)
    x = "input"
    g.channels[x] = 3
    h = g.relu6(g.batchnorm(g.conv(x, "features.0.0", 32, 3, stride=2), "features.0.1"),
                "features.0.2")
    index = 1
    for t, c, n, s in MOBILENETV2_SETTINGS:
        for i in range(n):
            p = f"features.{index}"
            cin, stride = g.channels[h], (s if i == 0 else 1)
            hidden = cin * t
            z = h
            if t != 1:
                z = g.relu6(g.batchnorm(g.conv(z, f"{p}.expand", hidden, 1), f"{p}.expand_bn"),
                            f"{p}.expand_relu6")
            z = g.relu6(g.batchnorm(g.conv(z, f"{p}.dw", hidden, 3, stride, groups=hidden),
                                    f"{p}.dw_bn"), f"{p}.dw_relu6")
            z = g.batchnorm(g.conv(z, f"{p}.project", c, 1), f"{p}.project_bn")   # linear
            h = g.add(h, z, f"{p}.add") if stride == 1 and cin == c else z
            index += 1
    h = g.relu6(g.batchnorm(g.conv(h, f"features.{index}.0", 1280, 1), f"features.{index}.1"),
                f"features.{index}.2")
    h = g.global_pool_flatten(h, "avgpool")
    y = g.gemm(h, "classifier.1", 1000, output="logits")
    return g.model("mobilenetv2", x, ["N", 3, 224, 224], y)


def mlp_784_512_512_10() -> onnx.ModelProto:
    g = GraphBuilder(seed=784)
    x = "input"
    g.channels[x] = 784
    h = x
    for i, cout in enumerate((512, 512), start=1):
        h = g.relu(g.gemm(h, f"fc{i}", cout, gain=2.0), f"relu{i}")
    y = g.gemm(h, "fc3", 10, output="logits")
    return g.model("mlp_784_512_512_10", x, ["N", 784], y)


MODELS = {
    "resnet18": resnet18,
    "mobilenetv2": mobilenetv2,
    "mlp_784_512_512_10": mlp_784_512_512_10,
}


def model_stats(model: onnx.ModelProto) -> dict[str, int]:
    """Parameters (torchvision convention: no BN running stats, no Clip bounds) and
    multiply-accumulates per sample of Conv and Gemm nodes, from the graph itself."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(graph.value_info) + list(graph.output) + list(graph.input)}
    weights = {t.name: list(t.dims) for t in graph.initializer}
    not_params = set()
    for n in graph.node:
        if n.op_type == "BatchNormalization":
            not_params.update(n.input[3:5])
        elif n.op_type == "Clip":
            not_params.update(n.input[1:])
    params = sum(int(np.prod(dims)) for name, dims in weights.items() if name not in not_params)
    macs = 0
    for n in graph.node:
        if n.op_type == "Conv":
            cout, cin_per_group, kh, kw = weights[n.input[1]]
            macs += int(np.prod(shapes[n.output[0]][1:])) * cin_per_group * kh * kw
        elif n.op_type == "Gemm":
            macs += int(np.prod(weights[n.input[1]]))
    return {"params": params, "macs": macs}


def sample_input(model: onnx.ModelProto, batch: int, seed: int = 0) -> np.ndarray:
    """Image-like input: smooth random structure (upsampled 7x7 noise) plus pixel noise, roughly
    unit variance, so different samples give different GAP features."""
    rng = np.random.default_rng(seed)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    if len(dims) == 3:
        c, h, w = dims
        coarse = rng.normal(0.0, 1.0, (batch, c, 7, 7))
        smooth = np.repeat(np.repeat(coarse, -(-h // 7), axis=2), -(-w // 7), axis=3)[..., :h, :w]
        return (0.9 * smooth + 0.45 * rng.normal(0.0, 1.0, (batch, c, h, w))).astype(np.float32)
    return rng.normal(0.0, 1.0, (batch, *dims)).astype(np.float32)


def check(model: onnx.ModelProto) -> np.ndarray:
    """Run in onnxruntime at batch 1 and 8; outputs must be finite, agree across batch sizes
    and differ between samples. Returns the batch-8 logits."""
    import onnxruntime as ort

    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), _ort_options(),
                                providers=["CPUExecutionProvider"])
    x = sample_input(model, 8)
    y8 = sess.run(["logits"], {"input": x})[0]
    y1 = sess.run(["logits"], {"input": x[:1]})[0]
    if not (np.all(np.isfinite(y8)) and np.allclose(y1, y8[:1], rtol=1e-4, atol=1e-4)):
        raise RuntimeError(f"{model.graph.name}: non-finite outputs or batch-size dependence")
    spread_samples = float(np.std(y8 - y8.mean(axis=0)))      # how much samples differ
    spread_classes = float(np.std(y8.mean(axis=0)))
    if not (0.01 < spread_samples < 1e3 and spread_classes < 1e3):
        raise RuntimeError(f"{model.graph.name}: degenerate outputs (sample spread "
                           f"{spread_samples:.3g}, class spread {spread_classes:.3g})")
    return y8


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__.split("\n\n")[1])
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in argv[1:] or list(MODELS):
        model = MODELS[name]()
        stats = model_stats(model)
        logits = check(model)
        path = out_dir / f"{name}.onnx"
        onnx.save(model, str(path))
        print(f"{name:20s} params {stats['params']:>10,}  {stats['macs'] / 1e9:7.4f} GMAC  "
              f"{path.stat().st_size / 1e6:6.1f} MB  logits std {logits.std():.3g}  "
              f"argmax {logits.argmax(1).tolist()}  -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
