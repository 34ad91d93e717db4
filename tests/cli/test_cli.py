"""The command line: happy paths, and one clear line + exit 2 for bad input."""

import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

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


# -- bad input, run in-process (fast): one `error:` line, exit 2, nothing written ------------


def cli(capsys, *args):
    """Run ``heli *args`` in this process; returns (exit code, stdout, stderr)."""
    from heli.cli._main import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_cli_error(result, *fragments):
    code, out, err = result
    assert code == 2, err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def save(tmp_path, name, nodes, inputs, outputs, initializers=()):
    path = tmp_path / name
    path.write_bytes(make_model(nodes, inputs, outputs, initializers).SerializeToString())
    return path


def test_bad_model_paths(capsys, tmp_path, model_path):
    assert_cli_error(cli(capsys, "run", tmp_path), "is a directory")
    assert_cli_error(cli(capsys, "info", tmp_path), "is a directory")
    assert_cli_error(cli(capsys, "run", "/dev/zero"), "not a regular file")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_cli_error(cli(capsys, "info", empty), "empty")
    corrupt = tmp_path / "corrupt.onnx"  # a name that is not valid UTF-8
    corrupt.write_bytes(model_path.read_bytes().replace(b"MatMul", b"Mat\xb1ul"))
    assert_cli_error(cli(capsys, "run", corrupt), "UTF-8")


def test_bad_input_files(capsys, tmp_path, model_path):
    good = np.zeros((2, 4), np.float32)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "arch.npz", x=good)
    (tmp_path / "arch.npy").write_bytes((tmp_path / "arch.npz").read_bytes())
    (tmp_path / "text.npy").write_text("hello")
    np.save(tmp_path / "rec.npy", np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]))
    np.save(tmp_path / "x.npy", good)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:100])
    cases = {
        "obj.npy": "Object arrays cannot be loaded",
        "arch.npy": "archive",
        "arch.npz": "archive",
        "text.npy": "not a .npy file",
        "rec.npy": "structured array",
        "cut.npy": "not a valid .npy file",
    }
    for name, fragment in cases.items():
        assert_cli_error(cli(capsys, "run", model_path, "--input", f"x={tmp_path / name}"),
                         name, fragment)
    assert_cli_error(cli(capsys, "run", model_path, "--input", f"x={tmp_path}"), "is a directory")
    x = f"x={tmp_path / 'x.npy'}"
    assert_cli_error(cli(capsys, "run", model_path, "--input", x, "--input", x), "twice")
    assert_cli_error(cli(capsys, "run", model_path, "--input", "x"), "NAME=FILE.npy")


def test_bad_shapes_and_arguments(capsys, model_path):
    assert_cli_error(cli(capsys, "run", model_path, "--input-shape", "x=-2,4"), "sizes >= 0")
    assert_cli_error(cli(capsys, "run", model_path, "--input-shape", "x=2,4,5"), "rank 2")
    assert_cli_error(cli(capsys, "run", model_path, "--input-shape", "y=2,4"), "no input 'y'")
    assert_cli_error(cli(capsys, "run", model_path, "--input-shape", "x=100000000000,4"),
                     "HELI_MAX_TENSOR_BYTES")
    assert_cli_error(cli(capsys, "run", model_path, "--seed", "-1"), "--seed")
    assert_cli_error(cli(capsys, "run", model_path, "--seed", "abc"), "--seed")


def test_output_path_that_is_a_file(capsys, tmp_path, model_path):
    blocker = tmp_path / "out"
    blocker.write_text("keep me")
    result = cli(capsys, "run", model_path, "--input-shape", "x=2,4", "--output", blocker)
    assert_cli_error(result, "not a directory")
    assert blocker.read_text() == "keep me"
    assert_cli_error(cli(capsys, "run", model_path, "--input-shape", "x=2,4", "--output",
                         blocker / "sub"), "not a directory")


def test_output_that_cannot_be_computed_writes_nothing(capsys, tmp_path):
    path = save(tmp_path, "gather.onnx", [helper.make_node("Gather", ["x", "i"], ["y"])],
                [tensor_info("x", [3]), tensor_info("i", [2], TensorProto.INT64)],
                [tensor_info("y", [2])])
    np.save(tmp_path / "i.npy", np.array([0, 7], np.int64))
    out = tmp_path / "out"
    result = cli(capsys, "run", path, "--input", f"i={tmp_path / 'i.npy'}", "--output", out)
    assert_cli_error(result, "Gather", "7 is out of range")
    assert not out.exists() or not any(out.iterdir())


def test_inputs_that_cannot_be_made_at_random(capsys, tmp_path):
    seq = save(tmp_path, "seq.onnx", [helper.make_node("SequenceLength", ["s"], ["n"])],
               [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])],
               [tensor_info("n", [], TensorProto.INT64)])
    assert_cli_error(cli(capsys, "run", seq), "Input 's'", "seq<float32[2]>")
    norank = save(tmp_path, "norank.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                  [tensor_info("x", None)], [tensor_info("y", None)])
    assert_cli_error(cli(capsys, "run", norank), "no known shape", "--input-shape x=")
    assert cli(capsys, "run", norank, "--input-shape", "x=2,3")[0] == 0


def test_odd_names_strings_and_byte_order(capsys, tmp_path):
    # Names that look like rich markup, names that clash as file names, string tensors.
    nodes = [helper.make_node("Relu", ["x[/b]"], ["a/b"]),
             helper.make_node("Neg", ["x[/b]"], ["a_b"])]
    odd = save(tmp_path, "odd.onnx", nodes, [tensor_info("x[/b]", [2])],
               [tensor_info("a/b", [2]), tensor_info("a_b", [2])])
    np.save(tmp_path / "x.npy", np.array([1, -2], ">f4"))  # big-endian data is fine
    code, out, err = cli(capsys, "run", odd, "--input", f"x[/b]={tmp_path / 'x.npy'}",
                         "--output", tmp_path / "out")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a_b.npy"), [1, 0])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a_b_1.npy"), [-1, 2])
    assert cli(capsys, "info", odd)[0] == 0
    strings = save(tmp_path, "str.onnx", [helper.make_node(
        "StringNormalizer", ["s"], ["y"], case_change_action="UPPER")],
        [tensor_info("s", [3], TensorProto.STRING)], [tensor_info("y", None, TensorProto.STRING)])
    code, out, err = cli(capsys, "run", strings, "--output", tmp_path / "str")
    assert code == 0, err
    assert np.load(tmp_path / "str" / "y.npy").dtype.kind == "U"


def test_bad_output_files_for_info_and_conformance(capsys, tmp_path, model_path):
    assert_cli_error(cli(capsys, "info", model_path, "--input-shape", "x=2,4",
                         "--save-optimized", tmp_path), "is a directory")
    (tmp_path / "file").write_text("")
    assert_cli_error(cli(capsys, "info", model_path, "--input-shape", "x=2,4",
                         "--save-optimized", tmp_path / "file" / "m.onnx"), "not a directory")
    nested = tmp_path / "new" / "m.onnx"
    assert cli(capsys, "info", model_path, "--input-shape", "x=2,4",
               "--save-optimized", nested)[0] == 0
    assert nested.is_file() and [p.name for p in nested.parent.iterdir()] == ["m.onnx"]
    assert_cli_error(cli(capsys, "conformance", "--json", tmp_path, "--filter", "test_relu",
                         "--no-models"), "is a directory")
    assert_cli_error(cli(capsys, "conformance", "--filter", "no_such_case", "--no-models"),
                     "no_such_case")
    assert_cli_error(cli(capsys, "conformance", "--no-nodes", "--no-models"), "nothing to run")
