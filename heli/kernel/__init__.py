"""Heli's kernel IR: a loop-level IR for one fused group of graph nodes,
schedule primitives that rewrite it, lowering from graph nodes, and a C
renderer (a dialect object other C-like languages subclass).

The cpu target uses it today; the npu and vendor targets reuse the IR and
the schedule primitives.
"""

from heli.kernel._ir import (
    DTYPES,
    LOOP_KINDS,
    OPS,
    Alloc,
    Assign,
    Buffer,
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
    Transformer,
    Var,
    Visitor,
    as_expr,
    find_loop,
    loops,
    substitute,
)
from heli.kernel._lower import (
    SCALAR_RULES,
    Lowered,
    content_name,
    default_schedule,
    elementwise_supported,
    lower_elementwise,
    lower_layer_norm,
    lower_row_mean,
    lower_softmax,
)
from heli.kernel._render import C_PRELUDE, CDialect, render_expr, render_kernel, render_module
from heli.kernel._schedule import parallel, reorder, split, unroll, vectorize

__all__ = [
    "C_PRELUDE", "DTYPES", "LOOP_KINDS", "OPS", "SCALAR_RULES",
    "Alloc", "Assign", "Buffer", "CDialect", "Const", "Expr", "If", "Kernel", "KernelError",
    "Let", "Load", "Loop", "Lowered", "Op", "Stmt", "Store", "Transformer", "Var", "Visitor",
    "as_expr", "content_name", "default_schedule", "elementwise_supported", "find_loop",
    "loops", "lower_elementwise", "lower_layer_norm", "lower_row_mean", "lower_softmax",
    "parallel", "render_expr", "render_kernel", "render_module", "reorder", "split",
    "substitute", "unroll", "vectorize",
]
