"""Shape, data-movement and indexing ops: symbolic shape inference, error
messages and semantics the ONNX node cases leave out, against hand-computed
values and numpy oracles."""

from __future__ import annotations

import numpy as np
import pytest

from heli._errors import ShapeError
from heli.ir._ops import ExecContext, get_op
from heli.ir._types import DType, TensorType
from tests.ops.helpers import infer_types as infer

F32 = DType.FLOAT32
I64 = DType.INT64


def ref(op_name, *inputs, num_outputs=1, **attrs):
    """Run an op's reference function directly."""
    opdef = get_op(op_name)
    kwargs = opdef.resolve_attrs(attrs)
    if opdef.wants_ctx:
        kwargs["ctx"] = ExecContext("n", num_outputs, (), lambda *a: [], {})
    return opdef.reference(*inputs, **kwargs)


def ints(*values):
    return np.array(values, np.int64)


def is_unknown(dim):
    return isinstance(dim, str) and dim.startswith("?")


# ----------------------------------------------------------------- symbolic inference


def test_reshape_keeps_symbols_through_zero_and_minus_one():
    x = TensorType(F32, ("batch", "seq", 768))
    (t,) = infer("Reshape", [x, ints(0, 0, 12, 64)])
    assert t == TensorType(F32, ("batch", "seq", 12, 64))
    (t,) = infer("Reshape", [x, ints(0, -1, 768)])
    assert t == TensorType(F32, ("batch", "seq", 768))
    (t,) = infer("Reshape", [TensorType(F32, ("b", "s", 12, 64)), ints(0, 0, -1)])
    assert t == TensorType(F32, ("b", "s", 768))
    (t,) = infer("Reshape", [x, ints(-1, 768)])
    assert t.shape[1] == 768 and is_unknown(t.shape[0])


def test_reshape_non_constant_shape_gives_rank():
    (t,) = infer("Reshape", [TensorType(F32, ("b", 4)), TensorType(I64, (3,))])
    assert len(t.shape) == 3 and all(is_unknown(d) for d in t.shape)


def test_reshape_errors():
    with pytest.raises(ShapeError, match="cannot reshape"):
        infer("Reshape", [TensorType(F32, (2, 3)), ints(4, 2)])
    with pytest.raises(ShapeError, match="more than one -1"):
        infer("Reshape", [TensorType(F32, (2, 3)), ints(-1, -1)])


def test_reshape_allowzero():
    x = np.zeros((0, 3), np.float32)
    assert ref("Reshape", x, ints(3, 0), allowzero=1).shape == (3, 0)
    (t,) = infer("Reshape", [TensorType(F32, (0, 3)), ints(3, 0)], {"allowzero": 1})
    assert t.shape == (3, 0)


def test_transpose_concat_unsqueeze_keep_symbols():
    x = TensorType(F32, ("batch", "seq", 8))
    (t,) = infer("Transpose", [x], {"perm": [1, 0, 2]})
    assert t.shape == ("seq", "batch", 8)
    (t,) = infer("Concat", [x, TensorType(F32, ("batch", "seq", 4))], {"axis": -1})
    assert t.shape == ("batch", "seq", 12)
    (t,) = infer("Concat", [x, TensorType(F32, ("batch", 3, 8))], {"axis": 1})
    assert t.shape[0] == "batch" and is_unknown(t.shape[1])
    (t,) = infer("Unsqueeze", [x, ints(0, -1)])
    assert t.shape == (1, "batch", "seq", 8, 1)
    (t,) = infer("Squeeze", [TensorType(F32, ("b", 1, 4)), ints(1)])
    assert t.shape == ("b", 4)


def test_concat_rejects_mismatched_dims():
    with pytest.raises(ShapeError, match="differ on axis 0"):
        infer("Concat", [TensorType(F32, (2, 3)), TensorType(F32, (4, 3))], {"axis": 1})


def test_slice_inference():
    x = TensorType(F32, ("batch", 10, 6))
    big = 2**63 - 1
    (t,) = infer("Slice", [x, ints(0, 2), ints(big, -1), ints(0, 1)])
    assert t.shape == ("batch", 7, 6)
    (t,) = infer("Slice", [x, ints(-1), ints(-big - 1), ints(2), ints(-2)])
    assert t.shape == ("batch", 10, 3)
    (t,) = infer("Slice", [x, ints(-1), ints(-big - 1), ints(0), ints(-1)])
    assert t.shape == ("batch", 10, 6)  # reversing an axis keeps its size
    (t,) = infer("Slice", [x, ints(1), ints(5), ints(0)])
    assert is_unknown(t.shape[0]) and t.shape[1:] == (10, 6)
    (t,) = infer("Slice", [x, TensorType(I64, (1,)), TensorType(I64, (1,)), ints(1)])
    assert t.shape[0] == "batch" and is_unknown(t.shape[1]) and t.shape[2] == 6


