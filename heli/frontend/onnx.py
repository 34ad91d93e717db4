"""ONNX importer: ``ModelProto`` (or a path, or bytes) → Heli :class:`Graph`.

Old opset forms are upgraded to the newest semantics (``_upgrade``), so the
rest of Heli knows one meaning per op.  ``Constant`` nodes become graph
constants.  Every op of the model is checked up front, and all unsupported
ops are reported together.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from heli._errors import HeliError, ModelLoadError, ShapeError, UnsupportedError
from heli.frontend._upgrade import RENAMED, upgrade_node
from heli.ir._builder import GraphBuilder
from heli.ir._graph import Graph, Value
from heli.ir._limits import size_problem
from heli.ir._ops import find_op
from heli.ir._types import DType, OptionalType, SequenceType, TensorType, Type

__all__ = ["import_onnx", "load_onnx", "MAX_OPSET", "MIN_OPSET"]

MIN_OPSET = 1
MAX_OPSET = onnx.defs.onnx_opset_version()


def load_onnx(source: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Read an ONNX model from a path, bytes or a ModelProto, with clear errors."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, bytes):
        return _parse(source, "<bytes>")
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"The model file {str(path)!r} does not exist.")
    if path.is_dir():
        raise ModelLoadError(f"The model path {str(path)!r} is a directory, not an ONNX file.")
    if not path.is_file():  # a FIFO or a device such as /dev/zero would never end
        raise ModelLoadError(f"The model path {str(path)!r} is not a regular file.")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelLoadError(
            f"The model file {str(path)!r} cannot be read: {_sentence(error)}"
        ) from None
    model = _parse(data, str(path))
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as error:
        raise ModelLoadError(
            f"The external data of model {str(path)!r} cannot be loaded: {_sentence(error)}"
        ) from None
    return model


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"The model file {where!r} is empty.")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ModelLoadError(
            f"The model file {where!r} is not a valid ONNX protobuf (it may be truncated "
            f"or not an ONNX file): {_sentence(error)}"
        ) from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError(
            f"The model file {where!r} holds no ONNX graph (it may be truncated or not an "
            "ONNX file)."
        )
    return model


def _check_text(message: Any) -> None:
    """Every string field must be text: protobuf hands back undecodable (corrupted)
    UTF-8 as ``bytes``, which would break every name lookup later on."""
    if isinstance(message, onnx.TensorProto):  # skip the data (ListFields would copy it)
        fields = [(_TENSOR_NAME, message.name)] if message.name else []
        fields += [(_TENSOR_EXTERNAL, message.external_data)] if message.external_data else []
    else:
        fields = message.ListFields()
    for field, value in fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            for item in (value if field.is_repeated else [value]):
                if isinstance(item, bytes):
                    shown = item if len(item) <= 40 else item[:40] + b"..."
                    raise ModelLoadError(
                        f"The model holds text that is not valid UTF-8 "
                        f"({field.containing_type.name}.{field.name} = {shown!r}); the file "
                        "may be corrupted."
                    )
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if field.is_repeated else [value]):
                _check_text(item)


_TENSOR_NAME = onnx.TensorProto.DESCRIPTOR.fields_by_name["name"]
_TENSOR_EXTERNAL = onnx.TensorProto.DESCRIPTOR.fields_by_name["external_data"]


def import_onnx(source: str | os.PathLike | bytes | onnx.ModelProto) -> Graph:
    """Import an ONNX model as a Heli graph (types inferred, old opsets upgraded)."""
    model = load_onnx(source)
    _check_text(model)
    opset = _default_opset(model)
    _check_supported(model.graph, opset)
    try:
        return _Importer(opset).graph(model.graph, outer={})
    except HeliError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            UnicodeDecodeError, MemoryError) as error:
        # Malformed protos (wrong field kinds, bad tensor sizes) end up here.
        raise ModelLoadError(
            "The model is malformed and cannot be imported: "
            f"{type(error).__name__}: {_sentence(error)}"
        ) from None


def _default_opset(model: onnx.ModelProto) -> int:
    versions = {o.domain: o.version for o in model.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None:
        if model.opset_import:
            return MAX_OPSET  # only custom domains: use newest default semantics
        raise ModelLoadError("The model declares no opset_import, so its ops cannot be read.")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedError(
            f"The model uses ONNX opset {opset}; Heli supports opsets {MIN_OPSET} to {MAX_OPSET}."
        )
    return opset


# -- the unsupported-op check -------------------------------------------------


def _check_supported(graph: onnx.GraphProto, opset: int) -> None:
    problems: list[str] = []
    for node in _all_nodes(graph):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        op_type = RENAMED.get(node.op_type, node.op_type)
        if find_op(op_type, node.domain) is None:
            domain = f" in domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
            problems.append(
                f"{node.op_type}{domain} (node {node.name or '<unnamed>'!r}, opset {opset})"
            )
    if problems:
        unique = list(dict.fromkeys(problems))
        raise UnsupportedError(
            f"The model uses {len(unique)} unsupported op(s): " + "; ".join(unique) + "."
        )


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


# -- conversion ---------------------------------------------------------------


class _Importer:
    def __init__(self, opset: int) -> None:
        self.opset = opset
        self._unknown = 0

    def graph(self, proto: onnx.GraphProto, outer: Mapping[str, Type], sub: bool = False
              ) -> Graph:
        builder = GraphBuilder(proto.name or "main", self.opset, outer, lenient=sub)
        initializers = {t.name: t for t in proto.initializer}
        for sparse in proto.sparse_initializer:
            initializers[sparse.values.name] = sparse
        for inp in proto.input:
            if inp.name not in initializers:  # an input with an initializer is a constant
                builder.add_input(inp.name, self.type(inp.type, inp.name))
        for name, tensor in initializers.items():
            builder.add_constant(tensor_to_array(tensor), name)
        for node in _topological(proto, builder):
            self.node(node, builder)
        outputs = []
        for out in proto.output:
            value = builder.lookup(out.name)
            if value is None:
                raise ModelLoadError(f"The graph output {out.name!r} is not produced by any node.")
            if value.type is None and out.HasField("type"):
                value = Value(value.name, self.type(out.type, out.name))
            outputs.append(value)
        return builder.build(outputs)

    def node(self, node: onnx.NodeProto, builder: GraphBuilder) -> None:
        label = node.name or (node.output[0] if node.output else node.op_type)
        attrs = {a.name: self.attribute(a, builder, label) for a in node.attribute}
        inputs: list[Value | None] = []
        for name in node.input:
            if not name:
                inputs.append(None)
                continue
            value = builder.lookup(name)
            if value is None:
                raise ModelLoadError(
                    f"{node.op_type} node {label!r} reads the value {name!r}, which nothing "
                    "defines."
                )
            inputs.append(value)
        _check_input_types(node, self.opset, inputs, label)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            if len(node.output) != 1 or not node.output[0]:
                raise ModelLoadError(f"Constant node {label!r} must have exactly one output, "
                                     f"not {list(node.output)!r}.")
            builder.add_constant(_constant_value(attrs, label), node.output[0])
            return
        upgrade_node(builder, node.op_type, node.domain, self.opset, inputs, attrs,
                     name=node.name, output_names=list(node.output))

    def attribute(self, attr: onnx.AttributeProto, builder: GraphBuilder, label: str) -> Any:
        kind = attr.type
        A = onnx.AttributeProto
        if kind == A.FLOAT:
            return float(attr.f)
        if kind == A.INT:
            return int(attr.i)
        if kind == A.STRING:
            return _text(attr.s)
        if kind == A.TENSOR:
            return tensor_to_array(attr.t)
        if kind == A.SPARSE_TENSOR:
            return tensor_to_array(attr.sparse_tensor)
        if kind == A.GRAPH:
            return self.graph(attr.g, self._visible_types(builder), sub=True)
        if kind == A.FLOATS:
            return tuple(float(f) for f in attr.floats)
        if kind == A.INTS:
            return tuple(int(i) for i in attr.ints)
        if kind == A.STRINGS:
            return tuple(_text(s) for s in attr.strings)
        if kind == A.TENSORS:
            return tuple(tensor_to_array(t) for t in attr.tensors)
        if kind == A.GRAPHS:
            return tuple(self.graph(g, self._visible_types(builder), sub=True)
                         for g in attr.graphs)
        if kind == A.TYPE_PROTO:
            return self.type(attr.tp, attr.name)
        if kind == A.TYPE_PROTOS:
            return tuple(self.type(t, attr.name) for t in attr.type_protos)
        raise ModelLoadError(
            f"Attribute {attr.name!r} of node {label!r} has an unknown or missing type ({kind!r})."
        )

    @staticmethod
    def _visible_types(builder: GraphBuilder) -> dict[str, Type]:
        return {**builder.outer_types, **{k: v.type for k, v in builder._values.items()}}

    def type(self, proto: onnx.TypeProto, where: str) -> Type | None:
        which = proto.WhichOneof("value")
        if which == "tensor_type":
            tt = proto.tensor_type
            if tt.elem_type == 0:
                return None
            dtype = DType.from_onnx(tt.elem_type)
            if not tt.HasField("shape"):
                return TensorType(dtype, None)
            return TensorType(dtype, tuple(self.dim(d) for d in tt.shape.dim))
        if which == "sequence_type":
            return SequenceType(self.type(proto.sequence_type.elem_type, where))
        if which == "optional_type":
            return OptionalType(self.type(proto.optional_type.elem_type, where))
        if which is None:
            return None
        raise UnsupportedError(
            f"The value {where!r} has type {which!r}, which Heli does not support."
        )

    def dim(self, dim: onnx.TensorShapeProto.Dimension) -> int | str:
        which = dim.WhichOneof("value")
        if which == "dim_value" and dim.dim_value >= 0:
            return int(dim.dim_value)
        # Some exporters write "?" for every unknown dimension: those are not
        # one shared symbol, so each gets a fresh name.
        if which == "dim_param" and dim.dim_param and dim.dim_param not in ("?", "-1"):
            return dim.dim_param
        self._unknown += 1
        return f"unk__{self._unknown}"


def tensor_to_array(tensor: onnx.TensorProto | onnx.SparseTensorProto) -> np.ndarray:
    """An ONNX tensor as a numpy array (exotic float types as ml_dtypes)."""
    if isinstance(tensor, onnx.SparseTensorProto):
        values = tensor_to_array(tensor.values)
        indices = tensor_to_array(tensor.indices)
        name = tensor.values.name
        _check_dims(tensor.dims, name)
        dense = np.zeros(tuple(tensor.dims), dtype=values.dtype)
        try:
            if indices.ndim == 1:
                dense.reshape(-1)[indices.astype(np.int64)] = values
            else:
                dense[tuple(indices.astype(np.int64).T)] = values
        except (IndexError, ValueError, TypeError) as error:
            raise ModelLoadError(
                f"The sparse tensor {name!r} has indices that do not fit its dims "
                f"{list(tensor.dims)!r} and values: {_sentence(error)}"
            ) from None
        return dense
    if tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.raw_data:
        raise ModelLoadError(
            f"The tensor {tensor.name!r} keeps its data in an external file that was not loaded."
        )
    if tensor.data_type == onnx.TensorProto.UNDEFINED:
        raise ModelLoadError(f"The tensor {tensor.name!r} has no element type (UNDEFINED).")
    dtype = DType.from_onnx(tensor.data_type)  # clear error for unknown codes
    _check_dims(tensor.dims, tensor.name)
    problem = size_problem(tensor.dims, dtype.np)
    if problem is not None:
        raise ModelLoadError(f"The tensor {tensor.name!r} is too large: {problem}")
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError, IndexError, OverflowError) as error:
        # Mostly raw_data or a typed data field whose length does not fit the dims.
        count = math.prod(tensor.dims)
        raise ModelLoadError(
            f"The tensor {tensor.name!r} does not hold the {count} {dtype} value(s) its dims "
            f"{list(tensor.dims)!r} call for (its data may be truncated): {_sentence(error)}"
        ) from None
    if array.dtype == object:
        array = np.array([_text(s) if isinstance(s, bytes) else s for s in array.ravel()],
                         dtype=object).reshape(array.shape)
    return array


def _sentence(error: BaseException) -> str:
    """An exception's message as the end of a sentence (one final period)."""
    return str(error).strip().rstrip(".") + "."


