"""Signal-processing ops: DFT, STFT, the cosine-sum windows (Hann, Hamming,
Blackman) and MelWeightMatrix.

Complex values travel as a trailing dimension of 2 (real, imaginary); a real
signal has a trailing dimension of 1.  Transforms run in float32 for float32
(and narrower) inputs, as ONNX Runtime's do, and in float64 for float64.
"""

from __future__ import annotations

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import Dim, DType, TensorType, Type
from heli.ops._infer import input_dtype, input_shape, tensor_input, unknown_dim


def _const_scalar(ctx: InferContext, index: int, what: str) -> int | float | None:
    """Input ``index``'s value when it is a constant scalar (or 1-element) tensor."""
    value = ctx.const(index) if ctx.has_input(index) else None
    if value is None:
        return None
    if value.size != 1:
        raise ctx.error(f"{what} must be a scalar, not a tensor of shape {list(value.shape)!r}.")
    return value.reshape(-1)[0].item()


def _scalar(value: np.ndarray, what: str) -> int | float:
    if value.size != 1:
        raise ValueError(f"{what} must be a scalar, not a tensor of shape {list(value.shape)!r}.")
    return value.reshape(-1)[0].item()


def _working(dtype: np.dtype) -> np.dtype:
    """The float precision a transform runs in: float64 stays float64, the
    rest compute in float32 (as other runtimes do)."""
    return np.dtype(np.float64 if dtype == np.float64 else np.float32)


def _as_complex(x: np.ndarray) -> np.ndarray:
    """A [..., 1] (real) or [..., 2] (complex) array as a real or complex array [...]."""
    real = x[..., 0].astype(_working(x.dtype))
    if x.shape[-1] == 1:
        return real
    if x.shape[-1] == 2:
        return real + 1j * x[..., 1].astype(real.dtype)
    raise ValueError(
        f"the last dimension must be 1 (real) or 2 (complex), not {x.shape[-1]}."
    )


def _from_complex(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1).astype(dtype)


# -- DFT ------------------------------------------------------------------------------


def _dft_axis(axis: int, rank: int) -> int:
    """The DFT axis made non-negative; the last (complex) dim is not allowed."""
    if not (-rank <= axis <= -2 or 0 <= axis <= rank - 2):
        raise ValueError(
            f"axis {axis!r} is out of range for an input of rank {rank} (the last "
            "dimension holds the real and imaginary parts)."
        )
    return axis % rank


def _dft_infer(ctx: InferContext) -> list[Type | None]:
    t = tensor_input(ctx, 0)
    if t is None:
        return [None]
    if not t.dtype.is_float:
        raise ctx.error(f"the input must be a float tensor, not {t.dtype}.")
    onesided, inverse = ctx.attrs["onesided"], ctx.attrs["inverse"]
    axis = _const_scalar(ctx, 2, "axis") if ctx.has_input(2) else -2
    length = _const_scalar(ctx, 1, "dft_length")
    if t.shape is None or axis is None or (ctx.has_input(1) and length is None):
        return [TensorType(t.dtype, None)]
    shape = list(t.shape)
    rank = len(shape)
    try:
        axis = _dft_axis(int(axis), rank)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    last = shape[-1]
    if isinstance(last, int) and last not in (1, 2):
        raise ctx.error(f"the last dimension must be 1 (real) or 2 (complex), not {last}.")
    dim = shape[axis]
    if length is None:
        if onesided and inverse:
            length = 2 * (dim - 1) if isinstance(dim, int) else unknown_dim()
        else:
            length = dim
    elif length < 1:
        raise ctx.error(f"dft_length {length!r} must be positive.")
    if onesided and not inverse:
        shape[axis] = length // 2 + 1 if isinstance(length, int) else unknown_dim()
    else:
        shape[axis] = length
    shape[-1] = 1 if (onesided and inverse) else 2
    return [TensorType(t.dtype, tuple(shape))]


