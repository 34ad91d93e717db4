"""Render kernel IR as C.

A :class:`CDialect` holds everything that spells the IR in one C-like
language: scalar type names, literals, a ``code_for_op`` table (one
function per op of :data:`heli.kernel.OPS`), loop headers with their
pragmas, the kernel signature and a prelude of helper functions.  Another
C-like language (OpenCL C) subclasses it and overrides what differs.

The C dialect targets GCC/Clang with OpenMP: a ``parallel`` loop becomes
``#pragma omp parallel for`` (thread count passed to every kernel as
``nthreads``), a ``vectorize`` loop ``#pragma omp simd`` with the loop's
reductions.  ``exp``, ``erf`` and ``sigmoid`` call prelude functions written
in plain arithmetic, so the compiler vectorizes them (libm's would stay
scalar); their error is a few float32 ulps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from heli.kernel._ir import (
    Alloc,
    Assign,
    Const,
    Expr,
    If,
    Kernel,
    KernelError,
    Let,
    Load,
    Loop,
    Op,
    Stmt,
    Store,
    Var,
    Visitor,
)

C_PRELUDE = r"""#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#ifndef HELI_PRELUDE
#define HELI_PRELUDE
/* exp for float32 (Cephes expf), branch-free so that it vectorizes. */
static inline float heli_expf(float x) {
    x = x < -87.5f ? -87.5f : (x > 88.5f ? 88.5f : x);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    union { int32_t i; float f; } bits;
    bits.i = ((int32_t)n + 127) << 23;
    return y * bits.f;
}

static inline float heli_sigmoidf(float x) { return 1.0f / (1.0f + heli_expf(-x)); }

/* erf for float32: a Taylor series near 0, the Numerical Recipes erfc
 * (relative error below 1.2e-7) elsewhere; both are computed so that it vectorizes. */