def _check_dims(dims: Any, name: str) -> None:
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"The tensor {name!r} has a negative dimension in {list(dims)!r}.")


def _constant_value(attrs: dict[str, Any], label: str) -> np.ndarray:
    if len(attrs) != 1:
        raise ModelLoadError(
            f"Constant node {label!r} must have exactly one value attribute, "
            f"not {sorted(attrs)!r}."
        )
    (key, value), = attrs.items()
    makers = {
        "value": lambda v: v,
        "sparse_value": lambda v: v,
        "value_float": lambda v: np.array(v, dtype=np.float32),
        "value_floats": lambda v: np.array(v, dtype=np.float32),
        "value_int": lambda v: np.array(v, dtype=np.int64),
        "value_ints": lambda v: np.array(v, dtype=np.int64),
        "value_string": lambda v: np.array(v, dtype=object),
        "value_strings": lambda v: np.array(v, dtype=object),
    }
    if key not in makers:
        raise ModelLoadError(f"Constant node {label!r} has the unknown attribute {key!r}.")
    if not _CONSTANT_KINDS[key](value):
        raise ModelLoadError(
            f"Constant node {label!r} has attribute {key!r} of the wrong kind "
            f"({type(value).__name__})."
        )
    return makers[key](value)


def _all_of(kind: type | tuple[type, ...]):
    return lambda v: isinstance(v, tuple) and all(isinstance(x, kind) for x in v)


