"""``heli quantize``: happy paths, and one ``error:`` line + exit 2 for bad input."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from heli.cli._main import main
from tests.quant._models import images, small_cnn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    model = root / "cnn.onnx"
    model.write_bytes(small_cnn(batch="n").SerializeToString())
    data = images(12)
    calib_dir = root / "calib"
    calib_dir.mkdir()
    for i, x in enumerate(data):
        np.save(calib_dir / f"{i:03d}.npy", x[0])  # (3, 16, 16): the batch axis is added
    npz = root / "calib.npz"
    np.savez(npz, x=data[:, 0])  # (12, 3, 16, 16): first axis = samples
    return root, model, calib_dir, npz, data


def run(*args):
    return main([str(a) for a in args])


def error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("calib", ["dir", "npz"])
def test_quantize_writes_a_model_ort_runs(files, calib, capsys):
    root, model, calib_dir, npz, data = files
    out = root / f"q_{calib}.onnx"
    source = calib_dir if calib == "dir" else npz
    assert run("quantize", model, "--calib", source, "-o", out, "--calibrator", "percentile") == 0
    assert "wrote" in capsys.readouterr().out
    proto = onnx.load(out)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") == 3 and "DequantizeLinear" in ops
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": data[0]})[0].shape == (1, 10)
    assert session.run(None, {"x": data[:4, 0]})[0].shape == (4, 10)  # batch stays dynamic
    assert [p.name for p in root.iterdir() if ".tmp" in p.name] == []


def test_missing_calibration_directory(files, capsys):
    root, model, *_ = files
    assert run("quantize", model, "--calib", root / "nope", "-o", root / "q.onnx") == 2
    assert "does not exist" in error_line(capsys)
    assert not (root / "q.onnx").exists()


def test_wrong_input_names(files, capsys):
    root, model, *_ = files
    bad = root / "bad.npz"
    np.savez(bad, image=np.zeros((2, 3, 16, 16), np.float32))
    assert run("quantize", model, "--calib", bad, "-o", root / "q.onnx") == 2
    line = error_line(capsys)
    assert "'image'" in line and "['x']" in line


def test_not_an_archive(files, capsys):
    root, model, *_ = files
    junk = root / "junk.bin"
    junk.write_bytes(b"not numpy")
    assert run("quantize", model, "--calib", junk, "-o", root / "q.onnx") == 2
    assert "neither a directory" in error_line(capsys)


def test_empty_directory_and_bad_output(files, capsys):
    root, model, _, npz, _ = files
    empty = root / "empty"
    empty.mkdir()
    assert run("quantize", model, "--calib", empty, "-o", root / "q.onnx") == 2
    assert "no .npy files" in error_line(capsys)
    assert run("quantize", model, "--calib", npz, "-o", root / "no" / "q.onnx") == 2
    assert "does not exist" in error_line(capsys)


def test_bad_sample_shape(files, capsys):
    root, model, *_ = files
    bad = root / "rank.npz"
    np.savez(bad, x=np.zeros((2, 16), np.float32))
    assert run("quantize", model, "--calib", bad, "-o", root / "q.onnx") == 2
    assert "does not fit the input 'x'" in error_line(capsys)
