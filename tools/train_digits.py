"""Train the bundled example models on scikit-learn's handwritten digits and export them to ONNX.

    python tools/train_digits.py [OUT_DIR]      # default: nqrt/examples

Tool-time only: needs torch (2.13.0, CPU) and scikit-learn; the nqrt package never imports torch.

Data: `sklearn.datasets.load_digits()` -- 1797 8x8 images with integer pixels 0..16, scaled to x/16
(float32, so every pixel is exactly k/16). Fixed stratified split (SPLIT_SEED):
    test  540 images, disjoint from everything else
    train the other 1257 images; the models are trained on all of them
    calib 200 images, a stratified subset of train (calibration data comes from the training
          distribution, as in a real deployment)

Writes, all small (< 1 MB together):
    digits_cnn.onnx, digits_resnet.onnx, digits_mlp.onnx
                           opset 13, input "input", output "logits", dynamic batch axis "N"
    digits_calib.npz       {input: [200,1,8,8] f32}
    digits_calib_flat.npz  {input: [200,64] f32}            same images, flattened row-major
    digits_test.npz        {input: [540,1,8,8] f32, label: [540] i64}
    digits_test_flat.npz   {input: [540,64] f32, label: [540] i64}
    models.json            a list, one entry per model: name, file, input/output names, input
                           shape, calib and test files, FP32 test accuracy measured by
                           onnxruntime, op counts of the exported graph, description

Exports use the legacy TorchScript exporter (dynamo=False) with do_constant_folding=False, and no
simplifier runs afterwards: BatchNormalization, Clip (ReLU6) with Constant min/max inputs and the
Shape->Gather->Unsqueeze->Concat->Reshape chain of `x.view(x.size(0), -1)` stay in the graphs, as in
models found in the wild. The converter has to fold and resolve them itself.

Deterministic: fixed seeds, one thread, torch.use_deterministic_algorithms(True); rerunning the
script reproduces the same files.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SPLIT_SEED = 20240611
TORCH_SEED = 1234
N_TEST = 540
N_CALIB = 200
OPSET = 13
DATASET = (f"sklearn load_digits, x/16 float32; stratified split seed {SPLIT_SEED}: "
           f"train 1257, calib {N_CALIB} (subset of train), test {N_TEST}")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "nqrt" / "examples"


# ---------------------------------------------------------------------------------------------
# data

def load_split() -> dict[str, np.ndarray]:
    """The fixed split; images are [N,1,8,8] float32 in [0,1], labels int64."""
    digits = load_digits()
    x = (digits.data.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=N_TEST, stratify=y, random_state=SPLIT_SEED)
    _, x_calib, _, _ = train_test_split(
        x_train, y_train, test_size=N_CALIB, stratify=y_train, random_state=SPLIT_SEED + 1)
    return {"x_train": x_train, "y_train": y_train, "x_calib": x_calib,
            "x_test": x_test, "y_test": y_test}


# ---------------------------------------------------------------------------------------------
# models

def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


class DigitsCNN(nn.Module):
    """MobileNet-style: conv-BN-ReLU6, depthwise-BN-ReLU6, pointwise-BN-ReLU6, maxpool,
    stride-2 conv, global average pool, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(1, 16, 3), nn.ReLU6(),                 # 8x8
            *conv_bn(16, 16, 3, groups=16), nn.ReLU6(),     # depthwise
            *conv_bn(16, 32, 1), nn.ReLU6(),                # pointwise
            nn.MaxPool2d(2),                                # 4x4
            *conv_bn(32, 48, 3, stride=2), nn.ReLU6(),      # 2x2
            nn.AdaptiveAvgPool2d(1),                        # -> GlobalAveragePool
        )
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(*conv_bn(c, c, 3), nn.ReLU(), *conv_bn(c, c, 3))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.branch(x))


class InceptionBlock(nn.Module):
    """Two parallel branches (1x1 and 1x1->3x3) concatenated on channels."""

    def __init__(self, cin: int, c_each: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(*conv_bn(cin, c_each, 1), nn.ReLU())
        self.b3 = nn.Sequential(*conv_bn(cin, c_each, 1), nn.ReLU(), *conv_bn(c_each, c_each, 3),
                                nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x)], dim=1)