def test_split_inference():
    x = TensorType(F32, ("b", 7))
    types = infer("Split", [x], {"axis": 1, "num_outputs": 3}, num_outputs=3)
    assert [t.shape for t in types] == [("b", 3), ("b", 3), ("b", 1)]
    types = infer("Split", [x, ints(2, 5)], {"axis": -1}, num_outputs=2)
    assert [t.shape for t in types] == [("b", 2), ("b", 5)]
    with pytest.raises(ShapeError, match="does not add up"):
        infer("Split", [x, ints(2, 4)], {"axis": 1}, num_outputs=2)


def test_pad_expand_tile_flatten_inference():
    x = TensorType(F32, ("n", 3, 4, 4))
    (t,) = infer("Pad", [x, ints(0, 0, 1, -1, 0, 0, 1, -1)])
    assert t.shape == ("n", 3, 6, 2)
    (t,) = infer("Pad", [x, ints(1, 2), None, ints(-1)])
    assert t.shape == ("n", 3, 4, 7)
    (t,) = infer("Expand", [TensorType(F32, ("n", 1)), ints(1, 5)])
    assert t.shape == ("n", 5)
    (t,) = infer("Tile", [x, ints(1, 2, 1, 3)])
    assert t.shape == ("n", 6, 4, 12)
    (t,) = infer("Flatten", [x], {"axis": 1})
    assert t.shape == ("n", 48)
    (t,) = infer("Flatten", [TensorType(F32, (1, "n", 4))], {"axis": -1})
    assert t.shape == ("n", 4)
    (t,) = infer("Flatten", [TensorType(F32, (2, "n", 4))], {"axis": 2})
    assert is_unknown(t.shape[0]) and t.shape[1] == 4


def test_gather_family_inference():
    data = TensorType(F32, ("vocab", 64))
    (t,) = infer("Gather", [data, TensorType(I64, ("batch", "seq"))])
    assert t.shape == ("batch", "seq", 64)
    (t,) = infer("GatherND", [TensorType(F32, (2, 3, 4)), TensorType(I64, (2, 5, 1))],
                 {"batch_dims": 1})
    assert t.shape == (2, 5, 4)


def test_misc_inference():
    (t,) = infer("Shape", [TensorType(F32, ("b", 3, 4))], {"start": -2})
    assert t == TensorType(I64, (2,))
    (t,) = infer("Range", [np.array(0, np.int64), np.array(10, np.int64), np.array(3, np.int64)])
    assert t == TensorType(I64, (4,))
    (t,) = infer("ConstantOfShape", [ints(2, 3)], {"value": np.array([1], np.int32)})
    assert t == TensorType(DType.INT32, (2, 3))
    (t,) = infer("OneHot", [TensorType(I64, ("b", 5)), np.array(10, np.int64),
                            TensorType(F32, (2,))], {"axis": 1})
    assert t.shape == ("b", 10, 5)
    values, indices = infer("TopK", [TensorType(F32, ("b", 100)), ints(5)], num_outputs=2)
    assert values == TensorType(F32, ("b", 5)) and indices == TensorType(I64, ("b", 5))
    y, first, inverse, counts = infer("Unique", [TensorType(F32, (4, 3))], num_outputs=4)
    assert y.shape == first.shape == counts.shape and inverse.shape == (12,)
    (t,) = infer("DepthToSpace", [TensorType(F32, ("n", 8, 3, 4))], {"blocksize": 2})
    assert t.shape == ("n", 2, 6, 8)
    (t,) = infer("CenterCropPad", [TensorType(F32, ("n", 10, 7)), ints(4, 9)], {"axes": [1, 2]})
    assert t.shape == ("n", 4, 9)


def test_inference_errors_name_the_value():
    with pytest.raises(ShapeError, match="axis 3 is out of range"):
        infer("Gather", [TensorType(F32, (2, 3)), TensorType(I64, (1,))], {"axis": 3})
    with pytest.raises(ShapeError, match="cannot squeeze axis 1 of size 4"):
        infer("Squeeze", [TensorType(F32, (1, 4)), ints(1)])
    with pytest.raises(ShapeError, match="repeat an axis"):
        infer("Unsqueeze", [TensorType(F32, (2,)), ints(0, -3)])
    with pytest.raises(ShapeError, match="not divisible"):
        infer("SpaceToDepth", [TensorType(F32, (1, 1, 3, 4))], {"blocksize": 2})


# -------------------------------------------------------------------------- semantics


def test_gather_negative_and_out_of_range_indices():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(ref("Gather", x, ints(-1, 0), axis=1), x[:, [3, 0]])
    with pytest.raises(IndexError, match="4 is out of range for a dimension of size 4"):
        ref("Gather", x, ints(4), axis=1)
    with pytest.raises(IndexError, match="out of range"):
        ref("GatherElements", x, ints(0, -5).reshape(1, 2), axis=1)


def test_slice_negative_steps_and_clamping():
    x = np.arange(10)
    np.testing.assert_array_equal(ref("Slice", x, ints(100), ints(-100), ints(0), ints(-3)),
                                  [9, 6, 3, 0])
    np.testing.assert_array_equal(ref("Slice", x, ints(-3), ints(100)), [7, 8, 9])
    assert ref("Slice", x, ints(5), ints(2)).shape == (0,)


