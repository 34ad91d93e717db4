"""ONNX export of quantized graphs at an opset ONNX Runtime runs.

The onnx package's newest opset (28 for onnx 1.23) has a QuantizeLinear-28
that ONNX Runtime 1.32 has no kernel for; QDQ graphs are therefore written at
opset 25, whose QuantizeLinear / DequantizeLinear mean the same for what the
quantizer emits (int8 / int32, per-tensor and per-axis, no blocks).
"""

from __future__ import annotations

import os

import onnx

from heli.ir._export import to_onnx
from heli.ir._graph import Graph

QDQ_OPSET = 25


def to_qdq_onnx(graph: Graph) -> onnx.ModelProto:
    """``graph`` as an ONNX model at :data:`QDQ_OPSET` (or older, if newer)."""
    return to_onnx(graph, opset=min(QDQ_OPSET, onnx.defs.onnx_opset_version()))


def save_qdq_onnx(graph: Graph, path: str | os.PathLike) -> None:
    """Write ``graph`` as ONNX atomically (a temporary file, then a rename)."""
    data = to_qdq_onnx(graph).SerializeToString()
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
