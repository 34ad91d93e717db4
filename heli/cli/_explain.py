"""``heli explain MODEL --target npu``: where each node runs, the share of MACs
on the accelerator, and per-layer cycles and utilization from the NPU's cycle
model.

A quantized (QDQ) model's DequantizeLinear → op → QuantizeLinear chains are
first fused into integer ops (:class:`heli.passes.QdqToInt`), which is what
the NPU runs; everything else is placed on the fallback targets (by default
``cpu``, then ``ref``, as :func:`heli.compile` does).
"""

from __future__ import annotations

import argparse

from heli.ir._graph import Graph, Node
from heli.ir._types import TensorType


def add_explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="placement per node, MAC share and per-layer cycles")
    p.add_argument("model", help="ONNX model file (quantized QDQ for the npu)")
    p.add_argument("--target", default="npu", help="target to place on (default: npu)")
    p.add_argument("--fallback", default="cpu,ref",
                   help="comma-separated fallback targets, in order (default: cpu,ref)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="bind a dynamic input shape (repeatable)")
    p.set_defaults(func=cmd_explain)


def _dims(value) -> tuple[int, ...] | None:
    t = value.type if value is not None else None
    if isinstance(t, TensorType) and t.shape is not None and all(isinstance(d, int)
                                                                 for d in t.shape):
        return tuple(t.shape)
    return None


def node_macs(node: Node) -> int:
    """Multiply-accumulates of a Conv / MatMul / Gemm (float or integer) node."""
    name = node.op.name
    out = _dims(node.outputs[0]) if node.outputs and node.outputs[0] is not None else None
    if out is None or len(node.inputs) < 2:
        return 0
    w = _dims(node.inputs[1])
    if name in ("Conv", "QConv") and w is not None and len(out) >= 3:
        prod_out = 1
        for d in out:
            prod_out *= d
        k = 1
        for d in w[1:]:
            k *= d
        return prod_out * k
    if name in ("MatMul", "QMatMul", "Gemm") and w is not None and len(w) == 2:
        prod_out = 1
        for d in out:
            prod_out *= d
        k = w[1] if name == "Gemm" and node.attr("transB") else w[0]
        return prod_out * k
    return 0


def placement_counts(segments) -> list[tuple[str, int, int]]:
    """(target, nodes, segments) per target, in order of first use."""
    counts: dict[str, list[int]] = {}
    for seg in segments:
        entry = counts.setdefault(seg.target.name, [0, 0])
        entry[0] += len(seg.nodes)
        entry[1] += 1
    return [(name, nodes, runs) for name, (nodes, runs) in counts.items()]


def cmd_explain(args: argparse.Namespace) -> int:
    from heli.cli._commands import parse_shapes
    from heli.frontend.onnx import import_onnx
    from heli.partition import node_label, partition
    from heli.passes import PassManager, QdqToInt, ShapeInference, default_pipeline
    from heli.runtime import bind_shapes
    from heli.target import CompileOptions, get_target

    graph: Graph = import_onnx(args.model)
    shapes = parse_shapes(args.input_shape)
    input_types = bind_shapes(graph, shapes) if shapes else None
    graph = ShapeInference(dict(input_types or {})).apply(graph)
    graph = QdqToInt().apply(graph)
    graph = PassManager(default_pipeline(input_types)).run(graph)
    names = [args.target] + [t for t in args.fallback.split(",") if t and t != args.target]
    targets = [get_target(t) for t in names]
    segments, refused = partition(graph, targets)

    total = sum(node_macs(n) for n in graph.nodes)
    on_target = 0
    print(f"{'node':<40} {'op':<20} {'target':<8} {'MACs':>12}  note")
    for seg in segments:
        for node in seg.nodes:
            macs = node_macs(node)
            if seg.target.name == args.target:
                on_target += macs
            label = node_label(node)
            # why a compute node fell back (data movement ops need no explanation)
            note = refused.get(label, "") if macs or node.op.domain else ""
            print(f"{label[:40]:<40} {node.op.qualname[:20]:<20} {seg.target.name:<8} "
                  f"{macs:>12}  {note}")
    share = on_target / total if total else 0.0
    print(f"\nMACs on {args.target}: {on_target} of {total} ({100 * share:.1f}%)")
    print("Ran where: " + ", ".join(f"{name} {count} nodes in {runs} segments"
                                    for name, count, runs in placement_counts(segments)))

    options = CompileOptions()
    for k, seg in enumerate(s for s in segments if s.target.name == args.target):
        exe = seg.target.compile(seg.graph, options)
        estimate = getattr(exe, "estimate", None)
        if estimate is None:
            continue
        report = estimate()
        macs = getattr(exe.program, "macs", {})
        dim = report.dim
        print(f"\n{args.target} segment {k}: {report.cycles} cycles "
              f"({report.seconds * 1e6:.2f} us), MAC utilization "
              f"{100 * sum(macs.values()) / (dim * dim * report.cycles or 1):.1f}%")
        print(f"  {'layer':<40} {'cycles':>10} {'MACs':>12} {'util':>7} {'DRAM bytes':>11}")
        for layer in report.layers:
            useful = macs.get(layer.name, 0)
            util = useful / (dim * dim * layer.cycles) if layer.cycles else 0.0
            print(f"  {layer.name[:40]:<40} {layer.cycles:>10} {useful:>12} "
                  f"{100 * util:>6.1f}% {layer.dram_bytes:>11}")
    return 0
