"""``quantize``: calibrate a float graph, then rewrite it into QDQ form."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import numpy as np

from heli._errors import InputError
from heli.ir._graph import Graph
from heli.passes import DeadCodeElimination, PassManager, default_pipeline
from heli.quant._calibrate import Calibrator, calibrate, node_key
from heli.quant._calibrate import channel_outputs as linear_outputs
from heli.quant._qdq import QuantizeQDQ


def quantize(
    model: Graph,
    samples: Iterable[Mapping[str, np.ndarray]],
    *,
    calibrator: str | Calibrator = "minmax",
    symmetric_activations: bool = False,
    optimize: bool = True,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: bool = False,
    residual_adds: bool = True,
    channel_outputs: bool | Callable[[str], bool] = False,
    keep_float: Collection[str] = (),
    reduce_range: bool = False,
) -> Graph:
    """An int8 QDQ version of ``model`` calibrated on ``samples`` (feed dicts).

    With ``optimize`` the float graph first goes through the default pass
    pipeline (BatchNorm folded into Conv, MatMul + Add into Gemm, constants
    folded), so the quantized ops are the ones a backend will see;
    ``input_shapes`` binds dynamic input dimensions there.  ``model`` may also
    be anything :func:`heli.compile` takes except a torch module.

    ``outputs=True`` also quantizes the outputs of Conv / MatMul / Gemm (after
    a fused bias, Relu or Clip) and residual Adds, for every reader, as ONNX
    Runtime's QDQ quantizer does: an integer backend then keeps whole chains
    of layers (and the elementwise functions between them, as lookup tables)
    in int8 instead of returning to float after each layer.
    ``residual_adds=False`` leaves the residual Adds in float (in transformers
    the residual stream has outlier channels that per-tensor int8 cannot
    hold); ``channel_outputs=True`` quantizes the outputs of linear layers
    (MatMul / Gemm with constant weights) symmetrically per channel (the last
    axis), which a requantizing integer MatMul produces at no extra cost; a
    predicate on the output's name picks some of them only.

    ``keep_float`` names Conv / MatMul / Gemm / residual Add nodes of the
    optimized graph (by node name, or first output name for an unnamed node)
    to leave in float, e.g. layers whose int8 error the model does not
    tolerate; an integer backend then runs them on a float target.  An
    unknown name is an error.

    ``reduce_range=True`` quantizes weights to 7 bits ([-63, 63]), as ONNX
    Runtime's option of that name: its int8 kernels on x86 CPUs without VNNI
    add pairs of uint8 x int8 products in saturating int16, which 7-bit
    weights cannot overflow.  Heli's own targets do not need it.
    """
    graph = _as_graph(model)
    if optimize:
        input_types = None
        if input_shapes:
            from heli.runtime import bind_shapes

            input_types = bind_shapes(graph, {k: tuple(v) for k, v in input_shapes.items()})
        graph = PassManager(default_pipeline(input_types)).run(graph)
    keep = frozenset(keep_float)
    unknown = sorted(keep - {node_key(n) for n in graph.nodes})
    if unknown:
        raise InputError(f"keep_float names {unknown[0]!r}, which is not a node of the "
                         f"optimized graph (neither a node name nor a first output name).")
    per_channel: list[str] = []
    if outputs and channel_outputs:
        per_channel = [n for n in linear_outputs(graph)
                       if channel_outputs is True or channel_outputs(n)]
    ranges = calibrate(graph, samples, calibrator, outputs=outputs,
                       residual_adds=residual_adds, per_channel=per_channel)
    graph = QuantizeQDQ(ranges, symmetric_activations, outputs, residual_adds, keep,
                        weight_max=63 if reduce_range else 127).apply(graph)
    return DeadCodeElimination().apply(graph)


def _as_graph(model: object) -> Graph:
    if isinstance(model, Graph):
        return model
    from heli.frontend.onnx import import_onnx

    return import_onnx(model)  # type: ignore[arg-type]
