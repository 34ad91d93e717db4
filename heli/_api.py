"""``heli.compile``: frontend → passes → partition → per-target compile."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from heli._errors import FallbackWarning, HeliError, InputError
from heli.frontend.onnx import import_onnx
from heli.ir._graph import Graph
from heli.ir._types import TensorType
from heli.partition import node_label, partition
from heli.passes import PassManager, ShapeInference, default_pipeline
from heli.runtime import CompiledModel, Placement, Specialization, Stage
from heli.target import CompileOptions, Target, get_target

__all__ = ["FallbackWarning", "compile"]


def compile(
    model: Any,
    target: str = "ref",
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: Sequence[Any] | None = None,
    fallback: Sequence[str] = ("cpu", "ref"),
    debug: bool = False,
) -> CompiledModel:
    """Compile ``model`` for ``target``.

    ``model`` is a path to an ONNX file, ONNX bytes, an ``onnx.ModelProto``,
    a Heli :class:`Graph`, or a ``torch.nn.Module`` (with ``example_inputs``).
    ``input_shapes`` binds dynamic dimensions now; otherwise each new feed
    shape compiles (and caches) a specialization on first use.

    Each node runs on the first of ``target`` and then the ``fallback``
    targets that supports it: by default what ``target`` refuses runs as
    generated C (``cpu``, which refuses everything where no C compiler is
    found) and what ``cpu`` refuses on ``ref``.  ``fallback=("ref",)`` puts
    every refused node on the float golden model; ``fallback=()`` turns
    fallback off (an unsupported node is then an error).
    """
    debug = debug or os.environ.get("HELI_VERIFY", "") not in ("", "0")
    graph = _to_graph(model, example_inputs)
    targets = [get_target(target)] + [get_target(t) for t in fallback if t != target]

    def specialize(graph: Graph, input_types: Mapping[str, TensorType]) -> Specialization:
        manager = PassManager(default_pipeline(input_types), verify=debug)
        if type(targets[0]).prepare is not Target.prepare:   # the target rewrites first
            graph = targets[0].prepare(ShapeInference(dict(input_types)).apply(graph))
        optimized = manager.run(graph)
        segments, refused = partition(optimized, targets)
        if refused and targets[0].name != "ref":
            shown = ", ".join(f"{k} ({v})" for k, v in list(refused.items())[:10])
            more = f" and {len(refused) - 10} more" if len(refused) > 10 else ""
            warnings.warn(
                f"{len(refused)} node(s) fall back from {target!r}: {shown}{more}.",
                FallbackWarning, stacklevel=4,
            )
        options = CompileOptions(debug=debug)
        stages = [Stage(seg.target.name, seg.graph, seg.target.compile(seg.graph, options))
                  for seg in segments]
        placement = Placement(
            tuple((seg.target.name, tuple(node_label(n) for n in seg.nodes)) for seg in segments),
            refused,
        )
        times = {r.name: r.seconds for r in manager.records}
        return Specialization(optimized, stages, placement, times)

    compiled_model = CompiledModel(graph, target, specialize)
    if input_shapes is not None:
        if not isinstance(input_shapes, Mapping):
            raise InputError(f"input_shapes must map input names to shapes, not "
                             f"{type(input_shapes).__name__!r}.")
        compiled_model.specialize(dict(input_shapes))  # bind_shapes checks each shape
    return compiled_model


def _to_graph(model: Any, example_inputs: Sequence[Any] | None) -> Graph:
    if isinstance(model, Graph):
        return model
    if _is_torch_module(model):
        from heli.frontend.torch import export_torch

        return import_onnx(export_torch(model, example_inputs))
    if isinstance(model, str | os.PathLike | bytes) or type(model).__name__ == "ModelProto":
        return import_onnx(model)
    raise HeliError(
        f"heli.compile() takes an ONNX path, bytes, ModelProto, Graph or torch.nn.Module, "
        f"not {type(model).__name__!r}."
    )


def _is_torch_module(model: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module"
               for c in type(model).__mro__)
