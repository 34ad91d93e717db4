"""Standard networks with random, seeded weights, exported to ONNX once and
cached outside the repo (``$HELI_CACHE_DIR/zoo``, default ``~/.cache/heli``).

* ``resnet18_onnx()``: ResNet-18, input ``input`` [batch, 3, 224, 224] float32,
  output ``logits`` [batch, 1000];
* ``mobilenetv2_onnx()``: MobileNetV2 (width 1.0), same input and output;
* ``bert_base_onnx()``: the BERT-base encoder (12 layers, hidden 768, 12 heads,
  intermediate 3072, exact GELU), inputs ``input_ids`` and ``attention_mask``
  int64 [batch, seq] (seq up to 512), output ``last_hidden_state`` [batch, seq, 768].

The architectures are defined in PyTorch (:mod:`heli.testing._export_zoo`) and
exported with ``torch.onnx.export`` (TorchScript, opset 17) in a child
process, so torch never loads into the caller.  Each export writes a
temporary file and renames it into place under a file lock, so parallel test
workers never see a half-written model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from heli._errors import HeliError
from heli.testing._models import _locked, cache_dir

# Bump when an architecture, its initialisation or the export changes, so
# stale cached files are never reused.
ZOO_VERSION = 1

ZOO_MODELS = ("resnet18", "mobilenetv2", "bert_base")


def _zoo_model(name: str) -> Path:
    target = cache_dir() / "zoo" / f"{name}-v{ZOO_VERSION}.onnx"
    if target.is_file():
        return target
    with _locked(f"zoo-{name}"):
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        # A child process keeps torch out of the caller's memory and threads.
        result = subprocess.run(
            [sys.executable, "-m", "heli.testing._export_zoo", name, str(tmp)],
            capture_output=True, text=True,
        )
        if result.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise HeliError(
                f"Exporting the zoo model {name!r} to ONNX failed (it needs torch==2.13.0): "
                f"{result.stderr.strip()[-800:]}"
            )
        os.replace(tmp, target)
    return target


def resnet18_onnx() -> Path:
    """ResNet-18 (seeded random weights) as ONNX: ``input`` [batch, 3, 224, 224]."""
    return _zoo_model("resnet18")


def mobilenetv2_onnx() -> Path:
    """MobileNetV2 (seeded random weights) as ONNX: ``input`` [batch, 3, 224, 224]."""
    return _zoo_model("mobilenetv2")


def bert_base_onnx() -> Path:
    """The BERT-base encoder (seeded random weights) as ONNX: ``input_ids`` and
    ``attention_mask`` int64 [batch, seq]."""
    return _zoo_model("bert_base")
