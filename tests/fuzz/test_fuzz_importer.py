"""Fuzzing the importer and `run`: mutated ONNX files either work or raise
Heli's own error type; never another exception, a crash, a hang or a wrong
answer that type checking can see.

Two mutators: raw bytes of the serialized model (flip, cut, splice), and
protobuf fields (op types, inputs, outputs, attributes and their kinds, dims,
dtypes, opsets, initializer data and values, also inside If/Loop/Scan bodies).
Models run in debug mode, so every array is checked against its inferred type
and the IR is verified after each pass: a mismatch there ("a Heli bug") fails
the test too.  Tensors are capped at 64 MiB (HELI_MAX_TENSOR_BYTES) so that a
mutated shape fails fast, and an example running for more than HANG_SECONDS
counts as a hang.  Hypothesis is derandomized, so CI runs the same cases every
time.
"""

from __future__ import annotations

import contextlib
import signal
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heli
from heli.conformance import node_cases, random_array
from heli.frontend.onnx import import_onnx
from heli.ir import OptionalType, SequenceType, TensorType

SEED_CASES = [
    # common CNN / transformer ops
    "test_add_bcast", "test_relu", "test_conv_with_strides_padding", "test_maxpool_2d_pads",
    "test_gemm_all_attributes", "test_reshape_reordered_all_dims",
    "test_transpose_all_permutations_0", "test_concat_2d_axis_0", "test_slice", "test_gather_0",
    "test_softmax_axis_1", "test_batchnorm_example", "test_averagepool_2d_strides",
    "test_matmul_3d", "test_split_equal_parts_1d_opset18", "test_squeeze", "test_unsqueeze_axis_0",
    "test_reduce_mean_default_axes_keepdims_example", "test_cast_FLOAT_to_FLOAT16",
    "test_where_example", "test_expand_dim_changed", "test_constant_pad", "test_reflect_pad",
    "test_layer_normalization_2d_axis0", "test_resize_upsample_scales_nearest", "test_clip",
    # ops whose output size comes from tensor values
    "test_constantofshape_float_ones", "test_tile", "test_range_int32_type_negative_delta",
    "test_onehot_with_axis", "test_resize_upsample_sizes_nearest", "test_top_k",
    "test_nonzero_example", "test_compress_0", "test_center_crop_pad_crop",
    "test_maxunpool_export_with_output_shape", "test_convtranspose",
    # subgraphs, sequences, optional outputs, strings, recurrent and attention ops
    "test_if", "test_loop11", "test_scan9_sum", "test_sequence_insert_at_back",
    "test_dropout_default_mask", "test_strnormalizer_export_monday_casesensintive_upper",
    "test_lstm_defaults", "test_attention_4d", "test_lrn_default", "test_gathernd_example_int32",
    "test_scatter_elements_with_axis", "test_einsum_batch_matmul", "test_adagrad",
]
MAX_ELEMENTS = 100_000
MAX_TENSOR_BYTES = 64 << 20
HANG_SECONDS = 30
EXAMPLES = 6000
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def _seed_models() -> list[bytes]:
    wanted = set(SEED_CASES)
    return [c.model.SerializeToString() for c in node_cases() if c.name in wanted]


SEEDS = _seed_models()


@pytest.fixture(autouse=True, scope="module")
def _small_tensor_limit():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HELI_MAX_TENSOR_BYTES", str(MAX_TENSOR_BYTES))
        yield


class Hang(BaseException):
    """Raised by the watchdog; a BaseException, so no ``except Exception`` in Heli hides it."""


