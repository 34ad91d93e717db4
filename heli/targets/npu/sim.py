"""Bit-exact functional simulator of the reference NPU (numpy).

:class:`Npu` holds the machine state (DRAM, scratchpad, accumulator, weight
registers, lookup tables); :meth:`Npu.run` executes a program.  Instructions
are fetched in order and dispatched to the load, compute and store queues
(fetch stalls while the target queue holds ``queue_depth`` instructions);
each queue executes in order, and ``push`` / ``wait`` tokens order the queues
against each other.  The simulator runs one legal interleaving: each queue in
turn runs until it blocks.  Every instruction's effect is its semantics
function in :mod:`heli.targets.npu.isa`, vectorized over its rows.

Because real hardware runs the queues concurrently, two accesses to the same
SRAM row or DRAM byte from different queues (at least one a write) that no
chain of ``push``/``wait`` orders are a data race: their outcome depends on
timing.  The simulator tracks happens-before with vector clocks and raises
:class:`NpuExecutionError` on the first race (``check_races=True``), so a
program that passes here computes the same values on any timing.  It also
raises on accesses outside an SRAM or the DRAM, on deadlock, and on tokens
left unconsumed at the end.

The cycle count of :class:`RunStats` is an estimate from each instruction's
``cycles`` (see ``docs/npu.md``, "Timing model"), with the queues overlapping
as the tokens allow; it is not cycle-accurate.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from heli.targets.npu.arith import wrap_int32
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.errors import NpuExecutionError
from heli.targets.npu.isa import Instr, Mem, Queue, assemble, decode_program

_MEM_NAMES = {Mem.SPAD: "scratchpad", Mem.ACC: "accumulator"}


@dataclass(frozen=True)
class RunStats:
    """What a run did, and how long the timing model says it took."""

    cycles: int                      # estimated makespan
    busy: dict[str, int]             # estimated busy cycles per queue
    instructions: dict[str, int]     # executed instructions per mnemonic
    dram_read_bytes: int
    dram_write_bytes: int
    clock_hz: int

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz


class Npu:
    """The state of one NPU and its DRAM.

    ``dram`` is a size in bytes, or a writable buffer (``bytearray``, 1-D
    ``uint8`` numpy array) that the NPU reads and writes in place.  SRAM
    contents persist from one :meth:`run` to the next, as on hardware.
    """

    def __init__(self, config: NpuConfig | None = None,
                 dram: int | bytearray | np.ndarray = 1 << 20) -> None:
        self.cfg = config if config is not None else NpuConfig()
        if isinstance(dram, int):
            self.dram = np.zeros(dram, np.uint8)
        elif isinstance(dram, bytearray):
            self.dram = np.frombuffer(dram, np.uint8)
        elif isinstance(dram, np.ndarray) and dram.dtype == np.uint8 and dram.ndim == 1:
            if not dram.flags.writeable or not dram.flags.c_contiguous:
                raise ValueError("the DRAM array must be writable and contiguous.")
            self.dram = dram
        else:
            raise TypeError(f"dram must be a size, a bytearray or a 1-D uint8 array, "
                            f"not {type(dram).__name__}.")
        cfg = self.cfg
        self.spad = np.zeros((cfg.spad_rows, cfg.dim), np.int8)
        self.acc = np.zeros((cfg.acc_rows, cfg.dim), np.int32)
        self.weights = np.zeros((cfg.dim, cfg.dim), np.int8)
        self.luts = np.zeros((cfg.lut_tables, 256), np.int8)

    # host access to DRAM -------------------------------------------------

    def write_dram(self, addr: int, data: np.ndarray | bytes) -> None:
        """Copies ``data`` (its bytes, C order) to DRAM at ``addr``."""
        raw = np.frombuffer(bytes(data), np.uint8) if isinstance(data, bytes) else \
            np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if not 0 <= addr <= self.dram.size - raw.size:
            raise ValueError(f"{raw.size} bytes at DRAM address {addr:#x} do not fit in the "
                             f"{self.dram.size}-byte DRAM.")
        self.dram[addr:addr + raw.size] = raw

    def read_dram(self, addr: int, shape: tuple[int, ...] | int,
                  dtype: np.dtype | type = np.int8) -> np.ndarray:
        """A copy of the array of ``shape`` and ``dtype`` stored at ``addr``."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        if not 0 <= addr <= self.dram.size - n:
            raise ValueError(f"{n} bytes at DRAM address {addr:#x} do not fit in the "
                             f"{self.dram.size}-byte DRAM.")
        return self.dram[addr:addr + n].view(dtype).reshape(shape).copy()

    # running -------------------------------------------------------------

    def run(self, program: Sequence[Instr] | bytes | bytearray | str, *,
            check_races: bool = True) -> RunStats:
        """Executes ``program`` (instructions, a binary, or assembly text)."""
        return _Exec(self, _as_program(program), check_races).run()


