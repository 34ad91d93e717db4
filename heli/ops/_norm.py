"""Normalization ops (BatchNormalization, LayerNormalization, ...), the
softmax family (Softmax, LogSoftmax, Hardmax) and the losses built on it
(SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss).

Precision follows ONNX Runtime's CPU kernels so that float32 models match it:
statistics of LayerNormalization/RMSNormalization (which ORT accumulates in
double) and of the other normalizations are computed in float64 and the
result cast back; softmax runs in float32 with the maximum subtracted;
float16-like inputs compute in float32.
"""

from __future__ import annotations

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, TensorType, Type
from heli.ops._infer import normalize_axis, tensor_input

# --------------------------------------------------------------------------- helpers


def _float_work(dtype: np.dtype) -> np.dtype:
    """float32 math for float32 and narrower floats, float64 for float64."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _check_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis!r} is out of range for rank {rank}.")
    return axis % rank


def _channel_shape(rank: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector against an (N, C, ...) tensor."""
    return (-1,) + (1,) * (rank - 2) if rank >= 2 else (-1,)


def _per_channel(value: np.ndarray, channels: int, rank: int, what: str) -> np.ndarray:
    value = np.asarray(value)
    if value.size != channels:
        raise ValueError(f"The {what} has {value.size} elements; the input has {channels} "
                         f"channels.")
    return value.reshape(_channel_shape(rank))


def _check_param(param: np.ndarray | None, x: np.ndarray, what: str) -> None:
    """A scale or bias must broadcast to the input's shape, not grow it."""
    if param is None:
        return
    try:
        fits = np.broadcast_shapes(x.shape, np.shape(param)) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"The {what} of shape {list(np.shape(param))!r} does not broadcast to "
                         f"the input's shape {list(x.shape)!r}.")


