"""Sequence and optional ops: type inference of containers, edge positions,
error messages, and running sequences through compiled graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import heli
from heli._errors import ExecutionError, ShapeError
from heli.ir._ops import get_op
from heli.ir._types import DType, OptionalType, SequenceType, TensorType
from tests.ops.helpers import infer_types as infer

F32 = DType.FLOAT32
I64 = DType.INT64


def ref(op_name, *inputs, **attrs):
    opdef = get_op(op_name)
    result = opdef.reference(*inputs, **opdef.resolve_attrs(attrs))
    # Sequence results come back as 1-tuples (see heli.ops._sequence).
    return result[0] if isinstance(result, tuple) and len(result) == 1 else result


def is_unknown(dim):
    return isinstance(dim, str) and dim.startswith("?")


def seq_of(*shapes):
    return [np.full(s, i, np.float32) for i, s in enumerate(shapes)]


# ------------------------------------------------------------------ inference


def test_construct_merges_element_shapes():
    (t,) = infer("SequenceConstruct", [TensorType(F32, ("b", 3)), TensorType(F32, ("b", 4))])
    assert isinstance(t, SequenceType)
    assert t.elem.shape[0] == "b" and is_unknown(t.elem.shape[1])
    with pytest.raises(ShapeError, match="one dtype"):
        infer("SequenceConstruct", [TensorType(F32, (3,)), TensorType(I64, (3,))])


def test_insert_checks_dtype_and_at_gives_element_type():
    seq = SequenceType(TensorType(F32, (2, 3)))
    (t,) = infer("SequenceInsert", [seq, TensorType(F32, (2, 3))])
    assert t == seq
    with pytest.raises(ShapeError, match="dtype int64"):
        infer("SequenceInsert", [seq, TensorType(I64, (2, 3))])
    (t,) = infer("SequenceAt", [seq, np.array(0, np.int64)])
    assert t == TensorType(F32, (2, 3))
    (t,) = infer("SequenceLength", [seq])
    assert t == TensorType(I64, ())
    with pytest.raises(ShapeError, match="must be a sequence"):
        infer("SequenceLength", [TensorType(F32, (2,))])


def test_empty_has_the_dtype_attribute():
    (t,) = infer("SequenceEmpty", [], {"dtype": TP.INT64})
    assert t == SequenceType(TensorType(I64, None))


def test_concat_from_sequence_shapes():
    seq = SequenceType(TensorType(F32, ("b", 4)))
    (t,) = infer("ConcatFromSequence", [seq], {"axis": 1})
    assert t.shape[0] == "b" and is_unknown(t.shape[1])
    (t,) = infer("ConcatFromSequence", [seq], {"axis": -1, "new_axis": 1})
    assert t.shape[:2] == ("b", 4) and is_unknown(t.shape[2])
    with pytest.raises(ShapeError, match="out of range"):
        infer("ConcatFromSequence", [seq], {"axis": 2})


def test_split_to_sequence_shapes():
    x = TensorType(F32, ("b", 6))
    (t,) = infer("SplitToSequence", [x, np.array(2, np.int64)], {"axis": 1})
    assert t == SequenceType(TensorType(F32, ("b", 2)))
    (t,) = infer("SplitToSequence", [x, np.array(4, np.int64)], {"axis": 1})  # 4 + 2
    assert is_unknown(t.elem.shape[1])
    (t,) = infer("SplitToSequence", [x], {"axis": 1, "keepdims": 0})
    assert t == SequenceType(TensorType(F32, ("b",)))
    with pytest.raises(ShapeError, match="sum to the axis length 6"):
        infer("SplitToSequence", [x, np.array([1, 2], np.int64)], {"axis": 1})


def test_optional_types():
    (t,) = infer("Optional", [TensorType(F32, (3,))])
    assert t == OptionalType(TensorType(F32, (3,)))
    (t,) = infer("Optional", [], {"type": TensorType(I64, None)})
    assert t == OptionalType(TensorType(I64, None))
    with pytest.raises(ShapeError, match="needs the 'type' attribute"):
        infer("Optional", [])
    (t,) = infer("OptionalGetElement", [OptionalType(SequenceType(TensorType(F32, (3,))))])
    assert t == SequenceType(TensorType(F32, (3,)))
    (t,) = infer("OptionalHasElement", [])
    assert t == TensorType(DType.BOOL, ())


# ------------------------------------------------------------------ semantics


def test_insert_and_erase_positions():
    seq = seq_of(1, 2, 3)
    x = np.zeros(4, np.float32)
    out = ref("SequenceInsert", seq, x, np.array(-1, np.int64))  # before the last
    assert [a.shape for a in out] == [(1,), (2,), (4,), (3,)]
    out = ref("SequenceInsert", seq, x, np.array([3], np.int64))  # at the end
    assert out[-1] is x and len(seq) == 3  # the input is not modified
    out = ref("SequenceErase", seq)
    assert [a.shape for a in out] == [(1,), (2,)]
    out = ref("SequenceErase", seq, np.array(-3, np.int64))
    assert [a.shape for a in out] == [(2,), (3,)]
    with pytest.raises(IndexError, match="Erase position 3 is out of range"):
        ref("SequenceErase", seq, np.array(3, np.int64))
    with pytest.raises(IndexError, match="Insert position -4 is out of range"):
        ref("SequenceInsert", seq, x, np.array(-4, np.int64))
    with pytest.raises(ValueError, match="dtype 'int64'"):
        ref("SequenceInsert", seq, np.zeros(2, np.int64))


def test_at_and_length():
    seq = seq_of(1, 2, 3)
    assert ref("SequenceAt", seq, np.array(-1, np.int32)).shape == (3,)
    assert ref("SequenceLength", seq) == np.array(3, np.int64)
    with pytest.raises(IndexError, match="Position 3"):
        ref("SequenceAt", seq, np.array(3, np.int64))
    with pytest.raises(ValueError, match="one integer"):
        ref("SequenceAt", seq, np.array([0, 1], np.int64))


def test_split_and_concat_round_trip():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    parts = ref("SplitToSequence", x, np.array(4, np.int64), axis=1)
    assert [p.shape for p in parts] == [(4, 4), (4, 2)]
    np.testing.assert_array_equal(ref("ConcatFromSequence", parts, axis=1), x)
    rows = ref("SplitToSequence", x, axis=0, keepdims=0)
    assert len(rows) == 4 and rows[0].shape == (6,)
    np.testing.assert_array_equal(ref("ConcatFromSequence", rows, axis=-1, new_axis=1), x.T)
    parts = ref("SplitToSequence", x, np.array([1, 0, 3], np.int64))
    assert [p.shape for p in parts] == [(1, 6), (0, 6), (3, 6)]
    with pytest.raises(ValueError, match="non-empty sequence"):
        ref("ConcatFromSequence", [], axis=0)


def test_optional_semantics():
    x = np.ones(2, np.float32)
    assert ref("OptionalHasElement", None) == np.array(False)
    assert ref("OptionalHasElement", x) == np.array(True)
    assert ref("OptionalHasElement") == np.array(False)
    assert ref("OptionalGetElement", ref("Optional", x)) is x
    with pytest.raises(ValueError, match="empty optional"):
        ref("OptionalGetElement", None)


# ------------------------------------------------------------------ through a graph


def _model(nodes, inputs, outputs, opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_sequences_flow_through_identity_and_graph_inputs():
    seq_type = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TP.FLOAT, None))
    model = _model(
        [helper.make_node("Identity", ["s"], ["t"]),
         helper.make_node("SequenceLength", ["t"], ["n"]),
         helper.make_node("ConcatFromSequence", ["t"], ["c"], axis=0)],
        [helper.make_value_info("s", seq_type)],
        [helper.make_value_info("t", seq_type), helper.make_tensor_value_info("n", TP.INT64, []),
         helper.make_tensor_value_info("c", TP.FLOAT, None)],
    )
    seq = seq_of(2, 3)
    out = heli.compile(model, debug=True).run({"s": seq})
    assert isinstance(out["t"], list) and len(out["t"]) == 2
    assert out["n"] == 2
    np.testing.assert_array_equal(out["c"], np.concatenate(seq))


def test_empty_optional_feed_and_error_names_the_node():
    opt_type = helper.make_optional_type_proto(helper.make_tensor_type_proto(TP.FLOAT, [2]))
    model = _model(
        [helper.make_node("OptionalHasElement", ["o"], ["h"]),
         helper.make_node("OptionalGetElement", ["o"], ["v"], name="get")],
        [helper.make_value_info("o", opt_type)],
        [helper.make_tensor_value_info("h", TP.BOOL, []),
         helper.make_tensor_value_info("v", TP.FLOAT, [2])],
    )
    onnx.checker.check_model(model)
    compiled = heli.compile(model, debug=True)
    out = compiled.run({"o": np.ones(2, np.float32)})
    assert out["h"] == np.array(True)
    with pytest.raises(ExecutionError, match="'get'.*empty optional"):
        compiled.run({"o": None})
