"""A readable text form of graphs::

    graph main(%x: float32[N, 3, 224, 224]) -> (%y) {
      const %w: float32[64, 3, 7, 7]
      %c = Conv(%x, %w) {pads=[3, 3, 3, 3], strides=[2, 2]}  : float32[N, 64, 112, 112]
      return %y
    }
"""

from __future__ import annotations

from typing import Any

import numpy as np

from heli.ir._graph import Graph, Node


def format_graph(graph: Graph, indent: str = "") -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    outs = ", ".join(f"%{v.name}" for v in graph.outputs)
    lines = [f"{indent}graph {graph.name}({ins}) -> ({outs}) {{"]
    for name, array in graph.constants.items():
        lines.append(f"{indent}  const %{name}: {_array_type(array)}{_preview(array)}")
    for node in graph.nodes:
        lines.extend(format_node(node, indent + "  "))
    lines.append(f"{indent}  return {outs}")
    lines.append(f"{indent}}}")
    return "\n".join(lines)


def format_node(node: Node, indent: str = "") -> list[str]:
    outs = ", ".join(f"%{o.name}" if o is not None else "_" for o in node.outputs)
    args = ", ".join(f"%{v.name}" if v is not None else "_" for v in node.inputs)
    simple = {k: v for k, v in node.attrs.items() if not _is_graph(v)}
    attrs = ""
    if simple:
        attrs = " {" + ", ".join(f"{k}={_attr(v)}" for k, v in sorted(simple.items())) + "}"
    types = ", ".join(str(o.type) for o in node.outputs if o is not None)
    label = f"  # {node.name}" if node.name and node.name not in outs else ""
    lines = [f"{indent}{outs} = {node.op.qualname}({args}){attrs}  : {types}{label}"]
    for key, value in sorted(node.attrs.items()):
        graphs = value if isinstance(value, tuple) else (value,)
        for sub in graphs:
            if isinstance(sub, Graph):
                lines.append(f"{indent}  {key}:")
                lines.append(format_graph(sub, indent + "    "))
    return lines


def _is_graph(value: Any) -> bool:
    return isinstance(value, Graph) or (
        isinstance(value, tuple) and any(isinstance(v, Graph) for v in value)
    )


def _attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"tensor<{_array_type(value)}>{_preview(value)}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_attr(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def _array_type(array: np.ndarray) -> str:
    from heli.ir._types import tensor_type_of

    return str(tensor_type_of(array))


def _preview(array: np.ndarray) -> str:
    if array.size > 8:
        return ""
    return " = " + np.array2string(np.asarray(array).reshape(-1), separator=", ",
                                   threshold=8).replace("\n", "")
