"""Image-resampling ops: Resize, GridSample, AffineGrid.

Resize is separable: each resized axis gets a precomputed ``(out, taps)`` array
of source indices and one of weights, and the input is contracted along that
axis in turn, so large feature maps cost a few vectorized gathers per axis.
Coordinates are computed in float32 with the formulas ONNX Runtime uses, so
nearest-neighbour ties and output sizes round the same way it does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from heli.ir._limits import check_tensor_size
from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import Dim, TensorType, Type
from heli.ops._infer import input_dtype, input_shape, tensor_input, unknown_dim

_F32 = np.float32

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_POLICIES = ("stretch", "not_larger", "not_smaller")


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """The float type interpolation runs in: float32 unless the data needs more."""
    if dtype == np.float64 or dtype in (np.int32, np.int64, np.uint32, np.uint64):
        return np.dtype(np.float64)
    if dtype.kind == "c":
        return dtype
    return np.dtype(np.float32)


def _cast_result(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the input dtype; integers are clipped to their range and truncated."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        y = np.clip(np.nan_to_num(y), info.min, info.max)
    elif dtype == np.bool_:
        return y != 0
    return y.astype(dtype)


# --------------------------------------------------------------------------- Resize


def _normalize_axes(axes: tuple[int, ...] | None, rank: int) -> list[int]:
    if axes is None:
        return list(range(rank))
    result = []
    for axis in axes:
        if not -rank <= axis < rank:
            raise ValueError(f"Resize axis {axis!r} is out of range for an input of rank {rank}.")
        result.append(axis % rank)
    if len(set(result)) != len(result):
        raise ValueError(f"Resize axes {list(axes)!r} repeat an axis.")
    return result


def _present(array: np.ndarray | None) -> bool:
    """Old models pass an empty tensor for an unused scales/roi input."""
    return array is not None and array.size > 0


@dataclass
class _Plan:
    """Per resized axis: the scale used by the coordinate transform, the output length,
    and the target length the coordinate transforms divide by.  ONNX defines that
    target as ``length * scale`` when scales are given, which may be fractional
    (ONNX Runtime uses the integer output length instead)."""

    scales: list[float]
    sizes: list[int]
    targets: list[float]


def _plan(in_sizes: list[int], scales: np.ndarray | None, sizes: np.ndarray | None,
          roi: list[tuple[float, float]], policy: str, crop: bool) -> _Plan:
    """Output sizes and scales of the resized axes (``in_sizes`` lists only those)."""
    count = len(in_sizes)
    if _present(scales) and _present(sizes):
        raise ValueError("Resize was given both 'scales' and 'sizes'; give only one of them.")
    if _present(sizes):
        sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if sizes.size != count:
            raise ValueError(f"Resize 'sizes' has {sizes.size} values but {count} axes are "
                             "resized.")
        if np.any(sizes < 0):
            raise ValueError(f"Resize 'sizes' {sizes.tolist()!r} holds a negative size.")
        if policy == "stretch":
            out = [int(s) for s in sizes]
            scales = [_F32(o) / _F32(i) if i else _F32(1) for o, i in zip(out, in_sizes,
                                                                          strict=True)]
            return _Plan(scales, out, [_F32(o) for o in out])
        ratios = [_F32(s) / _F32(i) for s, i in zip(sizes, in_sizes, strict=True)]
        scale = min(ratios) if policy == "not_larger" else max(ratios)
        # round half up, as the spec's round_int
        out = [int(np.floor(_F32(scale) * _F32(i) + _F32(0.5))) for i in in_sizes]
        return _Plan([_F32(scale)] * count, out, [_F32(o) for o in out])
    if not _present(scales):
        raise ValueError("Resize needs one of 'scales' and 'sizes'; neither was given.")
    scales = np.asarray(scales, dtype=np.float32).reshape(-1)
    if scales.size != count:
        raise ValueError(f"Resize 'scales' has {scales.size} values but {count} axes are "
                         "resized.")
    if np.any(~(scales > 0)) or not np.all(np.isfinite(scales)):
        raise ValueError(f"Resize 'scales' {scales.tolist()!r} must all be positive and finite.")
    out, targets = [], []
    for i, s, (start, end) in zip(in_sizes, scales, roi, strict=True):
        length = _F32(i) * (_F32(end) - _F32(start)) if crop else _F32(i)
        targets.append(_F32(length * s))
        out.append(int(np.floor(targets[-1])))
    return _Plan([_F32(s) for s in scales], out, targets)


def _roi_pairs(roi: np.ndarray | None, count: int, crop: bool) -> list[tuple[float, float]]:
    if not crop or not _present(roi):
        return [(0.0, 1.0)] * count
    roi = np.asarray(roi, dtype=np.float32).reshape(-1)
    if roi.size != 2 * count:
        raise ValueError(f"Resize 'roi' has {roi.size} values but needs {2 * count} "
                         f"(a start and an end for each of the {count} resized axes).")
    return [(float(roi[k]), float(roi[count + k])) for k in range(count)]


def _source_coords(mode: str, n_in: int, n_out: int, target: float, scale: float,
                   roi: tuple[float, float]) -> np.ndarray:
    """x_original for every output index, in float32 as ONNX Runtime computes it."""
    x = np.arange(n_out, dtype=_F32)
    scale, n_in_f, n_out_f = _F32(scale), _F32(n_in), _F32(target)
    half = _F32(0.5)
    if mode == "half_pixel":
        return (x + half) / scale - half
    if mode == "half_pixel_symmetric":
        adjustment = _F32(n_out) / n_out_f
        offset = n_in_f / _F32(2) * (_F32(1) - adjustment)
        # ONNX Runtime evaluates the last step in double precision.
        coords = np.float64(offset) + (x.astype(np.float64) + 0.5) / np.float64(scale) - 0.5
        return coords.astype(_F32)
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if n_out > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (n_in_f - 1) / (n_out_f - 1) if n_out > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    start, end = _F32(roi[0]), _F32(roi[1])
    if n_out > 1:
        return start * (n_in_f - 1) + x * (end - start) * (n_in_f - 1) / (n_out_f - 1)
    return np.full_like(x, 0.5 * (np.float64(start) + np.float64(end)) * (n_in - 1))


def _round_nearest(x: np.ndarray, nearest_mode: str) -> np.ndarray:
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    floor = np.floor(x)
    tie = (x - floor) == _F32(0.5)
    if nearest_mode == "round_prefer_floor":
        return np.where(tie, floor, np.round(x))
    return np.where(tie, floor + 1, np.round(x))


def _cubic_kernel(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient ``a``."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _taps(mode: str, x: np.ndarray, scale: float, n_in: int, cubic_a: float,
          exclude_outside: bool, antialias: bool, nearest_mode: str
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Source indices ``(out, taps)`` and weights (None for nearest) of one axis."""
    if mode == "nearest":
        index = _round_nearest(x, nearest_mode).astype(np.int64)
        return np.clip(index, 0, n_in - 1)[:, None], None
    base = np.floor(x)
    ratio = (x - base).astype(np.float64)[:, None]
    # Antialiasing stretches the filter by 1/scale when downsampling.
    stretch = min(float(scale), 1.0) if antialias else 1.0
    if mode == "linear":
        start = int(np.floor(-1 / stretch)) + 1
        offsets = np.arange(start, 2 - start)
        weights = np.clip(1 - np.abs((offsets - ratio) * stretch), 0, 1)
    else:
        start = int(np.floor(-2 / stretch)) + 1
        offsets = np.arange(start, 2 - start)
        weights = _cubic_kernel((offsets - ratio) * stretch, cubic_a)
    index = base.astype(np.int64)[:, None] + offsets
    outside = (index < 0) | (index >= n_in)
    if exclude_outside:
        weights = np.where(outside, 0.0, weights)
    if antialias or exclude_outside:
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(index, 0, n_in - 1), weights


