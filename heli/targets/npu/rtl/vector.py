"""The vector unit: DIM lanes, one SRAM row per cycle, a fixed two-stage pipeline.

Each lane implements the arithmetic of the ISA's vector instructions exactly
as :mod:`heli.quant._fixed_point` and :mod:`heli.targets.npu.isa` define it:

* ``BIAS``: ``out32 = x + y`` (``vbias``; wraps modulo 2**32);
* ``REQUANT``: ``out8 = clamp(round_half_even(x * mult / 2**shift) + zp, lo, hi)``
  (``requant`` with the scalar multiplier on every lane, ``requant_pc`` with
  the per-lane rows): the 64-bit product is exact, the quotient is taken by an
  arithmetic shift (floor), the remainder compared with one half, ties going
  to the even quotient; no intermediate clamping;
* ``CLIP``: ``out8 = clamp(a, lo, hi)`` (``vclip``, ReLU with ``lo = zp``);
* ``ADD``: ``out32 = (a - za)*ma + (b - zb)*mb (+ y if acc)`` (``vadd``);
* ``MAX``: ``out8 = acc ? max(a, b) : a`` (``vmaxpool``; ``b`` = destination);
* ``SUM``: ``out32 = (acc ? y : 0) + a - zp`` (``vsumpool``);
* ``FILL``: ``out32 = fill``, ``out8 = fill[7:0]`` (``vfill``).

Stage 1 registers the operands' products (the 32 x 32 multiply); stage 2 the
rounding shift, zero point and clamp.  A result appears :attr:`VectorUnit.latency`
= 2 cycles after its operands, one row per cycle.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from heli.quant._fixed_point import MAX_SHIFT

INT8 = signed(8)
INT32 = signed(32)
SHIFT = unsigned(MAX_SHIFT.bit_length())      # 0..63


class VecOp(enum.Enum, shape=3):
    """The vector unit's operations (one per row of operands)."""

    BIAS = 0
    REQUANT = 1
    CLIP = 2
    ADD = 3
    MAX = 4
    SUM = 5
    FILL = 6


def _clamp(m: Module, value, lo, hi, name: str):
    """``min(max(value, lo), hi)`` (numpy.clip's order) as a new signal."""
    out = Signal(value.shape(), name=name)
    m.d.comb += out.eq(Mux(value > hi, hi, Mux(value < lo, lo, value)))
    return out


class RequantLane(wiring.Component):
    """One lane of requantization, combinational:
    ``y = clamp(round_half_even(p / 2**shift) + zp, lo, hi)`` for a 64-bit
    product ``p = x * M`` formed by the caller.

    Attributes
    ----------
    product : In(signed(64))
        The exact product ``x * M`` (|p| <= 2**62).
    shift : In(unsigned(6))
        The right shift ``s``, 0..63.
    zp : In(signed(8))
        The output zero point, added after rounding.
    lo : In(signed(8))
        The lower clip bound.
    hi : In(signed(8))
        The upper clip bound.
    y : Out(signed(8))
        The requantized value.
    """

    product: In(signed(64))
    shift: In(SHIFT)
    zp: In(INT8)
    lo: In(INT8)
    hi: In(INT8)
    y: Out(INT8)

    def elaborate(self, platform) -> Module:
        m = Module()
        p, s = self.product, self.shift
        q = Signal(signed(64))                 # floor(p / 2**s): arithmetic shift
        r = Signal(unsigned(64))               # p - q * 2**s = the low s bits of p
        half = Signal(unsigned(64))            # 2**(s-1), or 0 when s = 0
        m.d.comb += [
            q.eq(p >> s),
            r.eq(p.as_unsigned() & ((Const(1, 65) << s) - 1)),
            half.eq((Const(1, 65) << s) >> 1),
        ]
        up = Signal()
        m.d.comb += up.eq((s != 0) & ((r > half) | ((r == half) & q[0])))
        t = Signal(signed(66))                 # no intermediate clamping
        m.d.comb += t.eq(q + up + self.zp)
        m.d.comb += self.y.eq(_clamp(m, t, self.lo, self.hi, "clamped"))
        return m


