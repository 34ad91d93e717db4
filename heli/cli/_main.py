"""``heli`` subcommands: info, run, passes, conformance.

Every user mistake (bad file, bad argument, bad feed) ends as one line
``error: ...`` on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from heli._errors import HeliError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own convention)
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    from heli.cli import _commands as c

    parser = _Parser(prog="heli", description="Heli: an open, vendor-neutral AI compiler.")
    parser.add_argument("--debug", action="store_true",
                        help="verify the IR after every pass and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = sub.add_parser("info", help="inputs, outputs, op histogram, parameters, FLOPs")
    info.add_argument("model", help="ONNX model file")
    info.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                      help="bind a dynamic input shape (repeatable)")
    info.add_argument("--print-ir", action="store_true", help="print the optimized graph")
    info.add_argument("--save-optimized", metavar="FILE.onnx",
                      help="write the optimized graph as ONNX (open it in Netron)")
    info.set_defaults(func=c.cmd_info)

    run = sub.add_parser("run", help="compile and run a model")
    run.add_argument("model", help="ONNX model file or compiled .heli file")
    run.add_argument("--target", default="ref", help="target to compile for (default: ref)")
    run.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                     help="feed an input from a .npy file (repeatable); random if omitted")
    run.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                     help="shape of a dynamic input for random feeds (repeatable)")
    run.add_argument("--output", metavar="DIR", help="save each output as DIR/<name>.npy")
    run.add_argument("--seed", type=_seed, default=0, help="seed of random inputs (>= 0)")
    run.set_defaults(func=c.cmd_run)

    passes = sub.add_parser("passes", help="list the passes of the default pipeline")
    passes.set_defaults(func=c.cmd_passes)

    conf = sub.add_parser("conformance", help="run ONNX's operator cases and light CNNs")
    conf.add_argument("--target", default="ref")
    conf.add_argument("--compare", choices=["onnxruntime"],
                      help="also run the same cases on ONNX Runtime and report its count")
    conf.add_argument("--json", metavar="FILE", help="write a machine-readable report")
    conf.add_argument("--filter", metavar="SUBSTRING", help="only cases whose name contains it")
    conf.add_argument("--no-models", action="store_true", help="skip the light CNN models")
    conf.add_argument("--no-nodes", action="store_true", help="skip the per-operator cases")
    conf.add_argument("--show", choices=["fail", "all", "none"], default="none",
                      help="list failing (or all) cases by name")
    conf.add_argument("--report", metavar="DIR",
                      help="write the scorecard DIR/TARGET.md and DIR/TARGET.json (also runs "
                           "the real test models, with fallback to ref)")
    conf.add_argument("--no-real-models", action="store_true",
                      help="with --report: skip the real test models")
    conf.add_argument("--quantize", action="store_true",
                      help="with --report: quantize each real model to int8 first (npu)")
    conf.set_defaults(func=c.cmd_conformance)

    from heli.cli._quantize import cmd_quantize

    quant = sub.add_parser("quantize", help="int8 post-training quantization (QDQ ONNX)")
    quant.add_argument("model", help="float ONNX model file")
    quant.add_argument("--calib", required=True, metavar="DIR_OR_NPZ",
                       help="a directory of .npy samples (single-input models) or an .npz "
                            "with one array per input (first axis = samples)")
    quant.add_argument("-o", "--output", required=True, metavar="FILE.onnx")
    quant.add_argument("--calibrator", choices=["minmax", "percentile"], default="minmax")
    quant.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                       help="bind a dynamic input shape (repeatable)")
    quant.set_defaults(func=cmd_quantize)

    from heli.cli._compile import add_compile_parser

    add_compile_parser(sub)

    from heli.cli._explain import add_explain_parser

    add_explain_parser(sub)

    from heli.cli._new_target import add_new_target_parser
    from heli.cli._targets import add_targets_parser

    add_new_target_parser(sub)
    add_targets_parser(sub)

    from heli.cli._npu import add_npu_parser

    add_npu_parser(sub)

    from heli.cli._bench import add_bench_parser

    add_bench_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["HELI_VERIFY"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            if not args.debug:  # one readable line per warning, not a source listing
                warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except HeliError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
