"""OpenCL C for Heli's kernel IR: the C dialect with what OpenCL spells differently:
``__kernel``/``__global`` signature, OpenCL built-in math, a ``parallel`` loop as a
grid-stride loop over the work-items, ``vectorize`` loops as plain loops (the
OpenCL compiler vectorizes across work-items)."""

from __future__ import annotations

from heli.kernel import Alloc, CDialect, Kernel, KernelError, Loop


def _call(name: str):
    return lambda *args: f"{name}({', '.join(args)})"


class OpenCLDialect(CDialect):
    name = "opencl"
    prelude = ""  # OpenCL C has every math function built in
    outline_parallel = False
    code_for_op = {
        **CDialect.code_for_op,
        "exp": _call("exp"), "log": _call("log"), "sqrt": _call("sqrt"),
        "rsqrt": _call("rsqrt"), "abs": _call("fabs"), "tanh": _call("tanh"),
        "erf": _call("erf"), "sigmoid": lambda a: f"(1.0f / (1.0f + exp(-{a})))",
        "pow": _call("pow"), "floor": _call("floor"), "ceil": _call("ceil"),
        "round": _call("rint"), "sin": _call("sin"), "cos": _call("cos"),
    }

    def signature(self, kernel: Kernel) -> str:
        params = []
        for buf in kernel.params:
            qual = "const " if buf.role == "in" else ""
            params.append(f"__global {qual}{self.type_names[buf.dtype]} *restrict {buf.name}")
        return f"__kernel void {kernel.name}({', '.join(params)})"

    def loop_pragmas(self, loop: Loop) -> list[str]:
        return []

    def loop_header(self, loop: Loop) -> str:
        if loop.kind != "parallel":
            return super().loop_header(loop)
        if loop.reductions:
            raise KernelError(f"The opencl dialect cannot spread the reduction loop "
                              f"{loop.var!r} over work-items.")
        end, var = loop.start + loop.extent, loop.var
        return (f"for (long {var} = {loop.start} + (long)get_global_id(0); {var} < {end}; "
                f"{var} += (long)get_global_size(0))")

    def alloc(self, node: Alloc) -> list[str]:
        return [f"{self.type_names[node.dtype]} {node.name}[{node.size}];"]
