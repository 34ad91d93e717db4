"""Design-space exploration of the reference NPU (``heli npu dse``).

For every configuration of a grid (array DIM x scratchpad size x accumulator
size x DRAM bandwidth) a model is compiled with the real compiler and timed
with the cycle model, and the NPU's area is estimated from its RTL:

* the model (a float ONNX file) is quantized to int8 once (calibrated on a few
  random inputs: cycles do not depend on the values; a model that is already
  QDQ is used as it is) and fused into integer ops
  (:class:`heli.passes.QdqToInt`, the default pipeline);
* per configuration it is partitioned onto ``NpuTarget(config)`` with fallback
  to ``ref``, each NPU segment lowered (:func:`heli.targets.npu.lower.lower`)
  and scheduled by :func:`heli.targets.npu.cycles.estimate`; the segments run
  one after the other, so their cycles, MACs and DRAM traffic add up;
* a configuration *fits* when every layer that the NPU could run with SRAMs of
  the largest addressable size also fits this configuration's SRAMs: a layer
  whose smallest tile does not fit would silently fall back to ``ref`` and
  make the NPU look faster, so such a configuration is reported as
  ``partial`` (some layers) or ``no fit`` (all of them) and kept off the
  Pareto front;
* the area is :func:`heli.targets.npu.area.area` (Yosys synthesis, cached).

:func:`explore` runs the configurations in parallel processes and
:func:`write_outputs` writes ``dse.csv``, ``dse.md`` and ``pareto.png``, each
atomically.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from heli._errors import HeliError, InputError
from heli.targets.npu.config import SRAM_ADDR_BITS, NpuConfig
from heli.targets.npu.errors import NpuError
from heli.targets.npu.rtl.params import MAX_RTL_DIM, parse_size

#: Statuses of a configuration.
FITS, PARTIAL, NO_FIT, ERROR = "fits", "partial", "no fit", "error"
#: Calibration samples of the int8 quantization (random normal inputs).
CALIBRATION_SAMPLES = 2

CSV_NAME, MD_NAME, PNG_NAME = "dse.csv", "dse.md", "pareto.png"


class DseError(NpuError, InputError):
    """A bad design-space specification (a list, a size, a DIM)."""


# --------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------


def parse_list(text: str, option: str, parse: Callable[[str], int] = int) -> list[int]:
    """``"8,16,32"`` as ``[8, 16, 32]`` (``parse`` turns one item into an
    int, e.g. :func:`parse_size`); DseError naming ``option`` otherwise."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise DseError(f"{option} {text!r} is not a comma-separated list (e.g. 8,16,32).")
    values = []
    for item in items:
        try:
            value = parse(item)
        except ValueError:
            raise DseError(f"{option} {text!r}: {item!r} is not a valid value "
                           f"(e.g. {'8,16,32' if parse is int else '128K,256K'}).") from None
        if value < 1:
            raise DseError(f"{option} {text!r}: {item!r} must be positive.")
        if value not in values:
            values.append(value)
    return values


def parse_sizes(text: str, option: str) -> list[int]:
    """A list of byte sizes: ``"128K,256K"``."""
    return parse_list(text, option, parse_size)


def grid(dims: Sequence[int], spads: Sequence[int], accs: Sequence[int],
         bandwidths: Sequence[int], **fixed: int) -> list[NpuConfig]:
    """Every combination, DIM outermost; DseError for a DIM that is not a
    power of two the RTL builds, or for sizes no NPU can have."""
    for dim in dims:
        if dim < 2 or dim & (dim - 1) or dim > MAX_RTL_DIM:
            raise DseError(f"--dim {dim!r} is not a power of two between 2 and {MAX_RTL_DIM}.")
    configs = []
    for dim in dims:
        for spad in spads:
            for acc in accs:
                for bw in bandwidths:
                    try:
                        configs.append(NpuConfig(dim=dim, spad_bytes=spad, acc_bytes=acc,
                                                 dram_bytes_per_cycle=bw, **fixed))
                    except NpuError as err:
                        raise DseError(f"The configuration DIM {dim}, scratchpad {spad} B, "
                                       f"accumulator {acc} B, {bw} B/cycle is invalid: "
                                       f"{err}") from None
    return configs


def label(cfg: NpuConfig) -> str:
    """A short name of a configuration: ``16/256K/16B`` (DIM, scratchpad,
    DRAM bytes per cycle)."""
    return f"{cfg.dim}/{_kib(cfg.spad_bytes)}/{cfg.dram_bytes_per_cycle}B"


