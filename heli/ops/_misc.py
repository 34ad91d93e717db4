"""Miscellaneous ops: the classic-ML ops of domain ``ai.onnx.ml`` (LabelEncoder,
ArrayFeatureExtractor, Binarizer, TreeEnsemble), random number generators,
object-detection helpers (NonMaxSuppression, RoiAlign), Det, ImageDecoder
and the optimizers of domain ``ai.onnx.preview.training``.
"""

from __future__ import annotations

import io
import struct

import numpy as np

from heli._errors import UnsupportedError
from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, Shape, TensorType, Type
from heli.ops._infer import (
    input_dtype,
    input_shape,
    same_as_input,
    tensor_input,
    unknown_dim,
)

ML = "ai.onnx.ml"
TRAINING = "ai.onnx.preview.training"


def _kind(dtype: DType | np.dtype) -> str:
    """'string', 'int' or 'float': the families that keys and inputs must share."""
    if isinstance(dtype, DType):
        dtype = dtype.np
    if dtype.kind in "OUS":
        return "string"
    return "int" if dtype.kind in "iub" else "float"


def _strings(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


# == ai.onnx.ml ====================================================================

# -- LabelEncoder ---------------------------------------------------------------------


def _label_encoder_tables(attrs) -> tuple[np.ndarray | None, np.ndarray | None, object]:
    """(keys, values, default) from whichever keys_*/values_*/default_* are set;
    ``(None, None, None)`` for the opset-1 form (``classes_strings``)."""
    keys = [attrs[k] for k in ("keys_strings", "keys_int64s", "keys_floats", "keys_tensor")
            if attrs[k] is not None]
    values = [attrs[k] for k in ("values_strings", "values_int64s", "values_floats",
                                 "values_tensor") if attrs[k] is not None]
    if not keys and not values and attrs["classes_strings"] is not None:
        return None, None, None
    if len(keys) != 1 or len(values) != 1:
        raise ValueError("exactly one keys_* and one values_* attribute must be set.")
    if attrs["keys_strings"] is not None:
        key_array = _strings(attrs["keys_strings"])
    elif attrs["keys_int64s"] is not None:
        key_array = np.asarray(attrs["keys_int64s"], dtype=np.int64)
    elif attrs["keys_floats"] is not None:
        key_array = np.asarray(attrs["keys_floats"], dtype=np.float32)
    else:
        key_array = np.asarray(attrs["keys_tensor"]).reshape(-1)
    if attrs["values_strings"] is not None:
        value_array, default = _strings(attrs["values_strings"]), attrs["default_string"]
    elif attrs["values_int64s"] is not None:
        value_array = np.asarray(attrs["values_int64s"], dtype=np.int64)
        default = attrs["default_int64"]
    elif attrs["values_floats"] is not None:
        value_array = np.asarray(attrs["values_floats"], dtype=np.float32)
        default = attrs["default_float"]
    else:
        value_array = np.asarray(attrs["values_tensor"]).reshape(-1)
        if attrs["default_tensor"] is not None:
            default = np.asarray(attrs["default_tensor"]).reshape(-1)[0]
        else:
            default = {"string": "_Unused", "int": -1, "float": -0.0}[_kind(value_array.dtype)]
    if len(key_array) != len(value_array):
        raise ValueError(
            f"the keys ({len(key_array)}) and values ({len(value_array)}) differ in length."
        )
    return key_array, value_array, default


def _label_encoder_infer(ctx: InferContext) -> list[Type | None]:
    try:
        keys, values, _ = _label_encoder_tables(ctx.attrs)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    t = tensor_input(ctx, 0)
    if keys is None:  # opset 1: strings <-> int64 indexes into classes_strings
        if t is None:
            return [None]
        out = DType.INT64 if t.dtype is DType.STRING else DType.STRING
        return [TensorType(out, t.shape)]
    if t is not None and _kind(t.dtype) != _kind(keys.dtype):
        raise ctx.error(f"the input is {t.dtype} but the keys are {_kind(keys.dtype)}s.")
    out = DType.from_numpy(values.dtype)
    return [TensorType(out, t.shape if t is not None else None)]


@op(
    "LabelEncoder",
    domain=ML,
    infer=_label_encoder_infer,
    inputs=1,
    attrs={
        "classes_strings": Attr.STRINGS(None),  # opset 1
        "default_float": Attr.FLOAT(-0.0),
        "default_int64": Attr.INT(-1),
        "default_string": Attr.STRING("_Unused"),
        "default_tensor": Attr.TENSOR(None),
        "keys_floats": Attr.FLOATS(None),
        "keys_int64s": Attr.INTS(None),
        "keys_strings": Attr.STRINGS(None),
        "keys_tensor": Attr.TENSOR(None),
        "values_floats": Attr.FLOATS(None),
        "values_int64s": Attr.INTS(None),
        "values_strings": Attr.STRINGS(None),
        "values_tensor": Attr.TENSOR(None),
    },
)
def label_encoder(x, **attrs):
    """Map each element through keys -> values; unknown keys give the default.
    A repeated key maps to its last value; a NaN key matches every NaN."""
    keys, values, default = _label_encoder_tables(attrs)
    if keys is None:
        classes = _strings(attrs["classes_strings"])
        if x.dtype == object:
            keys, values, default = classes, np.arange(len(classes)), attrs["default_int64"]
        else:
            keys, values, default = np.arange(len(classes)), classes, attrs["default_string"]
    if x.dtype == object or keys.dtype == object:
        table = dict(zip(keys.tolist(), values.tolist(), strict=True))  # later keys win
        flat = [table.get(k, default) for k in x.reshape(-1).tolist()]
        out = _strings(flat) if values.dtype == object else np.array(flat, dtype=values.dtype)
        return out.reshape(x.shape)
    keys = keys.astype(x.dtype)
    nan_keys = np.isnan(keys) if keys.dtype.kind == "f" else np.zeros(len(keys), bool)
    # Keep each key's last occurrence: unique over the reversed list.
    plain_keys = keys[::-1][~nan_keys[::-1]]
    plain_values = values[::-1][~nan_keys[::-1]]
    unique, first = np.unique(plain_keys, return_index=True)
    table = plain_values[first]
    pos = np.clip(np.searchsorted(unique, x), 0, max(len(unique) - 1, 0))
    found = unique[pos] == x if len(unique) else np.zeros(x.shape, bool)
    fill = np.asarray(default, dtype=values.dtype)
    out = np.where(found, table[pos] if len(unique) else fill, fill)
    if nan_keys.any():
        out = np.where(np.isnan(x), values[np.flatnonzero(nan_keys)[-1]], out)
    return np.asarray(out, dtype=values.dtype)


# -- ArrayFeatureExtractor ------------------------------------------------------------


def _array_feature_infer(ctx: InferContext) -> list[Type | None]:
    t = tensor_input(ctx, 0)
    index = tensor_input(ctx, 1)
    if t is None:
        return [None]
    if index is not None and index.dtype is not DType.INT64:
        raise ctx.error(f"the indices must be int64, not {index.dtype}.")
    if t.shape is None or index is None or index.shape is None:
        return [TensorType(t.dtype, None)]
    count = 1
    for d in index.shape:
        count = count * d if isinstance(count, int) and isinstance(d, int) else unknown_dim()
    lead: Shape = (1,) if len(t.shape) <= 1 else t.shape[:-1]
    return [TensorType(t.dtype, (*lead, count))]


@op("ArrayFeatureExtractor", domain=ML, infer=_array_feature_infer, inputs=2)
def array_feature_extractor(x, indices):
    """Select entries of the last axis; a 1-D input gives a [1, n] output."""
    flat = indices.reshape(-1)
    width = x.shape[-1] if x.ndim else 1
    bad = (flat < 0) | (flat >= width)
    if bad.any():
        raise IndexError(
            f"index {int(flat[bad][0])} is out of range for a last dimension of {width}."
        )
    out = np.take(x.reshape(1, -1) if x.ndim <= 1 else x, flat, axis=-1)
    return out


# -- Binarizer ------------------------------------------------------------------------------


@op("Binarizer", domain=ML, infer=same_as_input(0), inputs=1,
    attrs={"threshold": Attr.FLOAT(0.0)})
def binarizer(x, *, threshold):
    """1 where x > threshold, else 0 (NaN included), in x's dtype."""
    return (x > threshold).astype(x.dtype)


# -- TreeEnsemble ---------------------------------------------------------------------------

_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER = range(7)
_AVERAGE, _SUM, _MIN, _MAX = range(4)
_NONE, _SOFTMAX, _LOGISTIC, _SOFTMAX_ZERO, _PROBIT = range(5)


def _n_targets(attrs) -> int:
    if attrs["n_targets"] is not None:
        return attrs["n_targets"]
    return max(attrs["leaf_targetids"], default=-1) + 1


def _tree_ensemble_infer(ctx: InferContext) -> list[Type | None]:
    attrs = ctx.attrs
    nodes = len(attrs["nodes_featureids"])
    for name in ("nodes_truenodeids", "nodes_falsenodeids", "nodes_trueleafs",
                 "nodes_falseleafs", "nodes_modes", "nodes_splits"):
        if len(np.asarray(attrs[name]).reshape(-1)) != nodes:
            raise ctx.error(
                f"{name} has {len(np.asarray(attrs[name]).reshape(-1))} entries but "
                f"nodes_featureids has {nodes}."
            )
    leaves = len(attrs["leaf_targetids"])
    if len(np.asarray(attrs["leaf_weights"]).reshape(-1)) != leaves:
        raise ctx.error("leaf_weights and leaf_targetids differ in length.")
    if attrs["aggregate_function"] not in range(4):
        raise ctx.error(f"aggregate_function {attrs['aggregate_function']!r} is not 0 to 3.")
    if attrs["post_transform"] not in range(5):
        raise ctx.error(f"post_transform {attrs['post_transform']!r} is not 0 to 4.")
    t = tensor_input(ctx, 0)
    if t is None:
        return [None]
    if not t.dtype.is_float:
        raise ctx.error(f"the input must be a float tensor, not {t.dtype}.")
    if t.shape is not None and len(t.shape) != 2:
        raise ctx.error(f"the input must be 2-D [N, F], not of rank {len(t.shape)}.")
    batch = t.shape[0] if t.shape is not None else unknown_dim()
    return [TensorType(t.dtype, (batch, _n_targets(attrs)))]


def _membership_table(modes: np.ndarray, members: np.ndarray | None, dtype):
    """Sorted set values and the codes ``node * len(values) + rank`` of each
    (BRANCH_MEMBER node, member value) pair, for a vectorized ``isin``."""
    member_nodes = np.flatnonzero(modes == _MEMBER)
    values = np.asarray(members if members is not None else [], dtype=dtype).reshape(-1)
    # NaNs delimit the sets, one per BRANCH_MEMBER node, in node order.
    cuts = np.flatnonzero(np.isnan(values))
    sets = np.split(values, cuts)
    sets = [s[~np.isnan(s)] for s in sets]
    if sets and not len(sets[-1]) and len(sets) > len(member_nodes):
        sets = sets[:-1]  # a trailing NaN closes the last set
    if len(member_nodes) and len(sets) < len(member_nodes):
        raise ValueError(
            f"membership_values holds {len(sets)} sets for {len(member_nodes)} "
            "BRANCH_MEMBER nodes."
        )
    pairs_node = np.concatenate(
        [np.full(len(s), n) for n, s in zip(member_nodes, sets, strict=False)] + [[]]
    ).astype(np.int64)
    pairs_value = np.concatenate([*sets[:len(member_nodes)], np.zeros(0, dtype)])
    universe = np.unique(pairs_value)
    codes = pairs_node * (len(universe) + 1) + np.searchsorted(universe, pairs_value)
    return universe, np.unique(codes)


def _is_member(node, x, universe, codes) -> np.ndarray:
    if not len(universe):
        return np.zeros(x.shape, bool)
    rank = np.clip(np.searchsorted(universe, x), 0, len(universe) - 1)
    exact = universe[rank] == x
    return exact & np.isin(node * (len(universe) + 1) + rank, codes)


def _walk_trees(x: np.ndarray, attrs) -> np.ndarray:
    """The leaf each sample reaches in each tree: [N, trees]."""
    feature = np.asarray(attrs["nodes_featureids"], dtype=np.int64)
    modes = np.asarray(attrs["nodes_modes"]).reshape(-1).astype(np.int64)
    splits = np.asarray(attrs["nodes_splits"]).reshape(-1).astype(x.dtype)
    true_id = np.asarray(attrs["nodes_truenodeids"], dtype=np.int64)
    false_id = np.asarray(attrs["nodes_falsenodeids"], dtype=np.int64)
    true_leaf = np.asarray(attrs["nodes_trueleafs"], dtype=bool)
    false_leaf = np.asarray(attrs["nodes_falseleafs"], dtype=bool)
    missing = attrs["nodes_missing_value_tracks_true"]
    missing_true = (np.asarray(missing, dtype=bool) if missing is not None
                    else np.zeros(len(feature), bool))
    if len(feature) and (feature.min() < 0 or feature.max() >= x.shape[1]):
        raise IndexError(f"a node reads feature {int(feature.max())}, but X has "
                         f"{x.shape[1]} features.")
    universe, codes = _membership_table(modes, attrs["membership_values"], x.dtype)
    roots = np.asarray(attrs["tree_roots"], dtype=np.int64)
    node = np.broadcast_to(roots, (x.shape[0], len(roots))).reshape(-1).copy()
    sample = np.repeat(np.arange(x.shape[0]), len(roots))
    leaf = np.full(node.shape, -1, dtype=np.int64)
    active = np.arange(node.size)
    for _ in range(len(feature) + 1):
        if not active.size:
            return leaf.reshape(x.shape[0], len(roots))
        n = node[active]
        value = x[sample[active], feature[n]]
        split, mode = splits[n], modes[n]
        cond = np.select(
            [mode == _LEQ, mode == _LT, mode == _GTE, mode == _GT, mode == _EQ, mode == _NEQ],
            [value <= split, value < split, value >= split, value > split, value == split,
             value != split],
            default=False,
        )
        if (mode == _MEMBER).any():
            cond = np.where(mode == _MEMBER, _is_member(n, value, universe, codes), cond)
        cond |= missing_true[n] & np.isnan(value)
        target = np.where(cond, true_id[n], false_id[n])
        is_leaf = np.where(cond, true_leaf[n], false_leaf[n])
        leaf[active[is_leaf]] = target[is_leaf]
        node[active] = target
        active = active[~is_leaf]
    raise ValueError("the trees of the ensemble contain a cycle.")


def _probit(p: np.ndarray) -> np.ndarray:
    """The standard normal quantile, sqrt(2) * erfinv(2p - 1) (Acklam's rational
    approximation: relative error below 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
         3.754408661907416e00)
    p = np.asarray(p, dtype=np.float64)
    low = 0.02425
    with np.errstate(all="ignore"):
        q = p - 0.5
        r = q * q
        central = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
            ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
        t = np.sqrt(-2 * np.log(np.where(p < 0.5, p, 1 - p)))
        tail = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
            (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1)
        tail = np.where(p < 0.5, tail, -tail)
        out = np.where((p > low) & (p < 1 - low), central, tail)
    return np.where(p <= 0, -np.inf, np.where(p >= 1, np.inf, out))


def _post_transform(scores: np.ndarray, kind: int) -> np.ndarray:
    if kind == _SOFTMAX:
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == _SOFTMAX_ZERO:
        # Zero scores mean "no score": they stay zero and do not join the sum.
        nonzero = np.abs(scores) > 1e-7
        top = scores.max(axis=1, keepdims=True)
        e = np.where(nonzero, np.exp(scores - top), scores * np.exp(-top))
        return e / np.where(nonzero, e, 0).sum(axis=1, keepdims=True)
    if kind == _LOGISTIC:
        e = np.exp(-np.abs(scores))
        return np.where(scores >= 0, 1 / (1 + e), e / (1 + e))
    if kind == _PROBIT:
        return _probit(scores).astype(scores.dtype)
    return scores


@op(
    "TreeEnsemble",
    domain=ML,
    infer=_tree_ensemble_infer,
    inputs=1,
    attrs={
        "aggregate_function": Attr.INT(_SUM),
        "leaf_targetids": Attr.INTS(),
        "leaf_weights": Attr.TENSOR(),
        "membership_values": Attr.TENSOR(None),
        "n_targets": Attr.INT(None),
        "nodes_falseleafs": Attr.INTS(),
        "nodes_falsenodeids": Attr.INTS(),
        "nodes_featureids": Attr.INTS(),
        "nodes_hitrates": Attr.TENSOR(None),
        "nodes_missing_value_tracks_true": Attr.INTS(None),
        "nodes_modes": Attr.TENSOR(),
        "nodes_splits": Attr.TENSOR(),
        "nodes_trueleafs": Attr.INTS(),
        "nodes_truenodeids": Attr.INTS(),
        "post_transform": Attr.INT(_NONE),
        "tree_roots": Attr.INTS(),
    },
)
def tree_ensemble(x, **attrs):
    """Each tree routes each sample to a leaf; the leaves' weights are
    aggregated per target (sum, average, min or max), then post-transformed."""
    if x.ndim != 2:
        raise ValueError(f"the input must be 2-D [N, F], not of rank {x.ndim}.")
    work = np.float32 if x.dtype != np.float64 else np.float64
    xw = x.astype(work)
    leaves = _walk_trees(xw, attrs)  # [N, trees]
    weights = np.asarray(attrs["leaf_weights"]).reshape(-1).astype(work)
    targets = np.asarray(attrs["leaf_targetids"], dtype=np.int64)
    n_targets = _n_targets(attrs)
    if len(targets) and (targets.min() < 0 or targets.max() >= n_targets):
        raise IndexError(f"a leaf_targetids entry is outside [0, {n_targets}).")
    rows = np.broadcast_to(np.arange(x.shape[0])[:, None], leaves.shape)
    value, target = weights[leaves], targets[leaves]
    kind = attrs["aggregate_function"]
    if kind in (_SUM, _AVERAGE):
        out = np.zeros((x.shape[0], n_targets), dtype=work)
        np.add.at(out, (rows, target), value)  # tree order within a row
        if kind == _AVERAGE and leaves.shape[1]:
            out /= work(leaves.shape[1])
    else:
        extreme = np.inf if kind == _MIN else -np.inf
        out = np.full((x.shape[0], n_targets), extreme, dtype=work)
        (np.minimum if kind == _MIN else np.maximum).at(out, (rows, target), value)
        out[np.isinf(out) & (out == extreme)] = 0  # targets no tree reached
    return _post_transform(out, attrs["post_transform"]).astype(x.dtype)


# == random numbers ================================================================


def _rng(seed: float | None) -> np.random.Generator:
    """A generator seeded from the float ``seed`` attribute (fresh entropy without)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(struct.unpack("<Q", struct.pack("<d", float(seed)))[0])


def _float_dtype(ctx: InferContext, dtype: DType, what: str) -> DType:
    if not dtype.is_float:
        raise ctx.error(f"{what} must be a float type, not {dtype}.")
    return dtype


def _random_infer(ctx: InferContext) -> list[Type | None]:
    dtype = _float_dtype(ctx, DType.from_onnx(ctx.attrs["dtype"]), "the output dtype")
    shape = tuple(ctx.attrs["shape"])
    if any(d < 0 for d in shape):
        raise ctx.error(f"the shape {list(shape)!r} has a negative dimension.")
    return [TensorType(dtype, shape)]


def _random_like_infer(ctx: InferContext) -> list[Type | None]:
    t = tensor_input(ctx, 0)
    code = ctx.attrs["dtype"]
    dtype = DType.from_onnx(code) if code is not None else (t.dtype if t else None)
    if dtype is None:
        return [None]
    _float_dtype(ctx, dtype, "the output dtype")
    return [TensorType(dtype, t.shape if t is not None else None)]


_UNIFORM_ATTRS = {"high": Attr.FLOAT(1.0), "low": Attr.FLOAT(0.0), "seed": Attr.FLOAT(None)}
_NORMAL_ATTRS = {"mean": Attr.FLOAT(0.0), "scale": Attr.FLOAT(1.0), "seed": Attr.FLOAT(None)}


@op("RandomUniform", infer=_random_infer, inputs=0, deterministic=False,
    attrs={**_UNIFORM_ATTRS, "dtype": Attr.INT(1), "shape": Attr.INTS()})
def random_uniform(*, dtype, high, low, seed, shape):
    """Uniform samples in [low, high)."""
    out = _rng(seed).uniform(low, high, size=tuple(shape))
    return out.astype(DType.from_onnx(dtype).np)


@op("RandomNormal", infer=_random_infer, inputs=0, deterministic=False,
    attrs={**_NORMAL_ATTRS, "dtype": Attr.INT(1), "shape": Attr.INTS()})
def random_normal(*, dtype, mean, scale, seed, shape):
    out = _rng(seed).normal(mean, scale, size=tuple(shape))
    return out.astype(DType.from_onnx(dtype).np)


@op("RandomUniformLike", infer=_random_like_infer, inputs=1, deterministic=False,
    attrs={**_UNIFORM_ATTRS, "dtype": Attr.INT(None)})
def random_uniform_like(x, *, dtype, high, low, seed):
    out = _rng(seed).uniform(low, high, size=x.shape)
    return out.astype(DType.from_onnx(dtype).np if dtype is not None else x.dtype)


@op("RandomNormalLike", infer=_random_like_infer, inputs=1, deterministic=False,
    attrs={**_NORMAL_ATTRS, "dtype": Attr.INT(None)})
def random_normal_like(x, *, dtype, mean, scale, seed):
    out = _rng(seed).normal(mean, scale, size=x.shape)
    return out.astype(DType.from_onnx(dtype).np if dtype is not None else x.dtype)


def _bernoulli_infer(ctx: InferContext) -> list[Type | None]:
    t = tensor_input(ctx, 0)
    if t is None:
        return [None]
    if not t.dtype.is_float:
        raise ctx.error(f"the probabilities must be a float tensor, not {t.dtype}.")
    code = ctx.attrs["dtype"]
    return [TensorType(DType.from_onnx(code) if code is not None else t.dtype, t.shape)]


@op("Bernoulli", infer=_bernoulli_infer, inputs=1, deterministic=False,
    attrs={"dtype": Attr.INT(None), "seed": Attr.FLOAT(None)})
def bernoulli(p, *, dtype, seed):
    """1 with probability p, else 0."""
    draws = _rng(seed).random(size=p.shape) < p.astype(np.float64)
    return draws.astype(DType.from_onnx(dtype).np if dtype is not None else p.dtype)


def _multinomial_infer(ctx: InferContext) -> list[Type | None]:
    dtype = DType.from_onnx(ctx.attrs["dtype"])
    if dtype not in (DType.INT32, DType.INT64):
        raise ctx.error(f"the output dtype must be int32 or int64, not {dtype}.")
    if ctx.attrs["sample_size"] < 0:
        raise ctx.error(f"sample_size {ctx.attrs['sample_size']!r} must not be negative.")
    shape = input_shape(ctx, 0)
    if shape is not None and len(shape) != 2:
        raise ctx.error(f"the input must be 2-D [batch, classes], not of rank {len(shape)}.")
    batch = shape[0] if shape is not None else unknown_dim()
    return [TensorType(dtype, (batch, ctx.attrs["sample_size"]))]


@op("Multinomial", infer=_multinomial_infer, inputs=1, deterministic=False,
    attrs={"dtype": Attr.INT(6), "sample_size": Attr.INT(1), "seed": Attr.FLOAT(None)})
def multinomial(logits, *, dtype, sample_size, seed):
    """``sample_size`` class indexes per row, drawn from softmax(logits)."""
    if logits.ndim != 2:
        raise ValueError(f"the input must be 2-D [batch, classes], not of rank {logits.ndim}.")
    batch, classes = logits.shape
    out_dtype = DType.from_onnx(dtype).np
    if classes == 0:
        return np.zeros((batch, sample_size), dtype=out_dtype)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    # One searchsorted for all rows: row r's cdf lives in [r, r + 1].
    offsets = np.arange(batch, dtype=np.float64)[:, None]
    u = _rng(seed).random(size=(batch, sample_size))
    pos = np.searchsorted((cdf + offsets).reshape(-1), (u + offsets).reshape(-1), side="right")
    index = pos.reshape(batch, sample_size) - np.arange(batch)[:, None] * classes
    return np.clip(index, 0, classes - 1).astype(out_dtype)


# == object detection ===============================================================


def _nms_infer(ctx: InferContext) -> list[Type | None]:
    boxes, scores = input_shape(ctx, 0), input_shape(ctx, 1)
    if boxes is not None and (len(boxes) != 3 or boxes[2] not in (4,)
                              and isinstance(boxes[2], int)):
        raise ctx.error(f"boxes must have shape [batches, boxes, 4], not {list(boxes)!r}.")
    if scores is not None and len(scores) != 3:
        raise ctx.error(f"scores must have rank 3, not {len(scores)}.")
    if ctx.attrs["center_point_box"] not in (0, 1):
        raise ctx.error(f"center_point_box {ctx.attrs['center_point_box']!r} is not 0 or 1.")
    return [TensorType(DType.INT64, (unknown_dim(), 3))]


def _box_edges(boxes: np.ndarray, center: int) -> tuple[np.ndarray, ...]:
    """(y_min, x_min, y_max, x_max) of boxes [..., 4]."""
    if center:
        xc, yc, w, h = np.moveaxis(boxes, -1, 0)
        return yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2
    y1, x1, y2, x2 = np.moveaxis(boxes, -1, 0)
    return np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)


