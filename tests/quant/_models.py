"""A small float CNN built with onnx.helper, and calibration data for it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def small_cnn(seed: int = 0, batch: int | str = 1) -> onnx.ModelProto:
    """Conv+Relu → MaxPool → Conv+Relu → GlobalAveragePool → Flatten → Gemm."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], std: float) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, std, shape).astype(np.float32), name)

    inits = [
        init("w1", (8, 3, 3, 3), 0.3), init("b1", (8,), 0.1),
        init("w2", (16, 8, 3, 3), 0.15), init("b2", (16,), 0.1),
        init("w3", (10, 16), 0.3), init("b3", (10,), 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def images(count: int, seed: int = 1) -> np.ndarray:
    """``count`` inputs of shape (1, 3, 16, 16): smooth patterns plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16] / 16.0
    out = []
    for _ in range(count):
        f = rng.uniform(1, 4, size=3)
        base = np.stack([np.sin(f[c] * (xx + yy) * np.pi + rng.uniform(0, 6)) for c in range(3)])
        out.append((base + rng.normal(0, 0.2, base.shape))[None].astype(np.float32))
    return np.stack(out)  # (count, 1, 3, 16, 16)
