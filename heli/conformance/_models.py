"""The `light` CNN models shipped in the onnx package, checked against
ONNX Runtime on seeded random inputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from heli.conformance._node import CaseResult, compare_outputs

MODEL_RTOL = 1e-4
MODEL_ATOL = 1e-5


def light_model_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_models() -> list[Path]:
    """The `light_*.onnx` models of the installed onnx package."""
    return sorted(light_model_dir().glob("light_*.onnx"))


def random_feeds(model: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds for every (static-shaped) graph input of ``model``."""
    from heli.frontend.onnx import import_onnx
    from heli.ir._types import TensorType

    graph = import_onnx(model)
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in graph.inputs:
        vtype = value.type
        if not isinstance(vtype, TensorType) or not vtype.is_static:
            raise ValueError(f"Input {value.name!r} has no static shape ({vtype}).")
        feeds[value.name] = random_array(vtype.dtype.np, vtype.shape, rng)
    return feeds


def random_array(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def run_light_model(path: Path, target: str, seed: int = 0) -> CaseResult:
    """Compile and run one light model on ``target``; compare with ONNX Runtime."""
    import onnxruntime as ort

    import heli
    from heli._errors import UnsupportedError

    name = path.stem
    start = time.perf_counter()
    try:
        feeds = random_feeds(str(path), seed)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        expected = session.run(None, feeds)
        compiled = heli.compile(str(path), target=target, fallback=())
        result = compiled.run(feeds)
        got = [result[o.name] for o in session.get_outputs()]
        problem = compare_outputs(expected, got, MODEL_RTOL, MODEL_ATOL)
    except UnsupportedError as error:
        return CaseResult(name, "model", "unsupported", str(error), time.perf_counter() - start)
    except Exception as error:
        return CaseResult(name, "model", "fail", f"{type(error).__name__}: {error}",
                          time.perf_counter() - start)
    status = "fail" if problem else "pass"
    return CaseResult(name, "model", status, problem, time.perf_counter() - start)
