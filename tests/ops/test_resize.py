"""Resize, GridSample and AffineGrid: type inference (constant and symbolic
shapes), error messages, and values against hand-computed and float64 oracles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli._errors import ExecutionError, ShapeError
from heli.ir._types import DType, TensorType
from heli.ops._resize import affine_grid, grid_sample, resize
from tests.ops.helpers import infer_types

F32 = DType.FLOAT32
RNG = np.random.default_rng(0)

RESIZE = dict(antialias=0, axes=None, coordinate_transformation_mode="half_pixel",
              cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0,
              keep_aspect_ratio_policy="stretch", mode="nearest",
              nearest_mode="round_prefer_floor")


def run_resize(x, scales=None, sizes=None, roi=None, **attrs):
    scales = None if scales is None else np.asarray(scales, np.float32)
    sizes = None if sizes is None else np.asarray(sizes, np.int64)
    return resize(x, roi, scales, sizes, **{**RESIZE, **attrs})


def infer(op_name, inputs, attrs=None):
    """Output type of one node (see tests.ops.helpers.infer_types)."""
    return infer_types(op_name, inputs, attrs)[0]


# --------------------------------------------------------------------------- Resize: types


def test_resize_infer_scales_keep_symbolic_batch():
    x = TensorType(F32, ("N", 3, 20, 30))
    t = infer("Resize", [x, None, np.array([1, 1, 2, 0.5], np.float32)])
    assert t == TensorType(F32, ("N", 3, 40, 15))


def test_resize_infer_sizes_axes_and_policy():
    x = TensorType(F32, (1, 3, 20, 30))
    t = infer("Resize", [x, None, None, np.array([10, 10], np.int64)],
              {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"})
    assert t.shape == (1, 3, 7, 10)  # scale min(10/20, 10/30) = 1/3; round(20/3) = 7
    t = infer("Resize", [x, None, np.zeros(0, np.float32), np.array([1, 3, 5, 6], np.int64)])
    assert t.shape == (1, 3, 5, 6)


def test_resize_infer_non_constant_scales_gives_fresh_dims():
    x = TensorType(F32, (1, 3, 20, 30))
    t = infer("Resize", [x, None, TensorType(F32, (2,))], {"axes": [-2, -1]})
    assert t.shape[:2] == (1, 3)
    assert all(isinstance(d, str) for d in t.shape[2:]) and t.shape[2] != t.shape[3]


def test_resize_infer_errors():
    x = TensorType(F32, (1, 3, 4, 4))
    with pytest.raises(ShapeError, match="neither was given"):
        infer("Resize", [x])
    with pytest.raises(ShapeError, match="'sizes' has 2 values but 4 axes"):
        infer("Resize", [x, None, None, np.array([8, 8], np.int64)])
    with pytest.raises(ShapeError, match="mode 'bilinear' is not one of"):
        infer("Resize", [x, None, np.ones(4, np.float32)], {"mode": "bilinear"})
    with pytest.raises(ShapeError, match="axis 4 is out of range"):
        infer("Resize", [x, None, np.ones(1, np.float32)], {"axes": [4]})


# --------------------------------------------------------------------------- Resize: values


def test_resize_nearest_asymmetric_floor_is_repeat():
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    y = run_resize(x, [1, 1, 2, 3], coordinate_transformation_mode="asymmetric",
                   nearest_mode="floor")
    np.testing.assert_array_equal(y, np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))


def test_resize_nearest_on_strings_and_bool():
    x = np.array([["a", "b"], ["c", "d"]], dtype=object)
    y = run_resize(x, [2, 1], coordinate_transformation_mode="asymmetric")
    assert y.tolist() == [["a", "b"], ["a", "b"], ["c", "d"], ["c", "d"]]
    assert run_resize(np.array([True, False]), [2]).dtype == np.bool_


def _bilinear_oracle(x, out_h, out_w, coord):
    """float64 per-pixel bilinear with edge clamping."""
    h, w = x.shape
    y = np.zeros((out_h, out_w))
    for i, j in itertools.product(range(out_h), range(out_w)):
        sy = min(max(coord(i, h, out_h), 0), h - 1)
        sx = min(max(coord(j, w, out_w), 0), w - 1)
        y0, x0 = int(np.floor(sy)), int(np.floor(sx))
        y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
        fy, fx = sy - y0, sx - x0
        y[i, j] = ((1 - fy) * ((1 - fx) * x[y0, x0] + fx * x[y0, x1])
                   + fy * ((1 - fx) * x[y1, x0] + fx * x[y1, x1]))
    return y


@pytest.mark.parametrize("mode, coord", [
    ("half_pixel", lambda i, n, m: (i + 0.5) * n / m - 0.5),
    ("align_corners", lambda i, n, m: i * (n - 1) / (m - 1)),
    ("asymmetric", lambda i, n, m: i * n / m),
])
def test_resize_linear_matches_per_pixel_oracle(mode, coord):
    x = RNG.standard_normal((5, 7)).astype(np.float32)
    y = run_resize(x, sizes=[9, 4], mode="linear", coordinate_transformation_mode=mode)
    np.testing.assert_allclose(y, _bilinear_oracle(x.astype(np.float64), 9, 4, coord),
                               rtol=1e-5, atol=1e-5)


def test_resize_align_corners_uses_fractional_target_with_scales():
    # ONNX: length_resized is 4 * 0.6 = 2.4, so x_original(1) = 3 / 1.4.
    x = np.array([[1, 2, 3, 4]], np.float32)
    y = run_resize(x, [1, 0.6], mode="linear", coordinate_transformation_mode="align_corners")
    np.testing.assert_allclose(y, [[1, 1 + 3 / 1.4]], rtol=1e-6)


def test_resize_cubic_reproduces_linear_ramps_and_constants():
    ramp = np.tile(np.arange(12, dtype=np.float32), (3, 1))
    y = run_resize(ramp, [1, 1.5], mode="cubic", coordinate_transformation_mode="align_corners",
                   cubic_coeff_a=-0.5)
    # With a = -0.5, Keys' cubic convolution is exact on linear data away from the borders.
    want = np.arange(18) * 11 / 17
    np.testing.assert_allclose(y[:, 3:-3], np.tile(want[3:-3], (3, 1)), rtol=1e-5, atol=1e-5)
    flat = np.full((4, 5), 2.5, np.float32)
    out = run_resize(flat, [0.6, 1.7], mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5)
    np.testing.assert_allclose(out, 2.5, rtol=1e-6)


def test_resize_linear_antialias_halving_weights():
    x = RNG.standard_normal(12).astype(np.float32)
    y = run_resize(x, [0.5], mode="linear", antialias=1)
    # Output i samples x_original = 2i + 0.5 with the triangle stretched to width 4.
    want = [0.125 * x[2 * i - 1] + 0.375 * x[2 * i] + 0.375 * x[2 * i + 1]
            + 0.125 * x[2 * i + 2] for i in range(1, 5)]
    np.testing.assert_allclose(y[1:5], want, rtol=1e-5, atol=1e-6)


def test_resize_tf_crop_and_resize_extrapolates():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    roi = np.array([0, 0.5, 1, 1.5], np.float32)  # columns 1.5 .. 4.5 in pixels
    y = run_resize(x, sizes=[4, 3], roi=roi, mode="linear",
                   coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-1)
    np.testing.assert_allclose(y[:, 0], x[:, 1] + 0.5)
    np.testing.assert_allclose(y[:, 1], x[:, 3])  # x_original 3.0 is the last column
    np.testing.assert_array_equal(y[:, 2], -1.0)  # x_original 4.5 is outside


def test_resize_integer_data_is_computed_in_float_and_truncated():
    x = np.array([[0, 255]], np.uint8)
    y = run_resize(x, sizes=[1, 4], mode="linear", coordinate_transformation_mode="align_corners")
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, [[0, 85, 170, 255]])


def test_resize_runtime_error_names_the_problem():
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2]),
         helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 19)])
    compiled = heli.compile(m, debug=True)
    x = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(ExecutionError, match="must all be positive"):
        compiled.run({"x": x, "scales": np.array([1, 1, -2, 2], np.float32)})
    y = compiled.run({"x": x, "scales": np.array([1, 1, 2, 2], np.float32)})["y"]
    assert y.shape == (1, 1, 4, 4)


def test_upsample_opset9_is_resize():
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]),
        opset_imports=[helper.make_opsetid("", 9)])
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    y = heli.compile(m, debug=True).run({"x": x})["y"]
    np.testing.assert_array_equal(y, x.repeat(2, 2).repeat(2, 3))


# --------------------------------------------------------------------------- GridSample


def _identity_grid(*sizes, align):
    axes = [np.linspace(-1, 1, n) if align else (2 * np.arange(n) + 1) / n - 1 for n in sizes]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack(mesh[::-1], axis=-1)[None].astype(np.float32)


@pytest.mark.parametrize("mode, align",
                         list(itertools.product(["linear", "nearest", "cubic"], [0, 1])))
def test_grid_sample_identity_grid_reproduces_input(mode, align):
    x = RNG.standard_normal((1, 2, 4, 5)).astype(np.float32)
    y = grid_sample(x, _identity_grid(4, 5, align=align), align_corners=align, mode=mode,
                    padding_mode="zeros")
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


def test_grid_sample_volumetric_identity_and_infer():
    x = RNG.standard_normal((2, 1, 3, 4, 5)).astype(np.float32)
    grid = np.repeat(_identity_grid(3, 4, 5, align=True), 2, axis=0)
    y = grid_sample(x, grid, align_corners=1, mode="linear", padding_mode="border")
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)
    t = infer("GridSample", [TensorType(F32, ("n", 1, 3, 4, 5)),
                             TensorType(F32, ("n", 6, 7, 8, 3))])
    assert t.shape == ("n", 1, 6, 7, 8)


def test_grid_sample_padding_modes_hand_values():
    x = np.array([[[[1.0, 2.0, 3.0]]]], np.float32)  # one row, three columns
    # x = -1.5 (align_corners) lies 0.5 pixel left of column 0
    grid = np.array([[[[-1.5, 0.0]]]], np.float32)
    kw = dict(align_corners=1, mode="linear")
    assert grid_sample(x, grid, padding_mode="zeros", **kw)[0, 0, 0, 0] == pytest.approx(0.5)
    assert grid_sample(x, grid, padding_mode="border", **kw)[0, 0, 0, 0] == pytest.approx(1.0)
    # reflection maps -0.5 to 0.5: halfway between 1 and 2
    assert grid_sample(x, grid, padding_mode="reflection", **kw)[0, 0, 0, 0] == pytest.approx(1.5)


def test_grid_sample_bad_mode():
    with pytest.raises(ShapeError, match="padding_mode 'wrap'"):
        infer("GridSample", [TensorType(F32, (1, 1, 2, 2)), TensorType(F32, (1, 2, 2, 2))],
              {"padding_mode": "wrap"})


# --------------------------------------------------------------------------- AffineGrid


def test_affine_grid_identity_and_round_trip():
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
    for align in (0, 1):
        grid = affine_grid(theta, np.array([1, 1, 3, 4]), align_corners=align)
        np.testing.assert_allclose(grid, _identity_grid(3, 4, align=align), atol=1e-6)
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    grid = affine_grid(theta, np.array([1, 2, 3, 4]), align_corners=0)
    y = grid_sample(x, grid, align_corners=0, mode="linear", padding_mode="zeros")
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


def test_affine_grid_3d_translation_and_infer():
    theta = np.zeros((2, 3, 4), np.float32)
    theta[:, [0, 1, 2], [0, 1, 2]] = 1
    theta[1, :, 3] = [0.5, -0.25, 0.0]
    grid = affine_grid(theta, np.array([2, 1, 2, 3, 4]), align_corners=1)
    assert grid.shape == (2, 2, 3, 4, 3)
    np.testing.assert_allclose(grid[1] - grid[0], np.broadcast_to([0.5, -0.25, 0], (2, 3, 4, 3)),
                               atol=1e-6)
    t = infer("AffineGrid", [TensorType(F32, ("n", 3, 4)), np.array([2, 1, 5, 6, 7])])
    assert t.shape == (2, 5, 6, 7, 3)
    with pytest.raises(ShapeError, match="must be \\(N, 2, 3\\)"):
        infer("AffineGrid", [TensorType(F32, (2, 3, 4)), np.array([2, 1, 5, 6])])