def _greedy_nms(edges, area, order: np.ndarray, iou_threshold, limit: int) -> list[int]:
    y0, x0, y1, x1 = edges
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, order = order[0], order[1:]
        keep.append(int(best))
        ih = np.minimum(y1[best], y1[order]) - np.maximum(y0[best], y0[order])
        iw = np.minimum(x1[best], x1[order]) - np.maximum(x0[best], x0[order])
        inter = ih * iw
        union = area[best] + area[order] - inter
        # Degenerate boxes (no area) and disjoint pairs never suppress.
        overlap = (ih > 0) & (iw > 0) & (inter > 0) & (area[best] > 0) & (area[order] > 0)
        overlap &= union > 0
        with np.errstate(all="ignore"):
            suppressed = overlap & (inter / union > iou_threshold)
        order = order[~suppressed]
    return keep


@op(
    "NonMaxSuppression",
    infer=_nms_infer,
    inputs=(2, 5),
    attrs={"center_point_box": Attr.INT(0)},
)
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box):
    """Greedy per-(batch, class) selection by descending score; a box is dropped
    when its IoU with a selected box is strictly above ``iou_threshold``."""
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3:
        raise ValueError(
            f"boxes {list(boxes.shape)!r} and scores {list(scores.shape)!r} must have shapes "
            "[batches, boxes, 4] and [batches, classes, boxes]."
        )
    if boxes.shape[0] != scores.shape[0] or boxes.shape[1] != scores.shape[2]:
        raise ValueError(
            f"boxes {list(boxes.shape)!r} and scores {list(scores.shape)!r} disagree on the "
            "number of batches or boxes."
        )
    limit = 0
    if max_output_boxes_per_class is not None and max_output_boxes_per_class.size:
        limit = max(int(max_output_boxes_per_class.reshape(-1)[0]), 0)
    iou = np.float32(0)
    if iou_threshold is not None and iou_threshold.size:
        iou = np.float32(iou_threshold.reshape(-1)[0])
        if not 0 <= iou <= 1:
            raise ValueError(f"iou_threshold {float(iou)!r} is not in [0, 1].")
    floor = None
    if score_threshold is not None and score_threshold.size:
        floor = np.float32(score_threshold.reshape(-1)[0])
    selected: list[tuple[int, int, int]] = []
    if limit:
        boxes = boxes.astype(np.float32)
        edges = _box_edges(boxes, center_point_box)
        area = (edges[2] - edges[0]) * (edges[3] - edges[1])
        for b in range(boxes.shape[0]):
            batch_edges = tuple(e[b] for e in edges)
            for c in range(scores.shape[1]):
                s = scores[b, c].astype(np.float32)
                candidates = np.flatnonzero(s > floor) if floor is not None else np.arange(s.size)
                # Stable: equal scores keep the lower box index first.
                order = candidates[np.argsort(-s[candidates], kind="stable")]
                keep = _greedy_nms(batch_edges, area[b], order, iou, limit)
                selected.extend((b, c, i) for i in keep)
    return np.array(selected, dtype=np.int64).reshape(-1, 3)


