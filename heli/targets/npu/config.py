"""Parameters of the reference NPU (one frozen dataclass shared by the ISA's cost
model, the simulator and, later, the RTL generator)."""

from __future__ import annotations

from dataclasses import dataclass

from heli.targets.npu.errors import ConfigError

#: Width of an SRAM row address in every instruction: both SRAMs hold at most
#: ``2**SRAM_ADDR_BITS`` rows.
SRAM_ADDR_BITS = 16
#: Largest array dimension the encoding can express (``cols`` and the weight
#: ``rows`` fields are 8 bits wide).
MAX_DIM = 255
#: Largest number of lookup tables (the ``table`` field is 4 bits wide).
MAX_LUT_TABLES = 16
#: Entries of one lookup table: one per int8 value.
LUT_ENTRIES = 256


@dataclass(frozen=True)
class NpuConfig:
    """One instance of the parameterized NPU.

    The defaults are the reference configuration: a 16x16 array, 256 KiB of
    scratchpad, 64 KiB of accumulator, 16 bytes per cycle to DRAM at 1 GHz.
    The latencies and queue depths only matter to the timing estimate and to
    deadlock behaviour, never to the values a program computes.
    """

    dim: int = 16                      # the systolic array is dim x dim
    spad_bytes: int = 256 * 1024       # scratchpad: rows of dim int8
    acc_bytes: int = 64 * 1024         # accumulator: rows of dim int32
    dram_bytes_per_cycle: int = 16     # DMA bandwidth
    clock_hz: int = 1_000_000_000
    dma_latency: int = 64              # cycles before the first byte of a DMA
    vector_latency: int = 4            # pipeline depth of the vector unit
    lut_tables: int = 4                # activation lookup tables
    token_depth: int = 8               # tokens one channel holds before PUSH stalls
    queue_depth: int = 32              # instructions each queue holds before fetch stalls

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"NPU configuration: {what}")

        for name in ("dim", "spad_bytes", "acc_bytes", "dram_bytes_per_cycle", "clock_hz",
                     "lut_tables", "token_depth", "queue_depth"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1,
                 f"{name} must be a positive integer, not {value!r}.")
        for name in ("dma_latency", "vector_latency"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0,
                 f"{name} must be a non-negative integer, not {value!r}.")
        need(self.dim <= MAX_DIM, f"dim = {self.dim} exceeds the encodable maximum {MAX_DIM}.")
        need(self.spad_bytes % self.dim == 0,
             f"spad_bytes = {self.spad_bytes} is not a whole number of {self.dim}-byte rows.")
        need(self.acc_bytes % (4 * self.dim) == 0,
             f"acc_bytes = {self.acc_bytes} is not a whole number of {4 * self.dim}-byte rows.")
        for name, rows in (("scratchpad", self.spad_rows), ("accumulator", self.acc_rows)):
            need(rows <= 1 << SRAM_ADDR_BITS,
                 f"the {name} has {rows} rows, more than the {1 << SRAM_ADDR_BITS} that a "
                 f"{SRAM_ADDR_BITS}-bit row address reaches.")
        need(self.spad_rows >= self.lut_rows,
             f"the scratchpad needs at least {self.lut_rows} rows to stage a lookup table.")
        need(self.lut_tables <= MAX_LUT_TABLES,
             f"lut_tables = {self.lut_tables} exceeds the encodable maximum {MAX_LUT_TABLES}.")

    @property
    def spad_rows(self) -> int:
        """Rows of the scratchpad (each ``dim`` int8 lanes)."""
        return self.spad_bytes // self.dim

    @property
    def acc_rows(self) -> int:
        """Rows of the accumulator (each ``dim`` int32 lanes)."""
        return self.acc_bytes // (4 * self.dim)

    @property
    def lut_rows(self) -> int:
        """Scratchpad rows that hold one 256-entry lookup table."""
        return -(-LUT_ENTRIES // self.dim)
