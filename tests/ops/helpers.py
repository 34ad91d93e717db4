"""Shared helpers of the op tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from heli.ir._builder import GraphBuilder
from heli.ir._ops import get_op
from heli.ir._types import Type


def infer_types(op_name: str, inputs: Sequence[Any], attrs: Mapping[str, Any] | None = None,
                num_outputs: int = 1, domain: str = "") -> list[Type | None]:
    """Output types of one node: arrays become constants, types graph inputs,
    ``None`` an omitted optional input."""
    b = GraphBuilder()
    values = []
    for i, item in enumerate(inputs):
        if item is None:
            values.append(None)
        elif isinstance(item, np.ndarray):
            values.append(b.add_constant(item, f"c{i}"))
        else:
            values.append(b.add_input(f"in{i}", item))
    names = [f"out{i}" for i in range(num_outputs)]
    outputs = b.add_node(get_op(op_name, domain), values, attrs or {}, output_names=names)
    return [o.type for o in outputs]
