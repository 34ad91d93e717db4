"""Helpers for tests, demos and benchmarks: the real test models."""

from heli.testing._models import (
    cache_dir,
    minilm_model_dir,
    minilm_onnx,
    ppocr_model,
    ppocr_package_dir,
)

__all__ = ["cache_dir", "minilm_model_dir", "minilm_onnx", "ppocr_model", "ppocr_package_dir"]
