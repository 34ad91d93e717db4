"""Helpers for running Amaranth testbenches."""

from __future__ import annotations

from amaranth.sim import Simulator


def run(dut, testbench, clock: bool = True) -> None:
    """Runs ``async testbench(ctx)`` against ``dut`` (with a 1 MHz clock)."""
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def row(values) -> list[int]:
    return [int(v) for v in values]


def lanes(view, dim: int) -> list[int]:
    return [int(view[i]) for i in range(dim)]
