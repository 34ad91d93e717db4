"""Upgrades of old ONNX op forms to the newest ones.

Heli's ops follow the newest opset.  When an op's signature changed over the
opsets (an attribute became an input, a default changed), the importer
rewrites the old form here, so the op library holds one meaning per op.

The table maps an op type to rules ``(first_new_opset, rule)``: a rule applies
to models whose opset is below ``first_new_opset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heli._errors import HeliError, ModelLoadError
from heli.ir._builder import GraphBuilder
from heli.ir._graph import Value
from heli.ir._ops import get_op


@dataclass
class _Node:
    """A node under upgrade: rules edit it in place or emit nodes themselves."""

    builder: GraphBuilder
    op_type: str
    domain: str
    inputs: list[Value | None]
    attrs: dict[str, Any]
    name: str
    output_names: list[str]
    done: bool = field(default=False)

    def const(self, values: Any, dtype: Any = np.int64) -> Value:
        return self.builder.add_constant(np.asarray(values, dtype=dtype),
                                         self.builder.fresh_name(f"{self.name or self.op_type}_c"))

    def move_attr_to_input(self, attr: str, index: int, dtype: Any = np.int64) -> None:
        """Old attribute ``attr`` becomes (optional) input ``index``."""
        if attr in self.attrs:
            value = self.attrs.pop(attr)
            while len(self.inputs) <= index:
                self.inputs.append(None)
            self.inputs[index] = self.const(value, dtype)

    def drop_attrs(self, *names: str) -> None:
        for attr in names:
            self.attrs.pop(attr, None)


Rule = Callable[[_Node], None]


def _axes_to_input(node: _Node) -> None:
    node.move_attr_to_input("axes", 1)


def _split_to_input(node: _Node) -> None:
    node.move_attr_to_input("split", 1)


def _pad_v2(node: _Node) -> None:
    node.attrs.setdefault("pads", ())
    pads = node.attrs.pop("pads")
    value = node.attrs.pop("value", 0.0)
    x = node.inputs[0]
    dtype = x.type.dtype.np if x is not None and getattr(x.type, "dtype", None) else np.float32
    node.inputs[1:] = [node.const(pads), node.const(value, dtype)]


def _clip_v6(node: _Node) -> None:
    x = node.inputs[0]
    dtype = x.type.dtype.np if x is not None and getattr(x.type, "dtype", None) else np.float32
    lo = node.attrs.pop("min", float(np.finfo(np.float32).min))
    hi = node.attrs.pop("max", float(np.finfo(np.float32).max))
    node.inputs[1:] = [node.const(lo, dtype), node.const(hi, dtype)]


def _slice_v1(node: _Node) -> None:
    starts, ends = node.attrs.pop("starts", ()), node.attrs.pop("ends", ())
    axes = node.attrs.pop("axes", None)
    node.inputs[1:] = [node.const(starts), node.const(ends)]
    if axes is not None:
        node.inputs.append(node.const(axes))


def _topk_v1(node: _Node) -> None:
    node.inputs[1:] = [node.const([node.attrs.pop("k")])]


def _dropout_old(node: _Node) -> None:
    node.drop_attrs("is_test", "ratio", "consumed_inputs", "seed")


def _batchnorm_old(node: _Node) -> None:
    node.drop_attrs("spatial", "is_test", "consumed_inputs")


def _drop_consumed_inputs(node: _Node) -> None:
    node.drop_attrs("consumed_inputs")


def _drop_broadcast(node: _Node) -> None:
    # Opset < 7 arithmetic needed broadcast=1 to broadcast; modern ops always do.
    node.drop_attrs("broadcast", "axis", "consumed_inputs")


def _upsample(node: _Node) -> None:
    """Upsample (deprecated) is Resize with asymmetric coordinates."""
    scales = node.attrs.pop("scales", None)
    mode = node.attrs.pop("mode", "nearest")
    if scales is not None:
        node.inputs = [node.inputs[0], None, node.const(scales, np.float32)]
    else:
        node.inputs = [node.inputs[0], None, node.inputs[1]]
    node.op_type = "Resize"
    node.attrs = {
        "mode": "linear" if mode in ("linear", "bilinear") else mode,
        "coordinate_transformation_mode": "asymmetric",
        "nearest_mode": "floor",
    }


def _resize_v10(node: _Node) -> None:
    mode = node.attrs.pop("mode", "nearest")
    node.inputs = [node.inputs[0], None, node.inputs[1]]
    node.attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric",
                  "nearest_mode": "floor"}


def _legacy_softmax(node: _Node) -> None:
    """Before opset 13, Softmax-like ops flattened the input to 2-D at ``axis``."""
    axis = node.attrs.pop("axis", 1)
    x = node.inputs[0]
    rank = getattr(x.type, "rank", None) if x is not None else None
    if rank is not None and axis % max(rank, 1) == rank - 1:
        node.attrs["axis"] = -1
        return
    b = node.builder
    (shape,) = b.add_node("Shape", [x])
    (flat,) = b.add_node("Flatten", [x], {"axis": axis})
    (result,) = b.add_node(node.op_type, [flat], {"axis": -1})
    b.add_node("Reshape", [result, shape], output_names=node.output_names, name=node.name)
    node.done = True


def _dft_v17(node: _Node) -> None:
    """Before opset 20, DFT's axis was an attribute defaulting to 1."""
    node.attrs.setdefault("axis", 1)
    node.move_attr_to_input("axis", 2)


