"""Graph → ONNX export, so optimized graphs open in Netron and ONNX Runtime."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from heli.ir._graph import Graph
from heli.ir._types import OptionalType, SequenceType, TensorType, Type

__all__ = ["to_onnx", "save_onnx"]


def to_onnx(graph: Graph, *, opset: int | None = None) -> onnx.ModelProto:
    """An ONNX model equivalent to ``graph`` (newest-opset semantics).

    Graphs hold ops in their newest form, so the model declares the newest
    opset this onnx package knows unless ``opset`` says otherwise.
    """
    domains: dict[str, int] = {"": opset or onnx.defs.onnx_opset_version()}
    proto = _graph_proto(graph, domains)
    imports = [helper.make_opsetid(d, v) for d, v in sorted(domains.items())]
    model = helper.make_model(proto, opset_imports=imports, producer_name="heli")
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    return model


def save_onnx(graph: Graph, path: str | os.PathLike) -> None:
    """Write ``graph`` as an ONNX file (atomically: no half-written file)."""
    data = to_onnx(graph).SerializeToString()
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:  # a failed write or rename leaves no temporary file behind
        if os.path.exists(tmp):
            os.unlink(tmp)


def _graph_proto(graph: Graph, domains: dict[str, int]) -> onnx.GraphProto:
    nodes = []
    for node in graph.nodes:
        if node.op.domain:
            domains.setdefault(node.op.domain, 1)
        attrs = {k: _attr_value(v, domains) for k, v in node.attrs.items() if v is not None}
        nodes.append(
            helper.make_node(
                node.op.name,
                [v.name if v is not None else "" for v in node.inputs],
                [v.name if v is not None else "" for v in node.outputs],
                name=node.name or None,
                domain=node.op.domain or None,
                **attrs,
            )
        )
    initializers = [numpy_helper.from_array(np.asarray(a), name) for name, a in
                    graph.constants.items()]
    value_info = [
        _value_info(o.name, o.type)
        for n in graph.nodes for o in n.outputs
        if o is not None and o.type is not None and o.name not in {v.name for v in graph.outputs}
    ]
    return helper.make_graph(
        nodes,
        graph.name,
        [_value_info(v.name, v.type) for v in graph.inputs],
        [_value_info(v.name, v.type) for v in graph.outputs],
        initializer=initializers,
        value_info=value_info,
    )


def _attr_value(value: Any, domains: dict[str, int]) -> Any:
    if isinstance(value, Graph):
        return _graph_proto(value, domains)
    if isinstance(value, np.ndarray):
        return numpy_helper.from_array(value)
    if isinstance(value, Type):
        return _type_proto(value)
    if isinstance(value, tuple):
        return [_attr_value(v, domains) for v in value]
    return value


def _value_info(name: str, vtype: Type | None) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto(name=name)
    if vtype is not None:
        info.type.CopyFrom(_type_proto(vtype))
    return info


def _type_proto(vtype: Type) -> onnx.TypeProto:
    if isinstance(vtype, TensorType):
        shape = None if vtype.shape is None else [
            d if isinstance(d, int) else (None if d.startswith(("?", "unk__")) else d)
            for d in vtype.shape
        ]
        return helper.make_tensor_type_proto(vtype.dtype.onnx, shape)
    if isinstance(vtype, SequenceType):
        return helper.make_sequence_type_proto(_type_proto(vtype.elem))
    if isinstance(vtype, OptionalType):
        return helper.make_optional_type_proto(_type_proto(vtype.elem))
    raise TypeError(f"Cannot export the type {vtype!r} to ONNX.")