class VectorUnit(wiring.Component):
    """The DIM-lane vector unit (see the module docstring for the operations).

    Attributes
    ----------
    valid_in : In(1)
        The operands below hold a row this cycle.
    op : In(VecOp)
        The operation applied to this row.
    x : In(ArrayLayout(signed(32), DIM))
        int32 operand: the accumulator row to requantize or to add a bias to.
    y : In(ArrayLayout(signed(32), DIM))
        int32 operand: the bias row (``BIAS``), or the destination's current
        contents when ``acc`` is set (``ADD``, ``SUM``).
    a : In(ArrayLayout(signed(8), DIM))
        int8 operand: the source row (``CLIP``, ``MAX``, ``SUM``) or first addend.
    b : In(ArrayLayout(signed(8), DIM))
        int8 operand: the second addend (``ADD``) or the destination (``MAX``).
    mult : In(ArrayLayout(signed(32), DIM))
        Requantization multiplier per lane (the scalar one repeated for ``requant``).
    shift : In(ArrayLayout(unsigned(6), DIM))
        Requantization shift per lane, 0..63.
    zp : In(signed(8))
        Output zero point (``REQUANT``) or input zero point (``SUM``).
    lo : In(signed(8))
        Lower clip bound (``REQUANT``, ``CLIP``).
    hi : In(signed(8))
        Upper clip bound (``REQUANT``, ``CLIP``).
    za : In(signed(8))
        Zero point of ``a`` (``ADD``).
    ma : In(signed(16))
        Multiplier of ``a`` (``ADD``).
    zb : In(signed(8))
        Zero point of ``b`` (``ADD``).
    mb : In(signed(16))
        Multiplier of ``b`` (``ADD``).
    acc : In(1)
        Combine with the destination (``ADD``, ``MAX``, ``SUM``).
    fill : In(signed(32))
        The constant of ``FILL``.
    valid_out : Out(1)
        ``out32`` / ``out8`` hold the result of the row that entered
        :attr:`latency` cycles earlier.
    out32 : Out(ArrayLayout(signed(32), DIM))
        int32 result (``BIAS``, ``ADD``, ``SUM``, ``FILL``), for the accumulator.
    out8 : Out(ArrayLayout(signed(8), DIM))
        int8 result (``REQUANT``, ``CLIP``, ``MAX``, ``FILL``), for the scratchpad.
    """

    latency = 2

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim = {dim} must be positive.")
        self.dim = dim
        rows32 = data.ArrayLayout(INT32, dim)
        rows8 = data.ArrayLayout(INT8, dim)
        super().__init__({
            "valid_in": In(1), "op": In(VecOp),
            "x": In(rows32), "y": In(rows32), "a": In(rows8), "b": In(rows8),
            "mult": In(rows32), "shift": In(data.ArrayLayout(SHIFT, dim)),
            "zp": In(INT8), "lo": In(INT8), "hi": In(INT8),
            "za": In(INT8), "ma": In(signed(16)), "zb": In(INT8), "mb": In(signed(16)),
            "acc": In(1), "fill": In(INT32),
            "valid_out": Out(1), "out32": Out(rows32), "out8": Out(rows8),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        # stage 1 registers: the operation, scalars and one row of lane values
        op1 = Signal(VecOp)
        valid1 = Signal()
        zp1, lo1, hi1 = Signal(INT8), Signal(INT8), Signal(INT8)
        m.d.sync += [op1.eq(self.op), valid1.eq(self.valid_in),
                     zp1.eq(self.zp), lo1.eq(self.lo), hi1.eq(self.hi)]
        m.d.sync += [self.valid_out.eq(valid1)]
        for n in range(self.dim):
            x, a, b = self.x[n], self.a[n], self.b[n]
            y = Mux(self.acc, self.y[n], 0)
            prod1 = Signal(signed(64), name=f"prod_{n}")
            shift1 = Signal(SHIFT, name=f"shift_{n}")
            r32 = Signal(INT32, name=f"r32_{n}")      # int32 results (wrapping)
            r8 = Signal(INT8, name=f"r8_{n}")         # int8 results needing no stage 2
            m.d.sync += [prod1.eq(x * self.mult[n]), shift1.eq(self.shift[n])]
            with m.Switch(self.op):
                with m.Case(VecOp.BIAS):
                    m.d.sync += r32.eq(x + self.y[n])
                with m.Case(VecOp.ADD):
                    m.d.sync += r32.eq((a - self.za) * self.ma + (b - self.zb) * self.mb + y)
                with m.Case(VecOp.SUM):
                    m.d.sync += r32.eq(y + a - self.zp)
                with m.Case(VecOp.CLIP):
                    m.d.sync += r8.eq(_clamp(m, a, self.lo, self.hi, f"clip_{n}"))
                with m.Case(VecOp.MAX):
                    m.d.sync += r8.eq(Mux(self.acc & (b > a), b, a))
                with m.Case(VecOp.FILL):
                    m.d.sync += [r32.eq(self.fill), r8.eq(self.fill[:8])]

            lane = RequantLane()
            m.submodules[f"requant_{n}"] = lane
            m.d.comb += [lane.product.eq(prod1), lane.shift.eq(shift1),
                         lane.zp.eq(zp1), lane.lo.eq(lo1), lane.hi.eq(hi1)]
            # stage 2
            m.d.sync += [self.out32[n].eq(r32),
                         self.out8[n].eq(Mux(op1 == VecOp.REQUANT, lane.y, r8))]
        return m