def _kib(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else f"{n}B"


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------


def prepare_model(path: str | os.PathLike, input_shapes: dict | None = None):
    """The integer graph of the model at ``path``: quantized to int8 (unless it
    is QDQ already) and fused into the NPU's integer ops; a dynamic batch
    dimension is bound to 1, other dynamic dimensions by ``input_shapes``."""
    import numpy as np

    from heli.frontend.onnx import import_onnx
    from heli.passes import PassManager, QdqToInt, default_pipeline
    from heli.quant import quantize

    graph = import_onnx(str(path))
    shapes = {v.name: _static_shape(v, dict(input_shapes or {})) for v in graph.inputs}
    if not any(n.op.name == "QuantizeLinear" for n in graph.nodes):
        rng = np.random.default_rng(0)
        samples = [{name: rng.standard_normal(shape).astype(np.float32)
                    for name, shape in shapes.items()} for _ in range(CALIBRATION_SAMPLES)]
        graph = quantize(graph, samples, input_shapes=shapes, outputs=True)
    return PassManager(default_pipeline()).run(QdqToInt().apply(graph))


def _static_shape(value, given: dict) -> tuple[int, ...]:
    """The shape of input ``value``: as given, else its own with a dynamic
    leading (batch) dimension bound to 1; InputError for other dynamic ones."""
    if value.name in given:
        return tuple(given[value.name])
    shape = tuple(value.type.shape)
    if shape and not isinstance(shape[0], int):
        shape = (1, *shape[1:])
    if any(not isinstance(d, int) for d in shape):
        raise InputError(f"The model input {value.name!r} has the dynamic shape "
                         f"{tuple(value.type.shape)!r}: give it with --input-shape "
                         f"{value.name}=D0,D1,...")
    return shape


def model_macs(graph) -> int:
    """Multiply-accumulates of the whole model (its convolutions and matmuls)."""
    from heli.cli._explain import node_macs

    return sum(node_macs(n) for n in graph.nodes)


# --------------------------------------------------------------------------
# one configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """What one configuration gives: performance (None where it does not
    compile), area (None where it could not be estimated) and why."""

    config: NpuConfig
    status: str                       # FITS, PARTIAL, NO_FIT or ERROR
    note: str = ""
    cycles: int | None = None
    macs: int = 0                     # MACs run on the NPU
    model_macs: int = 0
    dram_bytes: int | None = None
    area_mm2: float | None = None
    logic_mm2: float | None = None
    sram_mm2: float | None = None
    pareto: bool = False

    @property
    def seconds(self) -> float | None:
        return None if self.cycles is None else self.cycles / self.config.clock_hz

    @property
    def utilization(self) -> float | None:
        """NPU MACs / (DIM² · cycles)."""
        if not self.cycles:
            return None
        return self.macs / (self.config.dim ** 2 * self.cycles)

    @property
    def mac_share(self) -> float | None:
        """Share of the model's MACs that run on the NPU."""
        return self.macs / self.model_macs if self.model_macs else None

    @property
    def comparable(self) -> bool:
        """Fits, and both latency and area are known: a candidate of the front."""
        return self.status == FITS and self.cycles is not None and self.area_mm2 is not None


def largest(cfg: NpuConfig) -> NpuConfig:
    """``cfg`` with the largest SRAMs a row address reaches (to tell layers that
    do not fit ``cfg`` from layers the NPU cannot run at all)."""
    rows = 1 << SRAM_ADDR_BITS
    return replace(cfg, spad_bytes=rows * cfg.dim, acc_bytes=rows * 4 * cfg.dim)


def misfits(graph, cfg: NpuConfig) -> tuple[int, list[str]]:
    """How many layers the NPU runs at all, and why those that do not fit
    ``cfg`` do not (one line each)."""
    from heli.targets.npu.lower import plan_node

    big = largest(cfg)
    runnable, why = 0, []
    for node in graph.nodes:
        if isinstance(plan_node(node, big), str):
            continue
        runnable += 1
        plan = plan_node(node, cfg)
        if isinstance(plan, str):
            why.append(plan)
    return runnable, why


def npu_programs(graph, cfg: NpuConfig) -> list:
    """The lowered programs (:class:`heli.targets.npu.lower.Program`) of the
    NPU segments of ``graph`` partitioned onto ``cfg`` with fallback to ``ref``."""
    from heli.partition import partition
    from heli.targets.npu.lower import lower
    from heli.targets.npu.target import NpuTarget
    from heli.targets.ref import RefTarget

    segments, _ = partition(graph, [NpuTarget(cfg), RefTarget()])
    return [lower(s.graph, cfg) for s in segments if s.target.name == "npu"]