static inline float heli_erff(float x) {
    float a = fabsf(x);
    float z = x * x;
    float s = x * (1.1283791671f + z * (-0.3761263890f + z * (0.1128379167f + z * (
        -0.0268661706f + z * (0.0052239776f + z * (-0.0008548327f + z * 0.0001205533f))))));
    float t = 1.0f / (1.0f + 0.5f * a);
    float p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (
        -0.18628806f + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (
        -0.82215223f + t * 0.17087277f))))))));
    float big = 1.0f - t * heli_expf(p - z);
    big = x < 0.0f ? -big : big;
    return a < 0.5f ? s : big;
}
#endif
"""


def _float_literal(value: float) -> str:
    value = float(np.float32(value))
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    text = repr(value)
    if "e" not in text and "." not in text:
        text += ".0"
    return f"{text}f" if not text.startswith("-") else f"({text}f)"


def _bin(symbol: str) -> Callable[..., str]:
    return lambda a, b: f"({a} {symbol} {b})"


def _call(name: str) -> Callable[..., str]:
    return lambda *args: f"{name}({', '.join(args)})"


class CDialect:
    """C99 with OpenMP pragmas."""

    name = "c"
    prelude = C_PRELUDE
    type_names = {"f32": "float", "i64": "long", "bool": "int"}
    indent_unit = "    "

    code_for_op: dict[str, Callable[..., str]] = {
        "add": _bin("+"), "sub": _bin("-"), "mul": _bin("*"), "div": _bin("/"),
        "idiv": _bin("/"), "mod": _bin("%"),
        "neg": lambda a: f"(-{a})",
        # NaN in the first operand propagates, as numpy's maximum/minimum do.
        "min": lambda a, b: f"({b} < {a} ? {b} : {a})",
        "max": lambda a, b: f"({a} < {b} ? {b} : {a})",
        "fma": lambda a, b, c: f"({a} * {b} + {c})",
        "lt": _bin("<"), "le": _bin("<="), "gt": _bin(">"), "ge": _bin(">="),
        "eq": _bin("=="), "ne": _bin("!="), "and": _bin("&&"), "or": _bin("||"),
        "not": lambda a: f"(!{a})",
        "select": lambda c, a, b: f"({c} ? {a} : {b})",
        "isnan": _call("isnan"),
        "exp": _call("heli_expf"), "log": _call("logf"), "sqrt": _call("sqrtf"),
        "rsqrt": lambda a: f"(1.0f / sqrtf({a}))", "abs": _call("fabsf"),
        "tanh": _call("tanhf"), "erf": _call("heli_erff"), "sigmoid": _call("heli_sigmoidf"),
        "pow": _call("powf"), "floor": _call("floorf"), "ceil": _call("ceilf"),
        "round": _call("nearbyintf"), "recip": lambda a: f"(1.0f / {a})",
        "sin": _call("sinf"), "cos": _call("cosf"),
        "to_f32": lambda a: f"((float){a})", "to_i64": lambda a: f"((long){a})",
    }

    def const(self, node: Const) -> str:
        if node.dtype == "f32":
            return _float_literal(node.value)
        if node.dtype == "bool":
            return "1" if node.value else "0"
        return str(int(node.value)) if node.value >= 0 else f"({int(node.value)})"

    def signature(self, kernel: Kernel) -> str:
        params = []
        for buf in kernel.params:
            ctype = self.type_names[buf.dtype]
            qual = "const " if buf.role == "in" else ""
            params.append(f"{qual}{ctype} *restrict {buf.name}")
        params.append("int nthreads")
        return f"void {kernel.name}({', '.join(params)})"

    def loop_pragmas(self, loop: Loop) -> list[str]:
        reductions = "".join(
            f" reduction({_OMP_REDUCTION[op]}:{name})" for name, op in loop.reductions)
        if loop.kind == "parallel":
            return [f"#pragma omp parallel for num_threads(nthreads) schedule(static)"
                    f"{reductions}"]
        if loop.kind == "vectorize":
            return [f"#pragma omp simd{reductions}"]
        return []

    def loop_header(self, loop: Loop) -> str:
        end = loop.start + loop.extent
        return f"for (long {loop.var} = {loop.start}; {loop.var} < {end}; ++{loop.var})"

    def alloc(self, node: Alloc) -> list[str]:
        ctype = self.type_names[node.dtype]
        return [f"{ctype} {node.name}[{node.size}] __attribute__((aligned(64)));"]


_OMP_REDUCTION = {"add": "+", "mul": "*", "max": "max", "min": "min"}


class _CRenderer(Visitor):
    def __init__(self, dialect: CDialect) -> None:
        self.d = dialect
        self.lines: list[str] = []
        self.depth = 1

    def emit(self, text: str) -> None:
        self.lines.append(self.d.indent_unit * self.depth + text)

    # -- expressions: return strings
    def visit_Const(self, node: Const) -> str:
        return self.d.const(node)

    def visit_Var(self, node: Var) -> str:
        return node.name

    def visit_Load(self, node: Load) -> str:
        return f"{node.buffer}[{self.visit(node.index)}]"

    def visit_Op(self, node: Op) -> str:
        fn = self.d.code_for_op.get(node.op)
        if fn is None:
            raise KernelError(f"The {self.d.name} dialect cannot render kernel op {node.op!r}.")
        return fn(*(self.visit(a) for a in node.args))

    # -- statements: emit lines
    def visit_Let(self, node: Let) -> None:
        self.emit(f"{self.d.type_names[node.dtype]} {node.name} = {self.visit(node.value)};")

    def visit_Assign(self, node: Assign) -> None:
        self.emit(f"{node.name} = {self.visit(node.value)};")

    def visit_Store(self, node: Store) -> None:
        self.emit(f"{node.buffer}[{self.visit(node.index)}] = {self.visit(node.value)};")

    def visit_Alloc(self, node: Alloc) -> None:
        for line in self.d.alloc(node):
            self.emit(line)

    def visit_Loop(self, node: Loop) -> None:
        for pragma in self.d.loop_pragmas(node):
            self.emit(pragma)
        self.emit(self.d.loop_header(node) + " {")
        self.block(node.body)
        self.emit("}")

    def visit_If(self, node: If) -> None:
        self.emit(f"if ({self.visit(node.cond)}) {{")
        self.block(node.body)
        self.emit("}")

    def block(self, body: tuple[Stmt, ...]) -> None:
        self.depth += 1
        for stmt in body:
            self.visit(stmt)
        self.depth -= 1


def render_kernel(kernel: Kernel, dialect: CDialect | None = None, *,
                  export: str = "") -> str:
    """C source of one kernel function (no prelude); ``export`` is put before
    the signature (e.g. a visibility attribute)."""
    dialect = dialect or CDialect()
    renderer = _CRenderer(dialect)
    renderer.depth = 0
    renderer.block(kernel.body)
    head = f"{export} " if export else ""
    return f"{head}{dialect.signature(kernel)} {{\n" + "\n".join(renderer.lines) + "\n}\n"


def render_expr(expr: Expr, dialect: CDialect | None = None) -> str:
    return _CRenderer(dialect or CDialect()).visit(expr)


def render_module(kernels: list[Kernel], dialect: CDialect | None = None,
                  extra: str = "") -> str:
    """A whole C file: the prelude, ``extra`` source, then every kernel (exported)."""
    dialect = dialect or CDialect()
    parts = [dialect.prelude, extra]
    parts += [render_kernel(k, dialect, export='__attribute__((visibility("default")))')
              for k in kernels]
    return "\n".join(p for p in parts if p)
