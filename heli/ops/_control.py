"""control ops: If, Loop, Scan and SequenceMap.

Their bodies are :class:`heli.ir.Graph` attributes that may read values of
the enclosing graphs by name; the reference functions run them with
``ctx.run_graph``.  Output types come from the bodies' output types: the
importer gives those (inferred, or as the model declares them), and a body
whose outputs are untyped is re-inferred from the node's input types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from heli._errors import HeliError
from heli.ir._graph import Graph
from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, SequenceType, TensorType, Type
from heli.ops._infer import normalize_axis, unknown_dim
from heli.ops._sequence import localize, loosen, merge_types, type_symbols

# -- shared helpers -----------------------------------------------------------


def _visible_symbols(ctx: InferContext) -> set[str]:
    return type_symbols(ctx.outer_types.values()) | type_symbols(ctx.input_types)


def _body_output_types(
    ctx: InferContext, body: Graph, input_types: Sequence[Type | None]
) -> list[Type | None]:
    """The body's output types, localized to the node's scope.

    When some output is untyped (a body whose inputs the model left untyped),
    the body is re-inferred with ``input_types`` for its untyped inputs.
    """
    types = [v.type for v in body.outputs]
    if any(t is None for t in types):
        from heli.ir._builder import rebuild

        given = {v.name: t for v, t in zip(body.inputs, input_types, strict=False)
                 if v.type is None and t is not None}
        try:
            again = rebuild(body, input_types=given, outer_types=ctx.outer_types)
            types = [t if t is not None else v.type for t, v in zip(types, again.outputs,
                                                                   strict=True)]
        except HeliError:
            pass  # keep what the model declared
    visible = _visible_symbols(ctx)
    return [localize(t, visible) for t in types]


def _carried_type(initial: Type | None, out: Type | None) -> Type | None:
    """A loop-carried value's final type: its initial value's or the body's."""
    if out is None:
        return loosen(initial)
    if initial is None:
        return out
    merged = merge_types(initial, out)
    return merged if merged is not None else out


def _as_tuple(values: Sequence[Any]) -> tuple[Any, ...]:
    # A tuple, so that a single sequence output is not read as several outputs.
    return tuple(values)


def _empty_scan_output(t: Type | None) -> np.ndarray:
    """A scan output of zero iterations, shaped as its type says (unknown dims 0)."""
    if isinstance(t, TensorType) and t.shape is not None:
        return np.zeros(tuple(d if isinstance(d, int) else 0 for d in t.shape), dtype=t.dtype.np)
    return np.zeros((0,), dtype=t.dtype.np if isinstance(t, TensorType) else np.float32)


def _stack(values: list[np.ndarray], axis: int, what: str) -> np.ndarray:
    shapes = {v.shape for v in values}
    if len(shapes) > 1:
        raise ValueError(
            f"The {what} has different shapes in different iterations "
            f"({sorted(list(s) for s in shapes)!r}), so they cannot be stacked."
        )
    return np.stack(values, axis=axis)


def _truth(value: Any, what: str) -> bool:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"The {what} must hold one value, but it has shape {list(array.shape)!r}.")
    return bool(array.reshape(()))


# -- If -----------------------------------------------------------------------


def _if_infer(ctx: InferContext) -> list[Type | None]:
    then_branch, else_branch = ctx.attrs["then_branch"], ctx.attrs["else_branch"]
    for name, branch in (("then_branch", then_branch), ("else_branch", else_branch)):
        if len(branch.outputs) != ctx.num_outputs:
            raise ctx.error(
                f"{name} has {len(branch.outputs)} outputs but the node has {ctx.num_outputs}."
            )
    visible = _visible_symbols(ctx)
    then_types = [localize(v.type, visible) for v in then_branch.outputs]
    else_types = [localize(v.type, visible) for v in else_branch.outputs]
    cond = ctx.const(0)
    if cond is not None and cond.size == 1:  # a constant condition picks the branch now
        return then_types if bool(cond.reshape(())) else else_types
    result = []
    for index, (a, b) in enumerate(zip(then_types, else_types, strict=True)):
        merged = merge_types(a, b)
        if merged is None and a is not None and b is not None:
            raise ctx.error(f"output {index} has type {a} in then_branch but {b} in else_branch.")
        result.append(merged)
    return result


