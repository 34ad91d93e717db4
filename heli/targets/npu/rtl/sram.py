"""A banked SRAM shared by the compute sequencer and the DMA engine
(``docs/npu.md``, "RTL core", "SRAM banks").

Row ``r`` lives in bank ``r % BANKS`` at index ``r // BANKS``.  Each bank is
one memory with one write port and one or two synchronous read ports (a
two-port macro, or two of them written together), so the generated SRAMs are
macros a memory compiler can make, not one memory with a port per user.

The compute sequencer has priority: its read ports are wired to a bank read
port each (fixed per compute port; compute ports sharing one never read in
the same cycle), its write to the banks' write port, and it never waits.
The DMA engine moves up to BANKS consecutive rows per beat, which fall into
distinct banks; each of its rows takes a bank's
port that compute leaves free this cycle and is told so by a grant
(``d<j>_rgrant`` / ``d<j>_wgrant``).  A row not granted is asked for again
next cycle: the DMA, not the compute, loses the cycle.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heli.targets.npu.rtl.params import addr_bits

#: Banks per SRAM by default: the DMA's rows per beat.
BANKS = 4
#: Read ports of a scratchpad bank (a matmul's input beside the next
#: load_weights) and of an accumulator bank (one row read per cycle).
SPAD_READ_PORTS = 2
ACC_READ_PORTS = 1


class BankedSram(wiring.Component):
    """``rows`` rows of ``shape`` in ``banks`` banks (a power of two).

    ``compute_reads`` gives, for each compute read port ``c<k>``, the bank
    read port it uses (below ``read_ports``, 1 or 2); compute ports sharing a
    bank port must never read in the same cycle.  ``dma_ports`` (<= ``banks``) is the DMA's rows
    per beat.

    Attributes
    ----------
    c<k>_addr, c<k>_en : In
        Compute read port k: the row and whether it is read this cycle.
    c<k>_data : Out(shape)
        The row read, one cycle after the address.
    c_waddr, c_wen, c_wdata : In
        The compute write port.
    d<j>_raddr, d<j>_ren : In
        DMA read j: a row it wants this cycle.
    d<j>_rgrant : Out(1)
        The row is read this cycle: ``d<j>_rdata`` holds it next cycle.
    d<j>_rdata : Out(shape)
        The row granted the cycle before.
    d<j>_waddr, d<j>_wen, d<j>_wdata : In
        DMA write j.
    d<j>_wgrant : Out(1)
        The row is written at the end of this cycle.
    """

    def __init__(self, shape, rows: int, compute_reads: tuple[int, ...], dma_ports: int,
                 banks: int = BANKS, read_ports: int = 2) -> None:
        try:
            self._check(compute_reads, dma_ports, banks, read_ports)
        except ValueError:
            self._MustUse__used = True    # a refused configuration is not an unused design
            raise
        self.shape, self.rows, self.banks = shape, rows, banks
        self.compute_reads, self.dma_ports = tuple(compute_reads), dma_ports
        self.read_ports = read_ports
        ab = addr_bits(rows)
        members = {"c_waddr": In(ab), "c_wen": In(1), "c_wdata": In(shape)}
        for k in range(len(compute_reads)):
            members |= {f"c{k}_addr": In(ab), f"c{k}_en": In(1), f"c{k}_data": Out(shape)}
        for j in range(dma_ports):
            members |= {f"d{j}_raddr": In(ab), f"d{j}_ren": In(1), f"d{j}_rgrant": Out(1),
                        f"d{j}_rdata": Out(shape), f"d{j}_waddr": In(ab), f"d{j}_wen": In(1),
                        f"d{j}_wgrant": Out(1), f"d{j}_wdata": In(shape)}
        super().__init__(members)

    @staticmethod
    def _check(compute_reads: tuple[int, ...], dma_ports: int, banks: int,
               read_ports: int) -> None:
        if banks < 1 or banks & (banks - 1):
            raise ValueError(f"banks = {banks!r} must be a power of two.")
        if not 1 <= dma_ports <= banks:
            raise ValueError(f"dma_ports = {dma_ports!r} must be between 1 and the "
                             f"{banks} banks (a beat's rows fall into distinct banks).")
        if read_ports not in (1, 2):
            raise ValueError(f"read_ports = {read_ports!r} must be 1 or 2.")
        if any(p not in range(read_ports) for p in compute_reads):
            raise ValueError(f"compute_reads = {compute_reads!r}: each compute read port "
                             f"uses one of the banks' {read_ports} read ports.")

    def port(self, name: str):
        return getattr(self, name)

    # -- addresses --------------------------------------------------------------

    @property
    def _bank_bits(self) -> int:
        return (self.banks - 1).bit_length()

    def _bank(self, addr):
        return addr.as_unsigned()[:self._bank_bits] if self._bank_bits else 0

    def _index(self, addr):
        return addr.as_unsigned() >> self._bank_bits

    def _in_bank(self, addr, b: int):
        return self._bank(addr) == b if self._bank_bits else 1

    # -- the banks ----------------------------------------------------------------

    def elaborate(self, platform) -> Module:
        m = Module()
        depth = -(-self.rows // self.banks)
        nb, nd = self.banks, self.dma_ports
        # per DMA read: the bank and bank port granted last cycle (its data's source)
        d_bank = [Signal(range(nb), name=f"d{j}_rbank") for j in range(nd)]
        d_port = [Signal(range(2), name=f"d{j}_rport") for j in range(nd)]
        c_bank = [Signal(range(nb), name=f"c{k}_rbank") for k in range(len(self.compute_reads))]
        read_data = []                                   # [bank][port] -> data
        for b in range(nb):
            mem = Memory(shape=self.shape, depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            read_data.append(self._bank_reads(m, b, mem, d_bank, d_port))
            self._bank_write(m, b, mem)
        for k, p in enumerate(self.compute_reads):
            addr = self.port(f"c{k}_addr")
            m.d.sync += c_bank[k].eq(self._bank(addr))
            self._select(m, self.port(f"c{k}_data"), c_bank[k],
                         [read_data[b][p] for b in range(nb)])
        for j in range(nd):
            with m.Switch(d_port[j]):
                for p in range(self.read_ports):
                    with m.Case(p):
                        self._select(m, self.port(f"d{j}_rdata"), d_bank[j],
                                     [read_data[b][p] for b in range(nb)])
        return m

    def _bank_reads(self, m: Module, b: int, mem: Memory, d_bank, d_port) -> list:
        """Bank b's read ports: compute first, the DMA on a port left free."""
        n = self.read_ports
        ports = [mem.read_port() for _ in range(n)]
        busy = [Signal(name=f"bank{b}_c{p}_busy") for p in range(n)]
        for p, port in enumerate(ports):
            users = [k for k, q in enumerate(self.compute_reads) if q == p]
            for k in reversed(users):                   # the first user wins (never two)
                addr, en = self.port(f"c{k}_addr"), self.port(f"c{k}_en")
                with m.If(en & self._in_bank(addr, b)):
                    m.d.comb += [busy[p].eq(1), port.addr.eq(self._index(addr))]
        # at most one DMA row of a beat falls into this bank
        want = Signal(name=f"bank{b}_d_want")
        d_addr = Signal(unsigned(max(1, (mem.depth - 1).bit_length())), name=f"bank{b}_d_addr")
        d_row = Signal(range(max(2, self.dma_ports)), name=f"bank{b}_d_row")
        for j in reversed(range(self.dma_ports)):
            addr, en = self.port(f"d{j}_raddr"), self.port(f"d{j}_ren")
            with m.If(en & self._in_bank(addr, b)):
                m.d.comb += [want.eq(1), d_addr.eq(self._index(addr)), d_row.eq(j)]
        for p in reversed(range(n)):          # the last port first: compute uses it least
            others_taken = [busy[q] for q in range(p + 1, n)]
            free_here = ~busy[p]
            for taken in others_taken:
                free_here = free_here & taken
            with m.If(want & free_here):
                m.d.comb += ports[p].addr.eq(d_addr)
                for j in range(self.dma_ports):
                    with m.If(d_row == j):
                        m.d.comb += self.port(f"d{j}_rgrant").eq(1)
                        m.d.sync += [d_bank[j].eq(b), d_port[j].eq(p)]
        return [port.data for port in ports]

    def _bank_write(self, m: Module, b: int, mem: Memory) -> None:
        """Bank b's write port: the compute's write, else a DMA row's."""
        port = mem.write_port()
        with m.If(self.c_wen & self._in_bank(self.c_waddr, b)):
            m.d.comb += [port.en.eq(1), port.addr.eq(self._index(self.c_waddr)),
                         port.data.eq(self.c_wdata)]
        with m.Else():
            for j in reversed(range(self.dma_ports)):
                addr, en = self.port(f"d{j}_waddr"), self.port(f"d{j}_wen")
                with m.If(en & self._in_bank(addr, b)):
                    m.d.comb += [port.en.eq(1), port.addr.eq(self._index(addr)),
                                 port.data.eq(self.port(f"d{j}_wdata")),
                                 self.port(f"d{j}_wgrant").eq(1)]

    @staticmethod
    def _select(m: Module, target, sel, options) -> None:
        if len(options) == 1:
            m.d.comb += target.eq(options[0])
            return
        with m.Switch(sel):
            for i, option in enumerate(options):
                with m.Case(i):
                    m.d.comb += target.eq(option)