def _roialign_v10(node: _Node) -> None:
    """Before opset 16, RoiAlign had no pixel shift (output_half_pixel)."""
    node.attrs.setdefault("coordinate_transformation_mode", "output_half_pixel")


def _group_norm_v18(node: _Node) -> None:
    """Before opset 21, GroupNormalization's scale and bias held one value per
    group; repeat each over its group's channels (C / num_groups of them)."""
    groups, x, b = node.attrs.get("num_groups"), node.inputs[0], node.builder
    shape = getattr(x.type, "shape", None) if x is not None else None
    channels = shape[1] if shape is not None and len(shape) > 1 else None
    for index in (1, 2):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None or not groups:
            continue
        known = b.constant_value(value)
        if isinstance(channels, int) and known is not None:
            repeated = np.repeat(known.reshape(-1), channels // groups)
            node.inputs[index] = node.const(repeated, known.dtype)
            continue
        (c,) = b.add_node("Shape", [x], {"start": 1, "end": 2})
        (per_group,) = b.add_node("Div", [c, node.const([groups])])
        (column,) = b.add_node("Unsqueeze", [value, node.const([1])])
        (grid,) = b.add_node("Concat", [node.const([groups]), per_group], {"axis": 0})
        (expanded,) = b.add_node("Expand", [column, grid])
        (node.inputs[index],) = b.add_node("Reshape", [expanded, node.const([-1])])


def _scan_v8(node: _Node) -> None:
    """Before opset 9, Scan had a batch axis 0 on every input and output (and a
    first input sequence_lens): run the newer Scan once per batch entry, in a
    Loop whose scan outputs stack the per-entry results along axis 0."""
    from heli._errors import UnsupportedError
    from heli.ir._types import DType, TensorType

    b, values = node.builder, node.inputs[1:]
    if node.inputs and node.inputs[0] is not None:
        raise UnsupportedError(f"Scan node {node.name!r} (opset 8) uses sequence_lens, which "
                               "Heli does not support; re-export the model with opset 9 or newer.")
    attrs = {"body": node.attrs.pop("body"), "num_scan_inputs": node.attrs.pop("num_scan_inputs")}
    if node.attrs.get("directions"):
        attrs["scan_input_directions"] = node.attrs.pop("directions")
    outer = {**b.outer_types, **{k: v.type for k, v in b._values.items()}}
    inner = GraphBuilder(f"{node.name or 'scan'}_per_batch", b.opset, outer)
    index = inner.add_input(inner.fresh_name("batch_index"), TensorType(DType.INT64, ()))
    cond = inner.add_input(inner.fresh_name("cond"), TensorType(DType.BOOL, ()))
    picked = [inner.add_node("Gather", [v, index], {"axis": 0})[0] for v in values]
    results = inner.add_node("Scan", picked, attrs, num_outputs=len(node.output_names))
    (cond_out,) = inner.add_node("Identity", [cond])
    body = inner.build([cond_out, *results])
    (batch,) = b.add_node("Shape", [values[0]], {"start": 0, "end": 1})
    (count,) = b.add_node("Squeeze", [batch, node.const([0])])
    b.add_node("Loop", [count], {"body": body}, name=node.name, output_names=node.output_names)
    node.done = True


def _scatter(node: _Node) -> None:
    node.op_type = "ScatterElements"


def _reduce_upgrade(node: _Node) -> None:
    node.move_attr_to_input("axes", 1)


_REDUCE_18 = ["ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]

# Deprecated op types that the rules rename to a living op.
RENAMED = {"Upsample": "Resize", "Scatter": "ScatterElements"}

RULES: dict[str, list[tuple[int, Rule]]] = {
    "Squeeze": [(13, _axes_to_input)],
    "Unsqueeze": [(13, _axes_to_input)],
    "ReduceSum": [(13, _reduce_upgrade)],
    **{name: [(18, _reduce_upgrade)] for name in _REDUCE_18},
    "Split": [(13, _split_to_input)],
    "Pad": [(11, _pad_v2)],
    "Clip": [(11, _clip_v6)],
    "Slice": [(10, _slice_v1)],
    "TopK": [(10, _topk_v1)],
    "Dropout": [(12, _dropout_old)],
    "BatchNormalization": [(9, _batchnorm_old)],
    "Upsample": [(99, _upsample)],
    "Resize": [(11, _resize_v10)],
    "Softmax": [(13, _legacy_softmax)],
    "LogSoftmax": [(13, _legacy_softmax)],
    "Hardmax": [(13, _legacy_softmax)],
    "Scatter": [(99, _scatter)],
    "Scan": [(9, _scan_v8)],
    "GroupNormalization": [(21, _group_norm_v18)],
    "DFT": [(20, _dft_v17)],
    "RoiAlign": [(16, _roialign_v10)],
    **{name: [(7, _drop_broadcast)] for name in
       ("Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less",
        "PRelu", "Gemm")},
    **{name: [(6, _drop_consumed_inputs)] for name in
       ("Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor",
        "Ceil", "Elu", "LeakyRelu", "Selu", "HardSigmoid", "Clip", "InstanceNormalization",
        "Sum", "Max", "Min", "Mean", "Cast")},
}


def upgrade_node(
    builder: GraphBuilder,
    op_type: str,
    domain: str,
    opset: int,
    inputs: list[Value | None],
    attrs: dict[str, Any],
    *,
    name: str,
    output_names: list[str],
) -> None:
    """Add the node to ``builder``, upgraded to the newest form of its op."""
    node = _Node(builder, op_type, domain, list(inputs), dict(attrs), name, list(output_names))
    if domain in ("", "ai.onnx"):
        for first_new, rule in RULES.get(op_type, []):
            if opset < first_new:
                _apply(rule, node, opset, output_names)
                if node.done:
                    return
    builder.add_node(get_op(node.op_type, node.domain), node.inputs, node.attrs,
                     name=node.name, output_names=node.output_names)


def _apply(rule: Rule, node: _Node, opset: int, output_names: list[str]) -> None:
    """Run an upgrade rule; a malformed old-form node gets a clear error."""
    try:
        rule(node)
    except HeliError:
        raise
    except KeyError as error:
        raise ModelLoadError(
            f"{node.op_type} node {_label(node, output_names)!r} (opset {opset}) lacks the "
            f"attribute {error.args[0]!r}, which its old form requires."
        ) from None
    except (IndexError, ValueError, TypeError, AttributeError, OverflowError) as error:
        raise ModelLoadError(
            f"{node.op_type} node {_label(node, output_names)!r} (opset {opset}) is malformed "
            f"and cannot be upgraded to the current form of the op ({type(error).__name__}: "
            f"{error})."
        ) from None


def _label(node: _Node, output_names: list[str]) -> str:
    return node.name or next((n for n in output_names if n), node.op_type)