def _roi_align_infer(ctx: InferContext) -> list[Type | None]:
    attrs = ctx.attrs
    if attrs["mode"] not in ("avg", "max"):
        raise ctx.error(f"mode {attrs['mode']!r} is not 'avg' or 'max'.")
    if attrs["coordinate_transformation_mode"] not in ("half_pixel", "output_half_pixel"):
        raise ctx.error(
            f"coordinate_transformation_mode {attrs['coordinate_transformation_mode']!r} is not "
            "'half_pixel' or 'output_half_pixel'."
        )
    if attrs["output_height"] < 1 or attrs["output_width"] < 1:
        raise ctx.error(
            f"output_height {attrs['output_height']!r} and output_width "
            f"{attrs['output_width']!r} must be positive."
        )
    x, rois = tensor_input(ctx, 0), input_shape(ctx, 1)
    if x is None:
        return [None]
    if x.shape is not None and len(x.shape) != 4:
        raise ctx.error(f"X must be 4-D [N, C, H, W], not of rank {len(x.shape)}.")
    if rois is not None and len(rois) != 2:
        raise ctx.error(f"rois must be 2-D [num_rois, 4], not of rank {len(rois)}.")
    count = rois[0] if rois is not None else unknown_dim()
    channels = x.shape[1] if x.shape is not None else unknown_dim()
    return [TensorType(x.dtype, (count, channels, attrs["output_height"],
                                 attrs["output_width"]))]


