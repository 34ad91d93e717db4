"""The IR verifier: checks the invariants every pass must keep."""

from __future__ import annotations

from collections.abc import Set

from heli._errors import VerificationError
from heli.ir._graph import Graph, subgraphs_of


def verify(graph: Graph, outer: Set[str] = frozenset()) -> None:
    """Raise VerificationError if ``graph`` breaks an invariant.

    Checked: every value is defined once; nodes are in topological order
    (each operand is defined before it is read: graph input, constant, an
    earlier node's output or a value of an enclosing graph); node arity and
    attribute names match the op; constants carry their data; outputs exist;
    subgraphs, recursively.
    """
    defined: set[str] = set()

    def define(name: str, where: str) -> None:
        if name in defined:
            raise VerificationError(f"The value {name!r} is defined twice ({where}).")
        defined.add(name)

    for value in graph.inputs:
        define(value.name, "graph input")
    for name in graph.constants:
        define(name, "constant")
    for index, node in enumerate(graph.nodes):
        label = f"{node.op.name} node #{index} {node.name!r}"
        for value in node.inputs:
            if value is not None and value.name not in defined and value.name not in outer:
                raise VerificationError(
                    f"{label} reads {value.name!r} before it is defined (or it is never defined)."
                )
        n_in, n_out = len(node.inputs), len(node.outputs)
        op = node.op
        if n_in < op.min_inputs or (op.max_inputs is not None and n_in > op.max_inputs):
            raise VerificationError(f"{label} has {n_in} inputs, outside the op's arity.")
        if n_out < op.min_outputs or (op.max_outputs is not None and n_out > op.max_outputs):
            raise VerificationError(f"{label} has {n_out} outputs, outside the op's arity.")
        unknown = set(node.attrs) - set(op.attrs)
        if unknown:
            raise VerificationError(f"{label} has unknown attributes {sorted(unknown)!r}.")
        for sub in subgraphs_of(node):
            verify(sub, outer | defined)
        for value in node.outputs:
            if value is not None:
                define(value.name, label)
    for value in graph.outputs:
        if value.name not in defined and value.name not in outer:
            raise VerificationError(f"The graph output {value.name!r} is never defined.")
