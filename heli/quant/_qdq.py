"""The QDQ quantization pass: QuantizeLinear / DequantizeLinear pairs in front
of the operands of Conv, MatMul and Gemm, in the form ONNX Runtime's static
quantizer writes (so ORT runs the exported graph, and a backend can fuse each
DQ → op → Q chain into one integer op such as QLinearConv).

* Activations: per-tensor int8, asymmetric (``scale = (hi - lo) / 255``, zero
  point in [-128, 127]) by default: the NPU is int8 and its requantization
  has a zero point, so asymmetric int8 keeps the full 8 bits for one-sided
  ranges (after ReLU) at no cost; ``symmetric_activations=True`` gives
  ``scale = max|x| / 127``, zero point 0.  Ranges always include 0, so 0 is
  exactly representable (zero padding stays exact).
* Weights (constant operand): per-channel symmetric int8 in [-127, 127], zero
  point 0, stored already quantized with one DequantizeLinear; the channel is
  the output channel: axis 0 for Conv, the last axis of MatMul's B, and N of
  Gemm's B (axis 1, or 0 with ``transB``).
* Bias (Conv's B, Gemm's 1-D C of length N): int32, zero point 0, scale
  ``s_x * s_w`` per channel, so the integer accumulator adds it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from heli._errors import InputError
from heli.ir._builder import GraphBuilder, rebuild
from heli.ir._graph import Graph, Node, Value
from heli.passes._pass import Pass
from heli.quant._calibrate import (
    _float_adds,
    node_key,
    quantizable_nodes,
    quantized_outputs,
)

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of one tensor (``scale`` per channel if 1-D)."""

    scale: np.ndarray  # float32, () or (C,)
    zero_point: np.ndarray  # int8 or int32, same shape
    axis: int = 1


