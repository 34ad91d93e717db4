"""The ``cpu`` target: fused kernels generated as C, compiled with the system
C compiler, run through ctypes on numpy buffers.

* **Capabilities** (:data:`CAPABILITIES`): float32 only; per op a check of
  its attributes and shapes (static shapes; Conv 2-D NCHW; Softmax over the
  last axis...).  Data movement (Reshape, Transpose, Concat...) runs through
  numpy for any dtype.  Everything else is refused with a reason, and the
  partitioner hands it to ``ref``.
* **Compile**: the :class:`~heli.passes.Fusion` pass with this target's
  :meth:`CpuTarget.fusion_rules` (Conv/MatMul/Gemm + bias + activation +
  residual; elementwise chains), then one C module for the graph (kernel IR
  for elementwise groups, softmax, layer normalization and means; templates
  for im2col, depthwise convolution and pooling) built by ``_toolchain``
  (content-addressed cache, AVX-512/AVX2/portable flags, Heli's thread pool).
  Conv (im2col or direct 1x1), MatMul and Gemm call the packed SGEMM of
  ``_gemm`` with the bias and ReLU/Clip in its epilogue; constant MatMul/Gemm
  weights are packed at compile time.
* **Memory**: the intermediate tensors and scratch buffers of a compiled
  graph live in one arena, allocated once and placed by the memory planner
  (``_arena``); runs of one executable are serialized.
* **Threads**: ``$HELI_NUM_THREADS`` (default: the CPUs this process may use),
  on one thread pool per process (``kernels/threadpool.c``); ``$HELI_SPIN_US``
  is how long its idle workers spin before they sleep (default 100).
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Callable, Mapping

import numpy as np

from heli.ir._graph import Graph, Node, Value
from heli.ir._types import DType, TensorType
from heli.kernel import elementwise_supported
from heli.passes._fusion import Fusion, FusionRules
from heli.target import SUPPORTED, CompileOptions, Executable, Support, Target

__all__ = ["CAPABILITIES", "CpuExecutable", "CpuTarget"]


def _is_f32(value: Value | None) -> bool:
    t = value.type if value is not None else None
    return isinstance(t, TensorType) and t.dtype == DType.FLOAT32 and t.is_static


def _all_f32(node: Node) -> Support:
    for v in list(node.inputs) + list(node.outputs):
        if v is not None and not _is_f32(v):
            return Support(False, f"the cpu target runs float32 tensors of static shape only "
                                  f"({v.name!r} is {v.type})")
    return SUPPORTED


def _elementwise(node: Node) -> Support:
    if not elementwise_supported(node):
        return _all_f32(node) or Support(False, "not an elementwise op it can lower")
    return SUPPORTED


def _conv(node: Node) -> Support:
    answer = _all_f32(node)
    if not answer:
        return answer
    if len(node.inputs[0].tensor_type.shape) != 4:
        return Support(False, "only 2-D convolutions (NCHW) run on cpu")
    return SUPPORTED


def _matmul(node: Node) -> Support:
    answer = _all_f32(node)
    if not answer:
        return answer
    if any(len(v.tensor_type.shape) < 2 for v in node.inputs):
        return Support(False, "MatMul of a vector runs on ref")
    return SUPPORTED


def _check_gemm(node: Node) -> Support:
    return _all_f32(node)


def _softmax(node: Node) -> Support:
    answer = _all_f32(node)
    if not answer:
        return answer
    rank = len(node.inputs[0].tensor_type.shape)
    if node.attr("axis") not in (-1, rank - 1):
        return Support(False, "Softmax runs on cpu over the last axis only")
    return SUPPORTED


def _layer_norm(node: Node) -> Support:
    answer = _all_f32(node)
    if not answer:
        return answer
    if any(o is not None for o in node.outputs[1:]):
        return Support(False, "LayerNormalization's Mean/InvStdDev outputs run on ref")
    shape = node.inputs[0].tensor_type.shape
    axis = node.attr("axis")
    axis = axis + len(shape) if axis < 0 else axis
    n = int(np.prod(shape[axis:], dtype=np.int64))
    for v in node.inputs[1:]:
        if v is not None and int(np.prod(v.tensor_type.shape, dtype=np.int64)) != n:
            return Support(False, "a broadcast LayerNormalization scale or bias runs on ref")
    return SUPPORTED


def _reduce_mean(node: Node) -> Support:
    for v in (node.inputs[0], node.outputs[0]):
        if not _is_f32(v):
            return Support(False, f"the cpu target runs float32 tensors of static shape only "
                                  f"({v.name!r} is {v.type})")
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return Support(False, "ReduceMean runs on cpu with constant trailing axes only")
    return SUPPORTED  # the axes' values are checked at compile time (they are constants)


def _global_pool(node: Node) -> Support:
    answer = _all_f32(node)
    if answer and len(node.inputs[0].tensor_type.shape) < 3:
        return Support(False, "GlobalAveragePool needs rank 3 or more")
    return answer


def _pool(node: Node) -> Support:
    answer = _all_f32(node)
    if not answer:
        return answer
    if len(node.inputs[0].tensor_type.shape) != 4:
        return Support(False, "only 2-D pooling runs on cpu")
    if len(node.outputs) > 1 and node.outputs[1] is not None:
        return Support(False, "MaxPool's Indices output runs on ref")
    if node.op.name == "AveragePool" and node.attr("ceil_mode"):
        return Support(False, "AveragePool with ceil_mode runs on ref")
    return SUPPORTED


def _conv_transpose(node: Node) -> Support:
    answer = _all_f32(node)
    if not answer:
        return answer
    from heli.targets.cpu._convs import conv_transpose_supported

    reason = conv_transpose_supported(node)
    return SUPPORTED if reason is None else Support(False, reason)


def _batch_norm(node: Node) -> Support:
    answer = _all_f32(node)
    if not answer:
        return answer
    if any(o is not None for o in node.outputs[1:]) or node.attr("training_mode"):
        return Support(False, "training-mode BatchNormalization runs on ref")
    return SUPPORTED  # non-constant parameters run through numpy on cpu


def _resize(node: Node) -> Support:
    for v in (node.inputs[0], node.outputs[0]):
        if not _is_f32(v):
            return Support(False, f"the cpu target runs float32 tensors of static shape only "
                                  f"({v.name!r} is {v.type})")
    if node.attr("mode") != "nearest":
        return Support(False, f"Resize mode {node.attr('mode')!r} runs on ref")
    return SUPPORTED  # non-constant scales or sizes run through numpy on cpu


def _host(node: Node) -> Support:
    if node.op.wants_ctx:
        return Support(False, "this data-movement op needs the ref executor")
    return SUPPORTED


#: What the cpu target runs: op name -> check of one node.
CAPABILITIES: dict[str, Callable[[Node], Support]] = {
    "Conv": _conv, "MatMul": _matmul, "Gemm": _check_gemm,
    "Softmax": _softmax, "LayerNormalization": _layer_norm, "ReduceMean": _reduce_mean,
    "GlobalAveragePool": _global_pool, "MaxPool": _pool, "AveragePool": _pool,
    "ConvTranspose": _conv_transpose, "BatchNormalization": _batch_norm, "Resize": _resize,
}


def _capabilities() -> dict[str, Callable[[Node], Support]]:
    from heli.targets.cpu._codegen import ELEMENTWISE_OPS, HOST_OPS

    table = dict(CAPABILITIES)
    table.update({name: _elementwise for name in ELEMENTWISE_OPS})
    table.update({name: _host for name in HOST_OPS})
    return table


#: ``HELI_PROFILE=1``: time every step by kind, print a table at exit (see ``_profile``).
_PROFILE = os.environ.get("HELI_PROFILE", "") not in ("", "0")


@functools.lru_cache(maxsize=8)
def _have_compiler(cc: str) -> bool:
    return bool(cc.split()) and shutil.which(cc.split()[0]) is not None


class CpuExecutable(Executable):
    """A graph compiled to steps over one shared library."""

    def __init__(self, graph: Graph, steps: list, frees: list[tuple[str, ...]]) -> None:
        self.graph = graph
        self._steps = list(zip(steps, frees, strict=True))
        self._constants = dict(graph.constants)
        self._outputs = [v.name for v in graph.outputs]
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Every run writes the same preallocated arena (see _arena): one at a time.
        with self._lock:
            if _PROFILE:
                return self._run_profiled(feeds)
            env = self._begin(feeds)
            for step, frees in self._steps:
                step(env)
                for name in frees:
                    env.pop(name, None)
            return self._finish(env)

    def _begin(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(self._constants)
        env.update(feeds)
        return env

    def _finish(self, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: env[name] for name in self._outputs}

    def _run_profiled(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`run`, timing each step by its kind (``HELI_PROFILE=1``)."""
        from heli.targets.cpu._profile import PROFILE

        return PROFILE.run(self, feeds)

    def serialize(self) -> bytes:
        """The libraries, the fused graph and its constants (see ``_artifact``)."""
        from heli.targets.cpu import _artifact

        return _artifact.serialize(self)


