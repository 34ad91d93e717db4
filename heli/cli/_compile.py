"""``heli compile``: an ONNX model in, one self-describing ``.heli`` file out.

Also the helpers other subcommands use for compiled files: ``heli run`` opens
a ``.heli`` file instead of compiling, and ``heli info`` reports the memory
plan of the optimized graph.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from heli._errors import HeliError, InputError


def add_compile_parser(sub: argparse._SubParsersAction) -> None:
    compile_ = sub.add_parser("compile", help="compile a model into a .heli file (run it "
                                              "with `heli run` or heli.load)")
    compile_.add_argument("model", help="ONNX model file")
    compile_.add_argument("--target", default="ref", help="target to compile for (default: ref)")
    compile_.add_argument("-o", "--output", required=True, metavar="FILE.heli",
                          help="the compiled file to write")
    compile_.add_argument("--input-shape", action="append", default=[],
                          metavar="NAME=D0,D1,...",
                          help="bind a dynamic input shape (repeatable; needed for every "
                               "dynamic input)")
    compile_.set_defaults(func=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    import heli
    from heli.cli._commands import _check_output_file, _format_count, console, parse_shapes
    from heli.runtime import is_artifact, save_compiled

    output = Path(args.output)
    _check_output_file(output, "--output")  # before any work
    shapes = parse_shapes(args.input_shape)
    if is_artifact(args.model):
        raise InputError(f"{args.model!r} is already a compiled .heli model; `heli compile` "
                         "takes an ONNX model.")
    start = time.perf_counter()
    model = heli.compile(args.model, target=args.target, debug=args.debug)
    saved = save_compiled(model, output, input_shapes=shapes or None)
    seconds = time.perf_counter() - start
    counts: dict[str, int] = {}
    for target in saved.segments:
        counts[target] = counts.get(target, 0) + 1
    placed = ", ".join(f"{t}: {n} segment(s)" for t, n in counts.items()) or "no segments"
    shown = ", ".join(str(list(s)) for s in saved.shapes)
    console.print(f"compiled {args.model} for {args.target} (input shapes {shown}; {placed}) "
                  f"in {seconds:.2f} s")
    console.print(f"wrote {output} ({_format_count(saved.bytes, 'B')})")
    return 0


def open_model(args: argparse.Namespace):
    """The model ``heli run`` runs: a ``.heli`` file is loaded, anything else compiled."""
    import heli
    from heli.runtime import is_artifact

    if is_artifact(args.model):
        model = heli.load(args.model, debug=args.debug)
        # --target defaults to "ref"; any other value must be the one compiled for.
        if args.target not in ("ref", model.target):
            raise InputError(f"{args.model!r} was compiled for the target {model.target!r}, "
                             f"not {args.target!r}; recompile it with `heli compile --target "
                             f"{args.target}`.")
        return model
    return heli.compile(args.model, target=args.target, debug=args.debug)


def memory_summary(graph) -> str:
    """``peak activation memory: X (naive Y)`` for a static-shaped optimized graph."""
    from heli.cli._commands import _format_count
    from heli.runtime import plan_graph_memory

    try:
        plan = plan_graph_memory(graph)
    except HeliError as error:
        return f"peak activation memory: unknown ({error})"
    return (f"peak activation memory: {_format_count(plan.peak, 'B')} "
            f"(naive {_format_count(plan.naive, 'B')})")