@op(
    "DFT",
    infer=_dft_infer,
    inputs=(1, 3),
    attrs={"inverse": Attr.INT(0), "onesided": Attr.INT(0)},
)
def dft(x, dft_length=None, axis=None, *, inverse, onesided):
    """The (inverse) discrete Fourier transform along ``axis``; with
    ``onesided`` the forward transform of a real signal keeps the
    non-redundant half (RFFT) and the inverse one returns a real signal (IRFFT)."""
    ax = _dft_axis(-2 if axis is None else int(_scalar(axis, "axis")), x.ndim)
    n = None if dft_length is None else int(_scalar(dft_length, "dft_length"))
    if n is not None and n < 1:
        raise ValueError(f"dft_length {n!r} must be positive.")
    z = _as_complex(x)
    if onesided and inverse:
        if x.shape[-1] != 2:
            raise ValueError("the inverse one-sided DFT (IRFFT) needs a complex input.")
        if n is None:
            n = 2 * (x.shape[ax] - 1)
        return np.fft.irfft(z, n=n, axis=ax)[..., None].astype(x.dtype)
    if onesided:
        if x.shape[-1] != 1:
            raise ValueError("the one-sided DFT (RFFT) needs a real input.")
        return _from_complex(np.fft.rfft(z, n=n, axis=ax), x.dtype)
    transform = np.fft.ifft if inverse else np.fft.fft
    return _from_complex(transform(z, n=n, axis=ax), x.dtype)


# -- STFT -----------------------------------------------------------------------------


def _stft_infer(ctx: InferContext) -> list[Type | None]:
    t = tensor_input(ctx, 0)
    if t is None:
        return [None]
    if not t.dtype.is_float:
        raise ctx.error(f"the signal must be a float tensor, not {t.dtype}.")
    if t.shape is not None and len(t.shape) != 3:
        raise ctx.error(f"the signal must have rank 3, not {len(t.shape)}.")
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    batch, signal_length, _ = t.shape
    step = _const_scalar(ctx, 1, "frame_step")
    frame_length: Dim | None = _const_scalar(ctx, 3, "frame_length")
    if frame_length is None and not ctx.has_input(3):
        window = input_shape(ctx, 2)
        if ctx.has_input(2):
            frame_length = window[0] if window is not None and len(window) == 1 else None
        else:
            frame_length = signal_length
    frames: Dim = unknown_dim()
    if (isinstance(signal_length, int) and isinstance(frame_length, int)
            and isinstance(step, int)):
        if step < 1:
            raise ctx.error(f"frame_step {step!r} must be positive.")
        if frame_length > signal_length:
            raise ctx.error(
                f"frame_length {frame_length!r} is longer than the signal ({signal_length})."
            )
        frames = (signal_length - frame_length) // step + 1
    if not isinstance(frame_length, int):
        bins: Dim = unknown_dim()
    else:
        bins = frame_length // 2 + 1 if ctx.attrs["onesided"] else frame_length
    return [TensorType(t.dtype, (batch, frames, bins, 2))]


@op("STFT", infer=_stft_infer, inputs=(2, 4), attrs={"onesided": Attr.INT(1)})
def stft(signal, frame_step, window=None, frame_length=None, *, onesided):
    """DFTs of windowed frames: output [batch, frames, bins, 2]."""
    if signal.ndim != 3:
        raise ValueError(f"the signal must have rank 3, not {signal.ndim}.")
    step = int(_scalar(frame_step, "frame_step"))
    if step < 1:
        raise ValueError(f"frame_step {step!r} must be positive.")
    if frame_length is not None:
        length = int(_scalar(frame_length, "frame_length"))
    elif window is not None:
        length = window.shape[0]
    else:
        length = signal.shape[1]
    if window is not None and (window.ndim != 1 or window.shape[0] != length):
        raise ValueError(
            f"the window has shape {list(window.shape)!r} but frame_length is {length}."
        )
    if not 1 <= length <= signal.shape[1]:
        raise ValueError(
            f"frame_length {length!r} must be between 1 and the signal length "
            f"({signal.shape[1]})."
        )
    z = _as_complex(signal)  # [batch, signal_length]
    starts = np.arange(0, signal.shape[1] - length + 1, step)
    frames = z[:, starts[:, None] + np.arange(length)]  # [batch, frames, length]
    if window is not None:
        frames = frames * window.astype(frames.real.dtype)
    if onesided:
        if signal.shape[-1] == 2:
            raise ValueError("a one-sided STFT is not possible for a complex signal.")
        spectrum = np.fft.rfft(frames, axis=-1)
    else:
        spectrum = np.fft.fft(frames, axis=-1)
    return _from_complex(spectrum, signal.dtype)


# -- windows ----------------------------------------------------------------------------


def _window_infer(ctx: InferContext) -> list[Type | None]:
    dtype = DType.from_onnx(ctx.attrs["output_datatype"])
    if input_dtype(ctx, 0) is not None and not input_dtype(ctx, 0).is_int:
        raise ctx.error(f"the window size must be an integer, not {input_dtype(ctx, 0)}.")
    size = _const_scalar(ctx, 0, "size")
    if size is not None and size < 0:
        raise ctx.error(f"the window size {size!r} must not be negative.")
    return [TensorType(dtype, (size if size is not None else unknown_dim(),))]


