"""Heli's graph IR: types, values, nodes, graphs, the op registry, the
builder, the verifier, the text printer and ONNX export."""

from heli.ir._builder import GraphBuilder, rebuild
from heli.ir._export import save_onnx, to_onnx
from heli.ir._graph import Graph, Node, Value, free_names, reads_of, subgraphs_of
from heli.ir._ops import (
    REQUIRED,
    Attr,
    AttrSpec,
    AttrType,
    ExecContext,
    InferContext,
    OpDef,
    all_ops,
    find_op,
    get_op,
    op,
)
from heli.ir._printer import format_graph
from heli.ir._types import DType, OptionalType, SequenceType, TensorType, Type, tensor_type_of
from heli.ir._verify import verify

__all__ = [
    "REQUIRED",
    "Attr",
    "AttrSpec",
    "AttrType",
    "DType",
    "ExecContext",
    "Graph",
    "GraphBuilder",
    "InferContext",
    "Node",
    "OpDef",
    "OptionalType",
    "SequenceType",
    "TensorType",
    "Type",
    "Value",
    "all_ops",
    "format_graph",
    "free_names",
    "reads_of",
    "save_onnx",
    "to_onnx",
    "verify",
    "find_op",
    "get_op",
    "op",
    "rebuild",
    "subgraphs_of",
    "tensor_type_of",
]
