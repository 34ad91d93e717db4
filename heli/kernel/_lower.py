"""Lower graph nodes to kernel IR.

* :func:`lower_elementwise`: a graph of elementwise float32 nodes (one fused
  group, numpy broadcasting) to one loop nest over the output, each node a
  scalar expression (``SCALAR_RULES``), dimensions that need no separate
  index coalesced;
* :func:`lower_softmax`, :func:`lower_layer_norm`, :func:`lower_row_mean`:
  row-wise reductions over the last (flattened) axis.

Each returns a :class:`Lowered`: the kernel and which graph values (or
constants) its buffer parameters stand for.  :func:`default_schedule`
parallelizes the outer loop of a big kernel and vectorizes the inner one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from heli.ir._graph import Graph, Node
from heli.ir._types import DType, TensorType
from heli.kernel._ir import (
    Assign,
    Buffer,
    Const,
    Expr,
    Kernel,
    KernelError,
    Let,
    Load,
    Loop,
    Op,
    Stmt,
    Store,
    Var,
    find_loop,
    loops,
)
from heli.kernel._render import render_kernel
from heli.kernel._schedule import parallel, split, vectorize


@dataclass(frozen=True)
class Lowered:
    """A kernel and the graph values its parameters stand for, in order:
    ``inputs`` then ``outputs`` (value names; a constant's name for a
    constant operand)."""

    kernel: Kernel
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _f(x: float) -> Const:
    return Const(float(x), "f32")


def _i(x: int) -> Const:
    return Const(int(x), "i64")


def op(name: str, *args: Expr) -> Op:
    return Op(name, tuple(args))


# ---------------------------------------------------------- scalar rules

def _attr_const(value, default: float) -> Const:
    return _f(default if value is None else value)


def _clip(node: Node, args: list[Expr | None], consts: list) -> Expr:
    x = args[0]
    lo = args[1] if len(args) > 1 else None
    hi = args[2] if len(args) > 2 else None
    if lo is not None:
        x = op("select", op("lt", x, lo), lo, x)
    if hi is not None:
        x = op("select", op("gt", x, hi), hi, x)
    return x


def _pow(node: Node, args: list[Expr | None], consts: list) -> Expr:
    base, exponent = args
    value = consts[1]
    if value is not None and value.size == 1:
        e = float(value.reshape(()))
        if e == 1.0:
            return base
        if e == 2.0:
            return op("mul", base, base)
        if e == 3.0:
            return op("mul", op("mul", base, base), base)
        if e == 0.5:
            return op("sqrt", base)
    return op("pow", base, exponent)


def _hard_sigmoid(x: Expr, alpha: float, beta: float) -> Expr:
    y = op("add", op("mul", _f(alpha), x), _f(beta))
    y = op("select", op("lt", y, _f(0.0)), _f(0.0), y)
    return op("select", op("gt", y, _f(1.0)), _f(1.0), y)


def _variadic(name: str) -> Callable[..., Expr]:
    def rule(node: Node, args: list[Expr | None], consts: list) -> Expr:
        result = args[0]
        for a in args[1:]:
            result = op(name, result, a)
        return result
    return rule


def _gelu(node: Node, args, consts) -> Expr:
    x = args[0]
    if node.attr("approximate") == "tanh":
        inner = op("mul", _f(math.sqrt(2 / math.pi)),
                   op("add", x, op("mul", _f(0.044715), op("mul", x, op("mul", x, x)))))
        return op("mul", op("mul", _f(0.5), x), op("add", _f(1.0), op("tanh", inner)))
    return op("mul", op("mul", _f(0.5), x),
              op("add", _f(1.0), op("erf", op("mul", x, _f(1 / math.sqrt(2))))))


ScalarRule = Callable[[Node, list, list], Expr]

#: How each elementwise graph op computes one element (float32 in and out).
SCALAR_RULES: dict[str, ScalarRule] = {
    "Add": lambda n, a, c: op("add", a[0], a[1]),
    "Sub": lambda n, a, c: op("sub", a[0], a[1]),
    "Mul": lambda n, a, c: op("mul", a[0], a[1]),
    "Div": lambda n, a, c: op("div", a[0], a[1]),
    "Max": _variadic("max"),
    "Min": _variadic("min"),
    "Sum": _variadic("add"),
    "Neg": lambda n, a, c: op("neg", a[0]),
    "Abs": lambda n, a, c: op("abs", a[0]),
    "Relu": lambda n, a, c: op("select", op("lt", a[0], _f(0.0)), _f(0.0), a[0]),
    "LeakyRelu": lambda n, a, c: op("select", op("lt", a[0], _f(0.0)),
                                    op("mul", _f(n.attr("alpha")), a[0]), a[0]),
    "Sigmoid": lambda n, a, c: op("sigmoid", a[0]),
    "HardSigmoid": lambda n, a, c: _hard_sigmoid(a[0], n.attr("alpha"), n.attr("beta")),
    "HardSwish": lambda n, a, c: op("mul", a[0], _hard_sigmoid(a[0], 1 / 6, 0.5)),
    "Tanh": lambda n, a, c: op("tanh", a[0]),
    "Exp": lambda n, a, c: op("exp", a[0]),
    "Log": lambda n, a, c: op("log", a[0]),
    "Sqrt": lambda n, a, c: op("sqrt", a[0]),
    "Reciprocal": lambda n, a, c: op("recip", a[0]),
    "Erf": lambda n, a, c: op("erf", a[0]),
    "Floor": lambda n, a, c: op("floor", a[0]),
    "Ceil": lambda n, a, c: op("ceil", a[0]),
    "Clip": _clip,
    "Pow": _pow,
    "Gelu": _gelu,
    "Softplus": lambda n, a, c: op("log", op("add", _f(1.0), op("exp", a[0]))),
    "Elu": lambda n, a, c: op("select", op("lt", a[0], _f(0.0)),
                              op("mul", _f(n.attr("alpha")),
                                 op("sub", op("exp", a[0]), _f(1.0))), a[0]),
    "Identity": lambda n, a, c: a[0],
}


def elementwise_supported(node: Node) -> bool:
    """Whether :func:`lower_elementwise` can lower ``node``: a rule exists and
    every operand and result is a float32 tensor of static shape."""
    if node.op.domain or node.op.name not in SCALAR_RULES:
        return False
    if len(node.outputs) != 1 or node.outputs[0] is None:
        return False
    values = [v for v in node.inputs if v is not None] + [node.outputs[0]]
    return all(_static_f32(v.type) for v in values)


def _static_f32(t) -> bool:
    return isinstance(t, TensorType) and t.dtype == DType.FLOAT32 and t.is_static


# ------------------------------------------------------ elementwise lowering

def _strides(shape: Sequence[int], out: Sequence[int]) -> list[int]:
    """Element strides of a contiguous ``shape`` broadcast to ``out``."""
    shape = [1] * (len(out) - len(shape)) + list(shape)
    strides, step = [0] * len(out), 1
    for d in range(len(out) - 1, -1, -1):
        strides[d] = step if shape[d] != 1 else 0
        step *= shape[d]
    return strides


def _coalesce(out: list[int], operands: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dims and merge neighbours that every operand walks contiguously."""
    keep = [d for d in range(len(out)) if out[d] != 1]
    dims = [out[d] for d in keep]
    strides = [[s[d] for d in keep] for s in operands]
    d = len(dims) - 2
    while d >= 0:
        if all(s[d] == s[d + 1] * dims[d + 1] for s in strides):
            dims[d] *= dims[d + 1]
            del dims[d + 1]
            for s in strides:
                s[d] = s[d + 1]
                del s[d + 1]
        d -= 1
    return dims, strides


