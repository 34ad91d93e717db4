"""Calibration: run the float model on the ``ref`` target and record the range
of every tensor that quantization will need (the float inputs of Conv, MatMul
and Gemm).

The observed tensors are made extra outputs of a copy of the graph, so one
ordinary run of :class:`heli.targets.ref.GraphRunner` per sample yields them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from heli._errors import InputError
from heli.ir._graph import Graph, Node
from heli.ir._types import DType, TensorType, tensor_type_of
from heli.targets.ref import GraphRunner

# The ops whose inputs are quantized, and which input of each holds weights
# (quantized per output channel when constant).
QUANTIZED_OPS = {"Conv": 1, "MatMul": 1, "Gemm": 1}


class Calibrator:
    """Collects values of tensors and turns them into ``(low, high)`` ranges."""

    name = "base"

    def observe(self, name: str, array: np.ndarray) -> None:
        raise NotImplementedError

    def ranges(self) -> dict[str, tuple[float, float]]:
        raise NotImplementedError


class MinMaxCalibrator(Calibrator):
    """The smallest and largest value seen over all samples."""

    name = "minmax"

    def __init__(self) -> None:
        self._low: dict[str, float] = {}
        self._high: dict[str, float] = {}

    def observe(self, name: str, array: np.ndarray) -> None:
        finite = _finite(array)
        if finite.size == 0:
            return
        low, high = float(finite.min()), float(finite.max())
        self._low[name] = min(low, self._low.get(name, low))
        self._high[name] = max(high, self._high.get(name, high))

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {n: (self._low[n], self._high[n]) for n in self._low}


class PercentileCalibrator(Calibrator):
    """The ``100 - percentile`` and ``percentile`` percentiles of all values
    seen, so that a few outliers do not stretch the range (and coarsen the
    scale) of every other value.  At most ``max_values`` values per sample
    and tensor are kept (an evenly strided subset), to bound memory."""

    name = "percentile"

    def __init__(self, percentile: float = 99.99, max_values: int = 1 << 20) -> None:
        if not 50.0 < percentile <= 100.0:
            raise InputError(f"The percentile {percentile!r} is not in (50, 100].")
        self.percentile = float(percentile)
        self.max_values = max_values
        self._values: dict[str, list[np.ndarray]] = {}

    def observe(self, name: str, array: np.ndarray) -> None:
        finite = _finite(array)
        if finite.size > self.max_values:
            finite = finite[:: -(-finite.size // self.max_values)]
        if finite.size:
            self._values.setdefault(name, []).append(finite)

    def ranges(self) -> dict[str, tuple[float, float]]:
        result = {}
        for name, chunks in self._values.items():
            values = np.concatenate(chunks)
            low, high = np.percentile(values, [100.0 - self.percentile, self.percentile])
            result[name] = (float(low), float(high))
        return result


def _finite(array: np.ndarray) -> np.ndarray:
    flat = np.asarray(array, dtype=np.float64).reshape(-1)
    return flat[np.isfinite(flat)]


def make_calibrator(kind: str | Calibrator) -> Calibrator:
    """A calibrator from its name (``"minmax"`` or ``"percentile"``)."""
    if isinstance(kind, Calibrator):
        return kind
    if kind == "minmax":
        return MinMaxCalibrator()
    if kind == "percentile":
        return PercentileCalibrator()
    raise InputError(f"Unknown calibrator {kind!r}; choose 'minmax' or 'percentile'.")


def _is_float32(graph_types: Mapping[str, object], name: str) -> bool:
    vtype = graph_types.get(name)
    return isinstance(vtype, TensorType) and vtype.dtype is DType.FLOAT32


def quantizable_nodes(graph: Graph) -> list[Node]:
    """The Conv / MatMul / Gemm nodes whose two operands are float32."""
    types = {name: v.type for name, v in graph.values().items()}
    types.update({name: tensor_type_of(a) for name, a in graph.constants.items()})
    found = []
    for node in graph.nodes:
        if node.op.domain or node.op.name not in QUANTIZED_OPS:
            continue
        operands = node.inputs[:2]
        if all(v is not None and _is_float32(types, v.name) for v in operands):
            found.append(node)
    return found


# Unary ops that an integer backend fuses into the op before them (as a clip),
# so an output is quantized after them, not between.
_FUSED_TAIL = ("Relu", "Clip")


def _float_adds(graph: Graph) -> list[Node]:
    """Add nodes of two non-constant float32 tensors of the same static shape
    (residual connections): quantized as integer adds with ``outputs=True``."""
    found = []
    for node in graph.nodes:
        if node.op.domain or node.op.name != "Add" or len(node.inputs) != 2:
            continue
        a, b = node.inputs
        if any(v is None or v.name in graph.constants or not isinstance(v.type, TensorType)
               or v.type.dtype is not DType.FLOAT32 or v.type.shape is None for v in (a, b)):
            continue
        if a.type.shape == b.type.shape:
            found.append(node)
    return found


def quantized_outputs(graph: Graph, residual_adds: bool = True,
                      keep_float: Collection[str] = ()) -> list[str]:
    """With ``outputs=True`` quantization: the values quantized after each
    Conv / MatMul / Gemm and (with ``residual_adds``) residual Add — its
    output, or, when that is read only by a chain of Add-of-a-constant (a
    bias), Relu or Clip, the end of that chain — except graph outputs and
    the outputs of the nodes named in ``keep_float``."""
    nodes = [*quantizable_nodes(graph), *(_float_adds(graph) if residual_adds else [])]
    return _chain_ends(graph, [n for n in nodes if node_key(n) not in keep_float])


def node_key(node: Node) -> str:
    """How ``keep_float`` names a node: its name, or its first output's if it has none."""
    return node.name or (node.outputs[0].name if node.outputs and node.outputs[0] else "")


