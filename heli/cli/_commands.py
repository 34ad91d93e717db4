"""The implementations of the ``heli`` subcommands."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from heli._errors import HeliError, InputError

console = Console()
err_console = Console(stderr=True)


# -- argument parsing helpers -------------------------------------------------


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,224,224"]`` → ``{"x": (1, 3, 224, 224)}``."""
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
            if any(d < 0 for d in shape):
                raise ValueError
        except ValueError:
            raise InputError(
                f"--input-shape {item!r} is not of the form NAME=D0,D1,... with sizes >= 0."
            ) from None
        shapes[name] = shape
    return shapes


def parse_inputs(items: list[str]) -> dict[str, np.ndarray]:
    """``["x=x.npy"]`` → ``{"x": array}``."""
    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--input {item!r} is not of the form NAME=FILE.npy.")
        if not os.path.isfile(path):
            raise InputError(f"The input file {path!r} (for input {name!r}) does not exist.")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise InputError(f"The input file {path!r} is not a valid .npy file: {error}.") from None
        if not isinstance(feeds[name], np.ndarray):
            raise InputError(f"The input file {path!r} must hold one array (.npy), not an archive.")
    return feeds


def _format_count(n: int | None, unit: str = "") -> str:
    if n is None:
        return "unknown"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n} {unit}".strip()


# -- info ---------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from heli.frontend.onnx import import_onnx
    from heli.ir._stats import graph_stats
    from heli.passes import PassManager, default_pipeline
    from heli.runtime import bind_shapes

    graph = import_onnx(args.model)
    shapes = parse_shapes(args.input_shape)
    static = all(getattr(v.type, "is_static", True) or v.name in shapes for v in graph.inputs)
    optimized = None
    if static:
        bound = bind_shapes(graph, shapes)
        optimized = PassManager(default_pipeline(bound)).run(graph)
    stats = graph_stats(optimized or graph)

    console.print(f"[bold]{args.model}[/bold]  ({len(graph.nodes)} nodes, opset {graph.opset})")
    io = Table(title="inputs and outputs", show_edge=False)
    for col in ("kind", "name", "type"):
        io.add_column(col)
    for v in graph.inputs:
        io.add_row("input", v.name, str(v.type))
    for v in graph.outputs:
        io.add_row("output", v.name, str(v.type))
    console.print(io)
    hist = Table(title="ops (as imported)", show_edge=False)
    hist.add_column("op")
    hist.add_column("count", justify="right")
    for op, n in Counter(node.op.qualname for node in graph.nodes).most_common():
        hist.add_row(op, str(n))
    console.print(hist)
    console.print(f"parameters: {stats.parameters:,} ({_format_count(stats.parameter_bytes, 'B')})")
    if optimized is None:
        if args.print_ir or args.save_optimized:
            raise InputError("--print-ir and --save-optimized need static shapes: give "
                             "--input-shape for every dynamic input.")
        dynamic = [v.name for v in graph.inputs if not getattr(v.type, "is_static", True)]
        console.print(f"FLOPs: unknown (dynamic inputs {dynamic!r}; give --input-shape)")
    else:
        console.print(f"FLOPs: {_format_count(stats.flops)} ({stats.flops:,})"
                      if stats.flops is not None else "FLOPs: unknown")
        console.print(f"nodes after optimization: {len(optimized.nodes)}")
        if args.print_ir:
            console.print(str(optimized), markup=False, highlight=False)
        if args.save_optimized:
            from heli.ir import save_onnx

            save_onnx(optimized, args.save_optimized)
            console.print(f"saved the optimized graph to {args.save_optimized}")
    return 0


# -- run ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    import heli
    from heli.conformance import random_array

    feeds = parse_inputs(args.input)
    shapes = parse_shapes(args.input_shape)
    start = time.perf_counter()
    model = heli.compile(args.model, target=args.target, debug=args.debug)
    unknown = [n for n in list(feeds) + list(shapes) if n not in model.input_names]
    if unknown:
        raise InputError(
            f"The model has no input {unknown[0]!r}; its inputs are {model.input_names!r}."
        )
    shapes.update({k: v.shape for k, v in feeds.items()})
    rng = np.random.default_rng(args.seed)
    spec = model.specialize(shapes) if shapes or model.input_names else None
    compile_seconds = time.perf_counter() - start
    for value in model.inputs:
        if value.name not in feeds:
            bound = spec.graph.inputs if spec else ()
            vtype = next(v.type for v in bound if v.name == value.name)
            feeds[value.name] = random_array(vtype.dtype.np, vtype.shape, rng)
    start = time.perf_counter()
    outputs = model.run(feeds)
    run_seconds = time.perf_counter() - start

    table = Table(title=f"outputs ({args.target})", show_edge=False)
    for col in ("name", "dtype", "shape", "min", "max", "mean"):
        table.add_column(col)
    for name, value in outputs.items():
        array = np.asarray(value)
        numeric = array.size and array.dtype.kind in "biuf"
        stats = ([f"{array.min():.6g}", f"{array.max():.6g}", f"{array.astype(np.float64).mean():.6g}"]
                 if numeric else ["-", "-", "-"])
        table.add_row(name, str(array.dtype), str(list(array.shape)), *stats)
    console.print(table)
    if spec is not None:
        counts = ", ".join(f"{t}: {n} nodes" for t, n in spec.placement.counts().items())
        console.print(f"ran on {counts or 'no nodes'}; compile {compile_seconds:.2f} s, "
                      f"run {run_seconds * 1e3:.1f} ms")
    if args.output:
        save_outputs(Path(args.output), outputs)
        console.print(f"saved {len(outputs)} output(s) to {args.output}/")
    return 0