def _as_program(program: Sequence[Instr] | bytes | bytearray | str) -> list[Instr]:
    if isinstance(program, str):
        instrs = assemble(program)
    elif isinstance(program, bytes | bytearray | memoryview):
        instrs = decode_program(program)
    else:
        instrs = list(program)
        for k, i in enumerate(instrs):
            if not isinstance(i, Instr):
                raise TypeError(f"program item {k} is a {type(i).__name__}, not an Instr.")
    halts = [k for k, i in enumerate(instrs) if i.defn.halts]
    if not halts or halts[-1] != len(instrs) - 1:
        raise NpuExecutionError("the program does not end with a halt instruction.")
    if len(halts) > 1:
        raise NpuExecutionError(f"instruction {halts[0]} is a halt before the end of the "
                                f"program (the last instruction must be its only halt).")
    return instrs


# --------------------------------------------------------------------------
# race tracking
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Race:
    where: int       # SRAM row or DRAM byte
    queue: int       # the other access's queue
    pc: int          # the other access's instruction
    other_wrote: bool


class _RowTracker:
    """Last write (queue, sequence number, instruction) and last read per queue
    of every SRAM row, for happens-before checks against vector clocks."""

    def __init__(self, rows: int) -> None:
        self.w_q = np.full(rows, -1, np.int64)
        self.w_seq = np.zeros(rows, np.int64)
        self.w_pc = np.zeros(rows, np.int64)
        self.r_seq = np.zeros((len(Queue), rows), np.int64)
        self.r_pc = np.zeros((len(Queue), rows), np.int64)

    def _unordered_write(self, idx: np.ndarray, q: int, clock: np.ndarray) -> _Race | None:
        wq = self.w_q[idx]
        bad = (wq >= 0) & (wq != q) & (self.w_seq[idx] > clock[np.maximum(wq, 0)])
        if bad.any():
            row = int(idx[np.argmax(bad)])
            return _Race(row, int(self.w_q[row]), int(self.w_pc[row]), True)
        return None

    def read(self, idx: np.ndarray, q: int, clock: np.ndarray, pc: int) -> _Race | None:
        if (race := self._unordered_write(idx, q, clock)) is not None:
            return race
        self.r_seq[q, idx] = clock[q]
        self.r_pc[q, idx] = pc
        return None

    def write(self, idx: np.ndarray, q: int, clock: np.ndarray, pc: int) -> _Race | None:
        if (race := self._unordered_write(idx, q, clock)) is not None:
            return race
        for other in Queue:
            if other != q:
                bad = self.r_seq[other, idx] > clock[other]
                if bad.any():
                    row = int(idx[np.argmax(bad)])
                    return _Race(row, int(other), int(self.r_pc[other, row]), False)
        self.w_q[idx] = q
        self.w_seq[idx] = clock[q]
        self.w_pc[idx] = pc
        return None


