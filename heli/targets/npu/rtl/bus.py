"""The NPU's memory bus (``docs/npu.md``, "RTL core"): one request channel and
one response channel, each a valid / ready handshake, in the style of AXI-lite.

A request moves one DRAM *row* of a DMA transfer: ``len`` bytes (1 .. 4·DIM)
from or to byte address ``addr`` (any alignment).  A write carries its bytes in
``wdata`` (byte j in bits ``8j+7 .. 8j``); a read's bytes come back the same way
in ``rdata``.  Every request gets exactly one response, in request order (a
write's response is its acknowledgement: the bytes are in DRAM).  A transfer
happens on a cycle where both ``valid`` and ``ready`` are set; a master keeps
its request stable while ``valid`` is set and ``ready`` is not.

Latency and bandwidth are the memory's business: the co-simulation's DRAM
model (``cosim.py``) answers ``dma_latency`` cycles after a request and
delivers at most ``dram_bytes_per_cycle`` bytes per cycle on average.
"""

# No `from __future__ import annotations`: wiring.Signature reads the shapes as values.
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: Width of a DRAM byte address.
ADDR_BITS = 32


def data_bits(dim: int) -> int:
    """Bits of ``wdata`` / ``rdata``: one accumulator row (DIM int32)."""
    return 32 * dim


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
        DRAM byte address of the row's first byte.
    req_len : Out(len_bits(DIM))
        Bytes in the row, 1 .. 4·DIM.
    req_wdata : Out(32·DIM)
        The bytes of a write, byte j in bits 8j+7 .. 8j (the rest ignored).
    resp_valid : In(1)
        A response is offered (the oldest request's).
    resp_ready : Out(1)
        The master takes the response this cycle.
    resp_rdata : In(32·DIM)
        The bytes of a read, as ``req_wdata``; bytes beyond ``len`` are don't-care.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        super().__init__({
            "req_valid": Out(1), "req_ready": In(1), "req_write": Out(1),
            "req_addr": Out(ADDR_BITS), "req_len": Out(len_bits(dim)),
            "req_wdata": Out(data_bits(dim)),
            "resp_valid": In(1), "resp_ready": Out(1), "resp_rdata": In(data_bits(dim)),
        })
