"""``heli compile`` / ``heli run model.heli`` / the memory line of ``heli info``."""

import numpy as np
import pytest
from onnx import helper, numpy_helper

from heli.cli import main
from tests.cli.test_cli import assert_clean_error, heli
from tests.frontend.test_onnx import make_model, tensor_info


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    w = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    model = make_model(nodes, [tensor_info("x", ["n", 4])], [tensor_info("z", ["n", 3])], [w])
    path = tmp_path_factory.mktemp("m") / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def cli(capsys, *args):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_compile_then_run_matches_running_the_onnx_model(model_path, tmp_path):
    out = tmp_path / "model.heli"
    result = heli("compile", model_path, "-o", out, "--input-shape", "x=2,4")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and out.is_file()
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    np.save(tmp_path / "x.npy", x)
    result = heli("run", out, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    assert "ran on ref: 2 nodes" in result.stdout
    heli("run", model_path, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "b")
    got, want = np.load(tmp_path / "a" / "z.npy"), np.load(tmp_path / "b" / "z.npy")
    assert got.tobytes() == want.tobytes()


def test_run_heli_with_random_inputs(model_path, tmp_path, capsys):
    out = tmp_path / "m.heli"
    assert cli(capsys, "compile", model_path, "-o", out, "--input-shape", "x=3,4")[0] == 0
    code, stdout, err = cli(capsys, "run", out)
    assert code == 0, err
    assert "[3, 3]" in stdout  # the compiled shape, without --input-shape


def test_info_prints_the_memory_plan(model_path, capsys):
    code, stdout, err = cli(capsys, "info", model_path, "--input-shape", "x=2,4")
    assert code == 0, err
    # y and z (2x3 float32 = 24 bytes, 64 once aligned) are live together: no reuse.
    assert "peak activation memory: 128 B (naive 128 B)" in stdout


def test_bad_input_is_one_error_line(model_path, tmp_path, capsys):
    out = tmp_path / "m.heli"
    code, _, err = cli(capsys, "compile", model_path, "-o", out)
    assert_one_error(code, err, "dynamic shape", "--input-shape")
    code, _, err = cli(capsys, "compile", model_path, "-o", tmp_path, "--input-shape", "x=2,4")
    assert_one_error(code, err, "is a directory")
    code, _, err = cli(capsys, "compile", model_path, "-o", out, "--target", "nope",
                       "--input-shape", "x=2,4")
    assert_one_error(code, err, "no target named 'nope'")
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written

    assert cli(capsys, "compile", model_path, "-o", out, "--input-shape", "x=2,4")[0] == 0
    code, _, err = cli(capsys, "compile", out, "-o", tmp_path / "again.heli")
    assert_one_error(code, err, "already a compiled .heli model")
    code, _, err = cli(capsys, "run", out, "--target", "cpu")
    assert_one_error(code, err, "compiled for the target 'ref', not 'cpu'")
    code, _, err = cli(capsys, "run", out, "--input-shape", "x=5,4")
    assert_one_error(code, err, "static size 2 on axis 0")
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    code, _, err = cli(capsys, "run", out)
    assert_one_error(code, err, "truncated")


def test_corrupt_heli_through_the_real_command(model_path, tmp_path):
    out = tmp_path / "m.heli"
    heli("compile", model_path, "-o", out, "--input-shape", "x=2,4")
    data = bytearray(out.read_bytes())
    data[-80] ^= 0xFF  # inside the payload
    out.write_bytes(bytes(data))
    assert_clean_error(heli("run", out), "corrupt")
