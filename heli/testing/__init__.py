"""Helpers for tests, demos and benchmarks: the real test models."""

from heli.testing._models import (
    cache_dir,
    minilm_model_dir,
    minilm_onnx,
    ppocr_model,
    ppocr_package_dir,
)
from heli.testing._text import ctc_decode, ocr_input, rec_characters, render_text

__all__ = [
    "ctc_decode",
    "ocr_input",
    "rec_characters",
    "render_text","cache_dir", "minilm_model_dir", "minilm_onnx", "ppocr_model", "ppocr_package_dir"]
