"""Cycle model of the reference NPU: per-unit timelines of a program.

:func:`estimate` takes a program (instructions, a binary or assembly text, as
:meth:`heli.targets.npu.sim.Npu.run` does) and an :class:`NpuConfig`, and
schedules it without computing any values:

* each queue (load, compute, store) executes its instructions in order;
* an instruction starts once its queue is free, its tokens are there (a
  ``wait`` after the matching ``push`` has finished, a ``push`` into a full
  channel after the ``wait`` that frees the slot has finished, exactly as in
  the simulator) and its unit (the DMA engine, shared by the load and store
  queues; the systolic array; the vector unit) is free;
* durations follow the formulas of ``docs/npu.md``, "Cycle model": DMA latency
  plus bytes / bandwidth (at least one cycle per bus beat of ``dma_rows``
  rows), systolic fill and drain with back-to-back ``matmul`` instructions
  overlapping the drain, shadow weight registers (a ``load_weights`` overlaps
  the previous ``matmul`` once that one has streamed 2·DIM - 1 cycles), vector
  rows times lane passes, and the cycles the DMA loses to the compute units on
  the SRAM banks (the compute side has priority, as in the RTL).

The :class:`CycleReport` gives the total cycles, busy cycles per unit and
queue, MAC utilization, DRAM traffic, SRAM high-water marks, a per-layer
breakdown (from a side table of instruction ranges, see :func:`estimate`) and
a Chrome-trace / Perfetto timeline (:meth:`CycleReport.write_trace`).

The model checks what the timing needs (bounds of SRAM accesses, field limits
such as ``cols <= DIM``, deadlocks, unconsumed tokens) but not data races: run
the functional simulator for those.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heli.targets.npu.config import NpuConfig
from heli.targets.npu.errors import ConfigError, NpuExecutionError
from heli.targets.npu.isa import Instr, Mem, Queue
from heli.targets.npu.sim import _as_program

#: The units an instruction occupies (None: token instructions use no unit).
UNITS = ("dma", "array", "vector")
_UNIT_OF = {"dma_load": "dma", "dma_store": "dma", "load_weights": "array",
            "matmul": "array", "push": None, "wait": None}
_TRACK_NAMES = {"load": "load queue", "compute": "compute queue", "store": "store queue",
                "dma": "DMA engine", "array": "systolic array", "vector": "vector unit"}
UNTAGGED = "(untagged)"


@dataclass(frozen=True)
class TimingParams:
    """Parameters of the cycle model that the ISA does not need.

    SRAM banking, as the RTL builds it: scratchpad row ``r`` lives in bank
    ``r % spad_banks``, accumulator row ``r`` in bank ``r % acc_banks``, each
    bank with one write port and ``spad_read_ports`` / ``acc_read_ports``
    read ports, on which the compute units have priority over the DMA.
    ``dma_rows`` is the rows of one bus beat (the DMA takes at most one beat
    per cycle).  ``vector_lanes`` is the width of
    the vector unit (None: DIM, one row per cycle).
    """

    spad_banks: int = 4
    acc_banks: int = 4
    spad_read_ports: int = 2
    acc_read_ports: int = 1
    dma_rows: int = 4
    vector_lanes: int | None = None

    def __post_init__(self) -> None:
        for name in ("spad_banks", "acc_banks", "dma_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"timing parameters: {name} must be a positive integer, "
                                  f"not {value!r}.")
        if self.vector_lanes is not None and (
                not isinstance(self.vector_lanes, int) or self.vector_lanes < 1):
            raise ConfigError(f"timing parameters: vector_lanes must be a positive integer "
                              f"or None, not {self.vector_lanes!r}.")

        for name in ("spad_read_ports", "acc_read_ports"):
            if getattr(self, name) not in (1, 2):
                raise ConfigError(f"timing parameters: {name} must be 1 or 2, not "
                                  f"{getattr(self, name)!r}.")

    def banks(self, mem: Mem) -> int:
        return self.spad_banks if mem == Mem.SPAD else self.acc_banks

    def read_ports(self, mem: Mem) -> int:
        return self.spad_read_ports if mem == Mem.SPAD else self.acc_read_ports


@dataclass(frozen=True)
class Slice:
    """One scheduled instruction."""

    pc: int
    text: str                 # its disassembly
    queue: str                # load, compute or store
    unit: str | None          # dma, array, vector or None
    start: int
    end: int                  # completion (for a matmul: after the drain)
    stall: int                # cycles lost to bank conflicts, included in [start, end)
    macs: int = 0
    dram_bytes: int = 0

    @property
    def cycles(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class LayerStats:
    """What one tagged range of instructions did."""

    name: str
    first: int                # instruction range [first, last)
    last: int
    cycles: int               # how far it advanced the finishing front (sums to the total)
    start: int                # first start / last end of its instructions (0, 0 if none)
    end: int
    busy: dict[str, int]      # busy cycles per unit
    macs: int
    dram_bytes: int
    instructions: int


@dataclass(frozen=True)
class CycleReport:
    """The schedule of one program and its summary."""

    cycles: int
    dim: int
    clock_hz: int
    busy: dict[str, int]              # per unit and per queue: cycles with work in flight
    macs: int
    dram_read_bytes: int
    dram_write_bytes: int
    spad_high_water: int              # rows: 1 + the highest scratchpad row touched
    acc_high_water: int
    bank_stall_cycles: int
    slices: list[Slice] = field(repr=False)       # in program order
    layers: list[LayerStats] = field(repr=False)

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz

    @property
    def dram_bytes(self) -> int:
        return self.dram_read_bytes + self.dram_write_bytes

    @property
    def mac_utilization(self) -> float:
        """MACs done / (DIM * DIM * total cycles)."""
        return self.macs / (self.dim * self.dim * self.cycles) if self.cycles else 0.0

    def to_chrome_trace(self) -> dict[str, Any]:
        """The timeline as a Chrome-trace / Perfetto JSON object: one track per
        queue and per unit, one slice per instruction named by its disassembly
        (timestamps in microseconds of the configured clock)."""
        us = 1e6 / self.clock_hz
        tracks = ["load", "compute", "store", *UNITS]
        tid = {name: k + 1 for k, name in enumerate(tracks)}
        events: list[dict[str, Any]] = [
            {"ph": "M", "pid": 1, "tid": 0, "name": "process_name",
             "args": {"name": "Heli NPU"}}]
        for name in tracks:
            events.append({"ph": "M", "pid": 1, "tid": tid[name], "name": "thread_name",
                           "args": {"name": _TRACK_NAMES[name]}})
        for s in self.slices:
            args = {"pc": s.pc, "start_cycle": s.start, "cycles": s.cycles,
                    "bank_stall": s.stall}
            for track in (s.queue, s.unit):
                if track is not None:
                    events.append({"ph": "X", "pid": 1, "tid": tid[track], "name": s.text,
                                   "cat": track, "ts": s.start * us, "dur": s.cycles * us,
                                   "args": args})
        if self.layers:
            layer_tid = len(tracks) + 1
            events.append({"ph": "M", "pid": 1, "tid": layer_tid, "name": "thread_name",
                           "args": {"name": "layers"}})
            for layer in self.layers:
                if layer.end > layer.start:
                    events.append({"ph": "X", "pid": 1, "tid": layer_tid, "name": layer.name,
                                   "cat": "layer", "ts": layer.start * us,
                                   "dur": (layer.end - layer.start) * us,
                                   "args": {"cycles": layer.cycles, "macs": layer.macs}})
        return {"traceEvents": events, "displayTimeUnit": "ns"}

    def write_trace(self, path: str | os.PathLike) -> Path:
        """Writes :meth:`to_chrome_trace` to ``path`` atomically (a temporary
        file in the same folder, then renamed over it)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_chrome_trace(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


# --------------------------------------------------------------------------
# what each instruction touches: its semantics run against a recording machine
# --------------------------------------------------------------------------


@dataclass
class _Footprint:
    top: dict[Mem, int]            # 1 + highest row touched, per SRAM
    writes: dict[Mem, int] = field(default_factory=lambda: {Mem.SPAD: 0, Mem.ACC: 0})
    reads: list[tuple[Mem, np.ndarray]] = field(default_factory=list)
    dram_read: int = 0
    dram_write: int = 0

    def ports_full(self, timing: TimingParams, mem: Mem) -> int:
        """Cycles in which the instruction's reads take every read port of a
        bank of ``mem``.  One port: every row it reads (the sequencer reads
        one accumulator row per cycle).  Two: the cycles in which two
        operands read one bank at once, operand streams side by side."""
        streams = [rows for m, rows in self.reads if m == mem]
        if timing.read_ports(mem) == 1:
            return sum(rows.size for rows in streams)
        worst = 0
        for k, a in enumerate(streams):
            for b in streams[k + 1:]:
                if a.size != b.size and 1 not in (a.size, b.size):
                    continue                     # not read side by side (e.g. parameters)
                banks = timing.banks(mem)
                worst = max(worst, int(np.count_nonzero(a % banks == b % banks)))
        return worst


class _Probe:
    """An :class:`isa.Machine` that records SRAM rows and DRAM bytes instead of
    moving data (reads return zeros), and checks bounds like the simulator."""

    def __init__(self, cfg: NpuConfig, timing: TimingParams) -> None:
        self.cfg, self.timing = cfg, timing
        self.weights = np.zeros((cfg.dim, cfg.dim), np.int8)
        self.luts = np.zeros((cfg.lut_tables, 256), np.int8)
        self.sizes = {Mem.SPAD: cfg.spad_rows, Mem.ACC: cfg.acc_rows}
        self.pc, self.ins = 0, None
        self.fp = _Footprint({})

    def footprint(self, pc: int, ins: Instr) -> _Footprint:
        self.pc, self.ins = pc, ins
        self.fp = _Footprint({Mem.SPAD: 0, Mem.ACC: 0})
        ins.defn.semantics(self, **ins.fields)
        return self.fp

    def require(self, ok: bool, message: str) -> None:
        if not ok:
            raise NpuExecutionError(f"instruction {self.pc} ({self.ins}) in the "
                                    f"{self.ins.queue.name.lower()} queue: {message}")

    def sram_rows(self, operand: str, mem: Mem, base: int, rows: int, stride: int = 1,
                  outer: int = 1, ostride: int = 0, *, write: bool = False) -> np.ndarray:
        size = self.sizes[Mem(mem)]
        last = base + (outer - 1) * ostride + (rows - 1) * stride
        name = "scratchpad" if mem == Mem.SPAD else "accumulator"
        self.require(last < size, f"its {operand} spans {name} rows {base}..{last}, but the "
                                  f"{name} has only {size} rows (0..{size - 1}).")
        return (base + np.arange(outer, dtype=np.int64)[:, None] * ostride
                + np.arange(rows, dtype=np.int64)[None, :] * stride).reshape(-1)

    def _touch(self, mem: Mem, rows: np.ndarray) -> None:
        if rows.size:
            self.fp.top[mem] = max(self.fp.top[mem], int(rows.max()) + 1)

    def sram_read(self, mem: Mem, rows: np.ndarray) -> np.ndarray:
        mem = Mem(mem)
        self._touch(mem, rows)
        self.fp.reads.append((mem, rows))
        return np.zeros((rows.size, self.cfg.dim), np.int8 if mem == Mem.SPAD else np.int32)

    def sram_write(self, mem: Mem, rows: np.ndarray, values: np.ndarray) -> None:
        mem = Mem(mem)
        self._touch(mem, rows)
        self.fp.writes[mem] += rows.size

    def dram_read(self, operand: str, addr: int, rows: int, stride: int,
                  nbytes: int) -> np.ndarray:
        self.fp.dram_read += rows * nbytes
        return np.zeros((rows, nbytes), np.uint8)

    def dram_write(self, operand: str, addr: int, stride: int, data: np.ndarray) -> None:
        self.fp.dram_write += data.size


# --------------------------------------------------------------------------
# durations
# --------------------------------------------------------------------------


def _unit(ins: Instr) -> str | None:
    return _UNIT_OF.get(ins.name, "vector")


def _duration(cfg: NpuConfig, timing: TimingParams, ins: Instr,
              fp: _Footprint) -> tuple[int, int]:
    """(cycles, streaming cycles): the streaming part of a matmul is when its
    inputs enter the array; the next matmul may start right after it."""
    name, dim = ins.name, cfg.dim
    if name in ("push", "wait"):
        return 1, 1
    if name in ("dma_load", "dma_store"):
        return cfg.dma_latency + _dma_transfer(cfg, timing, ins, fp), 0
    if name == "load_weights":
        return dim, dim
    if name == "matmul":
        rows = ins.rows * ins.outer
        return rows + 2 * dim - 1, rows
    rows = cfg.lut_rows if name == "lut_load" else ins.rows * getattr(ins, "outer", 1)
    lanes = timing.vector_lanes or dim
    return cfg.vector_latency + _PARAM_READS.get(name, 0) + rows * -(-dim // lanes), 0


#: Cycles an instruction reads parameter rows before its rows stream (the
#: accumulator's banks have one read port, so they are not read beside them).
_PARAM_READS = {"requant_pc": 3, "vbias": 1}


# --------------------------------------------------------------------------
# the scheduler
# --------------------------------------------------------------------------


def _dma_transfer(cfg: NpuConfig, timing: TimingParams, ins: Instr, fp: _Footprint) -> int:
    """Cycles a DMA transfer moves data: its bytes at the DRAM bandwidth, and
    at least one cycle per bus beat of ``dma_rows`` rows."""
    nbytes = fp.dram_read + fp.dram_write
    beats = -(-ins.rows // timing.dma_rows)
    return max(-(-nbytes // cfg.dram_bytes_per_cycle), beats)


@dataclass
class _Active:
    """An instruction in its SRAM access window, and what it costs the DMA."""

    unit: str
    begin: int                # SRAM access window [begin, end)
    end: int
    index: int                # its slice in ``slices``
    # a compute instruction: the share of its cycles that takes a bank port
    # the DMA may want (a write, or every read port of a bank), per SRAM
    writes: dict[Mem, float] = field(default_factory=dict)
    full: dict[Mem, float] = field(default_factory=dict)
    # a DMA transfer: its SRAM, direction, and stall cycles per cycle of
    # overlap with a compute instruction taking every port it wants
    mem: Mem = Mem.SPAD
    store: bool = False
    exposure: float = 0.0


def _compute_active(unit: str, begin: int, end: int, index: int, fp: _Footprint,
                    timing: TimingParams) -> _Active:
    span = max(end - begin, 1)
    return _Active(unit, begin, end, index,
                   writes={m: min(fp.writes[m] / span, 1.0) for m in Mem},
                   full={m: min(fp.ports_full(timing, m) / span, 1.0) for m in Mem})


def _dma_active(begin: int, end: int, index: int, ins: Instr, transfer: int,
                timing: TimingParams) -> _Active:
    """A beat of ``n`` consecutive rows covers ``min(n, banks)`` of the banks,
    so a compute access to a random bank hits it with that share; a refused
    row costs the beat a cycle, which the transfer absorbs when its beats
    arrive two or more cycles apart (the DRAM bandwidth, not the DMA, sets
    the pace)."""
    mem = Mem(ins.mem)
    beats = -(-ins.rows // timing.dma_rows)
    per_beat = transfer / beats                  # cycles between beats
    cover = min(ins.rows, timing.dma_rows, timing.banks(mem)) / timing.banks(mem)
    absorbed = min(max(per_beat - 1.0, 0.0), 1.0)
    exposure = cover * (1.0 - absorbed) / per_beat
    return _Active("dma", begin, end, index, mem=mem, store=ins.name == "dma_store",
                   exposure=exposure)


def _conflict(dma: _Active, compute: _Active) -> float:
    """Stall cycles of ``dma`` while ``compute`` runs beside it: ``p`` per
    cycle of their overlap, as long as the compute instruction lasts.  If the
    slowed transfer outlives it, the stall is what the transfer loses until
    the compute instruction ends: in A cycles it does A / (1 + p) cycles of
    work."""
    first = max(dma.begin, compute.begin)
    overlap = min(dma.end, compute.end) - first
    if overlap <= 0:
        return 0.0
    p = (compute.full if dma.store else compute.writes).get(dma.mem, 0.0) * dma.exposure
    return min(overlap * p, (compute.end - first) * p / (1.0 + p))


def _union(intervals: list[tuple[int, int]]) -> int:
    total, reach = 0, None
    for a, b in sorted(intervals):
        if reach is None or a >= reach:
            total += b - a
            reach = b
        elif b > reach:
            total += b - reach
            reach = b
    return total


def estimate(program: Sequence[Instr] | bytes | bytearray | str,
             config: NpuConfig | None = None, *, timing: TimingParams | None = None,
             layers: Sequence[tuple[int, int, str]] = ()) -> CycleReport:
    """Schedules ``program`` on the NPU ``config`` and reports its timeline.

    ``layers`` is a side table of ``(first, last, name)``: instructions
    ``first <= pc < last`` (program indices) belong to layer ``name``; the
    ranges may not overlap.  Instructions outside every range are reported
    under ``"(untagged)"`` so that the layers' cycles sum to the total.
    """
    cfg = config if config is not None else NpuConfig()
    timing = timing if timing is not None else TimingParams()
    instrs = _as_program(program)
    segments = _segments(layers, len(instrs))
    body = len(instrs) - 1                       # the last instruction is the halt
    probe = _Probe(cfg, timing)
    queue_of = [instrs[pc].queue for pc in range(body)]

    queues: dict[Queue, deque[int]] = {q: deque() for q in Queue}
    dispatched = [0] * body
    q_end = dict.fromkeys(Queue, 0)              # completion of everything started in q
    q_last: dict[Queue, Slice | None] = dict.fromkeys(Queue)
    stream_end = 0                               # when the array takes the next matmul
    mm_start: int | None = None                  # start of the last matmul (its rows' entry)
    chain_free = 0                               # the weight chain's last load_weights ended
    unit_free = dict.fromkeys(UNITS, 0)
    pushes = {(s, d): [] for s in Queue for d in Queue if s != d}
    waits = {key: [] for key in pushes}
    active: list[_Active] = []
    slices: list[Slice] = []
    weight_rows = cfg.dim
    tops = {Mem.SPAD: 0, Mem.ACC: 0}             # SRAM high-water marks
    fetch, now = 0, 0

    # the DMA's lost cycles, expected values summed over the program, and the
    # whole cycles given out so far: each transfer takes its share, rounded so
    # that the fractions (a beat meets the compute in one bank of four) add up
    lost = {"expected": 0.0, "given": 0}

    def stall_for(expected: float) -> int:
        lost["expected"] += expected
        whole = math.floor(lost["expected"] + 0.5) - lost["given"]
        lost["given"] += whole
        return whole

    def lengthen(dma: _Active, extra: float) -> None:
        """Adds ``extra`` expected stall cycles to a transfer already scheduled
        (the latest one: nothing that waits for its end has started yet, as
        that would start after the compute instruction that meets it)."""
        old = slices[dma.index]
        grow = stall_for(extra)
        if grow <= 0:
            return
        new = dataclasses.replace(old, end=old.end + grow, stall=old.stall + grow)
        slices[dma.index] = new
        dma.end += grow
        unit_free["dma"] = max(unit_free["dma"], new.end)
        q = Queue[new.queue.upper()]
        q_end[q] = max(q_end[q], new.end)
        if q_last[q] is old:
            q_last[q] = new

    def earliest(pc: int) -> int | None:
        ins, q = instrs[pc], queue_of[pc]
        t = max(dispatched[pc], q_end[q])
        prev = q_last[q]
        if ins.name == "matmul" and prev is not None and prev.unit == "array":
            # streams in behind the previous matmul, and after the weights it
            # activates have been shifted into the shadow registers
            t = max(dispatched[pc], stream_end, chain_free)
        elif ins.name == "load_weights" and prev is not None and prev.unit == "array":
            # overwrites the shadow registers once the last matmul's first row
            # has switched every PE to the active weights (2·DIM - 1 cycles)
            t = max(dispatched[pc], chain_free,
                    stream_end if mm_start is None else mm_start + 2 * cfg.dim - 1)
        if ins.name == "push":
            done = waits[q, Queue(ins.dst)]
            k = len(pushes[q, Queue(ins.dst)]) - cfg.token_depth
            if k >= 0:
                if k >= len(done):
                    return None                  # the channel is full
                t = max(t, done[k])
        elif ins.name == "wait":
            sent, k = pushes[Queue(ins.src), q], len(waits[Queue(ins.src), q])
            if k >= len(sent):
                return None                      # no token yet
            t = max(t, sent[k])
        unit = _unit(ins)
        if unit is None or unit == "array":
            return t                             # the array's two parts are tracked above
        return max(t, unit_free[unit])

    while True:
        while fetch < body and len(queues[queue_of[fetch]]) < cfg.queue_depth:
            dispatched[fetch] = now
            queues[queue_of[fetch]].append(fetch)
            fetch += 1
        best = None
        for q in Queue:
            if queues[q] and (t := earliest(queues[q][0])) is not None:
                if best is None or t < best[0]:
                    best = (t, q)
        if best is None:
            if fetch == body and not any(queues.values()):
                break
            raise _deadlock(instrs, queues, fetch, cfg)
        start, q = best
        pc = queues[q].popleft()
        ins, unit = instrs[pc], _unit(instrs[pc])
        fp = (probe.footprint(pc, ins) if unit is not None
              else _Footprint({Mem.SPAD: 0, Mem.ACC: 0}))
        cycles, stream = _duration(cfg, timing, ins, fp)
        stall = 0
        if unit is not None:
            active = [a for a in active if a.end > start]
            if unit == "dma":
                # a load writes the SRAM as the data comes back, a store reads
                # it before the data goes out
                transfer = cycles - cfg.dma_latency
                first = start if ins.name == "dma_store" else start + cfg.dma_latency
                me = _dma_active(first, first + transfer, len(slices), ins, transfer, timing)
                stall = stall_for(sum(_conflict(me, a) for a in active if a.unit != "dma"))
                me.end += stall
            else:
                # the compute units never wait: a transfer under way loses the cycles
                me = _compute_active(unit, start, start + cycles, len(slices), fp, timing)
                for a in active:
                    if a.unit == "dma" and (extra := _conflict(a, me)) > 0:
                        lengthen(a, extra)
            active.append(me)
        end = start + cycles + stall
        macs = 0
        if ins.name == "load_weights":
            weight_rows = ins.rows
            chain_free = end
        elif ins.name == "matmul":
            macs = ins.rows * ins.outer * weight_rows * cfg.dim
            stream_end = start + stream + stall
            mm_start = start
        if ins.name == "push":
            pushes[q, Queue(ins.dst)].append(end)
        elif ins.name == "wait":
            waits[Queue(ins.src), q].append(end)
        if unit is not None and unit != "array":
            unit_free[unit] = end
        q_end[q] = max(q_end[q], end)
        s = Slice(pc, str(ins), q.name.lower(), unit, start, end, stall, macs,
                  fp.dram_read + fp.dram_write)
        q_last[q] = s
        slices.append(s)
        for mem in tops:
            tops[mem] = max(tops[mem], fp.top[mem])
        now = start

    left = [f"{len(p) - len(waits[s, d])} from the {s.name.lower()} queue to the "
            f"{d.name.lower()} queue" for (s, d), p in pushes.items() if len(p) > len(waits[s, d])]
    if left:
        raise NpuExecutionError(f"the program ended with unconsumed tokens: {', '.join(left)} "
                                f"(every push needs a matching wait).")
    slices.sort(key=lambda s: s.pc)
    return _report(cfg, slices, segments, tops)


def _segments(layers: Sequence[tuple[int, int, str]], n: int) -> list[tuple[int, int, str]]:
    """The layer table checked and sorted, with the gaps filled by untagged ranges."""
    ranges = sorted((int(a), int(b), str(name)) for a, b, name in layers)
    out, pos = [], 0
    for a, b, name in ranges:
        if not 0 <= a < b <= n:
            raise ValueError(f"the layer range ({a}, {b}, {name!r}) is not a non-empty range "
                             f"of the program's {n} instructions.")
        if a < pos:
            raise ValueError(f"the layer range ({a}, {b}, {name!r}) overlaps the one before.")
        if a > pos:
            out.append((pos, a, UNTAGGED))
        out.append((a, b, name))
        pos = b
    if ranges and pos < n:
        out.append((pos, n, UNTAGGED))
    return out


def _report(cfg: NpuConfig, slices: list[Slice], segments: list[tuple[int, int, str]],
            tops: dict[Mem, int]) -> CycleReport:
    total = max((s.end for s in slices), default=0)
    busy = {}
    for name in (*UNITS, "load", "compute", "store"):
        busy[name] = _union([(s.start, s.end) for s in slices
                             if name in (s.unit, s.queue) and s.end > s.start])
    by_pc = {s.pc: s for s in slices}
    layers, front = [], 0
    for first, last, name in segments:
        mine = [by_pc[pc] for pc in range(first, last) if pc in by_pc]
        end = max((s.end for s in mine), default=0)
        cycles = max(end - front, 0)
        front += cycles
        layers.append(LayerStats(
            name, first, last, cycles, min((s.start for s in mine), default=0), end,
            {u: _union([(s.start, s.end) for s in mine if s.unit == u]) for u in UNITS},
            sum(s.macs for s in mine), sum(s.dram_bytes for s in mine), len(mine)))
    reads = sum(s.dram_bytes for s in slices if s.text.startswith("dma_load"))
    writes = sum(s.dram_bytes for s in slices if s.text.startswith("dma_store"))
    return CycleReport(
        cycles=total, dim=cfg.dim, clock_hz=cfg.clock_hz, busy=busy,
        macs=sum(s.macs for s in slices), dram_read_bytes=reads, dram_write_bytes=writes,
        spad_high_water=tops[Mem.SPAD], acc_high_water=tops[Mem.ACC],
        bank_stall_cycles=sum(s.stall for s in slices), slices=slices, layers=layers)


def _deadlock(instrs: list[Instr], queues: dict[Queue, deque[int]], fetch: int,
              cfg: NpuConfig) -> NpuExecutionError:
    why = []
    for q, waiting in queues.items():
        if waiting:
            k = waiting[0]
            ins = instrs[k]
            what = (f"a token from the {Queue(ins.src).name.lower()} queue" if ins.name == "wait"
                    else f"room in the full channel to the {Queue(ins.dst).name.lower()} queue")
            why.append(f"the {q.name.lower()} queue waits at instruction {k} ({ins}) for {what}")
    if fetch < len(instrs) - 1:
        why.append(f"fetch is stalled at instruction {fetch} because the "
                   f"{instrs[fetch].queue.name.lower()} queue is full "
                   f"({cfg.queue_depth} instructions)")
    return NpuExecutionError(f"the program deadlocked: {'; '.join(why)}.")
