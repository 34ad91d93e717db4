import numpy as np

import heli
from heli.frontend.onnx import import_onnx
from heli.ir import TensorType


def ops_of(graph) -> list[str]:
    return [n.op.name for n in graph.nodes]


def run_graph(graph, feeds):
    return heli.compile(graph).run(feeds)


def bind(graph, **shapes):
    return {v.name: TensorType(v.type.dtype, shapes[v.name]) for v in graph.inputs}


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


__all__ = ["bind", "import_onnx", "ops_of", "rand", "run_graph"]
