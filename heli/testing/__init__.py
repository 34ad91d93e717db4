"""Helpers for tests, demos and benchmarks: the real test models and inputs."""

from heli.testing._models import (
    cache_dir,
    minilm_model_dir,
    minilm_onnx,
    ppocr_model,
    ppocr_package_dir,
)
from heli.testing._text import ctc_decode, ocr_input, rec_characters, render_text
from heli.testing._zoo import bert_base_onnx, mobilenetv2_onnx, resnet18_onnx

__all__ = [
    "bert_base_onnx",
    "cache_dir",
    "ctc_decode",
    "minilm_model_dir",
    "minilm_onnx",
    "mobilenetv2_onnx",
    "ocr_input",
    "ppocr_model",
    "ppocr_package_dir",
    "rec_characters",
    "render_text",
    "resnet18_onnx",
]
