"""Quantizers of the elementwise ops of the CNN extension (formats/nq-v1.md 4.3, 4.9, 4.10).

* Unary functions (Sigmoid, HardSwish, Swish, Gelu, ...) and a binary op with a *scalar*
  constant operand (x·c, x/c, c − x, x^c, ...) -> `QLut`: the float op evaluated in float64
  on the 256 input codes, rounded once to the output grid (spec 4.9).
* Add / Sub of two activations -> `QAdd` (Sub: negative multiplier_b).
* Mul of two activations -> `QMul`.
* Add / Sub / Mul / Div with a non-scalar constant -> `QAdd` / `QMul` whose second operand is
  the constant quantized to a uint8 tensor with its own per-tensor (s, z) (Div by c = Mul by
  1/c; c − x = QAdd with a negative multiplier_a).
* Div, Pow, Max, Min of two activations, and c / x, x^c, c^x, max / min with a non-scalar
  constant c -> `QLut2`: the float op evaluated in float64 on the 256 × 256 code pairs of the
  two operands' grids, rounded once to the output grid (spec 4.23; a constant operand is a
  uint8 tensor with its own per-tensor (s, z), in the table's column slot).

Output (s, z) come from the calibrated range of the float output (plus a fused clamp).
"""

from __future__ import annotations

import numpy as np

from nqrt import qmath
from nqrt.errors import ConversionError, UnsupportedOpError
from nqrt.format.model import Quant
from nqrt.graph import reference
from nqrt.graph.ir import Graph, Node
from nqrt.graph.shapes import UNARY_OPS
from nqrt.quant import qparams as qp
from nqrt.quant.context import Q_ADD, Q_LUT, Q_LUT2, Q_MUL, QContext, fused_act, node_label

BINARY_OPS = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")
LUT2_OPS = ("Div", "Pow", "Max", "Min")         # two-operand functions without a linear kernel


def _unsupported(node: Node, reason: str) -> UnsupportedOpError:
    label = node_label(node)
    return UnsupportedOpError(f"cannot convert {label}: {reason}", {node.op: [label]})


# ---------------------------------------------------------------------------------------
# QLut
# ---------------------------------------------------------------------------------------

def lut_table(f, s_x: float, z_x: int, s_y: float, z_y: int, act_min: int, act_max: int) -> np.ndarray:
    """Spec 4.9: table[q] = clamp(round_half_even(f(s_x·(q − z_x)) / s_y) + z_y, act_min, act_max),
    f evaluated in float64; NaN -> z_y (real 0), ±inf -> the clamp bounds."""
    r = s_x * (np.arange(256, dtype=np.float64) - z_x)
    with np.errstate(all="ignore"):
        v = np.asarray(f(r), np.float64).reshape(-1)
        q = np.rint(v / s_y)
    q = np.where(np.isnan(q), 0.0, q) + z_y
    return np.clip(q, act_min, act_max).astype(np.uint8)


def _check_domain(ctx: QContext, node: Node, f, x: str) -> None:
    """f must be finite on the calibrated input range (Log, Sqrt, Reciprocal, Pow, c / x)."""
    lo, hi = ctx.qrange[ctx.x(x)]
    s_x, z_x = ctx.qparams(x)
    grid = s_x * (np.arange(256, dtype=np.float64) - z_x)
    pts = np.concatenate([[lo, hi], grid[(grid >= lo) & (grid <= hi)]])
    with np.errstate(all="ignore"):
        bad = ~np.isfinite(np.asarray(f(pts), np.float64).reshape(-1))
    if bad.any():
        raise _unsupported(node, f"{node.op} is not finite on the calibrated input range "
                                 f"[{lo:.6g}, {hi:.6g}] (at {pts[bad][0]:.6g}: outside its domain)")


def _emit_lut(ctx: QContext, node: Node, x: str, f) -> None:
    label = node_label(node)
    y = node.outputs[0]
    act = fused_act(node)
    _check_domain(ctx, node, f, x)
    ctx.new_u8_from_range(y, act, label)
    (s_x, z_x), (s_y, z_y) = ctx.qparams(x), ctx.qparams(y)
    act_min, act_max = qp.act_clamp(act, s_y, z_y)
    table = lut_table(f, s_x, z_x, s_y, z_y, act_min, act_max)
    t = ctx.const((node.name or y) + ".table", table, "uint8")
    ctx.emit(Q_LUT, [ctx.x(x), t], [ctx.x(y)], {}, label)


