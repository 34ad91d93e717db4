"""The NPU's fixed-point arithmetic, defined exactly (numpy, vectorized).

The definitions live in :mod:`heli.quant._fixed_point`, shared with the integer
ops of the core (which must not import a target); see there and ``docs/npu.md``.
"""

from heli.quant._fixed_point import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    INT32_MIN,
    MAX_SHIFT,
    quantize_multiplier,
    requantize,
    rounding_shift,
    wrap_int32,
)

__all__ = ["INT8_MAX", "INT8_MIN", "INT32_MAX", "INT32_MIN", "MAX_SHIFT", "quantize_multiplier",
           "requantize", "rounding_shift", "wrap_int32"]
