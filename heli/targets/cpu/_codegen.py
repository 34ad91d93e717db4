"""From a (fused) graph to one C module and a list of steps that call it.

Each node becomes a *step*: a small Python closure that takes its operands
from the environment, calls compiled code through ctypes on numpy buffers,
and stores its results.  Generated kernels (kernel IR, rendered as C) and
the hand-written templates go into one C source per compiled graph, built
once by the toolchain (cached by content); Conv, MatMul and Gemm call the
SGEMM library, with constant weights packed at compile time.

A step is made in two phases: :meth:`ModuleBuilder.add` reads the node,
registers the kernels it needs and returns a *maker*; after the library is
loaded, each maker binds its function pointers and returns the step.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heli._errors import ExecutionError
from heli.ir._graph import Graph, Node, Value
from heli.ir._ops import ExecContext
from heli.kernel import (
    Kernel,
    content_name,
    lower_elementwise,
    lower_layer_norm,
    lower_row_mean,
    lower_softmax,
    render_module,
)
from heli.ops._nn import resolve_window, window_attrs
from heli.targets.cpu import _convs, _gemm, _toolchain
from heli.targets.cpu._arena import arena_for
from heli.targets.cpu._binding import F32, Env, Maker, Step, f32
from heli.targets.cpu._binding import FLOAT as _FLOAT
from heli.targets.cpu._binding import INT as _INT
from heli.targets.cpu._binding import LONG as _LONG
from heli.targets.cpu._binding import VOID as _VOID
from heli.targets.cpu._binding import bind as _bind
from heli.targets.cpu._binding import static_shape as _shape
from heli.targets.cpu._templates import TEMPLATES


@dataclass
class _Epilogue:
    """What an anchor does after its GEMM: a bias (per output channel or
    column), a clamp, and a kernel for the rest of the group's ops."""

    bias: np.ndarray | None
    act: int
    lo: float
    hi: float
    rest: Graph | None  # elementwise body: inputs[0] is the GEMM's result
    result: Value  # the value the anchor step finally defines


