"""The DMA engine: strided 2-D transfers between DRAM (over the memory bus of
:mod:`~heli.targets.npu.rtl.bus`) and either SRAM, one transfer at a time.

A transfer of ``rows`` rows issues one bus request per row, one per cycle while
the bus takes them, without waiting for responses (the bus answers in order):

* ``dma_load``: request r reads ``cols`` elements at ``dram + r·stride``; its
  response is written to SRAM row ``sram + r`` the cycle it arrives, lanes
  ``cols .. DIM-1`` zeroed (int8 lanes from bytes, int32 lanes from four
  little-endian bytes each);
* ``dma_store``: SRAM row ``sram + r`` is read (one cycle) and sent as the
  write request r.

The transfer is done (``done`` pulses, with its ``pc``) when the last response
has arrived: every row is in the SRAM, or acknowledged by DRAM.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from heli.targets.npu.config import NpuConfig
from heli.targets.npu.rtl.bus import ADDR_BITS, MemBusSignature, len_bits
from heli.targets.npu.rtl.params import addr_bits

INT8 = signed(8)
INT32 = signed(32)
PC_BITS = 32


class DmaEngine(wiring.Component):
    """One DMA engine for a configuration (DIM, SRAM sizes).

    Attributes
    ----------
    cmd_valid : In(1)
        A transfer is offered (the fields below); taken when ``cmd_ready``.
    cmd_ready : Out(1)
        The engine is idle and takes the offered transfer this cycle.
    cmd_store : In(1)
        1: ``dma_store`` (SRAM to DRAM); 0: ``dma_load``.
    cmd_mem : In(1)
        0: the scratchpad (int8 lanes); 1: the accumulator (int32 lanes).
    cmd_sram, cmd_dram, cmd_stride, cmd_rows, cmd_cols : In
        The instruction's fields (first SRAM row, DRAM byte address, bytes
        between DRAM rows, rows, elements per row).
    cmd_pc : In(32)
        Program index of the instruction, returned with ``done``.
    done : Out(1)
        Pulses the cycle after the transfer's last response.
    done_pc : Out(32)
        The finished transfer's ``cmd_pc``.
    bus : Out(MemBusSignature(DIM))
        The memory bus (this engine is its master).
    spad_waddr, spad_wen, spad_wdata : Out
        Scratchpad write port of the DMA (a row, int8 lanes).
    spad_raddr : Out(spad_addr_bits)
        Scratchpad row to read; ``spad_rdata`` holds it the next cycle.
    spad_rdata : In(ArrayLayout(signed(8), DIM))
        The row read.
    acc_waddr, acc_wen, acc_wdata, acc_raddr, acc_rdata :
        The same for the accumulator (int32 lanes).
    """

    def __init__(self, cfg: NpuConfig) -> None:
        self.cfg = cfg
        dim = cfg.dim
        sa, aa = addr_bits(cfg.spad_rows), addr_bits(cfg.acc_rows)
        rows8, rows32 = data.ArrayLayout(INT8, dim), data.ArrayLayout(INT32, dim)
        super().__init__({
            "cmd_valid": In(1), "cmd_ready": Out(1), "cmd_store": In(1), "cmd_mem": In(1),
            "cmd_sram": In(16), "cmd_dram": In(ADDR_BITS), "cmd_stride": In(ADDR_BITS),
            "cmd_rows": In(16), "cmd_cols": In(8), "cmd_pc": In(PC_BITS),
            "done": Out(1), "done_pc": Out(PC_BITS),
            "bus": Out(MemBusSignature(dim)),
            "spad_waddr": Out(sa), "spad_wen": Out(1), "spad_wdata": Out(rows8),
            "spad_raddr": Out(sa), "spad_rdata": In(rows8),
            "acc_waddr": Out(aa), "acc_wen": Out(1), "acc_wdata": Out(rows32),
            "acc_raddr": Out(aa), "acc_rdata": In(rows32),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        dim = self.cfg.dim
        bus = self.bus
        busy = Signal()
        store, mem = Signal(), Signal()
        sram, addr, stride = Signal(16), Signal(ADDR_BITS), Signal(ADDR_BITS)
        rows, cols, pc = Signal(16), Signal(8), Signal(PC_BITS)
        sent, received = Signal(16), Signal(16)        # requests issued, responses taken
        primed = Signal()                              # a store's first row has been read

        m.d.comb += self.cmd_ready.eq(~busy)
        m.d.sync += self.done.eq(0)
        with m.If(self.cmd_valid & ~busy):
            m.d.sync += [busy.eq(1), store.eq(self.cmd_store), mem.eq(self.cmd_mem),
                         sram.eq(self.cmd_sram), addr.eq(self.cmd_dram),
                         stride.eq(self.cmd_stride), rows.eq(self.cmd_rows),
                         cols.eq(self.cmd_cols), pc.eq(self.cmd_pc),
                         sent.eq(0), received.eq(0), primed.eq(0)]

        ebytes = Mux(mem, cols << 2, cols)
        req_fire = Signal()
        m.d.comb += [
            bus.req_write.eq(store), bus.req_addr.eq(addr),
            bus.req_len.eq(ebytes[:len_bits(dim)]),
            bus.req_valid.eq(busy & (sent != rows) & (~store | primed)),
            req_fire.eq(bus.req_valid & bus.req_ready),
            bus.resp_ready.eq(busy),
        ]
        with m.If(req_fire):
            m.d.sync += [sent.eq(sent + 1), addr.eq(addr + stride)]
        with m.If(busy & store):
            m.d.sync += primed.eq(1)
        resp_fire = Signal()
        m.d.comb += resp_fire.eq(bus.resp_valid & bus.resp_ready)
        with m.If(resp_fire):
            m.d.sync += received.eq(received + 1)
            with m.If(received + 1 == rows):
                m.d.sync += [busy.eq(0), self.done.eq(1), self.done_pc.eq(pc)]

        self._store_path(m, sram, sent, req_fire, mem)
        self._load_path(m, sram, received, resp_fire & ~store, mem, cols)
        return m

    def _store_path(self, m: Module, sram, sent, req_fire, mem) -> None:
        """SRAM row ``sram + sent`` is in ``*_rdata`` while a store waits to send it."""
        dim = self.cfg.dim
        row = Signal(16)
        m.d.comb += row.eq(sram + sent + req_fire)
        m.d.comb += [self.spad_raddr.eq(row), self.acc_raddr.eq(row)]
        wdata = self.bus.req_wdata
        with m.If(mem):
            for n in range(dim):
                m.d.comb += wdata[32 * n:32 * n + 32].eq(self.acc_rdata[n])
        with m.Else():
            for n in range(dim):
                m.d.comb += wdata[8 * n:8 * n + 8].eq(self.spad_rdata[n])

    def _load_path(self, m: Module, sram, received, write, mem, cols) -> None:
        """A read response becomes SRAM row ``sram + received``, lanes >= cols zeroed."""
        dim = self.cfg.dim
        rdata = self.bus.resp_rdata
        row = Signal(16)
        m.d.comb += row.eq(sram + received)
        m.d.comb += [self.spad_waddr.eq(row), self.acc_waddr.eq(row),
                     self.spad_wen.eq(write & ~mem), self.acc_wen.eq(write & mem)]
        for n in range(dim):
            keep = n < cols
            m.d.comb += [
                self.spad_wdata[n].eq(Mux(keep, rdata[8 * n:8 * n + 8], 0)),
                self.acc_wdata[n].eq(Mux(keep, rdata[32 * n:32 * n + 32], 0)),
            ]
