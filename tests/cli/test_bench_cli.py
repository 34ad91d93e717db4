"""``heli bench``: runs end to end on a tiny model (no timing assertions: the
machine is shared and noisy), and bad arguments are one error line, exit 2."""

import numpy as np
import pytest
from onnx import helper, numpy_helper

from heli.cli import main
from tests.cli.test_compile_cli import assert_one_error, cli
from tests.frontend.test_onnx import make_model, tensor_info

FAST = ("--rounds", "1", "--threads", "1", "--warmup", "0", "--runs", "1", "--min-time", "0",
        "--matmul-size", "64")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    w = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    model = make_model(nodes, [tensor_info("x", ["n", 4])], [tensor_info("z", ["n", 3])], [w])
    path = tmp_path_factory.mktemp("m") / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_bench_against_onnxruntime(model_path, capsys):
    code, out, err = cli(capsys, "bench", model_path, "--target", "ref", "--compare",
                         "onnxruntime", "--input-shape", "x=2,4", *FAST)
    assert code == 0, err
    assert "round 1/1" in out and "heli ref" in out and "onnxruntime" in out
    assert "Heli / ONNX Runtime:" in out and "median of 1 per-round ratio" in out
    assert "fp32 peak (numpy matmul, 1 thread(s))" in out
    assert "placement: ref: 2 nodes" in out


def test_bench_a_heli_file_alone(model_path, tmp_path, capsys):
    saved = tmp_path / "m.heli"
    assert main(["compile", str(model_path), "-o", str(saved), "--input-shape", "x=3,4"]) == 0
    code, out, err = cli(capsys, "bench", saved, "--no-peak", *FAST)
    assert code == 0, err
    assert "heli ref" in out and "x [3, 4]" in out and "Heli / ONNX Runtime" not in out
    assert "unknown (a .heli file keeps no graph)" in out

    code, _, err = cli(capsys, "bench", saved, "--compare", "onnxruntime", *FAST)
    assert_one_error(code, err, "needs the ONNX model")
    code, _, err = cli(capsys, "bench", saved, "--target", "cpu", *FAST)
    assert_one_error(code, err, "compiled for the target 'ref'")


@pytest.mark.parametrize("args, fragment", [
    (("--rounds", "0"), "--rounds"),
    (("--threads", "-1"), "--threads"),
    (("--threads", "two"), "--threads"),
    (("--min-time", "nan"), "--min-time"),
    (("--compare", "tensorflow"), "--compare"),
    (("--target", "nope"), "no target named 'nope'"),
    (("--input-shape", "x=2,a"), "--input-shape"),
    (("--input-shape", "q=2,4"), "no input named 'q'"),
    ((), "dynamic shape"),  # x has a dynamic first axis and no --input-shape
])
def test_bad_arguments_exit_2(model_path, capsys, args, fragment):
    with pytest.raises(SystemExit) as raised:  # argparse's own errors exit from the parser
        code = main(["bench", str(model_path), "--target", "ref", *args])
        raise SystemExit(code)
    _, err = capsys.readouterr()
    assert_one_error(raised.value.code, err, fragment)


def test_missing_model_is_one_error_line(tmp_path, capsys):
    code, _, err = cli(capsys, "bench", tmp_path / "absent.onnx", "--target", "ref")
    assert_one_error(code, err, "does not exist")
