"""CompiledModel: what ``heli.compile`` returns.

It checks feeds against the model's declared inputs, specializes the graph
for each new set of input shapes (compiling it once and caching it, as
``torch.compile`` does) and runs the specialization.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heli._errors import InputError, ShapeError
from heli.ir._graph import Graph, Value
from heli.ir._types import OptionalType, SequenceType, TensorType
from heli.target._base import Executable

Shapes = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Placement:
    """Which target ran which nodes of one specialization."""

    segments: tuple[tuple[str, tuple[str, ...]], ...]  # (target name, node labels)
    fallback_reasons: Mapping[str, str]  # node label -> why the main target refused it

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for target, nodes in self.segments:
            result[target] = result.get(target, 0) + len(nodes)
        return result


@dataclass(frozen=True)
class Stage:
    """One compiled segment: which target runs it, its graph, its executable."""

    target: str
    graph: Graph
    executable: Executable


class Specialization:
    """One compiled version of the model, for one tuple of input shapes:
    its optimized graph and the compiled segments that run it, in order."""

    def __init__(self, graph: Graph, stages: Sequence[Stage], placement: Placement,
                 pass_times: Mapping[str, float]) -> None:
        self.graph = graph
        self.stages = tuple(stages)
        self.placement = placement
        self.pass_times = dict(pass_times)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the stages in order, each on the values it reads."""
        env = {**self.graph.constants, **feeds}  # an output may be a (folded) constant
        for stage in self.stages:
            env.update(stage.executable.run({v.name: env[v.name] for v in stage.graph.inputs}))
        return {v.name: env[v.name] for v in self.graph.outputs}


class CompiledModel:
    """A model compiled for a target; call :meth:`run` with feeds by input name."""

    def __init__(self, graph: Graph, target: str,
                 specialize: Callable[[Graph, Mapping[str, TensorType]], Specialization]) -> None:
        self.graph = graph
        self.target = target
        self._specialize = specialize
        self._cache: dict[Shapes, Specialization] = {}

    # -- ONNX Runtime-like introspection -------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.graph.outputs]

    @property
    def inputs(self) -> tuple[Value, ...]:
        return self.graph.inputs

    @property
    def outputs(self) -> tuple[Value, ...]:
        return self.graph.outputs

    @property
    def specializations(self) -> dict[Shapes, Specialization]:
        return dict(self._cache)

    # -- running -------------------------------------------------------------
    def specialize(self, shapes: Mapping[str, tuple[int, ...]]) -> Specialization:
        """Compile (or fetch from the cache) the version for these input shapes."""
        bound = bind_shapes(self.graph, shapes)
        key = tuple(tuple(bound[v.name].shape) for v in self.graph.inputs if v.name in bound)
        if key not in self._cache:
            self._cache[key] = self._specialize(self.graph, bound)
        return self._cache[key]

    def run(self, feeds: Mapping[str, Any], output_names: list[str] | None = None
            ) -> dict[str, np.ndarray]:
        """Run the model; returns ``{output name: array}``."""
        arrays = check_feeds(self.graph, feeds)
        spec = self.specialize(
            {k: v.shape for k, v in arrays.items() if isinstance(v, np.ndarray)}
        )
        results = spec.run(arrays)
        names = output_names or self.output_names
        unknown = [n for n in names if n not in results]
        if unknown:
            raise InputError(
                f"The model has no output(s) {unknown!r}; its outputs are {self.output_names!r}."
            )
        return {n: results[n] for n in names}

    __call__ = run

    def __repr__(self) -> str:
        ins = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        return f"<CompiledModel target={self.target!r} ({ins})>"


def check_feeds(graph: Graph, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Feeds as arrays, checked against the graph's inputs (names, dtypes, ranks)."""
    if not isinstance(feeds, Mapping):
        raise InputError(
            f"Feeds must be a mapping from input name to array, not {type(feeds).__name__!r}."
        )
    expected = {v.name: v for v in graph.inputs}
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing!r}")
        if extra:
            parts.append(f"unknown input(s) {extra!r}")
        raise InputError(
            f"The feeds have {' and '.join(parts)}; the model's inputs are {list(expected)!r}."
        )
    arrays = {}
    for name, value in expected.items():
        vtype = value.type
        if not isinstance(vtype, TensorType):  # sequences, optionals: checked, passed through
            _check_container_feed(name, vtype, feeds[name])
            arrays[name] = feeds[name]
            continue
        try:
            array = np.asarray(feeds[name])
        except (ValueError, TypeError) as error:
            detail = str(error).rstrip(".")
            raise InputError(f"The feed for input {name!r} is not an array: {detail}.") from None
        if vtype.dtype.np == np.dtype(object):
            array = _string_feed(name, array)
        elif array.dtype != vtype.dtype.np and array.dtype.newbyteorder("=") == vtype.dtype.np:
            array = array.astype(vtype.dtype.np)  # big-endian data (e.g. from a .npy file)
        if array.dtype != vtype.dtype.np:
            raise InputError(
                f"Input {name!r} must have dtype {str(vtype.dtype)!r}, "
                f"but the feed has dtype {array.dtype.name!r}."
            )
        if vtype.shape is not None and array.ndim != len(vtype.shape):
            raise InputError(
                f"Input {name!r} must have rank {len(vtype.shape)} (shape "
                f"{_show(vtype.shape)}), but the feed has shape {list(array.shape)!r}."
            )
        arrays[name] = array
    return arrays


