"""Render kernel IR as C.

A :class:`CDialect` holds everything that spells the IR in one C-like
language: scalar type names, literals, a ``code_for_op`` table (one
function per op of :data:`heli.kernel.OPS`), loop headers with their
pragmas, the kernel signature and a prelude of helper functions.  Another
C-like language (OpenCL C) subclasses it and overrides what differs.

The C dialect targets GCC/Clang.  A ``parallel`` loop is outlined into a
task function over a fixed chunk of its iterations (at most
:attr:`CDialect.parallel_tasks` chunks, cut by the loop's extent alone) and
run with ``heli_parallel`` (the cpu target's thread pool,
``heli/targets/cpu/kernels/threadpool.c``; thread count passed to every
kernel as ``nthreads``): the variables in scope travel in a context struct,
and each reduction gets one partial result per chunk, combined in chunk
order, so results do not depend on the thread count.  A ``vectorize`` loop
becomes ``#pragma omp simd`` with the loop's reductions (``-fopenmp-simd``:
no OpenMP runtime).  ``exp``, ``erf`` and ``sigmoid`` call prelude functions written
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
#include <limits.h>

#ifndef HELI_THREADPOOL_H
#define HELI_THREADPOOL_H
/* The cpu target's thread pool (heli/targets/cpu/kernels/threadpool.h):
 * runs fn(ctx, task) for every task in [0, ntasks) on up to nthreads threads. */
typedef void (*heli_task_fn)(void *ctx, long task);
void heli_parallel(long ntasks, heli_task_fn fn, void *ctx, int nthreads);
#endif

#ifndef HELI_PRELUDE
#define HELI_PRELUDE
/* exp for float32 (Cephes expf), branch-free so that it vectorizes.  n is
 * x / ln 2 rounded to nearest by the 1.5 * 2^23 trick rather than floorf,
 * which GCC does not vectorize without -fno-trapping-math; and 2^n is built
 * through memcpy, not a union, which GCC keeps in memory (no vector type). */
static inline float heli_expf(float x) {
    x = x < -87.5f ? -87.5f : (x > 88.5f ? 88.5f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

static inline float heli_sigmoidf(float x) { return 1.0f / (1.0f + heli_expf(-x)); }

/* tanh for float32 (Cephes tanhf): an odd polynomial below 0.625, else
 * 1 - 2 / (exp(2|x|) + 1); both computed so that it vectorizes (libm's
 * tanhf does not). */
static inline float heli_tanhf(float x) {
    float a = fabsf(x);
    float z = x * x;
    float s = x + x * z * ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z
                             - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                           - 3.33332819422e-1f);
    float big = 1.0f - 2.0f / (heli_expf(2.0f * a) + 1.0f);
    big = x < 0.0f ? -big : big;
    return a < 0.625f ? s : big;
}

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
    """C99 (GNU) with ``omp simd`` pragmas and Heli's thread pool."""

    name = "c"
    prelude = C_PRELUDE
    type_names = {"f32": "float", "i64": "long", "bool": "int"}
    indent_unit = "    "
    #: Outline parallel loops into task functions for ``heli_parallel``
    #: (a dialect without that runtime sets False and spells them in
    #: :meth:`loop_pragmas`).
    outline_parallel = True
    #: A parallel loop runs as at most this many tasks (chunks of iterations
    #: fixed by its extent, not by the thread count).
    parallel_tasks = 64
    #: The identity of each reduction op, by scalar type.
    reduction_identity = {
        ("add", "f32"): "0.0f", ("mul", "f32"): "1.0f", ("max", "f32"): "(-INFINITY)",
        ("min", "f32"): "INFINITY", ("add", "i64"): "0L", ("mul", "i64"): "1L",
        ("max", "i64"): "LONG_MIN", ("min", "i64"): "LONG_MAX",
    }

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
        "tanh": _call("heli_tanhf"), "erf": _call("heli_erff"), "sigmoid": _call("heli_sigmoidf"),
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
        if loop.kind == "parallel" and not self.outline_parallel:
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
    """Renders statements as lines of C.  ``scopes`` tracks what each block
    declares (name -> (kind, C type), kind "ptr", "array" or "scalar"), so a
    parallel loop knows what its outlined task function must be handed."""

    def __init__(self, dialect: CDialect, kernel_name: str = "k",
                 functions: list[str] | None = None, counter: list[int] | None = None,
                 threads: str = "nthreads") -> None:
        self.d = dialect
        self.lines: list[str] = []
        self.depth = 1
        self.kernel_name = kernel_name
        self.functions = functions if functions is not None else []  # outlined tasks
        self.counter = counter if counter is not None else [0]
        self.threads = threads  # the thread count expression at this point
        self.scopes: list[dict[str, tuple[str, str]]] = [{}]

    def emit(self, text: str) -> None:
        self.lines.append(self.d.indent_unit * self.depth + text)

    def declare(self, name: str, kind: str, ctype: str) -> None:
        self.scopes[-1][name] = (kind, ctype)

    def visible(self) -> dict[str, tuple[str, str]]:
        names: dict[str, tuple[str, str]] = {}
        for scope in self.scopes:
            names.update(scope)
        return names

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
        ctype = self.d.type_names[node.dtype]
        self.emit(f"{ctype} {node.name} = {self.visit(node.value)};")
        self.declare(node.name, "scalar", ctype)

    def visit_Assign(self, node: Assign) -> None:
        self.emit(f"{node.name} = {self.visit(node.value)};")

    def visit_Store(self, node: Store) -> None:
        self.emit(f"{node.buffer}[{self.visit(node.index)}] = {self.visit(node.value)};")

    def visit_Alloc(self, node: Alloc) -> None:
        for line in self.d.alloc(node):
            self.emit(line)
        self.declare(node.name, "array", self.d.type_names[node.dtype])

    def visit_Loop(self, node: Loop) -> None:
        if node.kind == "parallel" and self.d.outline_parallel:
            self.outline(node)
            return
        for pragma in self.d.loop_pragmas(node):
            self.emit(pragma)
        self.emit(self.d.loop_header(node) + " {")
        self.block(node.body, {node.var: ("scalar", self.d.type_names["i64"])})
        self.emit("}")

    def visit_If(self, node: If) -> None:
        self.emit(f"if ({self.visit(node.cond)}) {{")
        self.block(node.body)
        self.emit("}")

    def block(self, body: tuple[Stmt, ...],
              names: dict[str, tuple[str, str]] | None = None) -> None:
        self.depth += 1
        self.scopes.append(dict(names or {}))
        for stmt in body:
            self.visit(stmt)
        self.scopes.pop()
        self.depth -= 1

    # -- parallel loops: a task function and a heli_parallel call
    def outline(self, loop: Loop) -> None:
        if loop.extent == 0:
            return
        d = self.d
        visible = self.visible()
        reductions = dict(loop.reductions)
        for name, red in reductions.items():
            if name not in visible or visible[name][0] != "scalar":
                raise KernelError(f"The reduction scalar {name!r} of parallel loop "
                                  f"{loop.var!r} is not declared before the loop.")
            dtype = _dtype_of(d, visible[name][1])
            if (red, dtype) not in d.reduction_identity or red not in d.code_for_op:
                raise KernelError(f"The {d.name} dialect cannot reduce {name!r} with {red!r}.")
        tasks = min(loop.extent, max(1, d.parallel_tasks))
        grain = -(-loop.extent // tasks)
        tasks = -(-loop.extent // grain)
        fname = f"{self.kernel_name}_task{self.counter[0]}"
        self.counter[0] += 1
        captured = {n: v for n, v in visible.items() if n not in reductions}

        # The context struct and the task function.
        fields = ["char heli_unused;"]
        for name, (kind, ctype) in captured.items():
            fields.append(f"{ctype} {name};" if kind == "scalar" else f"{ctype} *{name};")
        for name in reductions:
            fields.append(f"{visible[name][1]} *heli_part_{name};")
        unit = d.indent_unit
        head = [f"struct {fname}_ctx {{", *(unit + f for f in fields), "};",
                f"static void {fname}(void *heli_arg, long heli_task) {{",
                unit + f"const struct {fname}_ctx *heli_c = (const struct {fname}_ctx *)heli_arg;"]
        for name, (kind, ctype) in captured.items():
            if kind == "scalar":
                head.append(unit + f"{ctype} {name} = heli_c->{name};")
            else:
                qual = " restrict" if kind == "ptr" else ""
                head.append(unit + f"{ctype} *{qual} {name} = heli_c->{name};".replace("* ", "*"))
        for name, red in reductions.items():
            ctype = visible[name][1]
            head.append(unit + f"{ctype} {name} = "
                        f"{d.reduction_identity[(red, _dtype_of(d, ctype))]};")
        end = loop.start + loop.extent
        head.append(unit + f"const long heli_lo = {loop.start} + heli_task * {grain};")
        head.append(unit + f"const long heli_hi = heli_lo + {grain} < {end} ? "
                           f"heli_lo + {grain} : {end};")
        head.append(unit + f"for (long {loop.var} = heli_lo; {loop.var} < heli_hi; "
                           f"++{loop.var}) {{")
        inner = _CRenderer(d, self.kernel_name, self.functions, self.counter, threads="1")
        inner.scopes = [dict(captured), {n: visible[n] for n in reductions}]
        inner.depth = 1
        inner.block(loop.body, {loop.var: ("scalar", d.type_names["i64"])})
        tail = [unit + "}"]
        tail += [unit + f"heli_c->heli_part_{name}[heli_task] = {name};" for name in reductions]
        tail.append("}")
        self.functions.append("\n".join(head + inner.lines + tail) + "\n")

        # The call.
        self.emit("{")
        self.depth += 1
        for name in reductions:
            self.emit(f"{visible[name][1]} heli_part_{name}[{tasks}];")
        inits = [f".{n} = {n}" for n in captured]
        inits += [f".heli_part_{n} = heli_part_{n}" for n in reductions]
        self.emit(f"struct {fname}_ctx heli_ctx = {{{', '.join(inits) or '0'}}};")
        self.emit(f"heli_parallel({tasks}, {fname}, &heli_ctx, {self.threads});")
        for name, red in reductions.items():
            combined = d.code_for_op[red](name, f"heli_part_{name}[heli_i]")
            self.emit(f"for (long heli_i = 0; heli_i < {tasks}; ++heli_i) "
                      f"{name} = {combined};")
        self.depth -= 1
        self.emit("}")


def _dtype_of(dialect: CDialect, ctype: str) -> str:
    for dtype, name in dialect.type_names.items():
        if name == ctype:
            return dtype
    return ctype


def render_kernel(kernel: Kernel, dialect: CDialect | None = None, *,
                  export: str = "") -> str:
    """C source of one kernel function (no prelude), after the task
    functions of its parallel loops; ``export`` is put before the signature
    (e.g. a visibility attribute)."""
    dialect = dialect or CDialect()
    renderer = _CRenderer(dialect, kernel.name)
    renderer.depth = 0
    params = {}
    for buf in kernel.params:
        ctype = dialect.type_names[buf.dtype]
        params[buf.name] = ("ptr", f"const {ctype}" if buf.role == "in" else ctype)
    renderer.scopes = [params]
    renderer.block(kernel.body)
    head = f"{export} " if export else ""
    text = f"{head}{dialect.signature(kernel)} {{\n" + "\n".join(renderer.lines) + "\n}\n"
    return "".join(f + "\n" for f in renderer.functions) + text


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