def _axis_samples(start, bin_size, grid: int, bins: int, size: int, dtype):
    """Bilinear sampling along one axis for a group of RoIs.

    Returns the low and high pixel indexes and their weights, each
    [rois, bins, grid]; samples outside [-1, size] get zero weights.
    """
    step = np.arange(bins, dtype=dtype)[None, :, None]
    frac = (np.arange(grid, dtype=dtype) + dtype(0.5))[None, None, :]
    coord = (start[:, None, None] + step * bin_size[:, None, None]) + (
        frac * bin_size[:, None, None]) / dtype(grid)
    valid = (coord >= -1) & (coord <= size)
    coord = np.maximum(coord, 0)
    low = coord.astype(np.int64)
    edge = low >= size - 1
    low = np.where(edge, size - 1, low)
    high = np.where(edge, size - 1, low + 1)
    coord = np.where(edge, low.astype(dtype), coord)
    w_high = (coord - low).astype(dtype)
    w_low = (dtype(1) - w_high)
    return low, high, np.where(valid, w_low, 0).astype(dtype), np.where(valid, w_high, 0).astype(
        dtype)


@op(
    "RoiAlign",
    infer=_roi_align_infer,
    inputs=3,
    attrs={
        "coordinate_transformation_mode": Attr.STRING("half_pixel"),
        "mode": Attr.STRING("avg"),
        "output_height": Attr.INT(1),
        "output_width": Attr.INT(1),
        "sampling_ratio": Attr.INT(0),
        "spatial_scale": Attr.FLOAT(1.0),
    },
)
def roi_align(x, rois, batch_indices, *, coordinate_transformation_mode, mode, output_height,
              output_width, sampling_ratio, spatial_scale):
    """Bilinearly sample a grid in each bin of each RoI and average (or max) it.

    In max mode each sample contributes the largest of its four weighted
    corner values, as in the Caffe2 / ONNX Runtime kernels.
    """
    if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4 or batch_indices.ndim != 1:
        raise ValueError(
            f"X {list(x.shape)!r}, rois {list(rois.shape)!r} and batch_indices "
            f"{list(batch_indices.shape)!r} must have shapes [N, C, H, W], [R, 4] and [R]."
        )
    if rois.shape[0] != batch_indices.shape[0]:
        raise ValueError(f"rois has {rois.shape[0]} rows but batch_indices has "
                         f"{batch_indices.shape[0]} entries.")
    n, channels, height, width = x.shape
    bad = (batch_indices < 0) | (batch_indices >= n)
    if bad.any():
        raise IndexError(f"batch index {int(batch_indices[bad][0])} is out of range for a "
                         f"batch of {n}.")
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    t = dtype
    oh, ow = output_height, output_width
    half = coordinate_transformation_mode == "half_pixel"
    r = rois.astype(dtype)
    offset = t(0.5) if half else t(0)
    scale = t(spatial_scale)
    start_w, start_h = r[:, 0] * scale - offset, r[:, 1] * scale - offset
    roi_w, roi_h = r[:, 2] * scale - offset - start_w, r[:, 3] * scale - offset - start_h
    if not half:  # the legacy mode forces RoIs to be at least 1x1
        roi_w, roi_h = np.maximum(roi_w, t(1)), np.maximum(roi_h, t(1))
    bin_h, bin_w = roi_h / t(oh), roi_w / t(ow)
    if sampling_ratio > 0:
        grid_h = np.full(len(r), sampling_ratio, dtype=np.int64)
        grid_w = grid_h
    else:
        grid_h = np.ceil(roi_h / t(oh)).astype(np.int64)
        grid_w = np.ceil(roi_w / t(ow)).astype(np.int64)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(dtype, copy=False)
    out = np.zeros((len(r), oh, ow, channels), dtype=dtype)
    pairs = np.stack([grid_h, grid_w], axis=1)
    for gh, gw in np.unique(pairs, axis=0) if len(r) else ():
        group = np.flatnonzero((grid_h == gh) & (grid_w == gw))
        if gh <= 0 or gw <= 0:
            continue  # an empty RoI: no samples, output 0
        per_roi = oh * gh * ow * gw * max(channels, 1)
        chunk = max(1, (1 << 22) // per_roi)
        for lo in range(0, len(group), chunk):
            sel = group[lo:lo + chunk]
            yl, yh, wyl, wyh = _axis_samples(start_h[sel], bin_h[sel], int(gh), oh, height, t)
            xl, xh, wxl, wxh = _axis_samples(start_w[sel], bin_w[sel], int(gw), ow, width, t)
            b = batch_indices[sel].astype(np.int64)[:, None, None, None, None]
            # Axes: [roi, oh, gh, ow, gw, C].
            Y = (slice(None), slice(None), slice(None), None, None)
            X = (slice(None), None, None, slice(None), slice(None))
            terms = [
                (wy[Y] * wx[X])[..., None] * nhwc[b, iy[Y], ix[X]]
                for iy, wy in ((yl, wyl), (yh, wyh))
                for ix, wx in ((xl, wxl), (xh, wxh))
            ]
            if mode == "avg":
                samples = (terms[0] + terms[1]) + terms[2] + terms[3]
                out[sel] = samples.sum(axis=(2, 4)) / t(gh * gw)
            else:
                samples = np.maximum(np.maximum(np.maximum(terms[0], terms[1]), terms[2]),
                                     terms[3])
                out[sel] = samples.max(axis=(2, 4))
    return out.transpose(0, 3, 1, 2).astype(x.dtype)


# == linear algebra ===================================================================


def _det_infer(ctx: InferContext) -> list[Type | None]:
    t = tensor_input(ctx, 0)
    if t is None:
        return [None]
    if not t.dtype.is_float:
        raise ctx.error(f"the input must be a float tensor, not {t.dtype}.")
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    if len(t.shape) < 2:
        raise ctx.error(f"the input must have rank 2 or more, not {len(t.shape)}.")
    m, k = t.shape[-2:]
    if isinstance(m, int) and isinstance(k, int) and m != k:
        raise ctx.error(f"the matrices must be square, not {m}x{k}.")
    return [TensorType(t.dtype, t.shape[:-2])]


@op("Det", infer=_det_infer, inputs=1)
def det(x):
    """Determinants of the square matrices in the last two axes."""
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"the input {list(x.shape)!r} is not a batch of square matrices.")
    work = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
    return np.asarray(np.linalg.det(work)).astype(x.dtype)


