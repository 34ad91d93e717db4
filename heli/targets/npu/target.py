"""The ``npu`` target: Heli's reference NPU behind the target API.

:meth:`NpuTarget.supports` accepts the integer ops of :mod:`heli.ops._npu_int`
(``heli:QConv``, ``QMatMul``, ``QAdd``, ``QMaxPool``) whose static shapes fit
the configured SRAMs after tiling; :meth:`NpuTarget.compile` lowers a segment
to one program (:mod:`heli.targets.npu.lower`), and the executable runs it on
the bit-exact simulator.  Float graphs reach it through quantization; a
quantized model (QDQ or QOperator, from :mod:`heli.quant` or ONNX Runtime)
compiles as it is, :meth:`NpuTarget.prepare` fusing its chains into integer
ops (:class:`heli.passes.QdqToInt`)::

    qgraph = heli.quant.quantize(model, samples, outputs=True)
    model = heli.compile(qgraph, target="npu")   # the rest on cpu, then ref
    model = heli.compile("model.int8.onnx", target="npu")

``fallback=("ref",)`` instead runs the rest on the float golden model, which
makes the whole result bit-exact with ``heli.compile(qgraph, "ref")``.

The configuration is :class:`NpuConfig`: ``NpuTarget(NpuConfig(dim=8))``, or
for the registered instance ``CompileOptions.extra["npu_config"]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from heli._errors import ExecutionError
from heli.ir._graph import Graph, Node
from heli.target import SUPPORTED, CompileOptions, Executable, Support, Target
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.lower import (
    SUPPORTED_OPS,
    NpuCompileError,
    Program,
    from_matrix,
    lower,
    matrix_shape,
    plan_node,
    to_matrix,
)
from heli.targets.npu.sim import Npu, RunStats

__all__ = ["NpuCompileError", "NpuExecutable", "NpuTarget"]


class NpuExecutable(Executable):
    """A lowered segment; :meth:`run` executes it on the simulator."""

    def __init__(self, graph: Graph, program: Program, check_races: bool) -> None:
        self.graph, self.program = graph, program
        self.check_races = check_races
        self.last_stats: RunStats | None = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prog = self.program
        dram = np.zeros(prog.dram_bytes, np.uint8)
        dram[:prog.image.size] = prog.image
        npu = Npu(prog.config, dram)
        for v in self.graph.inputs:
            addr, shape = prog.tensors[v.name]
            x = np.asarray(feeds[v.name])
            if x.dtype != np.int8 or tuple(x.shape) != shape:
                raise ExecutionError(f"The NPU input {v.name!r} must be int8 of shape {shape}, "
                                     f"not {x.dtype} of shape {x.shape}.")
            npu.write_dram(addr, to_matrix(x))
        self.last_stats = npu.run(prog.instrs, check_races=self.check_races)
        out = {}
        for v in self.graph.outputs:
            addr, shape = prog.tensors[v.name]
            out[v.name] = from_matrix(npu.read_dram(addr, matrix_shape(shape)), shape)
        return out

    def estimate(self, **kw):
        """The cycle model's report of this program, per layer."""
        from heli.targets.npu.cycles import estimate

        return estimate(self.program.instrs, self.program.config, layers=self.program.layers,
                        **kw)


class NpuTarget(Target):
    name = "npu"
    description = "Heli reference NPU (int8 systolic array), bit-exact simulator"

    def __init__(self, config: NpuConfig | None = None) -> None:
        self.config = config if config is not None else NpuConfig()

    def capabilities(self) -> dict[str, object]:
        cfg = self.config
        return {"ops": [f"heli:{name}" for name in SUPPORTED_OPS], "dtypes": ["int8", "int32"],
                "array": f"{cfg.dim}x{cfg.dim} int8 systolic",
                "SRAM": f"{cfg.spad_bytes // 1024} KiB scratchpad + {cfg.acc_bytes // 1024} KiB "
                        f"accumulator", "DRAM": f"{cfg.dram_bytes_per_cycle} B/cycle"}

    def prepare(self, graph: Graph) -> Graph:
        """Fuse a quantized model's QDQ / QOperator chains into the integer ops
        the NPU runs (:class:`heli.passes.QdqToInt`), so a model quantized by
        :mod:`heli.quant` or ONNX Runtime compiles as it is."""
        from heli.passes import QdqToInt

        return QdqToInt().apply(graph)

    def supports(self, node: Node) -> Support:
        plan = plan_node(node, self.config)
        return Support(False, plan) if isinstance(plan, str) else SUPPORTED

    def compile(self, graph: Graph, options: CompileOptions) -> NpuExecutable:
        cfg = options.extra.get("npu_config", self.config) if options.extra else self.config
        return NpuExecutable(graph, lower(graph, cfg), check_races=True)
