"""``heli npu area`` and ``heli npu dse``: what the NPU costs and what it buys.

``heli npu area --dim 16 --spad 256K --acc 64K`` synthesizes the NPU's
Verilog with Yosys and prints its area per block
(:mod:`heli.targets.npu.area`); ``heli npu dse MODEL --dim 8,16,32 --spad
128K,256K --bw 8,16 -o OUT`` compiles and times a model on every combination
and writes a CSV, a Markdown table and a Pareto plot
(:mod:`heli.targets.npu.dse`).  Bad parameters are reported (exit 2) before
any synthesis or compilation.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from heli._errors import InputError


def add_explore_parsers(tools) -> None:
    """Adds ``area`` and ``dse`` to the ``heli npu`` subcommands ``tools``."""
    _add_area(tools)
    _add_dse(tools)


def _add_area(tools) -> None:
    from heli.cli._npu import add_config_arguments

    p = tools.add_parser("area", help="estimate the NPU's area per block (Yosys, 45 nm)")
    add_config_arguments(p)
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write the report (blocks, cells by type) as JSON")
    p.set_defaults(func=cmd_npu_area)


def cmd_npu_area(args: argparse.Namespace) -> int:
    from heli.cli._npu import config_from_args

    cfg = config_from_args(args)
    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.resolve().is_dir():
        raise InputError(f"--json {args.json!r}: the folder {str(json_path.parent)!r} "
                         f"does not exist.")
    from heli.targets.npu.area import area, format_report
    from heli.targets.npu.dse import write_atomic

    report = area(cfg)
    print(format_report(report))
    if json_path is not None:
        write_atomic(json_path, (json.dumps(report.to_json(), indent=2) + "\n").encode())
        print(f"wrote {json_path}")
    return 0


def _add_dse(tools) -> None:
    from heli.targets.npu.config import NpuConfig

    d = NpuConfig()
    p = tools.add_parser("dse", help="design-space exploration: a model's latency vs the "
                                     "NPU's area over a grid of configurations")
    p.add_argument("model", help="the model (float ONNX, quantized to int8 here; or QDQ ONNX)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder for dse.csv, dse.md and pareto.png (created if missing)")
    p.add_argument("--dim", default=str(d.dim), metavar="LIST",
                   help=f"array sizes, powers of two, e.g. 8,16,32 (default {d.dim})")
    p.add_argument("--spad", default="256K", metavar="LIST",
                   help="scratchpad sizes, e.g. 128K,256K (default 256K)")
    p.add_argument("--acc", default="64K", metavar="LIST",
                   help="accumulator sizes, e.g. 64K (default 64K)")
    p.add_argument("--bw", default=str(d.dram_bytes_per_cycle), metavar="LIST",
                   help=f"DRAM bytes per cycle, e.g. 8,16 (default {d.dram_bytes_per_cycle})")
    p.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                   help="configurations evaluated in parallel (default: the CPU count)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="bind a dynamic input shape (repeatable)")
    p.add_argument("--no-area", action="store_true",
                   help="skip the area estimate (no Yosys; no Pareto front)")
    p.set_defaults(func=cmd_npu_dse)


def cmd_npu_dse(args: argparse.Namespace) -> int:
    from heli.cli._commands import parse_shapes
    from heli.targets.npu import dse

    configs = dse.grid(dse.parse_list(args.dim, "--dim"), dse.parse_sizes(args.spad, "--spad"),
                       dse.parse_sizes(args.acc, "--acc"), dse.parse_list(args.bw, "--bw"))
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise InputError(f"--jobs {args.jobs!r} must be at least 1.")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {args.output!r} exists and is not a folder.")
    shapes = parse_shapes(args.input_shape)
    if not Path(args.model).is_file():
        raise InputError(f"The model file {args.model!r} does not exist.")
    results = _run(dse, args.model, shapes, configs, jobs, not args.no_area)
    paths = dse.write_outputs(results, out, title=f"{Path(args.model).name} on the Heli NPU: "
                                                  f"latency vs area")
    print(dse.to_markdown(results), end="")
    for path in paths:
        print(f"wrote {path}")
    return 0


def _run(dse, model: str, shapes: dict, configs, jobs: int, area: bool) -> list:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{len(configs)} configurations", total=len(configs))

        def done(result) -> None:
            progress.update(task, advance=1,
                            description=f"{dse.label(result.config)}: {result.status}")

        return dse.explore(model, configs, jobs=jobs, area=area, input_shapes=shapes,
                           progress=done)
