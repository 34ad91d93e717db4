"""Neural-network ops: the shared window arithmetic, type inference (symbolic
shapes, errors) and reference semantics against independent float64 oracles
written with plain loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import heli.ops._nn as nn
from heli._errors import ShapeError
from heli.ir import DType, GraphBuilder, TensorType
from heli.ir._ops import get_op

F32, F16, I64, BOOL = DType.FLOAT32, DType.FLOAT16, DType.INT64, DType.BOOL
RNG = np.random.default_rng(1234)


class _Ctx:
    def __init__(self, num_outputs: int) -> None:
        self.num_outputs = num_outputs


def ref(name, *inputs, num_outputs=1, **attrs):
    opdef = get_op(name)
    kwargs = opdef.resolve_attrs(attrs)
    if opdef.wants_ctx:
        kwargs["ctx"] = _Ctx(num_outputs)
    return opdef.reference(*inputs, **kwargs)


def infer(name, *types, num_outputs=1, consts=None, **attrs):
    b = GraphBuilder()
    consts = consts or {}
    inputs = [b.add_constant(consts[i], f"c{i}") if i in consts else b.add_input(f"x{i}", t)
              for i, t in enumerate(types)]
    outs = b.add_node(name, inputs, attrs, name="n", num_outputs=num_outputs)
    return [o.type for o in outs] if num_outputs > 1 else outs[0].type


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# -- oracles (float64, explicit loops) ------------------------------------------


def naive_conv(x, w, b, strides, dilations, begins, ends, group):
    x = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(begins, ends, strict=True)))
    w = w.astype(np.float64)
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    outs = [(x.shape[2 + i] - ((k - 1) * d + 1)) // s + 1
            for i, (k, s, d) in enumerate(zip(kernel, strides, dilations, strict=True))]
    y = np.zeros((x.shape[0], m, *outs))
    mg = m // group
    for o in np.ndindex(*outs):
        for tap in np.ndindex(*kernel):
            pos = tuple(oi * s + t * d for oi, s, t, d in zip(o, strides, tap, dilations,
                                                               strict=True))
            for g in range(group):
                patch = x[(slice(None), slice(g * cg, (g + 1) * cg)) + pos]  # (N, cg)
                wt = w[(slice(g * mg, (g + 1) * mg), slice(None)) + tap]  # (mg, cg)
                y[(slice(None), slice(g * mg, (g + 1) * mg)) + o] += patch @ wt.T
    if b is not None:
        y += b.reshape((-1,) + (1,) * len(kernel))
    return y


def naive_conv_transpose(x, w, strides, dilations, group):
    """The full (uncropped) transposed convolution."""
    n, c = x.shape[:2]
    mg = w.shape[1]
    kernel = w.shape[2:]
    full = [s * (i - 1) + (k - 1) * d + 1
            for i, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True)]
    y = np.zeros((n, mg * group, *full))
    cg = c // group
    for i in np.ndindex(*x.shape[2:]):
        for tap in np.ndindex(*kernel):
            pos = tuple(ii * s + t * d for ii, s, t, d in zip(i, strides, tap, dilations,
                                                               strict=True))
            for g in range(group):
                xv = x[(slice(None), slice(g * cg, (g + 1) * cg)) + i].astype(np.float64)
                wt = w[(slice(g * cg, (g + 1) * cg), slice(None)) + tap].astype(np.float64)
                y[(slice(None), slice(g * mg, (g + 1) * mg)) + pos] += xv @ wt
    return y


def naive_pool(x, kernel, strides, begins, ends, outs, how, include_pad=False):
    """Max/avg pooling by explicit windows (windows may run past the end pads)."""
    y = np.zeros(x.shape[:2] + tuple(outs))
    index = np.zeros(y.shape, dtype=np.int64)
    for o in np.ndindex(*outs):
        cells, padded = [], 0
        for tap in np.ndindex(*kernel):
            pos = [oi * s + t - b for oi, s, t, b in zip(o, strides, tap, begins, strict=True)]
            inside = all(0 <= p < n for p, n in zip(pos, x.shape[2:], strict=True))
            in_pads = all(-b <= p < n + e for p, b, n, e in zip(pos, begins, x.shape[2:], ends,
                                                               strict=True))
            if inside:
                cells.append(tuple(pos))
            elif in_pads:
                padded += 1
        values = np.stack([x[(slice(None), slice(None)) + p] for p in cells], axis=-1)
        if how == "max":
            y[(...,) + o] = values.max(-1)
            first = values.argmax(-1)
            flat = [np.ravel_multi_index(p, x.shape[2:]) for p in cells]
            plane = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2]) * np.prod(
                x.shape[2:])
            index[(...,) + o] = plane + np.array(flat)[first]
        else:
            y[(...,) + o] = values.sum(-1) / (len(cells) + (padded if include_pad else 0))
    return y, index


# -- shared window arithmetic ------------------------------------------------------


def test_axis_pads_put_the_odd_pixel_at_the_right_end():
    assert nn.axis_pads(5, 2, 1, 1, (0, 0), "SAME_UPPER") == (0, 1)
    assert nn.axis_pads(5, 2, 1, 1, (0, 0), "SAME_LOWER") == (1, 0)
    assert nn.axis_pads(7, 3, 2, 2, (0, 0), "SAME_UPPER") == (2, 2)  # ceil(7/2)=4 windows
    assert nn.axis_pads(7, 3, 1, 1, (3, 4), "NOTSET") == (3, 4)
    assert nn.axis_pads(7, 3, 1, 1, (3, 4), "VALID") == (0, 0)
    with pytest.raises(ValueError, match="auto_pad 'SAME' is not one of"):
        nn.axis_pads(7, 3, 1, 1, (0, 0), "SAME")


def test_output_size_floor_ceil_and_last_window_rule():
    assert nn.output_size(4, 3, 2, 1, 0, 0) == 1
    assert nn.output_size(4, 3, 2, 1, 0, 0, ceil_mode=True) == 2
    # A ceil_mode window that would start in the end padding is dropped.
    assert nn.output_size(2, 1, 2, 1, 0, 0, ceil_mode=True) == 1
    assert nn.output_size(2, 3, 3, 1, 1, 1, ceil_mode=True) == 1
    assert nn.output_size(10, 3, 1, 4, 0, 0) == 2  # dilated extent 9
    with pytest.raises(ValueError, match="larger than the padded input"):
        nn.output_size(2, 3, 1, 1, 0, 0)


def test_resolve_window_and_attr_defaults():
    kernel, strides, dilations, pads = nn.window_attrs(2, [3, 3])
    assert (strides, dilations, pads) == ((1, 1), (1, 1), (0, 0, 0, 0))
    assert nn.resolve_window([5, 6], kernel, [2, 2], dilations, pads, "SAME_LOWER") == (
        [1, 1], [1, 0], [3, 3])
    with pytest.raises(ValueError, match=r"strides \[1\] should have 2 values"):
        nn.window_attrs(2, [3, 3], strides=[1])


def test_conv_transpose_window_splits_like_onnxruntime():
    # output_shape: the odd crop goes at the beginning (NOTSET) ...
    assert nn.conv_transpose_window([3], [3], [2], [1], [0, 0], output_shape=[6]) == (
        [1], [0], [6])
    # ... at the end for SAME_UPPER; a larger output appends zeros (negative crop).
    assert nn.conv_transpose_window([3], [3], [2], [1], [0, 0], "SAME_UPPER") == ([0], [1], [6])
    assert nn.conv_transpose_window([3], [3], [2], [1], [0, 0], output_shape=[8]) == (
        [0], [-1], [8])
    assert nn.conv_transpose_window([3], [3], [2], [1], [1, 2], output_padding=[1]) == (
        [1], [2], [5])


# -- Conv ------------------------------------------------------------------------------

CONV_CASES = [
    # x shape, w shape, attrs
    ((2, 4, 7, 6), (6, 2, 3, 3), dict(group=2, pads=[1, 0, 2, 1], strides=[2, 1])),
    ((1, 3, 9, 9), (4, 3, 3, 2), dict(dilations=[2, 3], auto_pad="SAME_LOWER")),
    ((1, 3, 8, 8), (5, 3, 1, 1), dict(strides=[2, 3])),
    ((2, 4, 6, 5), (8, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),  # depthwise, multiplier 2
    ((1, 5, 9, 9), (5, 1, 5, 5), dict(group=5, strides=[2, 2], auto_pad="SAME_UPPER")),
    ((2, 3, 11), (4, 3, 4), dict(strides=[3], pads=[2, 1])),
    ((1, 2, 5, 4, 6), (3, 2, 2, 3, 2), dict(pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 2])),
]


@pytest.mark.parametrize("xs, ws, attrs", CONV_CASES)
def test_conv_matches_loops(xs, ws, attrs):
    x, w, b = randn(*xs), randn(*ws), randn(ws[0])
    kernel, strides, dilations, pads = nn.window_attrs(
        len(xs) - 2, ws[2:], attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"))
    begins, ends, _ = nn.resolve_window(xs[2:], kernel, strides, dilations, pads,
                                        attrs.get("auto_pad", "NOTSET"))
    want = naive_conv(x, w, b, strides, dilations, begins, ends, attrs.get("group", 1))
    got = ref("Conv", x, w, b, **attrs)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert infer("Conv", TensorType(F32, xs), TensorType(F32, ws), **attrs) == TensorType(
        F32, got.shape)


def test_conv_in_bands_matches_whole(monkeypatch):
    x, w = randn(1, 3, 12, 10), randn(4, 3, 3, 3)
    whole = ref("Conv", x, w, pads=[1, 1, 1, 1], strides=[2, 1])
    monkeypatch.setattr(nn, "_COLUMN_BUDGET", 1)
    monkeypatch.setattr(nn, "_MIN_COLUMNS", 1)
    np.testing.assert_array_equal(ref("Conv", x, w, pads=[1, 1, 1, 1], strides=[2, 1]), whole)


def test_conv_float16_keeps_dtype():
    x, w = randn(1, 2, 5, 5, dtype=np.float16), randn(3, 2, 3, 3, dtype=np.float16)
    got = ref("Conv", x, w)
    assert got.dtype == np.float16
    want = naive_conv(x, w, None, (1, 1), (1, 1), (0, 0), (0, 0), 1)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-3, atol=2e-3)


def test_conv_inference_with_symbols():
    t = infer("Conv", TensorType(F32, ("N", 3, "H", "W")), TensorType(F32, (8, 3, 3, 3)),
              pads=[1, 1, 1, 1])
    assert t == TensorType(F32, ("N", 8, "H", "W"))
    t = infer("Conv", TensorType(F32, ("N", 3, "H", 10)), TensorType(F32, (8, 3, 3, 3)),
              strides=[2, 2], auto_pad="SAME_UPPER")
    assert t.shape[:2] == ("N", 8) and isinstance(t.shape[2], str) and t.shape[2] != "H"
    assert t.shape[3] == 5
    t = infer("Conv", TensorType(F32, None), TensorType(F32, (8, 3, 3, 3)))
    assert t.rank == 4 and t.shape[1] == 8 and not t.is_static


def test_conv_inference_errors():
    with pytest.raises(ShapeError, match="input X has 4 channels but the weight W expects"):
        infer("Conv", TensorType(F32, (1, 4, 5, 5)), TensorType(F32, (8, 3, 3, 3)))
    with pytest.raises(ShapeError, match="larger than the padded input"):
        infer("Conv", TensorType(F32, (1, 3, 2, 5)), TensorType(F32, (8, 3, 3, 3)))
    with pytest.raises(ShapeError, match=r"pads \[1, 1\] should have 4 values"):
        infer("Conv", TensorType(F32, (1, 3, 5, 5)), TensorType(F32, (8, 3, 3, 3)), pads=[1, 1])


# -- ConvTranspose ---------------------------------------------------------------------


@pytest.mark.parametrize("xs, ws, attrs", [
    ((1, 4, 3, 4), (4, 3, 3, 3), dict(group=2, strides=[2, 3], pads=[1, 0, 0, 2])),
    ((2, 2, 4), (2, 3, 3), dict(strides=[2], dilations=[2], output_padding=[1])),
    ((1, 2, 3, 3), (2, 1, 3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 2, 3, 3), (2, 1, 2, 2), dict(strides=[2, 2], output_shape=[5, 8])),
])
def test_conv_transpose_matches_loops(xs, ws, attrs):
    x, w, b = randn(*xs), randn(*ws), randn(ws[1] * attrs.get("group", 1))
    nsp = len(xs) - 2
    kernel, strides, dilations, pads = nn.window_attrs(
        nsp, ws[2:], attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"))
    begins, ends, outs = nn.conv_transpose_window(
        xs[2:], kernel, strides, dilations, pads, attrs.get("auto_pad", "NOTSET"),
        attrs.get("output_padding"), attrs.get("output_shape"))
    full = naive_conv_transpose(x, w, strides, dilations, attrs.get("group", 1))
    want = np.zeros(full.shape[:2] + tuple(outs))
    src = tuple(slice(bg, min(f, bg + o)) for bg, f, o in zip(begins, full.shape[2:], outs,
                                                               strict=True))
    want[(...,) + tuple(slice(0, s.stop - s.start) for s in src)] = full[(...,) + src]
    want += b.reshape((-1,) + (1,) * nsp)
    got = ref("ConvTranspose", x, w, b, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert infer("ConvTranspose", TensorType(F32, xs), TensorType(F32, ws), **attrs) == (
        TensorType(F32, got.shape))


def test_conv_transpose_inference_keeps_symbols_for_same():
    t = infer("ConvTranspose", TensorType(F32, ("N", 4, "H", 6)), TensorType(F32, (4, 2, 3, 3)),
              auto_pad="SAME_UPPER", strides=[1, 2], group=2)
    assert t == TensorType(F32, ("N", 4, "H", 12))


# -- pooling -----------------------------------------------------------------------------


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_values_and_indices(storage_order):
    x = randn(2, 3, 7, 6)
    attrs = dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1)
    y, idx = ref("MaxPool", x, num_outputs=2, storage_order=storage_order, **attrs)
    _, _, outs = nn.resolve_window([7, 6], [3, 2], [2, 2], [1, 1], [1, 0, 1, 1], ceil_mode=True)
    want, want_idx = naive_pool(x, [3, 2], [2, 2], [1, 0], [1, 1], outs, "max")
    np.testing.assert_array_equal(y, want.astype(np.float32))
    if storage_order:  # column-major over the spatial axes
        plane, rest = np.divmod(want_idx, 42)
        want_idx = plane * 42 + (rest // 6) + (rest % 6) * 7
    np.testing.assert_array_equal(idx, want_idx)
    types = infer("MaxPool", TensorType(F32, ("N", 3, 7, 6)), num_outputs=2, **attrs)
    assert types == [TensorType(F32, ("N", 3, *outs)), TensorType(I64, ("N", 3, *outs))]


def test_max_pool_ties_take_the_first_and_ints_pad_low():
    x = np.array([[[[3, 3, 1], [1, 3, 0]]]], dtype=np.int8) - np.int8(5)
    y, idx = ref("MaxPool", x, num_outputs=2, kernel_shape=[2, 2], pads=[0, 1, 0, 0])
    np.testing.assert_array_equal(y, [[[[-2, -2, -2]]]])
    np.testing.assert_array_equal(idx, [[[[0, 0, 1]]]])


@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_divisors(include):
    x = randn(1, 2, 5, 6)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 0], ceil_mode=1,
                 count_include_pad=include)
    _, _, outs = nn.resolve_window([5, 6], [3, 3], [2, 2], [1, 1], [1, 1, 1, 0], ceil_mode=True)
    want, _ = naive_pool(x, [3, 3], [2, 2], [1, 1], [1, 0], outs, "avg", bool(include))
    np.testing.assert_allclose(ref("AveragePool", x, **attrs), want, rtol=1e-6, atol=1e-6)


def test_lp_and_global_pools():
    x = randn(2, 3, 4, 5)
    got = ref("LpPool", x, kernel_shape=[2, 2], p=3)
    want = np.zeros((2, 3, 3, 4))
    for i, j in itertools.product(range(3), range(4)):
        want[:, :, i, j] = (np.abs(x[:, :, i:i + 2, j:j + 2].astype(np.float64)) ** 3).sum(
            (2, 3)) ** (1 / 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # float32 sums of 20 values: a near-zero mean is only good to ~1 ulp of the terms.
    np.testing.assert_allclose(ref("GlobalAveragePool", x),
                               x.astype(np.float64).mean((2, 3), keepdims=True),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ref("GlobalMaxPool", x), x.max((2, 3), keepdims=True))
    np.testing.assert_allclose(ref("GlobalLpPool", x, p=2),
                               np.sqrt((x.astype(np.float64) ** 2).sum((2, 3), keepdims=True)),
                               rtol=1e-6)
    assert infer("GlobalAveragePool", TensorType(F16, ("N", "C", "H", "W"))) == TensorType(
        F16, ("N", "C", 1, 1))


def test_max_unpool_inverts_max_pool():
    x = np.abs(randn(1, 2, 4, 6)) + 0.1
    y, idx = ref("MaxPool", x, num_outputs=2, kernel_shape=[2, 2], strides=[2, 2])
    up = ref("MaxUnpool", y, idx, kernel_shape=[2, 2], strides=[2, 2])
    assert up.shape == x.shape
    np.testing.assert_array_equal(np.where(up != 0, x, 0), up)
    np.testing.assert_array_equal(ref("MaxPool", up, kernel_shape=[2, 2], strides=[2, 2]), y)
    with pytest.raises(ValueError, match="outside the unpooled tensor"):
        ref("MaxUnpool", y, idx + 1000, kernel_shape=[2, 2], strides=[2, 2])


# -- Gemm, MatMul, Einsum -------------------------------------------------------------------


def test_gemm_transposes_scales_and_broadcasts_c():
    a, b, c = randn(4, 3), randn(5, 4), randn(3, 1)
    got = ref("Gemm", a, b, c, transA=1, transB=1, alpha=0.5, beta=2.0)
    want = 0.5 * a.T.astype(np.float64) @ b.T.astype(np.float64) + 2.0 * c
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
    t = infer("Gemm", TensorType(F32, ("K", "M")), TensorType(F32, ("K", 7)),
              TensorType(F32, (7,)), transA=1)
    assert t == TensorType(F32, ("M", 7))
    with pytest.raises(ShapeError, match="C of shape \\[2, 7\\] does not broadcast"):
        infer("Gemm", TensorType(F32, (3, 4)), TensorType(F32, (4, 7)), TensorType(F32, (2, 7)))


@pytest.mark.parametrize("sa, sb", [((3,), (3,)), ((3,), (2, 3, 4)), ((2, 1, 5, 3), (3,)),
                                    ((2, 1, 4, 3), (5, 3, 2)), ((1, 6, 4), (4, 2))])
def test_matmul_numpy_semantics(sa, sb):
    a, b = randn(*sa), randn(*sb)
    got = ref("MatMul", a, b)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert infer("MatMul", TensorType(F32, sa), TensorType(F32, sb)) == TensorType(F32, got.shape)


def test_matmul_inference_symbols_and_errors():
    t = infer("MatMul", TensorType(F32, ("B", "S", 8)), TensorType(F32, (8, 16)))
    assert t == TensorType(F32, ("B", "S", 16))
    t = infer("MatMul", TensorType(F32, ("B", 1, "S", 8)), TensorType(F32, (4, 8, "T")))
    assert t == TensorType(F32, ("B", 4, "S", "T"))
    with pytest.raises(ShapeError, match="inner dimensions of shapes \\[2, 3\\] and \\[4, 5\\]"):
        infer("MatMul", TensorType(F32, (2, 3)), TensorType(F32, (4, 5)))


def test_einsum_implicit_ellipsis_and_spaces():
    a, b = randn(2, 3, 4), randn(4, 5)
    got = ref("Einsum", a, b, equation="...ij, jK")  # implicit output: "...iK" in ASCII order
    want = np.einsum("...ij,jk->...ki", a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert nn.parse_einsum("Ba,aB", [2, 2]) == (["Ba", "aB"], "")
    assert nn.parse_einsum("ij,jk", [2, 2]) == (["ij", "jk"], "ik")
    t = infer("Einsum", TensorType(F32, ("B", 1, 3, 4)), TensorType(F32, (7, 4, 5)),
              equation="...ij,...jk->...ik")
    assert t == TensorType(F32, ("B", 7, 3, 5))
    assert ref("Einsum", a, equation="ijk->").shape == ()
    with pytest.raises(ShapeError, match="does not fit an input of rank 3"):
        infer("Einsum", TensorType(F32, (2, 3, 4)), equation="ij->i")
    with pytest.raises(ShapeError, match="uses a label no input has"):
        infer("Einsum", TensorType(F32, (2, 3)), equation="ij->k")


# -- Dropout ------------------------------------------------------------------------------------


def test_dropout_inference_mode_is_identity():
    x = randn(3, 4)
    y, mask = ref("Dropout", x, np.float32(0.3), num_outputs=2)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()
    types = infer("Dropout", TensorType(F32, ("N", 4)), num_outputs=2)
    assert types == [TensorType(F32, ("N", 4)), TensorType(BOOL, ("N", 4))]


def test_dropout_training_scales_kept_values():
    x = randn(200, 50)
    y, mask = ref("Dropout", x, np.float32(0.25), np.bool_(True), num_outputs=2, seed=7)
    again, _ = ref("Dropout", x, np.float32(0.25), np.bool_(True), num_outputs=2, seed=7)
    np.testing.assert_array_equal(y, again)  # a seed makes the mask reproducible
    assert 0.2 < 1 - mask.mean() < 0.3
    np.testing.assert_allclose(y[mask], x[mask] / 0.75, rtol=1e-6)
    assert (y[~mask] == 0).all()
    with pytest.raises(ValueError, match="ratio 1.0 should be in"):
        ref("Dropout", x, np.float32(1.0), np.bool_(True))


# -- Col2Im and DeformConv ---------------------------------------------------------------


def test_col2im_sums_overlapping_blocks():
    image, block, strides, dil, pads = [5, 6], [2, 3], [1, 2], [2, 1], [1, 0, 0, 1]
    kernel, strides, dil, pads = nn.window_attrs(2, block, strides, dil, pads)
    blocks = [nn.output_size(i, k, s, d, b, e) for i, k, s, d, b, e in zip(
        image, kernel, strides, dil, pads[:2], pads[2:], strict=True)]
    cols = randn(2, 3 * 6, blocks[0] * blocks[1])
    want = np.zeros((2, 3, 5 + 1, 6 + 1))
    c4 = cols.reshape(2, 3, 2, 3, *blocks).astype(np.float64)
    for (bi, bj), (ki, kj) in itertools.product(np.ndindex(*blocks), np.ndindex(2, 3)):
        want[:, :, bi * 1 + ki * 2, bj * 2 + kj] += c4[:, :, ki, kj, bi, bj]
    got = ref("Col2Im", cols, np.array(image), np.array(block), strides=strides,
              dilations=dil, pads=pads)
    np.testing.assert_allclose(got, want[:, :, 1:, :6], rtol=1e-5, atol=1e-6)
    t = infer("Col2Im", TensorType(F32, ("N", 18, blocks[0] * blocks[1])), None, None,
              consts={1: np.array(image), 2: np.array(block)})
    assert t == TensorType(F32, ("N", 3, 5, 6))


def test_deform_conv_reduces_to_conv_and_shifts():
    x, w, b = randn(1, 4, 6, 5), randn(6, 2, 3, 3), randn(6)
    zero = np.zeros((1, 2 * 9 * 2, 4, 3), np.float32)
    plain = ref("Conv", x, w, b, group=2)
    got = ref("DeformConv", x, w, zero, b, group=2, offset_group=2)
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5)
    # An offset of exactly +1 row on every tap is a conv of the input shifted up
    # by one row (zero below); a mask of one half halves the result.
    shift = zero.copy()
    shift[:, 0::2] = 1.0
    shifted = np.concatenate([x[:, :, 1:], np.zeros_like(x[:, :, :1])], axis=2)
    want = ref("Conv", shifted, w, None, group=2)
    got = ref("DeformConv", x, w, shift, None, np.full((1, 18, 4, 3), 0.5, np.float32),
              group=2, offset_group=2)
    np.testing.assert_allclose(got, 0.5 * want, rtol=1e-5, atol=1e-5)
    # Half a pixel interpolates linearly between two neighbours.
    half = np.zeros((1, 2, 3, 4), np.float32)
    half[:, 1] = 0.5  # the column offset of the single tap
    ones = np.ones((1, 1, 1, 1), np.float32)
    x1 = randn(1, 1, 3, 4)
    got = ref("DeformConv", x1, ones, half)
    want = np.concatenate([(x1[..., :-1] + x1[..., 1:]) / 2, x1[..., -1:] / 2], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_global_average_pool_sums_in_four_lanes_like_mlas():
    # Lanes (1e8, 1, -1e8, 1) combine as (1e8 - 1e8) + (1 + 1) = 2, then + 3:
    # exact here, where a left-to-right float32 sum would lose the first 1.
    x = np.array([[[1e8, 1, -1e8, 1, 3]]], np.float32)
    np.testing.assert_array_equal(ref("GlobalAveragePool", x), [[[1.0]]])