def _apply_axis(x: np.ndarray, axis: int, index: np.ndarray, weights: np.ndarray | None
                ) -> np.ndarray:
    """Contract ``x`` along ``axis`` with one axis's taps."""
    if weights is None:
        return np.take(x, index[:, 0], axis=axis, mode="clip")
    shape = [1] * x.ndim
    shape[axis] = index.shape[0]
    weights = weights.astype(x.dtype)
    # In-place arithmetic on two buffers: fresh temporaries per tap cost more
    # (page faults) than the arithmetic itself on large feature maps.
    result = np.take(x, index[:, 0], axis=axis, mode="clip")
    result *= weights[:, 0].reshape(shape)
    term = np.empty_like(result)
    for t in range(1, index.shape[1]):
        np.take(x, index[:, t], axis=axis, out=term, mode="clip")
        term *= weights[:, t].reshape(shape)
        result += term
    return result


_RESIZE_ATTRS = {
    "antialias": Attr.INT(0),
    "axes": Attr.INTS(None),
    "coordinate_transformation_mode": Attr.STRING("half_pixel"),
    "cubic_coeff_a": Attr.FLOAT(-0.75),
    "exclude_outside": Attr.INT(0),
    "extrapolation_value": Attr.FLOAT(0.0),
    "keep_aspect_ratio_policy": Attr.STRING("stretch"),
    "mode": Attr.STRING("nearest"),
    "nearest_mode": Attr.STRING("round_prefer_floor"),
}


