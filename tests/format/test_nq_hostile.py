"""Hand-crafted hostile documents with a VALID checksum: each validation rule of spec
section 5 rejects with its specific one-line message (and never anything but FormatError)."""

from __future__ import annotations

import re

import msgpack
import numpy as np
import pytest

from nqrt import FormatError
from nqrt.format.reader import read_nq
from nqrt.format.writer import dumps_nq

from conftest import doc_of, file_of, pack_file, sample_model

VALID = dumps_nq(sample_model())


def T(doc, name):
    return next(t for t in doc["tensors"] if t["name"] == name)


def N(doc, name):
    return next(n for n in doc["nodes"] if n["name"] == name)


def i32(*values):
    return np.array(values, dtype="<i4").tobytes()


def setdata(t, dtype, shape, data):
    t.update(dtype=dtype, shape=list(shape), data=data)


def _move(doc, name, before):
    nodes = doc["nodes"]
    node = N(doc, name)
    nodes.remove(node)
    nodes.insert(nodes.index(N(doc, before)), node)


def _ln(d, axis=3, eps=1e-5, scale=None, shape=None):
    """Mutate the sample's LayerNormalization 'ln' ('ccf' float32 [N, 8, 5, 5] -> 'lnorm'):
    its attributes, its scale's values or its scale's shape."""
    N(d, "ln")["attrs"].update(axis=axis, epsilon=eps)
    if shape is not None:
        scale = np.ones(shape, "<f4")
    if scale is not None:
        setdata(T(d, "ln.s"), "float32", scale.shape, scale.tobytes())