def _moments(x64: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) variance over ``axes`` with keepdims, two-pass."""
    mean = np.mean(x64, axis=axes, keepdims=True)
    diff = x64 - mean
    return mean, np.mean(diff * diff, axis=axes, keepdims=True)


def _norm_infer_channels(ctx: InferContext, first_param: int, count: int) -> None:
    """Checks that the 1-D parameter inputs hold one value per channel."""
    x = tensor_input(ctx, 0)
    if x is None or x.shape is None or len(x.shape) < 2 or not isinstance(x.shape[1], int):
        return
    for index in range(first_param, first_param + count):
        p = tensor_input(ctx, index)
        if p is None or p.shape is None:
            continue
        if len(p.shape) != 1 or (isinstance(p.shape[0], int) and p.shape[0] != x.shape[1]):
            raise ctx.error(f"input {index} has shape {list(p.shape)}; expected "
                            f"[{x.shape[1]}] (one value per channel).")


# --------------------------------------------------------------------------- BatchNormalization


def _batchnorm_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is not None and x.shape is not None and len(x.shape) < 1:
        raise ctx.error("the input must have rank 1 or more, not 0.")
    _norm_infer_channels(ctx, 1, 4)
    stats = [tensor_input(ctx, 3), tensor_input(ctx, 4)]
    return [x, *stats][: ctx.num_outputs]


@op("BatchNormalization", infer=_batchnorm_infer, inputs=5, outputs=(1, 3),
    attrs={"epsilon": Attr.FLOAT(1e-5), "momentum": Attr.FLOAT(0.9),
           "training_mode": Attr.INT(0)})
def batch_normalization(x, scale, bias, mean, var, *, epsilon, momentum, training_mode, ctx):
    """Normalize each channel with the given mean/variance (inference) or with
    the batch's statistics (training_mode=1, which also outputs the updated
    running mean and variance)."""
    channels = x.shape[1] if x.ndim >= 2 else 1
    if not training_mode:
        # Fold into one multiply-add per element, in the input's precision
        # (as ORT does): s = scale / sqrt(var + eps), b = bias - mean * s.
        s = (np.asarray(scale, np.float64)
             / np.sqrt(np.asarray(var, np.float64) + np.float64(epsilon)))
        b = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * s
        work = _float_work(x.dtype)
        s = _per_channel(s.astype(work), channels, x.ndim, "scale")
        b = _per_channel(b.astype(work), channels, x.ndim, "bias")
        y = (x.astype(work, copy=False) * s + b).astype(x.dtype)
        return (y, mean, var)[: ctx.num_outputs]
    axes = tuple(i for i in range(x.ndim) if i != 1)
    x64 = x.astype(np.float64)
    batch_mean, batch_var = _moments(x64, axes)
    scale64 = _per_channel(np.asarray(scale, np.float64), channels, x.ndim, "scale")
    bias64 = _per_channel(np.asarray(bias, np.float64), channels, x.ndim, "bias")
    y = (x64 - batch_mean) / np.sqrt(batch_var + epsilon) * scale64 + bias64
    running_mean = (np.asarray(mean, np.float64) * momentum
                    + batch_mean.reshape(-1) * (1 - momentum)).astype(mean.dtype)
    running_var = (np.asarray(var, np.float64) * momentum
                   + batch_var.reshape(-1) * (1 - momentum)).astype(var.dtype)
    return (y.astype(x.dtype), running_mean.reshape(mean.shape),
            running_var.reshape(var.shape))[: ctx.num_outputs]


# --------------------------------------------------------------------------- InstanceNormalization


def _instancenorm_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is not None and x.shape is not None and len(x.shape) < 3:
        raise ctx.error(f"the input must have rank 3 or more (N, C, D1, ...), not "
                        f"{len(x.shape)}.")
    _norm_infer_channels(ctx, 1, 2)
    return [x]


@op("InstanceNormalization", infer=_instancenorm_infer, inputs=3,
    attrs={"epsilon": Attr.FLOAT(1e-5)})
def instance_normalization(x, scale, bias, *, epsilon):
    """Normalize each (sample, channel) over its spatial dimensions, then
    scale and shift per channel."""
    if x.ndim < 3:
        raise ValueError(f"The input must have rank 3 or more, not {x.ndim}.")
    x64 = x.astype(np.float64)
    mean, var = _moments(x64, tuple(range(2, x.ndim)))
    s = _per_channel(np.asarray(scale, np.float64), x.shape[1], x.ndim, "scale")
    b = _per_channel(np.asarray(bias, np.float64), x.shape[1], x.ndim, "bias")
    return ((x64 - mean) * (s / np.sqrt(var + epsilon)) + b).astype(x.dtype)


# --------------------------------------------------------------------------- LayerNormalization


def _stash_dtype(ctx: InferContext) -> DType:
    try:
        return DType.from_onnx(ctx.attrs["stash_type"])
    except Exception:
        raise ctx.error(f"stash_type {ctx.attrs['stash_type']!r} is not a supported "
                        f"ONNX data type.") from None


def _layernorm_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None] * ctx.num_outputs
    stash = _stash_dtype(ctx)
    if x.shape is None:
        return [x] + [TensorType(stash, None)] * (ctx.num_outputs - 1)
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    stat_shape = tuple(x.shape[:axis]) + (1,) * (len(x.shape) - axis)
    return [x] + [TensorType(stash, stat_shape)] * (ctx.num_outputs - 1)


@op("LayerNormalization", infer=_layernorm_infer, inputs=(2, 3), outputs=(1, 3),
    attrs={"axis": Attr.INT(-1), "epsilon": Attr.FLOAT(1e-5), "stash_type": Attr.INT(1)})
def layer_normalization(x, scale, bias=None, *, axis, epsilon, stash_type, ctx):
    """Normalize over the dimensions from ``axis`` on, then scale and shift.

    Optional outputs: the Mean and the inverse standard deviation, with the
    normalized dimensions kept as 1, in the ``stash_type`` dtype."""
    axis = _check_axis(axis, x.ndim)
    _check_param(scale, x, "scale")
    _check_param(bias, x, "bias")
    axes = tuple(range(axis, x.ndim))
    # ORT accumulates the statistics in double and normalizes in double.
    x64 = x.astype(np.float64)
    mean, var = _moments(x64, axes)
    inv_std = 1.0 / np.sqrt(var + epsilon)
    y = (x64 - mean) * inv_std * np.asarray(scale, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    stash = DType.from_onnx(stash_type).np
    return (y.astype(x.dtype), mean.astype(stash), inv_std.astype(stash))[: ctx.num_outputs]


# --------------------------------------------------------------------------- GroupNormalization


def _groupnorm_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    groups = ctx.attrs["num_groups"]
    if groups < 1:
        raise ctx.error(f"num_groups must be positive, not {groups!r}.")
    if x is not None and x.shape is not None:
        if len(x.shape) < 2:
            raise ctx.error(f"the input must have rank 2 or more (N, C, ...), not {len(x.shape)}.")
        channels = x.shape[1]
        if isinstance(channels, int) and channels % groups:
            raise ctx.error(f"the {channels} channels cannot be split into {groups} groups.")
    _norm_infer_channels(ctx, 1, 2)
    return [x]


@op("GroupNormalization", infer=_groupnorm_infer, inputs=3,
    attrs={"epsilon": Attr.FLOAT(1e-5), "num_groups": Attr.INT(), "stash_type": Attr.INT(1)})
def group_normalization(x, scale, bias, *, epsilon, num_groups, stash_type):
    """Normalize each group of channels (with its spatial dimensions) per
    sample, then scale and shift per channel (opset 21)."""
    n, channels = x.shape[0], x.shape[1]
    if channels % num_groups:
        raise ValueError(f"The {channels} channels cannot be split into {num_groups} groups.")
    grouped = x.astype(np.float64).reshape(n, num_groups, -1)
    mean, var = _moments(grouped, (2,))
    normalized = ((grouped - mean) / np.sqrt(var + epsilon)).reshape(x.shape)
    s = _per_channel(np.asarray(scale, np.float64), channels, x.ndim, "scale")
    b = _per_channel(np.asarray(bias, np.float64), channels, x.ndim, "bias")
    return (normalized * s + b).astype(x.dtype)


# --------------------------------------------------------------------------- RMSNormalization


def _axis_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is not None and x.shape is not None:
        normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    return [x]


@op("RMSNormalization", infer=_axis_infer, inputs=2,
    attrs={"axis": Attr.INT(-1), "epsilon": Attr.FLOAT(1e-5), "stash_type": Attr.INT(1)})
def rms_normalization(x, scale, *, axis, epsilon, stash_type):
    """x / sqrt(mean(x^2) + epsilon) * scale, the mean over the dimensions
    from ``axis`` on."""
    axis = _check_axis(axis, x.ndim)
    _check_param(scale, x, "scale")
    x64 = x.astype(np.float64)
    mean_square = np.mean(x64 * x64, axis=tuple(range(axis, x.ndim)), keepdims=True)
    y = x64 / np.sqrt(mean_square + epsilon) * np.asarray(scale, np.float64)
    return y.astype(x.dtype)


# --------------------------------------------------------------------------- LRN


def _lrn_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.attrs["size"] < 1:
        raise ctx.error(f"size must be positive, not {ctx.attrs['size']!r}.")
    x = tensor_input(ctx, 0)
    if x is not None and x.shape is not None and len(x.shape) < 2:
        raise ctx.error(f"the input must have rank 2 or more (N, C, ...), not {len(x.shape)}.")
    return [x]


@op("LRN", infer=_lrn_infer, inputs=1,
    attrs={"alpha": Attr.FLOAT(1e-4), "beta": Attr.FLOAT(0.75), "bias": Attr.FLOAT(1.0),
           "size": Attr.INT()})
def lrn(x, *, alpha, beta, bias, size):
    """Local response normalization across channels:
    x / (bias + alpha / size * sum of x^2 over a window of ``size`` channels)^beta."""
    work = _float_work(x.dtype)
    xw = x.astype(work, copy=False)
    squares = xw * xw
    channels = x.shape[1]
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    total = np.zeros_like(squares)
    # A loop over the window's taps: add the squares shifted by each offset.  Offsets
    # of a channel count or more reach no channel, so a huge ``size`` costs no time.
    for offset in range(max(-before, 1 - channels), min(after, channels - 1) + 1):
        lo, hi = max(0, -offset), min(channels, channels - offset)
        if lo < hi:
            total[:, lo:hi] += squares[:, lo + offset:hi + offset]
    base = work.type(bias) + work.type(alpha / size) * total
    return (xw * np.power(base, work.type(-beta))).astype(x.dtype)


# --------------------------------------------------------------------------- MVN / LpNormalization


def _mvn_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is not None and x.shape is not None:
        for axis in ctx.attrs["axes"]:
            normalize_axis(axis, len(x.shape), ctx)
    return [x]


@op("MeanVarianceNormalization", infer=_mvn_infer, inputs=1,
    attrs={"axes": Attr.INTS((0, 2, 3))})
def mean_variance_normalization(x, *, axes):
    """(x - mean) / (std + 1e-9) over ``axes``."""
    resolved = tuple(sorted({_check_axis(a, x.ndim) for a in axes}))
    x64 = x.astype(np.float64)
    mean, var = _moments(x64, resolved)
    return ((x64 - mean) / (np.sqrt(var) + 1e-9)).astype(x.dtype)


def _lpnorm_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.attrs["p"] not in (1, 2):
        raise ctx.error(f"p must be 1 or 2, not {ctx.attrs['p']!r}.")
    return _axis_infer(ctx)


@op("LpNormalization", infer=_lpnorm_infer, inputs=1,
    attrs={"axis": Attr.INT(-1), "p": Attr.INT(2)})
def lp_normalization(x, *, axis, p):
    """x divided by its L1 or L2 norm along ``axis`` (0 where the norm is 0)."""
    axis = _check_axis(axis, x.ndim)
    work = _float_work(x.dtype)
    xw = x.astype(work, copy=False)
    if p == 1:
        norm = np.sum(np.abs(xw), axis=axis, keepdims=True)
    elif p == 2:
        norm = np.sqrt(np.sum(xw * xw, axis=axis, keepdims=True))
    else:
        raise ValueError(f"p must be 1 or 2, not {p!r}.")
    safe = np.where(norm == 0, work.type(1), norm)
    return np.where(norm == 0, work.type(0), xw / safe).astype(x.dtype)


# --------------------------------------------------------------------------- softmax family


def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    """x - max(x) along ``axis``, in float32 (or float64) so that exp cannot
    overflow."""
    work = _float_work(x.dtype)
    xw = x.astype(work)  # a fresh array: the callers work in place
    if xw.size == 0:
        return xw
    peak = np.max(xw, axis=axis, keepdims=True)
    # An infinite maximum is not subtracted (inf - inf would turn rows into NaN).
    xw -= np.where(np.isfinite(peak), peak, work.type(0))
    return xw


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = _shifted(x, axis)
    shifted -= np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return shifted


@op("Softmax", infer=_axis_infer, inputs=1, attrs={"axis": Attr.INT(-1)})
def softmax(x, *, axis):
    """exp(x) / sum(exp(x)) along ``axis``, with the maximum subtracted first."""
    axis = _check_axis(axis, x.ndim)
    e = _shifted(x, axis)
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


@op("LogSoftmax", infer=_axis_infer, inputs=1, attrs={"axis": Attr.INT(-1)})
def log_softmax(x, *, axis):
    """x - max - log(sum(exp(x - max))) along ``axis``."""
    return _log_softmax(x, _check_axis(axis, x.ndim)).astype(x.dtype, copy=False)


@op("Hardmax", infer=_axis_infer, inputs=1, attrs={"axis": Attr.INT(-1)})
def hardmax(x, *, axis):
    """1 at the first maximum along ``axis``, 0 elsewhere."""
    axis = _check_axis(axis, x.ndim)
    values = x if x.dtype.kind in "biuf" else x.astype(np.float32)
    if x.shape[axis] == 0:
        return np.zeros_like(x)
    index = np.argmax(values, axis=axis, keepdims=True)
    positions = np.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - 1 - axis))
    return (positions == index).astype(x.dtype)


# --------------------------------------------------------------------------- losses

_REDUCTIONS = ("none", "sum", "mean")


def _loss_infer(ctx: InferContext, with_log_prob: bool) -> list[Type | None]:
    reduction = ctx.attrs["reduction"]
    if reduction not in _REDUCTIONS:
        raise ctx.error(f"reduction {reduction!r} is not one of {list(_REDUCTIONS)}.")
    scores, target = tensor_input(ctx, 0), tensor_input(ctx, 1)
    if scores is None:
        return [None] * ctx.num_outputs
    if scores.shape is not None:
        if len(scores.shape) < 2:
            raise ctx.error(f"the input must have rank 2 or more (N, C, ...), not "
                            f"{len(scores.shape)}.")
        if target is not None and target.shape is not None and \
                len(target.shape) != len(scores.shape) - 1:
            raise ctx.error(f"the target has shape {list(target.shape)}; for an input of shape "
                            f"{list(scores.shape)} it must have rank {len(scores.shape) - 1}.")
    if reduction == "none":
        loss_shape = target.shape if target is not None else None
        if loss_shape is None and scores.shape is not None:
            loss_shape = (scores.shape[0], *scores.shape[2:])
    else:
        loss_shape = ()
    types: list[Type | None] = [TensorType(scores.dtype, loss_shape)]
    if with_log_prob:
        types.append(scores)
    return types[: ctx.num_outputs]


def _nll(log_prob: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
         reduction: str, ignore_index: int | None) -> np.ndarray:
    """Negative log-likelihood of ``target`` classes under ``log_prob`` (N, C, ...)."""
    if log_prob.ndim < 2:
        raise ValueError(f"The input must have rank 2 or more, not {log_prob.ndim}.")
    expected = (log_prob.shape[0], *log_prob.shape[2:])
    if target.shape != expected:
        raise ValueError(f"The target has shape {list(target.shape)}; expected {list(expected)}.")
    classes = log_prob.shape[1]
    target = target.astype(np.int64)
    keep = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    bad = keep & ((target < 0) | (target >= classes))
    if bad.any():
        raise IndexError(f"The target class {int(target[bad][0])} is out of range for "
                         f"{classes} classes.")
    safe = np.where(keep, target, 0)
    work = _float_work(log_prob.dtype)
    picked = np.take_along_axis(log_prob.astype(work, copy=False),
                                np.expand_dims(safe, 1), axis=1)[:, 0]
    if weight is not None:
        w = np.where(keep, np.asarray(weight).astype(work)[safe], work.type(0))
    else:
        w = keep.astype(work)
    loss = -picked * w
    if reduction == "none":
        return loss.astype(log_prob.dtype)
    if reduction == "sum":
        return np.asarray(np.sum(loss)).astype(log_prob.dtype)
    if reduction == "mean":
        return np.asarray(np.sum(loss) / np.sum(w)).astype(log_prob.dtype)
    raise ValueError(f"reduction {reduction!r} is not one of {list(_REDUCTIONS)}.")


_LOSS_ATTRS = {"ignore_index": Attr.INT(None), "reduction": Attr.STRING("mean")}


@op("NegativeLogLikelihoodLoss", infer=lambda ctx: _loss_infer(ctx, False), inputs=(2, 3),
    attrs=_LOSS_ATTRS)
def negative_log_likelihood_loss(input, target, weight=None, *, ignore_index, reduction):
    """-input[n, target[n, d...], d...] (times the class weight), then
    reduced: none, sum, or mean over the non-ignored weight."""
    return _nll(input, target, weight, reduction, ignore_index)


@op("SoftmaxCrossEntropyLoss", infer=lambda ctx: _loss_infer(ctx, True), inputs=(2, 3),
    outputs=(1, 2), attrs=_LOSS_ATTRS)
def softmax_cross_entropy_loss(scores, labels, weights=None, *, ignore_index, reduction, ctx):
    """NegativeLogLikelihoodLoss of LogSoftmax(scores) over axis 1; the second
    (optional) output is that log-probability."""
    if scores.ndim < 2:
        raise ValueError(f"The scores must have rank 2 or more, not {scores.ndim}.")
    log_prob = _log_softmax(scores, 1).astype(scores.dtype)
    loss = _nll(log_prob, labels, weights, reduction, ignore_index)
    return (loss, log_prob)[: ctx.num_outputs]

