"""The op registry: each op declares its attributes, type inference and
reference semantics in one place.

An op is registered with the :func:`op` decorator on its reference function::

    @op("LeakyRelu", attrs={"alpha": Attr.FLOAT(0.01)}, infer=same_as_input(0))
    def leaky_relu(x, *, alpha):
        return np.where(x >= 0, x, x * alpha).astype(x.dtype)

The reference function takes the input arrays positionally (``None`` for an
omitted optional input) and the attributes as keyword arguments, defaults
filled in.  If it has a keyword-only parameter ``ctx`` it also receives an
:class:`ExecContext` (number of outputs, inferred output types, a way to run
subgraphs).  It returns one array or a tuple of arrays.

``infer`` receives an :class:`InferContext` and returns the output types.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heli._errors import HeliError, ShapeError, UnsupportedError
from heli.ir._types import Type


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class AttrType(enum.Enum):
    """Kinds of attribute values (as in ONNX).  Call one to make a spec."""

    INT = "int"
    FLOAT = "float"
    STRING = "string"
    TENSOR = "tensor"
    GRAPH = "graph"
    TYPE = "type"
    INTS = "ints"
    FLOATS = "floats"
    STRINGS = "strings"
    TENSORS = "tensors"
    GRAPHS = "graphs"
    TYPES = "types"

    def __call__(self, default: Any = REQUIRED) -> AttrSpec:
        return AttrSpec(self, default)


Attr = AttrType


@dataclass(frozen=True)
class AttrSpec:
    type: AttrType
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass
class InferContext:
    """What an op's type inference may look at."""

    node_name: str
    op: OpDef
    input_types: tuple[Type | None, ...]
    attrs: Mapping[str, Any]
    num_outputs: int
    constants: tuple[np.ndarray | None, ...] = ()
    outer_types: Mapping[str, Type] = field(default_factory=dict)

    def const(self, index: int) -> np.ndarray | None:
        """The constant value of input ``index`` if it is known, else ``None``."""
        if index < len(self.constants):
            return self.constants[index]
        return None

    def has_input(self, index: int) -> bool:
        return index < len(self.input_types) and self.input_types[index] is not None

    def error(self, message: str) -> ShapeError:
        """A ShapeError naming this node."""
        return ShapeError(f"{self.op.name} node {self.node_name!r}: {message}")


@dataclass
class ExecContext:
    """What a reference function may use beyond its inputs and attributes."""

    node_name: str
    num_outputs: int
    output_types: tuple[Type | None, ...]
    run_graph: Callable[..., list[Any]]
    outer: Mapping[str, Any]


InferFn = Callable[[InferContext], Sequence[Type | None]]


@dataclass(frozen=True, eq=False)
class OpDef:
    """One op: its name, attributes, arity, type inference and semantics."""

    name: str
    reference: Callable[..., Any]
    infer: InferFn
    attrs: Mapping[str, AttrSpec] = field(default_factory=dict)
    domain: str = ""
    min_inputs: int = 0
    max_inputs: int | None = None
    min_outputs: int = 1
    max_outputs: int | None = 1
    # False for ops whose result is not a function of their inputs
    # (random numbers): constant folding and CSE leave them alone.
    deterministic: bool = True
    doc: str = ""
    wants_ctx: bool = False

    @property
    def qualname(self) -> str:
        return f"{self.domain}:{self.name}" if self.domain else self.name

    def attr_default(self, name: str) -> Any:
        spec = self.attrs.get(name)
        if spec is None:
            raise KeyError(f"Op {self.qualname!r} has no attribute {name!r}.")
        return None if spec.required else spec.default

    def resolve_attrs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` plus defaults; rejects missing required attributes."""
        resolved = {}
        for name, spec in self.attrs.items():
            if name in given:
                resolved[name] = given[name]
            elif spec.required:
                raise ShapeError(f"{self.name} requires the attribute {name!r}, which is missing.")
            else:
                resolved[name] = spec.default
        return resolved

    def __repr__(self) -> str:
        return f"OpDef({self.qualname})"


_REGISTRY: dict[tuple[str, str], OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    key = (opdef.domain, opdef.name)
    if key in _REGISTRY:
        raise HeliError(f"The op {opdef.qualname!r} is registered twice.")
    _REGISTRY[key] = opdef
    return opdef


def op(
    name: str,
    *,
    infer: InferFn,
    attrs: Mapping[str, AttrSpec] | None = None,
    domain: str = "",
    inputs: tuple[int, int | None] | int = (0, None),
    outputs: tuple[int, int | None] | int = 1,
    deterministic: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated reference function as op ``name``.

    ``inputs``/``outputs`` give the arity: an int, or ``(min, max)`` with
    ``max=None`` for variadic.
    """
    min_in, max_in = (inputs, inputs) if isinstance(inputs, int) else inputs
    min_out, max_out = (outputs, outputs) if isinstance(outputs, int) else outputs

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(fn).parameters
        register(
            OpDef(
                name=name,
                reference=fn,
                infer=infer,
                attrs=dict(attrs or {}),
                domain=domain,
                min_inputs=min_in,
                max_inputs=max_in,
                min_outputs=min_out,
                max_outputs=max_out,
                deterministic=deterministic,
                doc=inspect.getdoc(fn) or "",
                wants_ctx="ctx" in params,
            )
        )
        return fn

    return decorate


def get_op(name: str, domain: str = "") -> OpDef:
    """The registered op ``name`` (in ``domain``); UnsupportedError if none."""
    _load_builtin_ops()
    try:
        return _REGISTRY[(_canonical_domain(domain), name)]
    except KeyError:
        where = domain or "ai.onnx"
        raise UnsupportedError(f"Heli has no op {name!r} in domain {where!r}.") from None


def find_op(name: str, domain: str = "") -> OpDef | None:
    _load_builtin_ops()
    return _REGISTRY.get((_canonical_domain(domain), name))


def all_ops() -> list[OpDef]:
    """Every registered op, sorted by qualified name."""
    _load_builtin_ops()
    return sorted(_REGISTRY.values(), key=lambda o: o.qualname)


def _canonical_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _load_builtin_ops() -> None:
    # The op library registers itself on import; import it lazily so that the
    # registry module stays free of the (large) set of definitions.
    import heli.ops  # noqa: F401
