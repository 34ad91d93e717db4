"""Fuzzing the importer and `run`: mutated ONNX files either work or raise
Heli's own error type; never another exception, a crash or a hang.

Two mutators: raw bytes of the serialized model (flip, cut, splice), and
protobuf fields (op types, inputs, attributes, dims, dtypes, opsets).
Hypothesis is derandomized so CI runs the same 2,400 cases every time.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heli
from heli.conformance import node_cases, random_array
from heli.frontend.onnx import import_onnx
from heli.ir import TensorType

SEED_CASES = [
    "test_add_bcast", "test_relu", "test_conv_with_strides_padding", "test_maxpool_2d_pads",
    "test_gemm_all_attributes", "test_reshape_reordered_all_dims", "test_transpose_all_permutations_0",
    "test_concat_2d_axis_0", "test_slice", "test_gather_0", "test_softmax_axis_1",
    "test_batchnorm_example", "test_averagepool_2d_strides", "test_matmul_3d", "test_split_equal_parts_1d_opset18",
    "test_squeeze", "test_unsqueeze_axis_0", "test_reduce_mean_default_axes_keepdims_example",
    "test_cast_FLOAT_to_INT32", "test_where_example", "test_expand_dim_changed", "test_pad",
    "test_layer_normalization_2d_axis0", "test_resize_upsample_scales_nearest", "test_clip",
]
MAX_ELEMENTS = 100_000
SETTINGS = settings(max_examples=1200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def _seed_models() -> list[bytes]:
    wanted = set(SEED_CASES)
    return [c.model.SerializeToString() for c in node_cases() if c.name in wanted]


SEEDS = _seed_models()


def exercise(data: bytes) -> None:
    """Import, compile and run ``data``; only HeliError may escape."""
    try:
        graph = import_onnx(data)
        feeds = {}
        rng = np.random.default_rng(0)
        for value in graph.inputs:
            vtype = value.type
            if not isinstance(vtype, TensorType) or vtype.shape is None:
                return
            shape = tuple(d if isinstance(d, int) else 2 for d in vtype.shape)
            if int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS:
                return
            feeds[value.name] = random_array(vtype.dtype.np, shape, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            heli.compile(graph).run(feeds)
    except heli.HeliError:
        pass


def test_seed_models_run():
    assert len(SEEDS) >= 20
    for data in SEEDS:
        exercise(data)


@SETTINGS
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_byte_mutations(seed: bytes, data) -> None:
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "splice", "set"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del buf[pos:]
        elif kind == "splice":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif buf:
            buf[pos] = data.draw(st.integers(0, 255))
    exercise(bytes(buf))


ATTR_INTS = st.integers(-3, 6)


def _mutate_fields(model: onnx.ModelProto, data) -> None:
    graph = model.graph
    choice = data.draw(st.integers(0, 9))
    nodes = list(graph.node)
    node = nodes[data.draw(st.integers(0, len(nodes) - 1))] if nodes else None
    if choice == 0 and node is not None:
        node.op_type = data.draw(st.sampled_from(
            ["Relu", "Add", "Conv", "Reshape", "Concat", "Gather", "NoSuchOp", "MatMul", "Split"]))
    elif choice == 1 and node is not None and node.input:
        index = data.draw(st.integers(0, len(node.input) - 1))
        node.input[index] = data.draw(st.sampled_from(["", "missing", *[i.name for i in graph.input]]))
    elif choice == 2 and node is not None:
        if node.input and data.draw(st.booleans()):
            del node.input[-1]
        else:
            node.input.append(data.draw(st.sampled_from(["", *[i.name for i in graph.input]])))
    elif choice == 3 and node is not None and node.attribute:
        attr = node.attribute[data.draw(st.integers(0, len(node.attribute) - 1))]
        if attr.ints:
            attr.ints[data.draw(st.integers(0, len(attr.ints) - 1))] = data.draw(ATTR_INTS)
        elif attr.type == onnx.AttributeProto.INT:
            attr.i = data.draw(ATTR_INTS)
        else:
            attr.type = data.draw(st.integers(0, 14))
    elif choice == 4 and node is not None:
        node.attribute.add(name=data.draw(st.sampled_from(["axis", "bogus", "perm", "pads"])),
                           type=onnx.AttributeProto.INT, i=data.draw(ATTR_INTS))
    elif choice == 5 and graph.input:
        dims = graph.input[data.draw(st.integers(0, len(graph.input) - 1))].type.tensor_type.shape.dim
        if dims:
            dims[data.draw(st.integers(0, len(dims) - 1))].dim_value = data.draw(st.integers(0, 7))
    elif choice == 6 and graph.input:
        vi = graph.input[data.draw(st.integers(0, len(graph.input) - 1))]
        vi.type.tensor_type.elem_type = data.draw(st.integers(0, 30))
    elif choice == 7:
        model.opset_import[0].version = data.draw(st.integers(-1, 40))
    elif choice == 8 and graph.initializer:
        tensor = graph.initializer[data.draw(st.integers(0, len(graph.initializer) - 1))]
        if tensor.dims:
            tensor.dims[0] = data.draw(st.integers(0, 9))
        tensor.data_type = data.draw(st.sampled_from([tensor.data_type, 1, 7, 99]))
    elif graph.output:
        graph.output[0].name = data.draw(st.sampled_from(["nothing", *[i.name for i in graph.input]]))


@SETTINGS
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_field_mutations(seed: bytes, data) -> None:
    model = onnx.ModelProto()
    model.ParseFromString(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate_fields(model, data)
    exercise(model.SerializeToString())
