"""The NPU's memory bus (``docs/npu.md``, "RTL core"): one request channel and
one response channel, each a valid / ready handshake, in the style of AXI-lite.

A request (a *beat*) moves ``rows`` DRAM rows of a DMA transfer, 1 .. ROWS
(:data:`DMA_ROWS` by default): row j is ``len`` bytes (1 .. 4·DIM) at byte
address ``addr + j·stride`` (any alignment).  The data channels have one
4·DIM-byte slot per row: a write carries row j's bytes in ``wdata`` slot j
(byte b of the row in bits ``8(4·DIM·j + b) + 7 .. 8(4·DIM·j + b)``); a read's
bytes come back the same way in ``rdata``.  Every request gets exactly one
response, in request order (a write's response is its acknowledgement: the
bytes are in DRAM).  A transfer happens on a cycle where both ``valid`` and
``ready`` are set; a master keeps its request stable while ``valid`` is set
and ``ready`` is not.

Latency and bandwidth are the memory's business: the co-simulation's DRAM
model (``cosim.py``) answers ``dma_latency`` cycles after a request and
delivers at most ``dram_bytes_per_cycle`` bytes per cycle on average.
"""

# No `from __future__ import annotations`: wiring.Signature reads the shapes as values.
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: Width of a DRAM byte address.
ADDR_BITS = 32
#: Rows per beat by default: rows of 4 bytes or more then fill 16 bytes per cycle
#: (the DMA writes them into 4 consecutive SRAM rows at once).
DMA_ROWS = 4


def data_bits(dim: int, rows: int = DMA_ROWS) -> int:
    """Bits of ``wdata`` / ``rdata``: ``rows`` slots of one accumulator row (DIM int32)."""
    return 32 * dim * rows


def len_bits(dim: int) -> int:
    """Bits of ``len``: up to 4·DIM bytes."""
    return (4 * dim).bit_length()


class MemBusSignature(wiring.Signature):
    """The bus as its master (the DMA engine) sees it.

    Members
    -------
    req_valid : Out(1)
        A request is offered.
    req_ready : In(1)
        The memory takes the request this cycle (if ``req_valid``).
    req_write : Out(1)
        1: write ``wdata`` to DRAM; 0: read.
    req_addr : Out(32)
        DRAM byte address of the first row's first byte.
    req_stride : Out(32)
        Bytes from one row's start to the next's.
    req_rows : Out(range(ROWS + 1))
        Rows in the beat, 1 .. ROWS.
    req_len : Out(len_bits(DIM))
        Bytes per row, 1 .. 4·DIM.
    req_wdata : Out(32·DIM·ROWS)
        The rows of a write, one 4·DIM-byte slot per row (bytes beyond ``len``
        and slots beyond ``rows`` are ignored).
    resp_valid : In(1)
        A response is offered (the oldest request's).
    resp_ready : Out(1)
        The master takes the response this cycle.
    resp_rdata : In(32·DIM·ROWS)
        The rows of a read, as ``req_wdata``; bytes beyond ``len`` are don't-care.
    """

    def __init__(self, dim: int, rows: int = DMA_ROWS) -> None:
        self.dim, self.rows = dim, rows
        super().__init__({
            "req_valid": Out(1), "req_ready": In(1), "req_write": Out(1),
            "req_addr": Out(ADDR_BITS), "req_stride": Out(ADDR_BITS),
            "req_rows": Out(range(rows + 1)), "req_len": Out(len_bits(dim)),
            "req_wdata": Out(data_bits(dim, rows)),
            "resp_valid": In(1), "resp_ready": Out(1),
            "resp_rdata": In(data_bits(dim, rows)),
        })
