"""Design-space exploration (``heli npu dse``) on a tiny model: the CSV,
Markdown and PNG are written, their cycles are the cycle model's on the
program the compiler lowers, a configuration whose SRAMs are too small is
reported (not a crash), and bad input is one clear error (exit 2)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from heli.cli._main import main
from heli.partition import partition
from heli.targets.npu import dse
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.cycles import estimate
from heli.targets.npu.lower import lower
from heli.targets.npu.target import NpuTarget
from heli.targets.ref import RefTarget

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Conv 3→16 + Relu, Conv 16→16 stride 2 + Relu (the last one, a graph
    output, stays float: part of the MACs run on ``ref``)."""
    r = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(r.standard_normal(shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [init("w1", 16, 3, 3, 3), init("b1", 16), init("w2", 16, 16, 3, 3), init("b2", 16)])
    path = tmp_path_factory.mktemp("dse") / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _direct_cycles(graph, cfg: NpuConfig) -> int:
    segments, _ = partition(graph, [NpuTarget(cfg), RefTarget()])
    programs = [lower(s.graph, cfg) for s in segments if s.target.name == "npu"]
    assert programs
    return sum(estimate(p.instrs, cfg).cycles for p in programs)


def test_outputs_hold_the_cycle_model_and_area(model, tmp_path, capsys):
    assert shutil.which("yosys"), "yosys is not installed (make tools installs it)"
    out = tmp_path / "out"
    assert main(["npu", "dse", str(model), "--dim", "2,4", "--spad", "4K", "--acc", "1K",
                 "--bw", "8", "-j", "1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'pareto.png'}" in printed
    rows = _rows(out / "dse.csv")
    assert [(r["dim"], r["spad_bytes"], r["dram_bytes_per_cycle"]) for r in rows] == [
        ("2", "4096", "8"), ("4", "4096", "8")]
    graph = dse.prepare_model(model)
    from heli.targets.npu.area import area

    for row in rows:
        cfg = NpuConfig(dim=int(row["dim"]), spad_bytes=4096, acc_bytes=1024,
                        dram_bytes_per_cycle=8)
        assert row["status"] == "fits"
        assert int(row["cycles"]) == _direct_cycles(graph, cfg)
        assert float(row["latency_ms"]) == pytest.approx(int(row["cycles"]) / 1e6, abs=1e-6)
        assert float(row["area_mm2"]) == pytest.approx(area(cfg).total_mm2, abs=1e-4)
        assert 0 < float(row["npu_mac_share"]) < 1     # the float last conv runs on ref
    # the larger array is faster and larger: both on the Pareto front
    assert [r["pareto"] for r in rows] == ["1", "1"]
    md = (out / "dse.md").read_text()
    assert md.startswith("| DIM | scratchpad | accumulator | DRAM B/cycle | fits | cycles")
    assert md.count("**yes**") == 2
    assert (out / "pareto.png").read_bytes().startswith(PNG_MAGIC)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]     # no temporaries


def test_sram_too_small_is_reported_not_raised(model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["npu", "dse", str(model), "--dim", "16", "--spad", "256,64K", "--acc", "16K",
                 "--bw", "8,16", "-j", "2", "--no-area", "-o", str(out)]) == 0
    capsys.readouterr()
    rows = _rows(out / "dse.csv")
    assert [r["status"] for r in rows] == ["no fit", "no fit", "fits", "fits"]
    assert rows[0]["cycles"] == "" and rows[0]["area_mm2"] == ""
    assert "no layer fits the SRAMs: QConv node" in rows[0]["note"]
    assert "has 16 scratchpad and 256 accumulator rows" in rows[0]["note"]
    # more DRAM bandwidth: fewer cycles, same MACs
    assert int(rows[3]["cycles"]) < int(rows[2]["cycles"])
    graph = dse.prepare_model(model)
    cfg = NpuConfig(dim=16, spad_bytes=64 * 1024, acc_bytes=16 * 1024, dram_bytes_per_cycle=16)
    assert int(rows[3]["cycles"]) == _direct_cycles(graph, cfg)
    assert "no fit: no layer fits the SRAMs" in (out / "dse.md").read_text()
    assert (out / "pareto.png").read_bytes().startswith(PNG_MAGIC)


def test_partial_fit_keeps_the_configuration_off_the_front():
    cfg = NpuConfig(dim=8)
    fits = dse.Result(cfg, dse.FITS, cycles=100, macs=10, model_macs=10, area_mm2=1.0)
    worse = dse.Result(cfg, dse.FITS, cycles=200, macs=10, model_macs=10, area_mm2=2.0)
    partial = dse.Result(cfg, dse.PARTIAL, cycles=10, macs=5, model_macs=10, area_mm2=0.5)
    marked = dse.mark_pareto([fits, worse, partial])
    assert [r.pareto for r in marked] == [True, False, False]


@pytest.mark.parametrize("argv, message", [
    (["--dim", "8,12"], "error: --dim 12 is not a power of two between 2 and 128."),
    (["--dim", "8;16"], "error: --dim '8;16': '8;16' is not a valid value (e.g. 8,16,32)."),
    (["--dim", "8,,16"], "error: --dim '8,,16' is not a comma-separated list (e.g. 8,16,32)."),
    (["--spad", "128K,1X"], "error: --spad '128K,1X': '1X' is not a valid value "
                            "(e.g. 128K,256K)."),
    (["--bw", "0"], "error: --bw '0': '0' must be positive."),
    (["--jobs", "0"], "error: --jobs 0 must be at least 1."),
])
def test_bad_lists_are_one_clear_error(model, tmp_path, capsys, argv, message):
    assert main(["npu", "dse", str(model), *argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == message
    assert not (tmp_path / "out").exists()


def test_unknown_model_file_is_one_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope.onnx"
    assert main(["npu", "dse", str(missing), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: The model file {str(missing)!r} does not exist."


def test_parse_list():
    assert dse.parse_list("8, 16,32,16", "--dim") == [8, 16, 32]
    assert dse.parse_sizes("128K,1M", "--spad") == [128 * 1024, 1 << 20]
    with pytest.raises(dse.DseError, match=r"--acc '' is not a comma-separated list"):
        dse.parse_sizes("", "--acc")
