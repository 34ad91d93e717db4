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

# Markup off: model, value and file names are printed as they are (a name such as
# "x[/b]" would otherwise be parsed as a style tag and crash the printer).
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


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


_NPY_MAGIC = b"\x93NUMPY"


def parse_inputs(items: list[str]) -> dict[str, np.ndarray]:
    """``["x=x.npy"]`` → ``{"x": array}``."""
    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--input {item!r} is not of the form NAME=FILE.npy.")
        if name in feeds:
            raise InputError(f"--input gives the input {name!r} twice.")
        feeds[name] = _load_npy(path, name)
    return feeds


def _load_npy(path: str, name: str) -> np.ndarray:
    if not os.path.exists(path):
        raise InputError(f"The input file {path!r} (for input {name!r}) does not exist.")
    if os.path.isdir(path):
        raise InputError(f"The input path {path!r} (for input {name!r}) is a directory, "
                         "not a .npy file.")
    if not os.path.isfile(path):
        raise InputError(f"The input path {path!r} (for input {name!r}) is not a regular file.")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
            if head.startswith(b"PK"):
                raise InputError(f"The input file {path!r} is an .npz archive; --input takes "
                                 "one array in a .npy file.")
            if head != _NPY_MAGIC:
                raise InputError(f"The input file {path!r} is not a .npy file (it does not "
                                 "start with the .npy header).")
            f.seek(0)
            array = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        detail = str(error).rstrip(".")
        raise InputError(f"The input file {path!r} is not a valid .npy file: {detail}.") from None
    if not isinstance(array, np.ndarray):  # pragma: no cover - np.load of a .npy file
        raise InputError(f"The input file {path!r} must hold one array (.npy).")
    if array.dtype.fields is not None or array.dtype.kind == "V":
        raise InputError(f"The input file {path!r} holds a structured array (dtype "
                         f"{array.dtype}); an input must be a plain tensor.")
    return array


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

    if args.save_optimized:
        _check_output_file(Path(args.save_optimized), "--save-optimized")
    graph = import_onnx(args.model)
    shapes = parse_shapes(args.input_shape)
    static = all(getattr(v.type, "is_static", True) or v.name in shapes for v in graph.inputs)
    optimized = None
    if static:
        bound = bind_shapes(graph, shapes)
        optimized = PassManager(default_pipeline(bound)).run(graph)
    stats = graph_stats(optimized or graph)

    console.print(f"{args.model}  ({len(graph.nodes)} nodes, opset {graph.opset})", style="bold")
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
        from heli.cli._compile import memory_summary

        console.print(memory_summary(optimized))
        if args.print_ir:
            console.print(str(optimized), markup=False, highlight=False)
        if args.save_optimized:
            from heli.ir import save_onnx

            try:
                save_onnx(optimized, args.save_optimized)
            except OSError as error:
                raise InputError(f"--save-optimized {args.save_optimized!r} cannot be written: "
                                 f"{error.strerror or error}.") from None
            console.print(f"saved the optimized graph to {args.save_optimized}")
    return 0


# -- run ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    if args.output:
        _check_output_dir(Path(args.output))  # before any work
    feeds = parse_inputs(args.input)
    shapes = parse_shapes(args.input_shape)
    start = time.perf_counter()
    from heli.cli._compile import open_model

    model = open_model(args)  # a .heli file is loaded, an ONNX model compiled
    unknown = [n for n in list(feeds) + list(shapes) if n not in model.input_names]
    if unknown:
        raise InputError(
            f"The model has no input {unknown[0]!r}; its inputs are {model.input_names!r}."
        )
    shapes.update({k: v.shape for k, v in feeds.items()})
    rng = np.random.default_rng(args.seed)
    spec = model.specialize(shapes) if shapes or model.input_names else None
    compile_seconds = time.perf_counter() - start
    bound = {v.name: v.type for v in spec.graph.inputs} if spec else {}
    for value in model.inputs:
        if value.name not in feeds:
            feeds[value.name] = _random_feed(value.name, bound.get(value.name, value.type), rng)
    start = time.perf_counter()
    outputs = model.run(feeds)
    run_seconds = time.perf_counter() - start

    table = Table(title=f"outputs ({model.target})", show_edge=False)
    for col in ("name", "dtype", "shape", "min", "max", "mean"):
        table.add_column(col)
    for name, value in outputs.items():
        table.add_row(name, *_describe(value))
    console.print(table)
    if spec is not None:
        counts = ", ".join(f"{t}: {n} nodes" for t, n in spec.placement.counts().items())
        console.print(f"ran on {counts or 'no nodes'}; compile {compile_seconds:.2f} s, "
                      f"run {run_seconds * 1e3:.1f} ms")
    if args.output:
        save_outputs(Path(args.output), outputs)
        console.print(f"saved {len(outputs)} output(s) to {args.output}/")
    return 0


