"""ONNX Runtime's quantized contrib ops (domain ``com.microsoft``), as its
quantizer writes them in QOperator form: QLinearAdd, QLinearMul,
QLinearGlobalAveragePool, QGemm, QLinearSoftmax, QLinearSigmoid and
QLinearLeakyRelu.

Each is defined as its float op between dequantized inputs and a quantized
output: ``Q(op(DQ(a), DQ(b)...))``, the inputs dequantized in float32 and the
result quantized half to even with saturation, as ONNX Runtime specifies them
(its kernels use lookup tables or fixed point, so they may differ by one unit
near ties).  :class:`heli.passes.QdqToInt` rewrites them into that QDQ form,
from which an integer target takes what it runs.
"""

from __future__ import annotations

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, TensorType, Type
from heli.ops._infer import broadcast_shapes, input_dtype, input_shape
from heli.ops._quant import quantize_values

MS = "com.microsoft"


def dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None) -> np.ndarray:
    """(x - zero_point) * scale in float32 (per tensor)."""
    diff = np.asarray(x).astype(np.int64)
    if zero_point is not None:
        diff = diff - np.asarray(zero_point).astype(np.int64).reshape(())
    return diff.astype(np.float32) * np.asarray(scale, np.float32).reshape(())


def quantize(y: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
             like: np.ndarray) -> np.ndarray:
    """``y`` quantized to the type of ``zero_point`` (else of ``like``)."""
    to = DType.from_numpy((zero_point if zero_point is not None else like).dtype)
    values = np.asarray(y, np.float32) / np.asarray(scale, np.float32).reshape(())
    zp = None if zero_point is None else np.asarray(zero_point).reshape(())
    return quantize_values(values, zp, to)


def _binary_infer(ctx: InferContext) -> list[Type | None]:
    dtype = input_dtype(ctx, 0)
    shape = broadcast_shapes([input_shape(ctx, 0), input_shape(ctx, 3)], ctx)
    return [TensorType(dtype, shape) if dtype else None]


@op("QLinearAdd", domain=MS, infer=_binary_infer, inputs=(7, 8))
def qlinear_add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale,
                c_zero_point=None):
    """Q(DQ(a) + DQ(b)) with numpy broadcasting."""
    y = dequantize(a, a_scale, a_zero_point) + dequantize(b, b_scale, b_zero_point)
    return quantize(y, c_scale, c_zero_point, a)


@op("QLinearMul", domain=MS, infer=_binary_infer, inputs=(7, 8))
def qlinear_mul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale,
                c_zero_point=None):
    """Q(DQ(a) * DQ(b)) with numpy broadcasting."""
    y = dequantize(a, a_scale, a_zero_point) * dequantize(b, b_scale, b_zero_point)
    return quantize(y, c_scale, c_zero_point, a)


def _unary_infer(ctx: InferContext) -> list[Type | None]:
    dtype = input_dtype(ctx, 0)
    return [TensorType(dtype, input_shape(ctx, 0)) if dtype else None]


@op("QLinearSigmoid", domain=MS, infer=_unary_infer, inputs=(4, 5))
def qlinear_sigmoid(x, x_scale, x_zero_point, y_scale, y_zero_point=None):
    """Q(1 / (1 + exp(-DQ(x))))."""
    f = dequantize(x, x_scale, x_zero_point).astype(np.float64)
    return quantize((1.0 / (1.0 + np.exp(-f))).astype(np.float32), y_scale, y_zero_point, x)


@op("QLinearLeakyRelu", domain=MS, infer=_unary_infer, inputs=(4, 5),
    attrs={"alpha": Attr.FLOAT(0.01)})
def qlinear_leaky_relu(x, x_scale, x_zero_point, y_scale, y_zero_point=None, *, alpha):
    """Q(LeakyRelu(DQ(x)))."""
    f = dequantize(x, x_scale, x_zero_point)
    return quantize(np.where(f < 0, f * np.float32(alpha), f), y_scale, y_zero_point, x)


@op("QLinearSoftmax", domain=MS, infer=_unary_infer, inputs=(4, 5),
    attrs={"axis": Attr.INT(-1), "opset": Attr.INT(13)})