# == images ==============================================================================

_IMAGE_MODES = {"RGB": ("RGB", 3), "BGR": ("RGB", 3), "Grayscale": ("L", 1)}


def _image_decoder_infer(ctx: InferContext) -> list[Type | None]:
    fmt = ctx.attrs["pixel_format"]
    if fmt not in _IMAGE_MODES:
        raise ctx.error(f"pixel_format {fmt!r} is not 'RGB', 'BGR' or 'Grayscale'.")
    dtype, shape = input_dtype(ctx, 0), input_shape(ctx, 0)
    if dtype is not None and dtype is not DType.UINT8:
        raise ctx.error(f"the encoded stream must be uint8, not {dtype}.")
    if shape is not None and len(shape) != 1:
        raise ctx.error(f"the encoded stream must be 1-D, not of rank {len(shape)}.")
    return [TensorType(DType.UINT8, (unknown_dim(), unknown_dim(), _IMAGE_MODES[fmt][1]))]


@op("ImageDecoder", infer=_image_decoder_infer, inputs=1,
    attrs={"pixel_format": Attr.STRING("RGB")})
def image_decoder(encoded, *, pixel_format):
    """Decode an encoded image (JPEG, PNG, BMP, TIFF, WebP, ...) to [H, W, C]
    uint8 with Pillow.  An undecodable stream gives an empty [0, 0, C] image,
    as the spec says."""
    try:
        from PIL import Image
    except ImportError:
        raise UnsupportedError(
            "ImageDecoder needs the Pillow package to decode images; install it with "
            "'pip install pillow'."
        ) from None
    mode, channels = _IMAGE_MODES[pixel_format]
    try:
        with Image.open(io.BytesIO(np.ascontiguousarray(encoded).tobytes())) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return np.zeros((0, 0, channels), dtype=np.uint8)
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], channels)
    if pixel_format == "BGR":
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels)


