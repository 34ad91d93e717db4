"""The Heli NPU instruction set, defined once.

Each instruction is one decorated function: the decorator declares its opcode,
its queue, its fields (name, bit width, meaning, valid range) and its cost; the
function body is its reference semantics, written against the :class:`Machine`
interface that the simulator implements.  Everything else is derived from
these definitions: the binary encoder and decoder, the text assembler and
disassembler, the simulator's dispatch, the encoding tables of ``docs/npu.md``
(:mod:`heli.targets.npu.docgen`) and, later, the RTL decoder.

Instruction word (``WORD_BITS`` = 128 bits, stored as 16 little-endian bytes)::

    bits [7:0]      opcode
    bits [8:...]    the fields, packed in declaration order from bit 8 upwards
    the rest        reserved, must be zero

Unsigned fields hold ``0 .. 2**width - 1`` (some a narrower range, e.g. a row
count of at least 1), signed fields are two's complement, enum fields hold the
codes of their enum.  Build instructions by calling a definition::

    >>> from heli.targets.npu import isa
    >>> i = isa.matmul(a=0, c=0, rows=20, acc=1)
    >>> str(i)
    'matmul a=0 c=0 rows=20 acc=1'
    >>> isa.decode(i.encode()) == i
    True
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from heli.targets.npu.arith import MAX_SHIFT, requantize
from heli.targets.npu.config import LUT_ENTRIES, SRAM_ADDR_BITS, NpuConfig
from heli.targets.npu.errors import AssemblyError, DecodeError, IsaError

WORD_BITS = 128
WORD_BYTES = WORD_BITS // 8
OPCODE_BITS = 8


class Queue(IntEnum):
    """The three instruction queues (and the token channels between them)."""

    LOAD = 0
    COMPUTE = 1
    STORE = 2


class Mem(IntEnum):
    """The two on-chip SRAMs."""

    SPAD = 0  # scratchpad: rows of DIM int8
    ACC = 1   # accumulator: rows of DIM int32


# --------------------------------------------------------------------------
# fields
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One field of an instruction word."""

    name: str
    width: int
    doc: str
    signed: bool = False
    enum: type[IntEnum] | None = None
    lo: int | None = None          # narrower valid range than the width allows
    hi: int | None = None
    default: int | None = None     # may be omitted in assembly text
    hex: bool = False              # printed in hexadecimal
    lsb: int = 0                   # set when the instruction is registered

    @property
    def min(self) -> int:
        if self.lo is not None:
            return self.lo
        if self.enum is not None:
            return min(self.enum)
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        if self.hi is not None:
            return self.hi
        if self.enum is not None:
            return max(self.enum)
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1

    @property
    def type_name(self) -> str:
        if self.enum is not None:
            return self.enum.__name__
        return f"{'s' if self.signed else 'u'}{self.width}"

    def problem(self, value: int) -> str | None:
        """Why ``value`` is not valid for this field, or None."""
        if self.enum is not None:
            if value not in {int(m) for m in self.enum}:
                names = ", ".join(f"{int(m)} ({m.name.lower()})" for m in self.enum)
                return f"field {self.name} = {value} is not one of {names}"
            return None
        if not self.min <= value <= self.max:
            return f"field {self.name} = {value} is out of range {self.min}..{self.max}"
        return None

    def pack(self, value: int) -> int:
        return (int(value) & self.mask) << self.lsb

    def unpack(self, word: int) -> int:
        raw = (word >> self.lsb) & self.mask
        if self.signed and raw >> (self.width - 1):
            raw -= 1 << self.width
        return raw

    def normalize(self, value: Any) -> int:
        """A Python value (int, bool, enum member or enum name) as this field's
        value; raises IsaError naming the field."""
        if self.enum is not None and isinstance(value, str):
            try:
                return self.enum[value.upper()]
            except KeyError:
                names = ", ".join(m.name.lower() for m in self.enum)
                raise IsaError(f"field {self.name} = {value!r} is not one of {names}.") from None
        if isinstance(value, bool | np.bool_):
            value = int(value)
        if not isinstance(value, int | np.integer):
            raise IsaError(f"field {self.name} = {value!r} is not an integer.")
        value = int(value)
        if (why := self.problem(value)) is not None:
            raise IsaError(f"{why}.")
        return self.enum(value) if self.enum is not None else value

    def format(self, value: int) -> str:
        if self.enum is not None:
            return self.enum(value).name.lower()
        if self.hex:
            return f"{value:#x}"
        return str(value)

    def parse(self, text: str) -> int:
        """The value written as ``text`` in assembly (ValueError if malformed)."""
        if self.enum is not None:
            try:
                return self.enum[text.upper()]
            except KeyError:
                names = ", ".join(m.name.lower() for m in self.enum)
                raise ValueError(f"{text!r} is not one of {names}") from None
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None


