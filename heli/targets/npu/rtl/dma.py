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
from amaranth.hdl import Const, Module, Mux, Signal, signed
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
    spad_wgrant_<j> : In(1)
        The row is written this cycle.
    spad_raddr_<j>, spad_ren_<j> : Out
        Scratchpad read j: row j of the beat to store, wanted this cycle.
    spad_rgrant_<j> : In(1)
        The row is read: ``spad_rdata_<j>`` holds it the next cycle.
    spad_rdata_<j> : In(ArrayLayout(signed(8), DIM))
        The row read.
    acc_<port>_<j> :
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
                f"spad_wdata_{j}": Out(rows8), f"spad_wgrant_{j}": In(1),
                f"spad_raddr_{j}": Out(sa), f"spad_ren_{j}": Out(1),
                f"spad_rgrant_{j}": In(1), f"spad_rdata_{j}": In(rows8),
                f"acc_waddr_{j}": Out(aa), f"acc_wen_{j}": Out(1),
                f"acc_wdata_{j}": Out(rows32), f"acc_wgrant_{j}": In(1),
                f"acc_raddr_{j}": Out(aa), f"acc_ren_{j}": Out(1),
                f"acc_rgrant_{j}": In(1), f"acc_rdata_{j}": In(rows32),
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
        beat_read = Signal()                           # a store: the beat's rows are all read
        resp_written = Signal()                        # a load: the response's rows all written

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
            bus.req_valid.eq(busy & (sent != rows) & (~store | beat_read)),
            req_fire.eq(bus.req_valid & bus.req_ready),
            bus.resp_ready.eq(busy & (store | resp_written)),
        ]
        with m.If(req_fire):
            m.d.sync += [sent.eq(sent + n_req), addr.eq(addr + stride * n_req)]
        resp_fire = Signal()
        m.d.comb += resp_fire.eq(bus.resp_valid & bus.resp_ready)
        with m.If(resp_fire):
            m.d.sync += received.eq(received + n_resp)
            with m.If(received + n_resp == rows):
                m.d.sync += busy.eq(0)
                m.d.comb += self.done.eq(1)

        reading = busy & store & (sent != rows)
        self._store_path(m, reading, sram, sent, n_req, rows, req_fire, mem, beat_read)
        self._load_path(m, busy & ~store & bus.resp_valid, sram, received, n_resp, resp_fire,
                        mem, cols, resp_written)

        # a new transfer may be taken in the cycle the last one finishes
        m.d.comb += self.cmd_ready.eq(~busy | self.done)
        with m.If(self.cmd_valid & self.cmd_ready):
            m.d.sync += [busy.eq(1), store.eq(self.cmd_store), mem.eq(self.cmd_mem),
                         sram.eq(self.cmd_sram), addr.eq(self.cmd_dram),
                         stride.eq(self.cmd_stride), rows.eq(self.cmd_rows),
                         cols.eq(self.cmd_cols), sent.eq(0), received.eq(0)]
        return m

    def _grant(self, kind: str, j: int, mem):
        return Mux(mem, self.port(f"acc_{kind}grant", j), self.port(f"spad_{kind}grant", j))

    def _store_path(self, m: Module, reading, sram, sent, n_req, rows, req_fire, mem,
                    beat_read) -> None:
        """A store's beat: row j is read once its bank grants it and held in a
        register until every row of the beat is there; the request then goes
        out, and in that cycle the next beat's rows are asked for."""
        dim, k = self.cfg.dim, self.beat
        slot = 32 * dim
        wdata = self.bus.req_wdata
        have = Signal(k)             # row j of the beat is in its register
        pend = Signal(k)             # row j was granted last cycle: it is on the read port
        next_base = Signal(16)
        n_next = Signal(range(k + 1))
        left_next = Signal(16)
        m.d.comb += [next_base.eq(sent + n_req), left_next.eq(rows - next_base),
                     n_next.eq(Mux(left_next > k, k, left_next))]
        ready = Const(1, 1)
        for j in range(k):
            row = Signal(16, name=f"store_row_{j}")
            want = Signal(name=f"store_want_{j}")
            m.d.comb += [
                row.eq(sram + Mux(req_fire, next_base, sent) + j),
                want.eq(reading & Mux(req_fire, j < n_next,
                                      (j < n_req) & ~have[j] & ~pend[j])),
                self.port("spad_raddr", j).eq(row), self.port("acc_raddr", j).eq(row),
                self.port("spad_ren", j).eq(want & ~mem), self.port("acc_ren", j).eq(want & mem),
            ]
            on_port = Signal(slot, name=f"store_port_{j}")
            held = Signal(slot, name=f"store_held_{j}")
            with m.If(mem):
                for n in range(dim):
                    m.d.comb += on_port[32 * n:32 * n + 32].eq(self.port("acc_rdata", j)[n])
            with m.Else():
                for n in range(dim):
                    m.d.comb += on_port[8 * n:8 * n + 8].eq(self.port("spad_rdata", j)[n])
            m.d.comb += wdata[slot * j:slot * (j + 1)].eq(Mux(have[j], held, on_port))
            with m.If(pend[j]):
                m.d.sync += held.eq(on_port)
            granted = want & self._grant("r", j, mem)
            with m.If(req_fire):
                m.d.sync += [have[j].eq(0), pend[j].eq(granted)]
            with m.Else():
                m.d.sync += [have[j].eq(have[j] | pend[j]), pend[j].eq(granted)]
            ready = ready & ((j >= n_req) | have[j] | pend[j])
        m.d.comb += beat_read.eq(ready)

    def _load_path(self, m: Module, answered, sram, received, n_resp, resp_fire, mem, cols,
                   written) -> None:
        """A read response's row j becomes SRAM row ``sram + received + j``,
        lanes >= cols zeroed, once its bank grants it; the response is taken
        when all its rows are written."""
        dim, k = self.cfg.dim, self.beat
        slot = 32 * dim
        rdata = self.bus.resp_rdata
        done = Signal(k)             # rows of the waiting response already written
        all_done = Const(1, 1)
        for j in range(k):
            row = Signal(16, name=f"load_row_{j}")
            en = Signal(name=f"load_want_{j}")
            m.d.comb += [row.eq(sram + received + j),
                         en.eq(answered & (j < n_resp) & ~done[j])]
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
            granted = en & self._grant("w", j, mem)
            m.d.sync += done[j].eq(Mux(resp_fire, 0, done[j] | granted))
            all_done = all_done & ((j >= n_resp) | done[j] | granted)
        m.d.comb += written.eq(all_done)