def _check_resize_attrs(attrs: dict, fail) -> None:
    if attrs["mode"] not in ("nearest", "linear", "cubic"):
        raise fail(f"Resize mode {attrs['mode']!r} is not one of 'nearest', 'linear', 'cubic'.")
    if attrs["coordinate_transformation_mode"] not in _COORD_MODES:
        raise fail(f"Resize coordinate_transformation_mode "
                   f"{attrs['coordinate_transformation_mode']!r} is not a known mode.")
    if attrs["nearest_mode"] not in _NEAREST_MODES:
        raise fail(f"Resize nearest_mode {attrs['nearest_mode']!r} is not a known mode.")
    if attrs["keep_aspect_ratio_policy"] not in _POLICIES:
        raise fail(f"Resize keep_aspect_ratio_policy {attrs['keep_aspect_ratio_policy']!r} "
                   "is not one of 'stretch', 'not_larger', 'not_smaller'.")


def _given(ctx: InferContext, index: int) -> bool:
    """Input ``index`` is wired and not a constant empty placeholder."""
    value = ctx.const(index)
    return tensor_input(ctx, index) is not None and not (value is not None and value.size == 0)


def _resized_dims(ctx: InferContext, in_dims: list[Dim]) -> list[Dim]:
    """Output dims of the resized axes: exact where constants allow, else fresh symbols."""
    count = len(in_dims)
    unknown = [unknown_dim() for _ in in_dims]
    static = all(isinstance(d, int) for d in in_dims)
    policy = ctx.attrs["keep_aspect_ratio_policy"]
    crop = ctx.attrs["coordinate_transformation_mode"] == "tf_crop_and_resize"
    scales, sizes, roi = ctx.const(2), ctx.const(3), ctx.const(1)
    if _given(ctx, 3):
        if _given(ctx, 2) and scales is not None and sizes is not None:
            raise ValueError("Resize was given both 'scales' and 'sizes'; give only one of them.")
        if sizes is None:
            return unknown
        if sizes.size != count:
            raise ValueError(f"Resize 'sizes' has {sizes.size} values but {count} axes are "
                             "resized.")
        if policy == "stretch":
            return [int(s) for s in sizes.reshape(-1)]
        if not static:
            return unknown
        return _plan([int(d) for d in in_dims], None, sizes, [(0.0, 1.0)] * count, policy,
                     False).sizes
    if not _given(ctx, 2):
        raise ValueError("Resize needs one of 'scales' and 'sizes'; neither was given.")
    if scales is None or (crop and _given(ctx, 1) and roi is None):
        return unknown
    if static:
        return _plan([int(d) for d in in_dims], scales, None, _roi_pairs(roi, count, crop),
                     policy, crop).sizes
    plan_scales = np.asarray(scales, dtype=np.float32).reshape(-1)
    if plan_scales.size != count or crop:
        return unknown
    # Symbolic input dims: a scale of 1 keeps the dim, anything else is unknown.
    return [d if s == 1 else (int(np.floor(_F32(d) * s)) if isinstance(d, int) else unknown_dim())
            for d, s in zip(in_dims, plan_scales, strict=True)]


