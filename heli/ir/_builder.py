"""GraphBuilder: the one way graphs are made.

The builder runs each op's type inference as nodes are added, so every value
of a built graph carries its inferred type.  The importer uses it, and so do
passes (through :func:`rebuild`), which is why a pass never has to update
types by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from heli._errors import HeliError, ModelLoadError, ShapeError
from heli.ir._graph import Graph, Node, Value, free_names, freeze, subgraphs_of
from heli.ir._limits import size_problem
from heli.ir._ops import AttrType, InferContext, OpDef, get_op
from heli.ir._types import TensorType, Type, tensor_type_of


class GraphBuilder:
    """Accumulates inputs, constants and nodes, then :meth:`build` s a Graph."""

    def __init__(
        self, name: str = "main", opset: int = 0, outer_types: Mapping[str, Type] | None = None,
        *, lenient: bool = False,
    ) -> None:
        self.name = name
        self.opset = opset
        # Lenient (for subgraphs): a node whose inference rejects its input
        # types gets unknown output types, since it may never run (the branch
        # of an If not taken for these shapes); running it raises the error.
        self.lenient = lenient
        self.outer_types = dict(outer_types or {})
        self.inputs: list[Value] = []
        self.constants: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self._values: dict[str, Value] = {}
        self._reserved: set[str] = set()
        self._counter = 0
        # During rebuild(): the new value standing for each old value name.
        self.env: dict[str, Value | None] = {}

    # -- names ---------------------------------------------------------------
    def fresh_name(self, hint: str = "v") -> str:
        """A value name not used yet in this graph (or the enclosing ones)."""
        hint = hint or "v"
        candidate = hint
        while self._taken(candidate) or candidate in self._reserved:
            self._counter += 1
            candidate = f"{hint}_{self._counter}"
        self._reserved.add(candidate)  # two calls before either name is defined differ
        return candidate

    def reserve(self, names: Iterable[str]) -> None:
        """Keep :meth:`fresh_name` from handing out ``names`` (defined later)."""
        self._reserved.update(names)

    def _taken(self, name: str) -> bool:
        return name in self._values or name in self.outer_types

    def _define(self, value: Value) -> Value:
        if value.name in self._values:
            raise ModelLoadError(f"The value name {value.name!r} is defined more than once.")
        self._values[value.name] = value
        return value

    # -- definitions ---------------------------------------------------------
    def add_input(self, name: str, type: Type | None) -> Value:
        value = self._define(Value(name, type))
        self.inputs.append(value)
        return value

    def add_constant(self, array: np.ndarray, name: str | None = None) -> Value:
        array = np.asarray(array)
        name = name if name is not None else self.fresh_name("const")
        value = self._define(Value(name, tensor_type_of(array)))
        array = array.view()
        array.flags.writeable = False
        self.constants[name] = array
        return value

    def constant_value(self, value: Value | None) -> np.ndarray | None:
        if value is None:
            return None
        return self.constants.get(value.name)

    def current(self, old: Value | None) -> Value | None:
        """During :func:`rebuild`: the value that now stands for ``old``."""
        if old is None:
            return None
        if old.name in self.env:
            return self.env[old.name]
        return self.lookup(old.name)

    def lookup(self, name: str) -> Value | None:
        if name in self._values:
            return self._values[name]
        if name in self.outer_types:
            return Value(name, self.outer_types[name])
        return None

    def add_node(
        self,
        op: OpDef | str,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        *,
        name: str = "",
        num_outputs: int | None = None,
        output_names: Sequence[str | None] | None = None,
    ) -> tuple[Value | None, ...]:
        """Add a node, infer its output types and return its output values.

        ``output_names`` entries that are ``None`` or ``""`` mark omitted
        optional outputs.
        """
        opdef = get_op(op) if isinstance(op, str) else op
        inputs = list(inputs)
        while inputs and inputs[-1] is None:  # trailing omitted optionals
            inputs.pop()
        if output_names is None:
            count = num_outputs if num_outputs is not None else opdef.min_outputs
            base = name or opdef.name.lower()
            output_names = [self.fresh_name(base) for _ in range(count)]
        label = name or (output_names[0] if output_names and output_names[0] else opdef.name)
        self._check_arity(opdef, label, inputs, len(output_names))
        attrs = dict(attrs or {})
        unknown = sorted(set(attrs) - set(opdef.attrs))
        if unknown:
            raise ModelLoadError(
                f"{opdef.name} node {label!r} has unknown attribute(s) {unknown!r}; "
                f"{opdef.name} accepts {sorted(opdef.attrs)!r}."
            )
        for attr_name, attr_value in attrs.items():
            _check_attr_kind(opdef, label, attr_name, attr_value)
        types = self._infer(opdef, label, inputs, attrs, len(output_names))
        outputs = tuple(
            self._define(Value(out_name, out_type)) if out_name else None
            for out_name, out_type in zip(output_names, types, strict=True)
        )
        self.nodes.append(Node(opdef, tuple(inputs), outputs, freeze(attrs), name))
        return outputs

    def _check_arity(
        self, opdef: OpDef, label: str, inputs: list[Value | None], n_out: int
    ) -> None:
        n_in = len(inputs)

        def fits(n: int, low: int, high: int | None) -> bool:
            return n >= low and (high is None or n <= high)

        if not fits(n_in, opdef.min_inputs, opdef.max_inputs):
            raise ShapeError(
                f"{opdef.name} node {label!r} has {n_in} inputs; it takes "
                f"{_arity(opdef.min_inputs, opdef.max_inputs)}."
            )
        missing = [i for i in range(opdef.min_inputs) if inputs[i] is None]
        if missing:
            raise ShapeError(
                f"{opdef.name} node {label!r} leaves its required input {missing[0]} empty."
            )
        if not fits(n_out, opdef.min_outputs, opdef.max_outputs):
            raise ShapeError(
                f"{opdef.name} node {label!r} has {n_out} outputs; it gives "
                f"{_arity(opdef.min_outputs, opdef.max_outputs)}."
            )

    def _infer(
        self, opdef: OpDef, label: str, inputs: list[Value | None], attrs: dict, n_out: int
    ) -> list[Type | None]:
        try:
            resolved = opdef.resolve_attrs(attrs)
        except ShapeError as error:
            raise ShapeError(f"{opdef.name} node {label!r}: {error}") from None
        ctx = InferContext(
            node_name=label,
            op=opdef,
            input_types=tuple(v.type if v is not None else None for v in inputs),
            attrs=resolved,
            num_outputs=n_out,
            constants=tuple(self.constant_value(v) for v in inputs),
            outer_types=_VisibleTypes(self),
        )
        try:
            types = list(opdef.infer(ctx))
        except HeliError as error:
            if not (self.lenient and isinstance(error, ShapeError)):
                raise
            types = []
        except Exception as error:  # a malformed model trips an inference rule
            if not self.lenient:
                shown = ", ".join(str(t) if t is not None else "-" for t in ctx.input_types)
                raise ShapeError(
                    f"{opdef.name} node {label!r}: type inference failed on inputs ({shown}) "
                    f"({type(error).__name__}: {error}); its inputs or attributes are probably "
                    "malformed."
                ) from None
            types = []
        types += [None] * (n_out - len(types))
        types = types[:n_out]
        for index, out_type in enumerate(types):
            _check_output_size(opdef, label, index if n_out > 1 else None, out_type)
        return types

    # -- finishing -----------------------------------------------------------
    def build(
        self, outputs: Sequence[Value], output_names: Sequence[str] | None = None
    ) -> Graph:
        """The graph returning ``outputs``, renamed to ``output_names`` if given.

        A renamed output whose producer is a node of this graph is renamed in
        place; otherwise (an input or constant returned directly, or one value
        returned twice) an Identity keeps both names.
        """
        outputs = list(outputs)
        if output_names is not None:
            for i, (value, wanted) in enumerate(zip(outputs, output_names, strict=True)):
                if value.name != wanted:
                    outputs[i] = self._rename_output(value, wanted, outputs)
        constants = {k: v for k, v in self.constants.items()}
        return Graph(
            inputs=tuple(self.inputs),
            outputs=tuple(outputs),
            nodes=tuple(self.nodes),
            constants=constants,
            name=self.name,
            opset=self.opset,
        )

    def _rename_output(self, value: Value, wanted: str, outputs: list[Value]) -> Value:
        producer = next(
            (i for i, n in enumerate(self.nodes) if any(o is not None and o.name == value.name
                                                          for o in n.outputs)),
            None,
        )
        returned_twice = sum(1 for o in outputs if o.name == value.name) > 1
        if producer is None or returned_twice or self._taken(wanted):
            if self._taken(wanted):
                # The wanted name is held by a value we no longer return: free it.
                held = self._values.get(wanted)
                if held is not None and held not in self.inputs and wanted not in self.constants:
                    self._rename_everywhere(wanted, self.fresh_name(wanted + "_old"))
                else:
                    raise ShapeError(f"Cannot name a graph output {wanted!r}: the name is taken.")
            (renamed,) = self.add_node("Identity", [value], output_names=[wanted])
            return renamed
        return self._rename_everywhere(value.name, wanted)

    def _rename_everywhere(self, old: str, new: str) -> Value:
        value = self._values.pop(old)
        renamed = value.replace(name=new)
        self._values[new] = renamed

        def swap(v: Value | None) -> Value | None:
            return renamed if v is not None and v.name == old else v

        self.nodes = [
            n.replace(inputs=tuple(map(swap, n.inputs)), outputs=tuple(map(swap, n.outputs)))
            for n in self.nodes
        ]
        return renamed


_INTEGER = (int, np.integer)
_NUMBER = (int, float, np.integer, np.floating)


def _is_sequence_of(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else None
    return isinstance(value, tuple | list) and all(isinstance(v, kinds) for v in value)


# The Python classes an attribute value of each kind may have: one value for
# the scalar kinds, a sequence of them for the list kinds.
_SCALAR_FORMS: dict[AttrType, Any] = {
    AttrType.INT: _INTEGER,
    AttrType.FLOAT: _NUMBER,
    AttrType.STRING: str,
    AttrType.TENSOR: (np.ndarray, np.generic),
    AttrType.GRAPH: Graph,
    AttrType.TYPE: Type,
}
_SEQUENCE_FORMS: dict[AttrType, Any] = {
    AttrType.INTS: _INTEGER,
    AttrType.FLOATS: _NUMBER,
    AttrType.STRINGS: (str,),
    AttrType.TENSORS: (np.ndarray, np.generic),
    AttrType.GRAPHS: (Graph,),
    AttrType.TYPES: (Type,),
}


def _attr_fits(kind: AttrType, value: Any) -> bool:
    """Whether ``value`` has the Python form of an attribute of ``kind``."""
    if kind in _SCALAR_FORMS:
        return isinstance(value, _SCALAR_FORMS[kind])
    if kind in _SEQUENCE_FORMS:
        return _is_sequence_of(value, _SEQUENCE_FORMS[kind])
    return True


def _check_attr_kind(opdef: OpDef, label: str, name: str, value: Any) -> None:
    """An attribute of the wrong kind (a float where an int belongs, a string
    for a list) is a malformed model; inference and the reference function may
    rely on the declared kind."""
    spec = opdef.attrs[name]
    if value is None and spec.default is None:
        return  # "not given", where that is what the default means
    if value is not None and _attr_fits(spec.type, value):
        return
    kind = spec.type
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise ModelLoadError(
        f"{opdef.name} node {label!r} has attribute {name!r} = {shown}, which is not of the "
        f"kind {opdef.name} expects ({kind.value})."
    )


class _VisibleTypes(Mapping[str, Type | None]):
    """A read-only view of the types of every value a node can see (this
    graph's and the enclosing graphs'); a view, so adding a node stays O(1)."""

    def __init__(self, builder: GraphBuilder) -> None:
        self._builder = builder

    def __getitem__(self, name: str) -> Type | None:
        value = self._builder._values.get(name)
        if value is not None:
            return value.type
        return self._builder.outer_types[name]

    def __iter__(self):
        yield from self._builder._values
        yield from (n for n in self._builder.outer_types if n not in self._builder._values)

    def __len__(self) -> int:
        return len(set(self._builder._values) | set(self._builder.outer_types))


def _check_output_size(
    opdef: OpDef, label: str, index: int | None, out_type: Type | None
) -> None:
    """A statically known output too large to ever allocate is a shape error now
    (see :mod:`heli.ir._limits`), not an out-of-memory failure at run time."""
    if not isinstance(out_type, TensorType) or not out_type.is_static:
        return
    if any(d < 0 for d in out_type.shape):  # type: ignore[union-attr]
        return  # left to the op's own checks
    problem = size_problem(out_type.shape, out_type.dtype.np)  # type: ignore[arg-type]
    if problem is not None:
        which = f"its output {index} would be" if index is not None else "its output would be"
        raise ShapeError(f"{opdef.name} node {label!r} is impossible: {which} {problem}")


def _arity(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low}"
    return f"exactly {low}" if low == high else f"{low} to {high}"


NodeVisitor = Callable[[GraphBuilder, Node, list], "Sequence[Value | None] | None"]


def rebuild(
    graph: Graph,
    visit: NodeVisitor | None = None,
    *,
    input_types: Mapping[str, Type] | None = None,
    outer_types: Mapping[str, Type] | None = None,
) -> Graph:
    """Copy ``graph`` node by node through a builder, re-inferring types.

    ``visit(builder, node, new_inputs)`` may add replacement nodes and return
    the values that stand for ``node``'s outputs, or return ``None`` to keep
    the node as it is.  Output names of the graph are preserved.
    """
    builder = GraphBuilder(graph.name, graph.opset, outer_types)
    builder.reserve(graph.values())
    captured = {name for node in graph.nodes for sub in subgraphs_of(node)
                for name in free_names(sub)}
    env = builder.env
    for value in graph.inputs:
        new_type = (input_types or {}).get(value.name, value.type)
        env[value.name] = builder.add_input(value.name, new_type)
    for name, array in graph.constants.items():
        env[name] = builder.add_constant(array, name)

    def mapped(v: Value | None) -> Value | None:
        if v is None:
            return None
        if v.name in env:
            return env[v.name]
        return builder.lookup(v.name) or v  # defined in an enclosing graph

    for node in graph.nodes:
        new_inputs = [mapped(v) for v in node.inputs]
        replacement = visit(builder, node, new_inputs) if visit else None
        if replacement is None:
            replacement = builder.add_node(
                node.op, new_inputs, node.attrs, name=node.name,
                output_names=[o.name if o is not None else None for o in node.outputs],
            )
        replacement = tuple(replacement)
        if len(replacement) < len(node.outputs) and all(
            o is None for o in node.outputs[len(replacement):]
        ):  # a rewrite need not stand in for omitted trailing outputs
            replacement += (None,) * (len(node.outputs) - len(replacement))
        for old, new in zip(node.outputs, replacement, strict=True):
            if old is not None:
                if new is not None and new.name != old.name and old.name in captured:
                    # Subgraphs read outer values by name: keep the old name defined.
                    (new,) = builder.add_node("Identity", [new], output_names=[old.name])
                env[old.name] = new
    outputs = [env[v.name] if v.name in env else mapped(v) for v in graph.outputs]
    return builder.build(outputs, [v.name for v in graph.outputs])