@contextlib.contextmanager
def _watchdog(seconds: int):
    def expire(signum, frame):
        raise Hang(f"one example ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _random_value(vtype, rng: np.random.Generator):
    """A random feed for ``vtype`` (symbolic dims are 2), or None if it cannot be made."""
    if isinstance(vtype, SequenceType):
        item = _random_value(vtype.elem, rng)
        return None if item is None else [item, _random_value(vtype.elem, rng)]
    if isinstance(vtype, OptionalType):
        return _random_value(vtype.elem, rng)
    if not isinstance(vtype, TensorType) or vtype.shape is None:
        return None
    shape = tuple(d if isinstance(d, int) else 2 for d in vtype.shape)
    if int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS:
        return None
    if vtype.dtype.np == np.dtype(object):  # string tensors
        return np.array(rng.choice(["a", "Monday", "tuesday", ""], size=shape), dtype=object)
    return random_array(vtype.dtype.np, shape, rng)


def exercise(data: bytes) -> None:
    """Import, compile and run ``data``; only HeliError may escape, and none that
    reports a Heli bug."""
    with _watchdog(HANG_SECONDS):
        try:
            graph = import_onnx(data)
            feeds = {}
            rng = np.random.default_rng(0)
            for value in graph.inputs:
                feed = _random_value(value.type, rng)
                if feed is None:
                    return
                feeds[value.name] = feed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                heli.compile(graph, debug=True).run(feeds)
        except heli.HeliError as error:
            if isinstance(error, heli.VerificationError) or "a Heli bug" in str(error):
                raise AssertionError(f"{type(error).__name__}: {error}") from error


def test_seed_models_run():
    assert len(SEEDS) == len(SEED_CASES)  # a renamed case must not drop out silently
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
BIG_INTS = st.sampled_from([-(2**40), -1, 0, 7, 10**6, 10**12, 2**62])
A = onnx.AttributeProto


def _graphs(graph: onnx.GraphProto):
    """The graph and every subgraph in it (If branches, Loop and Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == A.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Initializers and Constant values, subgraphs included."""
    found = []
    for g in _graphs(graph):
        found += list(g.initializer)
        found += [a.t for n in g.node for a in n.attribute if a.type == A.TENSOR]
    return found


def _mutate_tensor(tensor: onnx.TensorProto, data) -> None:
    choice = data.draw(st.integers(0, 3))
    if choice == 0:
        if tensor.dims:
            tensor.dims[data.draw(st.integers(0, len(tensor.dims) - 1))] = data.draw(
                st.integers(0, 9))
        tensor.data_type = data.draw(st.sampled_from([tensor.data_type, 1, 7, 99]))
    elif choice == 1 and tensor.raw_data:  # a truncated payload
        tensor.raw_data = tensor.raw_data[: data.draw(st.integers(0, len(tensor.raw_data) - 1))]
    elif choice == 2 and tensor.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        # a shape, axis, count or index turned huge, negative or zero
        array = onnx.numpy_helper.to_array(tensor).copy()
        if array.size:
            array.reshape(-1)[data.draw(st.integers(0, array.size - 1))] = np.clip(
                data.draw(BIG_INTS), np.iinfo(array.dtype).min, np.iinfo(array.dtype).max)
            tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    else:
        del tensor.dims[:]
        tensor.dims.extend(data.draw(st.lists(st.integers(0, 4), max_size=3)))


def _mutate_attribute(attr: onnx.AttributeProto, data) -> None:
    choice = data.draw(st.integers(0, 2))
    if choice == 0 and attr.ints:
        attr.ints[data.draw(st.integers(0, len(attr.ints) - 1))] = data.draw(ATTR_INTS)
    elif choice == 0 and attr.type == A.INT:
        attr.i = data.draw(st.one_of(ATTR_INTS, BIG_INTS))
    elif choice == 1:  # a value of another kind, as a buggy exporter might write it
        kind = data.draw(st.sampled_from(["float", "floats", "string", "ints", "tensor"]))
        attr.ClearField("ints")
        attr.ClearField("floats")
        if kind == "float":
            attr.type, attr.f = A.FLOAT, data.draw(st.sampled_from([0.5, -1.0, float("nan")]))
        elif kind == "floats":
            attr.type = A.FLOATS
            attr.floats.extend([1.5, 2.0])
        elif kind == "string":
            attr.type, attr.s = A.STRING, b"bogus"
        elif kind == "ints":
            attr.type = A.INTS
            attr.ints.extend(data.draw(st.lists(ATTR_INTS, max_size=4)))
        else:
            attr.type = A.TENSOR
            attr.t.CopyFrom(onnx.numpy_helper.from_array(np.array([1, 2], np.int64)))
    else:
        attr.type = data.draw(st.integers(0, 14))


def _mutate_fields(model: onnx.ModelProto, data) -> None:
    graph = model.graph
    choice = data.draw(st.integers(0, 12))
    nodes = [n for g in _graphs(graph) for n in g.node]
    node = nodes[data.draw(st.integers(0, len(nodes) - 1))] if nodes else None
    tensors = _tensors(graph)
    if choice == 0 and node is not None:
        node.op_type = data.draw(st.sampled_from(
            ["Relu", "Add", "Conv", "Reshape", "Concat", "Gather", "NoSuchOp", "MatMul", "Split",
             "Expand", "Tile", "ConstantOfShape", "Range", "Loop", "Identity"]))
    elif choice == 1 and node is not None and node.input:
        index = data.draw(st.integers(0, len(node.input) - 1))
        names = ["", "missing", *[i.name for i in graph.input]]
        node.input[index] = data.draw(st.sampled_from(names))
    elif choice == 2 and node is not None:
        if node.input and data.draw(st.booleans()):
            del node.input[-1]
        else:
            node.input.append(data.draw(st.sampled_from(["", *[i.name for i in graph.input]])))
    elif choice == 3 and node is not None and node.attribute:
        _mutate_attribute(node.attribute[data.draw(st.integers(0, len(node.attribute) - 1))], data)
    elif choice == 4 and node is not None:
        node.attribute.add(name=data.draw(st.sampled_from(["axis", "bogus", "perm", "pads"])),
                           type=A.INT, i=data.draw(ATTR_INTS))
    elif choice == 5 and graph.input:
        vi = graph.input[data.draw(st.integers(0, len(graph.input) - 1))]
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[data.draw(st.integers(0, len(dims) - 1))].dim_value = data.draw(st.integers(0, 7))
    elif choice == 6 and graph.input:
        vi = graph.input[data.draw(st.integers(0, len(graph.input) - 1))]
        vi.type.tensor_type.elem_type = data.draw(st.integers(0, 30))
    elif choice == 7:
        model.opset_import[0].version = data.draw(st.integers(-1, 40))
    elif choice == 8 and tensors:
        _mutate_tensor(tensors[data.draw(st.integers(0, len(tensors) - 1))], data)
    elif choice == 9 and node is not None and node.output:  # omit or add an output
        if len(node.output) > 1 and data.draw(st.booleans()):
            node.output[data.draw(st.integers(1, len(node.output) - 1))] = ""
        else:
            node.output.append(data.draw(st.sampled_from(["", "extra"])))
    elif choice == 10 and node is not None:
        node.domain = data.draw(st.sampled_from(["ai.onnx", "com.microsoft", "bogus"]))
    elif choice == 11 and len(nodes) > 1 and node is not None and node.output:
        node.output[0] = nodes[data.draw(st.integers(0, len(nodes) - 1))].output[0] or "x"
    elif graph.output:
        names = ["nothing", *[i.name for i in graph.input]]
        graph.output[0].name = data.draw(st.sampled_from(names))


@SETTINGS
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_field_mutations(seed: bytes, data) -> None:
    model = onnx.ModelProto()
    model.ParseFromString(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate_fields(model, data)
    exercise(model.SerializeToString())
