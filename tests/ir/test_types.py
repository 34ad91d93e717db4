import ml_dtypes
import numpy as np
import pytest

from heli._errors import UnsupportedError
from heli.ir import DType, TensorType, tensor_type_of


def test_every_onnx_dtype_round_trips():
    import onnx

    for code in onnx.TensorProto.DataType.values():
        if code == 0:
            continue
        dtype = DType.from_onnx(code)
        assert dtype.onnx == code
        if dtype is not DType.STRING:
            assert DType.from_numpy(dtype.np) is dtype


def test_exotic_types_use_ml_dtypes():
    assert DType.BFLOAT16.np == np.dtype(ml_dtypes.bfloat16)
    assert DType.FLOAT8E4M3FN.is_float and DType.INT4.is_int and not DType.BOOL.is_int


def test_unknown_codes_are_clear_errors():
    with pytest.raises(UnsupportedError, match="ONNX data type code 999"):
        DType.from_onnx(999)


def test_tensor_type_queries():
    t = TensorType(DType.FLOAT32, ("batch", 3, 224, 224))
    assert t.rank == 4 and not t.is_static and t.symbols == ("batch",)
    assert str(t) == "float32[batch, 3, 224, 224]"
    assert tensor_type_of(np.zeros((2, 3), np.int64)) == TensorType(DType.INT64, (2, 3))
    assert TensorType(DType.FLOAT32, None).rank is None