class ModuleBuilder:
    """Collects the kernels and steps of one graph."""

    def __init__(self, graph: Graph, nthreads: int) -> None:
        self.graph = graph
        self.nthreads = nthreads
        self.kernels: dict[str, Kernel] = {}
        self.makers: list[Maker] = []
        self.constants = graph.constants
        self.sources: dict[str, str] = {}  # extra C functions by name (conv epilogues)
        self.arena = arena_for(graph, _is_host)
        self.step = 0  # the index of the node being added (its step)

    # -- helpers -------------------------------------------------------
    def const(self, value: Value | None) -> np.ndarray | None:
        if value is None:
            return None
        return self.constants.get(value.name)

    def output(self, value: Value, shape: tuple[int, ...] | None = None
               ) -> Callable[[], np.ndarray]:
        """What a step calls for the buffer of its result ``value`` (see ``_arena``)."""
        return self.arena.output(value.name, shape or _shape(value))

    def scratch(self, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
        """A buffer the step being added uses only while it runs."""
        return self.arena.scratch_for(self.step, tuple(shape))

    def anchor_out(self, result: Value, rest: Graph | None, shape: tuple[int, ...]
                   ) -> Callable[[], np.ndarray]:
        """The buffer an anchor's kernel writes: the group's result, or a
        scratch one when the group's remaining ops run after it."""
        return self.output(result, shape) if rest is None else self.scratch(shape)

    def kernel(self, kernel: Kernel, prefix: str) -> str:
        named = content_name(kernel, prefix)
        self.kernels.setdefault(named.name, named)
        return named.name

    def source(self) -> str:
        extra = "\n".join([TEMPLATES, *self.sources.values()])
        return render_module(list(self.kernels.values()), extra=extra)

    def build(self) -> list[Step]:
        lib = _toolchain.compile_library(self.source(), name=f"model-{self.graph.name}")
        self.arena.allocate()
        return [make(lib) for make in self.makers]

    # -- dispatch ------------------------------------------------------
    def add(self, node: Node) -> None:
        self.step = len(self.makers)  # one maker per node: its index is the step's
        name = node.op.name
        if node.op.domain == "heli" and name == "FusedGroup":
            body = node.attr("body")
            if node.attr("kind") == "anchor":
                self.makers.append(self._anchor(body.nodes[0], body))
            else:
                self.makers.append(self._elementwise(body))
            return
        handler = _HANDLERS.get(name)
        if handler is not None:
            self.makers.append(handler(self, node))
        elif name in HOST_OPS:
            self.makers.append(_host_step(node))
        elif name in ELEMENTWISE_OPS:
            self.makers.append(self._elementwise(_single_body(node, self.constants)))
        else:  # the target claimed a node it cannot lower: a Heli bug
            raise ExecutionError(f"The cpu target has no lowering for {node.op.qualname}.")

    # -- elementwise ---------------------------------------------------
    def _elementwise(self, body: Graph) -> Maker:
        lowered = lower_elementwise(body)
        name = self.kernel(lowered.kernel, "ew")
        consts = {n: f32(np.asarray(self.constants.get(n, body.constants.get(n))))
                  for n in lowered.inputs if n in body.constants or n in self.constants}
        inputs, outputs = lowered.inputs, lowered.outputs
        news = [self.output(v) for v in body.outputs]
        nt = self.nthreads

        def make(lib: ctypes.CDLL) -> Step:
            fn = _bind(lib, name, [_VOID] * (len(inputs) + len(outputs)) + [_INT])

            fixed = {n: a.ctypes.data for n, a in consts.items()}  # taken once (1-2 us each)

            def step(env: Env) -> None:
                args = [None if n in fixed else f32(env[n]) for n in inputs]  # kept alive
                outs = [new() for new in news]
                fn(*[fixed[n] if a is None else a.ctypes.data for n, a in zip(inputs, args,
                                                                             strict=True)],
                   *[o.ctypes.data for o in outs], nt)
                for n, o in zip(outputs, outs, strict=True):
                    env[n] = o
            return step
        return make

    # -- anchors (Conv, MatMul, Gemm) and their epilogue ----------------
    def _epilogue(self, anchor: Node, body: Graph | None, channels: int,
                  channel_axis: int) -> _Epilogue:
        """Fold what the GEMM can do itself (a constant per-channel bias add,
        then Relu or a constant Clip) and leave the rest as an elementwise body."""
        result = anchor.outputs[0]
        rank = len(_shape(result))
        rest = list(body.nodes[1:]) if body is not None else []
        consts = dict(self.constants)
        if body is not None:
            consts.update(body.constants)
        bias = None
        if len(anchor.inputs) > 2 and anchor.inputs[2] is not None and anchor.op.name == "Conv":
            bias = np.asarray(consts[anchor.inputs[2].name], np.float32).reshape(-1).copy()
        act, lo, hi = 0, -math.inf, math.inf

        if rest and rest[0].op.name == "Add" and _convs.sole_reader(rest, result, rest[0]):
            add = rest[0]
            other = add.inputs[1] if add.inputs[0].name == result.name else add.inputs[0]
            c = consts.get(other.name)
            if c is not None and _per_channel(c.shape, rank, channel_axis, channels):
                per = np.broadcast_to(np.asarray(c, np.float32).reshape(-1)
                                      if c.size == channels else c.reshape(()), (channels,))
                bias = per.copy() if bias is None else bias + per
                result = add.outputs[0]
                rest = rest[1:]
        if (rest and rest[0].op.name in ("Relu", "Clip")
                and _convs.sole_reader(rest, result, rest[0])):
            clamp = _convs.fold_clamp(rest[0], consts, lo, hi)
            if clamp is not None:
                (lo, hi), act, result, rest = clamp, 1, rest[0].outputs[0], rest[1:]
        rest_body = _convs.epilogue_body(rest, result, consts) if rest else None
        final = body.outputs[0] if body is not None else result
        return _Epilogue(bias, act, lo, hi, rest_body, final)

    def _anchor(self, anchor: Node, body: Graph | None) -> Maker:
        if body is not None:
            saved = self.constants
            self.constants = {**saved, **body.constants}
        try:
            if anchor.op.name == "Conv":
                return self._conv(anchor, body)
            if anchor.op.name == "ConvTranspose":
                return _convs.conv_transpose_step(self, anchor, body)
            if anchor.op.name == "Gemm":
                return self._gemm(anchor, body)
            return self._matmul(anchor, body)
        finally:
            if body is not None:
                self.constants = saved

    def _with_rest(self, epi: _Epilogue, core: Callable[[Env], np.ndarray], gemm_out: str
                   ) -> Callable[[ctypes.CDLL], Step]:
        """Wrap a GEMM step with the kernel of the epilogue's remaining ops."""
        if epi.rest is None:
            out_name = epi.result.name

            def make_plain(lib: ctypes.CDLL) -> Step:
                def step(env: Env) -> None:
                    env[out_name] = core(env)
                return step
            return make_plain
        rest_maker = self._elementwise(epi.rest)
        tmp = epi.rest.inputs[0].name

        def make(lib: ctypes.CDLL) -> Step:
            rest_step = rest_maker(lib)

            def step(env: Env) -> None:
                env[tmp] = core(env)
                rest_step(env)
                if tmp != gemm_out:
                    env.pop(tmp, None)
            return step
        return make

    def _conv(self, node: Node, body: Graph | None) -> Maker:
        direct = _convs.conv_step(self, node, body)  # direct / depthwise kernels
        if direct is not None:
            return direct
        x_shape, w_shape = _shape(node.inputs[0]), _shape(node.inputs[1])
        out_shape = _shape(node.outputs[0])
        n, c, h, w = x_shape
        m, cg, kh, kw = w_shape
        group = node.attr("group") or 1
        _, oh, ow = out_shape[1:]
        kernel, strides, dilations, pads = window_attrs(
            2, node.attr("kernel_shape") or (kh, kw), node.attr("strides"),
            node.attr("dilations"), node.attr("pads"))
        begins, _, _ = resolve_window((h, w), kernel, strides, dilations, pads,
                                      node.attr("auto_pad"))
        epi = self._epilogue(node, body, m, 1)
        weight = self.const(node.inputs[1])
        wname = node.inputs[1].name
        x_name = node.inputs[0].name
        geometry = (h, w, kh, kw, strides[0], strides[1], begins[0], begins[1],
                    dilations[0], dilations[1], oh, ow)
        bias = epi.bias
        act, lo, hi = epi.act, epi.lo, epi.hi
        nt = self.nthreads
        w_const = f32(weight) if weight is not None else None
        bias_ptr = bias.ctypes.data if bias is not None else None
        depthwise = group == c and m == c and cg == 1
        gemm = _gemm.library()
        raw = gemm.raw
        direct = (kh, kw) == (1, 1) and strides == (1, 1) and tuple(begins) == (0, 0) and \
            tuple(pads) == (0, 0, 0, 0)
        kdim = cg * kh * kw
        p = oh * ow
        mg = m // group
        new_y = self.anchor_out(epi.result, epi.rest, out_shape)
        new_col = None if direct or depthwise else self.scratch((c * kh * kw, p))

        if depthwise:
            def bind(lib):
                fn = _bind(lib, "heli_dwconv2d", [_VOID] * 4 + [_LONG] * 14 + [_INT, _FLOAT,
                                                                              _FLOAT, _INT])

                def core(env: Env) -> np.ndarray:
                    xa = f32(env[x_name])
                    wa = w_const if w_const is not None else f32(env[wname])
                    y = new_y()
                    b_ptr = None if bias is None else bias_ptr  # `bias` stays alive
                    fn(xa.ctypes.data, wa.ctypes.data, b_ptr, y.ctypes.data, n, c, *geometry,
                       act, lo, hi, nt)
                    return y
                return core
        else:
            def bind(lib):
                im2col = _bind(lib, "heli_im2col", [_VOID, _VOID] + [_LONG] * 13 + [_INT])

                def core(env: Env) -> np.ndarray:
                    xa = f32(env[x_name])
                    wa = w_const if w_const is not None else f32(env[wname])
                    y = new_y()
                    col = None if new_col is None else new_col()
                    for b in range(n):
                        xb = xa[b]
                        if direct:
                            src = xb.ctypes.data
                        else:
                            im2col(xb.ctypes.data, col.ctypes.data, c, *geometry, nt)
                            src = col.ctypes.data
                        for g in range(group):
                            status = raw.heli_sgemm(
                                0, 0, mg, p, kdim, 1.0, wa.ctypes.data + 4 * g * mg * kdim,
                                kdim, src + 4 * g * kdim * p, p, 0.0,
                                y[b].ctypes.data + 4 * g * mg * p, p,
                                None if bias is None else bias_ptr + 4 * g * mg,
                                0 if bias is None else 2, act, lo, hi, nt)
                            if status:
                                raise ExecutionError("The cpu Conv ran out of memory.")
                    return y
                return core
        return self._bound(bind, epi)

    def _bound(self, bind, epi: _Epilogue) -> Maker:
        holder: dict[str, Callable[[Env], np.ndarray]] = {}

        def core(env: Env) -> np.ndarray:
            return holder["core"](env)
        wrapped = self._with_rest(epi, core, "")

        def make(lib: ctypes.CDLL) -> Step:
            holder["core"] = bind(lib)
            return wrapped(lib)
        return make

    def _matmul(self, node: Node, body: Graph | None) -> Maker:
        a_val, b_val = node.inputs
        a_shape, b_shape = _shape(a_val), _shape(b_val)
        out_shape = _shape(node.outputs[0])
        k, n_ = b_shape[-2], b_shape[-1]
        mdim = a_shape[-2]
        epi = self._epilogue(node, body, n_, len(out_shape) - 1)
        new_y = self.anchor_out(epi.result, epi.rest, out_shape)
        bias = epi.bias
        bias_ptr = bias.ctypes.data if bias is not None else None
        kind = 0 if bias is None else 1
        act, lo, hi, nt = epi.act, epi.lo, epi.hi, self.nthreads
        raw = _gemm.library().raw
        b_const = self.const(b_val)
        a_name, b_name = a_val.name, b_val.name
        if b_const is not None and b_const.ndim == 2:
            packed = _gemm.pack_b(f32(b_const))
            rows = int(np.prod(a_shape[:-1], dtype=np.int64))
            pdata = packed.data.ctypes.data

            def core(env: Env) -> np.ndarray:
                xa = f32(env[a_name])
                y = new_y()
                status = raw.heli_sgemm_prepacked(
                    0, rows, n_, k, 1.0, xa.ctypes.data, k, pdata, 0.0, y.ctypes.data, n_,
                    bias_ptr, kind, act, lo, hi, nt)
                if status:
                    raise ExecutionError("The cpu MatMul ran out of memory.")
                return y
            core.keep = (packed, bias)  # the C code holds raw pointers into these
        else:
            batch = out_shape[:-2]
            count = int(np.prod(batch, dtype=np.int64)) if batch else 1

            def core(env: Env) -> np.ndarray:
                # Operands are read in place through their strides: the
                # per-head views that attention's Transposes make need no copy.
                ta, pas, lda = _matrices(env[a_name], (*batch, mdim, k), count)
                tb, pbs, ldb = _matrices(env[b_name], (*batch, k, n_), count)
                y = new_y()
                py = y.ctypes.data
                for i in range(count):
                    status = raw.heli_sgemm(
                        ta, tb, mdim, n_, k, 1.0, pas[i], lda, pbs[i], ldb, 0.0,
                        py + 4 * i * mdim * n_, n_, bias_ptr, kind, act, lo, hi, nt)
                    if status:
                        raise ExecutionError("The cpu MatMul ran out of memory.")
                return y
            core.keep = (bias,)
        return self._with_rest(epi, core, "")

    def _gemm(self, node: Node, body: Graph | None) -> Maker:
        a_val, b_val = node.inputs[0], node.inputs[1]
        c_val = node.inputs[2] if len(node.inputs) > 2 else None
        alpha, beta = float(node.attr("alpha")), float(node.attr("beta"))
        ta, tb = int(node.attr("transA")), int(node.attr("transB"))
        out_shape = _shape(node.outputs[0])
        mdim, n_ = out_shape
        a_shape = _shape(a_val)
        k = a_shape[0] if ta else a_shape[1]
        epi = self._epilogue(node, body, n_, 1)
        new_y = self.anchor_out(epi.result, epi.rest, out_shape)
        c_const = self.const(c_val)
        bias = None
        c_name = None
        if c_val is not None and beta != 0.0:
            if c_const is not None and _per_channel(c_const.shape, 2, 1, n_):
                bias = np.broadcast_to(np.asarray(c_const, np.float32).reshape(-1)
                                       if c_const.size == n_ else c_const.reshape(()),
                                       (n_,)) * np.float32(beta)
            else:
                c_name = c_val.name
        if epi.bias is not None:
            bias = epi.bias if bias is None else bias + epi.bias
        bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        bias_ptr = bias.ctypes.data if bias is not None else None
        kind = 0 if bias is None else 1
        act, lo, hi, nt = epi.act, epi.lo, epi.hi, self.nthreads
        raw = _gemm.library().raw
        b_const = self.const(b_val)
        a_name, b_name = a_val.name, b_val.name
        lda = a_shape[1]
        packed = _gemm.pack_b(f32(b_const), trans_b=bool(tb)) if b_const is not None else None
        b_shape = _shape(b_val)
        ldb = b_shape[1]

        def core(env: Env) -> np.ndarray:
            xa = f32(env[a_name])
            y = new_y()
            if c_name is not None:
                np.copyto(y, np.broadcast_to(env[c_name], out_shape))
                cbeta = beta
            else:
                cbeta = 0.0
            if packed is not None:
                status = raw.heli_sgemm_prepacked(
                    ta, mdim, n_, k, alpha, xa.ctypes.data, lda, packed.data.ctypes.data, cbeta,
                    y.ctypes.data, n_, bias_ptr, kind, act, lo, hi, nt)
            else:
                xb = f32(env[b_name])
                status = raw.heli_sgemm(
                    ta, tb, mdim, n_, k, alpha, xa.ctypes.data, lda, xb.ctypes.data, ldb, cbeta,
                    y.ctypes.data, n_, bias_ptr, kind, act, lo, hi, nt)
            if status:
                raise ExecutionError("The cpu Gemm ran out of memory.")
            return y
        core.keep = (packed, bias)
        return self._with_rest(epi, core, "")

    # -- row reductions and pooling -----------------------------------
    def _rows_kernel(self, kernel: Kernel, prefix: str, inputs: list[Value | None],
                     out: Value, consts: dict[str, np.ndarray] | None = None) -> Maker:
        name = self.kernel(kernel, prefix)
        names = [v.name for v in inputs if v is not None]
        fixed = {n: f32(self.constants[n]) for n in names if n in self.constants}
        out_name, new_y, nt = out.name, self.output(out), self.nthreads

        def make(lib: ctypes.CDLL) -> Step:
            fn = _bind(lib, name, [_VOID] * (len(names) + 1) + [_INT])

            def step(env: Env) -> None:
                args = [fixed[n] if n in fixed else f32(env[n]) for n in names]
                y = new_y()
                fn(*[a.ctypes.data for a in args], y.ctypes.data, nt)
                env[out_name] = y
            return step
        return make

    def softmax(self, node: Node) -> Maker:
        shape = _shape(node.inputs[0])
        n = shape[-1] if shape else 1
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if shape else 1
        return self._rows_kernel(lower_softmax(rows, n), "softmax", [node.inputs[0]],
                                 node.outputs[0])

    def layer_norm(self, node: Node) -> Maker:
        shape = _shape(node.inputs[0])
        axis = node.attr("axis")
        axis = axis + len(shape) if axis < 0 else axis
        n = int(np.prod(shape[axis:], dtype=np.int64))
        rows = int(np.prod(shape[:axis], dtype=np.int64))
        has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
        kernel = lower_layer_norm(rows, n, float(node.attr("epsilon")), has_bias)
        return self._rows_kernel(kernel, "layernorm", list(node.inputs), node.outputs[0])

    def row_mean(self, node: Node) -> Maker:
        shape = _shape(node.inputs[0])
        if node.op.name == "ReduceMean" and trailing_axes(node, self.constants) is None:
            return _host_step(node)  # not a mean over trailing axes: numpy semantics
        first = _reduced_from(node, self.constants)
        n = int(np.prod(shape[first:], dtype=np.int64))
        rows = int(np.prod(shape[:first], dtype=np.int64))
        return self._rows_kernel(lower_row_mean(rows, n), "rowmean", [node.inputs[0]],
                                 node.outputs[0])

    def pool(self, node: Node) -> Maker:
        n, c, h, w = _shape(node.inputs[0])
        out_shape = _shape(node.outputs[0])
        kernel, strides, dilations, pads = window_attrs(
            2, node.attr("kernel_shape"), node.attr("strides"), node.attr("dilations"),
            node.attr("pads"))
        begins, _, _ = resolve_window((h, w), kernel, strides, dilations, pads,
                                      node.attr("auto_pad"), bool(node.attr("ceil_mode")))
        is_max = int(node.op.name == "MaxPool")
        include = int(node.op.name == "AveragePool" and node.attr("count_include_pad"))
        geometry = (h, w, kernel[0], kernel[1], strides[0], strides[1], begins[0], begins[1],
                    dilations[0], dilations[1], out_shape[2], out_shape[3])
        x_name, out_name, nt = node.inputs[0].name, node.outputs[0].name, self.nthreads
        new_y = self.output(node.outputs[0])

        def make(lib: ctypes.CDLL) -> Step:
            fn = _bind(lib, "heli_pool2d", [_VOID, _VOID] + [_LONG] * 13 + [_INT, _INT, _INT])

            def step(env: Env) -> None:
                xa = f32(env[x_name])
                y = new_y()
                fn(xa.ctypes.data, y.ctypes.data, n * c, *geometry, is_max, include, nt)
                env[out_name] = y
            return step
        return make


def _matrices(x: np.ndarray, shape: tuple[int, ...], count: int
              ) -> tuple[int, list[int], int]:
    """``x`` broadcast to ``shape`` as ``count`` matrices for the SGEMM:
    (transposed?, the address of each, leading dimension).  A matrix whose
    rows or columns are contiguous is read in place (transposed in the
    second case), whatever its other strides; others are copied first."""
    x = np.broadcast_to(x if x.dtype == F32 else x.astype(F32), shape)
    layout = _layout(shape[-2], shape[-1], *x.strides[-2:])
    if layout is None:
        x = np.ascontiguousarray(x)
        layout = (0, shape[-1])
    base, batch = x.ctypes.data, x.shape[:-2]
    addresses = [base + sum(i * st for i, st in zip(index, x.strides, strict=False))
                 for index in np.ndindex(*batch)] if batch else [base]
    assert len(addresses) == count
    return layout[0], addresses, layout[1]


def _layout(rows: int, cols: int, s_r: int, s_c: int) -> tuple[int, int] | None:
    """(transposed?, leading dimension) of a rows x cols float32 matrix with
    byte strides (s_r, s_c), if the SGEMM can read it in place."""
    if rows == 1 and (cols == 1 or s_c == 4):
        return 0, cols
    if cols == 1 and s_r > 0 and s_r % 4 == 0:
        return 0, s_r // 4
    if s_c == 4 and s_r % 4 == 0 and s_r >= 4 * cols:
        return 0, s_r // 4
    if s_r == 4 and s_c % 4 == 0 and s_c >= 4 * rows:
        return 1, s_c // 4
    return None


def _per_channel(shape: tuple[int, ...], rank: int, axis: int, channels: int) -> bool:
    """Whether a constant of ``shape`` broadcast against a rank-``rank``
    result varies at most along ``axis`` (one value per channel, or one value)."""
    if len(shape) > rank:
        return False
    full = (1,) * (rank - len(shape)) + tuple(shape)
    return all(d == 1 for i, d in enumerate(full) if i != axis) and full[axis] in (1, channels)


def _reduced_from(node: Node, constants) -> int:
    """The first reduced axis of a trailing-axes mean (GlobalAveragePool: 2)."""
    shape = _shape(node.inputs[0])
    if node.op.name == "GlobalAveragePool":
        return 2
    axes = trailing_axes(node, constants)
    assert axes is not None
    return len(shape) - axes


def trailing_axes(node: Node, constants) -> int | None:
    """How many trailing axes a ReduceMean reduces, if it reduces exactly a
    trailing run of axes (else ``None``)."""
    shape = _shape(node.inputs[0])
    rank = len(shape)
    axes_value = node.inputs[1] if len(node.inputs) > 1 else None
    if axes_value is None:
        return None  # all axes or none (noop_with_empty_axes): left to ref
    axes = constants.get(axes_value.name)
    if axes is None or axes.size == 0:
        return None
    norm = sorted({int(a) + rank if int(a) < 0 else int(a) for a in axes.reshape(-1)})
    if norm != list(range(rank - len(norm), rank)):
        return None
    return len(norm)


def _single_body(node: Node, constants) -> Graph:
    """A one-node elementwise body for a node outside any fused group."""
    inputs: list[Value] = []
    consts = {}
    for v in node.inputs:
        if v is None:
            continue
        if v.name in constants:
            consts[v.name] = constants[v.name]
        elif all(i.name != v.name for i in inputs):
            inputs.append(v)
    return Graph(tuple(inputs), (node.outputs[0],), (node,), consts, name="single")


def _is_host(node: Node) -> bool:
    """Whether ``node``'s step is numpy's, which may return views of its inputs."""
    return not node.op.domain and node.op.name in HOST_OPS


def _host_step(node: Node) -> Maker:
    """Data movement (reshape, transpose, concat...) through the op's numpy
    semantics: exact for any dtype, and mostly views."""
    attrs = node.op.resolve_attrs(node.attrs)
    ins = [v.name if v is not None else None for v in node.inputs]
    outs = [v.name if v is not None else None for v in node.outputs]
    reference = node.op.reference
    if node.op.wants_ctx:  # e.g. BatchNormalization, which asks how many outputs are used
        attrs["ctx"] = ExecContext(node.name, len(outs), tuple(
            o.type if o is not None else None for o in node.outputs), _no_subgraphs, {})

    def make(lib: ctypes.CDLL) -> Step:
        def step(env: Env) -> None:
            result = reference(*[env[n] if n is not None else None for n in ins], **attrs)
            results = result if isinstance(result, tuple | list) else (result,)
            for n, r in zip(outs, results, strict=False):
                if n is not None:
                    env[n] = r
        return step
    return make


def _transpose_view(node: Node) -> Maker:
    """Transpose as a numpy view (the op's reference copies): the MatMul
    that reads it takes strided operands, other kernels copy what they need."""
    rank = len(_shape(node.inputs[0]))
    perm = node.attr("perm")
    axes = tuple(range(rank))[::-1] if perm is None else tuple(int(p) % rank for p in perm)
    x_name, out_name = node.inputs[0].name, node.outputs[0].name

    def make(lib: ctypes.CDLL) -> Step:
        def step(env: Env) -> None:
            env[out_name] = np.transpose(env[x_name], axes)
        return step
    return make


def _no_subgraphs(graph: Graph, inputs: object) -> list:
    raise AssertionError("a host step of the cpu target has no subgraph to run")


#: Ops that only move or select data, run through their numpy semantics
#: (exact for any dtype; Reshape and friends are views).  The casts, masks and
#: comparisons of attention masks (Cast, And, IsNaN...) are among them: left to
#: ``ref`` they would cut the graph into segments for a few tiny integer or
#: boolean tensors.
HOST_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat",
                      "Identity", "Shape", "Size", "Slice", "Gather", "Expand", "Where",
                      "Split", "Cast", "And", "Or", "Not", "Xor", "IsNaN", "IsInf", "Equal",
                      "Less", "LessOrEqual", "Greater", "GreaterOrEqual"})

#: Elementwise ops with a scalar rule (see heli.kernel.SCALAR_RULES).
ELEMENTWISE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Neg", "Abs", "Relu", "LeakyRelu",
    "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Erf",
    "Floor", "Ceil", "Clip", "Pow", "Gelu", "Softplus", "Elu"})

_HANDLERS: dict[str, Callable[[ModuleBuilder, Node], Maker]] = {
    "Conv": lambda b, n: b._anchor(n, None),
    "MatMul": lambda b, n: b._anchor(n, None),
    "Gemm": lambda b, n: b._anchor(n, None),
    "Softmax": ModuleBuilder.softmax,
    "LayerNormalization": ModuleBuilder.layer_norm,
    "ReduceMean": ModuleBuilder.row_mean,
    "GlobalAveragePool": ModuleBuilder.row_mean,
    "MaxPool": ModuleBuilder.pool,
    "AveragePool": ModuleBuilder.pool,
    "ConvTranspose": _convs.conv_transpose_step,
    "Transpose": lambda b, n: _transpose_view(n),
    "BatchNormalization": lambda b, n: _convs.batch_norm_step(b, n) or _host_step(n),
    "Resize": lambda b, n: _convs.resize_step(b, n) or _host_step(n),
}