# What each value attribute of Constant must hold (as the importer converts it).
_CONSTANT_KINDS = {
    "value": lambda v: isinstance(v, np.ndarray),
    "sparse_value": lambda v: isinstance(v, np.ndarray),
    "value_float": lambda v: isinstance(v, float),
    "value_floats": _all_of(float),
    "value_int": lambda v: isinstance(v, int),
    "value_ints": _all_of(int),
    "value_string": lambda v: isinstance(v, str),
    "value_strings": _all_of(str),
}


# -- input types against the ONNX schema --------------------------------------


def _check_input_types(node: onnx.NodeProto, opset: int, inputs: list[Value | None],
                       label: str) -> None:
    """Input types against the type constraints of the node's ONNX schema.

    ONNX Runtime refuses such models when it loads them; without this check a
    float tensor used as a shape, or an Add of float and int64, would reach
    the op's inference and reference code, which rely on the schema.
    """
    schema = _schema(node.op_type, opset, node.domain)
    if schema is None or not schema.inputs:
        return
    if len(inputs) > schema.max_input:
        raise ShapeError(
            f"{node.op_type} node {label!r} has {len(inputs)} inputs, but {node.op_type} in "
            f"opset {opset} takes at most {schema.max_input}."
        )
    formals = list(schema.inputs)
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    seen: dict[str, tuple[int, str]] = {}  # type parameter -> (input index, its type)
    for index, value in enumerate(inputs):
        if index >= len(formals) and formals[-1].option != _VARIADIC:
            return  # too many inputs: the arity check reports it
        formal = formals[min(index, len(formals) - 1)]
        if value is None and formal.option != _OPTIONAL:
            raise ShapeError(
                f"{node.op_type} node {label!r} leaves input {index} ({formal.name!r}) empty, "
                "but it is not optional."
            )
        got = _type_string(value.type) if value is not None else None
        if got is None:
            continue
        param = formal.type_str
        accepted = allowed.get(param, {param})
        where = f"{node.op_type} node {label!r}: input {index} ({formal.name!r})"
        if got not in accepted:
            shown = sorted(accepted)
            listed = ", ".join(shown[:8])
            if len(shown) > 8:
                listed += f" and {len(shown) - 8} more"
            raise ShapeError(
                f"{where} has type {got}, which {node.op_type} (opset {opset}) does not accept; "
                f"it takes {listed}."
            )
        if param not in allowed:
            continue  # a fixed type, not a type parameter
        homogeneous = formal.option != _VARIADIC or formal.is_homogeneous
        if param in seen and homogeneous and seen[param][1] != got:
            first, first_type = seen[param]
            raise ShapeError(
                f"{where} has type {got}, but input {first} has type {first_type}; "
                f"{node.op_type} needs both of the same type ({param})."
            )
        if homogeneous:
            seen.setdefault(param, (index, got))


