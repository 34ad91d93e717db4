"""The banked SRAM in Amaranth's simulator, against a Python dict of rows: the
compute ports always get their row, the DMA gets a bank's port only when the
compute leaves it free, and every granted access moves the right data."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import unsigned

from heli.targets.npu.rtl.sram import BankedSram

from ._sim import run

ROWS, BANKS, DMA = 64, 4, 4


def _dut():
    # two compute reads on bank ports 0 and 1 (the scratchpad's A and B)
    return BankedSram(unsigned(16), ROWS, (0, 1), DMA, BANKS)


def test_random_traffic_matches_a_dict_and_compute_is_never_refused():
    dut = _dut()
    rng = np.random.default_rng(1)
    model = {r: 0 for r in range(ROWS)}
    counts = {"dma_reads": 0, "dma_refused": 0}

    async def bench(ctx):
        expect_c = [None, None]                  # compute reads due this cycle
        expect_d = [None] * DMA                  # DMA reads granted last cycle
        for _ in range(400):
            # compute: random reads and a write
            c_rows = [int(rng.integers(ROWS)) if rng.random() < 0.7 else None
                      for _ in range(2)]
            for k, r in enumerate(c_rows):
                ctx.set(dut.port(f"c{k}_en"), r is not None)
                ctx.set(dut.port(f"c{k}_addr"), r or 0)
            c_write = int(rng.integers(ROWS)) if rng.random() < 0.5 else None
            c_value = int(rng.integers(1 << 16))
            ctx.set(dut.c_wen, c_write is not None)
            ctx.set(dut.c_waddr, c_write or 0)
            ctx.set(dut.c_wdata, c_value)
            # the DMA: a beat of consecutive rows, read or written
            base = int(rng.integers(ROWS - DMA))
            store = rng.random() < 0.5
            d_values = [int(v) for v in rng.integers(1 << 16, size=DMA)]
            for j in range(DMA):
                row = base + j
                clash = row == c_write or any(row == r for r in c_rows)
                ctx.set(dut.port(f"d{j}_raddr"), row)
                ctx.set(dut.port(f"d{j}_ren"), store and not clash)
                ctx.set(dut.port(f"d{j}_waddr"), row)
                ctx.set(dut.port(f"d{j}_wen"), (not store) and not clash)
                ctx.set(dut.port(f"d{j}_wdata"), d_values[j])
            # last cycle's reads come out now
            for k in range(2):
                if expect_c[k] is not None:
                    assert ctx.get(dut.port(f"c{k}_data")) == expect_c[k]
            for j in range(DMA):
                if expect_d[j] is not None:
                    assert ctx.get(dut.port(f"d{j}_rdata")) == expect_d[j]
            # this cycle's grants: refused only where the compute takes the port
            expect_c = [model[r] if r is not None else None for r in c_rows]
            expect_d = [None] * DMA
            c_banks = [r % BANKS for r in c_rows if r is not None]
            for j in range(DMA):
                row = base + j
                if store and ctx.get(dut.port(f"d{j}_ren")):
                    granted = ctx.get(dut.port(f"d{j}_rgrant"))
                    assert granted == (c_banks.count(row % BANKS) < 2)
                    counts["dma_reads"] += 1
                    counts["dma_refused"] += not granted
                    if granted:
                        expect_d[j] = model[row]
                if not store and ctx.get(dut.port(f"d{j}_wen")):
                    granted = ctx.get(dut.port(f"d{j}_wgrant"))
                    assert granted == (c_write is None or c_write % BANKS != row % BANKS)
                    if granted:
                        model[row] = d_values[j]
            if c_write is not None:
                model[c_write] = c_value
            await ctx.tick()

    run(dut, bench)
    assert counts["dma_refused"] > 10 and counts["dma_reads"] > 200


@pytest.mark.parametrize("kw, message", [
    ({"banks": 3}, "banks = 3 must be a power of two"),
    ({"dma_ports": 5}, "dma_ports = 5 must be between 1 and the 4 banks"),
])
def test_bad_parameters(kw, message):
    args = {"shape": unsigned(8), "rows": 64, "compute_reads": (0,), "dma_ports": 4, **kw}
    with pytest.raises(ValueError, match=message):
        BankedSram(**args)


def test_the_cycle_models_default_timing_describes_the_rtl():
    """The cycle model's bank parameters are the generator's (no Amaranth in
    the cycle model, so they are written twice and checked here)."""
    from heli.targets.npu.config import NpuConfig
    from heli.targets.npu.cycles import TimingParams
    from heli.targets.npu.rtl.params import rtl_params

    params, timing = rtl_params(NpuConfig()), TimingParams()
    assert (timing.spad_banks, timing.acc_banks) == (params["sram_banks"],) * 2
    assert timing.spad_read_ports == params["spad_bank_read_ports"]
    assert timing.acc_read_ports == params["acc_bank_read_ports"]
    assert timing.dma_rows == params["dma_rows_per_beat"]
