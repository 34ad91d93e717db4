"""The kernel IR: loops, index expressions, loads, stores and scalar compute
for one fused group of graph nodes.

Everything is a frozen dataclass with tuple children, like the graph IR;
``replace(**fields)`` returns a copy and rejects unknown field names.

* **Expressions** (:class:`Expr`): :class:`Const`, :class:`Var` (a loop
  variable or a scalar), :class:`Load` (one element of a buffer at a flat
  index) and :class:`Op` (one scalar operation by name: ``"add"``, ``"exp"``,
  ``"select"``... see :data:`OPS`).  Index arithmetic and float compute use
  the same nodes; a renderer's ``code_for_op`` table spells each op.
* **Statements** (:class:`Stmt`): :class:`Let` (declare a scalar),
  :class:`Assign` (update one), :class:`Store`, :class:`Loop` (a counted
  loop with a schedule ``kind``: serial, parallel, vectorize), :class:`If`
  and :class:`Alloc` (a local buffer).
* A :class:`Kernel` is a name, its buffer parameters and a body.

:class:`Visitor` dispatches on the node's class and raises on a node it has
no method for; :class:`Transformer` rebuilds a tree bottom-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from heli._errors import HeliError
from heli._replace import Replaceable


class KernelError(HeliError):
    """A malformed kernel or an impossible schedule (a Heli bug or a bad request)."""


class _Node(Replaceable):
    """Base of kernel IR nodes."""


def _tuple_fields(obj: Any, *names: str) -> None:
    for name in names:
        object.__setattr__(obj, name, tuple(getattr(obj, name)))


# ------------------------------------------------------------- expressions

#: Scalar types of the IR: 32-bit float, 64-bit index integer, boolean.
DTYPES = ("f32", "i64", "bool")


class Expr(_Node):
    """Base class of expressions."""

    # Python operators build index and compute expressions tersely.
    def __add__(self, other: Any) -> Expr:
        return Op("add", (self, as_expr(other)))

    def __radd__(self, other: Any) -> Expr:
        return Op("add", (as_expr(other), self))

    def __sub__(self, other: Any) -> Expr:
        return Op("sub", (self, as_expr(other)))

    def __mul__(self, other: Any) -> Expr:
        return Op("mul", (self, as_expr(other)))

    def __rmul__(self, other: Any) -> Expr:
        return Op("mul", (as_expr(other), self))


@dataclasses.dataclass(frozen=True)
class Const(Expr):
    value: float | int | bool
    dtype: str = "f32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise KernelError(f"Unknown kernel scalar type {self.dtype!r}.")


@dataclasses.dataclass(frozen=True)
class Var(Expr):
    name: str
    dtype: str = "i64"


@dataclasses.dataclass(frozen=True)
class Load(Expr):
    buffer: str
    index: Expr


@dataclasses.dataclass(frozen=True)
class Op(Expr):
    op: str
    args: tuple[Expr, ...]

    def __post_init__(self) -> None:
        _tuple_fields(self, "args")
        arity = OPS.get(self.op)
        if arity is None:
            raise KernelError(f"Unknown kernel op {self.op!r}; the ops are {sorted(OPS)!r}.")
        if len(self.args) != arity:
            raise KernelError(
                f"Kernel op {self.op!r} takes {arity} argument(s), not {len(self.args)}.")


#: Every scalar op and its arity.  Comparisons give ``bool``; the rest give
#: the type of their arguments (``i64`` for index arithmetic).
OPS: dict[str, int] = {
    # arithmetic
    "add": 2, "sub": 2, "mul": 2, "div": 2, "neg": 1, "idiv": 2, "mod": 2,
    "min": 2, "max": 2, "fma": 3,
    # comparisons and selection
    "lt": 2, "le": 2, "gt": 2, "ge": 2, "eq": 2, "ne": 2, "and": 2, "or": 2, "not": 1,
    "select": 3, "isnan": 1,
    # math
    "exp": 1, "log": 1, "sqrt": 1, "rsqrt": 1, "abs": 1, "tanh": 1, "erf": 1,
    "sigmoid": 1, "pow": 2, "floor": 1, "ceil": 1, "round": 1, "recip": 1,
    "sin": 1, "cos": 1,
    # conversion
    "to_f32": 1, "to_i64": 1,
}


def as_expr(x: Any) -> Expr:
    """``x`` as an expression: Python ints are index constants, floats f32."""
    if isinstance(x, Expr):
        return x
    if isinstance(x, bool):
        return Const(x, "bool")
    if isinstance(x, int):
        return Const(x, "i64")
    if isinstance(x, float):
        return Const(x, "f32")
    raise KernelError(f"Cannot use {x!r} ({type(x).__name__}) as a kernel expression.")


# -------------------------------------------------------------- statements

class Stmt(_Node):
    """Base class of statements."""


@dataclasses.dataclass(frozen=True)
class Let(Stmt):
    """Declare scalar ``name`` of ``dtype`` with an initial value."""

    name: str
    value: Expr
    dtype: str = "f32"


@dataclasses.dataclass(frozen=True)
class Assign(Stmt):
    """Update a scalar declared by :class:`Let`."""

    name: str
    value: Expr


@dataclasses.dataclass(frozen=True)
class Store(Stmt):
    buffer: str
    index: Expr
    value: Expr


#: Loop kinds: how a loop runs (set by schedule primitives).
LOOP_KINDS = ("serial", "parallel", "vectorize")


@dataclasses.dataclass(frozen=True)
class Loop(Stmt):
    """``for var in range(start, start + extent)``.

    ``reductions`` names the scalars the body accumulates into, with their
    combining op (``("s", "add")``), so a vectorized or parallel loop can
    combine partial results.
    """

    var: str
    extent: int
    body: tuple[Stmt, ...]
    kind: str = "serial"
    reductions: tuple[tuple[str, str], ...] = ()
    start: int = 0

    def __post_init__(self) -> None:
        _tuple_fields(self, "body", "reductions")
        object.__setattr__(self, "reductions", tuple(tuple(r) for r in self.reductions))
        if self.kind not in LOOP_KINDS:
            raise KernelError(f"Unknown loop kind {self.kind!r}; the kinds are {LOOP_KINDS!r}.")
        if not isinstance(self.extent, int) or self.extent < 0:
            raise KernelError(f"Loop {self.var!r} has a bad extent {self.extent!r}.")


@dataclasses.dataclass(frozen=True)
class If(Stmt):
    cond: Expr
    body: tuple[Stmt, ...]

    def __post_init__(self) -> None:
        _tuple_fields(self, "body")


@dataclasses.dataclass(frozen=True)
class Alloc(Stmt):
    """A local buffer of ``size`` elements, live until the end of its block."""

    name: str
    size: int
    dtype: str = "f32"


@dataclasses.dataclass(frozen=True)
class Buffer(_Node):
    """A kernel parameter: a flat array of ``size`` elements.  ``role`` is
    ``"in"`` (read only) or ``"out"`` (written, maybe read)."""

    name: str
    size: int
    role: str = "in"
    dtype: str = "f32"

    def __post_init__(self) -> None:
        if self.role not in ("in", "out"):
            raise KernelError(f"Buffer {self.name!r} has a bad role {self.role!r}.")


@dataclasses.dataclass(frozen=True)
class Kernel(_Node):
    name: str
    params: tuple[Buffer, ...]
    body: tuple[Stmt, ...]

    def __post_init__(self) -> None:
        _tuple_fields(self, "params", "body")


# ----------------------------------------------------------------- visitors

class Visitor:
    """Dispatches ``visit(node)`` to ``visit_<ClassName>``; a node class with
    no method is an error, so a new node kind cannot be skipped silently."""

    _cache: ClassVar[dict[tuple[type, type], Callable[..., Any]]] = {}

    def visit(self, node: Any) -> Any:
        key = (type(self), type(node))
        method = Visitor._cache.get(key)
        if method is None:
            method = getattr(type(self), f"visit_{type(node).__name__}", None)
            if method is None:
                raise KernelError(
                    f"{type(self).__name__} cannot visit a {type(node).__name__} node.")
            Visitor._cache[key] = method
        return method(self, node)


class Transformer(Visitor):
    """Rebuilds a tree bottom-up; override a ``visit_*`` to rewrite a node kind.
    A statement visitor may return a tuple of statements (spliced in place)."""

    def visit_Const(self, node: Const) -> Expr:
        return node

    def visit_Var(self, node: Var) -> Expr:
        return node

    def visit_Load(self, node: Load) -> Expr:
        return node.replace(index=self.visit(node.index))

    def visit_Op(self, node: Op) -> Expr:
        return node.replace(args=tuple(self.visit(a) for a in node.args))

    def visit_Let(self, node: Let) -> Stmt:
        return node.replace(value=self.visit(node.value))

    def visit_Assign(self, node: Assign) -> Stmt:
        return node.replace(value=self.visit(node.value))

    def visit_Store(self, node: Store) -> Stmt:
        return node.replace(index=self.visit(node.index), value=self.visit(node.value))

    def visit_Loop(self, node: Loop) -> Stmt:
        return node.replace(body=self.block(node.body))

    def visit_If(self, node: If) -> Stmt:
        return node.replace(cond=self.visit(node.cond), body=self.block(node.body))

    def visit_Alloc(self, node: Alloc) -> Stmt:
        return node

    def visit_Kernel(self, node: Kernel) -> Kernel:
        return node.replace(body=self.block(node.body))

    def block(self, stmts: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for stmt in stmts:
            result = self.visit(stmt)
            if isinstance(result, tuple):
                out.extend(result)
            elif result is not None:
                out.append(result)
        return tuple(out)


class Substitute(Transformer):
    """Replace variables by expressions."""

    def __init__(self, mapping: dict[str, Expr]) -> None:
        self.mapping = mapping

    def visit_Var(self, node: Var) -> Expr:
        return self.mapping.get(node.name, node)


def substitute(node: Any, mapping: dict[str, Expr]) -> Any:
    """``node`` with each variable named in ``mapping`` replaced."""
    return Substitute(mapping).visit(node)


def loops(kernel: Kernel | Stmt) -> list[Loop]:
    """Every loop in ``kernel``, outermost first (pre-order)."""
    found: list[Loop] = []

    class _Collect(Transformer):
        def visit_Loop(self, node: Loop) -> Stmt:
            found.append(node)
            return super().visit_Loop(node)

    _Collect().visit(kernel)
    return found


def find_loop(kernel: Kernel, var: str) -> Loop:
    for loop in loops(kernel):
        if loop.var == var:
            return loop
    raise KernelError(
        f"Kernel {kernel.name!r} has no loop over {var!r}; its loops are "
        f"{[lp.var for lp in loops(kernel)]!r}.")
