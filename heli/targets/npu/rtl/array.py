"""The matrix engine: a processing element and the DIM x DIM weight-stationary
systolic array built from them.

Dataflow (``docs/npu.md``, "RTL"): PE (k, n) holds weight ``W[k, n]``.
Activation ``x[k]`` enters row k from the left and moves one PE to the right
per cycle; partial sums enter column n from the top (0) and move one PE down
per cycle, each PE adding ``x[k] * W[k, n]``.  Row k of the input is delayed
k cycles (skew) so that ``x[k]`` meets the partial sum of the same input row;
column n's result leaves the bottom at cycle ``t + DIM + n`` and is delayed
``DIM - 1 - n`` cycles (de-skew), so a whole output row appears
:attr:`SystolicArray.latency` = ``2·DIM - 1`` cycles after its input row.
One input row may enter every cycle.

Weights load through a vertical shift chain in DIM cycles (``load_weights``):
on each cycle with ``w_load`` set, every PE takes the weight of the PE above
it and row 0 takes ``w_row``; feeding ``W[DIM-1], ..., W[0]`` leaves
``W[k, n]`` in PE (k, n).  Loading does not disturb rows already streaming
(their products use each PE's weight at the cycle they pass it), so a load
must not overlap a ``matmul``'s rows in flight; the controller orders them.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

INT8 = signed(8)
INT32 = signed(32)


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell: int8 x int8 + int32, weight-stationary.

    Attributes
    ----------
    a_in : In(signed(8))
        Activation from the PE on the left (or the skewed array input).
    a_out : Out(signed(8))
        ``a_in`` registered: the activation for the PE on the right.
    psum_in : In(signed(32))
        Partial sum from the PE above (0 in the top row).
    psum_out : Out(signed(32))
        ``psum_in + a_in * w`` registered, wrapping modulo 2**32.
    w_in : In(signed(8))
        Weight from the PE above (or the array's weight row) for loading.
    w_load : In(1)
        When set, the weight register takes ``w_in`` at the clock edge.
    w_out : Out(signed(8))
        The stationary weight register (feeds the PE below while loading).
    """

    a_in: In(INT8)
    a_out: Out(INT8)
    psum_in: In(INT32)
    psum_out: Out(INT32)
    w_in: In(INT8)
    w_load: In(1)
    w_out: Out(INT8)

    def elaborate(self, platform) -> Module:
        m = Module()
        w = Signal(INT8)
        m.d.comb += self.w_out.eq(w)
        with m.If(self.w_load):
            m.d.sync += w.eq(self.w_in)
        m.d.sync += [
            self.a_out.eq(self.a_in),
            # int8 * int8 is exact in 16 bits; the assignment truncates the
            # 33-bit sum to 32 bits: two's-complement wrap, as the ISA defines.
            self.psum_out.eq(self.psum_in + self.a_in * w),
        ]
        return m


class SystolicArray(wiring.Component):
    """The DIM x DIM weight-stationary systolic array: ``c = a @ W`` (int32).

    Attributes
    ----------
    a : In(ArrayLayout(signed(8), DIM))
        One input row: lane k is input channel k.  Sampled every cycle.
    a_valid : In(1)
        ``a`` holds a row to multiply this cycle.
    c : Out(ArrayLayout(signed(32), DIM))
        The output row ``c[n] = sum_k a[k] * W[k, n]`` (wrapping modulo
        2**32) of the input row that entered :attr:`latency` cycles earlier.
    c_valid : Out(1)
        ``c`` holds an output row (``a_valid`` delayed by :attr:`latency`).
    w_row : In(ArrayLayout(signed(8), DIM))
        A weight row shifted into the array's top row while ``w_load`` is set.
    w_load : In(1)
        Shift the weight chain down by one row this cycle.
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim = {dim} must be positive.")
        self.dim = dim
        super().__init__({
            "a": In(data.ArrayLayout(INT8, dim)),
            "a_valid": In(1),
            "c": Out(data.ArrayLayout(INT32, dim)),
            "c_valid": Out(1),
            "w_row": In(data.ArrayLayout(INT8, dim)),
            "w_load": In(1),
        })

    @property
    def latency(self) -> int:
        """Cycles from an input row to its output row."""
        return 2 * self.dim - 1

    def elaborate(self, platform) -> Module:
        m = Module()
        dim = self.dim
        pes = [[ProcessingElement() for _ in range(dim)] for _ in range(dim)]
        for k in range(dim):
            for n in range(dim):
                m.submodules[f"pe_{k}_{n}"] = pes[k][n]

        # input skew: row k enters k cycles late
        for k in range(dim):
            x = self.a[k]
            for d in range(k):
                r = Signal(INT8, name=f"skew_{k}_{d}")
                m.d.sync += r.eq(x)
                x = r
            m.d.comb += pes[k][0].a_in.eq(x)

        for k in range(dim):
            for n in range(dim):
                pe = pes[k][n]
                m.d.comb += pe.w_load.eq(self.w_load)
                m.d.comb += pe.w_in.eq(self.w_row[n] if k == 0 else pes[k - 1][n].w_out)
                m.d.comb += pe.psum_in.eq(0 if k == 0 else pes[k - 1][n].psum_out)
                if n + 1 < dim:
                    m.d.comb += pes[k][n + 1].a_in.eq(pe.a_out)

        # output de-skew: column n leaves DIM - 1 - n cycles before the last one
        for n in range(dim):
            y = pes[dim - 1][n].psum_out
            for d in range(dim - 1 - n):
                r = Signal(INT32, name=f"deskew_{n}_{d}")
                m.d.sync += r.eq(y)
                y = r
            m.d.comb += self.c[n].eq(y)

        valid = self.a_valid
        for d in range(self.latency):
            r = Signal(name=f"valid_{d}")
            m.d.sync += r.eq(valid)
            valid = r
        m.d.comb += self.c_valid.eq(valid)
        return m