def _shape_of(name: str, dims: Any) -> tuple[int, ...]:
    """A requested input shape as ints >= 0, or a clear error."""
    try:
        shape = tuple(operator.index(d) for d in dims)
    except TypeError:
        shape = None
    if shape is None or any(d < 0 for d in shape):
        raise InputError(f"The shape {dims!r} given for input {name!r} is not a sequence of "
                         "whole numbers >= 0.")
    return shape


def _check_container_feed(name: str, vtype: Any, value: Any) -> None:
    """A sequence feed is a list of arrays of its element dtype; an optional one is
    None or a value of its element type."""
    if isinstance(vtype, OptionalType):
        if value is not None:
            _check_container_feed(name, vtype.elem, value)
        return
    if isinstance(vtype, SequenceType):
        if not isinstance(value, list | tuple):
            raise InputError(f"Input {name!r} is a sequence ({vtype}); its feed must be a list "
                             f"of arrays, not {type(value).__name__!r}.")
        elem = vtype.elem
        for index, item in enumerate(value):
            if isinstance(elem, TensorType) and not (
                isinstance(item, np.ndarray) and item.dtype == elem.dtype.np
            ):
                got = item.dtype.name if isinstance(item, np.ndarray) else type(item).__name__
                raise InputError(f"Item {index} of the sequence fed to input {name!r} must be a "
                                 f"{elem.dtype} array, not {got!r}.")
        return
    if isinstance(vtype, TensorType):
        if not isinstance(value, np.ndarray) or value.dtype != vtype.dtype.np:
            got = value.dtype.name if isinstance(value, np.ndarray) else type(value).__name__
            raise InputError(f"Input {name!r} holds {vtype} values, not {got!r}.")


def _string_feed(name: str, array: np.ndarray) -> np.ndarray:
    """A string feed as the object array of ``str`` that string ops work on."""
    if array.dtype.kind in "US":
        try:
            return array.astype(str).astype(object)
        except UnicodeDecodeError:
            raise InputError(f"Input {name!r} holds strings, but the feed's bytes are not "
                             "ASCII text.") from None
    if array.dtype != np.dtype(object):
        raise InputError(f"Input {name!r} holds strings, but the feed has dtype "
                         f"{array.dtype.name!r}.")
    flat = array.reshape(-1)
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise InputError(f"Input {name!r} holds strings, but element {index} of the feed "
                             f"is a {type(item).__name__}.")
    return array


def bind_shapes(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, TensorType]:
    """Concrete input types for ``shapes``; symbols must bind consistently."""
    unknown = [n for n in shapes if n not in {v.name for v in graph.inputs}]
    if unknown:
        raise InputError(
            f"There is no input named {unknown[0]!r}; the model's inputs are "
            f"{[v.name for v in graph.inputs]!r}."
        )
    symbols: dict[str, tuple[int, str]] = {}
    bound: dict[str, TensorType] = {}
    for value in graph.inputs:
        vtype = value.type
        if not isinstance(vtype, TensorType):
            continue
        if value.name not in shapes:
            if vtype.shape is None:
                continue  # rank unknown: left for the executor
            if not vtype.is_static:
                raise ShapeError(
                    f"Input {value.name!r} has the dynamic shape {_show(vtype.shape)}; give its "
                    "size (input_shapes= or --input-shape)."
                )
            bound[value.name] = vtype
            continue
        shape = _shape_of(value.name, shapes[value.name])
        if vtype.shape is not None:
            if len(shape) != len(vtype.shape):
                raise ShapeError(
                    f"Input {value.name!r} has rank {len(vtype.shape)} (shape "
                    f"{_show(vtype.shape)}), so the shape {list(shape)!r} does not fit."
                )
            for axis, (declared, size) in enumerate(zip(vtype.shape, shape, strict=True)):
                if isinstance(declared, int) and declared != size:
                    raise ShapeError(
                        f"Input {value.name!r} has the static size {declared} on axis {axis} "
                        f"(shape {_show(vtype.shape)}), but got {size} (shape {list(shape)!r})."
                    )
                if isinstance(declared, str) and not declared.startswith("unk__"):
                    if declared in symbols and symbols[declared][0] != size:
                        first_size, first_input = symbols[declared]
                        raise ShapeError(
                            f"The dimension {declared!r} is {first_size} in input "
                            f"{first_input!r} but {size} in input {value.name!r}."
                        )
                    symbols.setdefault(declared, (size, value.name))
        bound[value.name] = TensorType(vtype.dtype, shape)
    return bound


def _show(shape: tuple | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join(str(d) if isinstance(d, int) else repr(d) for d in shape) + "]"
