"""Models quantized by ONNX Runtime (``quantize_static``) on the npu target:
PP-OCR's direction classifier in QDQ form (int8 activations with per-channel
int8 weights, and ORT's defaults: uint8 activations, per-tensor weights) and
in QOperator form (QLinearConv and ONNX Runtime's contrib ops QLinearAdd,
QLinearMul, QLinearGlobalAveragePool, QGemm, QLinearSoftmax).  After
:class:`heli.passes.QdqToInt` the NPU's segments must equal the integer
reference bit for bit, the result must agree with ONNX Runtime running the
same quantized model (the independent oracle), and the MACs must run on the
NPU.  The figures are printed (``-s``)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx.version_converter
import pytest

import heli
from heli.frontend.onnx import import_onnx
from heli.passes import QdqToInt, ShapeInference
from tests._ort import REDUCE_RANGE

from .test_real_models import HELD_OUT, WORDS, cls_images, npu_mac_share

ort_quant = pytest.importorskip("onnxruntime.quantization")

SHAPE = (1, 3, 48, 192)
# name: (format, activation type, per-channel weights, weight type, op types)
VARIANTS = {
    "qdq-int8": ("QDQ", "QInt8", True, "QInt8", None),
    "qdq-ort-defaults": ("QDQ", "QUInt8", False, "QInt8", None),
    "qoperator-int8": ("QOperator", "QInt8", True, "QInt8", None),
    "qoperator-ort-defaults": ("QOperator", "QUInt8", False, "QInt8", None),
}


@pytest.fixture(scope="module")
def cls_float(tmp_path_factory) -> str:
    """PP-OCR cls at opset 13 with a static 1x3x48x192 input, ORT's
    pre-processing applied (BatchNorm folded, as ORT's quantization guide asks)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from heli.testing import ppocr_model

    folder = tmp_path_factory.mktemp("ortq")
    # opset 13: per-channel DequantizeLinear
    model = onnx.version_converter.convert_version(onnx.load(str(ppocr_model("cls"))), 13)
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, SHAPE, strict=True):
        dim.Clear()
        dim.dim_value = size
    fixed, pre = folder / "cls_fixed.onnx", folder / "cls_pre.onnx"
    onnx.save(model, str(fixed))
    quant_pre_process(str(fixed), str(pre), skip_symbolic_shape=True)
    return str(pre)


class Images(ort_quant.CalibrationDataReader):
    """Calibration feeds: rendered text lines, upright and turned."""

    def __init__(self) -> None:
        self.feeds = iter([{"x": x} for x in cls_images(WORDS, 0)])

    def get_next(self):
        return next(self.feeds, None)




def ort_quantize(source: str, variant: str) -> str:
    fmt, act, per_channel, weight, ops = VARIANTS[variant]
    out = source.replace("_pre.onnx", f"_{variant}.onnx")
    ort_quant.quantize_static(source, out, Images(),
                              quant_format=getattr(ort_quant.QuantFormat, fmt),
                              activation_type=getattr(ort_quant.QuantType, act),
                              weight_type=getattr(ort_quant.QuantType, weight),
                              per_channel=per_channel, op_types_to_quantize=ops,
                              reduce_range=REDUCE_RANGE)   # see tests/_ort.py
    return out


def to_int(path: str):
    graph = ShapeInference({}).apply(import_onnx(path))
    return QdqToInt().apply(graph)


def expose_logits(path: str) -> str:
    """Make the quantized logits (the int8 / uint8 tensor that the final
    Softmax dequantizes in QDQ form, or QLinearSoftmax reads) an output of
    the model; their name."""
    model = onnx.load(path)
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    (softmax,) = [n for n in model.graph.node if n.op_type in ("Softmax", "QLinearSoftmax")]
    quantized = softmax if softmax.op_type == "QLinearSoftmax" else producers[softmax.input[0]]
    assert quantized.op_type in ("QLinearSoftmax", "DequantizeLinear")
    dtype = inits[quantized.input[2]].data_type
    logits = quantized.input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(logits, dtype, None))
    onnx.save(model, path)
    return logits


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ort_quantized_cls_on_npu(cls_float, variant, ort):
    path = ort_quantize(cls_float, variant)
    logits = expose_logits(path)
    qgraph = to_int(path)
    ops = [n.op.qualname for n in qgraph.nodes]
    assert ops.count("heli:QConv") == 53 and "Conv" not in ops
    assert not any(op.startswith(("QLinear", "com.microsoft")) for op in ops)
    share, total = npu_mac_share(qgraph)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 4
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", heli.FallbackWarning)
        # the file as ONNX Runtime wrote it: the npu target fuses it itself
        npu = heli.compile(path, "npu", fallback=("ref",), input_shapes={"x": SHAPE})
    ref = heli.compile(qgraph, "ref")
    name = ref.output_names[0]
    images = cls_images(HELD_OUT, 1)
    for x in images[:3]:                  # the NPU simulator: ~2 s an image
        np.testing.assert_array_equal(npu.run({"x": x})[name], ref.run({"x": x})[name])
    (spec,) = npu.specializations.values()
    assert spec.placement.counts()["npu"] >= 53
    agree, diffs, lsb = 0, [], []
    for x in images:                      # the integer reference = the NPU, bit for bit
        want = session.run(None, {"x": x})
        got = ref.run({"x": x})
        agree += int(got[name].argmax() == want[0].argmax())
        diffs.append(float(np.abs(got[name].astype(np.float64) - want[0]).max()))
        lsb.append(int(np.abs(got[logits].astype(np.int64) - want[1]).max()))
    if variant.startswith("qoperator"):   # the contrib ops as imported, on ref
        as_imported = heli.compile(path, "ref")
        for x in images[:5]:
            got = as_imported.run({"x": x})[name]
            np.testing.assert_allclose(got, session.run(None, {"x": x})[0], rtol=0,
                                       atol=1.01 / 256)   # one LSB of the output
    print(f"\nPP-OCR cls quantized by ORT ({variant}): class agreement with ORT {agree}/"
          f"{len(images)}, quantized logits max |diff| {max(lsb)} LSB, max |probability "
          f"diff| {max(diffs):.4f}; NPU share of MACs {100 * share:.1f}% of {total}")
    assert len(images) >= 20 and agree == len(images)
    # Each requantization rounds the exact product (heli) or ORT's float32 one:
    # 1 LSB apart near ties; 53 layers on, the logits stay within a few LSB
    # (measured 6 for int8, 4 for uint8), and the Softmax of the quantized
    # logits amplifies that on lines where the two classes are close.
    assert max(lsb) <= 8
    assert max(diffs) <= 0.2
    assert share > 0.9


def test_asymmetric_weights_fall_back_with_a_reason(cls_float):
    """uint8 weights with a zero point other than 128 (asymmetric) stay float:
    QdqToInt warns why, and every output stays right (on ``ref``)."""
    fmt = ort_quant.QuantFormat.QDQ
    out = cls_float.replace("_pre.onnx", "_asym.onnx")
    ort_quant.quantize_static(cls_float, out, Images(), quant_format=fmt,
                              activation_type=ort_quant.QuantType.QUInt8,
                              weight_type=ort_quant.QuantType.QUInt8, per_channel=False)
    with pytest.warns(heli.FallbackWarning, match="asymmetric"):
        qgraph = to_int(out)
    share, _ = npu_mac_share(qgraph)
    assert share < 0.5