class CpuTarget(Target):
    name = "cpu"
    description = "generated C kernels (kernel IR, thread pool, AVX-512/AVX2) with a packed SGEMM"

    def __init__(self) -> None:
        self._table = _capabilities()

    def capabilities(self) -> dict[str, object]:
        from heli.targets.cpu._toolchain import host_isa

        return {"ops": sorted(self._table), "dtypes": ["float32"],
                "kernels": f"C for {host_isa()}", "threads": "HELI_NUM_THREADS"}

    def supports(self, node: Node) -> Support:
        if node.op.domain == "heli" and node.op.name == "FusedGroup":
            for inner in node.attr("body").nodes:
                answer = self.supports(inner)
                if not answer:
                    return answer
            return SUPPORTED
        if node.op.domain:
            return Support(False, f"the cpu target has no kernel for {node.op.qualname}")
        check = self._table.get(node.op.name)
        if check is None:
            return Support(False, f"the cpu target has no kernel for {node.op.name}")
        if not _have_compiler(os.environ.get("CC") or "cc"):
            return Support(False, "no C compiler was found (set CC)")
        return check(node)

    def fusion_rules(self) -> FusionRules:
        """What this target runs as one kernel (the Fusion pass reads it)."""
        from heli.targets.cpu._codegen import ELEMENTWISE_OPS

        def accepts(node: Node) -> bool:
            return bool(self.supports(node))

        return FusionRules(
            anchors=frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"}),
            epilogue=ELEMENTWISE_OPS,
            elementwise=ELEMENTWISE_OPS,
            dtypes=frozenset({DType.FLOAT32}),
            accepts=accepts,
        )

    def compile(self, graph: Graph, options: CompileOptions) -> Executable:
        from heli.ir._verify import verify
        from heli.targets.cpu import _toolchain
        from heli.targets.cpu._codegen import ModuleBuilder
        from heli.targets.cpu._convs import split_batch_norms

        fused = Fusion(self.fusion_rules()).apply(split_batch_norms(graph))
        if options.debug:
            verify(fused)
        builder = ModuleBuilder(fused, _toolchain.num_threads())
        for node in fused.nodes:
            builder.add(node)
        steps = builder.build()
        return CpuExecutable(fused, steps, _frees(fused))

    def deserialize(self, payload: bytes, options: CompileOptions) -> Executable:
        """Load saved code: no C compiler, no graph pass (see ``_artifact``)."""
        from heli.targets.cpu import _artifact

        return _artifact.deserialize(payload, options)

    def host_fingerprint(self) -> dict[str, str]:
        """ISA level, machine, OS, C ABI, libc and sanitizer of this host's kernels."""
        from heli.targets.cpu import _artifact

        return _artifact.host_fingerprint()


def _frees(graph: Graph) -> list[tuple[str, ...]]:
    """For each node, the values whose last reader it is (dropped after it runs)."""
    keep = {v.name for v in graph.outputs} | set(graph.constants) | {
        v.name for v in graph.inputs}
    last: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None:
                last[v.name] = index
    frees: list[list[str]] = [[] for _ in graph.nodes]
    for name, index in last.items():
        if name not in keep:
            frees[index].append(name)
    return [tuple(f) for f in frees]
