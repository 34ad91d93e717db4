"""Verilog output of the NPU's RTL (``heli npu rtl``): the parameters are checked
first, then the core (or, for unit use, the datapath alone) is elaborated and converted with
``amaranth.back.verilog`` (Yosys), and the Verilog and a JSON of the
parameters are written atomically (each to a temporary file in the output
folder, then renamed), so a failed run leaves no partial output."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from heli.targets.npu.config import NpuConfig
from heli.targets.npu.rtl.params import check_rtl_config, rtl_params

#: Name of the generated top-level Verilog module (and of its file).
TOP_NAME = "heli_npu"


def generate_verilog(cfg: NpuConfig, name: str = TOP_NAME) -> str:
    """Synthesizable Verilog of the datapath for ``cfg`` (RtlConfigError first
    if the RTL cannot be built for it)."""
    check_rtl_config(cfg)
    from amaranth.back import verilog

    from heli.targets.npu.rtl.top import NpuDatapath

    top = NpuDatapath(cfg)
    return verilog.convert(top, name=name, emit_src=False)


#: Name of the generated Verilog module of the whole core (:class:`NpuCore`).
CORE_NAME = "heli_npu_core"


def generate_core_verilog(cfg: NpuConfig, name: str = CORE_NAME) -> str:
    """Verilog of the whole core (fetch, queues, tokens, sequencer, DMA engine,
    SRAMs) for ``cfg`` (RtlConfigError first if the RTL cannot be built for it)."""
    check_rtl_config(cfg)
    from amaranth.back import verilog

    from heli.targets.npu.rtl.core import NpuCore

    return verilog.convert(NpuCore(cfg), name=name, emit_src=False)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)                       # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_rtl(cfg: NpuConfig, out_dir: str | os.PathLike, name: str = TOP_NAME) -> list[Path]:
    """Writes the whole core's Verilog (:func:`generate_core_verilog`) to
    ``<out_dir>/<name>.v`` and ``<out_dir>/params.json``; returns their paths."""
    params = {"top": name, **rtl_params(cfg)}
    verilog_text = generate_core_verilog(cfg, name)  # everything is built before any write
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v_path, j_path = out / f"{name}.v", out / "params.json"
    _write_atomic(v_path, verilog_text)
    _write_atomic(j_path, json.dumps(params, indent=2) + "\n")
    return [v_path, j_path]
