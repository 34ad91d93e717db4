"""Shared fixtures: real models (cached outside the repo) and oracles."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def ort():
    """ONNX Runtime, the oracle."""
    import onnxruntime

    return onnxruntime


def run_onnxruntime(model, feeds: dict, threads: int = 1) -> dict[str, np.ndarray]:
    """Outputs of ONNX Runtime (all optimizations on) by output name."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 4
    source = model if isinstance(model, str | bytes) else (
        str(model) if hasattr(model, "__fspath__") else model.SerializeToString())
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float, atol: float, what: str = ""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)
