"""The processing element and the systolic array in Amaranth simulation, against
numpy (int64 products, int32 wrap)."""

from __future__ import annotations

import numpy as np
import pytest

from heli.targets.npu.arith import wrap_int32
from heli.targets.npu.rtl.array import ProcessingElement, SystolicArray
from tests.targets.npu.rtl._sim import lanes, row, run


def test_pe_multiply_accumulate_and_pass_through():
    rng = np.random.default_rng(1)
    n = 200
    w = rng.integers(-128, 128, n)
    a = rng.integers(-128, 128, n)
    p = rng.integers(-(1 << 31), 1 << 31, n)
    p[:4] = [(1 << 31) - 1, -(1 << 31), (1 << 31) - 100, -(1 << 31) + 5]   # wrap cases
    a[:4], w[:4] = [127, -128, 127, -128], [127, -128, -128, 127]
    dut = ProcessingElement()

    async def tb(ctx):
        for i in range(n):
            ctx.set(dut.w_in, int(w[i]))
            ctx.set(dut.w_load, 1)
            await ctx.tick()                          # weight register <- w[i]
            ctx.set(dut.w_load, 0)
            ctx.set(dut.w_in, int(-w[i] or 1))        # ignored while w_load = 0
            assert ctx.get(dut.w_out) == w[i]
            ctx.set(dut.a_in, int(a[i]))
            ctx.set(dut.psum_in, int(p[i]))
            ctx.set(dut.first_in, 1)                  # the shadow weight becomes active
            await ctx.tick()
            ctx.set(dut.first_in, 0)
            assert ctx.get(dut.first_out) == 1
            assert ctx.get(dut.a_out) == a[i]
            assert ctx.get(dut.psum_out) == wrap_int32(p[i] + a[i] * w[i])
            assert ctx.get(dut.w_out) == w[i]         # stationary
            ctx.set(dut.w_in, 5)
            ctx.set(dut.w_load, 1)                    # a new shadow weight ...
            await ctx.tick()
            ctx.set(dut.w_load, 0)
            await ctx.tick()
            assert ctx.get(dut.psum_out) == wrap_int32(p[i] + a[i] * w[i])  # ... unused yet

    run(dut, tb)


def _matmul(dim: int, a: np.ndarray, w: np.ndarray, gap_every: int = 0) -> np.ndarray:
    """Loads ``w`` (dim x dim), streams the rows of ``a`` (a bubble after every
    ``gap_every`` rows) and collects the valid output rows."""
    dut = SystolicArray(dim)
    out: list[list[int]] = []

    async def tb(ctx):
        for k in reversed(range(dim)):                # W[dim-1] first: a shift chain
            ctx.set(dut.w_row, row(w[k]))
            ctx.set(dut.w_load, 1)
            await ctx.tick()
        ctx.set(dut.w_load, 0)
        pending = list(a)
        t = 0
        while pending or len(out) < len(a):
            bubble = gap_every and t % (gap_every + 1) == gap_every
            if pending and not bubble:
                ctx.set(dut.a_first, len(pending) == len(a))
                ctx.set(dut.a, row(pending.pop(0)))
                ctx.set(dut.a_valid, 1)
            else:
                ctx.set(dut.a_valid, 0)
                ctx.set(dut.a_first, 0)
                ctx.set(dut.a, [99] * dim)            # garbage that must not leak
            await ctx.tick()
            t += 1
            if ctx.get(dut.c_valid):
                out.append(lanes(ctx.get(dut.c), dim))
            assert t < len(a) * 2 + 4 * dim, "the array stopped producing rows"

    run(dut, tb)
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("dim", [4, 8])
def test_array_matches_numpy(dim):
    rng = np.random.default_rng(dim)
    w = rng.integers(-128, 128, (dim, dim))
    a = rng.integers(-128, 128, (3 * dim, dim))
    a[0], w[:, 0] = -128, -128                        # extreme products
    got = _matmul(dim, a, w, gap_every=5)
    np.testing.assert_array_equal(got, a @ w)


def test_array_latency_is_two_dim_minus_one():
    dim = 4
    dut = SystolicArray(dim)
    assert dut.latency == 2 * dim - 1
    seen = []

    async def tb(ctx):
        ctx.set(dut.a_valid, 1)
        await ctx.tick()
        ctx.set(dut.a_valid, 0)
        for t in range(1, 3 * dim):
            if ctx.get(dut.c_valid):
                seen.append(t)
            await ctx.tick()

    run(dut, tb)
    assert seen == [dut.latency]


def test_array_weights_reload_between_blocks():
    dim = 4
    rng = np.random.default_rng(7)
    for _ in range(2):
        w = rng.integers(-128, 128, (dim, dim))
        a = rng.integers(-128, 128, (5, dim))
        np.testing.assert_array_equal(_matmul(dim, a, w), a @ w)


def test_shadow_weights_load_while_the_previous_matmul_streams():
    """Two matmuls back to back, the second block's weights shifted in while the
    first streams (from 2·DIM - 1 cycles after its first row): each row uses the
    weights of its own matmul."""
    dim = 4
    rng = np.random.default_rng(11)
    w1, w2 = rng.integers(-128, 128, (2, dim, dim))
    a1, a2 = rng.integers(-128, 128, (3 * dim, dim)), rng.integers(-128, 128, (5, dim))
    dut = SystolicArray(dim)
    out: list[list[int]] = []

    async def tb(ctx):
        for k in reversed(range(dim)):
            ctx.set(dut.w_row, row(w1[k]))
            ctx.set(dut.w_load, 1)
            await ctx.tick()
        ctx.set(dut.w_load, 0)
        rows = [(r, i == 0) for i, r in enumerate(a1)] + [(r, i == 0) for i, r in enumerate(a2)]
        loads = list(reversed(range(dim)))
        for t in range(len(rows) + 3 * dim):
            if t < len(rows):
                ctx.set(dut.a, row(rows[t][0]))
                ctx.set(dut.a_valid, 1)
                ctx.set(dut.a_first, rows[t][1])
            else:
                ctx.set(dut.a_valid, 0)
                ctx.set(dut.a_first, 0)
            loading = t >= 2 * dim - 1 and loads
            ctx.set(dut.w_load, bool(loading))
            if loading:
                ctx.set(dut.w_row, row(w2[loads.pop(0)]))
            await ctx.tick()
            if ctx.get(dut.c_valid):
                out.append(lanes(ctx.get(dut.c), dim))

    run(dut, tb)
    assert len(a1) >= 3 * dim - 1   # the load ends before the second matmul's first row
    np.testing.assert_array_equal(np.array(out), np.vstack([a1 @ w1, a2 @ w2]))