def qlinear_softmax(x, x_scale, x_zero_point, y_scale, y_zero_point=None, *, axis, opset):
    """Q(Softmax(DQ(x))) along ``axis``; before opset 13 over all axes from
    ``axis`` on (the input coerced to 2-D)."""
    f = dequantize(x, x_scale, x_zero_point)
    axis = axis + f.ndim if axis < 0 else axis
    if not 0 <= axis < f.ndim:
        raise ValueError(f"QLinearSoftmax axis {axis} is out of range for rank {f.ndim}.")
    axes = tuple(range(axis, f.ndim)) if opset < 13 else (axis,)
    e = np.exp(f.astype(np.float64) - f.max(axis=axes, keepdims=True))
    y = (e / e.sum(axis=axes, keepdims=True)).astype(np.float32)
    return quantize(y, y_scale, y_zero_point, x)


def _global_infer(ctx: InferContext) -> list[Type | None]:
    dtype, shape = input_dtype(ctx, 0), input_shape(ctx, 0)
    if shape is not None and len(shape) >= 3:
        shape = (*shape[:2], *(1,) * (len(shape) - 2)) if not ctx.attrs.get("channels_last") \
            else (shape[0], *(1,) * (len(shape) - 2), shape[-1])
    return [TensorType(dtype, shape) if dtype else None]


@op("QLinearGlobalAveragePool", domain=MS, infer=_global_infer, inputs=5,
    attrs={"channels_last": Attr.INT(0)})
def qlinear_global_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, *,
                                channels_last):
    """Q(mean of DQ(x) over the spatial axes)."""
    f = dequantize(x, x_scale, x_zero_point).astype(np.float64)
    axes = tuple(range(1, f.ndim - 1)) if channels_last else tuple(range(2, f.ndim))
    y = f.mean(axis=axes, keepdims=True).astype(np.float32)
    return quantize(y, y_scale, y_zero_point, x)


def _qgemm_infer(ctx: InferContext) -> list[Type | None]:
    a, b = input_shape(ctx, 0), input_shape(ctx, 3)
    shape = None
    if a is not None and b is not None and len(a) == len(b) == 2:
        m = a[1] if ctx.attrs.get("transA") else a[0]
        n = b[0] if ctx.attrs.get("transB") else b[1]
        shape = (m, n)
    dtype = input_dtype(ctx, 8) if ctx.has_input(8) else DType.FLOAT32
    return [TensorType(dtype, shape) if dtype else None]


@op("QGemm", domain=MS, infer=_qgemm_infer, inputs=(6, 9),
    attrs={"alpha": Attr.FLOAT(1.0), "transA": Attr.INT(0), "transB": Attr.INT(0)})
def qgemm(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None,
          y_zero_point=None, *, alpha, transA, transB):
    """alpha · a_scale · b_scale · ((A - za)(B - zb) + C), C int32 at scale
    alpha · a_scale · b_scale with zero point 0 (b_scale and zb per tensor or
    per column); quantized by ``y_scale`` if given, else float32."""
    x = np.asarray(a).astype(np.int64) - np.asarray(a_zero_point).astype(np.int64).reshape(())
    w = np.asarray(b).astype(np.int64)
    if transA:
        x = x.T
    if transB:
        w = w.T
    w = w - np.asarray(b_zero_point).astype(np.int64).reshape(-1)[None, :] \
        if np.asarray(b_zero_point).size > 1 else w - int(np.asarray(b_zero_point))
    acc = (x.astype(np.float64) @ w.astype(np.float64))  # exact: small integers
    if c is not None:
        acc = acc + np.asarray(c).astype(np.float64)
    scale = (np.float32(alpha) * np.asarray(a_scale, np.float32).reshape(())
             * np.asarray(b_scale, np.float32).reshape(-1)).astype(np.float32)
    y = (acc.astype(np.float32) * (scale if scale.size > 1 else scale.reshape(())))
    if y_scale is None:
        return y.astype(np.float32)
    return quantize(y, y_scale, y_zero_point, a)