def performance(graph, cfg: NpuConfig, total_macs: int) -> Result:
    """Cycles, MACs and DRAM traffic of ``graph`` on ``cfg`` (no area)."""
    from heli.targets.npu.cycles import estimate

    runnable, why = misfits(graph, cfg)
    if runnable == 0:
        return Result(cfg, NO_FIT, "no layer of the model is an NPU op",
                      model_macs=total_macs)
    if len(why) == runnable:
        return Result(cfg, NO_FIT, f"no layer fits the SRAMs: {why[0]}", model_macs=total_macs)
    cycles = macs = dram = 0
    for program in npu_programs(graph, cfg):
        report = estimate(program.instrs, cfg, layers=program.layers)
        cycles += report.cycles
        macs += report.macs
        dram += report.dram_bytes
    status, note = FITS, ""
    if why:
        status = PARTIAL
        note = f"{len(why)} of {runnable} NPU layers do not fit the SRAMs: {why[0]}"
    return Result(cfg, status, note, cycles, macs, total_macs, dram)


def with_area(result: Result) -> Result:
    """``result`` with the area of its configuration (a note where it failed)."""
    from heli.targets.npu.area import area

    try:
        report = area(result.config)
    except HeliError as err:
        note = "; ".join(x for x in (result.note, f"no area: {err}") if x)
        return replace(result, note=note)
    return replace(result, area_mm2=report.total_mm2, logic_mm2=report.logic_um2 * 1e-6,
                   sram_mm2=report.sram_um2 * 1e-6)


def evaluate(graph, cfg: NpuConfig, total_macs: int, area: bool = True) -> Result:
    """One configuration: performance, then (with ``area``) its area.  Errors
    of the compiler or the models are reported in the result, not raised."""
    try:
        result = performance(graph, cfg, total_macs)
    except HeliError as err:
        result = Result(cfg, ERROR, str(err), model_macs=total_macs)
    return with_area(result) if area else result


# --------------------------------------------------------------------------
# the whole grid, in parallel
# --------------------------------------------------------------------------

_GRAPH = None        # the model, prepared once in each worker process


def _init_worker(model: str, input_shapes: dict | None) -> None:
    global _GRAPH
    _GRAPH = prepare_model(model, input_shapes)


def _evaluate_in_worker(cfg: NpuConfig, total_macs: int, area: bool) -> Result:
    return evaluate(_GRAPH, cfg, total_macs, area)


