"""The vector unit in Amaranth simulation against the exact arithmetic of
heli/quant/_fixed_point.py and the ISA's semantics (numpy)."""

from __future__ import annotations

import numpy as np

from heli.quant._fixed_point import requantize, wrap_int32
from heli.targets.npu.rtl.vector import VecOp, VectorUnit
from tests.targets.npu.rtl._sim import lanes, row, run

DIM = 4
_SCALARS = ("zp", "lo", "hi", "za", "ma", "zb", "mb", "acc", "fill")
_ROWS = ("x", "y", "a", "b", "mult", "shift")


def _run(ops: list[dict]) -> list[tuple[list[int], list[int]]]:
    """Streams one row per cycle (op + operands), returns (out32, out8) per row."""
    dut = VectorUnit(DIM)
    out = []

    async def tb(ctx):
        for t in range(len(ops) + dut.latency + 1):
            if t < len(ops):
                o = ops[t]
                ctx.set(dut.op, o["op"])
                for name in _ROWS:
                    ctx.set(getattr(dut, name), row(o.get(name, [0] * DIM)))
                for name in _SCALARS:
                    ctx.set(getattr(dut, name), int(o.get(name, 0)))
                ctx.set(dut.valid_in, 1)
            else:
                ctx.set(dut.valid_in, 0)
            await ctx.tick()
            if ctx.get(dut.valid_out):
                out.append((lanes(ctx.get(dut.out32), DIM), lanes(ctx.get(dut.out8), DIM)))

    run(dut, tb)
    assert len(out) == len(ops)
    return out


def _requant_cases(rng, n: int) -> list[dict]:
    cases = []
    for k in range(n):
        s = rng.integers(0, 64, DIM)
        if k % 3 == 0:          # exact ties: x * M = (2j + 1) * 2**(s-1), both parities of q
            s = rng.integers(1, 21, DIM)
            m = rng.choice([-1, 1], DIM)
            x = (2 * rng.integers(-1000, 1000, DIM) + 1) << (s - 1)     # |x| < 2**31
        elif k % 3 == 1:        # full int32 range
            x = rng.integers(-(1 << 31), 1 << 31, DIM)
            m = rng.integers(-(1 << 31), 1 << 31, DIM)
        else:                   # the ranges real layers use
            x = rng.integers(-(1 << 20), 1 << 20, DIM)
            m = rng.integers(1 << 30, 1 << 31, DIM)
            s = rng.integers(30, 45, DIM)
        lo = int(rng.integers(-128, 128))
        hi = int(rng.integers(lo, 128))
        if k % 5 == 0:
            lo, hi = -128, 127
        cases.append(dict(op=VecOp.REQUANT, x=x, mult=m, shift=s,
                          zp=int(rng.integers(-128, 128)), lo=lo, hi=hi))
    # the corners: the largest products, shift 0 and 63, zero multiplier
    big = [-(1 << 31), (1 << 31) - 1, -(1 << 31), 5]
    cases.append(dict(op=VecOp.REQUANT, x=big, mult=big[::-1], shift=[63, 63, 0, 0],
                      zp=0, lo=-128, hi=127))
    cases.append(dict(op=VecOp.REQUANT, x=big, mult=[0, 0, 1, -1], shift=[0, 62, 1, 2],
                      zp=-7, lo=-128, hi=127))
    return cases


def test_requantization_is_bit_exact():
    rng = np.random.default_rng(3)
    cases = _requant_cases(rng, 300)
    got = _run(cases)
    for o, (_, out8) in zip(cases, got, strict=True):
        want = requantize(np.asarray(o["x"]), np.asarray(o["mult"]), np.asarray(o["shift"]),
                          o["zp"], o["lo"], o["hi"])
        assert out8 == want.tolist(), o


def test_ties_round_half_to_even():
    # x * M / 2**s = 2.5, 3.5, -2.5, -3.5 -> 2, 4, -2, -4
    case = dict(op=VecOp.REQUANT, x=[5, 7, -5, -7], mult=[1] * DIM, shift=[1] * DIM,
                zp=0, lo=-128, hi=127)
    assert _run([case])[0][1] == [2, 4, -2, -4]


def test_bias_clip_add_max_sum_fill():
    rng = np.random.default_rng(4)
    i32 = lambda: rng.integers(-(1 << 31), 1 << 31, DIM)  # noqa: E731
    i8 = lambda: rng.integers(-128, 128, DIM)              # noqa: E731
    ops, want32, want8 = [], [], []
    for k in range(40):
        x, y, a, b = i32(), i32(), i8(), i8()
        acc = k % 2
        lo = int(rng.integers(-128, 128))
        hi = int(rng.integers(lo, 128))
        za, zb, zp = (int(v) for v in rng.integers(-128, 128, 3))
        ma, mb = (int(v) for v in rng.integers(-(1 << 15), 1 << 15, 2))
        fill = int(rng.integers(-(1 << 31), 1 << 31))
        common = dict(x=x, y=y, a=a, b=b, acc=acc, lo=lo, hi=hi, za=za, zb=zb, zp=zp,
                      ma=ma, mb=mb, fill=fill)
        yy = y if acc else 0
        ops += [dict(op=VecOp.BIAS, **common), dict(op=VecOp.CLIP, **common),
                dict(op=VecOp.ADD, **common), dict(op=VecOp.MAX, **common),
                dict(op=VecOp.SUM, **common), dict(op=VecOp.FILL, **common)]
        want32 += [("BIAS", wrap_int32(x + y)), None,
                   ("ADD", wrap_int32((a - za) * ma + (b - zb) * mb + yy)), None,
                   ("SUM", wrap_int32(yy + a - zp)),
                   ("FILL", wrap_int32(np.full(DIM, fill)))]
        want8 += [None, ("CLIP", np.clip(a, lo, hi)), None,
                  ("MAX", np.maximum(a, b) if acc else a), None,
                  ("FILL", np.full(DIM, fill).astype(np.int64).astype(np.int8))]
    got = _run(ops)
    for (out32, out8), w32, w8 in zip(got, want32, want8, strict=True):
        if w32 is not None:
            assert out32 == w32[1].tolist(), w32[0]
        if w8 is not None:
            assert out8 == w8[1].tolist(), w8[0]