def activation_qparams(low: float, high: float, symmetric: bool = False) -> QParams:
    """int8 parameters of the range ``[low, high]`` (widened to include 0)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if symmetric:
        bound = max(-low, high)
        scale = np.float32(bound / INT8_MAX) if bound > 0 else np.float32(1.0)
        return QParams(np.array(scale, np.float32), np.array(0, np.int8))
    if high == low:
        return QParams(np.array(1.0, np.float32), np.array(0, np.int8))
    scale = np.float32((high - low) / (INT8_MAX - INT8_MIN))
    zero_point = int(np.clip(np.rint(INT8_MIN - low / float(scale)), INT8_MIN, INT8_MAX))
    return QParams(np.array(scale, np.float32), np.array(zero_point, np.int8))


def channel_qparams(low: np.ndarray, high: np.ndarray, axis: int) -> QParams:
    """Symmetric int8 parameters per channel (zero point 0) of the ranges
    ``[low[c], high[c]]``: ``scale[c] = max(|low[c]|, |high[c]|) / 127``."""
    bound = np.maximum(np.abs(low), np.abs(high)).astype(np.float64)
    scale = np.where(bound > 0, bound / INT8_MAX, 1.0).astype(np.float32)
    return QParams(scale, np.zeros(scale.shape, np.int8), axis)


def weight_qparams(weight: np.ndarray, axis: int, qmax: int = INT8_MAX) -> QParams:
    """Per-channel symmetric int8 parameters of ``weight`` along ``axis``
    (values in ``[-qmax, qmax]``)."""
    others = tuple(i for i in range(weight.ndim) if i != axis)
    bound = np.max(np.abs(weight.astype(np.float64)), axis=others) if others else \
        np.abs(weight.astype(np.float64))
    scale = (bound / float(qmax)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    return QParams(scale, np.zeros(scale.shape, np.int8), axis)


def quantize_array(array: np.ndarray, params: QParams, lo: int, hi: int,
                   dtype: type) -> np.ndarray:
    """``array`` quantized as QuantizeLinear would (float32 division, round
    half to even, saturate), with ``params.scale`` along ``params.axis``."""
    scale = params.scale
    zero_point = params.zero_point.astype(np.int64)
    if scale.ndim == 1:
        shape = [1] * array.ndim
        shape[params.axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    q = np.rint(array.astype(np.float32) / scale).astype(np.float64) + zero_point
    return np.clip(q, lo, hi).astype(dtype)


def _weight_axis(node: Node, weight: np.ndarray) -> int:
    if node.op.name == "Conv":
        return 0
    if node.op.name == "Gemm":
        return 0 if node.attrs.get("transB", 0) else 1
    return weight.ndim - 1  # MatMul: B is (..., K, N)


@dataclass
class QuantizeQDQ(Pass):
    """Insert QDQ pairs around the operands of Conv / MatMul / Gemm, using the
    activation ranges of ``ranges`` (from :func:`heli.quant.calibrate`)."""

    name = "quantize-qdq"
    description = "int8 QDQ quantization of Conv, MatMul and Gemm (per-channel weights)"
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    symmetric_activations: bool = False
    #: also quantize the outputs of Conv / MatMul / Gemm / residual Add (after a
    #: fused bias / Relu / Clip) for all their readers, and the operands of
    #: residual Adds (see :func:`heli.quant.quantize`)
    outputs: bool = False
    #: with ``outputs``: also quantize residual Adds (their operands and output)
    residual_adds: bool = True
    #: Conv / MatMul / Gemm / residual Add nodes left in float, by name (or
    #: first output name, see :func:`node_key`): their operands and outputs
    #: are not quantized for them
    keep_float: frozenset[str] = frozenset()
    #: largest weight magnitude: 127, or 63 for 7-bit weights (``reduce_range``)
    weight_max: int = INT8_MAX

    def apply(self, graph: Graph) -> Graph:
        keep = self.keep_float
        targets = {id(n) for n in quantizable_nodes(graph) if node_key(n) not in keep}
        adds = {id(n) for n in _float_adds(graph) if node_key(n) not in keep} \
            if self.outputs and self.residual_adds else set()
        after = set(quantized_outputs(graph, self.residual_adds, keep)) if self.outputs \
            else set()
        if not targets and not adds:
            return graph
        cache: dict[str, Value] = {}  # activation name → its DequantizeLinear output
        scales: dict[str, QParams] = {}

        def visit(builder: GraphBuilder, node: Node, inputs: list) -> tuple | None:
            if id(node) in targets:
                outs = self._rewrite(builder, graph, node, inputs, cache, scales)
            elif id(node) in adds:
                new = [self._activation(builder, v, None, cache, scales, old.name)[0]
                       for v, old in zip(inputs, node.inputs, strict=True)]
                outs = builder.add_node(node.op, new, node.attrs, name=node.name,
                                        output_names=[o.name for o in node.outputs])
            elif any(o is not None and o.name in after for o in node.outputs):
                outs = builder.add_node(node.op, inputs, node.attrs, name=node.name,
                                        output_names=[o.name if o is not None else None
                                                      for o in node.outputs])
            else:
                return None
            # every reader of a quantized output reads its DequantizeLinear
            return tuple(self._activation(builder, v, None, cache, scales, old.name)[0]
                         if old is not None and old.name in after else v
                         for v, old in zip(outs, node.outputs, strict=True))

        return rebuild(graph, visit)

    def _rewrite(self, b: GraphBuilder, graph: Graph, node: Node, inputs: list,
                 cache: dict[str, Value], scales: dict[str, QParams]) -> tuple:
        new = list(inputs)
        weight_slot = 1
        data_params = x_params = None
        for slot in (0, 1):
            value = inputs[slot]
            array = graph.constants.get(node.inputs[slot].name)
            if slot == weight_slot and array is not None and array.ndim >= 1:
                axis = _weight_axis(node, array)
                params = weight_qparams(array, axis, self.weight_max)
                new[slot] = self._dequantized_constant(b, value.name, array, params,
                                                       lo=-self.weight_max, hi=self.weight_max)
                data_params = params
            else:
                new[slot], params = self._activation(b, value, array, cache, scales,
                                                     node.inputs[slot].name)
                if slot == 0:
                    x_params = params
        bias_slot = 2
        if (len(inputs) > bias_slot and inputs[bias_slot] is not None and data_params is not None
                and x_params is not None and x_params.scale.ndim == 0):
            bias = graph.constants.get(node.inputs[bias_slot].name)
            channels = data_params.scale.shape[0]
            if bias is not None and bias.dtype == np.float32 and bias.shape == (channels,):
                bias_scale = (x_params.scale * data_params.scale).astype(np.float32)
                params = QParams(bias_scale, np.zeros(channels, np.int32), 0)
                new[bias_slot] = self._dequantized_constant(
                    b, inputs[bias_slot].name, bias, params, np.int32, INT32_MIN, INT32_MAX)
        return b.add_node(node.op, new, node.attrs, name=node.name,
                          output_names=[o.name if o is not None else None
                                        for o in node.outputs])

    def _activation(self, b: GraphBuilder, value: Value, array: np.ndarray | None,
                    cache: dict[str, Value], scales: dict[str, QParams],
                    name: str | None = None) -> tuple:
        """QuantizeLinear → DequantizeLinear of an activation (or of a constant
        operand that is not a weight: per-tensor from its own range).  ``name``
        is the tensor's name in the float graph (``value`` may already stand
        for its DequantizeLinear)."""
        name = value.name if name is None else name
        if name in cache:
            return cache[name], scales[name]
        if array is not None:
            low, high = float(np.min(array, initial=0.0)), float(np.max(array, initial=0.0))
        elif name in self.ranges:
            low, high = self.ranges[name]
        else:
            raise InputError(f"No calibrated range for the tensor {name!r}; calibrate "
                             "the graph that is being quantized.")
        attrs = {}
        if np.ndim(low):   # a range per channel (the last axis): symmetric per channel
            rank = len(value.type.shape)
            params = channel_qparams(np.asarray(low), np.asarray(high), rank - 1)
            attrs = {"axis": rank - 1}
        else:
            params = activation_qparams(low, high, self.symmetric_activations)
        scale = b.add_constant(params.scale, b.fresh_name(f"{value.name}_scale"))
        zero_point = b.add_constant(params.zero_point, b.fresh_name(f"{value.name}_zero_point"))
        (q,) = b.add_node("QuantizeLinear", [value, scale, zero_point], attrs,
                          output_names=[b.fresh_name(f"{value.name}_quantized")])
        (dq,) = b.add_node("DequantizeLinear", [q, scale, zero_point], attrs,
                           output_names=[b.fresh_name(f"{value.name}_dequantized")])
        cache[name], scales[name] = dq, params
        return dq, params

    @staticmethod
    def _dequantized_constant(b: GraphBuilder, name: str, array: np.ndarray, params: QParams,
                              dtype: type = np.int8, lo: int = -127,
                              hi: int = INT8_MAX) -> Value:
        """A constant stored quantized, followed by its DequantizeLinear."""
        q = b.add_constant(quantize_array(array, params, lo, hi, dtype),
                           b.fresh_name(f"{name}_quantized"))
        scale = b.add_constant(params.scale, b.fresh_name(f"{name}_scale"))
        zero_point = b.add_constant(params.zero_point.astype(dtype),
                                    b.fresh_name(f"{name}_zero_point"))
        (dq,) = b.add_node("DequantizeLinear", [q, scale, zero_point], {"axis": params.axis},
                           output_names=[b.fresh_name(f"{name}_dequantized")])
        return dq
