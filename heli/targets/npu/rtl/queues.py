"""Instruction fetch, the dependency-token channels, and the executor of the
load and store queues (``docs/npu.md``, "Queues and synchronization", "RTL core").

* :class:`Fetch` takes the program one word per cycle from an instruction
  port, checks it with the generated decoder and writes it, with its program
  index, into the queue its opcode names; it stalls while that queue is full
  and stops at ``halt`` (or at a word that does not decode: ``error``).
* :class:`TokenChannels` holds the six channels Q → D, each a counter of at
  most ``token_depth`` tokens.
* :class:`DmaQueueExecutor` runs one queue of DMA transfers, ``push`` and
  ``wait``, in order: a transfer is handed to the shared DMA engine and the
  queue waits for it to finish.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from heli.targets.npu.isa import WORD_BITS, Queue
from heli.targets.npu.rtl.bus import ADDR_BITS
from heli.targets.npu.rtl.decoder import InstructionDecoder

PC_BITS = 32
QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)
#: Bits of a queue entry: the instruction word, then its program index.
ENTRY_BITS = WORD_BITS + PC_BITS


class Fetch(wiring.Component):
    """Dispatches the program to the three queues.

    Attributes
    ----------
    in_valid : In(1)
        ``in_word`` holds the next instruction of the program.
    in_word : In(128)
        The instruction word.
    in_ready : Out(1)
        The word is taken this cycle.
    q_data : Out(160)
        The queue entry: the word in bits 127..0, its program index above.
    q_wen : Out(3)
        Write ``q_data`` into queue k (bit k: 0 load, 1 compute, 2 store).
    q_wrdy : In(3)
        Queue k has room.
    halted : Out(1)
        ``halt`` was fetched: nothing more is taken.
    error : Out(1)
        A word did not decode (fetch stops); ``error_pc`` is its index.
    error_pc : Out(32)
        Program index of that word.
    """

    in_valid: In(1)
    in_word: In(WORD_BITS)
    in_ready: Out(1)
    q_data: Out(ENTRY_BITS)
    q_wen: Out(3)
    q_wrdy: In(3)
    halted: Out(1)
    error: Out(1)
    error_pc: Out(PC_BITS)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.decoder = dec = InstructionDecoder()
        pc = Signal(PC_BITS)
        m.d.comb += [dec.word.eq(self.in_word), self.q_data.eq(self.in_word | (pc << WORD_BITS))]
        running = Signal()
        m.d.comb += running.eq(self.in_valid & ~self.halted & ~self.error)
        with m.If(running & ~dec.valid):
            m.d.sync += [self.error.eq(1), self.error_pc.eq(pc)]
        with m.Elif(running & dec.is_halt):
            m.d.comb += self.in_ready.eq(1)
            m.d.sync += self.halted.eq(1)
        with m.Elif(running):
            room = Signal()
            m.d.comb += room.eq(self.q_wrdy.bit_select(dec.queue, 1))
            with m.If(room):
                m.d.comb += [self.in_ready.eq(1), self.q_wen.eq(Const(1, 3) << dec.queue)]
                m.d.sync += pc.eq(pc + 1)
        return m


class TokenChannels(wiring.Component):
    """The six token channels between the three queues.

    Per queue q (0 load, 1 compute, 2 store), as ``<port>[q]``:

    Attributes
    ----------
    push : In(3)
        Queue q adds a token to channel q → ``push_dst[q]`` this cycle.
    push_dst : In(6)
        Two bits per queue: the destination of q's ``push``.
    push_ok : Out(3)
        Channel q → ``push_dst[q]`` holds fewer than ``token_depth`` tokens.
    wait : In(3)
        Queue q removes a token from channel ``wait_src[q]`` → q this cycle.
    wait_src : In(6)
        Two bits per queue: the source of q's ``wait``.
    wait_ok : Out(3)
        Channel ``wait_src[q]`` → q holds a token.
    empty : Out(1)
        Every channel is empty (a finished program must leave no token).
    """

    push: In(3)
    push_dst: In(6)
    push_ok: Out(3)
    wait: In(3)
    wait_src: In(6)
    wait_ok: Out(3)
    empty: Out(1)

    def __init__(self, token_depth: int) -> None:
        if token_depth < 1:
            raise ValueError(f"token_depth = {token_depth} must be positive.")
        self.token_depth = token_depth
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        count = {(s, d): Signal(range(self.token_depth + 1), name=f"tokens_{s}_{d}")
                 for s in range(3) for d in range(3) if s != d}
        empty = Const(1, 1)
        for (s, d), c in count.items():
            inc = self.push[s] & (self.push_dst[2 * s:2 * s + 2] == d)
            dec = self.wait[d] & (self.wait_src[2 * d:2 * d + 2] == s)
            with m.If(inc & ~dec):
                m.d.sync += c.eq(c + 1)
            with m.Elif(dec & ~inc):
                m.d.sync += c.eq(c - 1)
            empty = empty & (c == 0)
        m.d.comb += self.empty.eq(empty)
        for q in range(3):
            dst, src = self.push_dst[2 * q:2 * q + 2], self.wait_src[2 * q:2 * q + 2]
            full_sel, has_sel = Const(0, 1), Const(0, 1)
            for (s, d), c in count.items():
                if s == q:
                    full_sel = full_sel | ((dst == d) & (c == self.token_depth))
                if d == q:
                    has_sel = has_sel | ((src == s) & (c != 0))
            m.d.comb += [self.push_ok[q].eq(~full_sel & (dst != q)), self.wait_ok[q].eq(has_sel)]
        return m


class DmaQueueExecutor(wiring.Component):
    """Executes the load or the store queue: DMA transfers, ``push``, ``wait``.

    Attributes
    ----------
    instr_valid, instr_word, instr_pc, instr_ready :
        The queue's head entry and its dequeue strobe.
    tok_push, tok_dst, tok_push_ok, tok_wait, tok_src, tok_wait_ok :
        As :class:`~heli.targets.npu.rtl.sequencer.ComputeSequencer`'s.
    dma_valid : Out(1)
        The head is a transfer, offered to the DMA engine (fields below).
    dma_grant : In(1)
        The DMA engine takes it this cycle.
    dma_store, dma_mem, dma_sram, dma_dram, dma_stride, dma_rows, dma_cols : Out
        The transfer's fields.
    dma_done : In(1)
        The DMA engine finishes this queue's transfer this cycle (the next
        transfer of the queue may be offered in the same cycle).
    retire : Out(1)
        An instruction completes this cycle.
    retire_pc : Out(32)
        Its program index.
    idle : Out(1)
        No transfer in flight.
    """

    instr_valid: In(1)
    instr_word: In(WORD_BITS)
    instr_pc: In(PC_BITS)
    instr_ready: Out(1)
    tok_push: Out(1)
    tok_dst: Out(2)
    tok_push_ok: In(1)
    tok_wait: Out(1)
    tok_src: Out(2)
    tok_wait_ok: In(1)
    dma_valid: Out(1)
    dma_grant: In(1)
    dma_store: Out(1)
    dma_mem: Out(1)
    dma_sram: Out(16)
    dma_dram: Out(ADDR_BITS)
    dma_stride: Out(ADDR_BITS)
    dma_rows: Out(16)
    dma_cols: Out(8)
    dma_done: In(1)
    retire: Out(1)
    retire_pc: Out(PC_BITS)
    idle: Out(1)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.decoder = dec = InstructionDecoder()
        busy, pc = Signal(), Signal(PC_BITS)
        head, dma_head = Signal(), Signal()
        # a transfer may follow the previous one in the cycle it finishes
        m.d.comb += [dec.word.eq(self.instr_word), head.eq(self.instr_valid & ~busy),
                     dma_head.eq(self.instr_valid & (~busy | self.dma_done)),
                     self.idle.eq(~busy)]
        m.d.comb += [self.tok_dst.eq(dec.f_dst), self.tok_src.eq(dec.f_src),
                     self.dma_store.eq(dec.is_dma_store), self.dma_mem.eq(dec.f_mem),
                     self.dma_sram.eq(dec.f_sram), self.dma_dram.eq(dec.f_dram),
                     self.dma_stride.eq(dec.f_stride), self.dma_rows.eq(dec.f_rows),
                     self.dma_cols.eq(dec.f_cols)]
        is_dma = dec.is_dma_load | dec.is_dma_store
        m.d.comb += [
            self.tok_push.eq(head & dec.is_push & self.tok_push_ok),
            self.tok_wait.eq(head & dec.is_wait & self.tok_wait_ok),
            self.dma_valid.eq(dma_head & is_dma),
        ]
        token_done = self.tok_push | self.tok_wait
        m.d.comb += self.instr_ready.eq(token_done | (self.dma_valid & self.dma_grant))
        with m.If(busy & self.dma_done):
            m.d.sync += busy.eq(0)
        with m.If(self.dma_valid & self.dma_grant):
            m.d.sync += [busy.eq(1), pc.eq(self.instr_pc)]
        m.d.comb += [self.retire.eq(token_done | (busy & self.dma_done)),
                     self.retire_pc.eq(Mux(busy, pc, self.instr_pc))]
        return m