@op("If", infer=_if_infer, inputs=1, outputs=(1, None),
    attrs={"then_branch": Attr.GRAPH(), "else_branch": Attr.GRAPH()})
def if_(cond, *, then_branch, else_branch, ctx):
    """Run ``then_branch`` if ``cond`` is true, else ``else_branch``; return its outputs."""
    branch = then_branch if _truth(cond, "If condition") else else_branch
    outputs = ctx.run_graph(branch, [])
    if len(outputs) != ctx.num_outputs:
        raise ValueError(f"The branch gave {len(outputs)} outputs; the node has "
                         f"{ctx.num_outputs}.")
    return _as_tuple(outputs)


# -- Loop ---------------------------------------------------------------------


def _static_trip_count(ctx: InferContext, body: Graph) -> int | None:
    """The number of iterations when it is known now: M is constant and the
    loop condition is constant true and passed through unchanged by the body."""
    if ctx.has_input(1):
        cond = ctx.const(1)
        if cond is None or cond.size != 1:
            return None
        if not bool(cond.reshape(())):
            return 0
    m = ctx.const(0) if ctx.has_input(0) else None
    if m is None or m.size != 1:
        return None
    cond_out, cond_in = body.outputs[0].name, body.inputs[1].name
    if cond_out in body.constants:
        passes = bool(np.asarray(body.constants[cond_out]).all())
    else:
        producer = body.producers().get(cond_out)
        passes = cond_out == cond_in or (
            producer is not None and producer.op.name == "Identity"
            and producer.inputs[0] is not None and producer.inputs[0].name == cond_in
        )
    return max(int(m.reshape(())), 0) if passes else None


def _loop_infer(ctx: InferContext) -> list[Type | None]:
    body: Graph = ctx.attrs["body"]
    n = max(len(ctx.input_types) - 2, 0)
    if len(body.inputs) != 2 + n:
        raise ctx.error(
            f"the body takes {len(body.inputs)} inputs, but a Loop with {n} loop-carried "
            f"value(s) passes it {2 + n} (iteration number, condition, values)."
        )
    k = len(body.outputs) - 1 - n
    if k < 0 or ctx.num_outputs > n + k:
        raise ctx.error(
            f"the body gives {len(body.outputs)} outputs, which cannot be a condition, {n} "
            f"loop-carried value(s) and the node's {ctx.num_outputs - n} scan output(s)."
        )
    initial = list(ctx.input_types[2:2 + n])
    body_inputs = [TensorType(DType.INT64, ()), TensorType(DType.BOOL, ())]
    body_inputs += [loosen(t) for t in initial]
    outs = _body_output_types(ctx, body, body_inputs)
    result = [_carried_type(t, out) for t, out in zip(initial, outs[1:1 + n], strict=True)]
    trips = _static_trip_count(ctx, body)
    for out in outs[1 + n:]:
        if not isinstance(out, TensorType):
            result.append(None)
        elif out.shape is None:
            result.append(TensorType(out.dtype, None))
        else:
            result.append(TensorType(out.dtype, (trips if trips is not None else unknown_dim(),)
                                     + out.shape))
    return result[:ctx.num_outputs]


# M and cond are optional; the builder drops omitted trailing operands, so a
# Loop without loop-carried values may have fewer than two.
@op("Loop", infer=_loop_infer, inputs=(0, None), outputs=(1, None),
    attrs={"body": Attr.GRAPH()})