def _first_overlap(a: np.ndarray, la: int, b: np.ndarray, lb: int) -> int | None:
    """The first byte shared by intervals [a_i, a_i + la) and [b_j, b_j + lb)
    (``a`` sorted), or None."""
    k1 = np.searchsorted(a, b - la, "right")
    k2 = np.searchsorted(a, b + lb, "left")
    hit = k2 > k1
    if not hit.any():
        return None
    j = int(np.argmax(hit))
    return int(max(a[k1[j]], b[j]))


class _DramTracker:
    """DRAM is read only by the load queue and written only by the store queue:
    each side keeps its accesses that the other side is not yet known to be
    ordered with (sequence number, instruction, sorted row starts, row bytes)."""

    def __init__(self) -> None:
        self.pending: dict[Queue, deque] = {Queue.LOAD: deque(), Queue.STORE: deque()}

    def access(self, q: Queue, starts: np.ndarray, nbytes: int, clock: np.ndarray,
               pc: int) -> _Race | None:
        other = Queue.STORE if q == Queue.LOAD else Queue.LOAD
        theirs = self.pending[other]
        while theirs and theirs[0][0] <= clock[other]:  # ordered before us, and all later
            theirs.popleft()
        for _, opc, ostarts, onbytes in theirs:
            if (byte := _first_overlap(ostarts, onbytes, starts, nbytes)) is not None:
                return _Race(byte, int(other), opc, other == Queue.STORE)
        self.pending[q].append((int(clock[q]), pc, starts, nbytes))
        return None


# --------------------------------------------------------------------------
# execution
# --------------------------------------------------------------------------


