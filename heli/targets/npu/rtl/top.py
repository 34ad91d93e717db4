"""The NPU's datapath: scratchpad and accumulator SRAMs, the systolic array, the
vector unit and the instruction decoder, wired together.

The sequencing (the three instruction queues, dependency tokens, the DMA
engine and the per-instruction row counters) is not generated yet: its
control signals are this component's inputs, so a controller (or a test
bench) drives them.  Per cycle:

* the scratchpad's read port feeds the array's input row, its weight chain
  and the vector unit's int8 operand ``a``; the accumulator's read port feeds
  the vector unit's int32 operand ``x`` (reads take one cycle);
* the scratchpad's write port takes the DMA's row or the vector unit's int8
  result; the accumulator's takes the DMA's row, the array's output row
  (``matmul acc=0``), the array's output row plus the row read from the
  accumulator (``matmul acc=1``) or the vector unit's int32 result.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Module, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heli.targets.npu.config import NpuConfig
from heli.targets.npu.rtl.array import INT8, INT32, SystolicArray
from heli.targets.npu.rtl.decoder import InstructionDecoder
from heli.targets.npu.rtl.params import addr_bits, check_rtl_config
from heli.targets.npu.rtl.vector import SHIFT, VecOp, VectorUnit


class SpadSource(enum.Enum, shape=1):
    """What the scratchpad's write port writes."""

    DMA = 0
    VECTOR = 1


class AccSource(enum.Enum, shape=2):
    """What the accumulator's write port writes."""

    DMA = 0
    ARRAY = 1          # matmul acc=0
    ARRAY_ACC = 2      # matmul acc=1: array row + the accumulator row read
    VECTOR = 3


#: Vector-unit inputs that the datapath forwards from its own ports (``vec_<name>``).
_VEC_FORWARD = ("op", "valid_in", "y", "b", "mult", "shift", "zp", "lo", "hi", "za", "ma",
                "zb", "mb", "acc", "fill")


