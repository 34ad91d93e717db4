"""Parameters checked before generation, `heli npu rtl`, and Verilator's lint of
the generated Verilog (waivers: heli/targets/npu/rtl/lint.py, docs/npu.md)."""

from __future__ import annotations

import json

import pytest

from heli.cli._main import main
from heli.targets.npu.rtl import RtlConfigError, parse_size, rtl_config
from heli.targets.npu.rtl.lint import lint, verilator


@pytest.mark.parametrize("kw, message", [
    (dict(dim=12), "dim = 12 must be a power of two"),
    (dict(dim=1), "dim = 1 must be a power of two"),
    (dict(dim=256, spad_bytes=1 << 20, acc_bytes=1 << 20), "dim = 256 must be"),
    (dict(dim=32, spad_bytes=32 * 16, acc_bytes=4096), "fewer than one 32x32 int8 tile"),
    (dict(dim=16, acc_bytes=512), "accumulator of 512 bytes has 8 rows"),
])
def test_bad_parameters_are_named(kw, message):
    with pytest.raises(RtlConfigError, match=message):
        rtl_config(**kw)


def test_parse_size():
    assert parse_size("256K") == 256 * 1024
    assert parse_size("64KiB") == 64 * 1024
    assert parse_size("1M") == 1 << 20
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError, match="not a size"):
        parse_size("12Q")


def test_cli_refuses_before_generating(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["npu", "rtl", "--dim", "12", "-o", str(out)]) == 2
    assert "dim = 12 must be a power of two" in capsys.readouterr().err
    assert not out.exists()
    assert main(["npu", "rtl", "--dim", "16", "--acc", "512", "-o", str(out)]) == 2
    assert "fewer than one 16x16 int32 tile" in capsys.readouterr().err
    assert not out.exists()


def test_cli_writes_verilog_that_lints_clean(tmp_path):
    out = tmp_path / "out"
    assert main(["npu", "rtl", "--dim", "16", "--spad", "256K", "--acc", "64K",
                 "-o", str(out)]) == 0
    params = json.loads((out / "params.json").read_text())
    assert params["dim"] == 16 and params["spad_rows"] == 16384 and params["acc_rows"] == 1024
    assert params["top"] == "heli_npu" and params["spad_addr_bits"] == 14
    text = (out / "heli_npu.v").read_text()
    assert "module heli_npu(" in text
    for unit in ("fetch", "queue0", "tokens", "dma", "compute", "compute.array",
                 "compute.vector", "compute.decoder", "compute.array.pe_15_15",
                 "compute.vector.requant_15"):
        assert f"module \\heli_npu.{unit} " in text, unit
    assert sorted(p.name for p in out.iterdir()) == ["heli_npu.v", "params.json"]  # no temps
    assert verilator() is not None, "verilator is not installed (make tools installs it)"
    result = lint(out / "heli_npu.v", top="heli_npu")
    assert result.ok, "\n".join(result.unexplained[:20])
    assert set(result.waived) <= {"UNUSEDSIGNAL", "DECLFILENAME", "CASEINCOMPLETE", "WIDTH"}


def test_width_waiver_covers_widening_only():
    from heli.targets.npu.rtl.lint import _width_ok

    assert _width_ok("Operator ADD expects 33 bits on the RHS, but RHS's SIGNED generates "
                     "8 bits.")
    assert _width_ok("Logical operator LOGNOT expects 1 bit on the LHS, but LHS's VARREF "
                     "'x' generates 2 bits.")
    assert not _width_ok("Operator ASSIGNW expects 8 bits on the Assign RHS, but Assign "
                         "RHS's ADD generates 9 bits.")
