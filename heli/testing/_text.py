"""Real inputs for the OCR models: rendered text lines and CTC decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
)


def _font(size: int):
    from PIL import ImageFont

    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def render_text(text: str, height: int = 48, width: int = 320, font_size: int = 28,
                rotate: bool = False) -> np.ndarray:
    """A white ``height`` × ``width`` RGB image (uint8, HWC) with black ``text``."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    y = (height - (bottom - top)) // 2 - top
    draw.text((6, y), text, fill="black", font=font)
    if rotate:
        image = image.rotate(180)
    return np.asarray(image)


def ocr_input(image: np.ndarray) -> np.ndarray:
    """PP-OCR normalization: HWC uint8 → NCHW float32 in [-1, 1]."""
    chw = image.astype(np.float32).transpose(2, 0, 1) / 255.0
    return ((chw - 0.5) / 0.5)[None]


def rec_characters(model_path: str | Path) -> list[str]:
    """The recognition model's character list (from its ONNX metadata)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return meta["character"].splitlines()


def ctc_decode(probs: np.ndarray, characters: list[str]) -> list[str]:
    """Greedy CTC decoding of ``[batch, time, classes]`` (class 0 = blank)."""
    table = ["", *characters, " "]
    texts = []
    for row in probs.argmax(axis=-1):
        chars, previous = [], 0
        for index in row:
            if index != previous and index != 0 and index < len(table):
                chars.append(table[index])
            previous = index
        texts.append("".join(chars))
    return texts