class _Exec:
    """One run: the queues, tokens, clocks and trackers; implements isa.Machine."""

    def __init__(self, npu: Npu, instrs: list[Instr], check_races: bool) -> None:
        self.npu, self.instrs, self.cfg = npu, instrs, npu.cfg
        self.weights, self.luts = npu.weights, npu.luts
        self.mems = {Mem.SPAD: npu.spad, Mem.ACC: npu.acc}
        self.rows_track = ({m: _RowTracker(a.shape[0]) for m, a in self.mems.items()}
                           if check_races else None)
        self.dram_track = _DramTracker() if check_races else None
        self.clock = np.zeros((len(Queue), len(Queue)), np.int64)  # vector clock per queue
        pairs = [(s, d) for s in Queue for d in Queue if s != d]
        self.channels: dict[tuple[Queue, Queue], deque] = {p: deque() for p in pairs}
        self.pushes = Counter()
        self.pop_times: dict[tuple[Queue, Queue], list[int]] = {p: [] for p in pairs}
        self.qtime = [0] * len(Queue)
        self.busy = [0] * len(Queue)
        self.counts: Counter[str] = Counter()
        self.dram_read_bytes = self.dram_write_bytes = 0
        self.pc, self.ins, self.q = -1, instrs[0], Queue.LOAD
        self.start = self.cost = 0
        self.reads: list[tuple[Mem, np.ndarray]] = []

    # the scheduler -------------------------------------------------------

    def run(self) -> RunStats:
        instrs, depth = self.instrs, self.cfg.queue_depth
        queues: dict[Queue, deque[int]] = {q: deque() for q in Queue}
        body, pc = len(instrs) - 1, 0        # the last instruction is the halt
        while True:
            while pc < body and len(queues[q := instrs[pc].queue]) < depth:
                queues[q].append(pc)
                pc += 1
            progressed = False
            for q, waiting in queues.items():
                while waiting:
                    ins = instrs[waiting[0]]
                    if ins.defn.ready is not None and not ins.defn.ready(self, **ins.fields):
                        break
                    self._execute(waiting.popleft(), ins, q)
                    progressed = True
            if pc == body and not any(queues.values()):
                break
            if not progressed:
                raise self._deadlock(queues, pc)
        left = [f"{len(t)} from the {s.name.lower()} queue to the {d.name.lower()} queue"
                for (s, d), t in self.channels.items() if t]
        if left:
            raise NpuExecutionError(f"the program ended with unconsumed tokens: "
                                    f"{', '.join(left)} (every push needs a matching wait).")
        return RunStats(
            cycles=max(self.qtime), busy={q.name.lower(): self.busy[q] for q in Queue},
            instructions=dict(self.counts), dram_read_bytes=self.dram_read_bytes,
            dram_write_bytes=self.dram_write_bytes, clock_hz=self.cfg.clock_hz)

    def _execute(self, pc: int, ins: Instr, q: Queue) -> None:
        self.pc, self.ins, self.q = pc, ins, q
        self.reads = []
        self.clock[q, q] += 1
        self.cost = ins.defn.cycles(self.cfg, ins)
        self.start = self.qtime[q]
        ins.defn.semantics(self, **ins.fields)
        self.qtime[q] = self.start + self.cost
        self.busy[q] += self.cost
        self.counts[ins.name] += 1

    def _deadlock(self, queues: dict[Queue, deque[int]], pc: int) -> NpuExecutionError:
        why = []
        for q, waiting in queues.items():
            if not waiting:
                continue
            k = waiting[0]
            ins = self.instrs[k]
            if ins.name == "wait":
                what = f"a token from the {Queue(ins.src).name.lower()} queue"
            else:
                what = (f"room in the full channel to the {Queue(ins.dst).name.lower()} queue "
                        f"({self.cfg.token_depth} tokens)")
            why.append(f"the {q.name.lower()} queue waits at instruction {k} ({ins}) for {what}")
        if pc < len(self.instrs) - 1:
            q = self.instrs[pc].queue
            why.append(f"fetch is stalled at instruction {pc} because the {q.name.lower()} "
                       f"queue is full ({self.cfg.queue_depth} instructions)")
        return NpuExecutionError(f"the program deadlocked: {'; '.join(why)}.")

    # isa.Machine ---------------------------------------------------------

    def fail(self, message: str) -> NpuExecutionError:
        return NpuExecutionError(f"instruction {self.pc} ({self.ins}) in the "
                                 f"{self.q.name.lower()} queue: {message}")

    def require(self, ok: bool, message: str) -> None:
        if not ok:
            raise self.fail(message)

    def _race(self, race: _Race | None, what: str, writes: bool) -> None:
        if race is None:
            return
        where = f"{race.where:#x}" if what == "DRAM byte" else str(race.where)
        raise self.fail(
            f"data race on {what} {where}: this instruction {'writes' if writes else 'reads'} "
            f"it, and instruction {race.pc} ({self.instrs[race.pc]}) in the "
            f"{Queue(race.queue).name.lower()} queue {'wrote' if race.other_wrote else 'read'} "
            f"it, with no push/wait chain ordering the two.")

    def sram_rows(self, operand: str, mem: Mem, base: int, rows: int, stride: int = 1,
                  outer: int = 1, ostride: int = 0, *, write: bool = False) -> np.ndarray:
        name, size = _MEM_NAMES[Mem(mem)], self.mems[mem].shape[0]
        last = base + (outer - 1) * ostride + (rows - 1) * stride
        if last >= size:
            raise self.fail(f"its {operand} spans {name} rows {base}..{last}, but the {name} "
                            f"has only {size} rows (0..{size - 1}).")
        if write and rows * outer > size:
            raise self.fail(f"its {operand} writes {rows * outer} rows, more than the "
                            f"{size} rows of the {name}.")
        idx = (base + np.arange(outer, dtype=np.int64)[:, None] * ostride
               + np.arange(rows, dtype=np.int64)[None, :] * stride).reshape(-1)
        if write and idx.size > 1:
            ordered = np.sort(idx)
            dup = ordered[1:][ordered[1:] == ordered[:-1]]
            if dup.size:
                raise self.fail(f"its {operand} names {name} row {dup[0]} more than once "
                                f"(its blocks overlap).")
        return idx

    def sram_read(self, mem: Mem, rows: np.ndarray) -> np.ndarray:
        if self.rows_track is not None:
            race = self.rows_track[mem].read(rows, self.q, self.clock[self.q], self.pc)
            self._race(race, f"{_MEM_NAMES[Mem(mem)]} row", writes=False)
        self.reads.append((mem, rows))
        return self.mems[mem][rows]

    def sram_write(self, mem: Mem, rows: np.ndarray, values: np.ndarray) -> None:
        name = _MEM_NAMES[Mem(mem)]
        for rmem, src in self.reads:
            if rmem == mem and not np.array_equal(src, rows):
                common = np.intersect1d(src, rows)
                if common.size:
                    raise self.fail(
                        f"its destination ({name} rows {rows.min()}..{rows.max()}) partly "
                        f"overlaps one of its sources ({name} rows {src.min()}..{src.max()}) "
                        f"at row {common[0]}; only an exact in-place update is allowed.")
        if self.rows_track is not None:
            race = self.rows_track[mem].write(rows, self.q, self.clock[self.q], self.pc)
            self._race(race, f"{name} row", writes=True)
        values = np.asarray(values)
        if mem == Mem.SPAD:
            assert values.size == 0 or (values.min() >= -128 and values.max() <= 127)
            self.mems[mem][rows] = values.astype(np.int8)
        else:
            self.mems[mem][rows] = wrap_int32(values)

    def _dram_span(self, operand: str, addr: int, rows: int, stride: int, nbytes: int) -> None:
        last = addr + (rows - 1) * stride + nbytes - 1
        size = self.npu.dram.size
        if last >= size:
            raise self.fail(f"its {operand} spans DRAM bytes {addr:#x}..{last:#x}, past the "
                            f"end of the {size}-byte DRAM (last byte {size - 1:#x}).")

    def _dram_track(self, addr: int, rows: int, stride: int, nbytes: int, writes: bool) -> None:
        if self.dram_track is not None:
            starts = addr + np.arange(rows, dtype=np.int64) * stride
            race = self.dram_track.access(self.q, starts, nbytes, self.clock[self.q], self.pc)
            self._race(race, "DRAM byte", writes)

    def dram_read(self, operand: str, addr: int, rows: int, stride: int,
                  nbytes: int) -> np.ndarray:
        self._dram_span(operand, addr, rows, stride, nbytes)
        self._dram_track(addr, rows, stride, nbytes, writes=False)
        self.dram_read_bytes += rows * nbytes
        view = as_strided(self.npu.dram[addr:], shape=(rows, nbytes), strides=(stride, 1),
                          writeable=False)
        return np.array(view, order="C")

    def dram_write(self, operand: str, addr: int, stride: int, data: np.ndarray) -> None:
        rows, nbytes = data.shape
        if rows > 1 and stride < nbytes:
            raise self.fail(f"its {operand} rows overlap: the stride of {stride} bytes is less "
                            f"than the {nbytes} bytes of a row.")
        self._dram_span(operand, addr, rows, stride, nbytes)
        self._dram_track(addr, rows, stride, nbytes, writes=True)
        self.dram_write_bytes += rows * nbytes
        as_strided(self.npu.dram[addr:], shape=(rows, nbytes), strides=(stride, 1))[...] = data

    def token_count(self, src: Queue, dst: Queue) -> int:
        return len(self.channels[src, dst])

    def push_token(self, src: Queue, dst: Queue) -> None:
        key = (src, dst)
        n = self.pushes[key]
        if n >= self.cfg.token_depth:  # timing: wait for the slot freed by an earlier wait
            self.start = max(self.start, self.pop_times[key][n - self.cfg.token_depth])
        self.channels[key].append((self.clock[src].copy(), self.start + self.cost))
        self.pushes[key] += 1

    def pop_token(self, src: Queue, dst: Queue) -> None:
        key = (src, dst)
        clock, ready = self.channels[key].popleft()
        np.maximum(self.clock[dst], clock, out=self.clock[dst])
        self.start = max(self.start, ready)
        self.pop_times[key].append(self.start + self.cost)
