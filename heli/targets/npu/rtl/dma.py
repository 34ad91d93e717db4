"""The DMA engine: strided 2-D transfers between DRAM (over the memory bus of
:mod:`~heli.targets.npu.rtl.bus`) and either SRAM, one transfer at a time.

A transfer of ``rows`` rows is cut into beats of up to ROWS consecutive rows
(:data:`~heli.targets.npu.rtl.bus.DMA_ROWS`, a generator parameter), one bus
request per beat, one per cycle while the bus takes them, without waiting for
responses (the bus answers in order):

* ``dma_load``: beat b reads rows ``b·ROWS ..`` at ``dram + r·stride``; its
  response is written to SRAM rows ``sram + r`` the cycle it arrives, through
  ROWS write ports (consecutive rows: distinct banks of a banked SRAM), lanes
  ``cols .. DIM-1`` zeroed (int8 lanes from bytes, int32 lanes from four
  little-endian bytes each);
* ``dma_store``: the beat's SRAM rows are read (one cycle, ROWS read ports)
  and sent as one write request.

The transfer is done (``done``) with its last response: every row is in the
SRAM (at the end of that cycle), or acknowledged by DRAM.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from heli.targets.npu.config import NpuConfig
from heli.targets.npu.rtl.bus import ADDR_BITS, DMA_ROWS, MemBusSignature, len_bits
from heli.targets.npu.rtl.params import addr_bits

INT8 = signed(8)
INT32 = signed(32)


class DmaEngine(wiring.Component):
    """One DMA engine for a configuration (DIM, SRAM sizes) and ROWS rows per beat.

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
    done : Out(1)
        The transfer's last response arrives this cycle (its rows are written
        at the end of the cycle); a new transfer may be taken in the same cycle.
    bus : Out(MemBusSignature(DIM, ROWS))
        The memory bus (this engine is its master).
    spad_waddr_<j>, spad_wen_<j>, spad_wdata_<j> : Out, j < ROWS
        Scratchpad write port j: row j of a beat (int8 lanes).
    spad_raddr_<j> : Out(spad_addr_bits)
        Scratchpad row j of the next beat to store; ``spad_rdata_<j>`` holds
        it the next cycle.
    spad_rdata_<j> : In(ArrayLayout(signed(8), DIM))
        The row read.
    acc_waddr_<j>, acc_wen_<j>, acc_wdata_<j>, acc_raddr_<j>, acc_rdata_<j> :
        The same for the accumulator (int32 lanes).
    """

    def __init__(self, cfg: NpuConfig, rows: int = DMA_ROWS) -> None:
        if rows < 1:
            raise ValueError(f"rows = {rows} per beat must be positive.")
        self.cfg, self.beat = cfg, rows
        dim = cfg.dim
        sa, aa = addr_bits(cfg.spad_rows), addr_bits(cfg.acc_rows)
        rows8, rows32 = data.ArrayLayout(INT8, dim), data.ArrayLayout(INT32, dim)
        members = {
            "cmd_valid": In(1), "cmd_ready": Out(1), "cmd_store": In(1), "cmd_mem": In(1),
            "cmd_sram": In(16), "cmd_dram": In(ADDR_BITS), "cmd_stride": In(ADDR_BITS),
            "cmd_rows": In(16), "cmd_cols": In(8), "done": Out(1),
            "bus": Out(MemBusSignature(dim, rows)),
        }
        for j in range(rows):
            members |= {
                f"spad_waddr_{j}": Out(sa), f"spad_wen_{j}": Out(1),
                f"spad_wdata_{j}": Out(rows8), f"spad_raddr_{j}": Out(sa),
                f"spad_rdata_{j}": In(rows8),
                f"acc_waddr_{j}": Out(aa), f"acc_wen_{j}": Out(1),
                f"acc_wdata_{j}": Out(rows32), f"acc_raddr_{j}": Out(aa),
                f"acc_rdata_{j}": In(rows32),
            }
        super().__init__(members)

    def port(self, name: str, j: int):
        return getattr(self, f"{name}_{j}")

    def elaborate(self, platform) -> Module:
        m = Module()
        bus, k = self.bus, self.beat
        busy = Signal()
        store, mem = Signal(), Signal()
        sram, addr, stride = Signal(16), Signal(ADDR_BITS), Signal(ADDR_BITS)
        rows, cols = Signal(16), Signal(8)
        sent, received = Signal(16), Signal(16)        # rows requested, rows answered
        primed = Signal()                              # a store's first beat has been read

        n_req, n_resp = Signal(range(k + 1)), Signal(range(k + 1))
        left_req, left_resp = Signal(16), Signal(16)
        m.d.comb += [left_req.eq(rows - sent), left_resp.eq(rows - received),
                     n_req.eq(Mux(left_req > k, k, left_req)),
                     n_resp.eq(Mux(left_resp > k, k, left_resp))]
        req_fire = Signal()
        m.d.comb += [
            bus.req_write.eq(store), bus.req_addr.eq(addr), bus.req_stride.eq(stride),
            bus.req_rows.eq(n_req),
            bus.req_len.eq(Mux(mem, cols << 2, cols)[:len_bits(self.cfg.dim)]),
            bus.req_valid.eq(busy & (sent != rows) & (~store | primed)),
            req_fire.eq(bus.req_valid & bus.req_ready),
            bus.resp_ready.eq(busy),
        ]
        with m.If(req_fire):
            m.d.sync += [sent.eq(sent + n_req), addr.eq(addr + stride * n_req)]
        with m.If(busy & store):
            m.d.sync += primed.eq(1)
        resp_fire = Signal()
        m.d.comb += resp_fire.eq(bus.resp_valid & bus.resp_ready)
        with m.If(resp_fire):
            m.d.sync += received.eq(received + n_resp)
            with m.If(received + n_resp == rows):
                m.d.sync += busy.eq(0)
                m.d.comb += self.done.eq(1)
        # a new transfer may be taken in the cycle the last one finishes
        m.d.comb += self.cmd_ready.eq(~busy | self.done)
        with m.If(self.cmd_valid & self.cmd_ready):
            m.d.sync += [busy.eq(1), store.eq(self.cmd_store), mem.eq(self.cmd_mem),
                         sram.eq(self.cmd_sram), addr.eq(self.cmd_dram),
                         stride.eq(self.cmd_stride), rows.eq(self.cmd_rows),
                         cols.eq(self.cmd_cols), sent.eq(0), received.eq(0), primed.eq(0)]

        self._store_path(m, sram, sent + Mux(req_fire, n_req, 0), mem)
        self._load_path(m, sram, received, n_resp, resp_fire & ~store, mem, cols)
        return m

    def _store_path(self, m: Module, sram, next_row, mem) -> None:
        """The beat that starts at row ``sent`` is in ``*_rdata_<j>`` while a
        store waits to send it (the rows of the next beat are read meanwhile)."""
        dim = self.cfg.dim
        slot = 32 * dim
        wdata = self.bus.req_wdata
        for j in range(self.beat):
            row = Signal(16, name=f"store_row_{j}")
            m.d.comb += row.eq(sram + next_row + j)
            m.d.comb += [self.port("spad_raddr", j).eq(row), self.port("acc_raddr", j).eq(row)]
            base = slot * j
            with m.If(mem):
                for n in range(dim):
                    m.d.comb += wdata[base + 32 * n:base + 32 * n + 32].eq(
                        self.port("acc_rdata", j)[n])
            with m.Else():
                for n in range(dim):
                    m.d.comb += wdata[base + 8 * n:base + 8 * n + 8].eq(
                        self.port("spad_rdata", j)[n])

    def _load_path(self, m: Module, sram, received, n_resp, write, mem, cols) -> None:
        """A read response's row j becomes SRAM row ``sram + received + j``,
        lanes >= cols zeroed."""
        dim = self.cfg.dim
        slot = 32 * dim
        rdata = self.bus.resp_rdata
        for j in range(self.beat):
            row = Signal(16, name=f"load_row_{j}")
            en = write & (j < n_resp)
            m.d.comb += row.eq(sram + received + j)
            m.d.comb += [self.port("spad_waddr", j).eq(row), self.port("acc_waddr", j).eq(row),
                         self.port("spad_wen", j).eq(en & ~mem),
                         self.port("acc_wen", j).eq(en & mem)]
            base = slot * j
            for n in range(dim):
                keep = n < cols
                m.d.comb += [
                    self.port("spad_wdata", j)[n].eq(
                        Mux(keep, rdata[base + 8 * n:base + 8 * n + 8], 0)),
                    self.port("acc_wdata", j)[n].eq(
                        Mux(keep, rdata[base + 32 * n:base + 32 * n + 32], 0)),
                ]
