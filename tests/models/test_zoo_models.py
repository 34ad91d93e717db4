"""The model-zoo networks (ResNet-18, MobileNetV2, BERT-base; random seeded
weights, exported from PyTorch once into the cache) on `ref`, after the full
pass pipeline, against ONNX Runtime (rtol 1e-4, atol 1e-5) on seeded random
inputs, batch 1."""

from __future__ import annotations

import numpy as np
import pytest

import heli
from heli.testing import bert_base_onnx, mobilenetv2_onnx, resnet18_onnx
from tests.conftest import assert_close, run_onnxruntime

RTOL, ATOL = 1e-4, 1e-5
SEQ = 128


def check_against_ort(path, feeds, *, name):
    want = run_onnxruntime(str(path), feeds)
    model = heli.compile(str(path), input_shapes={k: v.shape for k, v in feeds.items()})
    got = model.run(feeds)
    assert set(got) == set(want)
    for output, value in want.items():
        assert_close(got[output], value, RTOL, ATOL, what=f"{name}:{output}")
    return model


@pytest.mark.parametrize("export", [resnet18_onnx, mobilenetv2_onnx],
                         ids=["resnet18", "mobilenetv2"])
def test_cnn(export):
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    model = check_against_ort(export(), {"input": image}, name=export.__name__)
    # The export keeps BatchNormalization; the pipeline folds every one into its Conv.
    ops = {node.op.name for node in model.graph.nodes}
    optimized = {node.op.name for node in model.specializations[((1, 3, 224, 224),)].graph.nodes}
    assert "BatchNormalization" in ops
    assert "BatchNormalization" not in optimized


def test_bert_base():
    rng = np.random.default_rng(0)
    length = 93  # real tokens; the rest is padding
    ids = np.zeros((1, SEQ), np.int64)
    ids[0, :length] = rng.integers(1000, 30522, length)
    ids[0, 0], ids[0, length - 1] = 101, 102  # [CLS] ... [SEP]
    mask = (np.arange(SEQ) < length).astype(np.int64)[None]
    check_against_ort(bert_base_onnx(), {"input_ids": ids, "attention_mask": mask},
                      name="bert_base")