# == optimizers (ai.onnx.preview.training) ==================================================


def _optimizer_infer(groups: int, kept: tuple[int, ...]):
    """Inputs are R, T, then ``groups`` runs of n tensors (X.., G.., ...); the
    outputs are the runs numbered in ``kept``, updated, with their types."""

    def infer(ctx: InferContext) -> list[Type | None]:
        count = len(ctx.input_types) - 2
        if count <= 0 or count % groups:
            raise ctx.error(
                f"expected R, T and {groups} equally long groups of tensors, got "
                f"{len(ctx.input_types)} inputs."
            )
        n = count // groups
        if ctx.num_outputs != len(kept) * n:
            raise ctx.error(f"expected {len(kept) * n} outputs, got {ctx.num_outputs}.")
        return [ctx.input_types[2 + g * n + i] for g in kept for i in range(n)]

    return infer


def _optimizer_groups(tensors, groups: int) -> list[tuple]:
    n = len(tensors) // groups
    result = [tuple(tensors[g * n + i] for g in range(groups)) for i in range(n)]
    for index, group in enumerate(result):
        shapes = [list(np.shape(a)) for a in group]
        if any(s != shapes[0] for s in shapes):  # numpy would broadcast them silently
            raise ValueError(f"Optimized tensor {index} and its gradient and state have the "
                             f"shapes {shapes!r}; they must all have one shape.")
    return result