def channel_outputs(graph: Graph) -> list[str]:
    """The :func:`quantized_outputs` of MatMul / Gemm with constant weights
    (linear layers): quantized per channel (the last axis) with
    ``channel_outputs=True``, so that a few outlier channels (as in the FFN
    outputs of BERT-like transformers) do not coarsen the scale of all others."""
    linear = [n for n in quantizable_nodes(graph) if n.op.name in ("MatMul", "Gemm")
              and n.inputs[1].name in graph.constants]
    return _chain_ends(graph, linear)


def _chain_ends(graph: Graph, nodes: list[Node]) -> list[str]:
    users = graph.users()
    graph_outputs = {v.name for v in graph.outputs}
    names: list[str] = []
    for node in nodes:
        value = node.outputs[0]
        if value is None:
            continue
        while value.name not in graph_outputs:
            readers = users.get(value.name, [])
            if len(readers) != 1 or readers[0].op.domain:
                break
            reader = readers[0]
            if reader.op.name == "Add" and any(v is not None and v.name in graph.constants
                                               for v in reader.inputs):
                value = reader.outputs[0]
            elif reader.op.name in _FUSED_TAIL and all(
                    v is None or v.name in graph.constants for v in reader.inputs[1:]):
                value = reader.outputs[0]
            else:
                break
        if value.name not in graph_outputs and value.name not in names:
            names.append(value.name)
    return names


def activations_to_observe(graph: Graph, outputs: bool = False,
                           residual_adds: bool = True) -> list[str]:
    """Names of the non-constant operands of the quantizable nodes, in order
    (with ``outputs``, also :func:`quantized_outputs` and, with
    ``residual_adds``, the operands of residual Adds)."""
    names: list[str] = []
    adds = _float_adds(graph) if outputs and residual_adds else []
    nodes = [*quantizable_nodes(graph), *adds]
    for node in nodes:
        for value in node.inputs[:2]:
            if value.name not in graph.constants and value.name not in names:
                names.append(value.name)
    if outputs:
        names += [n for n in quantized_outputs(graph, residual_adds) if n not in names]
    return names


def calibrate(
    graph: Graph,
    samples: Iterable[Mapping[str, np.ndarray]],
    calibrator: str | Calibrator = "minmax",
    names: Sequence[str] | None = None,
    outputs: bool = False,
    residual_adds: bool = True,
    per_channel: Sequence[str] = (),
) -> dict[str, tuple]:
    """Run ``graph`` on each feed of ``samples`` (on ``ref``) and return the
    range of each tensor in ``names`` (default: :func:`activations_to_observe`):
    ``(low, high)`` floats, or for the names in ``per_channel`` the smallest and
    largest value of each channel of the last axis, as two float64 arrays."""
    calib = make_calibrator(calibrator)
    names = list(activations_to_observe(graph, outputs, residual_adds) if names is None
                 else names)
    channels = {n: ChannelMinMax() for n in per_channel}
    names += [n for n in channels if n not in names]
    values = graph.values()
    missing = [n for n in names if n not in values]
    if missing:
        raise InputError(f"The graph has no value {missing[0]!r} to observe.")
    observed = graph.replace(outputs=tuple(values[n] for n in names))
    runner = GraphRunner(observed)
    input_names = [v.name for v in graph.inputs]
    count = 0
    for feeds in samples:
        unknown = sorted(set(feeds) - set(input_names))
        absent = [n for n in input_names if n not in feeds]
        if unknown or absent:
            raise InputError(
                f"Calibration sample {count} has inputs {sorted(feeds)!r}, but the model's "
                f"inputs are {input_names!r}."
            )
        for name, array in zip(names, runner.run(feeds), strict=True):
            if name in channels:
                channels[name].observe(array)
            else:
                calib.observe(name, array)
        count += 1
    if count == 0:
        raise InputError("There are no calibration samples.")
    result: dict[str, tuple] = dict(calib.ranges())
    result.update({n: c.range() for n, c in channels.items() if c.low is not None})
    return result


class ChannelMinMax:
    """The smallest and largest value of each channel (the last axis)."""

    def __init__(self) -> None:
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    def observe(self, array: np.ndarray) -> None:
        flat = np.asarray(array, np.float64).reshape(-1, array.shape[-1])
        flat = np.where(np.isfinite(flat), flat, 0.0)
        low, high = flat.min(axis=0), flat.max(axis=0)
        self.low = low if self.low is None else np.minimum(self.low, low)
        self.high = high if self.high is None else np.maximum(self.high, high)

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        return self.low, self.high