def lut2_table(f, s_a: float, z_a: int, s_b: float, z_b: int, s_y: float, z_y: int,
               act_min: int, act_max: int) -> np.ndarray:
    """Spec 4.23: table[i·256 + j] = clamp(round_half_even(f(s_a·(i − z_a), s_b·(j − z_b)) / s_y)
    + z_y, act_min, act_max), f in float64; NaN -> z_y, ±inf -> the clamp bounds."""
    ra = s_a * (np.arange(256, dtype=np.float64) - z_a)
    rb = s_b * (np.arange(256, dtype=np.float64) - z_b)
    with np.errstate(all="ignore"):
        q = np.rint(np.asarray(f(ra[:, None], rb[None, :]), np.float64) / s_y)
    q = np.where(np.isnan(q), 0.0, q) + z_y
    return np.clip(q, act_min, act_max).astype(np.uint8).reshape(-1)


def _emit_lut2(ctx: QContext, node: Node) -> None:
    """QLut2 for a two-operand op; the activation takes the row slot a, a constant operand the
    column slot b (quantized on its own grid), the function's arguments in ONNX order."""
    label = node_label(node)
    y = node.outputs[0]
    act = fused_act(node)
    fn = reference.OPS[node.op]
    p, q = node.inputs[:2]
    swap = p in ctx.graph.constants
    a, b = (q, p) if swap else (p, q)
    if b in ctx.graph.constants:
        b_name, s_b, z_b = const_operand(ctx, node, ctx.graph.constants[b])
    else:
        b_name, (s_b, z_b) = ctx.x(b), ctx.qparams(b)
    ctx.new_u8_from_range(y, act, label)
    (s_a, z_a), (s_y, z_y) = ctx.qparams(a), ctx.qparams(y)
    act_min, act_max = qp.act_clamp(act, s_y, z_y)
    f = (lambda u, v: fn({}, v, u)) if swap else (lambda u, v: fn({}, u, v))
    table = lut2_table(f, s_a, z_a, s_b, z_b, s_y, z_y, act_min, act_max)
    t = ctx.const((node.name or y) + ".table2", table, "uint8")
    ctx.emit(Q_LUT2, [ctx.x(a), b_name, t], [ctx.x(y)], {}, label)


def quantize_unary(ctx: QContext, node: Node) -> None:
    fn = reference.UNARY[node.op]
    _emit_lut(ctx, node, node.inputs[0], lambda r: fn(node.attrs, r))


def _scalar_function(node: Node, graph: Graph, k: int):
    """f(x) of a binary node whose operand 1 − k is a scalar constant, in float64."""
    c = np.asarray(graph.constants[node.inputs[1 - k]], np.float64).reshape(())
    fn = reference.OPS[node.op]
    if k == 0:
        return lambda r: fn({}, r, c)
    return lambda r: fn({}, np.full_like(r, c), r)


# ---------------------------------------------------------------------------------------
# QAdd / QMul
# ---------------------------------------------------------------------------------------

def const_operand(ctx: QContext, node: Node, c: np.ndarray) -> tuple[str, float, int]:
    """A constant operand as a uint8 constant with per-tensor (s, z) from its min/max."""
    c = np.asarray(c, np.float64)
    s, z = qp.activation_qparams(float(c.min()), float(c.max()), what=f"{node_label(node)} constant")
    q = np.clip(np.rint(c / s) + z, 0, 255).astype(np.uint8)
    name = ctx.const((node.name or node.outputs[0]) + ".const", q, "uint8",
                     Quant([float(np.float32(s))], [int(z)], None))
    return name, s, z