def _resize_infer(ctx: InferContext) -> list[Type | None]:
    _check_resize_attrs(dict(ctx.attrs), ctx.error)
    dtype, shape = input_dtype(ctx, 0), input_shape(ctx, 0)
    if dtype is None:
        return [None]
    if shape is None:
        return [TensorType(dtype, None)]
    rank = len(shape)
    try:
        axes = _normalize_axes(ctx.attrs["axes"], rank)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    out: list[Dim] = list(shape)
    try:
        new = _resized_dims(ctx, [shape[a] for a in axes])
    except ValueError as error:
        raise ctx.error(str(error)) from None
    for axis, dim in zip(axes, new, strict=True):
        out[axis] = dim
    return [TensorType(dtype, tuple(out))]


@op("Resize", infer=_resize_infer, attrs=_RESIZE_ATTRS, inputs=(1, 4))
def resize(x, roi=None, scales=None, sizes=None, *, antialias, axes, coordinate_transformation_mode,
           cubic_coeff_a, exclude_outside, extrapolation_value, keep_aspect_ratio_policy, mode,
           nearest_mode):
    """Resize with nearest / N-linear / N-cubic interpolation (ONNX opset 19)."""
    _check_resize_attrs(
        {"mode": mode, "coordinate_transformation_mode": coordinate_transformation_mode,
         "nearest_mode": nearest_mode, "keep_aspect_ratio_policy": keep_aspect_ratio_policy},
        ValueError)
    axes = _normalize_axes(axes, x.ndim)
    crop = coordinate_transformation_mode == "tf_crop_and_resize"
    rois = _roi_pairs(roi, len(axes), crop)
    in_sizes = [x.shape[a] for a in axes]
    plan = _plan(in_sizes, scales, sizes, rois, keep_aspect_ratio_policy, crop)
    dtype = x.dtype
    out_shape = list(x.shape)
    for axis, size in zip(axes, plan.sizes, strict=True):
        out_shape[axis] = size
    check_tensor_size(out_shape, dtype)
    if mode != "nearest":
        if dtype.kind not in "fciub" and dtype.kind != "V":
            raise ValueError(f"Resize mode {mode!r} cannot interpolate {dtype.name} data.")
        y = x.astype(_compute_dtype(dtype))
    else:
        y = x
    outside = None
    # Shrinking axes first keeps intermediates small; among the rest the innermost
    # goes first, since gathers along it are the slow (strided) ones.
    order = sorted(range(len(axes)), key=lambda k: (plan.sizes[k] / max(in_sizes[k], 1),
                                                    -axes[k]))
    for k in order:
        axis = axes[k]
        n_in, n_out, scale = in_sizes[k], plan.sizes[k], plan.scales[k]
        if n_out == 0 or n_in == 0:
            y = np.take(y, np.zeros(0, np.int64), axis=axis) if n_out == 0 else y
            if n_in == 0 and n_out:
                raise ValueError(f"Resize cannot resize the empty axis {axis} to length {n_out}.")
            continue
        coords = _source_coords(coordinate_transformation_mode, n_in, n_out, plan.targets[k],
                                scale, rois[k])
        if n_out == n_in and np.array_equal(coords, np.arange(n_in)):
            continue  # every mode samples exactly the input points: an identity axis
        index, weights = _taps(mode, coords, scale, n_in, cubic_coeff_a, bool(exclude_outside),
                               bool(antialias), nearest_mode)
        y = _apply_axis(y, axis, index, weights)
        if crop:
            bad = (coords < 0) | (coords > n_in - 1)
            if bad.any():
                shape = [1] * x.ndim
                shape[axis] = n_out
                bad = bad.reshape(shape)
                outside = bad if outside is None else (outside | bad)
    if outside is not None:
        y = np.where(outside, np.asarray(extrapolation_value).astype(y.dtype), y)
    return _cast_result(y, dtype) if y.dtype != dtype else y


# --------------------------------------------------------------------------- GridSample


def _reflect(x: np.ndarray, low2: float, high2: float) -> np.ndarray:
    """Reflect coordinates into [low2/2, high2/2] by repeated mirroring at the borders."""
    if low2 == high2:
        return np.zeros_like(x)
    low, span = low2 / 2, (high2 - low2) / 2
    x = np.abs(x - low)
    extra = np.fmod(x, span)
    flips = np.floor(x / span)
    return np.where(flips % 2 == 0, extra + low, span - extra + low)


