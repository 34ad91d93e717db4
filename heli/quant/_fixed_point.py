"""Exact fixed-point requantization arithmetic (numpy, vectorized), shared by the
integer ops of :mod:`heli.ops._npu_int` and the NPU (:mod:`heli.targets.npu.arith`
re-exports it), so that the integer reference semantics and the hardware are
defined by the same code.

Requantization maps an int32 accumulator ``x`` to int8::

    y = clamp(round_half_even(x * M / 2**s) + zp, lo, hi)

with ``M`` an int32 multiplier, ``0 <= s <= 63`` and ``-128 <= lo <= hi <= 127``.
``x * M`` is formed exactly (|x * M| <= 2**62 fits int64) and divided by ``2**s``
with round-half-to-even, the rounding of ONNX QuantizeLinear / QLinear* and of
ONNX Runtime (``nearbyintf`` / ``cvtps2dq`` in the default rounding mode).
"""

from __future__ import annotations

import math

import numpy as np

MAX_SHIFT = 63
INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """``x`` (any integer array) reduced modulo 2**32 into int32, as adders of
    32-bit accumulators do."""
    return np.asarray(x).astype(np.int64).astype(np.int32)


def rounding_shift(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """``x / 2**shift`` rounded half to even, exactly.

    ``x`` is int64 with ``|x| <= 2**62`` (a product of two int32), ``shift`` an
    int (or int array broadcasting against ``x``) in ``0..63``.  No intermediate
    overflows: the quotient is taken by an arithmetic shift (floor) and the
    remainder compared with one half.
    """
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    with np.errstate(over="ignore"):             # s == 63: q << s wraps, r does not
        q = x >> s                               # floor(x / 2**s)
        r = x - (q << s)                         # 0 <= r < 2**s
    half = np.left_shift(np.int64(1), np.maximum(s - 1, 0))
    half = np.where(s > 0, half, 1)              # s == 0: r == 0 never rounds up
    up = (r > half) | ((r == half) & ((q & 1) == 1))
    return q + up


def requantize(x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int,
               zero_point: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    """``clamp(round_half_even(x * multiplier / 2**shift) + zero_point, lo, hi)``
    as int8; ``multiplier`` and ``shift`` may be per-lane arrays."""
    prod = np.asarray(x, dtype=np.int64) * np.asarray(multiplier, dtype=np.int64)
    y = rounding_shift(prod, shift) + np.int64(zero_point)
    return np.clip(y, lo, hi).astype(np.int8)


def quantize_multiplier(scale: float) -> tuple[int, int]:
    """The (multiplier, shift) pair with ``multiplier / 2**shift`` closest to
    ``scale`` using a full 31-bit multiplier (``2**30 <= |M| < 2**31``) where the
    shift allows it.

    A power of two ``2**-k`` (``0 <= k <= 33``) is represented exactly.  Scales
    below ``2**-63`` lose precision (down to ``M = 0``); scales of ``2**31`` or
    more cannot be represented and raise ``ValueError``.
    """
    if not math.isfinite(scale):
        raise ValueError(f"the requantization scale {scale!r} is not finite.")
    if scale == 0:
        return 0, 0
    mantissa, exponent = math.frexp(abs(scale))      # |scale| = mantissa * 2**exponent
    mult, shift = round(mantissa * (1 << 31)), 31 - exponent
    if mult == 1 << 31:                              # mantissa rounded up to 1.0
        mult, shift = 1 << 30, shift - 1
    if shift < 0:
        raise ValueError(f"the requantization scale {scale!r} is too large for an int32 "
                         f"multiplier with a non-negative shift.")
    if shift > MAX_SHIFT:                            # too small: give up low bits
        mult, shift = round(abs(scale) * 2.0 ** MAX_SHIFT), MAX_SHIFT
    return (-mult if scale < 0 else mult), shift
