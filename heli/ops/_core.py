"""Ops the IR itself relies on (Identity, Constant)."""

from __future__ import annotations

import numpy as np

from heli.ir._ops import Attr, op
from heli.ir._types import tensor_type_of
from heli.ops._infer import same_as_input


@op("Identity", infer=same_as_input(0), inputs=1)
def identity(x):
    return (x,)  # a 1-tuple, so that a sequence (a list) stays one output


def _constant_infer(ctx):
    value = ctx.attrs["value"]
    return [tensor_type_of(value)] if value is not None else [None]


@op("Constant", infer=_constant_infer, inputs=0, attrs={"value": Attr.TENSOR(None)})
def constant(*, value):
    """A constant tensor (the importer turns these into graph constants)."""
    return np.asarray(value)