class DigitsResNet(nn.Module):
    """stem, residual block (Add), inception block (Concat), avgpool, view-flatten, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, 16, 3), nn.ReLU())      # 8x8
        self.block = BasicBlock(16)
        self.mix = InceptionBlock(16, 16)                              # 32 ch
        self.pool = nn.AvgPool2d(2)                                    # 4x4
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.mix(self.block(self.stem(x))))
        # exports as Shape->Gather->Unsqueeze->Concat->Reshape
        return self.head(x.view(x.size(0), -1))


class DigitsMLP(nn.Module):
    """64 -> 128 -> 64 -> 10 on the flattened image."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                 nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# name -> (module class, flat input?, epochs, required op types, description)
MODELS = {
    "digits_cnn": (DigitsCNN, False, 30, {"Conv", "BatchNormalization", "Clip", "MaxPool",
                                          "GlobalAveragePool", "Flatten", "Gemm"},
                   "MobileNet-style CNN: Conv+BN+ReLU6, depthwise 3x3+BN+ReLU6, pointwise 1x1, "
                   "MaxPool, stride-2 conv, GlobalAveragePool, Gemm head"),
    "digits_resnet": (DigitsResNet, False, 30, {"Conv", "BatchNormalization", "Relu", "Add",
                                                "Concat", "AveragePool", "Shape", "Gather",
                                                "Unsqueeze", "Reshape", "Gemm"},
                      "small residual net: BasicBlock with residual Add, inception-style branch "
                      "Concat, AveragePool, view-flatten (Shape/Gather/Unsqueeze/Concat/Reshape), "
                      "Gemm head"),
    "digits_mlp": (DigitsMLP, True, 40, {"Gemm", "Relu"},
                   "MLP 64-128-64-10 with ReLU on the flattened 8x8 image"),
}


# ---------------------------------------------------------------------------------------------
# training, export, check

def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    gen = torch.Generator().manual_seed(TORCH_SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


def export(model: nn.Module, example: np.ndarray, path: Path) -> None:
    torch.onnx.export(
        model, (torch.from_numpy(example),), str(path),
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=OPSET, do_constant_folding=False, dynamo=False)


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    return float(np.mean(np.argmax(logits, axis=1) == y))


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_split()
    flat = {k: v.reshape(len(v), 64) for k, v in data.items() if k.startswith("x_")}

    # savez_compressed: pixels are k/16, so the files compress well; np.load reads both kinds
    np.savez_compressed(out_dir / "digits_calib.npz", input=data["x_calib"])
    np.savez_compressed(out_dir / "digits_calib_flat.npz", input=flat["x_calib"])
    np.savez_compressed(out_dir / "digits_test.npz", input=data["x_test"], label=data["y_test"])
    np.savez_compressed(out_dir / "digits_test_flat.npz", input=flat["x_test"],
                        label=data["y_test"])

    entries = []
    for name, (cls, is_flat, epochs, required_ops, description) in MODELS.items():
        torch.manual_seed(TORCH_SEED)
        np.random.seed(TORCH_SEED)
        model = cls()
        src = flat if is_flat else data
        train(model, src["x_train"], data["y_train"], epochs)
        path = out_dir / f"{name}.onnx"
        export(model, src["x_test"][:2], path)

        graph = onnx.load(str(path)).graph
        ops = sorted({n.op_type for n in graph.node})
        missing = required_ops - set(ops)
        if missing:
            raise SystemExit(f"{name}: exported graph lacks {sorted(missing)}; has {ops}")
        acc = ort_accuracy(path, src["x_test"], data["y_test"])
        with torch.no_grad():
            torch_acc = float((model(torch.from_numpy(src["x_test"])).argmax(1).numpy()
                               == data["y_test"]).mean())
        print(f"{name}: test acc onnxruntime {acc:.4f} torch {torch_acc:.4f}  "
              f"{path.stat().st_size} bytes  ops {ops}")
        if acc < 0.95:
            raise SystemExit(f"{name}: FP32 accuracy {acc:.4f} < 0.95")
        suffix = "_flat" if is_flat else ""
        entries.append({
            "name": name,
            "file": path.name,
            "input": "input",
            "output": "logits",
            "input_shape": ["N", 64] if is_flat else ["N", 1, 8, 8],
            "calib": f"digits_calib{suffix}.npz",
            "test": f"digits_test{suffix}.npz",
            "fp32_accuracy": acc,
            "op_counts": dict(sorted(Counter(n.op_type for n in graph.node).items())),
            "description": description,
            "dataset": DATASET,
        })

    (out_dir / "models.json").write_text(json.dumps(entries, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
