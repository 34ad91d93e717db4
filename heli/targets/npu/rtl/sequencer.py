"""The compute queue's sequencer: executes ``load_weights``, ``matmul``, the
vector instructions, ``lut_load`` / ``vlut``, ``push`` and ``wait`` of the
compute queue, one after the other, driving the systolic array, the vector
unit and the lookup tables with per-instruction row counters.

Every streaming instruction walks two counters, ``o < outer`` and ``i < rows``,
and issues one row per cycle: the source row ``base + o·ostride + i·stride``
and the destination row ``dst + o·dst_ostride + i`` (``docs/npu.md``, "RTL
core").  SRAM reads take one cycle; the results travel down delay lines with
their destination rows and are written when they come out:

* vector instructions: read at t, vector unit t+1 .. t+2, written at t+3; the
  instruction completes with its last write (so the next one sees it);
* ``matmul``: read at t, array t+1 .. t+2·DIM-1, accumulator read (``acc=1``)
  at t+2·DIM-1, written at t+2·DIM.  The sequencer moves on once the rows are
  streamed: an array instruction may follow at once (shadow weights), every
  other instruction waits for the drain.  A ``load_weights`` starts no earlier
  than 2·DIM-1 cycles after the last ``matmul`` started (every PE has
  switched to the active weights by then);
* ``load_weights``: rows ``src + DIM-1`` down to ``src`` (zero beyond
  ``rows``) are read through scratchpad port B and shifted into the array's
  shadow weights over DIM cycles, by an engine of its own that runs beside a
  streaming ``matmul``; the next ``matmul`` may start in the cycle the last
  row is read.

``requant_pc`` first reads its two parameter rows (three cycles), ``vbias``
its bias row (one cycle), so that no instruction reads two accumulator rows
in one cycle: the accumulator's banks have one read port.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heli.targets.npu.config import NpuConfig
from heli.targets.npu.isa import WORD_BITS, Mem
from heli.targets.npu.rtl.array import SystolicArray
from heli.targets.npu.rtl.decoder import InstructionDecoder
from heli.targets.npu.rtl.params import addr_bits
from heli.targets.npu.rtl.vector import SHIFT, VecOp, VectorUnit

INT8 = signed(8)
INT32 = signed(32)
PC_BITS = 32
#: Cycles from a vector instruction's read to its write (SRAM read + vector unit).
VEC_DELAY = 1 + VectorUnit.latency


class Kind(enum.Enum, shape=3):
    """What the streaming state does with each row."""

    VECTOR = 0
    MATMUL = 1
    LUT = 3            # vlut
    LUT_LOAD = 4


class State(enum.Enum, shape=3):
    IDLE = 0
    PREFETCH0 = 1      # requant_pc: read the multiplier row
    PREFETCH1 = 2      # ... the shift row
    PREFETCH2 = 3
    BIAS = 6           # vbias: read the bias row (held in a register while the rows stream)
    STREAM = 4
    DRAIN = 5


class ComputeSequencer(wiring.Component):
    """Executes the compute queue (see the module docstring).

    Attributes
    ----------
    instr_valid : In(1)
        The compute queue's head instruction is in ``instr_word`` / ``instr_pc``.
    instr_word : In(128)
        The head instruction.
    instr_pc : In(32)
        Its index in the program (reported back on ``retire_pc``).
    instr_ready : Out(1)
        The sequencer takes (dequeues) the head this cycle.
    tok_push : Out(1)
        A ``push`` executes this cycle: one token into channel compute → ``tok_dst``.
    tok_dst : Out(2)
        The head's ``dst`` queue.
    tok_push_ok : In(1)
        Channel compute → ``tok_dst`` has room.
    tok_wait : Out(1)
        A ``wait`` executes this cycle: one token out of channel ``tok_src`` → compute.
    tok_src : Out(2)
        The head's ``src`` queue.
    tok_wait_ok : In(1)
        Channel ``tok_src`` → compute holds a token.
    spad_a_raddr, spad_a_ren, spad_a_rdata, spad_b_raddr, spad_b_ren, spad_b_rdata :
        Two scratchpad read ports (data one cycle after the address; ``ren``:
        the row is read this cycle, so that the banked SRAM gives the DMA the
        ports the sequencer leaves free).
    spad_waddr, spad_wen, spad_wdata : Out
        Scratchpad write port.
    acc_x_raddr, acc_x_ren, acc_x_rdata, acc_y_raddr, acc_y_ren, acc_y_rdata,
    acc_m_raddr, acc_m_ren, acc_m_rdata :
        Three accumulator read ports (vector operand, second operand or
        parameters, and the ``matmul`` accumulation); ``x`` and ``m`` never
        read in the same cycle (a vector instruction waits for the array's
        drain).
    acc_waddr, acc_wen, acc_wdata : Out
        Accumulator write port.
    retire : Out(1)
        An instruction completes this cycle (``matmul``: its rows are streamed).
    retire_pc : Out(32)
        Its program index.
    weights_retire : Out(1)
        A ``load_weights`` issues its last row this cycle.
    weights_retire_pc : Out(32)
        Its program index.
    array_retire : Out(1)
        A ``matmul``'s last output row is written this cycle.
    array_retire_pc : Out(32)
        Its program index.
    idle : Out(1)
        Nothing in flight: no instruction, no row in the array.
    """

    def __init__(self, cfg: NpuConfig) -> None:
        self.cfg = cfg
        dim = cfg.dim
        sa, aa = addr_bits(cfg.spad_rows), addr_bits(cfg.acc_rows)
        rows8, rows32 = data.ArrayLayout(INT8, dim), data.ArrayLayout(INT32, dim)
        super().__init__({
            "instr_valid": In(1), "instr_word": In(WORD_BITS), "instr_pc": In(PC_BITS),
            "instr_ready": Out(1),
            "tok_push": Out(1), "tok_dst": Out(2), "tok_push_ok": In(1),
            "tok_wait": Out(1), "tok_src": Out(2), "tok_wait_ok": In(1),
            "spad_a_raddr": Out(sa), "spad_a_ren": Out(1), "spad_a_rdata": In(rows8),
            "spad_b_raddr": Out(sa), "spad_b_ren": Out(1), "spad_b_rdata": In(rows8),
            "spad_waddr": Out(sa), "spad_wen": Out(1), "spad_wdata": Out(rows8),
            "acc_x_raddr": Out(aa), "acc_x_ren": Out(1), "acc_x_rdata": In(rows32),
            "acc_y_raddr": Out(aa), "acc_y_ren": Out(1), "acc_y_rdata": In(rows32),
            "acc_m_raddr": Out(aa), "acc_m_ren": Out(1), "acc_m_rdata": In(rows32),
            "acc_waddr": Out(aa), "acc_wen": Out(1), "acc_wdata": Out(rows32),
            "retire": Out(1), "retire_pc": Out(PC_BITS),
            "weights_retire": Out(1), "weights_retire_pc": Out(PC_BITS),
            "array_retire": Out(1), "array_retire_pc": Out(PC_BITS),
            "idle": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        dim = self.cfg.dim
        m.submodules.decoder = dec = InstructionDecoder()
        m.submodules.array = arr = SystolicArray(dim)
        m.submodules.vector = vec = VectorUnit(dim)
        m.d.comb += dec.word.eq(self.instr_word)

        r = _Regs(dim)
        state = Signal(State)
        self._dispatch(m, dec, r, state)
        self._stream(m, r, state)
        self._vector_path(m, vec, r)
        self._array_path(m, arr, r)
        self._lut_path(m, r)
        m.d.comb += self.idle.eq((state == State.IDLE) & ~r.array_busy & ~r.lw_active)
        return m

    # -- dispatch -----------------------------------------------------------

    def _dispatch(self, m: Module, dec: InstructionDecoder, r: "_Regs", state) -> None:
        dim = self.cfg.dim
        head = self.instr_valid & (state == State.IDLE)
        # load_weights runs beside a streaming matmul (shadow weights); a matmul
        # may start in the cycle the last load_weights issues its last row
        mm_streaming = (state == State.STREAM) & (r.kind == Kind.MATMUL)
        lw_free = ~r.lw_active | r.lw_last
        drained = ~r.array_busy & ~r.lw_active
        go = Signal()
        m.d.comb += [self.tok_dst.eq(dec.f_dst), self.tok_src.eq(dec.f_src)]
        with m.If(dec.is_push):
            m.d.comb += go.eq(head & self.tok_push_ok & drained)
            m.d.comb += self.tok_push.eq(go)
        with m.Elif(dec.is_wait):
            m.d.comb += go.eq(head & self.tok_wait_ok)
            m.d.comb += self.tok_wait.eq(go)
        with m.Elif(dec.is_load_weights):
            m.d.comb += go.eq(self.instr_valid & ((state == State.IDLE) | mm_streaming)
                              & (r.mm_age >= 2 * dim - 1) & lw_free)
        with m.Elif(dec.is_matmul):
            m.d.comb += go.eq(head & lw_free)
        with m.Else():
            m.d.comb += go.eq(head & drained)
        m.d.comb += self.instr_ready.eq(go)
        with m.If(r.mm_age != 2 * dim - 1):
            m.d.sync += r.mm_age.eq(r.mm_age + 1)

        self._weights(m, dec, r, go & dec.is_load_weights)
        with m.If(go & ~dec.is_load_weights):
            m.d.sync += [r.pc.eq(self.instr_pc), r.i.eq(0), r.o.eq(0), r.s_row.eq(0),
                         r.s_off.eq(0), r.d_row.eq(0), r.outer.eq(1), r.a_stride.eq(1),
                         r.a_ostride.eq(0), r.dst_ostride.eq(0), r.y_step.eq(1),
                         r.hold_y.eq(0),
                         r.acc.eq(0), r.per_lane.eq(0), r.kind.eq(Kind.VECTOR),
                         r.rows.eq(dec.f_rows), r.first.eq(1),
                         state.eq(State.STREAM)]
            self._operands(m, dec, r)
            with m.If(dec.is_push | dec.is_wait):
                m.d.sync += state.eq(State.IDLE)
                m.d.comb += [self.retire.eq(1), self.retire_pc.eq(self.instr_pc)]
            self._setup(m, dec, r, state)

    def _weights(self, m: Module, dec: InstructionDecoder, r: "_Regs", start) -> None:
        """The ``load_weights`` engine: scratchpad rows ``src + DIM-1`` down to
        ``src`` through read port B, one per cycle, beside the other engine."""
        dim = self.cfg.dim
        m.d.comb += r.lw_last.eq(r.lw_active & (r.lw_j == dim - 1))
        with m.If(r.lw_active):
            m.d.sync += r.lw_j.eq(r.lw_j + 1)
            with m.If(r.lw_last):
                m.d.sync += r.lw_active.eq(0)
        m.d.comb += [self.weights_retire.eq(r.lw_last), self.weights_retire_pc.eq(r.lw_pc)]
        with m.If(start):
            m.d.sync += [r.lw_active.eq(1), r.lw_j.eq(0), r.lw_src.eq(dec.f_src),
                         r.lw_rows.eq(dec.f_rows), r.lw_pc.eq(self.instr_pc)]

    @staticmethod
    def _operands(m: Module, dec: InstructionDecoder, r: "_Regs") -> None:
        """Which read ports the instruction's rows use: the ports the others
        leave free are the DMA's (``docs/npu.md``, "SRAM banks")."""
        pool = dec.is_vmaxpool | dec.is_vsumpool
        m.d.sync += [
            r.uses_a.eq(dec.is_matmul | pool | dec.is_vadd | dec.is_vclip | dec.is_vlut
                        | dec.is_lut_load),
            r.uses_b.eq(dec.is_vadd | (dec.is_vmaxpool & dec.f_acc)),
            r.uses_x.eq(dec.is_requant | dec.is_requant_pc | dec.is_vbias),
            r.uses_y.eq((dec.is_vadd | dec.is_vsumpool) & dec.f_acc),
        ]

    def _setup(self, m: Module, dec: InstructionDecoder, r: "_Regs", state) -> None:
        """The row counters and operands of the instruction being taken."""
        lut_rows = self.cfg.lut_rows
        s = m.d.sync
        pool = dec.is_vmaxpool | dec.is_vsumpool
        with m.If(dec.is_matmul):
            s += [r.kind.eq(Kind.MATMUL), r.a_base.eq(dec.f_a), r.a_stride.eq(dec.f_a_stride),
                  r.a_ostride.eq(dec.f_a_ostride), r.dst.eq(dec.f_c),
                  r.dst_ostride.eq(dec.f_c_ostride), r.outer.eq(dec.f_outer),
                  r.acc.eq(dec.f_acc), r.mm_age.eq(0)]
        with m.If(pool):
            s += [r.a_base.eq(dec.f_src), r.a_stride.eq(dec.f_src_stride),
                  r.a_ostride.eq(dec.f_src_ostride), r.b_base.eq(dec.f_dst),
                  r.y_base.eq(dec.f_dst), r.dst.eq(dec.f_dst),
                  r.dst_ostride.eq(dec.f_dst_ostride), r.outer.eq(dec.f_outer),
                  r.acc.eq(dec.f_acc), r.zp.eq(dec.f_zp)]
            s += [r.op.eq(Mux(dec.is_vmaxpool, VecOp.MAX, VecOp.SUM)),
                  r.to_acc.eq(dec.is_vsumpool)]
        with m.If(dec.is_vadd):
            s += [r.a_base.eq(dec.f_a), r.b_base.eq(dec.f_b), r.y_base.eq(dec.f_dst),
                  r.dst.eq(dec.f_dst), r.acc.eq(dec.f_acc), r.za.eq(dec.f_za),
                  r.ma.eq(dec.f_ma), r.zb.eq(dec.f_zb), r.mb.eq(dec.f_mb),
                  r.op.eq(VecOp.ADD), r.to_acc.eq(1)]
        with m.If(dec.is_vclip | dec.is_vlut):
            s += [r.a_base.eq(dec.f_src), r.dst.eq(dec.f_dst), r.lo.eq(dec.f_lo),
                  r.hi.eq(dec.f_hi), r.op.eq(VecOp.CLIP), r.to_acc.eq(0)]
        with m.If(dec.is_vlut):
            s += [r.kind.eq(Kind.LUT), r.lut_base.eq(dec.f_table * lut_rows)]
        with m.If(dec.is_lut_load):
            s += [r.kind.eq(Kind.LUT_LOAD), r.a_base.eq(dec.f_src), r.rows.eq(lut_rows),
                  r.lut_base.eq(dec.f_table * lut_rows)]
        with m.If(dec.is_requant | dec.is_requant_pc):
            s += [r.x_base.eq(dec.f_src), r.dst.eq(dec.f_dst), r.zp.eq(dec.f_zp),
                  r.lo.eq(dec.f_lo), r.hi.eq(dec.f_hi), r.op.eq(VecOp.REQUANT),
                  r.to_acc.eq(0), r.mult.eq(dec.f_mult), r.shift.eq(dec.f_shift)]
        with m.If(dec.is_requant_pc):
            s += [r.per_lane.eq(1), r.y_base.eq(dec.f_params), state.eq(State.PREFETCH0)]
        with m.If(dec.is_vbias):
            s += [r.hold_y.eq(1), state.eq(State.BIAS)]
            s += [r.x_base.eq(dec.f_dst), r.y_base.eq(dec.f_bias), r.y_step.eq(0),
                  r.dst.eq(dec.f_dst), r.op.eq(VecOp.BIAS), r.to_acc.eq(1)]
        with m.If(dec.is_vfill):
            s += [r.dst.eq(dec.f_dst), r.fill.eq(dec.f_value), r.op.eq(VecOp.FILL),
                  r.to_acc.eq(dec.f_mem == Mem.ACC)]

    # -- row counters ---------------------------------------------------------

    def _stream(self, m: Module, r: "_Regs", state) -> None:
        dim = self.cfg.dim
        issue = Signal()
        last_i, last_o = Signal(), Signal()
        m.d.comb += [issue.eq(state == State.STREAM), last_i.eq(r.i + 1 == r.rows),
                     last_o.eq(r.o + 1 == r.outer)]
        m.d.comb += [r.issue.eq(issue), r.last.eq(issue & last_i & last_o),
                     r.src.eq(r.a_base + r.s_row + r.s_off), r.drow.eq(r.d_row + r.i)]
        with m.If(issue):
            m.d.sync += r.first.eq(0)
            with m.If(last_i):
                m.d.sync += [r.i.eq(0), r.o.eq(r.o + 1), r.s_off.eq(0),
                             r.s_row.eq(r.s_row + r.a_ostride),
                             r.d_row.eq(r.d_row + r.dst_ostride)]
            with m.Else():
                m.d.sync += [r.i.eq(r.i + 1), r.s_off.eq(r.s_off + r.a_stride)]
        with m.If(r.last):
            with m.If(r.kind == Kind.MATMUL):
                m.d.sync += state.eq(State.IDLE)
                m.d.comb += [self.retire.eq(1), self.retire_pc.eq(r.pc)]
            with m.Else():
                m.d.sync += [state.eq(State.DRAIN), r.drain.eq(VEC_DELAY - 1)]
        with m.If(state == State.DRAIN):
            m.d.sync += r.drain.eq(r.drain - 1)
            with m.If(r.drain == 0):
                m.d.sync += state.eq(State.IDLE)
                m.d.comb += [self.retire.eq(1), self.retire_pc.eq(r.pc)]
        # requant_pc: multipliers, then shifts, from rows params and params + 1
        with m.Switch(state):
            with m.Case(State.PREFETCH0):
                m.d.sync += [state.eq(State.PREFETCH1), r.y_base.eq(r.y_base + 1)]
            with m.Case(State.BIAS):
                m.d.sync += state.eq(State.STREAM)
            with m.Case(State.PREFETCH1):
                m.d.sync += state.eq(State.PREFETCH2)
                for n in range(dim):
                    m.d.sync += r.mult_lane[n].eq(self.acc_y_rdata[n])
            with m.Case(State.PREFETCH2):
                m.d.sync += state.eq(State.STREAM)
                for n in range(dim):
                    m.d.sync += r.shift_lane[n].eq(self.acc_y_rdata[n][:SHIFT.width])

        # read addresses (the SRAM ports ignore unused ones)
        lw_row = Signal(16)
        m.d.comb += lw_row.eq(r.lw_src + (dim - 1) - r.lw_j)
        prefetch = (state == State.PREFETCH0) | (state == State.PREFETCH1) | (state == State.BIAS)
        # the bias row read in State.BIAS is on the port in the first STREAM cycle
        with m.If(issue & r.first & r.hold_y):
            m.d.sync += r.y_held.eq(self.acc_y_rdata)
        m.d.comb += [
            self.spad_a_ren.eq(issue & r.uses_a),
            self.spad_b_ren.eq(r.lw_active | (issue & r.uses_b)),
            self.acc_x_ren.eq(issue & r.uses_x),
            self.acc_y_ren.eq(prefetch | (issue & r.uses_y)),
            self.spad_a_raddr.eq(r.src),
            self.spad_b_raddr.eq(Mux(r.lw_active, lw_row, r.b_base + r.drow)),
            self.acc_x_raddr.eq(r.x_base + r.drow),
            self.acc_y_raddr.eq(Mux(state == State.STREAM,
                                    r.y_base + Mux(r.y_step, r.drow, 0), r.y_base)),
        ]

    # -- vector unit and write-back -------------------------------------------

    def _vector_path(self, m: Module, vec: VectorUnit, r: "_Regs") -> None:
        """Rows of vector instructions, ``vlut`` and ``lut_load``: read at t,
        operands at t+1, results written at t+3."""
        dim = self.cfg.dim
        vector_like = (r.kind == Kind.VECTOR) | (r.kind == Kind.LUT)
        line = [Signal(_VecStage, name=f"vstage{k}") for k in range(VEC_DELAY)]
        m.d.sync += [line[0].valid.eq(r.issue & vector_like), line[0].row.eq(r.dst + r.drow),
                     line[0].to_acc.eq(r.to_acc), line[0].lut.eq(r.kind == Kind.LUT)]
        for k in range(1, VEC_DELAY):
            m.d.sync += line[k].eq(line[k - 1])
        m.d.comb += [vec.valid_in.eq(line[0].valid), vec.op.eq(r.op),
                     vec.x.eq(self.acc_x_rdata),
                     vec.y.eq(Mux(r.hold_y, r.y_held, self.acc_y_rdata)),
                     vec.a.eq(self.spad_a_rdata), vec.b.eq(self.spad_b_rdata),
                     vec.zp.eq(r.zp), vec.lo.eq(r.lo), vec.hi.eq(r.hi), vec.za.eq(r.za),
                     vec.ma.eq(r.ma), vec.zb.eq(r.zb), vec.mb.eq(r.mb), vec.acc.eq(r.acc),
                     vec.fill.eq(r.fill)]
        for n in range(dim):
            m.d.comb += [vec.mult[n].eq(Mux(r.per_lane, r.mult_lane[n], r.mult)),
                         vec.shift[n].eq(Mux(r.per_lane, r.shift_lane[n], r.shift))]
        out = line[-1]
        m.d.comb += [self.spad_waddr.eq(out.row), self.spad_wen.eq(out.valid & ~out.to_acc),
                     self.spad_wdata.eq(Mux(out.lut, r.lut_out, vec.out8))]
        m.d.comb += [self.acc_waddr.eq(out.row), self.acc_wdata.eq(vec.out32),
                     self.acc_wen.eq(out.valid & out.to_acc)]

    def _array_path(self, m: Module, arr: SystolicArray, r: "_Regs") -> None:
        """``load_weights`` rows at t+1; ``matmul`` rows into the array at t+1,
        their results written 2·DIM cycles after the read."""
        dim = self.cfg.dim
        lw_valid, lw_keep = Signal(), Signal()
        m.d.sync += [lw_valid.eq(r.lw_active), lw_keep.eq((dim - 1) - r.lw_j < r.lw_rows)]
        for n in range(dim):
            m.d.comb += arr.w_row[n].eq(Mux(lw_keep, self.spad_b_rdata[n], 0))
        m.d.comb += arr.w_load.eq(lw_valid)

        a_valid, a_first = Signal(), Signal()
        is_mm = r.issue & (r.kind == Kind.MATMUL)
        m.d.sync += [a_valid.eq(is_mm), a_first.eq(is_mm & r.first)]
        m.d.comb += [arr.a.eq(self.spad_a_rdata), arr.a_valid.eq(a_valid),
                     arr.a_first.eq(a_first)]

        depth = 2 * dim                          # SRAM read + the array's latency
        line = [Signal(_MmStage, name=f"mstage{k}") for k in range(depth)]
        m.d.sync += [line[0].valid.eq(is_mm), line[0].row.eq(r.dst + r.drow),
                     line[0].acc.eq(r.acc), line[0].last.eq(r.last), line[0].pc.eq(r.pc)]
        for k in range(1, depth):
            m.d.sync += line[k].eq(line[k - 1])
        busy = Const(0, 1)
        for st in line:
            busy = busy | st.valid
        m.d.comb += r.array_busy.eq(busy)
        m.d.comb += [self.acc_m_raddr.eq(line[-2].row),
                     self.acc_m_ren.eq(line[-2].valid & line[-2].acc)]
        out = line[-1]
        with m.If(out.valid):
            m.d.comb += [self.acc_waddr.eq(out.row), self.acc_wen.eq(1)]
            for n in range(dim):
                m.d.comb += self.acc_wdata[n].eq(
                    arr.c[n] + Mux(out.acc, self.acc_m_rdata[n], 0))
        m.d.comb += [self.array_retire.eq(out.valid & out.last),
                     self.array_retire_pc.eq(out.pc)]

    def _lut_path(self, m: Module, r: "_Regs") -> None:
        """The lookup tables: ``lut_tables`` x ceil(256/DIM) rows of DIM int8.
        ``lut_load`` writes a row at t+1; ``vlut`` reads lane n's entry
        ``a[n] + 128`` at t+1 (row = entry / DIM) and selects it at t+2.
        Each lane has its own copy of the tables (one read port each, all
        written together): DIM small two-port macros instead of one memory
        with DIM read ports, which only flip-flops and multiplexers build."""
        cfg, dim = self.cfg, self.cfg.dim
        lane_bits = (dim - 1).bit_length()
        depth = cfg.lut_tables * cfg.lut_rows
        load_valid = Signal()
        load_row = Signal(range(depth))
        m.d.sync += [load_valid.eq(r.issue & (r.kind == Kind.LUT_LOAD)),
                     load_row.eq(r.lut_base + r.i)]
        for n in range(dim):
            lut = Memory(shape=data.ArrayLayout(INT8, dim), depth=depth, init=[])
            m.submodules[f"lut_{n}"] = lut
            wp, rp = lut.write_port(), lut.read_port()
            m.d.comb += [wp.en.eq(load_valid), wp.addr.eq(load_row),
                         wp.data.eq(self.spad_a_rdata)]
            idx = Signal(unsigned(8), name=f"lut_idx_{n}")
            sel = Signal(unsigned(max(lane_bits, 1)), name=f"lut_sel_{n}")
            m.d.comb += idx.eq(self.spad_a_rdata[n].as_unsigned() ^ 0x80)
            m.d.comb += rp.addr.eq(r.lut_base + (idx >> lane_bits))
            m.d.sync += sel.eq(idx[:lane_bits] if lane_bits else 0)
            m.d.sync += r.lut_out[n].eq(rp.data.as_value().word_select(sel, 8))