def _emit_add(ctx: QContext, node: Node, a: str, b: str, s_b: float, sign_a: float, sign_b: float) -> None:
    """QAdd y = sign_a·a + sign_b·b; b is a run-time tensor name or a constant's name."""
    label = node_label(node)
    y = node.outputs[0]
    act = fused_act(node)
    ctx.new_u8_from_range(y, act, label)
    (s_a, _), (s_y, z_y) = ctx.qparams(a), ctx.qparams(y)
    try:
        ma, mb, shift = qmath.quantize_multiplier_pair(sign_a * s_a / s_y, sign_b * s_b / s_y)
    except ValueError as e:
        raise ConversionError(f"{label}: Add multipliers not representable: {e}") from None
    act_min, act_max = qp.act_clamp(act, s_y, z_y)
    ctx.emit(Q_ADD, [ctx.x(a), b], [ctx.x(y)],
             {"multiplier_a": ma, "multiplier_b": mb, "shift": shift,
              "act_min": act_min, "act_max": act_max}, label)


def _emit_mul(ctx: QContext, node: Node, a: str, b: str, s_b: float) -> None:
    label = node_label(node)
    y = node.outputs[0]
    act = fused_act(node)
    ctx.new_u8_from_range(y, act, label)
    (s_a, _), (s_y, z_y) = ctx.qparams(a), ctx.qparams(y)
    m0, n = qp.multiplier(s_a * s_b / s_y, label)
    act_min, act_max = qp.act_clamp(act, s_y, z_y)
    ctx.emit(Q_MUL, [ctx.x(a), b], [ctx.x(y)],
             {"multiplier": int(m0), "shift": int(n), "act_min": act_min, "act_max": act_max}, label)


def quantize_binary(ctx: QContext, node: Node) -> None:
    """Add / Sub / Mul / Div / Pow (see the module docstring for the forms)."""
    g = ctx.graph
    a, b = node.inputs[:2]
    const = [t in g.constants for t in (a, b)]
    if not any(const):
        if node.op == "Mul":
            _emit_mul(ctx, node, a, ctx.x(b), ctx.qparams(b)[0])
        elif node.op in LUT2_OPS:
            _emit_lut2(ctx, node)
        else:                                        # Add, Sub
            _emit_add(ctx, node, a, ctx.x(b), ctx.qparams(b)[0], 1.0, -1.0 if node.op == "Sub" else 1.0)
        return
    k = 0 if const[1] else 1                         # position of the activation
    x = node.inputs[k]
    c = np.asarray(g.constants[node.inputs[1 - k]], np.float64)
    if c.size == 1:
        _emit_lut(ctx, node, x, _scalar_function(node, g, k))
        return
    if node.op in ("Pow", "Max", "Min") or (node.op == "Div" and k == 1):
        _emit_lut2(ctx, node)                        # x^c, c^x, max / min, c / x
        return
    if node.op == "Div":                             # x / c
        c = 1.0 / c
    name, s_c, _ = const_operand(ctx, node, c)
    if node.op in ("Mul", "Div"):
        _emit_mul(ctx, node, x, name, s_c)
    else:
        sign_x = -1.0 if (node.op == "Sub" and k == 1) else 1.0        # c - x
        sign_c = -1.0 if (node.op == "Sub" and k == 0) else 1.0        # x - c
        _emit_add(ctx, node, x, name, s_c, sign_x, sign_c)


def check_binary(graph: Graph, node: Node, consumers) -> str | None:
    if len(node.inputs) != 2 or not all(node.inputs):      # (Max / Min of 3+ inputs too)
        return f"{node.op} without two inputs"
    const = [t in graph.constants for t in node.inputs]
    if all(const):
        return None                                  # folded by fold_constants
    if not any(const):
        return None
    c = graph.constants[node.inputs[const.index(True)]]
    if np.asarray(c).dtype.kind != "f":
        return f"{node.op} with a non-float constant"
    if np.size(c) == 1 or node.op in ("Pow", "Max", "Min") or (node.op == "Div" and const[0]):
        return None
    if node.op == "Div" and not np.all(np.asarray(c) != 0):
        return "Div by a constant with zeros"
    return None


QUANTIZERS = {**{op: quantize_unary for op in UNARY_OPS}, **{op: quantize_binary for op in BINARY_OPS}}
CHECKS = {op: check_binary for op in BINARY_OPS}
