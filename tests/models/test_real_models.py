"""Real models on `ref`, after the full pass pipeline, against ONNX Runtime
(rtol 1e-4, atol 1e-5) on real inputs (rendered text, real sentences) or,
for the `light` CNNs, seeded random inputs."""

from __future__ import annotations

import numpy as np
import pytest

import heli
from heli.conformance import light_models, random_feeds
from heli.testing import minilm_model_dir, minilm_onnx, ocr_input, ppocr_model, render_text
from tests.conftest import assert_close, run_onnxruntime

RTOL, ATOL = 1e-4, 1e-5

SENTENCES = [
    "Heli is an open compiler for AI accelerators.",
    "The quick brown fox jumps over the lazy dog.",
    "Small chip companies need shared infrastructure.",
]


def check_against_ort(path, feeds, *, name):
    want = run_onnxruntime(str(path), feeds)
    model = heli.compile(str(path), input_shapes={k: v.shape for k, v in feeds.items()})
    got = model.run(feeds)
    assert set(got) == set(want)
    for output, value in want.items():
        assert_close(got[output], value, RTOL, ATOL, what=f"{name}:{output}")
    return got


def test_ppocr_rec_reads_the_same_text():
    from heli.testing import ctc_decode, rec_characters

    path = ppocr_model("rec")
    feeds = {"x": np.concatenate([ocr_input(render_text(t)) for t in ("Heli 2026", "compiler")])}
    got = check_against_ort(path, feeds, name="rec")
    texts = ctc_decode(next(iter(got.values())), rec_characters(path))
    assert texts[0].replace(" ", "") == "Heli2026"


def test_ppocr_cls():
    feeds = {"x": ocr_input(render_text("Heli compiles models", width=192, font_size=20))}
    check_against_ort(ppocr_model("cls"), feeds, name="cls")


@pytest.mark.slow
def test_ppocr_det():
    page = np.full((320, 320, 3), 255, np.uint8)
    page[60:108] = render_text("Heli compiles PP-OCR", width=320)
    page[180:228] = render_text("合力 open NPU", width=320)
    check_against_ort(ppocr_model("det"), {"x": ocr_input(page)}, name="det")


def test_minilm_sentence_embeddings():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_model_dir() / "tokenizer.json"))
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in encodings], np.int64)
    feeds = {"input_ids": ids,
             "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
             "token_type_ids": np.zeros_like(ids)}
    check_against_ort(minilm_onnx(), feeds, name="minilm")


@pytest.mark.slow
@pytest.mark.parametrize("path", light_models(), ids=lambda p: p.stem)
def test_light_cnn(path):
    check_against_ort(path, random_feeds(str(path)), name=path.stem)