def lower_elementwise(body: Graph, name: str = "ew") -> Lowered:
    """One kernel computing ``body`` (elementwise float32 nodes, every output
    of the full output shape) at each output index."""
    if not body.outputs:
        raise KernelError("An elementwise group needs at least one output.")
    out_shape = list(body.outputs[0].tensor_type.shape)
    for v in body.outputs:
        if list(v.tensor_type.shape) != out_shape:
            raise KernelError(
                f"The outputs of elementwise group {name!r} differ in shape; each must be "
                f"{out_shape!r}.")
    scalars: dict[str, Expr] = {}  # value name -> expression (constants of one element)
    operands: list[tuple[str, list[int]]] = []  # loaded buffers: (value name, its shape)
    for name_, array in body.constants.items():
        if array.size == 1:
            scalars[name_] = _f(float(np.asarray(array, np.float64).reshape(())))
    for v in body.inputs:
        operands.append((v.name, list(v.tensor_type.shape)))
    read = {x.name for n in body.nodes for x in n.inputs if x is not None}
    for name_, array in body.constants.items():
        if name_ not in scalars and name_ in read:
            operands.append((name_, list(array.shape)))
    outputs = [v.name for v in body.outputs]
    stride_sets = [_strides(shape, out_shape) for _, shape in operands]
    stride_sets += [_strides(out_shape, out_shape) for _ in outputs]
    dims, coalesced = _coalesce(out_shape, stride_sets)
    loop_vars = [f"i{d}" for d in range(len(dims))]

    def index(strides: list[int]) -> Expr:
        terms = [op("mul", Var(v), _i(s)) if s != 1 else Var(v)
                 for v, s in zip(loop_vars, strides, strict=True) if s != 0]
        if not terms:
            return _i(0)
        expr = terms[0]
        for t in terms[1:]:
            expr = op("add", expr, t)
        return expr

    params = [f"in{k}" for k in range(len(operands))]
    for (value, _), param, strides in zip(operands, params, coalesced, strict=False):
        scalars[value] = Load(param, index(strides))
    stmts: list[Stmt] = []
    for k, node in enumerate(body.nodes):
        rule = SCALAR_RULES.get(node.op.name)
        if rule is None or node.op.domain:
            raise KernelError(f"No scalar rule lowers {node.op.qualname} nodes.")
        args = [scalars.get(v.name) if v is not None else None for v in node.inputs]
        if any(a is None for a, v in zip(args, node.inputs, strict=True) if v is not None):
            missing = [v.name for a, v in zip(args, node.inputs, strict=True)
                       if v is not None and a is None]
            raise KernelError(f"Elementwise group {name!r} reads undefined {missing!r}.")
        consts = [body.constants.get(v.name) if v is not None else None for v in node.inputs]
        expr = rule(node, args, consts)
        temp = f"t{k}"
        stmts.append(Let(temp, expr))
        scalars[node.outputs[0].name] = Var(temp, "f32")
    for k, value in enumerate(outputs):
        strides = coalesced[len(operands) + k]
        stmts.append(Store(f"out{k}", index(strides), scalars[value]))
    nest: tuple[Stmt, ...] = tuple(stmts)
    for var, extent in reversed(list(zip(loop_vars, dims, strict=True))):
        nest = (Loop(var, extent, nest),)
    total = int(np.prod(out_shape, dtype=np.int64)) if out_shape else 1
    buffers = [Buffer(p, int(np.prod(shape, dtype=np.int64)) if shape else 1, "in")
               for p, (_, shape) in zip(params, operands, strict=True)]
    buffers += [Buffer(f"out{k}", total, "out") for k in range(len(outputs))]
    kernel = Kernel(name, tuple(buffers), nest)
    return Lowered(default_schedule(kernel), tuple(v for v, _ in operands), tuple(outputs))