def explore(model: str | os.PathLike, configs: Sequence[NpuConfig], jobs: int = 1,
            area: bool = True, input_shapes: dict | None = None,
            progress: Callable[[Result], None] | None = None) -> list[Result]:
    """Every configuration evaluated on the model at ``model`` (in ``jobs``
    processes, each preparing the model once: graphs do not pickle), in the
    order of ``configs``, the Pareto front marked; ``progress`` is called as
    each finishes.  The model is prepared here first, so that a bad one
    fails before any worker starts."""
    graph = prepare_model(model, input_shapes)
    total = model_macs(graph)
    results: dict[int, Result] = {}
    if jobs <= 1 or len(configs) <= 1:
        for k, cfg in enumerate(configs):
            results[k] = evaluate(graph, cfg, total, area)
            if progress:
                progress(results[k])
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(configs)), mp_context=_context(),
                                 initializer=_init_worker,
                                 initargs=(str(model), input_shapes)) as pool:
            futures = {pool.submit(_evaluate_in_worker, configs[k], total, area): k
                       for k in _schedule(configs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if progress:
                    progress(results[futures[future]])
    return mark_pareto([results[k] for k in range(len(configs))])


def _context():
    """``fork`` where there is one: ``spawn`` and ``forkserver`` re-import the
    main module, and ``python -m heli``'s runs the command again."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork") if "fork" in methods else None


def _schedule(configs: Sequence[NpuConfig]) -> list[int]:
    """The order to start the configurations in: the largest arrays first (the
    longest syntheses), and configurations that differ only in DRAM bandwidth
    (the same RTL, synthesized once) in different rounds, so that parallel
    workers do not wait on one synthesis but find it in the cache."""
    return sorted(range(len(configs)), key=lambda k: (
        configs[k].dram_bytes_per_cycle, -configs[k].dim, -configs[k].spad_bytes, k))


def mark_pareto(results: Sequence[Result]) -> list[Result]:
    """``results`` with ``pareto`` set on those no other comparable result
    beats in both latency and area (and is at least as good in the other)."""
    pts = [r for r in results if r.comparable]

    def dominated(r: Result) -> bool:
        return any(o.cycles <= r.cycles and o.area_mm2 <= r.area_mm2
                   and (o.cycles < r.cycles or o.area_mm2 < r.area_mm2) for o in pts)

    return [replace(r, pareto=r.comparable and not dominated(r)) for r in results]


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------

CSV_FIELDS = ("dim", "spad_bytes", "acc_bytes", "dram_bytes_per_cycle", "clock_hz", "status",
              "cycles", "latency_ms", "mac_utilization", "dram_bytes", "area_mm2",
              "logic_mm2", "sram_mm2", "npu_mac_share", "pareto", "note")


def _opt(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def to_csv(results: Sequence[Result]) -> str:
    """One row per configuration, plain numbers (latency in ms, area in mm²)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in results:
        c = r.config
        w.writerow([c.dim, c.spad_bytes, c.acc_bytes, c.dram_bytes_per_cycle, c.clock_hz,
                    r.status, _opt(r.cycles, "d"),
                    _opt(None if r.seconds is None else r.seconds * 1e3, ".6f"),
                    _opt(r.utilization, ".4f"), _opt(r.dram_bytes, "d"),
                    _opt(r.area_mm2, ".4f"), _opt(r.logic_mm2, ".4f"),
                    _opt(r.sram_mm2, ".4f"), _opt(r.mac_share, ".4f"),
                    int(r.pareto), r.note])
    return out.getvalue()


def to_markdown(results: Sequence[Result]) -> str:
    """The table as Markdown (Pareto-optimal configurations in bold)."""
    lines = ["| DIM | scratchpad | accumulator | DRAM B/cycle | fits | cycles | latency (ms) "
             "| MAC util. | DRAM traffic (MB) | area (mm²) | NPU MAC share | Pareto |",
             "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        c = r.config
        status = r.status if r.status == FITS else f"{r.status}: {r.note}".replace("|", "\\|")
        cells = [str(c.dim), _kib(c.spad_bytes), _kib(c.acc_bytes),
                 str(c.dram_bytes_per_cycle), status,
                 "–" if r.cycles is None else f"{r.cycles:,}",
                 "–" if r.seconds is None else f"{r.seconds * 1e3:.3f}",
                 "–" if r.utilization is None else f"{100 * r.utilization:.1f}%",
                 "–" if r.dram_bytes is None else f"{r.dram_bytes / 1e6:.2f}",
                 "–" if r.area_mm2 is None else f"{r.area_mm2:.3f}",
                 "–" if r.mac_share is None else f"{100 * r.mac_share:.2f}%",
                 "**yes**" if r.pareto else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file in the same folder."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(results: Sequence[Result], out_dir: str | os.PathLike,
                  title: str = "") -> list[Path]:
    """``dse.csv``, ``dse.md`` and ``pareto.png`` in ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {CSV_NAME: to_csv(results).encode(), MD_NAME: to_markdown(results).encode(),
             PNG_NAME: pareto_png(results, title)}       # everything built before any write
    for name, data in files.items():
        write_atomic(out / name, data)
    return [out / name for name in files]


# --------------------------------------------------------------------------
# the Pareto plot
# --------------------------------------------------------------------------

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Offsets (points) tried for a label, nearest first; beyond the first ring a
#: leader line joins label and point.
_RINGS = (9, 18, 30, 45, 62)
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


def pareto_png(results: Sequence[Result], title: str = "") -> bytes:
    """Latency against area of the configurations that fit (PNG bytes): colour
    by DIM, marker by DRAM bandwidth, the Pareto front as a line and rings,
    every point labelled ``DIM/scratchpad/bandwidth`` without overlaps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    pts = [r for r in results if r.comparable]
    fig = Figure(figsize=(11, 7), dpi=130, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    dims = sorted({r.config.dim for r in results})
    bws = sorted({r.config.dram_bytes_per_cycle for r in results})
    colors = {d: f"C{k % 10}" for k, d in enumerate(dims)}
    markers = {b: _MARKERS[k % len(_MARKERS)] for k, b in enumerate(bws)}
    for r in pts:
        ax.scatter(r.area_mm2, r.seconds * 1e3, s=55, color=colors[r.config.dim],
                   marker=markers[r.config.dram_bytes_per_cycle], zorder=3)
    front = sorted((r for r in pts if r.pareto), key=lambda r: r.area_mm2)
    if front:
        ax.step([r.area_mm2 for r in front], [r.seconds * 1e3 for r in front], where="post",
                color="0.25", linewidth=1.2, linestyle="--", zorder=2)
        ax.scatter([r.area_mm2 for r in front], [r.seconds * 1e3 for r in front], s=190,
                   facecolors="none", edgecolors="black", linewidths=1.4, zorder=4)
    _scales(ax, pts)
    if not pts:
        ax.text(0.5, 0.5, "no configuration both fits the model and has an area estimate\n"
                "(were the SRAMs too small, or the area skipped with --no-area?)",
                transform=ax.transAxes, ha="center", va="center", fontsize=11, color="0.3")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("NPU area (mm², 45 nm: logic from Yosys + SRAM macros)")
    clock = {r.config.clock_hz for r in results}
    at = f" at {next(iter(clock)) / 1e9:g} GHz" if len(clock) == 1 else ""
    ax.set_ylabel(f"latency of one inference (ms{at}, cycle model)")
    ax.set_title(title or "NPU design space: latency vs area")
    ax.grid(True, which="both", color="0.9", linewidth=0.6)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=8, color=colors[d],
                      label=f"DIM {d} ({d}x{d} array)") for d in dims]
    handles += [Line2D([], [], linestyle="", marker=markers[b], markersize=8, color="0.4",
                       label=f"DRAM {b} B/cycle") for b in bws]
    handles += [Line2D([], [], linestyle="--", color="0.25", marker="o", markersize=11,
                       markerfacecolor="none", markeredgecolor="black", label="Pareto front")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
              title="label: DIM/scratchpad/bandwidth", title_fontsize=9, fontsize=9)
    left_out = [r for r in results if not r.comparable]
    if left_out:
        lines = [f"{label(r.config)}: {r.status if r.status != FITS else 'no area'}"
                 for r in left_out[:12]] + (["..."] if len(left_out) > 12 else [])
        ax.text(1.02, 0.0, "not plotted (SRAMs too small\nfor some layers, or no area):\n"
                + "\n".join(lines), transform=ax.transAxes, va="bottom", ha="left",
                fontsize=8.5, color="0.3")
    canvas.draw()
    _place_labels(ax, canvas.get_renderer(), pts)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _scales(ax, pts: Sequence[Result]) -> None:
    """Log axes where the values span more than a factor of 4, with plain
    numbers as tick labels; a margin so that labels fit inside."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    for values, axis, set_scale in (([r.area_mm2 for r in pts], ax.xaxis, ax.set_xscale),
                                    ([r.seconds * 1e3 for r in pts], ax.yaxis, ax.set_yscale)):
        if values and min(values) > 0 and max(values) / min(values) > 4:
            set_scale("log")
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.margins(0.12)


def _place_labels(ax, renderer, pts: Sequence[Result]) -> None:
    """One label per point at the first offset whose text overlaps no other
    label, no point and stays inside the axes (Pareto points placed first)."""
    trans = ax.transData
    marks = [trans.transform((r.area_mm2, r.seconds * 1e3)) for r in pts]
    frame = ax.get_window_extent(renderer)
    scale = renderer.points_to_pixels(1.0)
    taken: list = []
    order = sorted(range(len(pts)), key=lambda k: (not pts[k].pareto, k))
    for k in order:
        r, best = pts[k], None
        for ring in _RINGS:
            for dx, dy in _DIRECTIONS:
                text = _annotation(ax, r, (dx * ring, dy * ring), ring > _RINGS[0])
                box = text.get_window_extent(renderer).expanded(1.08, 1.15)
                cost = sum(_overlap(box, t) for t in taken)
                cost += sum(_overlap(box, _around(m, 7 * scale)) for m in marks)
                cost += _outside(box, frame)
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, text, box)
                else:
                    text.remove()
                if cost == 0:
                    break
            if best[0] == 0:
                break
        taken.append(best[2])


def _annotation(ax, r: Result, offset: tuple[float, float], leader: bool):
    dx, dy = offset
    return ax.annotate(
        label(r.config), (r.area_mm2, r.seconds * 1e3), xytext=(dx, dy),
        textcoords="offset points", fontsize=8.5,
        ha="left" if dx > 0 else "right" if dx < 0 else "center",
        va="bottom" if dy > 0 else "top" if dy < 0 else "center",
        fontweight="bold" if r.pareto else "normal", zorder=5,
        arrowprops={"arrowstyle": "-", "color": "0.55", "linewidth": 0.6,
                    "shrinkA": 0, "shrinkB": 4} if leader else None)


def _around(xy, half: float):
    from matplotlib.transforms import Bbox

    return Bbox([[xy[0] - half, xy[1] - half], [xy[0] + half, xy[1] + half]])


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box, frame) -> float:
    inside = _overlap(box, frame)
    return 4 * (box.width * box.height - inside)