# (id, mutation of the decoded document, exact message prefix)
CASES = [
    # --- LayerNormalization (a branch appended to the sample) --------------------------
    ("ln-axis", lambda d: _ln(d, axis=4),
     "node 'ln' (LayerNormalization): attribute axis must be in [0, 3], got 4"),
    ("ln-epsilon", lambda d: _ln(d, eps=-1.0),
     "node 'ln' (LayerNormalization): epsilon must be finite and >= 0, got -1.0"),
    ("ln-rms-flag", lambda d: N(d, "ln")["attrs"].update(rms=3),
     "node 'ln' (LayerNormalization): attribute rms must be 0 or 1, got 3"),
    ("ln-scale-shape", lambda d: _ln(d, shape=(4,)),
     "node 'ln' (LayerNormalization): scale 'ln.s' has shape [4], expected [5]"),
    ("ln-scale-nan", lambda d: _ln(d, scale=np.array([1, 2, np.nan, 1, 1], "<f4")),
     "node 'ln' (LayerNormalization): scale 'ln.s' has a non-finite value"),
    ("ln-symbolic-norm", lambda d: _ln(d, axis=0, shape=(2, 8, 5, 5)),
     "node 'ln' (LayerNormalization): the normalized dims ['N', 8, 5, 5] of x must be ints"),
    # --- document / types -------------------------------------------------------------
    ("missing-key", lambda d: d.pop("nodes"), "document: missing key 'nodes'"),
    ("unknown-doc-key", lambda d: d.update(extra=1), "document: unknown key 'extra'"),
    ("nodes-map", lambda d: d.update(nodes={}), "nodes must be an array, got map"),
    ("producer-extra", lambda d: d["producer"].update(x="1"), "producer: unknown key 'x'"),
    ("producer-type", lambda d: d["producer"].update(name=3), "producer.name must be a str, got int"),
    ("metadata-type", lambda d: d.update(metadata=[1]), "metadata must be a map, got array"),
    # --- tensors ----------------------------------------------------------------------
    ("tensor-not-map", lambda d: d["tensors"].insert(0, "x"), "tensors[0] must be a map, got str"),
    ("tensor-missing-quant", lambda d: d["tensors"][0].pop("quant"), "tensors[0]: missing key 'quant'"),
    ("tensor-unknown-key", lambda d: d["tensors"][3].update(extra=1), "tensors[3]: unknown key 'extra'"),
    ("name-int", lambda d: d["tensors"][0].update(name=7), "tensors[0].name must be a str, got int"),
    ("name-empty", lambda d: d["tensors"][0].update(name=""), "tensors[0].name must not be empty"),
    ("name-long", lambda d: d["tensors"][0].update(name="n" * 4097), "tensors[0].name is longer than 4096 bytes"),
    ("duplicate-tensor", lambda d: d["tensors"].append(dict(T(d, "c1"))), "duplicate tensor name 'c1'"),
    ("unknown-dtype", lambda d: T(d, "c1").update(dtype="bfloat16"), "tensor 'c1': unknown dtype 'bfloat16'"),
    ("dtype-type", lambda d: T(d, "c1").update(dtype=["uint8"]), "tensor 'c1': unknown dtype ['uint8']"),
    ("shape-str", lambda d: T(d, "c1").update(shape="N48"), "tensor 'c1': shape must be an array, got str"),
    ("dim-float", lambda d: T(d, "c1")["shape"].__setitem__(1, 4.0),
     "tensor 'c1': shape[1] must be an int or a str symbol, got float"),
    ("dim-bool", lambda d: T(d, "c1")["shape"].__setitem__(1, True),
     "tensor 'c1': shape[1] must be an int or a str symbol, got bool"),
    ("dim-negative", lambda d: T(d, "c1")["shape"].__setitem__(1, -4),
     "tensor 'c1': shape[1] = -4 is out of range [0, 2147483647]"),
    ("dim-huge", lambda d: T(d, "c1")["shape"].__setitem__(1, 2**64 - 1),
     "tensor 'c1': shape[1] = 18446744073709551615 is out of range [0, 2147483647]"),
    ("dim-symbol-empty", lambda d: T(d, "c1")["shape"].__setitem__(0, ""),
     "tensor 'c1': shape[0] (symbol) must not be empty"),
    ("rank-9", lambda d: T(d, "c1").update(shape=[1] * 9), "tensor 'c1': shape has 9 entries (limit 8)"),
    ("const-symbolic", lambda d: T(d, "c1.w")["shape"].__setitem__(0, "M"),
     "tensor 'c1.w': constant tensor has symbolic dim 'M'"),
    ("data-short", lambda d: T(d, "c1.w").update(data=T(d, "c1.w")["data"][:-1]),
     "tensor 'c1.w': data has 107 bytes, expected 108 for int8[4,3,3,3]"),
    ("data-overflowing-dims", lambda d: T(d, "c1.w").update(shape=[2**31 - 1] * 8),
     f"tensor 'c1.w': data has 108 bytes, expected {(2**31 - 1) ** 8} for int8[{','.join(['2147483647'] * 8)}]"),
    ("data-str", lambda d: T(d, "c1.w").update(data="abc"), "tensor 'c1.w': data must be bin or nil, got str"),
    ("weight-minus-128", lambda d: T(d, "c1.w").update(data=b"\x80" + T(d, "c1.w")["data"][1:]),
     "tensor 'c1.w': int8 weight value -128 (weights must be in [-127, 127])"),
    ("orphan-runtime", lambda d: d["tensors"].append({**T(d, "c1"), "name": "orphan"}),
     "tensor 'orphan': run-time tensor (data nil) is neither a graph input nor produced by a node"),
    # --- quant ------------------------------------------------------------------------
    ("quant-not-map", lambda d: T(d, "c1").update(quant=[0.1, 0]), "tensor 'c1': quant must be a map, got array"),
    ("quant-extra", lambda d: T(d, "c1")["quant"].update(bits=8), "tensor 'c1': quant: unknown key 'bits'"),
    ("runtime-uint8-no-quant", lambda d: T(d, "c1").update(quant=None),
     "tensor 'c1': run-time uint8 tensor needs per-tensor quant"),
    ("float-quant", lambda d: T(d, "x").update(quant={"scale": [1.0], "zero_point": [0], "axis": None}),
     "tensor 'x': a float32 tensor cannot have quant (must be nil)"),
    ("per-channel-short", lambda d: [T(d, "c1.w")["quant"][k].pop() for k in ("scale", "zero_point")],
     "tensor 'c1.w': quant has 3 scales, expected 4 (per-channel along axis 0 of int8[4,3,3,3])"),
    ("zp-count", lambda d: T(d, "c1.w")["quant"]["zero_point"].append(0),
     "tensor 'c1.w': quant has 5 zero points for 4 scales"),
    ("axis-range", lambda d: T(d, "c1.w")["quant"].update(axis=4),
     "tensor 'c1.w': quant.axis = 4 is out of range [0, 3]"),
    ("axis-symbolic", lambda d: T(d, "c1")["quant"].update(axis=0),
     "tensor 'c1': per-channel quant along symbolic dim 'N'"),
    ("scale-nan", lambda d: T(d, "xq")["quant"].update(scale=[float("nan")]),
     "tensor 'xq': quant.scale[0] = nan must be finite and > 0"),
    ("scale-inf", lambda d: T(d, "xq")["quant"].update(scale=[float("inf")]),
     "tensor 'xq': quant.scale[0] = inf must be finite and > 0"),
    ("scale-zero", lambda d: T(d, "xq")["quant"].update(scale=[0.0]),
     "tensor 'xq': quant.scale[0] = 0.0 must be finite and > 0"),
    ("scale-negative", lambda d: T(d, "xq")["quant"].update(scale=[-0.5]),
     "tensor 'xq': quant.scale[0] = -0.5 must be finite and > 0"),
    ("scale-float64", lambda d: T(d, "xq")["quant"].update(scale=[0.1]),
     "tensor 'xq': quant.scale[0] = 0.1 is not a float32 value"),
    ("scale-beyond-float32", lambda d: T(d, "xq")["quant"].update(scale=[1e300]),
     "tensor 'xq': quant.scale[0] = 1e+300 is not a float32 value"),
    ("scale-int", lambda d: T(d, "xq")["quant"].update(scale=[1]),
     "tensor 'xq': quant.scale[0] must be a float, got int"),
    ("zp-range", lambda d: T(d, "xq")["quant"].update(zero_point=[256]),
     "tensor 'xq': quant.zero_point[0] = 256 is out of range [0, 255]"),
    ("zp-int8-range", lambda d: T(d, "c2.w")["quant"].update(zero_point=[-129]),
     "tensor 'c2.w': quant.zero_point[0] = -129 is out of range [-128, 127]"),
    ("weights-asymmetric", lambda d: T(d, "c2.w")["quant"].update(zero_point=[1]),
     "node 'conv2_dw' (QConv): weights 'c2.w': zero points must be 0 (symmetric)"),
    ("weights-no-quant", lambda d: T(d, "c2.w").update(quant=None),
     "node 'conv2_dw' (QConv): weights 'c2.w' must have quant (symmetric, zero point 0)"),
    # --- graph io ---------------------------------------------------------------------
    ("input-dtype", lambda d: d["graph_inputs"][0].update(dtype="uint8"),
     "graph input 'x': dtype must be 'float32', got 'uint8'"),
    ("input-shape", lambda d: d["graph_inputs"][0].update(shape=["N", 3, 8, 9]),
     "graph input 'x': shape ['N', 3, 8, 9] differs from the tensor's ['N', 3, 8, 8]"),
    ("input-missing", lambda d: d["graph_inputs"][0].update(name="ghost"), "graph input 'ghost' is not in tensors"),
    ("input-dup", lambda d: d["graph_inputs"].append(d["graph_inputs"][0]), "duplicate graph input 'x'"),
    ("input-extra-key", lambda d: d["graph_inputs"][0].update(layout="NCHW"),
     "graph_inputs[0]: unknown key 'layout'"),
    ("input-quantized", lambda d: d["graph_inputs"].append({"name": "xq", "dtype": "float32", "shape": ["N", 3, 8, 8]}),
     "graph input 'xq': its tensor must be a run-time float32 tensor without quant"),
    ("output-not-produced", lambda d: d["graph_outputs"].append({"name": "x", "dtype": "float32", "shape": ["N", 3, 8, 8]}),
     "graph output 'x' is not produced by any node"),
    ("output-missing", lambda d: d["graph_outputs"][0].update(name="ghost"), "graph output 'ghost' is not in tensors"),
    ("outputs-empty", lambda d: d.update(graph_outputs=[]), "graph_outputs is empty: the graph has no outputs"),
    # --- nodes ------------------------------------------------------------------------
    ("node-not-map", lambda d: d["nodes"].append(None), "nodes[19] must be a map, got nil"),
    ("unknown-op", lambda d: N(d, "clip").update(op="Gelu"), "node 'clip' (Gelu): unknown op 'Gelu'"),
    ("op-newline", lambda d: N(d, "clip").update(op="Evil\nOp"), "node 'clip' ('Evil\\nOp'): unknown op 'Evil\\nOp'"),
    ("op-type", lambda d: N(d, "clip").update(op=1), "nodes[6].op must be a str, got int"),
    ("node-unknown-key", lambda d: N(d, "clip").update(domain="x"), "nodes[6]: unknown key 'domain'"),
    ("unnamed-node", lambda d: d["nodes"][13].update(op="Nope"), "nodes[13] (Nope): unknown op 'Nope'"),
    ("input-count", lambda d: N(d, "conv1")["inputs"].pop(), "node 'conv1' (QConv): expected 5 inputs, got 4"),
    ("output-count", lambda d: N(d, "conv1")["outputs"].append("c2"), "node 'conv1' (QConv): expected 1 outputs, got 2"),
    ("concat-no-inputs", lambda d: N(d, "concat").update(inputs=[]),
     "node 'concat' (QConcat): expected at least 1 inputs, got 0"),
    ("too-many-inputs", lambda d: N(d, "concat").update(inputs=["cl"] * 4097),
     "node 'concat' (QConcat): inputs has 4097 entries (limit 4096)"),
    ("input-not-str", lambda d: N(d, "clip")["inputs"].__setitem__(0, 5),
     "node 'clip' (QClip): inputs[0] must be a str, got int"),
    ("input-unknown", lambda d: N(d, "clip")["inputs"].__setitem__(0, "ghost"),
     "node 'clip' (QClip): input x 'ghost' is not in tensors"),
    ("read-before-produced", lambda d: _move(d, "add", before="conv2_dw"),
     "node 'add' (QAdd): input b 'c2' is read before it is produced"),
    ("cycle", lambda d: N(d, "conv1")["inputs"].__setitem__(0, "a1"),
     "node 'conv1' (QConv): input x 'a1' is read before it is produced"),
    ("self-loop", lambda d: N(d, "clip")["inputs"].__setitem__(0, "cl"),
     "node 'clip' (QClip): input x 'cl' is read before it is produced"),
    ("role-dtype", lambda d: N(d, "add")["inputs"].__setitem__(0, "x"),
     "node 'add' (QAdd): input a 'x' has dtype float32, expected uint8"),
    ("const-as-act", lambda d: N(d, "add")["inputs"].__setitem__(0, "c1.w"),
     "node 'add' (QAdd): input a 'c1.w' must be a run-time tensor, got a constant"),
    ("act-as-const", lambda d: N(d, "conv1")["inputs"].__setitem__(1, "xq"),
     "node 'conv1' (QConv): input w 'xq' must be a constant tensor"),
    ("bias-dtype", lambda d: N(d, "conv1")["inputs"].__setitem__(2, "c1.w"),
     "node 'conv1' (QConv): input bias 'c1.w' has dtype int8, expected int32"),
    ("output-twice", lambda d: N(d, "clip").update(outputs=["p2"]),
     "node 'clip' (QClip): output 'p2' is produced more than once"),
    ("output-const", lambda d: N(d, "clip").update(outputs=["c1.w"]),
     "node 'clip' (QClip): output 'c1.w' is a constant tensor"),
    ("output-graph-input", lambda d: N(d, "softmax").update(outputs=["x"]),
     "node 'softmax' (Softmax): output 'x' is a graph input"),
    ("output-dtype", lambda d: N(d, "dequant").update(outputs=["cl"]),
     "node 'dequant' (Dequantize): output 'cl' is produced more than once"),
    ("output-dtype2", lambda d: N(d, "softmax").update(outputs=["orphan"]) or d["tensors"].append({**T(d, "c1"), "name": "orphan"}),
     "node 'softmax' (Softmax): output 'orphan' has dtype uint8, expected float32"),
    # --- attributes -------------------------------------------------------------------
    ("attrs-type", lambda d: N(d, "clip").update(attrs=[]), "node 'clip' (QClip): attrs must be a map, got array"),
    ("attr-missing", lambda d: N(d, "conv1")["attrs"].pop("group"), "node 'conv1' (QConv): missing attribute 'group'"),
    ("attr-unknown", lambda d: N(d, "conv1")["attrs"].update(alpha=1.0), "node 'conv1' (QConv): unknown attribute 'alpha'"),
    ("attr-bool", lambda d: N(d, "conv1")["attrs"].update(group=True),
     "node 'conv1' (QConv): attribute group must be an int, got bool"),
    ("attr-float", lambda d: N(d, "conv1")["attrs"].update(group=1.0),
     "node 'conv1' (QConv): attribute group must be an int, got float"),
    ("attr-ints-type", lambda d: N(d, "conv1")["attrs"].update(strides=1),
     "node 'conv1' (QConv): attribute strides must be an array, got int"),
    ("act-order", lambda d: N(d, "conv1")["attrs"].update(act_min=200, act_max=100),
     "node 'conv1' (QConv): act_min 200 > act_max 100"),
    ("act-range", lambda d: N(d, "conv1")["attrs"].update(act_max=256),
     "node 'conv1' (QConv): attribute act_max = 256 is out of range [0, 255]"),
    ("stride-zero", lambda d: N(d, "conv1")["attrs"].update(strides=[1, 0]),
     "node 'conv1' (QConv): attribute strides[1] = 0 is out of range [1, 2147483647]"),
    ("pad-negative", lambda d: N(d, "conv1")["attrs"].update(pads=[0, 0, -1, 0]),
     "node 'conv1' (QConv): attribute pads[2] = -1 is out of range [0, 2147483647]"),
    ("pads-length", lambda d: N(d, "conv1")["attrs"].update(pads=[1, 1]),
     "node 'conv1' (QConv): attribute pads has 2 values, expected 4"),
    ("add-shift-high", lambda d: N(d, "add")["attrs"].update(shift=63),
     "node 'add' (QAdd): attribute shift = 63 is out of range [1, 62]"),
    ("add-shift-zero", lambda d: N(d, "add")["attrs"].update(shift=0),
     "node 'add' (QAdd): attribute shift = 0 is out of range [1, 62]"),
    ("add-multiplier", lambda d: N(d, "add")["attrs"].update(multiplier_a=2**31),
     "node 'add' (QAdd): attribute multiplier_a = 2147483648 is out of range [-2147483647, 2147483647]"),
    ("add-broadcast", lambda d: T(d, "c2")["shape"].__setitem__(2, 7),
     "node 'add' (QAdd): shapes ['N', 4, 8, 8] and ['N', 4, 7, 8] do not broadcast"),
    ("concat-shift", lambda d: N(d, "concat")["attrs"].update(shifts=[30, 0]),
     "node 'concat' (QConcat): attribute shifts[1] = 0 is out of range [1, 62]"),
    ("concat-multipliers-len", lambda d: N(d, "concat")["attrs"].update(multipliers=[2**30]),
     "node 'concat' (QConcat): attribute multipliers has 1 values, expected 2"),
    ("concat-axis", lambda d: N(d, "concat")["attrs"].update(axis=4),
     "node 'concat' (QConcat): attribute axis = 4 is out of range [-4, 3] for rank 4"),
    ("concat-dims", lambda d: N(d, "concat")["inputs"].__setitem__(1, "a1"),
     "node 'concat' (QConcat): inputs disagree on dim 2 (5 vs 8) outside the concat axis"),
    # requantization constants
    ("shift-tensor-zero", lambda d: T(d, "c1.n").update(data=i32(0, 5, 5, 5)),
     "node 'conv1' (QConv): 'c1.n'[0] = 0 is out of range [1, 62]"),
    ("shift-tensor-63", lambda d: T(d, "fc.n").update(data=i32(*[9] * 9, 63)),
     "node 'fc' (QGemm): 'fc.n'[9] = 63 is out of range [1, 62]"),
    ("multiplier-negative", lambda d: T(d, "c1.m").update(data=i32(1, 2, -1, 3)),
     "node 'conv1' (QConv): 'c1.m'[2] = -1 is out of range [0, 2147483647]"),
    ("multiplier-length", lambda d: setdata(T(d, "c1.m"), "int32", [3], i32(1, 2, 3)),
     "node 'conv1' (QConv): 'c1.m' has shape [3], expected [4] or [1]"),
    ("multiplier-quant", lambda d: T(d, "c1.m").update(quant={"scale": [1.0], "zero_point": [0], "axis": None}),
     "node 'conv1' (QConv): 'c1.m' is a requantization constant and must have quant nil"),
    ("bias-shape", lambda d: setdata(T(d, "c1.b"), "int32", [1], i32(7)) or T(d, "c1.b").update(
        quant={"scale": [1.0], "zero_point": [0], "axis": None}),
     "node 'conv1' (QConv): bias 'c1.b' has shape [1], expected [4]"),
    # conv geometry
    ("group-not-dividing-M", lambda d: N(d, "conv2_dw")["attrs"].update(group=3),
     "node 'conv2_dw' (QConv): group 3 does not divide the 4 output channels"),
    ("group-channels", lambda d: N(d, "conv2_dw")["attrs"].update(group=2),
     "node 'conv2_dw' (QConv): weights expect 2 input channels (C/group = 1), x has 4"),
    ("group-not-dividing-C", lambda d: (N(d, "conv2_dw")["attrs"].update(group=4),
                                        T(d, "c1")["shape"].__setitem__(1, 6), T(d, "c2")["shape"].__setitem__(1, 6),
                                        T(d, "a1")["shape"].__setitem__(1, 6)),
     "node 'conv1' (QConv): output 'c1' has 6 channels, expected 4"),
    ("conv-rank", lambda d: [t.update(shape=["N", 3, 8, 8, 8]) for t in (T(d, "x"), T(d, "xq"), d["graph_inputs"][0])],
     "node 'conv1' (QConv): 'xq' has rank 5, expected 3 or 4"),
    ("conv-K-bound", lambda d: setdata(T(d, "c1.w"), "int8", [4, 3, 150, 150], bytes(4 * 3 * 150 * 150)),
     "node 'conv1' (QConv): dot-product length K = 67500 exceeds 66000"),
    ("gemm-K-bound", lambda d: setdata(T(d, "fc.w"), "int8", [1, 66001], bytes(66001)) or T(d, "fc.w")["quant"].update(
        scale=[T(d, "fc.w")["quant"]["scale"][0]], zero_point=[0]),
     "node 'fc' (QGemm): dot-product length K = 66001 exceeds 66000"),
    ("gemm-K-mismatch", lambda d: (T(d, "fl")["shape"].__setitem__(1, 9), T(d, "rs")["shape"].__setitem__(1, 9)),
     "node 'fc' (QGemm): x has last dim 9, weights expect K = 8"),
    ("gemm-w-rank", lambda d: setdata(T(d, "fc.w"), "int8", [10, 8, 1], T(d, "fc.w")["data"]),
     "node 'fc' (QGemm): 'fc.w' has rank 3, expected 2"),
    # pools, reductions, shape ops
    ("maxpool-pad", lambda d: N(d, "maxpool")["attrs"].update(pads=[2, 0, 0, 0]),
     "node 'maxpool' (MaxPool): pads[0] = 2 must be smaller than kernel_shape[0] = 2"),
    ("maxpool-ceil", lambda d: N(d, "maxpool")["attrs"].update(ceil_mode=2),
     "node 'maxpool' (MaxPool): attribute ceil_mode = 2 is out of range [0, 1]"),
    ("maxpool-quant", lambda d: T(d, "p1")["quant"].update(zero_point=[4]),
     "node 'maxpool' (MaxPool): output 'p1' must have the input's quant (same scale and zero point)"),
    ("avgpool-table", lambda d: setdata(T(d, "p2.m"), "int32", [4], i32(1, 2, 3, 4)),
     "node 'avgpool' (QAveragePool): 'p2.m' has shape [4], expected [5]"),
    ("avgpool-window", lambda d: N(d, "avgpool")["attrs"].update(kernel_shape=[3000, 3000], pads=[0, 0, 0, 0]),
     "node 'avgpool' (QAveragePool): window size 9000000 exceeds 8421504"),
    ("reduce-axes-dup", lambda d: N(d, "gap")["attrs"].update(axes=[2, -2]),
     "node 'gap' (QReduceMean): attribute axes [2, -2] repeats an axis"),
    ("reduce-count", lambda d: N(d, "gap")["attrs"].update(count=0),
     "node 'gap' (QReduceMean): attribute count = 0 is out of range [1, 8421504]"),
    ("reduce-sum-flag", lambda d: N(d, "gap")["attrs"].update(sum=2),
     "node 'gap' (QReduceMean): attribute sum must be 0 or 1, got 2"),
    ("reduce-sum-kind", lambda d: N(d, "gap")["attrs"].update(sum="yes"),
     "node 'gap' (QReduceMean): attribute sum"),
    ("reduce-keepdims-rank", lambda d: N(d, "gap")["attrs"].update(keepdims=0),
     "node 'gap' (QReduceMean): output 'rm' has rank 4, expected 2"),
    ("transpose-perm", lambda d: N(d, "nhwc")["attrs"].update(perm=[0, 1, 1, 3]),
     "node 'nhwc' (Transpose): attribute perm [0, 1, 1, 3] is not a permutation of 0..3"),
    ("reshape-two-minus-one", lambda d: N(d, "reshape")["attrs"].update(shape=[-1, -1]),
     "node 'reshape' (Reshape): attribute shape [-1, -1] has more than one -1"),
    ("reshape-minus-two", lambda d: N(d, "reshape")["attrs"].update(shape=[0, -2]),
     "node 'reshape' (Reshape): attribute shape[1] = -2 is out of range [-1, 2147483647]"),
    ("flatten-axis", lambda d: d["nodes"][13]["attrs"].update(axis=3),
     "nodes[13] (Flatten): attribute axis = 3 is out of range [-2, 2] for rank 2"),
    ("lrn-size", lambda d: N(d, "lrn")["attrs"].update(size=0),
     "node 'lrn' (LRN): size must be >= 1, got 0"),
    ("lrn-beta", lambda d: N(d, "lrn")["attrs"].update(beta=float("nan")),
     "node 'lrn' (LRN): beta must be finite, got nan"),
    ("softmax-axis", lambda d: N(d, "softmax")["attrs"].update(axis=9),
     "node 'softmax' (Softmax): attribute axis = 9 is out of range [-8, 8]"),
    ("softmax-axis-rank", lambda d: N(d, "softmax")["attrs"].update(axis=2),
     "node 'softmax' (Softmax): attribute axis = 2 is out of range [-2, 1] for rank 2"),
    ("quantize-rank", lambda d: T(d, "x").update(shape=["N", 3, 64]) or d["graph_inputs"][0].update(shape=["N", 3, 64]),
     "node 'quant_in' (Quantize): output 'xq' has rank 4, expected 3"),
]


