"""Heli's open reference NPU: a parameterized int8 accelerator (a DIM x DIM
weight-stationary systolic array with int32 accumulators, a vector unit,
scratchpad and accumulator SRAMs, a DMA engine, and load / compute / store
queues synchronized by tokens).  See ``docs/npu.md``.

* :mod:`heli.targets.npu.isa` — the instruction set, defined once (encoder,
  decoder, assembler, disassembler and reference semantics);
* :mod:`heli.targets.npu.sim` — the bit-exact functional simulator;
* :mod:`heli.targets.npu.cycles` — the cycle model (per-unit timelines, traces);
* :mod:`heli.targets.npu.arith` — the exact fixed-point arithmetic;
* :mod:`heli.targets.npu.config` — the parameters;
* :mod:`heli.targets.npu.docgen` — regenerates the encoding tables of the spec.

* :mod:`heli.targets.npu.lower` — lowering of the integer ops onto the ISA;
* :mod:`heli.targets.npu.target` — the ``npu`` target (entry point ``heli.targets``).
"""

from heli.targets.npu.config import NpuConfig
from heli.targets.npu.cycles import CycleReport, TimingParams, estimate
from heli.targets.npu.errors import (
    AssemblyError,
    ConfigError,
    DecodeError,
    IsaError,
    NpuError,
    NpuExecutionError,
)

__all__ = [
    "AssemblyError",
    "ConfigError",
    "CycleReport",
    "DecodeError",
    "IsaError",
    "NpuConfig",
    "NpuError",
    "NpuExecutionError",
    "TimingParams",
    "estimate",
]
