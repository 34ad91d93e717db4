"""The command line: happy paths, and one clear line + exit 2 for bad input."""

import subprocess
import sys

import numpy as np
import pytest
from onnx import helper, numpy_helper

from tests.frontend.test_onnx import make_model, tensor_info


def heli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "heli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    model = make_model(nodes, [tensor_info("x", ["n", 4])], [tensor_info("z", ["n", 3])], [w])
    path = tmp_path_factory.mktemp("m") / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_info(model_path):
    result = heli("info", model_path, "--input-shape", "x=2,4")
    assert result.returncode == 0, result.stderr
    assert "MatMul" in result.stdout and "parameters: 12" in result.stdout
    assert "FLOPs: 54" in result.stdout  # 6 outputs * 4 MACs * 2 FLOPs + 6 for Relu


def test_run_with_random_inputs_and_saved_outputs(model_path, tmp_path):
    result = heli("run", model_path, "--input-shape", "x=2,4", "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "ran on ref: 2 nodes" in result.stdout
    saved = np.load(tmp_path / "out" / "z.npy")
    assert saved.shape == (2, 3) and (saved >= 0).all()


def test_run_with_input_file(model_path, tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 4
    np.save(tmp_path / "x.npy", x)
    result = heli("run", model_path, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), np.maximum(x @ np.ones((4, 3)), 0))


def test_passes_lists_the_pipeline():
    result = heli("passes")
    assert result.returncode == 0
    for name in ("shape-inference", "constant-folding", "canonicalize", "cse", "dce"):
        assert name in result.stdout


def test_truncated_model(model_path, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(model_path.read_bytes()[:40])
    assert_clean_error(heli("run", cut), "cut.onnx")


def test_random_bytes(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    assert_clean_error(heli("info", junk), "junk.onnx")


def test_unknown_op(tmp_path):
    model = make_model([helper.make_node("Frobnicate", ["x"], ["y"], name="f1")],
                       [tensor_info("x", [1])], [tensor_info("y", [1])])
    path = tmp_path / "unknown.onnx"
    path.write_bytes(model.SerializeToString())
    assert_clean_error(heli("run", path), "Frobnicate", "'f1'", "opset 17")


def test_wrong_input_shape(model_path, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    assert_clean_error(heli("run", model_path, "--input", f"x={tmp_path / 'x.npy'}"),
                       "static size 4 on axis 1")


def test_wrong_input_dtype(model_path, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.int32))
    assert_clean_error(heli("run", model_path, "--input", f"x={tmp_path / 'x.npy'}"),
                       "must have dtype 'float32'", "'int32'")


def test_missing_files_and_bad_arguments(model_path, tmp_path):
    assert_clean_error(heli("run", tmp_path / "nope.onnx"), "does not exist")
    assert_clean_error(heli("run", model_path, "--input", "x=/nonexistent.npy"), "does not exist")
    assert_clean_error(heli("run", model_path, "--input-shape", "x=2,four"), "NAME=D0,D1")
    assert_clean_error(heli("run", model_path, "--target", "nope"), "no target named 'nope'")
    assert_clean_error(heli("run", model_path), "dynamic shape", "--input-shape")
    assert_clean_error(heli("frobnicate"), "invalid choice")


def test_debug_shows_traceback(tmp_path):
    result = heli("--debug", "run", tmp_path / "nope.onnx")
    assert result.returncode == 2 and "Traceback" in result.stderr
