"""The reference executor: runs any graph op by op with each op's numpy
reference semantics from the registry."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heli._errors import ExecutionError, HeliError
from heli.ir._graph import Graph, Node, reads_of
from heli.ir._ops import ExecContext
from heli.ir._types import TensorType


@dataclass(frozen=True)
class _Step:
    node: Node
    attrs: dict[str, Any]
    inputs: tuple[str | None, ...]
    outputs: tuple[str | None, ...]
    frees: tuple[str, ...]  # values whose last reader is this step


class GraphRunner:
    """A graph prepared for repeated execution."""

    def __init__(self, graph: Graph, *, check_types: bool = False) -> None:
        self.graph = graph
        self.check_types = check_types
        self._steps = self._plan(graph)

    @staticmethod
    def _plan(graph: Graph) -> list[_Step]:
        keep = {v.name for v in graph.outputs} | set(graph.constants)
        last_use: dict[str, int] = {}
        for index, node in enumerate(graph.nodes):
            for name in reads_of(node):  # operands and values its subgraphs capture
                last_use[name] = index
        steps = []
        for index, node in enumerate(graph.nodes):
            frees = tuple(
                name for name, last in last_use.items() if last == index and name not in keep
            )
            steps.append(
                _Step(
                    node=node,
                    attrs=node.op.resolve_attrs(node.attrs),
                    inputs=tuple(v.name if v is not None else None for v in node.inputs),
                    outputs=tuple(v.name if v is not None else None for v in node.outputs),
                    frees=frees,
                )
            )
        return steps

    def run(self, feeds: Mapping[str, Any], outer: Mapping[str, Any] | None = None) -> list[Any]:
        """Run on ``feeds``; returns the outputs in graph order."""
        env: dict[str, Any] = dict(self.graph.constants)
        env.update(feeds)
        scope = ChainMap(env, outer) if outer is not None else env
        with np.errstate(all="ignore"):
            for step in self._steps:
                self._run_step(step, env, scope)
        return [scope[v.name] for v in self.graph.outputs]

    def _run_step(self, step: _Step, env: dict, scope: Mapping) -> None:
        node = step.node
        args = [scope[name] if name is not None else None for name in step.inputs]
        kwargs = dict(step.attrs)
        if node.op.wants_ctx:
            kwargs["ctx"] = ExecContext(
                node_name=node.name,
                num_outputs=len(step.outputs),
                output_types=tuple(o.type if o is not None else None for o in node.outputs),
                run_graph=lambda graph, inputs: run_subgraph(graph, inputs, scope),
                outer=scope,
            )
        try:
            result = node.op.reference(*args, **kwargs)
        except HeliError:
            raise
        except Exception as error:
            label = node.name or (step.outputs[0] or node.op.name)
            raise ExecutionError(_failure(node.op.name, label, error, args)) from error
        results = result if isinstance(result, tuple | list) else (result,)
        for name, value, out in zip(step.outputs, results, node.outputs, strict=False):
            if name is not None:
                if self.check_types:
                    _check_type(node, out.type, value)
                env[name] = value
        for name in step.frees:
            env.pop(name, None)


def _failure(op_name: str, label: str, error: Exception, args: list[Any]) -> str:
    """One sentence for an exception a reference function raised.

    ValueError and IndexError are how reference functions report bad data, in
    sentences of their own; other types are shown by name, since they usually
    come from deeper (numpy) code."""
    text = str(error).strip() or "no details"
    if isinstance(error, MemoryError):
        # numpy says "Unable to allocate 3.64 TiB for an array with shape (...)".
        head, text = "ran out of memory", f"{text} (the shapes are probably wrong)"
    elif isinstance(error, ValueError | IndexError):
        head = "failed on the given data"
    else:  # an unexpected failure: show what the node got
        head = f"failed on inputs ({', '.join(map(_describe, args))})"
        text = f"{type(error).__name__}: {text}"
    if not text.endswith((".", "!", "?")):
        text += "."
    return f"{op_name} node {label!r} {head}: {text}"


def _describe(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, np.ndarray | np.generic):
        return f"{value.dtype.name}{list(np.shape(value))}"
    if isinstance(value, list):
        return f"a sequence of {len(value)}"
    return type(value).__name__


_runner_cache: dict[int, tuple[Graph, GraphRunner]] = {}


def run_subgraph(graph: Graph, inputs: Sequence[Any], outer: Mapping[str, Any]) -> list[Any]:
    """Run a subgraph (If branch, Loop body) with positional ``inputs``."""
    cached = _runner_cache.get(id(graph))
    if cached is None or cached[0] is not graph:
        cached = (graph, GraphRunner(graph))
        _runner_cache[id(graph)] = cached
    feeds = {}
    for value, x in zip(graph.inputs, inputs, strict=False):
        _check_body_input(graph, value.name, value.type, x)
        feeds[value.name] = x
    return cached[1].run(feeds, outer)


def _check_body_input(graph: Graph, name: str, declared: Any, value: Any) -> None:
    """A Loop/Scan body input must get what the body declares (dtype, rank, static
    dims); otherwise the body's inferred types, and so the node's, are wrong."""
    if not isinstance(declared, TensorType) or not isinstance(value, np.ndarray):
        return
    fits = value.dtype == declared.dtype.np
    if fits and value.ndim == 0 and declared.shape is not None and len(declared.shape) == 1:
        # A scalar (a Loop's iteration number or condition) where the body declares
        # a 1-element vector: ONNX Runtime accepts that too.
        fits = declared.shape[0] in (1,) or isinstance(declared.shape[0], str)
    elif fits and declared.shape is not None:
        fits = len(declared.shape) == value.ndim and all(
            not isinstance(d, int) or d == n for d, n in zip(declared.shape, value.shape,
                                                            strict=True))
    if not fits:
        raise ExecutionError(
            f"The body graph {graph.name!r} declares its input {name!r} as {declared}, but "
            f"gets a {value.dtype.name} tensor of shape {list(value.shape)!r}."
        )


def _check_type(node: Node, expected: Any, value: Any) -> None:
    """Debug check: the array matches the type inference said it would have."""
    if not isinstance(expected, TensorType) or not isinstance(value, np.ndarray):
        return
    label = node.name or node.op.name
    if value.dtype != expected.dtype.np:
        raise ExecutionError(
            f"{node.op.name} node {label!r} produced dtype {value.dtype.name!r} but type "
            f"inference said {str(expected.dtype)!r} (a Heli bug)."
        )
    if expected.shape is not None:
        same_rank = len(expected.shape) == value.ndim
        if not same_rank or any(
            isinstance(d, int) and d != s for d, s in zip(expected.shape, value.shape, strict=False)
        ):
            raise ExecutionError(
                f"{node.op.name} node {label!r} produced shape {list(value.shape)!r} but type "
                f"inference said {list(expected.shape)!r} (a Heli bug)."
            )
