"""QDQ → integer ops: fuse the DequantizeLinear → op → QuantizeLinear chains of
a quantized graph (as :mod:`heli.quant` or ONNX Runtime's quantizer write them)
into the exact integer ops of :mod:`heli.ops._npu_int`.

Recognized, with int8 activations (per-tensor scale and zero point) and
symmetric int8 weights (per-tensor or per-output-channel, zero point 0):

* ``DQ(x), DQ(w) [, DQ(b) | b] → Conv | MatMul | Gemm [→ Relu | Clip]
  [→ MaxPool] (Conv only) → Q``  →  ``heli:QConv | heli:QMatMul [→ heli:QMaxPool]``;
* ``DQ(a), DQ(b) → Add [→ Relu | Clip] → Q``  →  ``heli:QAdd``;
* ``DQ(x) → MaxPool → Q`` with the same scale and zero point  →  ``heli:QMaxPool``;
* ``DQ(x) → elementwise float ops of x alone (with one-element constants) → Q``
  →  ``heli:QLut``, the region evaluated on all 256 int8 values (a hard-swish
  or a bias + ReLU between two quantized layers).

A Conv / MatMul / Gemm may also be followed by an Add of a constant (one
value per output channel, or one for all) before the activation: it is folded
into the int32 bias.

Two exact rewrites come first, so that ONNX Runtime's other quantizer outputs
reach the same matchers:

* the QOperator form: ``QLinearConv`` / ``QLinearMatMul`` and ONNX Runtime's
  contrib ops (QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QGemm,
  QLinearSoftmax, QLinearSigmoid, QLinearLeakyRelu), with constant scales and
  zero points, become ``DQ → float op → Q`` (the int32 bias at scale
  ``s_x · s_w``, as the op defines it);
* uint8 (``QUInt8``, ONNX Runtime's default activation type): a uint8 tensor
  written by a QuantizeLinear and read only by DequantizeLinears, or a uint8
  constant read only by DequantizeLinears, becomes int8 ``q - 128`` with zero
  points ``z - 128``: the same real values, bit for bit.  (uint8 weights then
  need ``z = 128`` to be symmetric.)

Chains that do not fit stay float (for a float target) and the pass says why
in a :class:`heli.FallbackWarning`: asymmetric or uint8 weights, per-channel
activations, missing constants.

Each intermediate value must have exactly one reader (and not be a graph
output), so no float value disappears that something else needs.  The
requantization multiplier and shift come from the float scales:
``M / 2**s ≈ s_x · s_w[c] / s_y`` (:func:`heli.quant._fixed_point.quantize_multiplier`);
the bias becomes int32 at scale ``s_x · s_w[c]``.  The result computes the
integer semantics of those ops, which every backend reproduces exactly; it is
close to, but not bit-identical with, the float QDQ graph.  Chains that do not
fit are left as they are.

The pass is target-neutral and not part of the default pipeline: apply it to
a quantized graph before :func:`heli.compile` (the default pipeline's constant
folding would otherwise fold the weights' DequantizeLinear into float).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heli._errors import FallbackWarning
from heli.ir._builder import GraphBuilder, rebuild
from heli.ir._graph import Graph, Node, Value
from heli.ir._ops import get_op
from heli.ir._types import DType, TensorType
from heli.passes._dce import DeadCodeElimination
from heli.passes._pass import Pass

_ACTIVATIONS = ("Relu", "Clip")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def quantize_multiplier(scale: float) -> tuple[int, int]:
    # imported late: heli.quant imports heli.passes
    from heli.quant._fixed_point import quantize_multiplier as exact

    return exact(scale)


@dataclass
class _QParams:
    q: Value          # the int8 tensor the DequantizeLinear reads
    scale: np.ndarray  # float32 scalar or 1-D
    zero_point: np.ndarray


@dataclass
class _Plan:
    kind: str                                  # QConv, QMatMul, QAdd, QMaxPool
    anchor: Node
    final: Node                                # the QuantizeLinear
    inputs: list[Value]                        # int8 inputs (before mapping)
    constants: list[np.ndarray | None]         # weight, bias (QConv / QMatMul)
    attrs: dict[str, Any]
    pool: dict[str, Any] | None = None         # attributes of a trailing QMaxPool
    skipped: list[Node] = field(default_factory=list)


class _Matcher:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.consts = graph.constants
        self.producers = graph.producers()
        self.users = graph.users()
        self.outputs = {v.name for v in graph.outputs}

    def const(self, value: Value | None) -> np.ndarray | None:
        return None if value is None else self.consts.get(value.name)

    def dq(self, value: Value | None, *, const_input: bool = False) -> _QParams | None:
        """The parameters of ``value`` = DequantizeLinear(q int8, scale, zp)."""
        node = self.producers.get(value.name) if value is not None else None
        if node is None or node.op.name != "DequantizeLinear" or node.op.domain:
            return None
        q, scale_v = node.inputs[0], node.inputs[1]
        zp_v = node.inputs[2] if len(node.inputs) > 2 else None
        scale = self.const(scale_v)
        zp = self.const(zp_v) if zp_v is not None else np.zeros((), np.int8)
        if scale is None or zp is None or scale.dtype != np.float32 or scale.ndim > 1:
            return None
        if not isinstance(q.type, TensorType) or q.type.dtype not in (DType.INT8, DType.INT32):
            return None
        if const_input != (q.name in self.consts):
            return None
        if node.attr("block_size"):
            return None
        return _QParams(q, scale, zp)

    def single_reader(self, value: Value) -> Node | None:
        readers = self.users.get(value.name, [])
        if len(readers) != 1 or value.name in self.outputs:
            return None
        return readers[0]

    def tail(self, anchor: Node, allow_pool: bool, allow_bias: bool = False,
             channels: int | None = None):
        """Follow ``anchor`` → [Add of a constant] → [Relu | Clip] → [MaxPool]
        → QuantizeLinear; the constant (a bias, per output channel or one
        value) is returned as ``addend``, 1-D.  With ``channels``, the
        QuantizeLinear may also be symmetric per channel of the last axis
        (``channels`` scales, zero point 0; then the scale is returned 1-D)."""
        skipped, act, pool, addend = [], None, None, None
        node = self.single_reader(anchor.outputs[0])
        if allow_bias and node is not None and node.op.name == "Add" and not node.op.domain:
            addend = self.channel_constant(node, anchor.outputs[0])
            if addend is None:
                return None
            skipped.append(node)
            node = self.single_reader(node.outputs[0])
        if node is not None and node.op.name in _ACTIVATIONS and not node.op.domain:
            if node.op.name == "Clip":
                lo_v = node.inputs[1] if len(node.inputs) > 1 else None
                hi_v = node.inputs[2] if len(node.inputs) > 2 else None
                lo, hi = self.const(lo_v), self.const(hi_v)
                if (lo_v is not None and lo is None) or (hi_v is not None and hi is None):
                    return None
                act = ("Clip", lo, hi)
            else:
                act = ("Relu", None, None)
            skipped.append(node)
            node = self.single_reader(node.outputs[0])
        if allow_pool and node is not None and node.op.name == "MaxPool" and not node.op.domain:
            pool = _pool_attrs(node)
            if pool is None:
                return None
            skipped.append(node)
            node = self.single_reader(node.outputs[0])
        if node is None or node.op.name != "QuantizeLinear" or node.op.domain:
            return None
        scale = self.const(node.inputs[1])
        zp = self.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if scale is None or zp is None or zp.dtype != np.int8 or node.attr("block_size"):
            return None
        if scale.ndim == 1 and channels is not None and act in (None, ("Relu", None, None)):
            shape = node.inputs[0].type.shape if isinstance(node.inputs[0].type, TensorType) \
                else None
            axis = node.attr("axis")
            if shape is None or scale.shape != (channels,) or zp.shape != (channels,) or \
                    np.any(zp != 0) or axis not in (-1, len(shape) - 1) or pool is not None:
                return None
            return node, scale, 0, act, pool, skipped, addend
        if scale.ndim != 0 or zp.ndim != 0:
            return None
        return node, float(scale), int(zp), act, pool, skipped, addend

    def channel_constant(self, add: Node, value: Value) -> np.ndarray | None:
        """The constant operand of ``add`` (the other one being ``value``) as one
        value per channel of ``value`` (axis 1 if 4-D, else the last), or None."""
        others = [v for v in add.inputs if v is not None and v.name != value.name]
        if len(add.inputs) != 2 or len(others) != 1:
            return None
        c = self.const(others[0])
        shape = value.type.shape if isinstance(value.type, TensorType) else None
        if c is None or c.dtype != np.float32 or shape is None or c.ndim > len(shape):
            return None
        axis = 1 if len(shape) == 4 else len(shape) - 1
        full = (1,) * (len(shape) - c.ndim) + c.shape
        if any(d != 1 for k, d in enumerate(full) if k != axis) or \
                full[axis] not in (1, shape[axis]):
            return None
        return np.broadcast_to(c.reshape(-1), (shape[axis],)).astype(np.float64)


def _pool_attrs(node: Node) -> dict[str, Any] | None:
    if len([o for o in node.outputs if o is not None]) != 1:
        return None
    kernel = node.attr("kernel_shape")
    if kernel is None or len(kernel) != 2 or node.attr("ceil_mode") or \
            node.attr("auto_pad") not in ("NOTSET", "VALID"):
        return None
    if tuple(node.attr("dilations") or (1, 1)) != (1, 1):
        return None
    pads = tuple(node.attr("pads") or (0, 0, 0, 0)) if node.attr("auto_pad") == "NOTSET" \
        else (0, 0, 0, 0)
    return {"kernel_shape": tuple(kernel), "strides": tuple(node.attr("strides") or (1, 1)),
            "pads": pads}


def _clip_bounds(act, scale: float, zp: int) -> tuple[int, int]:
    lo, hi = -128, 127
    if act is None:
        return lo, hi
    name, fmin, fmax = act
    def q(v: np.ndarray) -> int:
        return int(np.clip(np.rint(np.float32(v) / np.float32(scale)) + zp, -128, 127))
    if name == "Relu":
        return zp, hi
    if fmin is not None:
        lo = q(fmin)
    if fmax is not None:
        hi = q(fmax)
    return lo, max(lo, hi)


def _multipliers(scales: np.ndarray) -> tuple[list[int], list[int]]:
    pairs = [quantize_multiplier(float(s)) for s in np.atleast_1d(scales)]
    return [m for m, _ in pairs], [s for _, s in pairs]


def _int_bias(m: _Matcher, value: Value | None, acc_scale: np.ndarray) -> np.ndarray | None | str:
    """The bias as int32 at ``acc_scale`` (per channel); "bad" if it cannot be."""
    if value is None:
        return None
    channels = acc_scale.shape[0]
    p = m.dq(value, const_input=True)
    if p is not None:
        q = m.const(p.q)
        if q.dtype != np.int32 or np.any(p.zero_point != 0):
            return "bad"
        real = q.astype(np.float64) * p.scale.astype(np.float64)
    else:
        real = m.const(value)
        if real is None or real.dtype != np.float32:
            return "bad"
        real = real.astype(np.float64)
        p = None
    if real.shape not in ((channels,), (1,), ()):
        return "bad"
    real = np.broadcast_to(real, (channels,))
    if p is not None and p.scale.shape in ((), (channels,)) and np.array_equal(
            np.broadcast_to(p.scale, (channels,)), acc_scale.astype(np.float32)):
        return np.broadcast_to(m.const(p.q), (channels,)).astype(np.int32)
    return np.clip(np.rint(real / acc_scale), INT32_MIN, INT32_MAX).astype(np.int32)


def _match_linear(m: _Matcher, node: Node) -> _Plan | str | None:
    """The plan of a quantized Conv / MatMul / Gemm; None if it is not one
    (an operand is no DequantizeLinear), or why it cannot be fused."""
    kind = node.op.name
    x = m.dq(node.inputs[0])
    w = m.dq(node.inputs[1], const_input=True)
    if x is None or w is None:
        return None
    if x.q.type.dtype != DType.INT8 or x.scale.ndim != 0:
        return (f"its input is {x.q.type.dtype.name.lower()} with {x.scale.size} scale(s); "
                f"the NPU needs int8 activations with one scale")
    wq = m.const(w.q)
    if wq.dtype != np.int8:
        return f"its weights are {wq.dtype}, not int8"
    if np.any(w.zero_point != 0):
        return (f"its weights are asymmetric (zero point(s) {np.unique(w.zero_point)[:4]}); "
                f"the NPU needs symmetric int8 weights (zero point 0)")
    bias_v = node.inputs[2] if len(node.inputs) > 2 else None
    attrs: dict[str, Any] = {}
    if kind == "Conv":
        if wq.ndim != 4 or node.attr("auto_pad") not in ("NOTSET", "VALID"):
            return "it is not a 2-D convolution with explicit or VALID padding"
        if w.scale.ndim == 1 and node.attrs.get("axis", 0) not in (0,):
            return "its per-channel weight scales are not along the output channels"
        pads = node.attr("pads") if node.attr("auto_pad") == "NOTSET" else None
        attrs = {"strides": tuple(node.attr("strides") or (1, 1)),
                 "pads": tuple(pads or (0, 0, 0, 0)),
                 "dilations": tuple(node.attr("dilations") or (1, 1)),
                 "group": node.attr("group")}
        channels = wq.shape[0]
        w_axis = 0
    else:
        if wq.ndim != 2:
            return "its weights are not a matrix"
        w_axis = 1
        if kind == "Gemm":
            if node.attr("transA") or node.attr("alpha") != 1.0 or \
                    (bias_v is not None and node.attr("beta") != 1.0):
                return "it is a Gemm with transA, alpha != 1 or beta != 1"
            if node.attr("transB"):
                wq, w_axis = np.ascontiguousarray(wq.T), 0
        elif bias_v is not None:
            return "it is a MatMul with a bias input"
        channels = wq.shape[1]
    dq_node = m.producers[node.inputs[1].name]
    if w.scale.ndim == 1:
        axis = dq_node.attr("axis")
        axis = axis + m.const(dq_node.inputs[0]).ndim if axis < 0 else axis
        if axis != w_axis or w.scale.shape[0] != channels:
            return "its per-channel weight scales are not one per output channel"
    tail = m.tail(node, allow_pool=kind == "Conv", allow_bias=True,
                  channels=channels if kind != "Conv" else None)
    if tail is None:
        return ("its output is not requantized to int8 by one QuantizeLinear (after an "
                "optional bias, Relu / Clip and MaxPool) that nothing else reads")
    final, y_scale, y_zp, act, pool, skipped, addend = tail
    acc_scale = (x.scale.astype(np.float64) * np.broadcast_to(w.scale, (channels,))
                 .astype(np.float64))
    bias_scale = (x.scale * np.broadcast_to(w.scale, (channels,))).astype(np.float32) \
        .astype(np.float64)
    bias = _int_bias(m, bias_v, bias_scale) if bias_v is not None else None
    if isinstance(bias, str):
        return "its bias is neither float nor int32 at scale s_x * s_w with zero point 0"
    if addend is not None:   # a bias added after the op: folded into the int32 bias
        extra = np.clip(np.rint(addend / bias_scale), INT32_MIN, INT32_MAX).astype(np.int64)
        base = np.zeros(channels, np.int64) if bias is None else bias.astype(np.int64)
        bias = np.clip(base + extra, INT32_MIN, INT32_MAX).astype(np.int32)
    # y_scale: one value, or one per channel (symmetric, zero point 0)
    y_scales = np.asarray(y_scale, np.float32).astype(np.float64)
    mult, shift = _multipliers(acc_scale / y_scales)
    lo, hi = _clip_bounds(act, y_scale, y_zp) if y_scales.ndim == 0 else \
        ((y_zp if act is not None else -128), 127)
    zp_name = "x_zero_point" if kind == "Conv" else "a_zero_point"
    attrs.update({zp_name: int(x.zero_point), "multiplier": tuple(mult), "shift": tuple(shift),
                  "y_zero_point": y_zp, "lo": lo, "hi": hi})
    return _Plan("QConv" if kind == "Conv" else "QMatMul", node, final, [x.q], [wq, bias],
                 attrs, pool, skipped)


def _match_add(m: _Matcher, node: Node) -> _Plan | None:
    a, b = m.dq(node.inputs[0]), m.dq(node.inputs[1])
    if a is None or b is None or any(p.q.type.dtype != DType.INT8 or p.scale.ndim != 0
                                     for p in (a, b)):
        return None
    ta, tb = a.q.type, b.q.type
    if ta.shape is None or ta.shape != tb.shape:
        return None
    tail = m.tail(node, allow_pool=False)
    if tail is None:
        return None
    final, y_scale, y_zp, act, _, skipped, _ = tail
    sa, sb = float(a.scale), float(b.scale)
    big = max(sa, sb)
    if big == 0 or y_scale == 0:
        return None
    # ma / mb carry the ratio of the input scales in 14 bits; M / 2**s the rest.
    ma, mb = round(sa / big * (1 << 14)), round(sb / big * (1 << 14))
    mult, shift = quantize_multiplier(big / float(np.float32(y_scale)) / (1 << 14))
    lo, hi = _clip_bounds(act, y_scale, y_zp)
    attrs = {"a_zero_point": int(a.zero_point), "a_multiplier": ma,
             "b_zero_point": int(b.zero_point), "b_multiplier": mb,
             "multiplier": (mult,), "shift": (shift,), "y_zero_point": y_zp, "lo": lo, "hi": hi}
    return _Plan("QAdd", node, final, [a.q, b.q], [], attrs, None, skipped)


def _match_pool(m: _Matcher, node: Node) -> _Plan | None:
    x = m.dq(node.inputs[0])
    pool = _pool_attrs(node)
    if x is None or pool is None or x.q.type.dtype != DType.INT8 or x.scale.ndim != 0:
        return None
    final = m.single_reader(node.outputs[0])
    if final is None or final.op.name != "QuantizeLinear" or final.op.domain:
        return None
    scale = m.const(final.inputs[1])
    zp = m.const(final.inputs[2]) if len(final.inputs) > 2 and final.inputs[2] else None
    if scale is None or zp is None or scale.shape != () or zp.dtype != np.int8 or \
            float(scale) != float(x.scale) or int(zp) != int(x.zero_point):
        return None
    return _Plan("QMaxPool", node, final, [x.q], [], pool, None, [])


# Elementwise ops a lookup table can stand for (with their other operands
# constants of one element, the region is a function of one int8 value).
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Relu", "Clip", "HardSigmoid", "HardSwish",
                "Sigmoid", "Tanh", "LeakyRelu", "Neg", "Abs", "Erf", "Exp", "Gelu", "Elu",
                "Selu", "Softplus", "Max", "Min")


def _match_lut(m: _Matcher, final: Node) -> _Plan | None:
    """DQ(x) → a region of elementwise float ops of x alone → Q  →  ``heli:QLut``
    whose table is the region evaluated (by the reference ops) on all 256 int8
    values of x, so it equals the float QDQ graph exactly."""
    if len(final.inputs) < 3 or final.inputs[2] is None or final.attr("block_size"):
        return None
    scale, zp = m.const(final.inputs[1]), m.const(final.inputs[2])
    if scale is None or zp is None or scale.ndim or zp.ndim or zp.dtype != np.int8 or \
            final.attr("saturate") == 0:
        return None
    region: dict[int, Node] = {}
    source: Node | None = None
    stack = [final.inputs[0]]
    while stack:
        value = stack.pop()
        if value is None:
            return None
        if value.name in m.consts:
            if m.consts[value.name].size != 1:
                return None
            continue
        node = m.producers.get(value.name)
        if node is None:
            return None
        if node.op.name == "DequantizeLinear" and not node.op.domain:
            if source is not None and source is not node:
                return None
            source = node
            continue
        if id(node) in region:
            continue
        if node.op.domain or node.op.name not in _ELEMENTWISE or len(node.outputs) != 1:
            return None
        region[id(node)] = node
        stack.extend(node.inputs)
    if source is None or not region:
        return None
    x = m.dq(source.outputs[0])
    if x is None or x.q.type.dtype != DType.INT8 or x.scale.ndim != 0:
        return None
    if not isinstance(final.outputs[0].type, TensorType) or \
            final.outputs[0].type.shape != x.q.type.shape:
        return None
    inside = {id(n) for n in region.values()} | {id(final)}
    for node in region.values():
        out = node.outputs[0]
        if out.name in m.outputs or any(id(r) not in inside for r in m.users.get(out.name, [])):
            return None
    order = {id(n): k for k, n in enumerate(m.graph.nodes)}
    nodes = sorted(region.values(), key=lambda n: order[id(n)])
    table = _evaluate_table(m, source, nodes, final)
    return _Plan("QLut", nodes[0], final, [x.q], [], {"table": tuple(int(v) for v in table)},
                 None, nodes[1:])


def _evaluate_table(m: _Matcher, source: Node, nodes: list[Node], final: Node) -> np.ndarray:
    from heli.targets.ref import GraphRunner  # late: targets import the passes

    b = GraphBuilder("lut")
    xin = b.add_input(source.inputs[0].name, TensorType(DType.INT8, (256,)))
    for node in (source, *nodes, final):
        for v in node.inputs:
            if v is not None and v.name in m.consts and b.lookup(v.name) is None:
                b.add_constant(m.consts[v.name], v.name)
        b.add_node(node.op, [b.lookup(v.name) if v is not None else None for v in node.inputs],
                   node.attrs, output_names=[o.name for o in node.outputs])
    graph = b.build([b.lookup(final.outputs[0].name)], [final.outputs[0].name])
    (y,) = GraphRunner(graph).run({xin.name: np.arange(-128, 128, dtype=np.int8)})
    return np.asarray(y, np.int8).reshape(256)


_MATCHERS = {"Conv": _match_linear, "MatMul": _match_linear, "Gemm": _match_linear,
             "Add": _match_add, "MaxPool": _match_pool}


@dataclass
class QdqToInt(Pass):
    """Rewrite DequantizeLinear → Conv / MatMul / Gemm / Add / MaxPool →
    QuantizeLinear chains into ``heli:QConv`` / ``QMatMul`` / ``QAdd`` / ``QMaxPool``."""

    name = "qdq-to-int"
    description = "fuse DQ → Conv/MatMul/Gemm/Add/MaxPool (→ Relu/Clip) → Q into integer ops"

    def apply(self, graph: Graph) -> Graph:
        graph = _uint8_to_int8(_qlinear_to_qdq(graph))
        m = _Matcher(graph)
        plans: dict[int, _Plan] = {}
        unfused: dict[str, str] = {}
        for node in graph.nodes:
            match = _MATCHERS.get(node.op.name) if not node.op.domain else None
            plan = match(m, node) if match is not None else None
            if isinstance(plan, str):
                unfused[node.name or node.outputs[0].name] = plan
            elif plan is not None:
                plans[id(node)] = plan
        if unfused:
            shown = "; ".join(f"{k!r}: {v}" for k, v in list(unfused.items())[:5])
            more = f"; and {len(unfused) - 5} more" if len(unfused) > 5 else ""
            warnings.warn(f"{len(unfused)} quantized Conv / MatMul / Gemm node(s) stay float "
                          f"(an integer target cannot run them): {shown}{more}.",
                          FallbackWarning, stacklevel=2)
        claimed = {id(n) for p in plans.values() for n in (p.anchor, *p.skipped, p.final)}
        for node in graph.nodes:
            if node.op.name == "QuantizeLinear" and not node.op.domain and \
                    id(node) not in claimed:
                plan = _match_lut(m, node)
                if plan is not None and not any(id(n) in claimed
                                                for n in (plan.anchor, *plan.skipped)):
                    plans[id(plan.anchor)] = plan
                    claimed.update(id(n) for n in (plan.anchor, *plan.skipped, plan.final))
        if not plans:
            return graph
        role: dict[int, _Plan] = {}
        for plan in plans.values():
            for n in (*plan.skipped, plan.final):
                role[id(n)] = plan
        results: dict[int, Value] = {}

        def visit(b: GraphBuilder, node: Node, inputs: list) -> tuple | None:
            plan = plans.get(id(node))
            if plan is not None:
                results[id(plan.final)] = y = _emit(b, plan)
                return (y,)
            plan = role.get(id(node))
            if plan is not None:  # its value is read by nothing but the chain
                return (results[id(plan.final)],)
            return None

        return DeadCodeElimination().apply(rebuild(graph, visit))


# --------------------------------------------------------------------------
# exact rewrites of ONNX Runtime's other quantized forms into int8 QDQ
# --------------------------------------------------------------------------


def _std(node: Node, *names: str) -> bool:
    return node.op.name in names and node.op.domain in ("", "ai.onnx")


@dataclass(frozen=True)
class _QOp:
    """A QOperator op as ``Q(float_op(DQ(...)))``: the (data, scale, zero
    point) input triples, the index of the output scale, the float op."""

    float_op: str
    triples: tuple[int, ...]
    y_scale: int
    domain: str = ""


_QOPS = {
    ("", "QLinearConv"): _QOp("Conv", (0, 3), 6),
    ("", "QLinearMatMul"): _QOp("MatMul", (0, 3), 6),
    ("com.microsoft", "QLinearAdd"): _QOp("Add", (0, 3), 6),
    ("com.microsoft", "QLinearMul"): _QOp("Mul", (0, 3), 6),
    ("com.microsoft", "QLinearSigmoid"): _QOp("Sigmoid", (0,), 3),
    ("com.microsoft", "QLinearLeakyRelu"): _QOp("LeakyRelu", (0,), 3),
    ("com.microsoft", "QLinearSoftmax"): _QOp("Softmax", (0,), 3),
    ("com.microsoft", "QLinearGlobalAveragePool"): _QOp("GlobalAveragePool", (0,), 3),
    ("com.microsoft", "QGemm"): _QOp("Gemm", (0, 3), 7),
}


def _qop(node: Node) -> _QOp | None:
    domain = "" if node.op.domain == "ai.onnx" else node.op.domain
    return _QOPS.get((domain, node.op.name))


def _qlinear_to_qdq(graph: Graph) -> Graph:
    """The QOperator ops of :data:`_QOPS` (with constant scales and zero
    points) → DequantizeLinear → float op → QuantizeLinear, as each op is
    defined.  A quantized constant input becomes its float value."""
    consts = graph.constants

    def fits(node: Node) -> bool:
        spec = _qop(node)
        if spec is None:
            return False
        wanted = [k + d for k in spec.triples for d in (1, 2)] + [spec.y_scale, spec.y_scale + 1]
        if any(k >= len(node.inputs) or node.inputs[k] is None or
               node.inputs[k].name not in consts for k in wanted):
            return False
        if node.op.name == "QLinearSoftmax":
            rank = len(node.inputs[0].type.shape or ()) if isinstance(node.inputs[0].type,
                                                                      TensorType) else 0
            axis = node.attr("axis")
            return node.attr("opset") >= 13 or axis in (-1, rank - 1)
        if node.op.name == "QLinearGlobalAveragePool":
            return not node.attr("channels_last")
        return True

    if not any(fits(n) for n in graph.nodes):
        return graph

    def dequantized(b: GraphBuilder, node: Node, inputs: list, k: int, axis: int) -> Value:
        from heli.ops._contrib_quant import dequantize  # late: the ops import the passes

        x, scale, zp = node.inputs[k:k + 3]
        if node.op.name in ("QLinearAdd", "QLinearMul") and x.name in consts and \
                consts[scale.name].size == 1:   # an elementwise constant: its float value
            value = dequantize(consts[x.name], consts[scale.name], consts[zp.name])
            return b.add_constant(value, b.fresh_name(f"{x.name}_float"))
        attrs = {"axis": axis} if consts[scale.name].size > 1 else {}
        (y,) = b.add_node(get_op("DequantizeLinear"), inputs[k:k + 3], attrs,
                          output_names=[b.fresh_name(f"{x.name}_dq")])
        return y

    def visit(b: GraphBuilder, node: Node, inputs: list) -> tuple | None:
        if not fits(node):
            return None
        spec = _qop(node)
        name = node.op.name
        attrs = {k: v for k, v in node.attrs.items() if k not in ("opset", "channels_last")}
        # the axis of per-channel weight scales: the output channels
        w_axis = 0 if name == "QLinearConv" or (name == "QGemm" and node.attr("transB")) else 1
        args = [dequantized(b, node, inputs, k, 0 if k == 0 else w_axis) for k in spec.triples]
        bias_at = {"QLinearConv": 8, "QGemm": 6}.get(name)
        if bias_at is not None and len(inputs) > bias_at and inputs[bias_at] is not None:
            alpha = np.float32(node.attr("alpha")) if name == "QGemm" else np.float32(1)
            scale = (alpha * consts[node.inputs[1].name].astype(np.float32).reshape(())
                     * consts[node.inputs[4].name].astype(np.float32)).astype(np.float32)
            bias = inputs[bias_at]
            bs = b.add_constant(scale, b.fresh_name(f"{bias.name}_scale"))
            (bf,) = b.add_node(get_op("DequantizeLinear"), [bias, bs],
                               {"axis": 0} if scale.size > 1 else {},
                               output_names=[b.fresh_name(f"{bias.name}_dq")])
            args.append(bf)
        out = node.outputs[0].name
        (yf,) = b.add_node(get_op(spec.float_op), args, attrs, name=node.name,
                           output_names=[b.fresh_name(f"{out}_float")])
        y_scale, y_zp = inputs[spec.y_scale:spec.y_scale + 2]
        return b.add_node(get_op("QuantizeLinear"), [yf, y_scale, y_zp], {}, output_names=[out])

    return rebuild(graph, visit)


def _uint8_to_int8(graph: Graph) -> Graph:
    """uint8 QDQ tensors → int8 ``q - 128`` with zero points ``z - 128``
    (exact): a QuantizeLinear's output read only by DequantizeLinears, and
    constants read only by DequantizeLinears, all with constant zero points."""
    consts, users = graph.constants, graph.users()
    outputs = {v.name for v in graph.outputs}

    def zero_point(node: Node) -> np.ndarray | None:
        v = node.inputs[2] if len(node.inputs) > 2 else None
        zp = consts.get(v.name) if v is not None else None
        return zp if zp is not None and zp.dtype == np.uint8 else None

    def shiftable(name: str) -> bool:
        readers = users.get(name, [])
        return bool(readers) and name not in outputs and all(
            _std(r, "DequantizeLinear") and r.inputs[0].name == name and
            zero_point(r) is not None for r in readers)

    shift: set[int] = set()
    for node in graph.nodes:
        if _std(node, "QuantizeLinear") and zero_point(node) is not None and \
                not node.attr("output_dtype") and shiftable(node.outputs[0].name):
            shift.add(id(node))
            shift.update(id(r) for r in users[node.outputs[0].name])
        elif _std(node, "DequantizeLinear") and node.inputs[0].name in consts and \
                consts[node.inputs[0].name].dtype == np.uint8 and \
                shiftable(node.inputs[0].name):
            shift.add(id(node))
    if not shift:
        return graph

    def minus128(b: GraphBuilder, array: np.ndarray, hint: str) -> Value:
        shifted = (array.astype(np.int16) - 128).astype(np.int8)
        return b.add_constant(shifted, b.fresh_name(f"{hint}_s8"))

    def visit(b: GraphBuilder, node: Node, inputs: list) -> tuple | None:
        if id(node) not in shift:
            return None
        new = list(inputs)
        new[2] = minus128(b, consts[node.inputs[2].name], node.inputs[2].name)
        if _std(node, "DequantizeLinear") and node.inputs[0].name in consts:
            new[0] = minus128(b, consts[node.inputs[0].name], node.inputs[0].name)
        return b.add_node(node.op, new, node.attrs, name=node.name,
                          output_names=[o.name for o in node.outputs])

    return rebuild(graph, visit)


def _emit(b: GraphBuilder, plan: _Plan) -> Value:
    inputs: list[Value | None] = [b.current(v) for v in plan.inputs]
    for k, array in enumerate(plan.constants):
        if array is None:
            inputs.append(None)
            continue
        hint = ("weight", "bias")[k]
        inputs.append(b.add_constant(array, b.fresh_name(f"{plan.anchor.name or plan.kind}_"
                                                         f"{hint}")))
    while inputs and inputs[-1] is None:
        inputs.pop()
    out_name = plan.final.outputs[0].name
    first_name = b.fresh_name(f"{out_name}_prepool") if plan.pool else out_name
    (y,) = b.add_node(get_op(plan.kind, "heli"), inputs, plan.attrs, name=plan.anchor.name,
                      output_names=[first_name])
    if plan.pool:
        (y,) = b.add_node(get_op("QMaxPool", "heli"), [y], plan.pool,
                          name=plan.skipped[-1].name, output_names=[out_name])
    return y