def loop(m=None, cond=None, *initial, body, ctx):
    """Run ``body`` while the iteration count is below ``m`` (if given) and the
    condition holds; the body gets (iteration, condition, loop-carried values)
    and gives (condition, loop-carried values, scan outputs).  Returns the final
    loop-carried values and the scan outputs stacked along a new first axis."""
    n = len(initial)
    max_trips = int(np.asarray(m).reshape(())) if m is not None else None
    going = _truth(cond, "Loop condition") if cond is not None else True
    state = list(initial)
    k = len(body.outputs) - 1 - n
    scans: list[list[np.ndarray]] = [[] for _ in range(k)]
    trip = 0
    while going and (max_trips is None or trip < max_trips):
        outputs = ctx.run_graph(body, [np.array(trip, dtype=np.int64), np.array(True), *state])
        going = _truth(outputs[0], "Loop body's condition output")
        state = list(outputs[1:1 + n])
        for column, value in zip(scans, outputs[1 + n:], strict=True):
            column.append(value)
        trip += 1
    results = state
    for index, column in enumerate(scans[:ctx.num_outputs - n]):
        if column:
            results.append(_stack(column, 0, f"Loop scan output {index}"))
        else:
            results.append(_empty_scan_output(ctx.output_types[n + index]))
    return _as_tuple(results)


# -- Scan ---------------------------------------------------------------------


def _axes(ctx: InferContext, name: str, count: int) -> tuple[int, ...]:
    given = ctx.attrs[name]
    if given is None:
        return (0,) * count
    if len(given) != count:
        raise ctx.error(f"{name} has {len(given)} entries but there are {count} such values.")
    return tuple(given)


def _scan_infer(ctx: InferContext) -> list[Type | None]:
    body: Graph = ctx.attrs["body"]
    m = ctx.attrs["num_scan_inputs"]
    n = len(ctx.input_types) - m
    if m < 1 or n < 0:
        raise ctx.error(f"num_scan_inputs is {m}, but the node has {len(ctx.input_types)} inputs.")
    if len(body.inputs) != n + m:
        raise ctx.error(f"the body takes {len(body.inputs)} inputs but gets {n + m}.")
    k = len(body.outputs) - n
    if k < 0 or ctx.num_outputs != n + k:
        raise ctx.error(
            f"the body gives {len(body.outputs)} outputs but the node has {ctx.num_outputs} "
            f"with {n} state value(s)."
        )
    in_axes = _axes(ctx, "scan_input_axes", m)
    _axes(ctx, "scan_input_directions", m)
    out_axes = _axes(ctx, "scan_output_axes", k)
    _axes(ctx, "scan_output_directions", k)
    steps: Any = None
    slice_types: list[Type | None] = []
    for t, axis in zip(ctx.input_types[n:], in_axes, strict=True):
        if isinstance(t, TensorType) and t.shape is not None:
            axis = normalize_axis(axis, len(t.shape), ctx, "scan input axis")
            if steps is None or not isinstance(steps, int):
                steps = t.shape[axis]
            slice_types.append(TensorType(t.dtype, t.shape[:axis] + t.shape[axis + 1:]))
        else:
            slice_types.append(loosen(t))
    initial = list(ctx.input_types[:n])
    outs = _body_output_types(ctx, body, [loosen(t) for t in initial] + slice_types)
    result = [_carried_type(t, out) for t, out in zip(initial, outs[:n], strict=True)]
    for out, axis in zip(outs[n:], out_axes, strict=True):
        if not isinstance(out, TensorType):
            result.append(None)
            continue
        if out.shape is None:
            result.append(TensorType(out.dtype, None))
            continue
        axis = normalize_axis(axis, len(out.shape) + 1, ctx, "scan output axis")
        dims = list(out.shape)
        dims.insert(axis, steps if steps is not None else unknown_dim())
        result.append(TensorType(out.dtype, tuple(dims)))
    return result


@op("Scan", infer=_scan_infer, inputs=(1, None), outputs=(1, None),
    attrs={"body": Attr.GRAPH(), "num_scan_inputs": Attr.INT(),
           "scan_input_axes": Attr.INTS(None), "scan_input_directions": Attr.INTS(None),
           "scan_output_axes": Attr.INTS(None), "scan_output_directions": Attr.INTS(None)})