_VARIADIC = onnx.defs.OpSchema.FormalParameterOption.Variadic
_OPTIONAL = onnx.defs.OpSchema.FormalParameterOption.Optional
_SCHEMAS: dict[tuple[str, int, str], Any] = {}


def _schema(op_type: str, opset: int, domain: str) -> Any:
    domain = "" if domain == "ai.onnx" else domain
    key = (op_type, opset if domain == "" else MAX_OPSET, domain)
    if key not in _SCHEMAS:
        try:
            _SCHEMAS[key] = onnx.defs.get_schema(op_type, key[1], domain)
        except onnx.defs.SchemaError:
            _SCHEMAS[key] = None  # unknown here (a newer op, a custom domain): no check
    return _SCHEMAS[key]


def _type_string(vtype: Type | None) -> str | None:
    """The ONNX type string of a Heli type (``tensor(float)``), None if unknown."""
    if isinstance(vtype, TensorType):
        return f"tensor({onnx.TensorProto.DataType.Name(vtype.dtype.onnx).lower()})"
    if isinstance(vtype, SequenceType | OptionalType):
        inner = _type_string(vtype.elem)
        kind = "seq" if isinstance(vtype, SequenceType) else "optional"
        return f"{kind}({inner})" if inner is not None else None
    return None


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def _topological(proto: onnx.GraphProto, builder: GraphBuilder) -> list[onnx.NodeProto]:
    """The nodes in an order where each one's inputs are defined first.

    ONNX requires topological order, but some exporters do not honour it.  Kahn's
    algorithm, taking the earliest ready node first: a sorted graph keeps its
    order, and a badly ordered one costs O(n log n), not O(n^2).
    """
    defined = set(builder._values) | set(builder.outer_types) | {""}
    nodes = list(proto.node)
    needs: list[set[str]] = []
    waiting: dict[str, list[int]] = {}
    ready: list[int] = []
    for index, node in enumerate(nodes):
        required = {n for n in node.input if n not in defined} | _captured(node, defined)
        needs.append(required)
        for name in required:
            waiting.setdefault(name, []).append(index)
        if not required:
            heapq.heappush(ready, index)
    ordered = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        ordered.append(node)
        for name in node.output:
            if name in defined:
                continue
            defined.add(name)
            for waiter in waiting.pop(name, ()):
                needs[waiter].discard(name)
                if not needs[waiter]:
                    heapq.heappush(ready, waiter)
    if len(ordered) < len(nodes):
        index = next(i for i, required in enumerate(needs) if required)
        node, missing = nodes[index], sorted(needs[index])
        label = node.name or (node.output[0] if node.output else node.op_type)
        raise ModelLoadError(
            f"{node.op_type} node {label!r} reads {missing[0]!r}, which no node, input or "
            "initializer defines (or the graph has a cycle)."
        )
    return ordered


def _captured(node: onnx.NodeProto, defined: set[str]) -> set[str]:
    """Values the node's subgraphs read from the enclosing scope, not yet defined:
    they must exist before the node, like its inputs."""
    found: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = set()
            for sub in _all_graphs(g):
                local |= {i.name for i in sub.input} | {t.name for t in sub.initializer}
                local |= {o for n in sub.node for o in n.output}
            found |= {i for n in _all_nodes(g) for i in n.input
                      if i and i not in local and i not in defined}
    return found


def _all_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_graphs(g)
