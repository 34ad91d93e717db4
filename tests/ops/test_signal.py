"""DFT, STFT, the windows and MelWeightMatrix: type inference with symbolic
shapes, the opset-19 DFT upgrade, and values against float64 numpy oracles."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import heli
from heli._errors import ExecutionError, ShapeError
from heli.ir._types import DType, TensorType
from tests.ops.helpers import infer_types

F32 = DType.FLOAT32


def infer(op_name, inputs, attrs=None):
    """Output type of one node (see tests.ops.helpers.infer_types)."""
    return infer_types(op_name, inputs, attrs)[0]


def run(op_name, feeds, attrs=None, opset=20, names=None):
    """One node; ``feeds`` in input order (None for an omitted optional)."""
    names = names or [f"i{k}" if v is not None else "" for k, v in enumerate(feeds)]
    given = {n: v for n, v in zip(names, feeds, strict=True) if v is not None}
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for n, v in given.items()]
    node = helper.make_node(op_name, names, ["y"], **(attrs or {}))
    graph = helper.make_graph([node], "g", inputs, [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return heli.compile(model, debug=True).run(given)["y"]


def as_pairs(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


# -- DFT ----------------------------------------------------------------------------------


def test_dft_complex_padded_along_axis_input():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 5, 3)) + 1j * rng.standard_normal((2, 5, 3))
    x = as_pairs(z).astype(np.float32)
    y = run("DFT", [x, np.array(8, np.int64), np.array(1, np.int64)])
    np.testing.assert_allclose(y, as_pairs(np.fft.fft(z, n=8, axis=1)), rtol=1e-5, atol=1e-5)
    y = run("DFT", [x, None, np.array(-2, np.int64)], {"inverse": 1})
    np.testing.assert_allclose(y, as_pairs(np.fft.ifft(z, axis=2)), rtol=1e-5, atol=1e-6)


def test_dft_irfft_default_length_is_float64_exact():
    spectrum = np.fft.rfft(np.arange(12.0))
    y = run("DFT", [as_pairs(spectrum)[None, :, :]], {"onesided": 1, "inverse": 1})
    # 7 bins: the default length is 2 * (7 - 1) = 12, which recovers the signal.
    assert y.dtype == np.float64 and y.shape == (1, 12, 1)
    np.testing.assert_allclose(y[0, :, 0], np.arange(12.0), atol=1e-12)


def test_dft_opset19_axis_attribute_defaults_to_1():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    y = run("DFT", [x], opset=19)  # no axis attribute: axis 1, not the newer -2
    np.testing.assert_allclose(y, as_pairs(np.fft.fft(x[..., 0], axis=1)), rtol=1e-5,
                               atol=1e-4)


def test_dft_infer():
    x = TensorType(F32, ("b", 16, 1))
    t = infer("DFT", [x, None, np.array(1, np.int64)], {"onesided": 1})
    assert t == TensorType(F32, ("b", 9, 2))
    t = infer("DFT", [TensorType(F32, ("b", 9, 2)), None, np.array(-2, np.int64)],
              {"onesided": 1, "inverse": 1})
    assert t == TensorType(F32, ("b", 16, 1))
    t = infer("DFT", [x, TensorType(DType.INT64, ())])  # a length known only at run time
    assert t.shape is None
    with pytest.raises(ShapeError, match="axis 2 is out of range for an input of rank 3"):
        infer("DFT", [x, None, np.array(2, np.int64)])


def test_dft_rfft_of_complex_input_is_an_error():
    with pytest.raises(ExecutionError, match="RFFT"):
        run("DFT", [np.zeros((1, 4, 2), np.float32)], {"onesided": 1})


# -- STFT -----------------------------------------------------------------------------------


def test_stft_matches_framed_fft():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((2, 50, 1)).astype(np.float32)
    window = np.hanning(16).astype(np.float32)
    y = run("STFT", [signal, np.array(6, np.int64), window], opset=17)
    starts = range(0, 50 - 16 + 1, 6)
    frames = np.stack([signal[:, s:s + 16, 0] * window for s in starts], axis=1)
    np.testing.assert_allclose(y, as_pairs(np.fft.rfft(frames.astype(np.float64), axis=-1)),
                               rtol=1e-4, atol=1e-4)


def test_stft_infer():
    signal = TensorType(F32, ("b", 100, 1))
    t = infer("STFT", [signal, np.array(10, np.int64), TensorType(F32, (20,))])
    assert t == TensorType(F32, ("b", 9, 11, 2))
    t = infer("STFT", [signal, np.array(10, np.int64), None, np.array(20, np.int64)],
              {"onesided": 0})
    assert t == TensorType(F32, ("b", 9, 20, 2))
    with pytest.raises(ShapeError, match="frame_length 200 is longer than the signal"):
        infer("STFT", [signal, np.array(1, np.int64), None, np.array(200, np.int64)])


def test_stft_window_length_mismatch():
    with pytest.raises(ExecutionError, match="frame_length is 8"):
        run("STFT", [np.zeros((1, 20, 1), np.float32), np.array(2, np.int64),
                     np.ones(4, np.float32), np.array(8, np.int64)], opset=17)


# -- windows and mel --------------------------------------------------------------------------


@pytest.mark.parametrize(("op_name", "numpy_window"), [
    ("HannWindow", np.hanning), ("HammingWindow", None), ("BlackmanWindow", np.blackman)])
def test_windows(op_name, numpy_window):
    size = np.array(9, np.int64)
    periodic = run(op_name, [size], opset=17)
    symmetric = run(op_name, [size], {"periodic": 0, "output_datatype": 11}, opset=17)
    assert periodic.dtype == np.float32 and symmetric.dtype == np.float64
    if numpy_window is None:  # ONNX's Hamming uses 25/46 and 21/46, not numpy's 0.54/0.46
        n = np.arange(10)
        numpy_window = lambda m: 25 / 46 - 21 / 46 * np.cos(2 * np.pi * n[:m] / (m - 1))  # noqa: E731
    np.testing.assert_allclose(symmetric, numpy_window(9), atol=1e-12)
    np.testing.assert_allclose(periodic, numpy_window(10)[:9], atol=1e-6)


def test_window_infer():
    assert infer("HannWindow", [np.array(7, np.int32)]) == TensorType(F32, (7,))
    t = infer("HannWindow", [TensorType(DType.INT64, ())], {"output_datatype": 10})
    assert t.dtype is DType.FLOAT16 and isinstance(t.shape[0], str)
    with pytest.raises(ShapeError, match="window size must be an integer"):
        infer("HannWindow", [TensorType(F32, ())])


def test_mel_weight_matrix_triangles():
    args = [np.array(4, np.int64), np.array(32, np.int64), np.array(16000, np.int64),
            np.array(0.0, np.float32), np.array(8000.0, np.float32)]
    assert infer("MelWeightMatrix", args) == TensorType(F32, (17, 4))
    y = run("MelWeightMatrix", args, opset=17)
    assert y.shape == (17, 4) and y.dtype == np.float32
    # Each filter is a triangle of peak 1 at its center bin.
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = np.floor(33 * hz(np.arange(6) * mel(8000.0) / 6) / 16000).astype(int)
    for i in range(4):
        left, center, right = edges[i:i + 3]
        assert y[center, i] == 1
        expected = np.zeros(17)
        expected[left:center + 1] = (np.arange(left, center + 1) - left) / max(center - left, 1)
        expected[center:right] = (right - np.arange(center, right)) / max(right - center, 1)
        np.testing.assert_allclose(y[:, i], expected, atol=1e-6)