def scan(*inputs, body, num_scan_inputs, scan_input_axes, scan_input_directions,
         scan_output_axes, scan_output_directions, ctx):
    """Run ``body`` once per slice of the scan inputs (along their scan axes,
    reversed where the direction is 1), threading the state values through.
    Returns the final states and the per-step scan outputs stacked along their
    scan axes (in reverse step order where the output direction is 1)."""
    m = num_scan_inputs
    n = len(inputs) - m
    xs = inputs[n:]
    in_axes = scan_input_axes or (0,) * m
    in_dirs = scan_input_directions or (0,) * m
    views, lengths = [], set()
    for index, (x, axis) in enumerate(zip(xs, in_axes, strict=True)):
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(f"Scan input axis {axis} is out of range for scan input {index} "
                             f"of rank {x.ndim}.")
        moved = np.moveaxis(x, axis, 0)  # a view with the scan axis first
        views.append(moved)
        lengths.add(moved.shape[0])
    if len(lengths) != 1:
        raise ValueError(f"The scan inputs have different lengths {sorted(lengths)!r} along "
                         "their scan axes.")
    steps = lengths.pop()
    k = len(body.outputs) - n
    out_axes = scan_output_axes or (0,) * k
    out_dirs = scan_output_directions or (0,) * k
    state = list(inputs[:n])
    columns: list[list[np.ndarray]] = [[] for _ in range(k)]
    for t in range(steps):
        slices = [v[steps - 1 - t] if d else v[t] for v, d in zip(views, in_dirs, strict=True)]
        outputs = ctx.run_graph(body, state + slices)
        state = list(outputs[:n])
        for column, value in zip(columns, outputs[n:], strict=True):
            column.append(np.asarray(value))
    results = state
    for index, (column, axis, direction) in enumerate(zip(columns, out_axes, out_dirs,
                                                          strict=True)):
        if not column:
            results.append(_empty_scan_output(ctx.output_types[n + index]))
            continue
        rank = column[0].ndim + 1
        if not -rank <= axis < rank:
            raise ValueError(f"Scan output axis {axis} is out of range for rank {rank}.")
        if direction:
            column.reverse()
        results.append(_stack(column, axis % rank, f"Scan output {index}"))
    return _as_tuple(results)


# -- SequenceMap --------------------------------------------------------------


def _sequence_map_infer(ctx: InferContext) -> list[Type | None]:
    body: Graph = ctx.attrs["body"]
    if len(body.inputs) != len(ctx.input_types):
        raise ctx.error(f"the body takes {len(body.inputs)} inputs but the node has "
                        f"{len(ctx.input_types)}.")
    if len(body.outputs) != ctx.num_outputs:
        raise ctx.error(f"the body gives {len(body.outputs)} outputs but the node has "
                        f"{ctx.num_outputs}.")
    if ctx.input_types and ctx.input_types[0] is not None and not isinstance(
            ctx.input_types[0], SequenceType):
        raise ctx.error(f"input 0 must be a sequence, but it has type {ctx.input_types[0]}.")
    items = [t.elem if isinstance(t, SequenceType) else t for t in ctx.input_types]
    outs = _body_output_types(ctx, body, items)
    return [SequenceType(out) for out in outs]


@op("SequenceMap", infer=_sequence_map_infer, inputs=(1, None), outputs=(1, None),
    attrs={"body": Attr.GRAPH()})
def sequence_map(sequence, *extra, body, ctx):
    """Run ``body`` on each position of the input sequences (tensor inputs are
    passed whole every time); each output collects into a sequence."""
    items = list(sequence)
    for index, value in enumerate(extra, start=1):
        if isinstance(value, list) and len(value) != len(items):
            raise ValueError(f"Sequence input {index} has {len(value)} tensors but input 0 "
                             f"has {len(items)}.")
    columns: list[list[Any]] = [[] for _ in body.outputs]
    for i, item in enumerate(items):
        args = [item] + [v[i] if isinstance(v, list) else v for v in extra]
        for column, value in zip(columns, ctx.run_graph(body, args), strict=True):
            column.append(value)
    return _as_tuple(columns)

