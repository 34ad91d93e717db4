"""ONNX's per-operator backend test cases, run against any target."""

from __future__ import annotations

import contextlib
import functools
import io
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heli._errors import HeliError, UnsupportedError


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one test case on one engine."""

    name: str
    op: str  # the op type the case is about (its first node's type)
    status: str  # "pass", "fail" or "unsupported"
    detail: str = ""
    seconds: float = 0.0


def node_cases(pattern: str | None = None) -> list[Any]:
    """ONNX's generated node test cases (``onnx.backend.test.case``), by name."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            cases = node.collect_testcases(None)
    cases = [c for c in cases if c.kind == "node"]
    if pattern:
        cases = [c for c in cases if pattern in c.name]
    return sorted(cases, key=lambda c: c.name)


def case_op(case: Any) -> str:
    """The op a case tests: the longest ONNX op name its case name starts with."""
    key = case.name.removeprefix("test_").replace("_", "").lower()
    matches = [name for name in _op_names() if key.startswith(name.lower())]
    if matches:
        return max(matches, key=len)
    nodes = case.model.graph.node
    return nodes[0].op_type if nodes else "?"


@functools.cache
def _op_names() -> tuple[str, ...]:
    import onnx

    return tuple({schema.name for schema in onnx.defs.get_all_schemas_with_history()})


Runner = Callable[[Any, list[Any]], list[Any]]


def heli_runner(target: str, debug: bool = True) -> Runner:
    """Runs a case's model on a Heli target.

    ``debug`` verifies the IR after each pass and checks every computed array
    against its inferred type, so wrong type inference fails the case too.
    """
    import heli

    def run(model: Any, inputs: list[Any]) -> list[Any]:
        compiled = heli.compile(model, target=target, fallback=(), debug=debug)
        feeds = dict(zip([i.name for i in _real_inputs(model)], inputs, strict=False))
        result = compiled.run(feeds)
        return [result[name] for name in compiled.output_names]

    return run


def onnxruntime_runner() -> Runner:
    """Runs a case's model on ONNX Runtime (the anchor).

    ORT's Python binding takes exotic element types (bfloat16, float8, int4 ...)
    only as raw bits tagged with their ONNX type, and returns them as raw bits;
    this runner does both conversions so that ORT is judged on its kernels,
    not on its binding.
    """
    import onnxruntime as ort

    def feed(value: Any, type_proto: Any) -> Any:
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray) or type_proto.WhichOneof("value") != "tensor_type":
            return value
        code = type_proto.tensor_type.elem_type
        if value.dtype.kind == "V" or type(value.dtype).__module__.startswith("ml_dtypes") or (
            value.dtype.names is None and value.dtype.type.__module__ == "ml_dtypes"
        ):
            raw = value.view(np.uint16 if value.dtype.itemsize == 2 else np.uint8)
            return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, code)
        return value

    def run(model: Any, inputs: list[Any]) -> list[Any]:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        declared = {i.name: i.type for i in model.graph.input}
        names = [i.name for i in session.get_inputs()]
        feeds = {n: feed(x, declared[n]) for n, x in zip(names, inputs, strict=False)}
        if not all(isinstance(v, ort.OrtValue | np.ndarray) for v in feeds.values()):
            outputs = session.run(None, feeds)  # sequences, optionals: plain run
            return [_from_raw(o, p.type) for o, p in zip(outputs, model.graph.output, strict=False)]
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, value)
        raw_outputs = {}
        for out in model.graph.output:
            backing = _raw_backing(out.type)
            if backing is None:
                binding.bind_output(out.name)
                continue
            raw_outputs[out.name] = backing
            binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                backing, out.type.tensor_type.elem_type))
        session.run_with_iobinding(binding)
        results = binding.get_outputs()
        return [
            _from_raw(raw_outputs[out.name], out.type) if out.name in raw_outputs else value.numpy()
            for out, value in zip(model.graph.output, results, strict=True)
        ]

    return run


_RAW_WIDTH = {16: np.uint16, 17: np.uint8, 18: np.uint8, 19: np.uint8, 20: np.uint8, 24: np.uint8}