# ------------------------------------------------------ row-wise reductions

def _row_loop(rows: int, body: tuple[Stmt, ...]) -> Loop:
    return Loop("r", rows, body)


def lower_softmax(rows: int, n: int, name: str = "softmax") -> Kernel:
    """``y[r, :] = exp(x[r, :] - max) / sum`` for each of ``rows`` rows of ``n``."""
    base = op("mul", Var("r"), _i(n))
    x = lambda i: Load("x", op("add", base, Var(i)))  # noqa: E731
    body = (
        Let("m", _f(-math.inf)),
        Loop("i", n, (Assign("m", op("max", Var("m", "f32"), x("i"))),),
             reductions=(("m", "max"),)),
        Let("s", _f(0.0)),
        Loop("j", n, (Let("e", op("exp", op("sub", x("j"), Var("m", "f32")))),
                      Store("y", op("add", base, Var("j")), Var("e", "f32")),
                      Assign("s", op("add", Var("s", "f32"), Var("e", "f32")))),
             reductions=(("s", "add"),)),
        Let("inv", op("div", _f(1.0), Var("s", "f32"))),
        Loop("k", n, (Store("y", op("add", base, Var("k")),
                            op("mul", Load("y", op("add", base, Var("k"))),
                               Var("inv", "f32"))),)),
    )
    kernel = Kernel(name, (Buffer("x", rows * n), Buffer("y", rows * n, "out")),
                    (_row_loop(rows, body),))
    return _schedule_rows(kernel, rows * n, ("i", "j", "k"))