def save_outputs(directory: Path, outputs: dict[str, np.ndarray]) -> None:
    """Write each output as ``<name>.npy``; each file appears whole or not at all."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--output {str(directory)!r} exists and is not a directory.")
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in outputs.items():
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
        final = directory / f"{safe}.npy"
        tmp = directory / f".{safe}.npy.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(value), allow_pickle=False)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


# -- passes -------------------------------------------------------------------


def cmd_passes(args: argparse.Namespace) -> int:
    from heli.passes import default_pipeline

    table = Table(title="default pipeline (in order)", show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("pass")
    table.add_column("what it does")
    for index, p in enumerate(default_pipeline(), 1):
        table.add_row(str(index), p.name, p.description)
    console.print(table)
    return 0


# -- conformance --------------------------------------------------------------


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=True)


def cmd_conformance(args: argparse.Namespace) -> int:
    from heli import conformance as conf
    from heli.target import get_target

    get_target(args.target)  # a clear error for an unknown target, before any work
    engines = {args.target: conf.heli_runner(args.target)}
    if args.compare == "onnxruntime":
        try:
            engines["onnxruntime"] = conf.onnxruntime_runner()
        except ImportError:
            raise HeliError("--compare onnxruntime needs the onnxruntime package.") from None
    cases = [] if args.no_nodes else conf.node_cases(args.filter)
    models = [] if args.no_models else [
        p for p in conf.light_models() if not args.filter or args.filter in p.stem]
    results: dict[str, list[conf.CaseResult]] = {}
    with _progress() as progress:
        for engine, runner in engines.items():
            task = progress.add_task(f"{engine}: node cases", total=len(cases))
            engine_results = []
            for case in cases:
                engine_results.append(conf.run_case(case, runner))
                progress.advance(task)
            if engine == args.target and models:
                task = progress.add_task(f"{engine}: light models", total=len(models))
                for path in models:
                    engine_results.append(conf.run_light_model(path, args.target))
                    progress.advance(task)
            results[engine] = engine_results
    _print_conformance(args, results)
    if args.json:
        _write_json(Path(args.json), args.target, results)
    return 0


def _summary(results: list) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {k: counts.get(k, 0) for k in ("pass", "fail", "unsupported")}


def _print_conformance(args: argparse.Namespace, results: dict[str, list]) -> None:
    mine = results[args.target]
    per_op: dict[str, Counter] = defaultdict(Counter)
    for r in mine:
        per_op[r.op if r.op != "model" else r.name][r.status] += 1
    table = Table(title=f"conformance: target {args.target!r}", show_edge=False)
    for col in ("op / model", "pass", "fail", "unsupported"):
        table.add_column(col, justify="left" if col.startswith("op") else "right")
    for op in sorted(per_op):
        c = per_op[op]
        table.add_row(op, str(c["pass"]), str(c["fail"]) if c["fail"] else "",
                      str(c["unsupported"]) if c["unsupported"] else "")
    console.print(table)
    if args.show != "none":
        for r in mine:
            if args.show == "all" or r.status != "pass":
                console.print(f"{r.status:11} {r.name}: {r.detail[:200]}", markup=False,
                              highlight=False)
    nodes = [r for r in mine if r.op != "model"]
    models = [r for r in mine if r.op == "model"]
    if nodes:
        s = _summary(nodes)
        console.print(f"node cases: {s['pass']}/{len(nodes)} passed "
                      f"({100 * s['pass'] / len(nodes):.1f}%)")
    if models:
        s = _summary(models)
        console.print(f"light models: {s['pass']}/{len(models)} passed")
    if "onnxruntime" in results:
        s = _summary(results["onnxruntime"])
        total = len(results["onnxruntime"])
        console.print(f"onnxruntime on the same node cases: {s['pass']}/{total} passed "
                      f"({100 * s['pass'] / max(total, 1):.1f}%)")
    s = _summary(mine)
    # The closing line, in the form test harnesses read.
    print(f"{s['pass']} passed, {s['fail']} failed, {s['unsupported']} unsupported")


def _write_json(path: Path, target: str, results: dict[str, list]) -> None:
    report = {
        engine: {
            "summary": _summary(rs),
            "cases": [
                {"name": r.name, "op": r.op, "status": r.status, "detail": r.detail,
                 "seconds": round(r.seconds, 4)}
                for r in rs
            ],
        }
        for engine, rs in results.items()
    }
    report["target"] = target
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