def _cosine_window(size: np.ndarray, coefficients: tuple[float, ...], periodic: int,
                   output_datatype: int) -> np.ndarray:
    """sum_k (-1)^k a_k cos(2 pi k n / N), N = size (periodic) or size - 1."""
    count = int(_scalar(size, "size"))
    if count < 0:
        raise ValueError(f"the window size {count!r} must not be negative.")
    period = count if periodic else count - 1
    n = np.arange(count, dtype=np.float64)
    phase = 2 * np.pi * n / max(period, 1)  # a 1-point symmetric window is [a0 - a1 + a2]
    value = np.zeros(count, dtype=np.float64)
    for k, a in enumerate(coefficients):
        value += (-1) ** k * a * np.cos(k * phase)
    return value.astype(DType.from_onnx(output_datatype).np)


_WINDOW_ATTRS = {"output_datatype": Attr.INT(1), "periodic": Attr.INT(1)}


@op("HannWindow", infer=_window_infer, inputs=1, attrs=_WINDOW_ATTRS)
def hann_window(size, *, output_datatype, periodic):
    return _cosine_window(size, (0.5, 0.5), periodic, output_datatype)


@op("HammingWindow", infer=_window_infer, inputs=1, attrs=_WINDOW_ATTRS)
def hamming_window(size, *, output_datatype, periodic):
    return _cosine_window(size, (25 / 46, 21 / 46), periodic, output_datatype)


@op("BlackmanWindow", infer=_window_infer, inputs=1, attrs=_WINDOW_ATTRS)
def blackman_window(size, *, output_datatype, periodic):
    return _cosine_window(size, (0.42, 0.5, 0.08), periodic, output_datatype)


# -- MelWeightMatrix -----------------------------------------------------------------------


def _mel_infer(ctx: InferContext) -> list[Type | None]:
    dtype = DType.from_onnx(ctx.attrs["output_datatype"])
    mel_bins = _const_scalar(ctx, 0, "num_mel_bins")
    dft_length = _const_scalar(ctx, 1, "dft_length")
    rows = dft_length // 2 + 1 if dft_length is not None else unknown_dim()
    return [TensorType(dtype, (rows, mel_bins if mel_bins is not None else unknown_dim()))]


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@op("MelWeightMatrix", infer=_mel_infer, inputs=5, attrs={"output_datatype": Attr.INT(1)})
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz,
                      upper_edge_hertz, *, output_datatype):
    """Triangular filters, evenly spaced on the mel scale, as a
    [dft_length // 2 + 1, num_mel_bins] matrix of peak 1."""
    mel_bins = int(_scalar(num_mel_bins, "num_mel_bins"))
    length = int(_scalar(dft_length, "dft_length"))
    rate = float(_scalar(sample_rate, "sample_rate"))
    low = float(_scalar(lower_edge_hertz, "lower_edge_hertz"))
    high = float(_scalar(upper_edge_hertz, "upper_edge_hertz"))
    if mel_bins < 1 or length < 1 or rate <= 0:
        raise ValueError(
            f"num_mel_bins ({mel_bins}), dft_length ({length}) and sample_rate ({rate}) "
            "must be positive."
        )
    if not 0 <= low < high:
        raise ValueError(
            f"lower_edge_hertz {low!r} and upper_edge_hertz {high!r} must satisfy "
            "0 <= lower < upper."
        )
    # num_mel_bins + 2 points split the mel range evenly: the left edge, peak
    # and right edge of each triangle, mapped back to DFT bin numbers.
    points = mel_bins + 2
    low_mel, high_mel = _hz_to_mel(low), _hz_to_mel(high)
    mels = low_mel + np.arange(points) * ((high_mel - low_mel) / points)
    edges = np.floor((length + 1) * _mel_to_hz(mels) / rate).astype(np.int64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(length // 2 + 1)[:, None]
    rising = (j >= left) & (j <= center)
    falling = (j >= center) & (j < right)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(center > left, (j - left) / np.maximum(center - left, 1), 1.0)
        down = (right - j) / np.maximum(right - center, 1)
    out = np.where(falling, down, np.where(rising, up, 0.0))
    return out.astype(DType.from_onnx(output_datatype).np)