def lower_layer_norm(rows: int, n: int, epsilon: float, has_bias: bool,
                     name: str = "layernorm") -> Kernel:
    """``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` over rows of ``n``."""
    base = op("mul", Var("r"), _i(n))
    x = lambda i: Load("x", op("add", base, Var(i)))  # noqa: E731
    s, m, v = Var("s", "f32"), Var("mean", "f32"), Var("var", "f32")
    out = op("mul", op("mul", op("sub", x("k"), m), Var("inv", "f32")), Load("scale", Var("k")))
    if has_bias:
        out = op("add", out, Load("bias", Var("k")))
    body = (
        Let("s", _f(0.0)),
        Loop("i", n, (Assign("s", op("add", s, x("i"))),), reductions=(("s", "add"),)),
        Let("mean", op("div", s, _f(n))),
        Let("var", _f(0.0)),
        Loop("j", n, (Let("d", op("sub", x("j"), m)),
                      Assign("var", op("add", v, op("mul", Var("d", "f32"), Var("d", "f32"))))),
             reductions=(("var", "add"),)),
        Let("inv", op("div", _f(1.0), op("sqrt", op("add", op("div", v, _f(n)),
                                                      _f(epsilon))))),
        Loop("k", n, (Store("y", op("add", base, Var("k")), out),)),
    )
    params = [Buffer("x", rows * n), Buffer("scale", n)]
    if has_bias:
        params.append(Buffer("bias", n))
    params.append(Buffer("y", rows * n, "out"))
    kernel = Kernel(name, tuple(params), (_row_loop(rows, body),))
    return _schedule_rows(kernel, rows * n, ("i", "j", "k"))


def lower_row_mean(rows: int, n: int, name: str = "rowmean") -> Kernel:
    """``y[r] = mean(x[r, :])``."""
    base = op("mul", Var("r"), _i(n))
    s = Var("s", "f32")
    body = (
        Let("s", _f(0.0)),
        Loop("i", n, (Assign("s", op("add", s, Load("x", op("add", base, Var("i"))))),),
             reductions=(("s", "add"),)),
        Store("y", Var("r"), op("div", s, _f(n))),
    )
    kernel = Kernel(name, (Buffer("x", rows * n), Buffer("y", rows, "out")),
                    (_row_loop(rows, body),))
    return _schedule_rows(kernel, rows * n, ("i",))


# --------------------------------------------------------------- schedules

#: Below this many elements a kernel runs on one thread (a parallel region
#: costs a few microseconds).
PARALLEL_MIN_ELEMENTS = 32768


def _schedule_rows(kernel: Kernel, total: int, inner: Sequence[str]) -> Kernel:
    for var in inner:
        kernel = vectorize(kernel, var)
    if total >= PARALLEL_MIN_ELEMENTS and find_loop(kernel, "r").extent > 1:
        kernel = parallel(kernel, "r")
    return kernel


def default_schedule(kernel: Kernel) -> Kernel:
    """Vectorize the innermost loop, parallelize the outermost of a big
    kernel (splitting a lone loop into chunks first)."""
    nest = loops(kernel)
    if not nest:
        return kernel
    total = 1
    for loop in nest:
        total *= loop.extent
    inner = nest[-1]
    if len(nest) == 1 and total >= PARALLEL_MIN_ELEMENTS:
        factor = _chunk(inner.extent)
        kernel = split(kernel, inner.var, factor)
        kernel = vectorize(kernel, f"{inner.var}_i")
        return parallel(kernel, f"{inner.var}_o")
    kernel = vectorize(kernel, inner.var)
    if total >= PARALLEL_MIN_ELEMENTS and len(nest) > 1:
        kernel = parallel(kernel, nest[0].var)
    return kernel


def _chunk(extent: int) -> int:
    """A chunk size for a flat loop: a multiple of 16 dividing ``extent`` if
    there is one between 1024 and 16384, else 4096 (with a guarded tail)."""
    for size in range(4096, 16385, 16):
        if extent % size == 0:
            return size
    for size in range(4096, 1023, -16):
        if extent % size == 0:
            return size
    return 4096


def content_name(kernel: Kernel, prefix: str) -> Kernel:
    """``kernel`` renamed after a hash of its body, so identical kernels of a
    model share one function."""
    text = render_kernel(kernel.replace(name="k"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return kernel.replace(name=f"heli_{prefix}_{digest}")