def _pad_coord(x: np.ndarray, n: int, padding: str, align: bool) -> np.ndarray:
    """Border/reflection padding applied to a source coordinate."""
    if padding == "border":
        return np.clip(x, 0, n - 1)
    if padding == "reflection":
        x = _reflect(x, 0, 2 * (n - 1)) if align else _reflect(x, -1, 2 * n - 1)
        return np.clip(x, 0, n - 1)
    return x


def _grid_taps(x: np.ndarray, n: int, mode: str, padding: str, align: bool
               ) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(index, weight, valid) per tap along one spatial dim."""
    if mode != "cubic":
        x = _pad_coord(x, n, padding, align)
    if mode == "nearest":
        # round half to even, as the spec asks
        return [_bounded(np.rint(x), n, None)]
    base = np.floor(x)
    t = x - base
    if mode == "linear":
        return [_bounded(base, n, 1 - t), _bounded(base + 1, n, t)]
    a = -0.75
    taps = []
    for k, w in zip(range(-1, 3), (_cubic_kernel(t + 1, a), _cubic_kernel(t, a),
                                   _cubic_kernel(1 - t, a), _cubic_kernel(2 - t, a)),
                    strict=True):
        # Bicubic pads each tap's coordinate, not the sampling point.
        taps.append(_bounded(_pad_coord(base + k, n, padding, align), n, w.astype(x.dtype)))
    return taps


def _bounded(index: np.ndarray, n: int, weight: np.ndarray | None):
    valid = (index >= 0) & (index <= n - 1)
    index = np.clip(np.nan_to_num(index), 0, max(n - 1, 0)).astype(np.int64)
    return index, weight, valid


_GRID_MODES = {"linear": "linear", "bilinear": "linear", "nearest": "nearest",
               "cubic": "cubic", "bicubic": "cubic"}


def _grid_sample_infer(ctx: InferContext) -> list[Type | None]:
    mode, padding = ctx.attrs["mode"], ctx.attrs["padding_mode"]
    if mode not in _GRID_MODES:
        raise ctx.error(f"GridSample mode {mode!r} is not one of 'linear', 'nearest', 'cubic'.")
    if padding not in ("zeros", "border", "reflection"):
        raise ctx.error(f"GridSample padding_mode {padding!r} is not one of 'zeros', 'border', "
                        "'reflection'.")
    dtype, x_shape, g_shape = input_dtype(ctx, 0), input_shape(ctx, 0), input_shape(ctx, 1)
    if dtype is None:
        return [None]
    if x_shape is None or g_shape is None:
        return [TensorType(dtype, None)]
    if len(x_shape) < 3 or len(g_shape) != len(x_shape):
        raise ctx.error(f"GridSample needs X of rank r+2 and grid of the same rank, got X "
                        f"{list(x_shape)!r} and grid {list(g_shape)!r}.")
    r = len(x_shape) - 2
    if isinstance(g_shape[-1], int) and g_shape[-1] != r:
        raise ctx.error(f"GridSample grid's last dim is {g_shape[-1]} but X has {r} spatial "
                        "dims.")
    return [TensorType(dtype, (x_shape[0], x_shape[1], *g_shape[1:-1]))]


@op("GridSample", infer=_grid_sample_infer, inputs=2,
    attrs={"align_corners": Attr.INT(0), "mode": Attr.STRING("linear"),
           "padding_mode": Attr.STRING("zeros")})
def grid_sample(x, grid, *, align_corners, mode, padding_mode):
    """Sample X at the normalized grid positions (nearest / N-linear / N-cubic)."""
    mode = _GRID_MODES[mode]
    spatial = x.shape[2:]
    r = len(spatial)
    if grid.shape[-1] != r or grid.shape[0] != x.shape[0]:
        raise ValueError(f"GridSample grid of shape {list(grid.shape)!r} does not fit X of "
                         f"shape {list(x.shape)!r}.")
    ftype = np.float64 if np.float64 in (x.dtype, grid.dtype) else np.float32
    align = bool(align_corners)
    n_batch, channels = x.shape[:2]
    out_spatial = grid.shape[1:-1]
    g = grid.astype(ftype).reshape(n_batch, -1, r)  # (N, P, r)
    per_dim = []
    for d, n in enumerate(spatial):
        coord = g[..., r - 1 - d]  # grid lists the innermost dim first
        if align:
            coord = (coord + 1) / 2 * (n - 1)
        else:
            coord = ((coord + 1) * n - 1) / 2
        per_dim.append(_grid_taps(coord, n, mode, padding_mode, align))
    strides = [int(np.prod(spatial[d + 1:], dtype=np.int64)) for d in range(r)]
    data = x.reshape(n_batch, channels, -1).transpose(0, 2, 1)  # (N, S, C)
    if mode != "nearest" or data.dtype.kind not in "fc":
        data = data.astype(ftype)
    result = np.zeros((n_batch, g.shape[1], channels), dtype=data.dtype)
    for combo in itertools.product(*per_dim):
        flat = sum(index * stride for (index, _, _), stride in zip(combo, strides, strict=True))
        valid = np.logical_and.reduce([v for _, _, v in combo])
        weight = np.where(valid, 1.0, 0.0).astype(ftype)
        for _, w, _ in combo:
            if w is not None:
                weight = weight * w
        values = np.take_along_axis(data, flat[..., None], axis=1)
        result = result + values * weight[..., None].astype(data.dtype)
    result = result.transpose(0, 2, 1).reshape(n_batch, channels, *out_spatial)
    return _cast_result(result, x.dtype) if result.dtype != x.dtype else result


# --------------------------------------------------------------------------- AffineGrid


def _affine_grid_infer(ctx: InferContext) -> list[Type | None]:
    dtype = input_dtype(ctx, 0)
    if dtype is None:
        return [None]
    size = ctx.const(1)
    theta = input_shape(ctx, 0)
    if size is None:
        size_shape = input_shape(ctx, 1)
        if size_shape is not None and isinstance(size_shape[0], int):
            spatial = size_shape[0] - 2
            batch = theta[0] if theta is not None else unknown_dim()
            return [TensorType(dtype, (batch, *[unknown_dim() for _ in range(spatial)], spatial))]
        return [TensorType(dtype, None)]
    size = [int(s) for s in size.reshape(-1)]
    if len(size) not in (4, 5):
        raise ctx.error(f"AffineGrid size {size!r} must have 4 (2-D) or 5 (3-D) values.")
    spatial = len(size) - 2
    if theta is not None and theta[1:] != (spatial, spatial + 1) and all(
            isinstance(d, int) for d in theta[1:]):
        raise ctx.error(f"AffineGrid theta of shape {list(theta)!r} does not fit size {size!r}; "
                        f"it must be (N, {spatial}, {spatial + 1}).")
    return [TensorType(dtype, (size[0], *size[2:], spatial))]


def _base_coords(n: int, align: bool, dtype) -> np.ndarray:
    if n <= 1:
        return np.zeros(max(n, 0), dtype=dtype)
    i = np.arange(n, dtype=np.float64)
    coords = -1 + 2 * i / (n - 1) if align else (2 * i + 1) / n - 1
    return coords.astype(dtype)


@op("AffineGrid", infer=_affine_grid_infer, inputs=2, attrs={"align_corners": Attr.INT(0)})
def affine_grid(theta, size, *, align_corners):
    """The sampling grid of a batch of 2-D or 3-D affine transforms."""
    size = [int(s) for s in np.asarray(size).reshape(-1)]
    if len(size) not in (4, 5):
        raise ValueError(f"AffineGrid size {size!r} must have 4 (2-D) or 5 (3-D) values.")
    spatial = len(size) - 2
    if theta.shape[1:] != (spatial, spatial + 1) or theta.shape[0] != size[0]:
        raise ValueError(f"AffineGrid theta of shape {list(theta.shape)!r} does not fit size "
                         f"{size!r}; it must be ({size[0]}, {spatial}, {spatial + 1}).")
    check_tensor_size([size[0], *size[2:], spatial], theta.dtype)
    ftype = np.float64 if theta.dtype == np.float64 else np.float32
    align = bool(align_corners)
    # Homogeneous base positions, innermost dim (x) first.
    axes = [_base_coords(n, align, ftype) for n in size[2:]]
    mesh = np.meshgrid(*axes, indexing="ij")  # outermost first
    base = np.stack([*reversed(mesh), np.ones_like(mesh[0])], axis=-1)  # (..., spatial + 1)
    grid = np.einsum("...k,njk->n...j", base, theta.astype(ftype))
    return grid.astype(theta.dtype)

