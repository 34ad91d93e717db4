"""Runs a program on :class:`NpuCore` in Amaranth's simulator, with a DRAM model
behind the memory bus (the same rules as the Verilator testbench of
``heli/targets/npu/cosim.py``: a response ``dma_latency`` cycles after its
request at the earliest, ``dram_bytes_per_cycle`` bytes per cycle on average,
one response per cycle, in order)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from heli.targets.npu import isa
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.rtl.core import NpuCore


@dataclass
class CoreRun:
    dram: np.ndarray
    cycles: int
    retired: dict[int, int] = field(default_factory=dict)   # pc -> last retire cycle
    tokens_empty: bool = True


def _access(ctx, bus, dram: np.ndarray, slot: int) -> tuple[int, int]:
    """Carries out the bus request of this cycle: the read payload, and the bytes moved."""
    addr, stride = ctx.get(bus.req_addr), ctx.get(bus.req_stride)
    rows, n = ctx.get(bus.req_rows), ctx.get(bus.req_len)
    payload = 0
    if ctx.get(bus.req_write):
        wdata = ctx.get(bus.req_wdata).to_bytes(slot * bus.signature.rows, "little")
        for j in range(rows):
            a = addr + j * stride
            dram[a:a + n] = np.frombuffer(wdata[slot * j:slot * j + n], np.uint8)
    else:
        for j in range(rows):
            a = addr + j * stride
            payload |= int.from_bytes(dram[a:a + n].tobytes(), "little") << (8 * slot * j)
    return payload, rows * n


def run_core(cfg: NpuConfig, program, dram: np.ndarray, max_cycles: int = 20000) -> CoreRun:
    words = [isa.encode(i) for i in program]
    dram = dram.copy()
    dut = NpuCore(cfg)
    result = CoreRun(dram, 0)

    async def bench(ctx):
        pc, pending, last = 0, deque(), -math.inf
        ctx.set(dut.bus.req_ready, 1)
        for cycle in range(max_cycles):
            ctx.set(dut.instr_valid, pc < len(words))
            ctx.set(dut.instr_word, words[pc] if pc < len(words) else 0)
            due = bool(pending) and pending[0][0] <= cycle
            ctx.set(dut.bus.resp_valid, bool(due))
            ctx.set(dut.bus.resp_rdata, pending[0][1] if due else 0)
            if ctx.get(dut.done) or ctx.get(dut.error):
                result.cycles = cycle
                result.tokens_empty = bool(ctx.get(dut.tokens_empty))
                assert not ctx.get(dut.error), f"fetch error at pc {ctx.get(dut.error_pc)}"
                return
            if ctx.get(dut.instr_ready):
                pc += 1
            if ctx.get(dut.bus.req_valid):
                payload, nbytes = _access(ctx, dut.bus, dram, 4 * cfg.dim)
                last = max(cycle + cfg.dma_latency, last + nbytes / cfg.dram_bytes_per_cycle)
                at = max(math.ceil(last), pending[-1][0] + 1 if pending else 0)
                pending.append((at, payload))
            if due and ctx.get(dut.bus.resp_ready):
                pending.popleft()
            for q in ("load", "compute", "weights", "array", "store"):
                if ctx.get(getattr(dut, f"{q}_retire")):
                    result.retired[ctx.get(getattr(dut, f"{q}_retire_pc"))] = cycle
            await ctx.tick()
        raise AssertionError(f"the core did not finish within {max_cycles} cycles.")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return result
