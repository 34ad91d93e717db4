"""Errors of the reference NPU's tools: the ISA (encoder, decoder, assembler) and
the simulator.  All are :class:`heli.HeliError` subclasses, so the CLI reports
them as one line."""

from __future__ import annotations

from heli._errors import ExecutionError, HeliError


class NpuError(HeliError):
    """Base class of the NPU's errors."""


class ConfigError(NpuError, ValueError):
    """An :class:`~heli.targets.npu.config.NpuConfig` parameter is out of range."""


class IsaError(NpuError, ValueError):
    """An instruction cannot be built: unknown field, value out of range."""


class DecodeError(IsaError):
    """A binary instruction word is malformed (unknown opcode, reserved bits set,
    field out of range)."""


class AssemblyError(IsaError):
    """Assembly text is malformed; ``line`` is the 1-based line number."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class NpuExecutionError(NpuError, ExecutionError):
    """A program did something illegal while running on the simulator: an access
    outside an SRAM or DRAM, a data race between queues, a deadlock."""
