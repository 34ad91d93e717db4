import numpy as np
import onnx
from onnx import helper, numpy_helper

import heli
from heli.frontend.onnx import import_onnx
from heli.ir import to_onnx
from tests.conftest import run_onnxruntime
from tests.frontend.test_onnx import make_model, tensor_info


def test_exported_graph_is_valid_onnx_and_runs_the_same():
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3))
                                .astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    model = make_model(nodes, [tensor_info("x", ["n", 4])], [tensor_info("z", ["n", 3])], [w])
    exported = to_onnx(import_onnx(model))
    onnx.checker.check_model(exported, full_check=True)
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "n"
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    want = run_onnxruntime(model, {"x": x})["z"]
    np.testing.assert_allclose(run_onnxruntime(exported, {"x": x})["z"], want, rtol=1e-6)
    np.testing.assert_allclose(heli.compile(exported).run({"x": x})["z"], want, rtol=1e-6)