def u(name: str, width: int, doc: str, **kw: Any) -> Field:
    """An unsigned field."""
    return Field(name, width, doc, **kw)


def s(name: str, width: int, doc: str, **kw: Any) -> Field:
    """A two's-complement signed field."""
    return Field(name, width, doc, signed=True, **kw)


def e(name: str, enum: type[IntEnum], width: int, doc: str, **kw: Any) -> Field:
    """An enum field."""
    return Field(name, width, doc, enum=enum, **kw)


def _addr(name: str, mem: str, doc: str) -> Field:
    return u(name, SRAM_ADDR_BITS, f"{mem} row: {doc}")


# --------------------------------------------------------------------------
# instruction definitions and instructions
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class InstrDef:
    """One instruction of the ISA: encoding, queue, semantics and cost."""

    name: str
    opcode: int
    queue: Queue | None            # None: the `queue` field says (or fetch, for halt)
    fields: tuple[Field, ...]
    semantics: Callable[..., None]
    doc: str
    cycles: Callable[[NpuConfig, Instr], int]
    check: Callable[..., str | None] | None = None
    ready: Callable[..., bool] | None = None
    halts: bool = False

    def __call__(self, **values: Any) -> Instr:
        """The instruction with these field values (defaults fill omitted ones)."""
        unknown = sorted(set(values) - {f.name for f in self.fields})
        if unknown:
            raise IsaError(f"{self.name} has no field {unknown[0]!r} "
                           f"(its fields: {self.field_list}).")
        out = []
        for f in self.fields:
            if f.name in values:
                try:
                    out.append(f.normalize(values[f.name]))
                except IsaError as err:
                    raise IsaError(f"{self.name}: {err}") from None
            elif f.default is not None:
                out.append(f.normalize(f.default))
            else:
                raise IsaError(f"{self.name}: field {f.name!r} is missing.")
        instr = Instr(self, tuple(out))
        if (why := self.problem(instr)) is not None:
            raise IsaError(f"{self.name}: {why}.")
        return instr

    def __repr__(self) -> str:
        return f"<instruction {self.name} opcode {self.opcode:#04x}>"

    @property
    def summary(self) -> str:
        return self.doc.split("\n", 1)[0]

    @property
    def field_list(self) -> str:
        return ", ".join(f.name for f in self.fields) or "none"

    @property
    def used_bits(self) -> int:
        """Bits taken by the opcode and the fields; the rest are reserved."""
        return OPCODE_BITS + sum(f.width for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def problem(self, instr: Instr) -> str | None:
        """Why the field values together are invalid (a cross-field rule), or None."""
        return None if self.check is None else self.check(**instr.fields)

    def queue_of(self, instr: Instr) -> Queue | None:
        """The queue that executes ``instr`` (None for halt, which only stops fetch)."""
        if self.queue is not None:
            return self.queue
        return None if self.halts else Queue(instr.fields["queue"])


@dataclass(frozen=True)
class Instr:
    """One instruction: a definition and its field values (in field order)."""

    defn: InstrDef
    values: tuple[int, ...]

    def __getattr__(self, name: str) -> int:
        if not name.startswith("_"):
            defn = object.__getattribute__(self, "defn")
            for f, v in zip(defn.fields, object.__getattribute__(self, "values"), strict=True):
                if f.name == name:
                    return v
        raise AttributeError(name)

    @property
    def name(self) -> str:
        return self.defn.name

    @property
    def fields(self) -> dict[str, int]:
        return {f.name: v for f, v in zip(self.defn.fields, self.values, strict=True)}

    @property
    def queue(self) -> Queue | None:
        return self.defn.queue_of(self)

    def encode(self) -> int:
        return encode(self)

    def to_bytes(self) -> bytes:
        return encode(self).to_bytes(WORD_BYTES, "little")

    def __str__(self) -> str:
        return disassemble(self)

    def __repr__(self) -> str:
        return f"Instr({disassemble(self)!r})"


INSTRUCTIONS: dict[str, InstrDef] = {}
_BY_OPCODE: dict[int, InstrDef] = {}


def instr(opcode: int, queue: Queue | None, *fields: Field,
          cycles: Callable[[NpuConfig, Instr], int],
          check: Callable[..., str | None] | None = None,
          ready: Callable[..., bool] | None = None,
          halts: bool = False) -> Callable[[Callable[..., None]], InstrDef]:
    """Registers the decorated semantics function as an instruction.

    The function takes the machine and then exactly the fields, by name; its
    docstring (first line: summary) is the instruction's documentation.
    ``check(**fields)`` states cross-field rules (an error string or None),
    ``ready(machine, **fields)`` whether the instruction may start now (token
    instructions), ``cycles(config, instr)`` its cost in the timing model.
    """

    def register(fn: Callable[..., None]) -> InstrDef:
        name = fn.__name__
        laid, lsb = [], OPCODE_BITS
        for f in fields:
            laid.append(replace(f, lsb=lsb))
            lsb += f.width
        params = list(inspect.signature(fn).parameters)[1:]
        problems = [
            (not 0 < opcode < 1 << OPCODE_BITS, f"opcode {opcode:#x} is not in 1..255"),
            (opcode in _BY_OPCODE, f"opcode {opcode:#x} is taken"),
            (name in INSTRUCTIONS, "the name is taken"),
            (lsb > WORD_BITS, f"its fields need {lsb} bits, more than {WORD_BITS}"),
            (params != [f.name for f in fields],
             f"the semantics take {params}, not the fields {[f.name for f in fields]}"),
            (queue is None and not halts and "queue" not in params, "it has no queue"),
            (not fn.__doc__, "it has no docstring"),
        ]
        for bad, why in problems:
            if bad:
                raise AssertionError(f"instruction {name}: {why}.")
        defn = InstrDef(name, opcode, queue, tuple(laid), fn, inspect.getdoc(fn) or "",
                        cycles, check, ready, halts)
        INSTRUCTIONS[name] = _BY_OPCODE[opcode] = defn
        return defn

    return register


# --------------------------------------------------------------------------
# the machine interface the semantics are written against
# --------------------------------------------------------------------------


class Machine(Protocol):
    """What an instruction's semantics may touch.  Every SRAM and DRAM access goes
    through these methods, which check bounds (and, in the simulator, races)
    and name the instruction in their errors."""

    cfg: NpuConfig
    weights: np.ndarray  # (DIM, DIM) int8: W[k, n], the stationary weights
    luts: np.ndarray     # (lut_tables, 256) int8: entry i is the output for input i - 128

    def require(self, ok: bool, message: str) -> None:
        """Raises the simulator's error (naming the instruction) unless ``ok``."""

    def sram_rows(self, operand: str, mem: Mem, base: int, rows: int, stride: int = 1,
                  outer: int = 1, ostride: int = 0, *, write: bool = False) -> np.ndarray:
        """Row addresses ``base + o*ostride + i*stride`` for ``o < outer, i < rows``
        (o-major), checked against the SRAM's size; a destination (``write``) may
        not name a row twice."""
        ...

    def sram_read(self, mem: Mem, rows: np.ndarray) -> np.ndarray:
        """A copy of those rows: (n, DIM) int8 (scratchpad) or int32 (accumulator)."""
        ...

    def sram_write(self, mem: Mem, rows: np.ndarray, values: np.ndarray) -> None:
        """Writes (n, DIM) values: int8 range for the scratchpad; wrapped to int32
        for the accumulator.  A destination that partly overlaps a source of the
        same instruction is an error (exact in-place updates are allowed)."""

    def dram_read(self, operand: str, addr: int, rows: int, stride: int,
                  nbytes: int) -> np.ndarray:
        """(rows, nbytes) uint8: row r from byte address ``addr + r*stride``."""
        ...

    def dram_write(self, operand: str, addr: int, stride: int, data: np.ndarray) -> None:
        """Writes (rows, nbytes) uint8, row r at ``addr + r*stride``; rows may not overlap."""

    def token_count(self, src: Queue, dst: Queue) -> int:
        """Tokens waiting in the channel from ``src`` to ``dst``."""
        ...

    def push_token(self, src: Queue, dst: Queue) -> None: ...

    def pop_token(self, src: Queue, dst: Queue) -> None: ...


# --------------------------------------------------------------------------
# shared pieces of the definitions
# --------------------------------------------------------------------------

_ROWS = u("rows", 16, "rows to process", lo=1)
_ROWS2 = u("rows", 12, "rows per block (inner count)", lo=1)
_OUTER = u("outer", 12, "blocks (outer count)", lo=1, default=1)
_ACC = u("acc", 1, "0: overwrite the destination; 1: combine with its contents", default=0)
_LO = s("lo", 8, "lower clip bound (int8)", default=-128)
_HI = s("hi", 8, "upper clip bound (int8)", default=127)
_QUEUE = e("queue", Queue, 2, "queue that executes this instruction")


def _esize(mem: int) -> int:
    return 1 if mem == Mem.SPAD else 4


def _dma_cycles(cfg: NpuConfig, i: Instr) -> int:
    nbytes = i.rows * i.cols * _esize(i.mem)
    return cfg.dma_latency + -(-nbytes // cfg.dram_bytes_per_cycle)


def _vector_cycles(cfg: NpuConfig, i: Instr) -> int:
    return cfg.vector_latency + i.rows * getattr(i, "outer", 1)


def _clip_check(lo: int, hi: int, **_: int) -> str | None:
    return None if lo <= hi else f"the clip bounds lo = {lo} and hi = {hi} are reversed"


def _cols_fit(m: Machine, cols: int, what: str = "cols") -> None:
    m.require(cols <= m.cfg.dim,
              f"{what} = {cols} exceeds the array dimension DIM = {m.cfg.dim}.")


# --------------------------------------------------------------------------
# control and synchronization
# --------------------------------------------------------------------------


@instr(0x01, None, cycles=lambda cfg, i: 0, halts=True)
def halt(m: Machine) -> None:
    """End of the program.

    The fetch unit stops at `halt`, which must be the program's last
    instruction; the machine stops once the three queues have drained.  Every
    token pushed must have been waited for by then.
    """


@instr(0x02, None, _QUEUE, e("dst", Queue, 2, "queue that receives the token"),
       cycles=lambda cfg, i: 1,
       check=lambda queue, dst: None if queue != dst else "a queue cannot push to itself",
       ready=lambda m, queue, dst: m.token_count(queue, dst) < m.cfg.token_depth)
def push(m: Machine, queue: Queue, dst: Queue) -> None:
    """Send one token from `queue` to `dst`.

    Executes in `queue` after all earlier instructions of `queue` have completed
    (their SRAM and DRAM writes are visible), then adds one token to the
    channel `queue -> dst`.  Stalls while that channel already holds
    `token_depth` tokens.
    """
    m.push_token(queue, dst)


@instr(0x03, None, _QUEUE, e("src", Queue, 2, "queue whose token is awaited"),
       cycles=lambda cfg, i: 1,
       check=lambda queue, src: None if queue != src else "a queue cannot wait on itself",
       ready=lambda m, queue, src: m.token_count(src, queue) > 0)
def wait(m: Machine, queue: Queue, src: Queue) -> None:
    """Wait for one token from `src`, then consume it.

    Later instructions of `queue` start only after the token arrived, so they
    see every write that `src` completed before its matching `push`.
    """
    m.pop_token(src, queue)


# --------------------------------------------------------------------------
# DMA
# --------------------------------------------------------------------------

_DMA_FIELDS = (
    e("mem", Mem, 1, "SRAM side: spad (int8 elements) or acc (int32 elements)"),
    _addr("sram", "SRAM", "first row on the SRAM side (one row per DRAM row)"),
    u("dram", 32, "byte address of the first DRAM row", hex=True),
    u("stride", 32, "bytes from the start of one DRAM row to the next"),
    _ROWS,
    u("cols", 8, "elements per row, at most DIM", lo=1),
)


@instr(0x10, Queue.LOAD, *_DMA_FIELDS, cycles=_dma_cycles)
def dma_load(m: Machine, mem: Mem, sram: int, dram: int, stride: int, rows: int,
             cols: int) -> None:
    """Copy a 2-D tile from DRAM to the scratchpad or the accumulator.

    For r < rows: lanes 0..cols-1 of SRAM row `sram + r` get `cols` elements
    read from DRAM byte `dram + r*stride` (int8, or little-endian int32 for the
    accumulator); lanes cols..DIM-1 of the row are set to 0.  `stride` 0 repeats
    one DRAM row (e.g. a bias broadcast into every accumulator row).
    """
    _cols_fit(m, cols)
    dst = m.sram_rows("destination", mem, sram, rows, write=True)
    data = m.dram_read("source", dram, rows, stride, cols * _esize(mem))
    tile = np.zeros((rows, m.cfg.dim), np.int8 if mem == Mem.SPAD else np.int32)
    tile[:, :cols] = data.view(np.int8 if mem == Mem.SPAD else np.dtype("<i4"))
    m.sram_write(mem, dst, tile)


@instr(0x11, Queue.STORE, *_DMA_FIELDS, cycles=_dma_cycles)
def dma_store(m: Machine, mem: Mem, sram: int, dram: int, stride: int, rows: int,
              cols: int) -> None:
    """Copy a 2-D tile from the scratchpad or the accumulator to DRAM.

    For r < rows: lanes 0..cols-1 of SRAM row `sram + r` are written to DRAM
    at byte `dram + r*stride` (int8, or little-endian int32 from the
    accumulator).  The DRAM rows may not overlap (`stride` >= the row's bytes
    when rows > 1).
    """
    _cols_fit(m, cols)
    src = m.sram_rows("source", mem, sram, rows)
    tile = m.sram_read(mem, src)[:, :cols]
    tile = tile.astype(np.int8 if mem == Mem.SPAD else np.dtype("<i4"))
    m.dram_write("destination", dram, stride,
                 np.ascontiguousarray(tile).view(np.uint8).reshape(rows, -1))


# --------------------------------------------------------------------------
# matrix engine
# --------------------------------------------------------------------------


@instr(0x20, Queue.COMPUTE,
       _addr("src", "scratchpad", "weight row k = 0 (lane n holds W[k, n])"),
       u("rows", 8, "weight rows K, at most DIM", lo=1),
       cycles=lambda cfg, i: cfg.dim)
def load_weights(m: Machine, src: int, rows: int) -> None:
    """Load a K x DIM weight block into the systolic array.

    W[k, n] = scratchpad[src + k][n] for k < rows; rows k >= `rows` of W are 0.
    The weights stay until the next `load_weights` (weight-stationary).
    """
    _cols_fit(m, rows, "rows")
    w = np.zeros((m.cfg.dim, m.cfg.dim), np.int8)
    w[:rows] = m.sram_read(Mem.SPAD, m.sram_rows("source", Mem.SPAD, src, rows))
    m.weights[...] = w


@instr(0x21, Queue.COMPUTE,
       _addr("a", "scratchpad", "first input row (lane k = input channel k)"),
       u("a_stride", 8, "input rows between consecutive rows of a block", default=1),
       u("a_ostride", 16, "input rows between consecutive blocks", default=0),
       _addr("c", "accumulator", "first output row (lane n = output channel n)"),
       u("c_ostride", 16, "output rows between consecutive blocks", default=0),
       _ROWS2, _OUTER, _ACC,
       cycles=lambda cfg, i: i.rows * i.outer + 2 * cfg.dim)
def matmul(m: Machine, a: int, a_stride: int, a_ostride: int, c: int, c_ostride: int,
           rows: int, outer: int, acc: int) -> None:
    """Stream input rows through the array: C = A @ W, or C += A @ W (int32).

    For o < outer, i < rows, with x = scratchpad[a + o*a_ostride + i*a_stride]
    and y = accumulator row c + o*c_ostride + i:
    y[n] = (acc ? y[n] : 0) + sum_k x[k] * W[k, n], wrapping modulo 2**32.
    The two strides let one instruction apply a convolution tap to a whole
    NHWC plane (input row stride = convolution stride, block = output row).
    """
    dst = m.sram_rows("output", Mem.ACC, c, rows, 1, outer, c_ostride, write=True)
    src = m.sram_rows("input", Mem.SPAD, a, rows, a_stride, outer, a_ostride)
    y = m.sram_read(Mem.SPAD, src).astype(np.int64) @ m.weights.astype(np.int64)
    if acc:
        y += m.sram_read(Mem.ACC, dst)
    m.sram_write(Mem.ACC, dst, y)


# --------------------------------------------------------------------------
# vector unit
# --------------------------------------------------------------------------


@instr(0x30, Queue.COMPUTE,
       e("mem", Mem, 1, "SRAM to fill"),
       _addr("dst", "SRAM", "first row"), _ROWS,
       s("value", 32, "value of every lane (int8 range for the scratchpad)"),
       cycles=_vector_cycles,
       check=lambda mem, dst, rows, value: (
           None if mem == Mem.ACC or -128 <= value <= 127
           else f"the scratchpad fill value {value} is outside the int8 range -128..127"))
def vfill(m: Machine, mem: Mem, dst: int, rows: int, value: int) -> None:
    """Fill rows with a constant: SRAM[dst + i][*] = value for i < rows.

    Clears accumulators, or writes an activation zero point into the padding
    of a convolution input.
    """
    where = m.sram_rows("destination", mem, dst, rows, write=True)
    m.sram_write(mem, where, np.full((rows, m.cfg.dim), value, np.int64))


@instr(0x31, Queue.COMPUTE,
       _addr("dst", "accumulator", "first row to update"),
       _addr("bias", "accumulator", "the bias row"), _ROWS,
       cycles=_vector_cycles)
def vbias(m: Machine, dst: int, bias: int, rows: int) -> None:
    """Add a bias row to accumulator rows: acc[dst + i][n] += acc[bias][n].

    For i < rows, wrapping modulo 2**32.  The bias row may not lie inside
    the updated rows.
    """
    where = m.sram_rows("destination", Mem.ACC, dst, rows, write=True)
    b = m.sram_read(Mem.ACC, m.sram_rows("bias", Mem.ACC, bias, 1)).astype(np.int64)
    m.sram_write(Mem.ACC, where, m.sram_read(Mem.ACC, where) + b)


@instr(0x32, Queue.COMPUTE,
       _addr("src", "accumulator", "first input row"),
       _addr("dst", "scratchpad", "first output row"), _ROWS,
       s("mult", 32, "fixed-point multiplier M (int32)"),
       u("shift", 6, "right shift s (0..63)"),
       s("zp", 8, "output zero point"), _LO, _HI,
       cycles=_vector_cycles, check=_clip_check)
def requant(m: Machine, src: int, dst: int, rows: int, mult: int, shift: int, zp: int,
            lo: int, hi: int) -> None:
    """Requantize int32 accumulators to int8 with one multiplier and shift.

    For i < rows and every lane: x = acc[src + i][n],
    spad[dst + i][n] = clamp(round_half_even(x * mult / 2**shift) + zp, lo, hi).
    The product is exact (64-bit); see "Requantization" for the rounding.
    lo = zp fuses a ReLU.
    """
    where = m.sram_rows("destination", Mem.SPAD, dst, rows, write=True)
    x = m.sram_read(Mem.ACC, m.sram_rows("source", Mem.ACC, src, rows))
    m.sram_write(Mem.SPAD, where, requantize(x, mult, shift, zp, lo, hi))


@instr(0x33, Queue.COMPUTE,
       _addr("src", "accumulator", "first input row"),
       _addr("dst", "scratchpad", "first output row"), _ROWS,
       _addr("params", "accumulator",
             "row of per-lane multipliers; the next row holds per-lane shifts"),
       s("zp", 8, "output zero point"), _LO, _HI,
       cycles=_vector_cycles, check=_clip_check)
def requant_pc(m: Machine, src: int, dst: int, rows: int, params: int, zp: int, lo: int,
               hi: int) -> None:
    """Requantize with a multiplier and shift per lane (per output channel).

    M[n] = acc[params][n], s[n] = acc[params + 1][n] (each s[n] in 0..63), then
    as `requant`: spad[dst + i][n] =
    clamp(round_half_even(acc[src + i][n] * M[n] / 2**s[n]) + zp, lo, hi).
    """
    where = m.sram_rows("destination", Mem.SPAD, dst, rows, write=True)
    mult, shift = m.sram_read(Mem.ACC, m.sram_rows("params", Mem.ACC, params, 2))
    bad = np.flatnonzero((shift < 0) | (shift > MAX_SHIFT))
    if bad.size:
        m.require(False, f"the shift in lane {bad[0]} of accumulator row {params + 1} "
                  f"is {shift[bad[0]]}, outside 0..{MAX_SHIFT}.")
    x = m.sram_read(Mem.ACC, m.sram_rows("source", Mem.ACC, src, rows))
    m.sram_write(Mem.SPAD, where, requantize(x, mult, shift, zp, lo, hi))


@instr(0x34, Queue.COMPUTE,
       _addr("a", "scratchpad", "first row of the first operand"),
       _addr("b", "scratchpad", "first row of the second operand"),
       _addr("dst", "accumulator", "first output row"), _ROWS,
       s("za", 8, "zero point of a", default=0), s("ma", 16, "multiplier of a"),
       s("zb", 8, "zero point of b", default=0), s("mb", 16, "multiplier of b"),
       _ACC, cycles=_vector_cycles)
def vadd(m: Machine, a: int, b: int, dst: int, rows: int, za: int, ma: int, zb: int,
         mb: int, acc: int) -> None:
    """Elementwise add of two int8 tiles, rescaled into the accumulator.

    For i < rows: acc[dst + i] = v, or += v when acc = 1, where
    v = (a_i - za) * ma + (b_i - zb) * mb,
    a_i = spad[a + i], b_i = spad[b + i], wrapping modulo 2**32.  A following
    `requant` (mult 1, shift s) gives QLinearAdd: ma / 2**s and mb / 2**s are the
    ratios of the input scales to the output scale.
    """
    where = m.sram_rows("destination", Mem.ACC, dst, rows, write=True)
    x = m.sram_read(Mem.SPAD, m.sram_rows("a", Mem.SPAD, a, rows)).astype(np.int64)
    y = m.sram_read(Mem.SPAD, m.sram_rows("b", Mem.SPAD, b, rows)).astype(np.int64)
    out = (x - za) * ma + (y - zb) * mb
    if acc:
        out += m.sram_read(Mem.ACC, where)
    m.sram_write(Mem.ACC, where, out)


@instr(0x35, Queue.COMPUTE,
       _addr("src", "scratchpad", "first input row"),
       _addr("dst", "scratchpad", "first output row (may equal src)"), _ROWS, _LO, _HI,
       cycles=_vector_cycles, check=_clip_check)
def vclip(m: Machine, src: int, dst: int, rows: int, lo: int, hi: int) -> None:
    """Clip int8 rows: spad[dst + i][n] = clamp(spad[src + i][n], lo, hi).

    ReLU of a quantized tensor is lo = its zero point; ReLU6 also sets hi.
    """
    where = m.sram_rows("destination", Mem.SPAD, dst, rows, write=True)
    x = m.sram_read(Mem.SPAD, m.sram_rows("source", Mem.SPAD, src, rows))
    m.sram_write(Mem.SPAD, where, np.clip(x, lo, hi))


_POOL_FIELDS = (
    _addr("src", "scratchpad", "first input row"),
    u("src_stride", 8, "input rows between consecutive rows of a block", default=1),
    u("src_ostride", 16, "input rows between consecutive blocks", default=0),
)


@instr(0x36, Queue.COMPUTE, *_POOL_FIELDS,
       _addr("dst", "scratchpad", "first output row"),
       u("dst_ostride", 16, "output rows between consecutive blocks", default=0),
       _ROWS2, _OUTER, _ACC, cycles=_vector_cycles)
def vmaxpool(m: Machine, src: int, src_stride: int, src_ostride: int, dst: int,
             dst_ostride: int, rows: int, outer: int, acc: int) -> None:
    """One max-pooling window step: D = S, or D = max(D, S) (int8, strided).

    For o < outer, i < rows, with x = spad[src + o*src_ostride + i*src_stride]
    and d = spad[dst + o*dst_ostride + i]: d = acc ? max(d, x) : x.  One step
    per window tap; acc = 0 (a plain strided copy) for the first tap.
    """
    where = m.sram_rows("destination", Mem.SPAD, dst, rows, 1, outer, dst_ostride, write=True)
    x = m.sram_read(Mem.SPAD, m.sram_rows("source", Mem.SPAD, src, rows, src_stride, outer,
                                          src_ostride))
    if acc:
        x = np.maximum(x, m.sram_read(Mem.SPAD, where))
    m.sram_write(Mem.SPAD, where, x)


@instr(0x37, Queue.COMPUTE, *_POOL_FIELDS,
       _addr("dst", "accumulator", "first output row"),
       u("dst_ostride", 16, "output rows between consecutive blocks", default=0),
       _ROWS2, _OUTER, s("zp", 8, "input zero point", default=0), _ACC,
       cycles=_vector_cycles)
def vsumpool(m: Machine, src: int, src_stride: int, src_ostride: int, dst: int,
             dst_ostride: int, rows: int, outer: int, zp: int, acc: int) -> None:
    """One sum-pooling window step: D = S - zp, or D += S - zp (int32).

    For o < outer, i < rows, with x = spad[src + o*src_ostride + i*src_stride]
    and d = acc[dst + o*dst_ostride + i]: d = (acc ? d : 0) + (x - zp),
    wrapping modulo 2**32.  Average pooling is the sum of the taps followed by
    a `requant` whose multiplier includes 1 / (window size).
    """
    where = m.sram_rows("destination", Mem.ACC, dst, rows, 1, outer, dst_ostride, write=True)
    x = m.sram_read(Mem.SPAD, m.sram_rows("source", Mem.SPAD, src, rows, src_stride, outer,
                                          src_ostride)).astype(np.int64) - zp
    if acc:
        x += m.sram_read(Mem.ACC, where)
    m.sram_write(Mem.ACC, where, x)


_TABLE = u("table", 4, "lookup table number (below lut_tables)", default=0)


@instr(0x38, Queue.COMPUTE,
       _addr("src", "scratchpad", "first of ceil(256 / DIM) rows holding the table"),
       _TABLE, cycles=lambda cfg, i: cfg.lut_rows)
def lut_load(m: Machine, src: int, table: int) -> None:
    """Load a 256-entry int8 lookup table from the scratchpad.

    The rows src .. src + ceil(256/DIM) - 1, read lane by lane, hold the
    entries in order; entry j is the output for the input value j - 128.
    """
    m.require(table < m.cfg.lut_tables,
              f"table {table} does not exist (lut_tables = {m.cfg.lut_tables}).")
    rows = m.sram_read(Mem.SPAD, m.sram_rows("table", Mem.SPAD, src, m.cfg.lut_rows))
    m.luts[table] = rows.reshape(-1)[:LUT_ENTRIES]


@instr(0x39, Queue.COMPUTE,
       _addr("src", "scratchpad", "first input row"),
       _addr("dst", "scratchpad", "first output row (may equal src)"), _ROWS, _TABLE,
       cycles=_vector_cycles)
def vlut(m: Machine, src: int, dst: int, rows: int, table: int) -> None:
    """Lookup-table activation: spad[dst + i][n] = T[spad[src + i][n] + 128].

    T is lookup table `table` (see `lut_load`); any int8 -> int8 function of
    one quantized value (sigmoid, tanh, GELU, hard-swish...) is one table.
    """
    m.require(table < m.cfg.lut_tables,
              f"table {table} does not exist (lut_tables = {m.cfg.lut_tables}).")
    where = m.sram_rows("destination", Mem.SPAD, dst, rows, write=True)
    x = m.sram_read(Mem.SPAD, m.sram_rows("source", Mem.SPAD, src, rows))
    m.sram_write(Mem.SPAD, where, m.luts[table][x.astype(np.int64) + 128])


# --------------------------------------------------------------------------
# binary encoding
# --------------------------------------------------------------------------


def encode(instr: Instr) -> int:
    """The instruction word as an unsigned 128-bit integer."""
    word = instr.defn.opcode
    for f, v in zip(instr.defn.fields, instr.values, strict=True):
        word |= f.pack(v)
    return word


def decode(word: int | bytes, index: int | None = None) -> Instr:
    """The instruction in a 128-bit word (an int, or 16 little-endian bytes).

    Raises DecodeError for an unknown opcode, set reserved bits, a field value
    out of range or fields that contradict each other; ``index`` (the word's
    position in a program) is named in the message.
    """
    where = "" if index is None else f" (instruction {index})"
    if isinstance(word, bytes | bytearray | memoryview):
        if len(word) != WORD_BYTES:
            raise DecodeError(f"an instruction word{where} is {WORD_BYTES} bytes, "
                              f"not {len(word)}.")
        word = int.from_bytes(word, "little")
    if not 0 <= word < 1 << WORD_BITS:
        raise DecodeError(f"the instruction word {word:#x}{where} does not fit in "
                          f"{WORD_BITS} bits.")

    def fail(why: str) -> DecodeError:
        return DecodeError(f"cannot decode instruction word {word:#034x}{where}: {why}.")

    defn = _BY_OPCODE.get(word & ((1 << OPCODE_BITS) - 1))
    if defn is None:
        raise fail(f"unknown opcode {word & 0xFF:#04x}")
    if word >> defn.used_bits:
        raise fail(f"reserved bits [{WORD_BITS - 1}:{defn.used_bits}] of {defn.name} are "
                   f"set ({word >> defn.used_bits:#x})")
    values = []
    for f in defn.fields:
        raw = f.unpack(word)
        if (why := f.problem(raw)) is not None:
            raise fail(f"{defn.name} {why}")
        values.append(f.enum(raw) if f.enum is not None else raw)
    instr = Instr(defn, tuple(values))
    if (why := defn.problem(instr)) is not None:
        raise fail(f"{defn.name}: {why}")
    return instr


def encode_program(instrs: Iterable[Instr]) -> bytes:
    """The program as bytes: 16 little-endian bytes per instruction."""
    return b"".join(i.to_bytes() for i in instrs)


def decode_program(data: bytes | bytearray | memoryview) -> list[Instr]:
    """The instructions of a binary program (DecodeError names the bad word)."""
    data = bytes(data)
    if len(data) % WORD_BYTES:
        raise DecodeError(f"a program of {len(data)} bytes is not a whole number of "
                          f"{WORD_BYTES}-byte instruction words.")
    return [decode(data[k:k + WORD_BYTES], k // WORD_BYTES)
            for k in range(0, len(data), WORD_BYTES)]


# --------------------------------------------------------------------------
# assembly text
# --------------------------------------------------------------------------


def disassemble(instrs: Instr | Iterable[Instr], *, full: bool = False) -> str:
    """Assembly text: ``mnemonic field=value ...``, one instruction per line.

    Fields equal to their default are left out unless ``full``.
    """
    if isinstance(instrs, Instr):
        parts = [instrs.name]
        for f, v in zip(instrs.defn.fields, instrs.values, strict=True):
            if full or f.default is None or v != f.default:
                parts.append(f"{f.name}={f.format(v)}")
        return " ".join(parts)
    return "".join(disassemble(i, full=full) + "\n" for i in instrs)


_COMMENT = re.compile(r"[#;].*")
_EQUALS = re.compile(r"\s*=\s*")


def assemble_line(text: str, line: int = 1) -> Instr | None:
    """The instruction on one line of assembly (None for a blank or comment line)."""
    code = _EQUALS.sub("=", _COMMENT.sub("", text)).replace(",", " ").split()
    if not code:
        return None

    def fail(why: str) -> AssemblyError:
        return AssemblyError(f"line {line}: {why}.", line)

    mnemonic = code[0].lower()
    defn = INSTRUCTIONS.get(mnemonic)
    if defn is None:
        raise fail(f"unknown instruction {code[0]!r}")
    values: dict[str, int] = {}
    for token in code[1:]:
        name, eq, value = token.partition("=")
        if not eq or not name or not value:
            raise fail(f"{token!r} is not of the form field=value")
        if name in values:
            raise fail(f"field {name!r} is given twice")
        try:
            f = defn.field(name)
        except KeyError:
            raise fail(f"{defn.name} has no field {name!r} (its fields: {defn.field_list})"
                       ) from None
        try:
            values[name] = f.parse(value)
        except ValueError as err:
            raise fail(f"the value of {name}: {err}") from None
    try:
        return defn(**values)
    except IsaError as err:
        raise fail(str(err).rstrip(".")) from None


def assemble(text: str) -> list[Instr]:
    """The instructions of an assembly program.

    One instruction per line: a mnemonic then ``field=value`` pairs (in any
    order, separated by spaces or commas); fields with a default may be left
    out.  ``#`` or ``;`` starts a comment.  Errors name the line.
    """
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if (i := assemble_line(line, n)) is not None:
            out.append(i)
    return out


def instructions() -> Sequence[InstrDef]:
    """Every instruction definition, by opcode."""
    return [_BY_OPCODE[k] for k in sorted(_BY_OPCODE)]