def _describe(value) -> list[str]:
    """dtype, shape, min, max, mean of an output (sequences and optionals too)."""
    if value is None:
        return ["optional", "(empty)", "-", "-", "-"]
    if isinstance(value, list | tuple):
        return ["sequence", f"{len(value)} tensor(s)", "-", "-", "-"]
    array = np.asarray(value)
    if array.size and array.dtype.kind in "biuf":
        wide = array.astype(np.float64)
        return [str(array.dtype), str(list(array.shape)), f"{wide.min():.6g}",
                f"{wide.max():.6g}", f"{wide.mean():.6g}"]
    return [str(array.dtype), str(list(array.shape)), "-", "-", "-"]


def _random_feed(name: str, vtype, rng: np.random.Generator) -> np.ndarray:
    """A seeded random feed for an input the user did not give."""
    from heli.conformance import random_array
    from heli.ir._limits import size_problem
    from heli.ir._types import TensorType

    if not isinstance(vtype, TensorType):
        raise InputError(f"Input {name!r} has the type {vtype}; heli run can only make random "
                         "tensors, and --input files hold tensors.")
    if vtype.shape is None or not vtype.is_static:
        raise InputError(f"Input {name!r} has no known shape ({vtype}); give it with "
                         f"--input-shape {name}=D0,D1,... or --input {name}=FILE.npy.")
    problem = size_problem(vtype.shape, vtype.dtype.np)
    if problem is not None:
        raise InputError(f"A random feed for input {name!r} cannot be made: {problem}")
    if vtype.dtype.np == np.dtype(object):  # string tensors: short random words
        words = rng.integers(0, 26, size=(*vtype.shape, 3)) + ord("a")
        flat = ["".join(map(chr, w)) for w in words.reshape(-1, 3)]
        return np.array(flat, dtype=object).reshape(vtype.shape)
    return random_array(vtype.dtype.np, vtype.shape, rng)