class _VecStage(data.Struct):
    """A row on its way through the vector unit."""

    valid: 1
    row: 16
    to_acc: 1
    lut: 1


class _MmStage(data.Struct):
    """A ``matmul`` row on its way through the array."""

    valid: 1
    row: 16
    acc: 1
    last: 1
    pc: PC_BITS


class _Regs:
    """The sequencer's registers (one instruction's row counters and operands)."""

    def __init__(self, dim: int) -> None:
        s = Signal
        self.pc = s(PC_BITS)
        self.kind, self.op = s(Kind), s(VecOp)
        self.rows, self.outer, self.i, self.o = s(16), s(12), s(16), s(12)
        self.a_base, self.a_stride, self.a_ostride = s(16), s(8), s(16)
        self.s_row, self.s_off, self.d_row = s(16), s(16), s(16)
        self.b_base, self.x_base, self.y_base, self.y_step = s(16), s(16), s(16), s(1)
        self.dst, self.dst_ostride = s(16), s(16)
        self.lw_rows, self.lut_base = s(8), s(16)
        self.lw_active, self.lw_j, self.lw_src, self.lw_pc = s(1), s(range(dim)), s(16), \
            s(PC_BITS)
        self.lw_last = s(1)
        self.acc, self.first, self.to_acc, self.per_lane = s(1), s(1), s(1), s(1)
        self.uses_a, self.uses_b, self.uses_x, self.uses_y = s(1), s(1), s(1), s(1)
        self.hold_y = s(1)
        self.y_held = s(data.ArrayLayout(INT32, dim))
        self.mult, self.shift, self.fill = s(INT32), s(SHIFT), s(INT32)
        self.zp, self.lo, self.hi, self.za, self.zb = (s(INT8) for _ in range(5))
        self.ma, self.mb = s(signed(16)), s(signed(16))
        self.mult_lane = s(data.ArrayLayout(INT32, dim))
        self.shift_lane = s(data.ArrayLayout(SHIFT, dim))
        self.lut_out = s(data.ArrayLayout(INT8, dim))
        self.mm_age = s(range(2 * dim), init=2 * dim - 1)   # no matmul yet: weights free
        self.drain = s(range(VEC_DELAY))
        # combinational
        self.issue, self.last = s(1), s(1)
        self.src, self.drow = s(16), s(16)
        self.array_busy = s(1)
