"""ONNX Runtime as an oracle for int8 arithmetic, and where it is not one.

ONNX Runtime's int8 kernels for x86 CPUs without VNNI (AVX2 only, e.g. some
AMD EPYC hosts) add pairs of uint8 x int8 products in saturating int16
(``vpmaddubsw``), so a product pair above 32767 is clipped and its results
stop being exact integer arithmetic; its quantization guide asks for 7-bit
weights (``reduce_range``) on such CPUs.  Tests that compare integer results
with ONNX Runtime use :data:`REDUCE_RANGE` / :data:`WEIGHT_MAX` there, and
full-range weights everywhere else.
"""

from __future__ import annotations


def has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (int8 dot products into int32); True
    where /proc/cpuinfo cannot tell (not Linux: not these kernels' problem)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read().split()
    except OSError:
        return True
    if "avx2" not in flags:
        return True                       # not x86, or no AVX2 kernels either
    return "avx512_vnni" in flags or "avx_vnni" in flags


#: Quantize weights to 7 bits for ONNX Runtime on this host.
REDUCE_RANGE = not has_vnni()
#: The largest int8 weight magnitude ONNX Runtime multiplies exactly here.
WEIGHT_MAX = 63 if REDUCE_RANGE else 127
