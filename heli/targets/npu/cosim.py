"""Co-simulation of the NPU's RTL core against the functional simulator
(``docs/npu.md``, "RTL core", "Co-simulation").

A program and its DRAM image run twice: on :class:`~heli.targets.npu.sim.Npu`
(bit-exact numpy, with the race check) and on the Verilog of
:class:`~heli.targets.npu.rtl.core.NpuCore`, compiled by Verilator with a C++
testbench (``rtl/tb/cosim_tb.cpp``) that streams the program into the
instruction port and models DRAM behind the memory bus.  Every DRAM write the
RTL makes is checked against the simulator's DRAM (the first differing store
names its instruction and row), then the whole DRAM.  The RTL's completion
cycle of every instruction gives its per-layer cycle counts, computed as the
cycle model's (:func:`heli.targets.npu.cycles.estimate`): a layer's cycles are
how far it moves the finishing front.

The Verilator build is cached by content (the Verilog, the testbench, the
build flags and Verilator's version) under ``$HELI_CACHE_DIR`` or
``~/.cache/heli``, in ``npu-cosim/<sha256>``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heli._filelock import file_lock
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.errors import NpuError
from heli.targets.npu.isa import Instr, disassemble, encode_program

__all__ = ["CosimError", "CosimReport", "LayerCycles", "RtlRun", "build_testbench",
           "cosim_instrs", "cosim_model", "cosim_program", "merge_reports",
           "run_rtl"]

_TB = Path(__file__).parent / "rtl" / "tb" / "cosim_tb.cpp"
_TOP = "heli_npu_core"
_CFLAGS = ("-O1",)


class CosimError(NpuError):
    """The co-simulation could not run (no Verilator, a failed build) or the RTL
    and the simulator disagree."""


@dataclass(frozen=True)
class RtlRun:
    """What the RTL did: DRAM at the end, cycles, the cycle each instruction
    completed (-1: never), and every DRAM write (address, bytes, cycle)."""

    dram: np.ndarray
    cycles: int
    retire: np.ndarray
    stores: list[tuple[int, bytes, int]]


@dataclass(frozen=True)
class LayerCycles:
    name: str
    rtl: int
    model: int

    @property
    def delta(self) -> float:
        """(RTL - model) / model; 0 when both are 0."""
        return (self.rtl - self.model) / self.model if self.model else float(self.rtl != 0)


@dataclass(frozen=True)
class CosimReport:
    """A co-simulation that matched: cycles of the RTL and of the cycle model
    (its default timing parameters describe the RTL's SRAM banks)."""

    dim: int
    rtl_cycles: int
    model_cycles: int
    layers: list[LayerCycles]
    stores_checked: int
    instructions: int

    def table(self) -> str:
        """The per-layer cycle table (Markdown)."""
        lines = ["| layer | RTL cycles | model cycles | delta |", "|---|---|---|---|"]
        for lc in self.layers:
            lines.append(f"| `{lc.name}` | {lc.rtl:,} | {lc.model:,} | {lc.delta:+.1%} |")
        total = LayerCycles("total", self.rtl_cycles, self.model_cycles)
        lines.append(f"| **total** | {total.rtl:,} | {total.model:,} | {total.delta:+.1%} |")
        return "\n".join(lines)


# -- build ---------------------------------------------------------------------


def verilator() -> str:
    """The path of ``verilator``; CosimError with a sentence if it is missing."""
    path = shutil.which("verilator")
    if path is None:
        raise CosimError("Verilator is not installed (it is not on PATH); the RTL "
                         "co-simulation needs it: run `make tools` or install the "
                         "'verilator' package.")
    return path


def _cache_root() -> Path:
    root = os.environ.get("HELI_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "heli"


def _verilator_version(tool: str) -> str:
    return subprocess.run([tool, "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


_ZERO_INIT = re.compile(r"  initial begin\n((?:    (\S+)\[\d+\] = \d+'h0+;\n)+)  end\n")


def _compact_zero_inits(verilog: str) -> str:
    """Yosys writes a zero-initialized memory as one assignment per row; a loop
    says the same and keeps Verilator's C++ (and its compile time) small."""
    def loop(m: re.Match) -> str:
        rows = m.group(1).count("\n")
        name = m.group(2)
        return (f"  initial begin : {name.strip(chr(92)).replace('.', '_')}_zero\n"
                f"    integer i;\n    for (i = 0; i < {rows}; i = i + 1) {name}[i] = 0;\n"
                f"  end\n")
    return _ZERO_INIT.sub(loop, verilog)


def _sources_digest() -> str:
    """Digest of everything the generated Verilog and the testbench depend on:
    the RTL generator's sources, the ISA and the configuration class."""
    npu = Path(__file__).parent
    rtl = [f for f in (npu / "rtl").glob("*.py") if f.name not in ("lint.py", "__init__.py")]
    files = sorted([*rtl, _TB, npu / "isa.py", npu / "config.py"])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def _build_key(cfg: NpuConfig, tool: str) -> str:
    import amaranth

    parts = [_sources_digest(), repr(cfg), " ".join(_CFLAGS), _verilator_version(tool),
             amaranth.__version__]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def build_testbench(cfg: NpuConfig) -> Path:
    """The Verilated testbench of the core for ``cfg``, built once and cached by
    content: the generator's sources, ``cfg``, the flags, the tools' versions."""
    tool = verilator()
    final = _cache_root() / "npu-cosim" / _build_key(cfg, tool)
    exe = final / "cosim_tb"
    if exe.exists():
        return exe
    final.parent.mkdir(parents=True, exist_ok=True)
    # one build per key at a time (pytest workers): the others wait for it
    with file_lock(final.parent / f"{final.name}.lock"):
        if not exe.exists():
            _build(cfg, tool, final)
    return exe


def _build(cfg: NpuConfig, tool: str, final: Path) -> None:
    from heli.targets.npu.rtl.bus import DMA_ROWS
    from heli.targets.npu.rtl.generate import generate_core_verilog

    verilog = _compact_zero_inits(generate_core_verilog(cfg, _TOP))
    flags = [f"-DSLOT_BYTES={4 * cfg.dim}", f"-DBEAT_ROWS={DMA_ROWS}", *_CFLAGS]
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=".build-"))
    try:
        (work / f"{_TOP}.v").write_text(verilog)
        (work / "cosim_tb.cpp").write_text(_TB.read_text())
        cmd = [tool, "--cc", "--exe", "--build", "-j", "2", "-Wno-fatal", "-Wno-lint",
               "-Wno-style", "--top-module", _TOP, "-CFLAGS", " ".join(flags),
               "-o", "cosim_tb", f"{_TOP}.v", "cosim_tb.cpp"]
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            raise CosimError(f"the Verilator build of the NPU core failed (exit "
                             f"{done.returncode}): {done.stderr.strip()[-2000:]}")
        keep = work / "keep"
        keep.mkdir()
        shutil.copy2(work / "obj_dir" / "cosim_tb", keep / "cosim_tb")
        shutil.copy2(work / f"{_TOP}.v", keep / f"{_TOP}.v")
        try:
            keep.rename(final)
        except OSError:                 # another process built it first
            if not (final / "cosim_tb").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- run -------------------------------------------------------------------------


def run_rtl(cfg: NpuConfig, instrs: Sequence[Instr], dram: np.ndarray,
            max_cycles: int) -> RtlRun:
    """Runs ``instrs`` on the Verilated core with ``dram`` (not modified)."""
    exe = build_testbench(cfg)
    with tempfile.TemporaryDirectory(prefix="heli-cosim-") as tmp:
        out = Path(tmp)
        (out / "program.bin").write_bytes(encode_program(instrs))
        (out / "dram.in").write_bytes(np.ascontiguousarray(dram, np.uint8).tobytes())
        cmd = [str(exe), str(out / "program.bin"), str(out / "dram.in"), str(out),
               str(cfg.dma_latency), str(cfg.dram_bytes_per_cycle), str(max_cycles)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise CosimError(f"the RTL testbench failed (exit {done.returncode}): "
                             f"{done.stderr.strip()[-2000:]}")
        status, cycles, tokens_empty, error_pc = (out / "result.txt").read_text().split()
        if status == "error":
            raise CosimError(f"the RTL's fetch rejected instruction {error_pc}.")
        if status != "done":
            raise CosimError(f"the RTL did not finish: {status} after {cycles} cycles "
                             f"(limit {max_cycles}).")
        if tokens_empty != "1":
            raise CosimError("the RTL finished with tokens left in a channel.")
        retire = np.fromfile(out / "retire.bin", np.int64)
        stores = _parse_stores((out / "stores.bin").read_bytes())
        final = np.fromfile(out / "dram.bin", np.uint8)
    return RtlRun(final, int(cycles), retire, stores)


def _parse_stores(raw: bytes) -> list[tuple[int, bytes, int]]:
    stores, pos = [], 0
    while pos < len(raw):
        addr, n = np.frombuffer(raw, "<u4", 2, pos)
        cycle = int(np.frombuffer(raw, "<u8", 1, pos + 8)[0])
        stores.append((int(addr), raw[pos + 16:pos + 16 + int(n)], cycle))
        pos += 16 + int(n)
    return stores


# -- comparison --------------------------------------------------------------------


def _store_owners(instrs: Sequence[Instr]) -> list[tuple[int, int]]:
    """(pc, row) of every DRAM write request, in the store queue's order."""
    owners = []
    for pc, ins in enumerate(instrs):
        if ins.name == "dma_store":
            owners.extend((pc, r) for r in range(ins.fields["rows"]))
    return owners


def check_stores(instrs: Sequence[Instr], rtl: RtlRun, expected: np.ndarray) -> int:
    """Every RTL DRAM write equals ``expected`` (the simulator's DRAM at the end)
    where no later write overwrote it; CosimError naming the first that does not."""
    owners = _store_owners(instrs)
    if len(owners) != len(rtl.stores):
        raise CosimError(f"the RTL made {len(rtl.stores)} DRAM writes; the program's "
                         f"dma_store instructions have {len(owners)} rows.")
    last = np.full(expected.size, -1, np.int64)
    for k, (addr, data, _) in enumerate(rtl.stores):
        last[addr:addr + len(data)] = k
    for k, (addr, data, cycle) in enumerate(rtl.stores):
        got = np.frombuffer(data, np.uint8)
        mine = last[addr:addr + len(data)] == k
        want = expected[addr:addr + len(data)]
        if not np.array_equal(got[mine], want[mine]):
            pc, row = owners[k]
            lane = int(np.nonzero((got != want) & mine)[0][0])
            raise CosimError(
                f"instruction {pc} ({disassemble(instrs[pc])}), row {row}: the RTL wrote "
                f"{got.tolist()} to DRAM {addr:#x} at cycle {cycle}, the simulator "
                f"{want.tolist()} (first difference at byte {lane}).")
    return len(rtl.stores)


def _layer_cycles(ends: Sequence[int], layers: Sequence[tuple[int, int, str]],
                  n: int) -> dict[str, int]:
    """Per layer, how far it moves the finishing front (as the cycle model)."""
    out, front, pos = {}, 0, 0
    ranges = []
    for a, b, name in sorted(layers):
        if a > pos:
            ranges.append((pos, a, "(untagged)"))
        ranges.append((a, b, name))
        pos = b
    if pos < n:
        ranges.append((pos, n, "(untagged)"))
    for a, b, name in ranges:
        end = max((ends[pc] for pc in range(a, b)), default=0)
        cycles = max(end - front, 0)
        front += cycles
        out[name] = out.get(name, 0) + cycles
    return out


def cosim_instrs(cfg: NpuConfig, instrs: Sequence[Instr], dram: np.ndarray,
                 layers: Sequence[tuple[int, int, str]] = (),
                 max_cycles: int | None = None) -> tuple[CosimReport, np.ndarray]:
    """Runs ``instrs`` on the simulator and the RTL from the same ``dram``;
    returns the report and the simulator's final DRAM, or raises CosimError at
    the first difference."""
    from heli.targets.npu.cycles import estimate
    from heli.targets.npu.sim import Npu

    instrs = list(instrs)
    ref = Npu(cfg, np.array(dram, np.uint8, copy=True))
    ref.run(instrs, check_races=True)
    model = estimate(instrs, cfg, layers=list(layers))
    limit = max_cycles if max_cycles is not None else 4 * model.cycles + 100_000
    rtl = run_rtl(cfg, instrs, dram, limit)
    stores = check_stores(instrs, rtl, ref.dram)
    diff = np.nonzero(rtl.dram != ref.dram)[0]
    if diff.size:
        raise CosimError(f"DRAM differs at {diff.size} bytes after the run, first at "
                         f"{int(diff[0]):#x}: RTL {int(rtl.dram[diff[0]])}, simulator "
                         f"{int(ref.dram[diff[0]])}.")
    missing = [pc for pc in range(len(instrs) - 1) if rtl.retire[pc] < 0]
    if missing:
        raise CosimError(f"{len(missing)} instructions never completed on the RTL, the "
                         f"first is {missing[0]} ({instrs[missing[0]].name}).")
    ends = [int(c) + 1 if c >= 0 else 0 for c in rtl.retire]
    rtl_layers = _layer_cycles(ends, layers, len(instrs))
    model_layers = {ls.name: ls.cycles for ls in model.layers}
    names = [ls.name for ls in model.layers]
    rows = [LayerCycles(nm, rtl_layers.get(nm, 0), model_layers.get(nm, 0)) for nm in names]
    report = CosimReport(cfg.dim, max(ends), model.cycles, rows, stores, len(instrs))
    return report, ref.dram


def cosim_program(program, feeds: Mapping[str, np.ndarray]) -> tuple[CosimReport,
                                                                      dict[str, np.ndarray]]:
    """Co-simulates a lowered segment (:class:`heli.targets.npu.lower.Program`)
    on ``feeds`` (int8 arrays by input name, as the NPU executable takes them);
    returns the report and the outputs (by tensor name, from the simulator)."""
    from heli.targets.npu.lower import from_matrix, matrix_shape, to_matrix

    dram = np.zeros(program.dram_bytes, np.uint8)
    dram[:program.image.size] = program.image
    for name, x in feeds.items():
        addr, shape = program.tensors[name]
        x = np.asarray(x)
        if x.dtype != np.int8 or tuple(x.shape) != shape:
            raise CosimError(f"the NPU input {name!r} must be int8 of shape {shape}, not "
                             f"{x.dtype} of shape {x.shape}.")
        raw = np.ascontiguousarray(to_matrix(x)).reshape(-1).view(np.uint8)
        dram[addr:addr + raw.size] = raw
    report, final = cosim_instrs(program.config, program.instrs, dram, program.layers)
    outputs = {}
    for name, (addr, shape) in program.tensors.items():
        if name in feeds:
            continue
        rows, cols = matrix_shape(shape)
        outputs[name] = from_matrix(final[addr:addr + rows * cols].view(np.int8)
                                    .reshape(rows, cols), shape)
    return report, outputs


def merge_reports(reports: Sequence[CosimReport]) -> CosimReport:
    """One report for several programs run one after the other (the NPU
    segments of a model): layers concatenated, cycles summed."""
    if not reports:
        raise CosimError("the model has no NPU segment to co-simulate.")
    layers = [lc for r in reports for lc in r.layers if lc.name != "(untagged)" or lc.rtl]
    return CosimReport(reports[0].dim, sum(r.rtl_cycles for r in reports),
                       sum(r.model_cycles for r in reports), layers,
                       sum(r.stores_checked for r in reports),
                       sum(r.instructions for r in reports))


def cosim_model(graph, feeds: Mapping[str, np.ndarray], config: NpuConfig
                ) -> tuple[CosimReport, dict[str, np.ndarray]]:
    """Compiles an integer graph (``QdqToInt`` output) for ``npu`` with fallback
    to ``ref``, lowers each NPU segment for ``config`` and co-simulates it on
    the values the model computes; returns the merged report and the model's
    outputs (NPU segments' values from the simulator)."""
    import warnings

    import heli
    from heli.target import CompileOptions
    from heli.targets.npu.target import NpuTarget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", heli.FallbackWarning)
        compiled = heli.compile(graph, "npu", fallback=("ref",))
        spec = compiled.specialize({k: tuple(np.shape(v)) for k, v in feeds.items()})
    target = NpuTarget(config)
    env = {**spec.graph.constants, **feeds}
    reports = []
    for stage in spec.stages:
        ins = {v.name: env[v.name] for v in stage.graph.inputs}
        if stage.target == "npu":
            program = target.compile(stage.graph, CompileOptions()).program
            report, outs = cosim_program(program, ins)
            reports.append(report)
            env.update({v.name: outs[v.name] for v in stage.graph.outputs})
        else:
            env.update(stage.executable.run(ins))
    return merge_reports(reports), {v.name: env[v.name] for v in spec.graph.outputs}


# -- the comparison table of docs/npu.md ----------------------------------------------

DOC_BEGIN = "<!-- BEGIN GENERATED: npu-cosim (python -m heli.targets.npu.cosim) -->"
DOC_END = "<!-- END GENERATED: npu-cosim -->"
_WORDS = ("invoice", "total", "Heli", "compiler", "2024-06-01", "many chips", "OCR line",
          "hello world", "receipt", "Zurich", "number 42", "systolic")


def _cls_case():
    """PP-OCRv4's direction classifier, int8 (calibrated on rendered text lines,
    every other one turned), and one held-out line."""
    from heli.passes import QdqToInt
    from heli.quant import quantize
    from heli.testing import ocr_input, ppocr_model, render_text

    def line(word: str, k: int) -> np.ndarray:
        return ocr_input(render_text(word, height=48, width=192, font_size=18 + 2 * (k % 7),
                                     rotate=k % 2 == 1))

    calib = [{"x": line(w, k)} for k, w in enumerate(_WORDS)]
    qgraph = QdqToInt().apply(quantize(str(ppocr_model("cls")), calib,
                                       input_shapes={"x": (1, 3, 48, 192)}, outputs=True))
    return qgraph, line("cycle model", 1)


def doc_table(dims: Sequence[int] = (8, 16)) -> str:
    """The Markdown of docs/npu.md's "RTL cycles vs the cycle model"."""
    qgraph, x = _cls_case()
    reports = {d: cosim_model(qgraph, {"x": x}, NpuConfig(dim=d))[0] for d in dims}
    head = "| layer | " + " | ".join(f"DIM {d}: RTL | model | delta" for d in dims) + " |"
    lines = ["<!-- Do not edit by hand: generated by python -m heli.targets.npu.cosim. -->", "",
             "**PP-OCR direction classifier** (`heli.testing.ppocr_model(\"cls\")`), "
             "**int8, 1x3x48x192**, every NPU segment "
             "co-simulated (outputs and every DRAM write bit-exact with the simulator). "
             "A layer's cycles are how far it moves the finishing front (they sum to the "
             "total).", "", head, "|---|" + "---|---|---|" * len(dims)]
    by_name = {d: {lc.name: lc for lc in reports[d].layers} for d in dims}
    for lc in reports[dims[0]].layers:
        cells = []
        for d in dims:
            other = by_name[d].get(lc.name, LayerCycles(lc.name, 0, 0))
            cells.append(f"{other.rtl:,} | {other.model:,} | {other.delta:+.1%}")
        lines.append(f"| `{lc.name}` | " + " | ".join(cells) + " |")
    total = []
    for d in dims:
        r = reports[d]
        t = LayerCycles("total", r.rtl_cycles, r.model_cycles)
        total.append(f"**{t.rtl:,}** | **{t.model:,}** | **{t.delta:+.1%}**")
    lines.append("| **total** | " + " | ".join(total) + " |")
    worst = ", ".join(f"DIM {d}: {max(abs(lc.delta) for lc in reports[d].layers):.1%}"
                      for d in dims)
    lines += ["", f"Largest per-layer difference: {worst}. The model is "
              f"`cycles.estimate` with its default `TimingParams`, which describe the RTL's "
              f"SRAM banks (4 per SRAM, the compute units first, the DMA on the ports they "
              f"leave free)."]
    return "\n".join(lines)


def _write_doc(path: Path) -> None:
    table = doc_table()
    text = path.read_text()                  # read after the minutes the table takes
    block = f"{DOC_BEGIN}\n\n{table}\n\n{DOC_END}"
    if DOC_BEGIN in text:
        a, b = text.index(DOC_BEGIN), text.index(DOC_END) + len(DOC_END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    _write_doc(Path(__file__).resolve().parents[3] / "docs" / "npu.md")
