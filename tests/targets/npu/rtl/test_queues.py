"""Fetch and the token channels in Amaranth's simulator."""

from __future__ import annotations

from heli.targets.npu import isa
from heli.targets.npu.rtl.queues import Fetch, TokenChannels

from ._sim import run


def test_token_channel_counts_to_its_depth():
    dut = TokenChannels(token_depth=3)

    async def bench(ctx):
        # load (0) pushes to compute (1) until the channel is full
        ctx.set(dut.push_dst, 1)            # queue 0's push goes to 1
        ctx.set(dut.wait_src, 0 << 2)       # queue 1 waits on 0
        for k in range(3):
            assert ctx.get(dut.push_ok[0]) and ctx.get(dut.wait_ok[1]) == (k > 0)
            ctx.set(dut.push, 0b001)
            await ctx.tick()
        ctx.set(dut.push, 0)
        assert not ctx.get(dut.push_ok[0]) and not ctx.get(dut.empty)
        ctx.set(dut.push, 0b001)            # a push and a wait in one cycle: still full
        ctx.set(dut.wait, 0b010)
        await ctx.tick()
        ctx.set(dut.push, 0)
        assert not ctx.get(dut.push_ok[0])
        for _ in range(3):
            assert ctx.get(dut.wait_ok[1])
            await ctx.tick()
        ctx.set(dut.wait, 0)
        assert not ctx.get(dut.wait_ok[1]) and ctx.get(dut.empty)
        # other channels were never touched: compute -> store is empty
        ctx.set(dut.wait_src, 1 << 4)
        assert not ctx.get(dut.wait_ok[2])

    run(dut, bench)


def test_fetch_dispatches_by_queue_and_stops():
    prog = isa.assemble("""
        dma_load mem=spad sram=0 dram=0 stride=16 rows=1 cols=16
        push queue=load dst=compute
        wait queue=compute src=load
        matmul a=0 c=0 rows=1
        dma_store mem=spad sram=0 dram=0 stride=16 rows=1 cols=16
        halt
    """)
    dut = Fetch()

    async def bench(ctx):
        got = []
        ctx.set(dut.q_wrdy, 0b101)              # the compute queue is full at first
        pc = 0
        for cycle in range(12):
            if cycle == 4:
                ctx.set(dut.q_wrdy, 0b111)
            ctx.set(dut.in_valid, pc < len(prog))
            ctx.set(dut.in_word, isa.encode(prog[pc]) if pc < len(prog) else 0)
            wen = ctx.get(dut.q_wen)
            if wen:
                entry = ctx.get(dut.q_data)
                got.append((wen.bit_length() - 1, entry >> 128, cycle))
            if ctx.get(dut.in_ready):
                pc += 1
            await ctx.tick()
        assert [(q, i) for q, i, _ in got] == [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4)]
        assert got[2][2] == 4                     # stalled until the compute queue had room
        assert ctx.get(dut.halted) and not ctx.get(dut.error)

    run(dut, bench)


def test_fetch_stops_at_a_bad_word():
    dut = Fetch()

    async def bench(ctx):
        ctx.set(dut.q_wrdy, 0b111)
        ctx.set(dut.in_valid, 1)
        ctx.set(dut.in_word, isa.encode(isa.assemble("vfill mem=acc dst=0 rows=1 value=0")[0]))
        await ctx.tick()
        ctx.set(dut.in_word, 0)                   # opcode 0 is illegal
        await ctx.tick()
        assert ctx.get(dut.error) and ctx.get(dut.error_pc) == 1 and not ctx.get(dut.in_ready)

    run(dut, bench)
