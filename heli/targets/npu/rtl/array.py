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

Weights are double-buffered: every PE has a *shadow* and an *active* weight
register.  ``load_weights`` shifts a block into the shadow registers through
a vertical shift chain in DIM cycles (on each cycle with ``w_load`` set,
every shadow register takes the one above it and row 0 takes ``w_row``;
feeding ``W[DIM-1], ..., W[0]`` leaves ``W[k, n]`` in PE (k, n)).  The first
input row of a ``matmul`` carries a ``first`` flag that travels with the data
(skewed like it, passed right with the activation): PE (k, n) copies its
shadow into its active register exactly when that row's element reaches it,
and uses the new weight for it.  So a ``load_weights`` may shift while an
earlier ``matmul`` still streams, once that ``matmul``'s first row has passed
every PE (``2·DIM - 1`` cycles after it entered); the controller orders them.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from amaranth.hdl import Module, Mux, Signal, signed
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
    first_in : In(1)
        ``a_in`` is the first row of a ``matmul``: the shadow weight becomes
        active (and is used for this product).
    first_out : Out(1)
        ``first_in`` registered, for the PE on the right.
    w_in : In(signed(8))
        Weight from the PE above (or the array's weight row) for loading.
    w_load : In(1)
        When set, the shadow weight register takes ``w_in`` at the clock edge.
    w_out : Out(signed(8))
        The shadow weight register (feeds the PE below while loading).
    """

    a_in: In(INT8)
    a_out: Out(INT8)
    first_in: In(1)
    first_out: Out(1)
    psum_in: In(INT32)
    psum_out: Out(INT32)
    w_in: In(INT8)
    w_load: In(1)
    w_out: Out(INT8)

    def elaborate(self, platform) -> Module:
        m = Module()
        shadow, active = Signal(INT8), Signal(INT8)
        w = Signal(INT8)                       # the weight of this cycle's product
        m.d.comb += [self.w_out.eq(shadow), w.eq(Mux(self.first_in, shadow, active))]
        with m.If(self.w_load):
            m.d.sync += shadow.eq(self.w_in)
        with m.If(self.first_in):
            m.d.sync += active.eq(shadow)
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.first_out.eq(self.first_in),
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
    a_first : In(1)
        ``a`` is the first row of a ``matmul``: it switches every PE to the
        weights last shifted in (set with ``a_valid``).
    c : Out(ArrayLayout(signed(32), DIM))
        The output row ``c[n] = sum_k a[k] * W[k, n]`` (wrapping modulo
        2**32) of the input row that entered :attr:`latency` cycles earlier.
    c_valid : Out(1)
        ``c`` holds an output row (``a_valid`` delayed by :attr:`latency`).
    w_row : In(ArrayLayout(signed(8), DIM))
        A weight row shifted into the top row of the shadow registers while
        ``w_load`` is set.
    w_load : In(1)
        Shift the shadow weight chain down by one row this cycle.
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim = {dim} must be positive.")
        self.dim = dim
        super().__init__({
            "a": In(data.ArrayLayout(INT8, dim)),
            "a_valid": In(1),
            "a_first": In(1),
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

        # input skew: row k enters k cycles late, with the `first` flag
        for k in range(dim):
            x, f = self.a[k], self.a_first & self.a_valid
            for d in range(k):
                r = Signal(INT8, name=f"skew_{k}_{d}")
                rf = Signal(name=f"skew_first_{k}_{d}")
                m.d.sync += [r.eq(x), rf.eq(f)]
                x, f = r, rf
            m.d.comb += [pes[k][0].a_in.eq(x), pes[k][0].first_in.eq(f)]

        for k in range(dim):
            for n in range(dim):
                pe = pes[k][n]
                m.d.comb += pe.w_load.eq(self.w_load)
                m.d.comb += pe.w_in.eq(self.w_row[n] if k == 0 else pes[k - 1][n].w_out)
                m.d.comb += pe.psum_in.eq(0 if k == 0 else pes[k - 1][n].psum_out)
                if n + 1 < dim:
                    m.d.comb += [pes[k][n + 1].a_in.eq(pe.a_out),
                                 pes[k][n + 1].first_in.eq(pe.first_out)]

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
