"""The opencl target: ``supports`` claims float32, static-shape nodes of :data:`OPS`;
``compile`` makes one launch per node (elementwise: Heli's kernel IR rendered by
:class:`~heli_target_opencl.dialect.OpenCLDialect`; MatMul/Gemm: ``MATMUL_SOURCE``;
2-D Conv, grouped or depthwise: ``CONV_SOURCE`` with a following Relu/Clip fused),
all built as one OpenCL program; ``run`` enqueues them in order on one queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyopencl as cl

import heli
from heli.ir import Graph, Node, TensorType, Value, reads_of
from heli.kernel import (
    SCALAR_RULES,
    content_name,
    elementwise_supported,
    loops,
    lower_elementwise,
    render_kernel,
)
from heli.target import SUPPORTED, CompileOptions, Executable, Support, Target
from heli_target_opencl.dialect import OpenCLDialect

F32 = np.dtype(np.float32)
DIALECT = OpenCLDialect()
#: Work-items of a grid-stride (parallel) loop at most; each walks the rest.
MAX_WORK_ITEMS = 1 << 16
#: The elementwise ops claimed: those of Heli's scalar rules (all float32).
ELEMENTWISE = frozenset(SCALAR_RULES) - {"Identity"}
#: The other ops, by what they need of their operands' ranks (A/X and B/W).
RANKS = {"MatMul": lambda r: 0 not in r, "Gemm": lambda r: r == [2, 2], "Conv": lambda r: r[0] == 4}
OPS = frozenset(ELEMENTWISE | set(RANKS))

# C[b] = alpha * A[b] @ B[b] + beta * bias, A and B read through strides (so
# transposes cost nothing) and per-batch element offsets (so batch broadcasting
# is a table); TS x TS tiles of A and B are staged in local memory.
MATMUL_SOURCE = r"""
__kernel void heli_matmul(__global const float *A, __global const float *B,
                          __global const float *C, __global float *Y,
                          __global const long *aoff, __global const long *boff,
                          int M, int N, int K, long sam, long sak, long sbk, long sbn,
                          long scm, long scn, float alpha, float beta, int has_bias) {
    const int col = get_global_id(0), row = get_global_id(1), b = get_global_id(2);
    const int lc = get_local_id(0), lr = get_local_id(1);
    __local float As[TS][TS], Bs[TS][TS];
    __global const float *a = A + aoff[b];
    __global const float *bb = B + boff[b];
    float acc = 0.0f;
    for (int t = 0; t < K; t += TS) {
        const int ka = t + lc, kb = t + lr;
        As[lr][lc] = (row < M && ka < K) ? a[row * sam + ka * sak] : 0.0f;
        Bs[lr][lc] = (kb < K && col < N) ? bb[kb * sbk + col * sbn] : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < TS; ++k) acc += As[lr][k] * Bs[k][lc];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (row < M && col < N) {
        float y = alpha * acc;
        if (has_bias) y += beta * C[row * scm + col * scn];
        Y[(long)b * M * N + (long)row * N + col] = y;
    }
}
"""

# Conv as an implicit GEMM per (image, group): W[oc, k] @ im2col(X)[k, pixel],
# the im2col operand gathered straight from X into the local tile (zero outside
# the padding), then bias and a clamp (Relu, Clip or none) as the epilogue.
CONV_SOURCE = r"""
__kernel void heli_conv(__global const float *X, __global const float *W,
                        __global const float *Bias, __global float *Y, int C, int H, int IW,
                        int OC, int OW, int P, int KH, int KW, int SH, int SW, int PH, int PW,
                        int DH, int DW, int G, int has_bias, float lo, float hi) {
    const int col = get_global_id(0), row = get_global_id(1), z = get_global_id(2);
    const int lc = get_local_id(0), lr = get_local_id(1);
    const int cg = C / G, ocg = OC / G, g = z % G, n = z / G, K = cg * KH * KW;
    const int oy = col / OW, ox = col % OW;
    __local float As[TS][TS], Bs[TS][TS];
    __global const float *w = W + (long)g * ocg * K;
    __global const float *x = X + ((long)n * C + (long)g * cg) * H * IW;
    float acc = 0.0f;
    for (int t = 0; t < K; t += TS) {
        const int ka = t + lc, kb = t + lr, c = kb / (KH * KW), r = kb % (KH * KW);
        const int iy = oy * SH - PH + (r / KW) * DH, ix = ox * SW - PW + (r % KW) * DW;
        As[lr][lc] = (row < ocg && ka < K) ? w[(long)row * K + ka] : 0.0f;
        Bs[lr][lc] = (kb < K && col < P && iy >= 0 && iy < H && ix >= 0 && ix < IW)
                     ? x[((long)c * H + iy) * IW + ix] : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < TS; ++k) acc += As[lr][k] * Bs[k][lc];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (row < ocg && col < P) {
        const int oc = g * ocg + row;
        Y[((long)n * OC + oc) * P + col] = clamp(acc + (has_bias ? Bias[oc] : 0.0f), lo, hi);
    }
}
"""


def _pad(node: Node, axis: int, size: int, out: int, k: int, s: int, d: int) -> int:
    """The padding before spatial ``axis`` (auto_pad resolved)."""
    mode = node.attr("auto_pad")
    if mode == "NOTSET":
        return (node.attr("pads") or [0, 0])[axis]
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return 0 if mode == "VALID" else total // 2 if mode == "SAME_UPPER" else total - total // 2


class OpenCLTarget(Target):
    name = "opencl"
    api_version = 1
    version = "0.1.0"
    description = "OpenCL 1.2 devices through pyopencl (e.g. PoCL on the CPU)"

    def __init__(self) -> None:
        self._context: cl.Context | None = None  # created on first compile
        self._programs: dict[str, cl.Program] = {}

    def capabilities(self) -> dict[str, object]:
        return {"ops": sorted(OPS), "dtypes": [F32.name], "device": "OpenCL (pyopencl)"}

    def supports(self, node: Node) -> Support:
        if node.op.domain or node.op.name not in OPS:
            return Support(False, f"no opencl kernel for {node.op.qualname}")
        for value in (*node.inputs, *node.outputs):
            if value is None:
                continue
            vtype = value.type
            if not isinstance(vtype, TensorType) or vtype.dtype.np != F32:
                return Support(False, f"opencl runs float32 only; {value.name!r} is {vtype}")
            if not vtype.is_static:
                return Support(False, f"opencl needs static shapes; {value.name!r} is {vtype}")
        if node.op.name in RANKS:
            ranks = [len(v.type.shape) for v in node.inputs[:2]]
            if RANKS[node.op.name](ranks):
                return SUPPORTED
            return Support(False, f"opencl cannot run {node.op.name} on operand ranks {ranks}")
        if not elementwise_supported(node):
            return Support(False, f"opencl cannot lower this {node.op.name} node")
        return SUPPORTED

    def context(self) -> tuple[cl.Context, cl.CommandQueue]:
        if self._context is None:
            try:
                self._context = cl.create_some_context(interactive=False)
            except cl.Error as error:
                raise heli.TargetError(f"No OpenCL platform could be opened: {error}.") from None
            self._queue = cl.CommandQueue(self._context)
            self.tile = 16 if self._context.devices[0].max_work_group_size >= 256 else 8
        return self._context, self._queue

    def program(self, source: str) -> cl.Program:
        """The built program of ``source``, built once per target."""
        if source not in self._programs:
            self._programs[source] = cl.Program(self.context()[0], source).build(
                options=[f"-DTS={self.tile}", "-cl-fp32-correctly-rounded-divide-sqrt"])
        return self._programs[source]

    def compile(self, graph: Graph, options: CompileOptions) -> Executable:
        for node in graph.nodes:
            answer = self.supports(node)
            if not answer:
                raise heli.TargetError(f"The opencl target cannot compile {node.op.name} "
                                       f"node {node.name!r}: {answer.reason}.")
        try:
            return OpenCLExecutable(self, graph)
        except cl.Error as error:
            raise heli.TargetError(f"OpenCL could not build {graph.name!r}: {error}.") from None


@dataclass
class _Launch:
    kernel: str
    args: tuple
    global_size: tuple[int, ...]
    local_size: tuple[int, ...] | None = None


class OpenCLExecutable(Executable):
    """A segment as a list of kernel launches over device buffers allocated once."""

    def __init__(self, target: OpenCLTarget, graph: Graph) -> None:
        self.graph = graph
        self.ctx, self.queue = target.context()
        self.tile = target.tile
        self.buffers: dict[str, cl.Buffer] = {}
        for value in graph.inputs:
            self.buffers[value.name] = self._allocate(value)
        launches: list[_Launch] = []
        sources: dict[str, str] = {}
        fused = self._epilogues(graph)
        for node in graph.nodes:
            if fused.get(id(node)) is node:
                continue  # computed by the Conv before it
            for value in node.outputs:
                self.buffers[value.name] = self._allocate(value)
            if node.op.name in ("MatMul", "Gemm"):
                launches.append(self._matmul(node))
                sources["heli_matmul"] = MATMUL_SOURCE
            elif node.op.name == "Conv":
                launches.append(self._conv(node, fused.get(id(node))))
                sources["heli_conv"] = CONV_SOURCE
            else:
                launch, source = self._elementwise(node)
                launches.append(launch)
                sources[launch.kernel] = source
        program = target.program("\n".join(sources[k] for k in sorted(sources)))
        self.launches = []
        for launch in launches:
            if not all(launch.global_size):
                continue  # an empty output: nothing to compute
            kernel = cl.Kernel(program, launch.kernel)
            kernel.set_args(*launch.args)  # launch.args keeps its buffers alive
            self.launches.append((kernel, launch.global_size, launch.local_size, launch))

    # -- buffers
    def _allocate(self, value: Value) -> cl.Buffer:
        nbytes = int(np.prod(value.type.shape, dtype=np.int64)) * F32.itemsize
        return cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, max(nbytes, 4))

    def _upload(self, array: np.ndarray) -> cl.Buffer:
        array = np.ascontiguousarray(array)
        flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
        return cl.Buffer(self.ctx, flags, hostbuf=array if array.nbytes else np.zeros(1, F32))

    def _operand(self, name: str) -> cl.Buffer:
        """The buffer of a value; weights (graph constants) are uploaded once, here."""
        if name not in self.buffers:
            self.buffers[name] = self._upload(np.asarray(self.graph.constants[name], F32))
        return self.buffers[name]

    # -- lowering
    def _epilogues(self, graph: Graph) -> dict[int, Node]:
        """The Relu or Clip (constant bounds) right after a Conv and alone reading its
        output, by ``id`` of the Conv and of itself: the Conv's kernel applies it."""
        reads = [n for x in graph.nodes for n in reads_of(x)] + [v.name for v in graph.outputs]
        found: dict[int, Node] = {}
        for conv, act in zip(graph.nodes, graph.nodes[1:], strict=False):
            out = conv.outputs[0].name
            if (conv.op.name == "Conv" and act.op.name in ("Relu", "Clip") and reads.count(out) == 1
                    and act.inputs[0].name == out
                    and all(v is None or v.name in graph.constants for v in act.inputs[1:])):
                found[id(conv)] = found[id(act)] = act
        return found

    def _conv(self, node: Node, act: Node | None) -> _Launch:
        (n, c, h, iw), (oc, _, kh, kw) = node.inputs[0].type.shape, node.inputs[1].type.shape
        oh, ow = node.outputs[0].type.shape[2:]
        (sh, sw), (dh, dw) = node.attr("strides") or (1, 1), node.attr("dilations") or (1, 1)
        ph, pw = _pad(node, 0, h, oh, kh, sh, dh), _pad(node, 1, iw, ow, kw, sw, dw)
        lo, hi, group = -np.inf, np.inf, node.attr("group")
        if act is not None and act.op.name == "Relu":
            lo = 0.0
        elif act is not None:  # Clip: absent bounds stay infinite
            bounds = (*act.inputs[1:], None, None)[:2]
            lo, hi = (d if v is None else float(self.graph.constants[v.name])
                      for v, d in zip(bounds, (lo, hi), strict=True))
        out = (act or node).outputs[0]
        self.buffers[out.name] = self._allocate(out)
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] is not None else None
        args = (self._operand(node.inputs[0].name), self._operand(node.inputs[1].name),
                self._operand(bias.name) if bias is not None else self._upload(np.zeros(1, F32)),
                self.buffers[out.name], *(np.int32(x) for x in (
                    c, h, iw, oc, ow, oh * ow, kh, kw, sh, sw, ph, pw, dh, dw, group,
                    bias is not None)), np.float32(lo), np.float32(hi))
        t = self.tile
        return _Launch("heli_conv", args, (-(-oh * ow // t) * t, -(-(oc // group) // t) * t,
                                           n * group), (t, t, 1))

    def _elementwise(self, node: Node) -> tuple[_Launch, str]:
        operands = [v for v in node.inputs if v is not None]
        consts = {v.name: self.graph.constants[v.name] for v in operands
                  if v.name in self.graph.constants}
        inputs = list({v.name: v for v in operands if v.name not in consts}.values())
        body = Graph(tuple(inputs), (node.outputs[0],), (node,), consts, name="single")
        lowered = lower_elementwise(body)
        kernel = content_name(lowered.kernel, "ocl")
        spread = [lp.extent for lp in loops(kernel) if lp.kind == "parallel"]
        size = min(spread[0], MAX_WORK_ITEMS) if spread else 1
        args = tuple(self._operand(n) for n in (*lowered.inputs, *lowered.outputs))
        return _Launch(kernel.name, args, (max(size, 1),)), render_kernel(kernel, DIALECT)

    def _matmul(self, node: Node) -> _Launch:
        a, b = (list(v.type.shape) for v in node.inputs[:2])
        alpha, beta, bias = 1.0, 0.0, None
        if node.op.name == "Gemm":
            trans_a, trans_b = bool(node.attr("transA")), bool(node.attr("transB"))
            (m, k), n = (a[::-1] if trans_a else a), (b[0] if trans_b else b[1])
            sam, sak = (1, m) if trans_a else (k, 1)
            sbk, sbn = (1, k) if trans_b else (n, 1)
            alpha, beta = float(node.attr("alpha")), float(node.attr("beta"))
            bias = node.inputs[2] if len(node.inputs) > 2 else None
            batch, a_off, b_off = 1, np.zeros(1, np.int64), np.zeros(1, np.int64)
        else:
            a = [1, *a] if len(a) == 1 else a
            b = [*b, 1] if len(b) == 1 else b
            (m, k), n = a[-2:], b[-1]
            sam, sak, sbk, sbn = k, 1, n, 1
            shape = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
            batch = int(np.prod(shape, dtype=np.int64))
            a_off, b_off = (np.broadcast_to(np.arange(np.prod(s[:-2], dtype=np.int64))
                                            .reshape(s[:-2]), shape).ravel() * s[-2] * s[-1]
                            for s in (a, b))
        scm = scn = 0
        if bias is not None:
            c = [1] * (2 - len(bias.type.shape)) + list(bias.type.shape)
            scm, scn = (c[1] if c[0] != 1 else 0), (1 if c[1] != 1 else 0)
        args = (self._operand(node.inputs[0].name), self._operand(node.inputs[1].name),
                self._operand(bias.name) if bias is not None else self._upload(np.zeros(1, F32)),
                self.buffers[node.outputs[0].name],
                *(self._upload(np.asarray(off, np.int64)) for off in (a_off, b_off)),
                *(np.int32(x) for x in (m, n, k)), *(np.int64(x) for x in (sam, sak, sbk, sbn)),
                np.int64(scm), np.int64(scn), np.float32(alpha), np.float32(beta),
                np.int32(bias is not None))
        t = self.tile
        return _Launch("heli_matmul", args, (-(-n // t) * t, -(-m // t) * t, batch), (t, t, 1))

    # -- execution
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            for value in self.graph.inputs:
                data = np.ascontiguousarray(feeds[value.name], F32)
                if data.size:
                    cl.enqueue_copy(self.queue, self.buffers[value.name], data)
            for kernel, global_size, local_size, _ in self.launches:
                cl.enqueue_nd_range_kernel(self.queue, kernel, global_size, local_size)
            outputs = {}
            for value in self.graph.outputs:
                out = np.empty(value.type.shape, F32)
                if out.size:
                    cl.enqueue_copy(self.queue, out, self._operand(value.name))
                outputs[value.name] = out
            self.queue.finish()
            return outputs
        except cl.Error as error:
            raise heli.ExecutionError(f"The OpenCL device failed running "
                                      f"{self.graph.name!r}: {error}.") from None