def test_pad_modes_with_negative_pads():
    x = np.arange(5.0)
    np.testing.assert_array_equal(ref("Pad", x, ints(2, -1), mode="reflect"),
                                  [2, 1, 0, 1, 2, 3])
    np.testing.assert_array_equal(ref("Pad", x, ints(-2, 2), mode="wrap"), [2, 3, 4, 2, 3])
    np.testing.assert_array_equal(ref("Pad", x, ints(1, 1), mode="edge"),
                                  [0, 0, 1, 2, 3, 4, 4])
    np.testing.assert_array_equal(
        ref("Pad", x, ints(1, -3), np.array(9.0), mode="constant"), [9, 0, 1])


def test_topk_ties_take_smaller_index_first():
    x = np.array([[2.0, 5.0, 5.0, 1.0, 5.0]], np.float32)
    values, indices = ref("TopK", x, ints(2), num_outputs=2)
    np.testing.assert_array_equal(indices, [[1, 2]])
    values, indices = ref("TopK", x, ints(3), largest=0, num_outputs=2)
    np.testing.assert_array_equal(indices, [[3, 0, 1]])
    np.testing.assert_array_equal(values, [[1.0, 2.0, 5.0]])


def test_unique_unsorted_outputs():
    y, first, inverse, counts = ref("Unique", np.array([2, 1, 1, 3, 4, 3]), sorted=0)
    assert y.tolist() == [2, 1, 3, 4] and first.tolist() == [0, 1, 3, 4]
    assert inverse.tolist() == [0, 1, 1, 2, 3, 2] and counts.tolist() == [1, 2, 2, 1]


def test_scatter_reductions_with_duplicates():
    data = np.ones((1, 4), np.float32)
    idx, upd = ints(1, 1, 3).reshape(1, 3), np.array([[2, 3, 5]], np.float32)
    np.testing.assert_array_equal(
        ref("ScatterElements", data, idx, upd, axis=1, reduction="add"), [[1, 6, 1, 6]])
    np.testing.assert_array_equal(
        ref("ScatterElements", data, idx, upd, axis=1, reduction="mul"), [[1, 6, 1, 5]])
    out = ref("ScatterND", np.zeros(4, np.float32), ints(1, -1, 1).reshape(3, 1),
              np.array([1, 2, 3], np.float32), reduction="max")
    np.testing.assert_array_equal(out, [0, 3, 0, 2])


def test_tensor_scatter_circular_and_linear_overflow():
    cache = np.zeros((2, 3, 1), np.float32)
    update = np.array([[[1], [2]], [[3], [4]]], np.float32)
    out = ref("TensorScatter", cache, update, ints(0, 2), axis=1, mode="circular")
    np.testing.assert_array_equal(out[..., 0], [[1, 2, 0], [4, 0, 3]])
    with pytest.raises(IndexError, match="past the cache length 3"):
        ref("TensorScatter", cache, update, ints(0, 2), axis=1, mode="linear")


def test_gather_nd_batch_dims_matches_loop():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 3, 4)).astype(np.float32)
    idx = rng.integers(-3, 3, (2, 5, 1))
    got = ref("GatherND", data, idx, batch_dims=1)
    want = np.stack([data[b][idx[b, :, 0]] for b in range(2)])
    np.testing.assert_array_equal(got, want)


def test_depth_space_round_trip():
    x = np.arange(2 * 8 * 3 * 2, dtype=np.float32).reshape(2, 8, 3, 2)
    for mode in ("DCR", "CRD"):
        y = ref("DepthToSpace", x, blocksize=2, mode=mode)
        assert y.shape == (2, 2, 6, 4)
        np.testing.assert_array_equal(ref("SpaceToDepth", y, blocksize=2, mode=mode), x)


def test_reverse_sequence_and_onehot_and_range():
    x = np.arange(12).reshape(4, 3)  # time x batch
    out = ref("ReverseSequence", x, ints(4, 1, 2))
    np.testing.assert_array_equal(out[:, 0], [9, 6, 3, 0])
    np.testing.assert_array_equal(out[:, 1], [1, 4, 7, 10])
    np.testing.assert_array_equal(out[:, 2], [5, 2, 8, 11])
    hot = ref("OneHot", ints(1, -1, 7), np.array(3), np.array([0, 5], np.int32))
    np.testing.assert_array_equal(hot, [[0, 5, 0], [0, 0, 5], [0, 0, 0]])
    r = ref("Range", np.float16(0), np.float16(1), np.float16(0.25))
    assert r.dtype == np.float16 and r.tolist() == [0, 0.25, 0.5, 0.75]


def test_nonzero_compress_shapes():
    assert ref("NonZero", np.zeros((2, 3))).shape == (2, 0)
    np.testing.assert_array_equal(ref("NonZero", np.array(5.0)), [[0]])
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(ref("Compress", x, np.array([0, 1], bool), axis=1), [[1], [4]])
    with pytest.raises(IndexError, match="selects entry 4"):
        ref("Compress", np.arange(4), np.array([0, 0, 0, 0, 1], bool), axis=0)
