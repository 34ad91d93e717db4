"""Target-neutral int8 post-training quantization.

    >>> from heli.quant import quantize
    >>> qgraph = quantize("model.onnx", [{"x": x0}, {"x": x1}], calibrator="percentile")
    >>> save_qdq_onnx(qgraph, "model.int8.onnx")   # QDQ form; ONNX Runtime runs it

Calibration runs the float model on ``ref`` and records activation ranges
(:class:`MinMaxCalibrator`, :class:`PercentileCalibrator`); :class:`QuantizeQDQ`
then inserts QuantizeLinear / DequantizeLinear pairs around the operands of
Conv, MatMul and Gemm: per-tensor asymmetric int8 activations, per-channel
symmetric int8 weights and int32 biases (see :mod:`heli.quant._qdq`).
"""

from heli.quant._api import quantize
from heli.quant._calibrate import (
    Calibrator,
    MinMaxCalibrator,
    PercentileCalibrator,
    activations_to_observe,
    calibrate,
    make_calibrator,
)
from heli.quant._export import QDQ_OPSET, save_qdq_onnx, to_qdq_onnx
from heli.quant._qdq import QParams, QuantizeQDQ, activation_qparams, weight_qparams

__all__ = [
    "Calibrator",
    "MinMaxCalibrator",
    "PercentileCalibrator",
    "QDQ_OPSET",
    "QParams",
    "QuantizeQDQ",
    "activation_qparams",
    "activations_to_observe",
    "calibrate",
    "make_calibrator",
    "quantize",
    "save_qdq_onnx",
    "to_qdq_onnx",
    "weight_qparams",
]