def _step(t) -> int:
    return int(np.asarray(t).reshape(-1)[0])


@op(
    "Adagrad",
    domain=TRAINING,
    infer=_optimizer_infer(3, (0, 2)),
    inputs=(5, None),
    outputs=(2, None),
    attrs={"decay_factor": Attr.FLOAT(0.0), "epsilon": Attr.FLOAT(1e-6),
           "norm_coefficient": Attr.FLOAT(0.0)},
)
def adagrad(r, t, *tensors, decay_factor, epsilon, norm_coefficient):
    """One ADAGRAD step for each (X, G, H): returns the new X's, then the new H's."""
    rate = float(np.asarray(r).reshape(-1)[0]) / (1 + _step(t) * decay_factor)
    new_x, new_h = [], []
    for x, g, h in _optimizer_groups(tensors, 3):
        dt = x.dtype.type
        g_reg = dt(norm_coefficient) * x + g
        h_new = (h + g_reg * g_reg).astype(h.dtype)
        x_new = x - dt(rate) * g_reg / (np.sqrt(h_new) + dt(epsilon))
        new_x.append(x_new.astype(x.dtype))
        new_h.append(h_new)
    return (*new_x, *new_h)


@op(
    "Momentum",
    domain=TRAINING,
    infer=_optimizer_infer(3, (0, 2)),
    inputs=(5, None),
    outputs=(2, None),
    attrs={"alpha": Attr.FLOAT(), "beta": Attr.FLOAT(), "mode": Attr.STRING(),
           "norm_coefficient": Attr.FLOAT()},
)
def momentum(r, t, *tensors, alpha, beta, mode, norm_coefficient):
    """One SGD-with-momentum step (standard or Nesterov) for each (X, G, V)."""
    if mode not in ("standard", "nesterov"):
        raise ValueError(f"mode {mode!r} is not 'standard' or 'nesterov'.")
    rate = float(np.asarray(r).reshape(-1)[0])
    beta_t = beta if _step(t) > 0 else 1.0  # the first step takes the whole gradient
    new_x, new_v = [], []
    for x, g, v in _optimizer_groups(tensors, 3):
        dt = x.dtype.type
        g_reg = dt(norm_coefficient) * x + g
        v_new = (dt(alpha) * v + dt(beta_t) * g_reg).astype(v.dtype)
        if mode == "nesterov":
            x_new = x - dt(rate) * (g_reg + dt(alpha) * v_new)
        else:
            x_new = x - dt(rate) * v_new
        new_x.append(x_new.astype(x.dtype))
        new_v.append(v_new)
    return (*new_x, *new_v)