class NpuDatapath(wiring.Component):
    """The generated top level for one :class:`NpuConfig` (checked first).

    Attributes
    ----------
    instr : In(128)
        An instruction word for the decoder.
    dec_<port> : Out(...)
        Every output of :class:`InstructionDecoder` (opcode, status, valid,
        queue, ``is_<mnemonic>``, ``f_<field>``), for the controller.
    spad_raddr : In(spad_addr_bits)
        Scratchpad row to read; its data appears on ``spad_rdata`` next cycle.
    spad_rdata : Out(ArrayLayout(signed(8), DIM))
        The row read (for the DMA's stores; the units take it internally).
    spad_waddr, spad_wen, spad_wsel, spad_wdata : In
        Scratchpad write: row, enable, source (:class:`SpadSource`), and the
        DMA's row (int8 lanes) when the source is ``DMA``.
    acc_raddr, acc_rdata, acc_waddr, acc_wen, acc_wsel, acc_wdata :
        The same for the accumulator (int32 lanes, :class:`AccSource`).
    array_valid : In(1)
        ``spad_rdata`` is an input row for the array this cycle.
    array_w_load : In(1)
        Shift ``spad_rdata`` into the array's weight chain this cycle.
    array_c : Out(ArrayLayout(signed(32), DIM))
        The array's output row; ``array_c_valid`` marks it.
    array_c_valid : Out(1)
        ``array_c`` holds an output row.
    vec_<operand> : In(...)
        The vector unit's operation, ``valid_in``, second operands (``y``,
        ``b``), per-lane ``mult`` / ``shift`` and scalar parameters; its ``x``
        is ``acc_rdata`` and its ``a`` is ``spad_rdata``.
    vec_valid_out : Out(1)
        The vector unit's results (``spad_wsel = VECTOR`` / ``acc_wsel = VECTOR``)
        are valid this cycle.
    """

    def __init__(self, cfg: NpuConfig) -> None:
        self.cfg = check_rtl_config(cfg)
        dim = cfg.dim
        self.decoder = InstructionDecoder()
        rows8 = data.ArrayLayout(INT8, dim)
        rows32 = data.ArrayLayout(INT32, dim)
        sa, aa = addr_bits(cfg.spad_rows), addr_bits(cfg.acc_rows)
        members = {"instr": In(128)}
        for name, member in self.decoder.signature.members.items():
            if member.flow == wiring.Out:
                members[f"dec_{name}"] = Out(member.shape)
        members |= {
            "spad_raddr": In(sa), "spad_rdata": Out(rows8),
            "spad_waddr": In(sa), "spad_wen": In(1), "spad_wsel": In(SpadSource),
            "spad_wdata": In(rows8),
            "acc_raddr": In(aa), "acc_rdata": Out(rows32),
            "acc_waddr": In(aa), "acc_wen": In(1), "acc_wsel": In(AccSource),
            "acc_wdata": In(rows32),
            "array_valid": In(1), "array_w_load": In(1),
            "array_c": Out(rows32), "array_c_valid": Out(1),
            "vec_op": In(VecOp), "vec_valid_in": In(1),
            "vec_y": In(rows32), "vec_b": In(rows8), "vec_mult": In(rows32),
            "vec_shift": In(data.ArrayLayout(SHIFT, dim)),
            "vec_zp": In(INT8), "vec_lo": In(INT8), "vec_hi": In(INT8),
            "vec_za": In(INT8), "vec_ma": In(signed(16)), "vec_zb": In(INT8),
            "vec_mb": In(signed(16)), "vec_acc": In(1), "vec_fill": In(INT32),
            "vec_valid_out": Out(1),
        }
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, dim = self.cfg, self.cfg.dim
        m.submodules.decoder = dec = self.decoder
        m.submodules.array = arr = SystolicArray(dim)
        m.submodules.vector = vec = VectorUnit(dim)
        m.submodules.spad = spad = Memory(shape=data.ArrayLayout(INT8, dim),
                                          depth=cfg.spad_rows, init=[])
        m.submodules.acc = acc = Memory(shape=data.ArrayLayout(INT32, dim),
                                        depth=cfg.acc_rows, init=[])
        spad_r, spad_w = spad.read_port(), spad.write_port()
        acc_r, acc_w = acc.read_port(), acc.write_port()

        m.d.comb += dec.word.eq(self.instr)
        for name, member in dec.signature.members.items():
            if member.flow == wiring.Out:
                m.d.comb += getattr(self, f"dec_{name}").eq(getattr(dec, name))

        m.d.comb += [
            spad_r.addr.eq(self.spad_raddr), self.spad_rdata.eq(spad_r.data),
            acc_r.addr.eq(self.acc_raddr), self.acc_rdata.eq(acc_r.data),
            arr.a.eq(spad_r.data), arr.a_valid.eq(self.array_valid),
            arr.w_row.eq(spad_r.data), arr.w_load.eq(self.array_w_load),
            self.array_c.eq(arr.c), self.array_c_valid.eq(arr.c_valid),
            vec.x.eq(acc_r.data), vec.a.eq(spad_r.data),
            self.vec_valid_out.eq(vec.valid_out),
        ]
        for name in _VEC_FORWARD:
            m.d.comb += getattr(vec, name).eq(getattr(self, f"vec_{name}"))

        m.d.comb += [spad_w.addr.eq(self.spad_waddr), spad_w.en.eq(self.spad_wen),
                     acc_w.addr.eq(self.acc_waddr), acc_w.en.eq(self.acc_wen)]
        with m.Switch(self.spad_wsel):
            with m.Case(SpadSource.DMA):
                m.d.comb += spad_w.data.eq(self.spad_wdata)
            with m.Case(SpadSource.VECTOR):
                m.d.comb += spad_w.data.eq(vec.out8)
        with m.Switch(self.acc_wsel):
            with m.Case(AccSource.DMA):
                m.d.comb += acc_w.data.eq(self.acc_wdata)
            with m.Case(AccSource.ARRAY):
                m.d.comb += acc_w.data.eq(arr.c)
            with m.Case(AccSource.ARRAY_ACC):
                for n in range(dim):
                    m.d.comb += acc_w.data[n].eq(arr.c[n] + acc_r.data[n])
            with m.Case(AccSource.VECTOR):
                m.d.comb += acc_w.data.eq(vec.out32)
        return m