@pytest.mark.parametrize("mutate, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_document_is_rejected_with_its_message(mutate, message):
    doc = doc_of(VALID)
    mutate(doc)
    with pytest.raises(FormatError) as info:
        read_nq(file_of(doc))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_unmutated_document_reads():
    assert read_nq(file_of(doc_of(VALID))).nodes == sample_model().nodes


def test_unknown_keys_tolerated_only_in_a_newer_minor():
    doc = doc_of(VALID)
    doc["tensors"][3]["future"] = 1
    doc["nodes"][0]["future"] = [1, 2]
    doc["future"] = {"a": 1}
    with pytest.raises(FormatError, match=r"^document: unknown key 'future'$"):
        read_nq(file_of(doc))
    del doc["future"]
    with pytest.raises(FormatError, match=r"^tensors\[3\]: unknown key 'future'$"):
        read_nq(file_of(doc))
    doc["future"] = {"a": 1}
    assert read_nq(file_of(doc, version=(1, 1))).version == (1, 1)
    doc["nodes"][1]["attrs"]["future"] = 1       # attrs are not extensible: could change meaning
    with pytest.raises(FormatError, match="unknown attribute 'future'"):
        read_nq(file_of(doc, version=(1, 1)))


def test_unknown_op_in_newer_minor_names_the_versions():
    doc = doc_of(VALID)
    N(doc, "clip")["op"] = "Gelu"
    with pytest.raises(FormatError, match=re.escape(
            "node 'clip' (Gelu): op 'Gelu' is unknown to this reader (the file is version 1.3, "
            "this reader implements 1.0)")):
        read_nq(file_of(doc, version=(1, 3)))


def test_hostile_names_stay_on_one_line_and_short():
    doc = doc_of(VALID)
    T(doc, "c1")["name"] = "evil\nname" + "x" * 4000
    with pytest.raises(FormatError) as info:
        read_nq(file_of(doc))
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


# ---------------------------------------------------------------------------------------
# Envelope
# ---------------------------------------------------------------------------------------

BODY = msgpack.unpackb(VALID, raw=False)["body"]

ENVELOPE_CASES = [
    ("format", pack_file(BODY, fmt="onnx"), "not a .nq file: envelope format is 'onnx', expected 'nqrt.nq'"),
    ("format-long", pack_file(BODY, fmt="x" * 10_000), "not a .nq file: envelope format is 'xxxxx"),
    ("format-bin", pack_file(BODY, fmt=b"nqrt.nq"), "not a .nq file: envelope format is b'nqrt.nq'"),
    ("major-2", pack_file(BODY, version=(2, 0)), "unsupported .nq major version 2 (this reader implements 1)"),
    ("major-0", pack_file(BODY, version=(0, 9)), "unsupported .nq major version 0 (this reader implements 1)"),
    ("version-str", msgpack.packb({"format": "nqrt.nq", "version": "1.0"}),
     "envelope: version must be [major, minor] (two ints >= 0), got '1.0'"),
    ("version-3", pack_file(BODY, version=(1, 0, 0)), "envelope: version must be [major, minor]"),
    ("version-negative", pack_file(BODY, version=(1, -1)), "envelope: version must be [major, minor]"),
    ("extra-key", pack_file(BODY, extra={"x": 1}), "envelope: unknown key 'x'"),
    ("missing-body", msgpack.packb({"format": "nqrt.nq", "version": [1, 0], "checksum": {}}),
     "envelope: missing key 'body'"),
    ("key-order", msgpack.packb({"format": "nqrt.nq", "version": [1, 0], "body": BODY,
                                 "checksum": {"algo": "sha256", "digest": bytes(32)}}, use_bin_type=True),
     "envelope: keys must be in the order format, version, checksum, body"),
    ("algo", pack_file(BODY, algo="md5"), "envelope: unsupported checksum algorithm 'md5' (expected 'sha256')"),
    ("digest-short", pack_file(BODY, digest=bytes(31)), "envelope: checksum digest must be 32 bytes of bin"),
    ("digest-str", pack_file(BODY, digest="0" * 32), "envelope: checksum digest must be 32 bytes of bin"),
    ("checksum-extra", msgpack.packb({"format": "nqrt.nq", "version": [1, 0], "checksum": {"algo": "sha256",
                                      "digest": bytes(32), "salt": 1}, "body": BODY}, use_bin_type=True),
     "envelope: checksum must be a map with exactly the keys 'algo' and 'digest'"),
    ("body-str", msgpack.packb({"format": "nqrt.nq", "version": [1, 0], "checksum": {"algo": "sha256",
                                "digest": bytes(32)}, "body": "text"}, use_bin_type=True),
     "envelope: body must be bin, got str"),
    ("checksum-mismatch", pack_file(BODY, digest=bytes(32)), "checksum mismatch: sha256(body) is "),
    ("body-array", pack_file(msgpack.packb([1, 2])), "corrupt body: it is not a msgpack map"),
    ("body-empty", pack_file(b""), "corrupt body: it is not a msgpack map"),
    ("body-trailing", pack_file(BODY + b"\xc0"), "corrupt body: 1 extra bytes after the msgpack value"),
    ("body-dup-key", pack_file(b"\x82\xa1a\x01\xa1a\x02"), "corrupt body: duplicate map key 'a'"),
    ("body-int-key", pack_file(b"\x81\x01\x02"), "corrupt body: map key at byte 1 is not a str"),
    ("body-bin-key", pack_file(b"\x81\xc4\x01a\x02"), "corrupt body: map key at byte 1 is not a str"),
    ("body-ext", pack_file(b"\x81\xa1a\xd4\x01\x00"), "corrupt body: msgpack ext type at byte 3"),
    ("body-timestamp", pack_file(b"\x81\xa1a\xd6\xff\x00\x00\x00\x00"), "corrupt body: msgpack ext type at byte 3"),
    ("body-c1", pack_file(b"\x81\xa1a\xc1"), "corrupt body: invalid msgpack byte 0xc1 at byte 3"),
    ("body-bad-utf8", pack_file(b"\x81\xa1a\xa2\xff\xfe"), "corrupt body: 'utf-8' codec can't decode"),
    ("body-huge-map", pack_file(b"\xdf\xff\xff\xff\xff"),
     "corrupt body: container at byte 0 declares 4294967295 items (limit 10000000)"),
    ("body-big-map", pack_file(b"\xdf\x00\x98\x96\x80"),
     "corrupt body: container at byte 0 declares 10000000 items but only 0 bytes remain"),
    ("body-huge-bin", pack_file(b"\x81\xa1a\xc6\xff\xff\xff\xff"),
     "corrupt body: truncated at byte 8 (value at byte 3 needs 4294967295 more)"),
    ("body-huge-str", pack_file(b"\x81\xa1a\xdb\xff\xff\xff\xf0xyz"),
     "corrupt body: truncated at byte 11 (value at byte 3 needs 4294967277 more)"),
    ("body-deep", pack_file(b"\x81\xa1a" + b"\x91" * 16 + b"\xc0"),
     "corrupt body: msgpack nesting deeper than 16 at byte 18"),
    ("body-very-deep", pack_file(b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0"),
     "corrupt body: msgpack nesting deeper than 16 at byte 18"),
    ("envelope-deep", b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0",
     "corrupt envelope: msgpack nesting deeper than 16 at byte 18"),
    ("envelope-huge-array", b"\x81\xa1a\xdd\x00\x98\x96\x80",
     "corrupt envelope: container at byte 3 declares 10000000 items but only 0 bytes remain"),
    ("envelope-not-map", msgpack.packb(["nqrt.nq"]), "not a .nq file: it does not start with a msgpack map"),
    ("empty", b"", "not a .nq file: it is empty"),
    ("garbage", b"PK\x03\x04 this is a zip, not msgpack", "not a .nq file: it does not start with a msgpack map"),
    ("onnx-like", b"\x08\x07\x12\x07pytorch", "not a .nq file: it does not start with a msgpack map"),
    ("map-garbage", b"\x8f\xff\x00", "corrupt envelope: container at byte 0 declares 15 items but only 2 bytes remain"),
    ("envelope-int-key", b"\x81\x01\x02", "corrupt envelope: map key at byte 1 is not a str"),
    ("envelope-dup-key", b"\x82\xa1a\x01\xa1a\x02", "corrupt envelope: duplicate map key 'a'"),
]


@pytest.mark.parametrize("data, message", [c[1:] for c in ENVELOPE_CASES], ids=[c[0] for c in ENVELOPE_CASES])
def test_hostile_envelope_is_rejected_with_its_message(data, message):
    with pytest.raises(FormatError) as info:
        read_nq(data)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_body_depth_16_is_accepted_17_rejected():
    # body map (1) > metadata map (2) > 14 nested arrays = depth 16
    doc = doc_of(VALID)
    deep = None
    for _ in range(14):
        deep = [deep]
    doc["metadata"] = {"deep": deep}
    assert read_nq(file_of(doc)).metadata == {"deep": deep}
    doc["metadata"] = {"deep": [deep]}
    with pytest.raises(FormatError, match="nesting deeper than 16"):
        read_nq(file_of(doc))


def test_file_size_limit(monkeypatch, tmp_path):
    from nqrt.format import schema
    monkeypatch.setattr(schema, "MAX_FILE_BYTES", 100)
    with pytest.raises(FormatError, match=r"^file is \d+ bytes, above the 100-byte limit$"):
        read_nq(VALID)
    path = tmp_path / "big.nq"
    path.write_bytes(VALID)
    with pytest.raises(FormatError, match=r"big.nq' is \d+ bytes, above the 100-byte limit$"):
        read_nq(path)


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(FormatError, match=r"^cannot read '.*missing.nq': No such file or directory$"):
        read_nq(tmp_path / "missing.nq")
    with pytest.raises(FormatError, match=r"^cannot read '.*': is a directory$"):
        read_nq(tmp_path)
    with pytest.raises(FormatError, match=r"^cannot read '/dev/null': not a regular file$"):
        read_nq("/dev/null")
    with pytest.raises(FormatError, match=r"^cannot read a .nq model from a int$"):
        read_nq(3)
    empty = tmp_path / "empty.nq"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match=r"^not a .nq file: it is empty$"):
        read_nq(empty)
