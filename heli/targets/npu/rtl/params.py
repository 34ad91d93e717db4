"""The RTL generator's parameters: an :class:`NpuConfig` checked against what the
hardware can build, before any generation starts.

The simulator accepts any :class:`NpuConfig`; the RTL is stricter:

* DIM is a power of two (2 .. 128): lane selects and the array's skew logic are
  plain bit fields, and 128 is the largest power of two the 8-bit ``cols`` /
  weight ``rows`` fields of the ISA can address;
* each SRAM holds at least one DIM x DIM tile (DIM rows): the scratchpad a
  weight block, the accumulator an output tile (and so the two rows of
  per-channel requantization parameters).
"""

from __future__ import annotations

import re
from dataclasses import asdict

from heli.targets.npu.config import SRAM_ADDR_BITS, NpuConfig
from heli.targets.npu.errors import ConfigError

#: Largest DIM the RTL builds: the largest power of two <= MAX_DIM (255).
MAX_RTL_DIM = 128


class RtlConfigError(ConfigError):
    """The parameters cannot be built as RTL (raised before any generation)."""


def _check_dim(dim: object) -> None:
    if not isinstance(dim, int) or dim < 2 or dim & (dim - 1) or dim > MAX_RTL_DIM:
        raise RtlConfigError(f"RTL: dim = {dim!r} must be a power of two between 2 and "
                             f"{MAX_RTL_DIM}.")


def rtl_config(**params: int) -> NpuConfig:
    """The :class:`NpuConfig` of these parameters, checked for the RTL (DIM first,
    so a bad DIM is named as such rather than through a derived size)."""
    if "dim" in params:
        _check_dim(params["dim"])
    return check_rtl_config(NpuConfig(**params))


def check_rtl_config(cfg: NpuConfig) -> NpuConfig:
    """``cfg`` if the RTL generator can build it; else :class:`RtlConfigError`
    naming the parameter, its value and the rule."""
    dim = cfg.dim
    _check_dim(dim)
    if cfg.spad_rows < dim:
        raise RtlConfigError(
            f"RTL: the scratchpad of {cfg.spad_bytes} bytes has {cfg.spad_rows} rows, fewer "
            f"than one {dim}x{dim} int8 tile ({dim * dim} bytes).")
    if cfg.acc_rows < dim:
        raise RtlConfigError(
            f"RTL: the accumulator of {cfg.acc_bytes} bytes has {cfg.acc_rows} rows, fewer "
            f"than one {dim}x{dim} int32 tile ({4 * dim * dim} bytes).")
    return cfg


def addr_bits(rows: int) -> int:
    """Bits of a row address of an SRAM of ``rows`` rows (at least 1)."""
    return max(1, (rows - 1).bit_length())


def rtl_params(cfg: NpuConfig) -> dict:
    """The parameters as written to ``params.json`` next to the Verilog:
    the configuration plus the sizes derived from it."""
    from heli.targets.npu.rtl.bus import DMA_ROWS
    from heli.targets.npu.rtl.sram import ACC_READ_PORTS, BANKS, SPAD_READ_PORTS

    check_rtl_config(cfg)
    return {
        **asdict(cfg),
        "spad_rows": cfg.spad_rows,
        "acc_rows": cfg.acc_rows,
        "spad_addr_bits": addr_bits(cfg.spad_rows),
        "acc_addr_bits": addr_bits(cfg.acc_rows),
        "isa_sram_addr_bits": SRAM_ADDR_BITS,
        "lut_rows": cfg.lut_rows,
        # fixed by the generator
        "sram_banks": BANKS,
        "spad_bank_read_ports": SPAD_READ_PORTS,
        "acc_bank_read_ports": ACC_READ_PORTS,
        "dma_rows_per_beat": DMA_ROWS,
    }


_SIZE = re.compile(r"(\d+)\s*([kmg]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes written as ``65536``, ``64K``, ``64KiB``, ``1M`` (binary units);
    ValueError with a sentence otherwise."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a size in bytes (e.g. 65536, 64K, 1M).")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]
