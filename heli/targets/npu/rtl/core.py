"""The whole NPU core (``docs/npu.md``, "RTL core"): fetch, the three instruction
queues with their dependency tokens, the compute sequencer (array, vector unit,
lookup tables), the DMA engine on the memory bus, and the two SRAMs.

The program enters through an instruction port (one 128-bit word per cycle,
valid / ready); the host streams it in order, ``halt`` last.  DRAM is reached
only through the memory bus (:class:`~heli.targets.npu.rtl.bus.MemBusSignature`).
The core is done when ``halt`` was fetched, every queue is empty and every
unit idle.

Each SRAM is a :class:`~heli.targets.npu.rtl.sram.BankedSram`: row ``r`` in
bank ``r % 4``, each bank with one write port, the scratchpad's with two read
ports, the accumulator's with one.  The compute sequencer has priority on
them (scratchpad: A on read port 0, B on read port 1; accumulator: X, Y and
the ``matmul`` accumulation, never two in one cycle, on its one port); the
DMA engine's rows take the ports it leaves free, and wait a cycle when there
is none.  The simulator's race check guarantees that no two
units touch one row in a way that depends on the order within a cycle.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out, connect

from heli.targets.npu.config import NpuConfig
from heli.targets.npu.isa import WORD_BITS
from heli.targets.npu.rtl.bus import DMA_ROWS, MemBusSignature
from heli.targets.npu.rtl.dma import DmaEngine
from heli.targets.npu.rtl.params import check_rtl_config
from heli.targets.npu.rtl.queues import (
    ENTRY_BITS,
    PC_BITS,
    DmaQueueExecutor,
    Fetch,
    TokenChannels,
)
from heli.targets.npu.rtl.sequencer import ComputeSequencer
from heli.targets.npu.rtl.sram import ACC_READ_PORTS, SPAD_READ_PORTS, BankedSram

INT8 = signed(8)
INT32 = signed(32)
_TOKEN_PORTS = ("tok_push", "tok_dst", "tok_push_ok", "tok_wait", "tok_src", "tok_wait_ok")


class NpuCore(wiring.Component):
    """The NPU core for one :class:`NpuConfig` (checked first).

    Attributes
    ----------
    instr_valid : In(1)
        ``instr_word`` holds the program's next instruction.
    instr_word : In(128)
        The instruction (bit 0 = bit 0 of its first little-endian byte).
    instr_ready : Out(1)
        The word is taken this cycle.
    bus : Out(MemBusSignature(DIM))
        The DMA engine's memory bus.
    done : Out(1)
        The program has finished: ``halt`` fetched, the queues drained, every
        unit idle.
    error : Out(1)
        An instruction word did not decode; fetch stopped at ``error_pc``.
    error_pc : Out(32)
        Its program index.
    tokens_empty : Out(1)
        No token channel holds a token (checked when ``done``).
    load_retire, compute_retire, weights_retire, array_retire, store_retire : Out(1)
        An instruction of that queue completes this cycle (``weights_retire``:
        a ``load_weights``, which runs beside the other compute instructions;
        ``array_retire``: a ``matmul``'s last result row is written);
        ``<queue>_retire_pc`` is its program index.  For the co-simulation's
        per-layer cycle counts.
    """

    def __init__(self, cfg: NpuConfig, dma_rows: int = DMA_ROWS) -> None:
        self.cfg = check_rtl_config(cfg)
        self.dma_rows = dma_rows
        members = {
            "instr_valid": In(1), "instr_word": In(WORD_BITS), "instr_ready": Out(1),
            "bus": Out(MemBusSignature(cfg.dim, dma_rows)),
            "done": Out(1), "error": Out(1), "error_pc": Out(PC_BITS),
            "tokens_empty": Out(1),
        }
        for q in ("load", "compute", "weights", "array", "store"):
            members[f"{q}_retire"] = Out(1)
            members[f"{q}_retire_pc"] = Out(PC_BITS)
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        m.submodules.fetch = fetch = Fetch()
        m.submodules.tokens = tokens = TokenChannels(cfg.token_depth)
        m.submodules.load = load = DmaQueueExecutor()
        m.submodules.compute = comp = ComputeSequencer(cfg)
        m.submodules.store = store = DmaQueueExecutor()
        m.submodules.dma = dma = DmaEngine(cfg, self.dma_rows)
        execs = (load, comp, store)

        m.d.comb += [fetch.in_valid.eq(self.instr_valid), fetch.in_word.eq(self.instr_word),
                     self.instr_ready.eq(fetch.in_ready), self.error.eq(fetch.error),
                     self.error_pc.eq(fetch.error_pc), self.tokens_empty.eq(tokens.empty)]
        fifos_empty = self._queues(m, fetch, execs)
        self._tokens(m, tokens, execs)
        self._dma(m, dma, load, store)
        connect(m, wiring.flipped(self.bus), dma.bus)
        self._srams(m, comp, dma)

        for name, ex in (("load", load), ("compute", comp), ("store", store)):
            m.d.comb += [getattr(self, f"{name}_retire").eq(ex.retire),
                         getattr(self, f"{name}_retire_pc").eq(ex.retire_pc)]
        for unit in ("array", "weights"):
            m.d.comb += [getattr(self, f"{unit}_retire").eq(getattr(comp, f"{unit}_retire")),
                         getattr(self, f"{unit}_retire_pc").eq(
                             getattr(comp, f"{unit}_retire_pc"))]
        m.d.comb += self.done.eq(fetch.halted & fifos_empty & load.idle & comp.idle
                                 & store.idle & dma.cmd_ready)
        return m

    def _queues(self, m: Module, fetch: Fetch, execs) -> Signal:
        """One FIFO of ``queue_depth`` entries per queue, fetch to executor."""
        empty = Signal(3)
        for q, ex in enumerate(execs):
            fifo = SyncFIFOBuffered(width=ENTRY_BITS, depth=self.cfg.queue_depth)
            m.submodules[f"queue{q}"] = fifo
            m.d.comb += [fifo.w_data.eq(fetch.q_data), fifo.w_en.eq(fetch.q_wen[q]),
                         fetch.q_wrdy[q].eq(fifo.w_rdy),
                         ex.instr_valid.eq(fifo.r_rdy), ex.instr_word.eq(fifo.r_data[:WORD_BITS]),
                         ex.instr_pc.eq(fifo.r_data[WORD_BITS:]), fifo.r_en.eq(ex.instr_ready),
                         empty[q].eq(~fifo.r_rdy)]
        return empty.all()

    @staticmethod
    def _tokens(m: Module, tokens: TokenChannels, execs) -> None:
        for q, ex in enumerate(execs):
            m.d.comb += [tokens.push[q].eq(ex.tok_push), tokens.wait[q].eq(ex.tok_wait),
                         tokens.push_dst[2 * q:2 * q + 2].eq(ex.tok_dst),
                         tokens.wait_src[2 * q:2 * q + 2].eq(ex.tok_src),
                         ex.tok_push_ok.eq(tokens.push_ok[q]),
                         ex.tok_wait_ok.eq(tokens.wait_ok[q])]

    @staticmethod
    def _dma(m: Module, dma: DmaEngine, load: DmaQueueExecutor, store: DmaQueueExecutor) -> None:
        """The load queue wins when both offer a transfer in the same cycle."""
        owner_store = Signal()
        pick_store = Signal()
        m.d.comb += pick_store.eq(~load.dma_valid)
        src = (load, store)
        for f in ("store", "mem", "sram", "dram", "stride", "rows", "cols"):
            m.d.comb += getattr(dma, f"cmd_{f}").eq(
                Mux(pick_store, getattr(store, f"dma_{f}"), getattr(load, f"dma_{f}")))
        m.d.comb += [dma.cmd_valid.eq(load.dma_valid | store.dma_valid),
                     load.dma_grant.eq(dma.cmd_ready & ~pick_store),
                     store.dma_grant.eq(dma.cmd_ready & pick_store & store.dma_valid)]
        with m.If(dma.cmd_valid & dma.cmd_ready):
            m.d.sync += owner_store.eq(pick_store)
        m.d.comb += [src[0].dma_done.eq(dma.done & ~owner_store),
                     src[1].dma_done.eq(dma.done & owner_store)]

    def _srams(self, m: Module, comp: ComputeSequencer, dma: DmaEngine) -> None:
        cfg, dim = self.cfg, self.cfg.dim
        for name, shape, rows, reads, ports, read_ports in (
                ("spad", data.ArrayLayout(INT8, dim), cfg.spad_rows,
                 ("spad_a", "spad_b"), (0, 1), SPAD_READ_PORTS),
                ("acc", data.ArrayLayout(INT32, dim), cfg.acc_rows,
                 ("acc_x", "acc_y", "acc_m"), (0, 0, 0), ACC_READ_PORTS)):
            sram = BankedSram(shape, rows, ports, self.dma_rows, read_ports=read_ports)
            m.submodules[name] = sram
            for k, r in enumerate(reads):
                m.d.comb += [sram.port(f"c{k}_addr").eq(getattr(comp, f"{r}_raddr")),
                             sram.port(f"c{k}_en").eq(getattr(comp, f"{r}_ren")),
                             getattr(comp, f"{r}_rdata").eq(sram.port(f"c{k}_data"))]
            m.d.comb += [sram.c_waddr.eq(getattr(comp, f"{name}_waddr")),
                         sram.c_wen.eq(getattr(comp, f"{name}_wen")),
                         sram.c_wdata.eq(getattr(comp, f"{name}_wdata"))]
            for j in range(self.dma_rows):
                for p in ("raddr", "ren", "waddr", "wen", "wdata"):        # DMA to SRAM
                    m.d.comb += sram.port(f"d{j}_{p}").eq(dma.port(f"{name}_{p}", j))
                for p in ("rgrant", "rdata", "wgrant"):                    # SRAM to DMA
                    m.d.comb += dma.port(f"{name}_{p}", j).eq(sram.port(f"d{j}_{p}"))
