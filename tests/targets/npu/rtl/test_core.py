"""The whole core (fetch, queues, tokens, sequencer, DMA engine) in Amaranth's
simulator, against the functional simulator: DRAM after the run must match
bit for bit.  Small programs at DIM 4 that use every instruction."""

from __future__ import annotations

import numpy as np
import pytest

from heli.targets.npu import NpuConfig, isa
from heli.targets.npu.sim import Npu

from ._core import run_core

CFG = NpuConfig(dim=4, spad_bytes=4 * 256, acc_bytes=16 * 128, dma_latency=6, token_depth=2,
                queue_depth=4)

MATMUL = """
dma_load mem=spad sram=0 dram=0 stride=3 rows=10 cols=3
dma_load mem=spad sram=20 dram=256 stride=4 rows=3 cols=4
dma_load mem=acc sram=0 dram=512 stride=0 rows=10 cols=4
dma_load mem=acc sram=30 dram=528 stride=16 rows=2 cols=4
push queue=load dst=compute
wait queue=compute src=load
load_weights src=20 rows=3
matmul a=0 c=0 rows=5 acc=1
load_weights src=21 rows=2
matmul a=1 a_stride=2 a_ostride=3 c=10 c_ostride=2 rows=2 outer=2 acc=0
load_weights src=20 rows=3
matmul a=0 c=40 rows=12
load_weights src=21 rows=2
matmul a=2 c=40 rows=12 acc=1
load_weights src=22 rows=1
matmul a=1 c=52 rows=9
requant src=0 dst=40 rows=10 mult=1518500250 shift=38 zp=3 lo=-20 hi=100
requant_pc src=10 dst=100 rows=4 params=30 zp=-3
vclip src=40 dst=60 rows=10 lo=-5 hi=50
vadd a=40 b=60 dst=16 rows=10 za=1 ma=300 zb=-2 mb=-700
vbias dst=16 bias=0 rows=6
requant src=16 dst=80 rows=10 mult=1073741824 shift=40 zp=0
push queue=compute dst=store
wait queue=store src=compute
dma_store mem=spad sram=40 dram=1024 stride=4 rows=10 cols=4
dma_store mem=acc sram=0 dram=1100 stride=16 rows=10 cols=4
dma_store mem=spad sram=80 dram=1400 stride=4 rows=10 cols=3
dma_store mem=spad sram=100 dram=1500 stride=4 rows=4 cols=4
dma_store mem=acc sram=40 dram=1600 stride=16 rows=21 cols=4
halt
"""

POOL_LUT = """
dma_load mem=spad sram=0 dram=0 stride=4 rows=64 cols=4
push queue=load dst=compute
wait queue=compute src=load
vfill mem=spad dst=100 rows=3 value=-7
vfill mem=acc dst=0 rows=2 value=123456
vmaxpool src=0 src_stride=2 src_ostride=8 dst=110 dst_ostride=3 rows=3 outer=2
vmaxpool src=1 src_stride=2 src_ostride=8 dst=110 dst_ostride=3 rows=3 outer=2 acc=1
vsumpool src=0 src_stride=1 src_ostride=8 dst=2 dst_ostride=4 rows=4 outer=2 zp=5
vsumpool src=9 src_stride=1 src_ostride=8 dst=2 dst_ostride=4 rows=4 outer=2 zp=5 acc=1
lut_load src=0 table=1
vlut src=0 dst=120 rows=16 table=1
push queue=compute dst=store
wait queue=store src=compute
dma_store mem=spad sram=100 dram=2000 stride=4 rows=36 cols=4
dma_store mem=acc sram=0 dram=2200 stride=16 rows=12 cols=4
halt
"""


def random_dram(seed: int) -> np.ndarray:
    """Random bytes, with valid per-lane requantization parameters at 528."""
    r = np.random.default_rng(seed)
    dram = np.zeros(8192, np.uint8)
    dram[:1024] = r.integers(0, 256, 1024)
    params = np.stack([r.integers(-2**31, 2**31, 4), [0, 1, 37, 63]]).astype("<i4")
    dram[528:560] = np.frombuffer(params.tobytes(), np.uint8)
    return dram


@pytest.mark.parametrize("text", [MATMUL, POOL_LUT], ids=["matmul", "pool_lut"])
def test_core_matches_simulator(text):
    prog = isa.assemble(text)
    dram = random_dram(1)
    ref = Npu(CFG, dram.copy())
    ref.run(prog)
    got = run_core(CFG, prog, dram)
    assert got.tokens_empty
    diff = np.nonzero(got.dram != ref.dram)[0]
    assert diff.size == 0, f"DRAM differs at {diff.size} bytes, first at {diff[0]:#x}"
    # every instruction but halt retired, each after it was fetched
    assert sorted(got.retired) == list(range(len(prog) - 1))


def test_core_verilog_lints_clean(tmp_path):
    """`verilator --lint-only -Wall` on the whole core, with the waivers of
    heli/targets/npu/rtl/lint.py (Verilator is required)."""
    from heli.targets.npu.rtl.generate import CORE_NAME, generate_core_verilog
    from heli.targets.npu.rtl.lint import lint

    path = tmp_path / f"{CORE_NAME}.v"
    path.write_text(generate_core_verilog(CFG))
    result = lint(path, top=CORE_NAME)
    assert result.ok, "\n".join(result.unexplained[:20])
    assert result.waived["WIDTH"] > 0