def _raw_backing(type_proto: Any) -> np.ndarray | None:
    """A raw buffer for an output of an 8/16-bit exotic type with a static shape."""
    if type_proto.WhichOneof("value") != "tensor_type":
        return None
    tensor = type_proto.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if tensor.elem_type not in _RAW_WIDTH or not tensor.HasField("shape") or None in dims:
        return None
    return np.zeros(dims, _RAW_WIDTH[tensor.elem_type])


def _from_raw(value: Any, type_proto: Any) -> Any:
    """ORT returns exotic element types as raw bits: view them as the real type."""
    if not isinstance(value, np.ndarray) or type_proto.WhichOneof("value") != "tensor_type":
        return value
    from heli.ir._types import DType

    try:
        want = DType.from_onnx(type_proto.tensor_type.elem_type).np
    except Exception:
        return value
    if want != value.dtype and want.itemsize == value.dtype.itemsize and want.kind != "O":
        return value.view(want)
    return value


def _real_inputs(model: Any) -> list[Any]:
    initialized = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initialized]


def run_case(case: Any, runner: Runner, unsupported: tuple[type, ...] = (UnsupportedError,)
             ) -> CaseResult:
    """Run every data set of ``case``; compare with the expected outputs."""
    op = case_op(case)
    start = time.perf_counter()
    try:
        for inputs, expected in case.data_sets:
            inputs, expected = _arrays(inputs), _arrays(expected)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = runner(case.model, list(inputs))
            problem = compare_outputs(expected, got, case.rtol, case.atol)
            if problem:
                return CaseResult(case.name, op, "fail", problem, time.perf_counter() - start)
    except unsupported as error:
        return CaseResult(case.name, op, "unsupported", str(error), time.perf_counter() - start)
    except HeliError as error:
        return CaseResult(case.name, op, "fail", f"{type(error).__name__}: {error}",
                          time.perf_counter() - start)
    except Exception as error:  # an engine's crash is a failed case, not a crashed suite
        return CaseResult(case.name, op, "fail", f"{type(error).__name__}: {error}"[:500],
                          time.perf_counter() - start)
    return CaseResult(case.name, op, "pass", "", time.perf_counter() - start)


def _arrays(values: Sequence[Any]) -> list[Any]:
    """Case data as arrays: some cases store TensorProtos (float8, int4 ...)."""
    from onnx import TensorProto, numpy_helper

    return [numpy_helper.to_array(v) if isinstance(v, TensorProto) else v for v in values]


def compare_outputs(expected: Sequence[Any], got: Sequence[Any], rtol: float, atol: float) -> str:
    """'' if ``got`` matches ``expected`` (as ONNX's backend tests judge), else why not."""
    if len(got) != len(expected):
        return f"expected {len(expected)} outputs, got {len(got)}"
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        problem = _compare(want, have, rtol, atol)
        if problem:
            return f"output {index}: {problem}"
    return ""


def _compare(want: Any, have: Any, rtol: float, atol: float) -> str:
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return f"expected a sequence of {len(want)} tensors, got {type(have).__name__}"
        for w, h in zip(want, have, strict=True):
            problem = _compare(w, h, rtol, atol)
            if problem:
                return problem
        return ""
    if want is None:
        return "" if have is None else "expected an empty optional"
    want = np.asarray(want)
    if have is None:
        return "got no value"
    have = np.asarray(have)
    if want.dtype != have.dtype:
        return f"dtype {have.dtype} != expected {want.dtype}"
    if want.shape != have.shape:
        return f"shape {list(have.shape)} != expected {list(want.shape)}"
    if want.dtype == object:
        return "" if np.array_equal(want, have) else "string values differ"
    if want.dtype.kind not in "fc" and want.dtype.kind not in "iub":
        w, h = want.astype(np.float64), have.astype(np.float64)  # ml_dtypes floats
    else:
        w, h = want, have
    try:
        np.testing.assert_allclose(h, w, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as error:
        lines = [line for line in str(error).splitlines() if "Max" in line or "Mismatch" in line]
        return "values differ: " + "; ".join(lines)
    return ""


def run_cases(cases: Iterable[Any], runner: Runner,
              progress: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    results = []
    for case in cases:
        result = run_case(case, runner)
        results.append(result)
        if progress:
            progress(result)
    return results
