"""Ops made by Heli's own passes (domain ``heli``).

``heli:FusedGroup`` holds a group of nodes that a fusion pass decided to run
as one kernel: its ``body`` attribute is the subgraph (inputs = the node's
operands, outputs = the node's results, the group's constants inside).  Its
reference semantics run the body with the reference executor, so every
target can run a fused graph and the IR stays verifiable; a target that
generates code for the group lowers the body instead.
"""

from __future__ import annotations

from heli.ir._ops import Attr, InferContext, op


def _infer_fused(ctx: InferContext):
    body = ctx.attrs["body"]
    if len(ctx.input_types) != len(body.inputs):
        raise ctx.error(
            f"the node has {len(ctx.input_types)} operands but its body takes "
            f"{len(body.inputs)} inputs.")
    if ctx.num_outputs != len(body.outputs):
        raise ctx.error(
            f"the node has {ctx.num_outputs} results but its body returns "
            f"{len(body.outputs)}.")
    declared = tuple(v.type for v in body.inputs)
    if tuple(ctx.input_types) == declared:
        return [v.type for v in body.outputs]
    from heli.ir._builder import rebuild  # the builder imports the op registry

    retyped = rebuild(body, input_types={v.name: t for v, t in zip(
        body.inputs, ctx.input_types, strict=True) if t is not None})
    return [v.type for v in retyped.outputs]


@op("FusedGroup", domain="heli", attrs={"body": Attr.GRAPH(), "kind": Attr.STRING("elementwise")},
    infer=_infer_fused, inputs=(0, None), outputs=(1, None))
def fused_group(*inputs, body, kind, ctx):
    """Run ``body`` on the operands; ``kind`` (``"anchor"``: a Conv/MatMul/Gemm
    and its epilogue, ``"elementwise"``: a chain) is a hint for code generators."""
    del kind
    return tuple(ctx.run_graph(body, list(inputs)))