@op(
    "Adam",
    domain=TRAINING,
    infer=_optimizer_infer(4, (0, 2, 3)),
    inputs=(6, None),
    outputs=(3, None),
    attrs={"alpha": Attr.FLOAT(0.9), "beta": Attr.FLOAT(0.999), "epsilon": Attr.FLOAT(1e-6),
           "norm_coefficient": Attr.FLOAT(0.0), "norm_coefficient_post": Attr.FLOAT(0.0)},
)
def adam(r, t, *tensors, alpha, beta, epsilon, norm_coefficient, norm_coefficient_post):
    """One Adam step for each (X, G, V, H): new X's, then V's, then H's."""
    step = _step(t)
    rate = float(np.asarray(r).reshape(-1)[0])
    if step > 0:  # bias correction of the running averages
        rate = rate * np.sqrt(1 - beta**step) / (1 - alpha**step)
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in _optimizer_groups(tensors, 4):
        dt = x.dtype.type
        g_reg = dt(norm_coefficient) * x + g
        v_new = (dt(alpha) * v + dt(1 - alpha) * g_reg).astype(v.dtype)
        h_new = (dt(beta) * h + dt(1 - beta) * (g_reg * g_reg)).astype(h.dtype)
        x_new = x - dt(rate) * (v_new / (np.sqrt(h_new) + dt(epsilon)))
        new_x.append((dt(1 - norm_coefficient_post) * x_new).astype(x.dtype))
        new_v.append(v_new)
        new_h.append(h_new)
    return (*new_x, *new_v, *new_h)
