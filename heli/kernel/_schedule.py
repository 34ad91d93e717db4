"""Schedule primitives: functions from a kernel to a kernel that change how
its loops run, never what it computes.

* :func:`split` ``i`` into ``i_o`` x ``i_i`` (a guard covers a ragged tail);
* :func:`reorder` a perfectly nested band of loops;
* :func:`vectorize` an innermost loop (SIMD);
* :func:`parallel` a loop across threads;
* :func:`unroll` a loop by copying its body.

Each names loops by their variable and raises :class:`KernelError` when the
request does not fit the kernel (no such loop, a band that is not perfectly
nested, a vectorized loop with loops inside...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from heli.kernel._ir import (
    Alloc,
    Const,
    If,
    Kernel,
    KernelError,
    Let,
    Loop,
    Op,
    Stmt,
    Transformer,
    Var,
    find_loop,
    loops,
    substitute,
)


def _rewrite_loop(kernel: Kernel, var: str, fn: Callable[[Loop], Stmt | tuple[Stmt, ...]]
                  ) -> Kernel:
    find_loop(kernel, var)  # a clear error when there is no such loop

    class _Rewrite(Transformer):
        def visit_Loop(self, node: Loop):
            if node.var == var:
                return fn(node)
            return super().visit_Loop(node)

    return _Rewrite().visit(kernel)


def _names_in_use(kernel: Kernel) -> set[str]:
    names = {p.name for p in kernel.params}
    names.update(lp.var for lp in loops(kernel))

    class _Collect(Transformer):
        def visit_Let(self, node: Let):
            names.add(node.name)
            return super().visit_Let(node)

        def visit_Alloc(self, node: Alloc):
            names.add(node.name)
            return node

    _Collect().visit(kernel)
    return names


def split(kernel: Kernel, var: str, factor: int, outer: str | None = None,
          inner: str | None = None) -> Kernel:
    """Split loop ``var`` into ``outer`` (``var_o``) and ``inner`` (``var_i``,
    extent ``factor``); an extent that ``factor`` does not divide gets a guard.
    The outer loop keeps the loop's kind, except that a vectorized loop's
    vector part is the inner one."""
    if not isinstance(factor, int) or factor < 1:
        raise KernelError(f"split factor must be a positive integer, not {factor!r}.")
    outer = outer or f"{var}_o"
    inner = inner or f"{var}_i"
    taken = _names_in_use(kernel)
    for name in (outer, inner):
        if name in taken:
            raise KernelError(f"split: the name {name!r} is already used in {kernel.name!r}.")

    def fn(loop: Loop) -> Stmt:
        index = Op("add", (Op("mul", (Var(outer), Const(factor, "i64"))), Var(inner)))
        if loop.start:
            index = Op("add", (index, Const(loop.start, "i64")))
        body = tuple(substitute(s, {var: index}) for s in loop.body)
        if loop.extent % factor:
            body = (If(Op("lt", (index, Const(loop.start + loop.extent, "i64"))), body),)
        outer_count = -(-loop.extent // factor)
        inner_kind = "vectorize" if loop.kind == "vectorize" else "serial"
        outer_kind = "serial" if loop.kind == "vectorize" else loop.kind
        inner_loop = Loop(inner, factor, body, inner_kind, loop.reductions)
        return Loop(outer, outer_count, (inner_loop,), outer_kind, loop.reductions)

    return _rewrite_loop(kernel, var, fn)


def reorder(kernel: Kernel, order: Sequence[str]) -> Kernel:
    """Permute a perfectly nested band of loops (each the only statement of
    the one around it) into ``order``, outermost first."""
    order = list(order)
    if len(set(order)) != len(order):
        raise KernelError(f"reorder: {order!r} names a loop twice.")
    band: list[Loop] = []
    for loop in loops(kernel):
        if loop.var in order:
            band.append(loop)
            break
    if not band:
        raise KernelError(f"reorder: kernel {kernel.name!r} has none of the loops {order!r}.")
    while len(band) < len(order):
        body = band[-1].body
        if len(body) != 1 or not isinstance(body[0], Loop):
            raise KernelError(
                f"reorder: the loops {order!r} are not a perfectly nested band in "
                f"{kernel.name!r} (loop {band[-1].var!r} holds more than one loop).")
        band.append(body[0])
    if {lp.var for lp in band} != set(order):
        raise KernelError(
            f"reorder: the band starting at {band[0].var!r} is "
            f"{[lp.var for lp in band]!r}, not a permutation of {order!r}.")
    by_var = {lp.var: lp for lp in band}
    innermost_body = band[-1].body
    if any(by_var[v].kind == "vectorize" for v in order[:-1]):
        raise KernelError("reorder: a vectorized loop must stay innermost.")
    nest: tuple[Stmt, ...] = innermost_body
    for var in reversed(order):
        nest = (by_var[var].replace(body=nest),)
    top = band[0].var
    return _rewrite_loop(kernel, top, lambda _loop: nest[0])


def vectorize(kernel: Kernel, var: str) -> Kernel:
    """Run innermost loop ``var`` with SIMD instructions."""
    def fn(loop: Loop) -> Stmt:
        if any(isinstance(s, Loop) for s in loops(loop)[1:]):
            raise KernelError(f"vectorize: loop {var!r} is not innermost.")
        return loop.replace(kind="vectorize")

    return _rewrite_loop(kernel, var, fn)


def parallel(kernel: Kernel, var: str) -> Kernel:
    """Run loop ``var``'s iterations across threads (not nested in another
    parallel loop)."""
    def fn(loop: Loop) -> Stmt:
        if any(inner.kind == "parallel" for inner in loops(loop)[1:]):
            raise KernelError(f"parallel: loop {var!r} holds a parallel loop already.")
        return loop.replace(kind="parallel")

    outer_parallel = []

    class _Check(Transformer):
        depth_parallel = 0

        def visit_Loop(self, node: Loop):
            if node.var == var and self.depth_parallel:
                outer_parallel.append(node.var)
            inc = node.kind == "parallel"
            self.depth_parallel += inc
            result = super().visit_Loop(node)
            self.depth_parallel -= inc
            return result

    _Check().visit(kernel)
    if outer_parallel:
        raise KernelError(f"parallel: loop {var!r} is inside a parallel loop already.")
    return _rewrite_loop(kernel, var, fn)


def unroll(kernel: Kernel, var: str, max_extent: int = 64) -> Kernel:
    """Replace loop ``var`` by ``extent`` copies of its body, ``var`` set to
    each value in turn (names declared in the body get a per-copy suffix)."""
    def fn(loop: Loop) -> tuple[Stmt, ...]:
        if loop.extent > max_extent:
            raise KernelError(
                f"unroll: loop {var!r} has {loop.extent} iterations, more than {max_extent}.")
        if loop.kind == "parallel":
            raise KernelError(f"unroll: loop {var!r} is parallel.")
        declared = _declared(loop.body)
        copies: list[Stmt] = []
        for i in range(loop.extent):
            renames = {name: f"{name}_u{i}" for name in declared}
            mapping = {name: Var(new, "f32") for name, new in renames.items()}
            mapping[var] = Const(loop.start + i, "i64")
            for stmt in loop.body:
                copies.append(_Rename(renames, mapping).visit(stmt))
        return tuple(copies)

    return _rewrite_loop(kernel, var, fn)


def _declared(body: tuple[Stmt, ...]) -> set[str]:
    names: set[str] = set()

    class _Collect(Transformer):
        def visit_Let(self, node: Let):
            names.add(node.name)
            return node

        def visit_Alloc(self, node: Alloc):
            names.add(node.name)
            return node

        def visit_Loop(self, node: Loop):
            names.add(node.var)
            return super().visit_Loop(node)

    _Collect().block(body)
    return names


class _Rename(Transformer):
    """Rename declared scalars, buffers and loop variables of an unrolled copy."""

    def __init__(self, renames: dict[str, str], mapping: dict[str, object]) -> None:
        self.renames = renames
        self.mapping = mapping

    def visit_Var(self, node: Var):
        if node.name in self.mapping:
            new = self.mapping[node.name]
            if isinstance(new, Var):
                return node.replace(name=new.name)  # keep the variable's own type
            return new
        return node

    def visit_Let(self, node: Let):
        return node.replace(name=self.renames.get(node.name, node.name),
                            value=self.visit(node.value))

    def visit_Assign(self, node):
        return node.replace(name=self.renames.get(node.name, node.name),
                            value=self.visit(node.value))

    def visit_Alloc(self, node: Alloc):
        return node.replace(name=self.renames.get(node.name, node.name))

    def visit_Load(self, node):
        return node.replace(buffer=self.renames.get(node.buffer, node.buffer),
                            index=self.visit(node.index))

    def visit_Store(self, node):
        return node.replace(buffer=self.renames.get(node.buffer, node.buffer),
                            index=self.visit(node.index), value=self.visit(node.value))

    def visit_Loop(self, node: Loop):
        return node.replace(var=self.renames.get(node.var, node.var),
                            body=self.block(node.body),
                            reductions=tuple((self.renames.get(n, n), op)
                                             for n, op in node.reductions))