def _check_output_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--output {str(directory)!r} exists and is not a directory.")
    parent = next((p for p in directory.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"--output {str(directory)!r} cannot be created: {str(parent)!r} is "
                         "not a directory.")


def _file_names(names: list[str]) -> dict[str, str]:
    """A distinct, safe ``.npy`` file name for each output name."""
    result: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
        safe = safe.lstrip(".") or "output"
        candidate, n = safe, 1
        while candidate.lower() in taken:  # "a/b" and "a_b", or names differing in case
            candidate = f"{safe}_{n}"
            n += 1
        taken.add(candidate.lower())
        result[name] = f"{candidate}.npy"
    return result


def save_outputs(directory: Path, outputs: dict[str, np.ndarray]) -> None:
    """Write each output as ``<name>.npy``; each file appears whole or not at all."""
    _check_output_dir(directory)
    not_tensors = [n for n, v in outputs.items() if not isinstance(v, np.ndarray | np.generic)]
    if not_tensors:  # checked before any file is written
        raise InputError(f"--output saves tensors as .npy files, but output(s) {not_tensors!r} "
                         "are sequences or optionals.")
    files = _file_names(list(outputs))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in outputs.items():
            final = directory / files[name]
            tmp = directory / f".{files[name]}.tmp{os.getpid()}"
            try:
                array = np.asarray(value)
                if array.dtype == object:  # string tensors: saved as numpy unicode arrays
                    array = array.astype(str)
                with open(tmp, "wb") as f:
                    np.save(f, array, allow_pickle=False)
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as error:
        raise InputError(f"The outputs cannot be saved to --output {str(directory)!r}: "
                         f"{error.strerror or error}.") from None
    renamed = {n: f for n, f in files.items() if f != f"{n}.npy"}
    if renamed:
        shown = ", ".join(f"{n!r} as {f}" for n, f in renamed.items())
        console.print(f"saved output(s) {shown}")


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
    if args.json:
        _check_output_file(Path(args.json), "--json")
    if args.report and Path(args.report).exists() and not Path(args.report).is_dir():
        raise InputError(f"--report {args.report!r} exists and is not a directory.")
    if not args.report and (args.quantize or args.no_real_models):
        raise InputError("--quantize and --no-real-models apply to the real models of a "
                         "scorecard; give --report DIR too.")
    real = conf.real_models(args.filter) if args.report and not args.no_real_models else []
    if args.no_nodes and args.no_models and not real:
        raise InputError("--no-nodes and --no-models together leave nothing to run.")
    engines = {args.target: conf.heli_runner(args.target)}
    if args.compare == "onnxruntime":
        try:
            engines["onnxruntime"] = conf.onnxruntime_runner()
        except ImportError:
            raise HeliError("--compare onnxruntime needs the onnxruntime package.") from None
    cases = [] if args.no_nodes else conf.node_cases(args.filter)
    models = [] if args.no_models else [
        p for p in conf.light_models() if not args.filter or args.filter in p.stem]
    if not cases and not models and not real:
        raise InputError(f"No node case or light model matches --filter {args.filter!r}.")
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
        # for the scorecard: the light CNNs the target cannot run alone, with fallback
        alone = [r for r in results[args.target] if r.op == "model" and r.status == "unsupported"]
        real += [conf.light_as_real_model(p) for p in models if args.report and p.stem in
                 {r.name for r in alone}]
        task = progress.add_task(f"{args.target}: models with fallback", total=len(real))
        scores = []
        for model in real:
            scores.append(conf.run_real_model(model, args.target, quantize=args.quantize))
            progress.advance(task)
    light_fallback = [s for s in scores if s.name.startswith("light_")]
    scores = [s for s in scores if not s.name.startswith("light_")]
    _print_conformance(args, results)
    for score in scores:
        share = score.macs.get(args.target, 0) / max(sum(score.macs.values()), 1)
        print(f"real model {score.name}: {score.status}"
              + (f" ({score.detail[:200]})" if score.detail else "")
              + (f", max abs error vs ref {score.max_abs:.2e}, {100 * share:.1f}% of MACs on "
                 f"{args.target}" if score.status != "error" else ""))
    if args.json:
        _write_json(Path(args.json), args.target, results)
    if args.report:
        mine = results.get(args.target, [])
        card = conf.scorecard(args.target, [r for r in mine if r.op != "model"],
                              [r for r in mine if r.op == "model"], scores, _command(args),
                              light_fallback)
        try:
            paths = conf.write_report(Path(args.report), card)
        except OSError as error:
            raise InputError(f"--report {args.report!r} cannot be written: "
                             f"{error.strerror or error}.") from None
        for path in paths:
            print(f"wrote {path}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that makes a scorecard, for its header."""
    words = ["heli", "conformance", "--target", args.target]
    for flag in ("no_nodes", "no_models", "no_real_models", "quantize"):
        if getattr(args, flag):
            words.append("--" + flag.replace("_", "-"))
    if args.filter:
        words += ["--filter", args.filter]
    return " ".join([*words, "--report", args.report])


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
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, path)
    except OSError as error:
        raise InputError(f"--json {str(path)!r} cannot be written: "
                         f"{error.strerror or error}.") from None
    finally:
        tmp.unlink(missing_ok=True)


def _check_output_file(path: Path, option: str) -> None:
    """Fail before any work when an output file path cannot be a file."""
    if path.is_dir():
        raise InputError(f"{option} {str(path)!r} is a directory; give a file name.")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"{option} {str(path)!r} cannot be written: {str(parent)!r} is not "
                         "a directory.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{option} {str(path)!r} cannot be written: "
                         f"{error.strerror or error}.") from None
