"""Lowering of the integer ops (``heli:QConv``, ``QMatMul``, ``QAdd``,
``QMaxPool``, ``QLut``) onto the NPU's ISA: one program per graph segment, tiled to the
configured SRAMs and double-buffered (see ``docs/npu.md``, "Data layouts" and
the double-buffered loop of "Queues and synchronization").

**DRAM image.** Every tensor lives in DRAM as a row-major ``(rows, C)`` int8
matrix: a 4-D (NCHW) tensor as NHWC (``rows = N·H·W``, ``C`` channels), any
other tensor with its last axis as ``C``.  Constants (weights rearranged into
K×DIM blocks, per-channel bias / multiplier / shift rows, fill rows) come first,
then the segment's inputs, intermediates and outputs, each in its own region.

**Tiles.** Each layer is a sequence of tiles; a tile loads its operands into
buffer ``t % nbuf`` of the scratchpad and accumulator, computes, and stores.
Tile ``t >= nbuf`` waits for the store of tile ``t - nbuf`` to free its
buffer; a layer starts after the last store of the previous one (its input
is that layer's output in DRAM).  ``nbuf`` is 2 when two buffers fit, else 1;
a layer whose smallest tile does not fit even once is refused with the sizes
it needs (:func:`plan_node` returns the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from heli._errors import TargetError
from heli.ir._graph import Graph, Node
from heli.ir._types import TensorType
from heli.targets.npu import isa
from heli.targets.npu.arith import wrap_int32
from heli.targets.npu.config import NpuConfig
from heli.targets.npu.isa import Instr, Mem, Queue

_ALIGN = 64
MAX_INNER = 4095          # matmul / pooling `rows` and `outer` are 12-bit
MAX_ROWS = 65535          # DMA and vector `rows` are 16-bit
SUPPORTED_OPS = ("QConv", "QMatMul", "QAdd", "QMaxPool", "QLut")


class NpuCompileError(TargetError):
    """A layer cannot be lowered onto the configured NPU (e.g. it needs more SRAM)."""


def _blocks(n: int, dim: int) -> list[tuple[int, int]]:
    return [(s, min(dim, n - s)) for s in range(0, n, dim)]


def _static(t) -> tuple[int, ...] | None:
    if isinstance(t, TensorType) and t.shape is not None and all(isinstance(d, int)
                                                                 for d in t.shape):
        return tuple(t.shape)
    return None


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (rows, C) DRAM matrix of a tensor of ``shape``."""
    if len(shape) == 4:
        return shape[0] * shape[2] * shape[3], shape[1]
    c = shape[-1] if shape else 1
    return int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1, c


def to_matrix(x: np.ndarray) -> np.ndarray:
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, x.shape[1])
    return np.ascontiguousarray(x).reshape(matrix_shape(x.shape))


def from_matrix(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 4:
        n, c, h, w = shape
        return np.ascontiguousarray(m.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    return m.reshape(shape)


# --------------------------------------------------------------------------
# layer descriptions (target-level view of one node)
# --------------------------------------------------------------------------


@dataclass
class ConvSpec:
    """A QConv, or a QMatMul seen as a 1x1 convolution over rows x 1 pixels."""

    n: int
    h: int
    w: int
    c: int
    co: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pads: tuple[int, int, int, int]
    group: int
    oh: int = 0
    ow: int = 0

    def __post_init__(self) -> None:
        pt, pl, pb, pr = self.pads
        self.oh = (self.h + pt + pb - (self.kh - 1) * self.dh - 1) // self.sh + 1
        self.ow = (self.w + pl + pr - (self.kw - 1) * self.dw - 1) // self.sw + 1

    @property
    def pitch(self) -> int:
        return self.w + self.pads[1] + self.pads[3]

    def in_rows(self, t: int) -> int:
        return (t - 1) * self.sh + (self.kh - 1) * self.dh + 1

    def ci_blocks_for(self, co0: int, cnt: int, dim: int) -> list[tuple[int, int]]:
        """Input-channel blocks that the output channels co0..co0+cnt-1 read."""
        cig, cog = self.c // self.group, self.co // self.group
        g0, g1 = co0 // cog, (co0 + cnt - 1) // cog
        lo, hi = g0 * cig, (g1 + 1) * cig
        return [(s, k) for s, k in _blocks(self.c, dim) if s < hi and s + k > lo]


@dataclass
class Tiling:
    t: int          # output rows (conv / pool) or matrix rows (add) per tile
    nbuf: int
    spad: int       # rows per buffer
    acc: int


def _choose(total: int, cfg: NpuConfig, need, what: str, cap: int) -> Tiling | str:
    """The largest tile (≤ total, ≤ cap) whose buffers fit, preferring two."""
    for nbuf in (2, 1):
        best = None
        lo, hi = 1, min(total, cap)
        while lo <= hi:          # need() grows with t: binary search
            mid = (lo + hi) // 2
            spad, acc = need(mid)
            if nbuf * spad <= min(cfg.spad_rows, MAX_ROWS) and nbuf * acc <= cfg.acc_rows:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best is not None:
            spad, acc = need(best)
            return Tiling(best, nbuf, spad, acc)
    spad, acc = need(1)
    return (f"{what} needs at least {spad} scratchpad rows and {acc} accumulator rows for its "
            f"smallest tile, but the NPU (DIM = {cfg.dim}) has {cfg.spad_rows} scratchpad "
            f"and {cfg.acc_rows} accumulator rows")


def conv_spec(node: Node) -> ConvSpec:
    if node.op.name == "QConv":
        n, c, h, w = _static(node.inputs[0].type)
        co, _, kh, kw = _static(node.inputs[1].type)
        (sh, sw), (dh, dw) = node.attr("strides"), node.attr("dilations")
        return ConvSpec(n, h, w, c, co, kh, kw, sh, sw, dh, dw, tuple(node.attr("pads")),
                        node.attr("group"))
    rows, k = matrix_shape(_static(node.inputs[0].type))
    _, nout = _static(node.inputs[1].type)
    return ConvSpec(1, rows, 1, k, nout, 1, 1, 1, 1, 1, 1, (0, 0, 0, 0), 1)


def _conv_need(spec: ConvSpec, dim: int):
    nci = max(len(spec.ci_blocks_for(s, k, dim)) for s, k in _blocks(spec.co, dim))
    wrows = max(spec.kh * spec.kw * sum(k for _, k in spec.ci_blocks_for(s, c, dim))
                for s, c in _blocks(spec.co, dim))

    def need(t: int) -> tuple[int, int]:
        out = t * spec.ow
        return nci * spec.in_rows(t) * spec.pitch + wrows + out, out + 2
    return need


def _pool_need(spec: ConvSpec):
    def need(t: int) -> tuple[int, int]:
        return spec.in_rows(t) * spec.pitch + t * spec.ow, 0
    return need


def plan_node(node: Node, cfg: NpuConfig) -> Tiling | str:
    """The tiling of ``node`` on ``cfg``, or why it cannot run there."""
    name = node.op.name
    if node.op.domain != "heli" or name not in SUPPORTED_OPS:
        return (f"{node.op.qualname} is not an NPU op (the NPU runs "
                f"{', '.join('heli:' + o for o in SUPPORTED_OPS)})")
    shapes = [_static(v.type) if v is not None else () for v in (*node.inputs, *node.outputs)]
    if any(s is None for s in shapes):
        return "the NPU needs static shapes"
    label = f"{name} node {node.name!r}"
    if name in ("QConv", "QMatMul"):
        if name == "QMatMul" and not 1 <= len(shapes[0]) <= 3:
            return "the NPU runs QMatMul with a 1-D to 3-D A only"
        spec = conv_spec(node)
        if spec.ow > MAX_INNER or spec.sw > 255 or spec.sh * spec.pitch > 65535:
            return f"the output rows ({spec.ow} pixels) are too wide for one matmul"
        return _choose(spec.oh, cfg, _conv_need(spec, cfg.dim), label, MAX_INNER)
    if name == "QMaxPool":
        n, c, h, w = shapes[0]
        (kh, kw), (sh, sw) = node.attr("kernel_shape"), node.attr("strides")
        spec = ConvSpec(n, h, w, c, c, kh, kw, sh, sw, 1, 1, tuple(node.attr("pads")), c)
        if spec.ow > MAX_INNER or sw > 255 or sh * spec.pitch > 65535:
            return f"the output rows ({spec.ow} pixels) are too wide for one pooling step"
        return _choose(spec.oh, cfg, _pool_need(spec), label, MAX_INNER)
    if name == "QLut":
        rows, _ = matrix_shape(shapes[0])
        return _choose(rows, cfg, lambda t: (t + cfg.lut_rows, 0), label, MAX_ROWS)
    # QAdd
    if shapes[0] != shapes[1] or len(shapes[0]) == 0:
        return "the NPU adds tensors of the same shape (rank >= 1) only"
    rows, _ = matrix_shape(shapes[0])
    return _choose(rows, cfg, lambda t: (3 * t, t), label, MAX_ROWS)


# --------------------------------------------------------------------------
# the program builder
# --------------------------------------------------------------------------


@dataclass
class Program:
    """A lowered segment: instructions, the constant part of the DRAM image,
    and where each tensor lives."""

    config: NpuConfig
    instrs: list[Instr]
    image: np.ndarray                          # constants, at address 0
    dram_bytes: int
    tensors: dict[str, tuple[int, tuple[int, ...]]]   # name -> (address, logical shape)
    layers: list[tuple[int, int, str]]         # (first, last, node name) per layer
    macs: dict[str, int] = field(default_factory=dict)


class _Builder:
    def __init__(self, cfg: NpuConfig) -> None:
        self.cfg, self.dim = cfg, cfg.dim
        self.instrs: list[Instr] = []
        self.blobs: list[tuple[int, bytes]] = []
        self.top = 0
        self.fills: dict[int, int] = {}

    def alloc(self, nbytes: int) -> int:
        addr = self.top
        self.top += -(-max(nbytes, 1) // _ALIGN) * _ALIGN
        return addr

    def const(self, data: np.ndarray) -> int:
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1).tobytes()
        addr = self.alloc(len(raw))
        self.blobs.append((addr, raw))
        return addr

    def fill_row(self, value: int) -> int:
        """A DRAM row of DIM int8 ``value`` (DMA'd with stride 0 to fill padding)."""
        if value not in self.fills:
            self.fills[value] = self.const(np.full(self.dim, value, np.int8))
        return self.fills[value]

    def emit_tiles(self, tiles: list[tuple[list[Instr], list[Instr], list[Instr]]],
                   nbuf: int, first_layer: bool, last_layer: bool) -> None:
        L, C, S = Queue.LOAD, Queue.COMPUTE, Queue.STORE
        out = self.instrs
        if not first_layer:
            out.append(isa.wait(queue=L, src=S))
        for t, (loads, computes, stores) in enumerate(tiles):
            if t >= nbuf:
                out.append(isa.wait(queue=L, src=S))
            out.extend(loads)
            out.append(isa.push(queue=L, dst=C))
            out.append(isa.wait(queue=C, src=L))
            out.extend(computes)
            out.append(isa.push(queue=C, dst=S))
            out.append(isa.wait(queue=S, src=C))
            out.extend(stores)
            if t + nbuf < len(tiles):
                out.append(isa.push(queue=S, dst=L))
        if not last_layer:
            out.append(isa.push(queue=S, dst=L))


def _load(mem, sram, dram, stride, rows, cols) -> Instr:
    return isa.dma_load(mem=mem, sram=sram, dram=dram, stride=stride, rows=rows, cols=cols)


def _fill_and_load_window(b: _Builder, spec: ConvSpec, x_addr: int, n: int, ih0: int,
                          rows_p: int, c0: int, ccnt: int, base: int, pad_value: int,
                          loads: list[Instr]) -> None:
    """Loads padded input rows ih0 .. ih0+rows_p-1 (padded coordinates) of channel
    block c0 into ``base`` (pitch P), the padding holding ``pad_value``."""
    pt, pl, _, pr = spec.pads
    p = spec.pitch
    h_first, h_last = max(ih0 - pt, 0), min(ih0 + rows_p - 1 - pt, spec.h - 1)
    padded = pl or pr or h_first != ih0 - pt or h_last != ih0 + rows_p - 1 - pt
    if padded:
        loads.append(_load(Mem.SPAD, base, b.fill_row(pad_value), 0, rows_p * p, ccnt))
    if h_last < h_first:
        return
    src = x_addr + ((n * spec.h + h_first) * spec.w) * spec.c + c0
    dst = base + (h_first + pt - ih0) * p + pl
    if p == spec.w:
        loads.append(_load(Mem.SPAD, dst, src, spec.c, (h_last - h_first + 1) * spec.w, ccnt))
    else:
        for h in range(h_last - h_first + 1):
            loads.append(_load(Mem.SPAD, dst + h * p, src + h * spec.w * spec.c, spec.c,
                               spec.w, ccnt))


def _lower_conv(b: _Builder, node: Node, graph: Graph, tiling: Tiling, x_addr: int,
                y_addr: int, first: bool, last: bool) -> int:
    dim, spec = b.dim, conv_spec(node)
    consts = graph.constants
    w = consts.get(node.inputs[1].name)
    bias = consts.get(node.inputs[2].name) if len(node.inputs) > 2 and node.inputs[2] else None
    if w is None or (len(node.inputs) > 2 and node.inputs[2] is not None and bias is None):
        raise NpuCompileError(f"{node.op.name} node {node.name!r}: the NPU needs constant "
                              f"weights and bias.")
    if node.op.name == "QMatMul":
        dense = w.astype(np.int64).T.reshape(spec.co, spec.c, 1, 1)
        x_zp = node.attr("a_zero_point")
    else:
        cig, cog = spec.c // spec.group, spec.co // spec.group
        dense = np.zeros((spec.co, spec.c, spec.kh, spec.kw), np.int64)
        for g in range(spec.group):   # group-sparse weights as one dense matrix
            dense[g * cog:(g + 1) * cog, g * cig:(g + 1) * cig] = w[g * cog:(g + 1) * cog]
        x_zp = node.attr("x_zero_point")
    mult = np.broadcast_to(np.asarray(node.attr("multiplier"), np.int64), (spec.co,))
    shift = np.broadcast_to(np.asarray(node.attr("shift"), np.int64), (spec.co,))
    b_full = np.zeros(spec.co, np.int64) if bias is None else bias.astype(np.int64)
    # z_x folds into the bias: sum (x - z_x) w = sum x w - z_x sum w
    b_full = wrap_int32(b_full - x_zp * dense.sum(axis=(1, 2, 3)))
    zp, lo, hi = node.attr("y_zero_point"), node.attr("lo"), node.attr("hi")

    t_max, nbuf = tiling.t, tiling.nbuf
    p, taps = spec.pitch, spec.kh * spec.kw
    need = _conv_need(spec, dim)
    nci_max = max(len(spec.ci_blocks_for(s, k, dim)) for s, k in _blocks(spec.co, dim))
    in_size = spec.in_rows(t_max) * p
    wrows_max = need(t_max)[0] - nci_max * in_size - t_max * spec.ow
    co_plans = []
    for co0, ccnt in _blocks(spec.co, dim):
        ci_blocks = spec.ci_blocks_for(co0, ccnt, dim)
        wblk = []
        for i in range(spec.kh):
            for j in range(spec.kw):
                for ci0, kcnt in ci_blocks:
                    blk = np.zeros((kcnt, dim), np.int8)
                    blk[:, :ccnt] = dense[co0:co0 + ccnt, ci0:ci0 + kcnt, i, j].T
                    wblk.append(blk)
        w_addr = b.const(np.concatenate(wblk))
        rows3 = np.zeros((3, dim), np.int32)
        rows3[0, :ccnt], rows3[1, :ccnt] = b_full[co0:co0 + ccnt], mult[co0:co0 + ccnt]
        rows3[2, :ccnt] = shift[co0:co0 + ccnt]
        co_plans.append((co0, ccnt, ci_blocks, w_addr, b.const(rows3.astype("<i4"))))

    contiguous = spec.sw == 1 and spec.sh * p == spec.ow
    tiles = []
    # the op's own MACs (the array does more: padded lanes, group-sparse blocks)
    macs = spec.n * spec.oh * spec.ow * spec.co * (spec.c // spec.group) * taps
    # The input window of a spatial tile is loaded once, with the first output
    # channel block, into the input region of buffer (spatial tile % nbuf), and
    # read by every channel block; weights, accumulators and outputs use buffer
    # (tile % nbuf).  A tile waits for the store of tile - nbuf, which follows
    # every compute of spatial tile - nbuf, so both regions are free in time.
    spatial = 0
    all_ci = _blocks(spec.c, dim)
    for n in range(spec.n):
        for oh0 in range(0, spec.oh, t_max):
            t = min(t_max, spec.oh - oh0)
            out_rows = t * spec.ow
            in_base = (spatial % nbuf) * tiling.spad
            spatial += 1
            for j_co, (co0, ccnt, ci_blocks, w_addr, p_addr) in enumerate(co_plans):
                buf = len(tiles) % nbuf
                s_base = buf * tiling.spad
                a_base = buf * tiling.acc
                w_base = s_base + nci_max * in_size
                o_base = w_base + wrows_max
                acc_out, acc_par = a_base, a_base + out_rows
                loads: list[Instr] = []
                if j_co == 0:
                    for k, (ci0, kcnt) in enumerate(all_ci if spec.group == 1 else ()):
                        _fill_and_load_window(b, spec, x_addr, n, oh0 * spec.sh,
                                              spec.in_rows(t), ci0, kcnt,
                                              in_base + k * in_size, x_zp, loads)
                if spec.group != 1:   # grouped: each block loads its own channels
                    in_base = s_base
                    for k, (ci0, kcnt) in enumerate(ci_blocks):
                        _fill_and_load_window(b, spec, x_addr, n, oh0 * spec.sh,
                                              spec.in_rows(t), ci0, kcnt,
                                              in_base + k * in_size, x_zp, loads)
                wrows = taps * sum(k for _, k in ci_blocks)
                loads.append(_load(Mem.SPAD, w_base, w_addr, dim, wrows, dim))
                loads.append(_load(Mem.ACC, acc_out, p_addr, 0, out_rows, dim))
                loads.append(_load(Mem.ACC, acc_par, p_addr + 4 * dim, 4 * dim, 2, dim))
                computes: list[Instr] = []
                wrow = w_base
                for i in range(spec.kh):
                    for j in range(spec.kw):
                        for k, (_, kcnt) in enumerate(ci_blocks):
                            computes.append(isa.load_weights(src=wrow, rows=kcnt))
                            wrow += kcnt
                            a = in_base + k * in_size + i * spec.dh * p + j * spec.dw
                            if contiguous and out_rows <= MAX_INNER:
                                computes.append(isa.matmul(a=a, c=acc_out, rows=out_rows,
                                                           acc=1))
                            else:
                                computes.append(isa.matmul(
                                    a=a, a_stride=spec.sw, a_ostride=spec.sh * p, c=acc_out,
                                    c_ostride=spec.ow, rows=spec.ow, outer=t, acc=1))
                computes.append(isa.requant_pc(src=acc_out, dst=o_base, rows=out_rows,
                                               params=acc_par, zp=zp, lo=lo, hi=hi))
                dst = y_addr + ((n * spec.oh + oh0) * spec.ow) * spec.co + co0
                stores = [isa.dma_store(mem=Mem.SPAD, sram=o_base, dram=dst, stride=spec.co,
                                        rows=out_rows, cols=ccnt)]
                tiles.append((loads, computes, stores))
    b.emit_tiles(tiles, nbuf, first, last)
    return macs


def _lower_maxpool(b: _Builder, node: Node, tiling: Tiling, x_addr: int, y_addr: int,
                   first: bool, last: bool) -> int:
    dim = b.dim
    n_, c, h, w = _static(node.inputs[0].type)
    (kh, kw), (sh, sw) = node.attr("kernel_shape"), node.attr("strides")
    spec = ConvSpec(n_, h, w, c, c, kh, kw, sh, sw, 1, 1, tuple(node.attr("pads")), c)
    p, t_max, nbuf = spec.pitch, tiling.t, tiling.nbuf
    in_size = spec.in_rows(t_max) * p
    tiles = []
    for n in range(spec.n):
        for oh0 in range(0, spec.oh, t_max):
            t = min(t_max, spec.oh - oh0)
            for c0, ccnt in _blocks(c, dim):
                base = (len(tiles) % nbuf) * tiling.spad
                o_base = base + in_size
                loads: list[Instr] = []
                _fill_and_load_window(b, spec, x_addr, n, oh0 * sh, spec.in_rows(t), c0, ccnt,
                                      base, -128, loads)
                computes = []
                for i in range(kh):
                    for j in range(kw):
                        computes.append(isa.vmaxpool(
                            src=base + i * p + j, src_stride=sw, src_ostride=sh * p,
                            dst=o_base, dst_ostride=spec.ow, rows=spec.ow, outer=t,
                            acc=int(i > 0 or j > 0)))
                dst = y_addr + ((n * spec.oh + oh0) * spec.ow) * c + c0
                stores = [isa.dma_store(mem=Mem.SPAD, sram=o_base, dram=dst, stride=c,
                                        rows=t * spec.ow, cols=ccnt)]
                tiles.append((loads, computes, stores))
    b.emit_tiles(tiles, nbuf, first, last)
    return 0


def _lower_add(b: _Builder, node: Node, tiling: Tiling, a_addr: int, b_addr: int, y_addr: int,
               first: bool, last: bool) -> int:
    dim = b.dim
    rows, c = matrix_shape(_static(node.inputs[0].type))
    get = node.attr
    tiles = []
    for r0 in range(0, rows, tiling.t):
        t = min(tiling.t, rows - r0)
        for c0, ccnt in _blocks(c, dim):
            buf = len(tiles) % tiling.nbuf
            base, acc = buf * tiling.spad, buf * tiling.acc
            off = r0 * c + c0
            loads = [_load(Mem.SPAD, base, a_addr + off, c, t, ccnt),
                     _load(Mem.SPAD, base + t, b_addr + off, c, t, ccnt)]
            computes = [
                isa.vadd(a=base, b=base + t, dst=acc, rows=t, za=get("a_zero_point"),
                         ma=get("a_multiplier"), zb=get("b_zero_point"),
                         mb=get("b_multiplier")),
                isa.requant(src=acc, dst=base + 2 * t, rows=t, mult=get("multiplier")[0],
                            shift=get("shift")[0], zp=get("y_zero_point"), lo=get("lo"),
                            hi=get("hi"))]
            stores = [isa.dma_store(mem=Mem.SPAD, sram=base + 2 * t, dram=y_addr + off,
                                    stride=c, rows=t, cols=ccnt)]
            tiles.append((loads, computes, stores))
    b.emit_tiles(tiles, tiling.nbuf, first, last)
    return 0


def _lower_lut(b: _Builder, node: Node, tiling: Tiling, x_addr: int, y_addr: int,
               first: bool, last: bool) -> int:
    """``vlut`` in place on tiles of the (rows, C) matrix; the table is staged
    and loaded into lookup table 0 by the first tile (it stays there)."""
    dim, cfg = b.dim, b.cfg
    rows, c = matrix_shape(_static(node.inputs[0].type))
    table = np.zeros(cfg.lut_rows * dim, np.int8)
    table[:256] = np.asarray(node.attr("table"), np.int8)
    t_addr = b.const(table)
    tiles = []
    for r0 in range(0, rows, tiling.t):
        t = min(tiling.t, rows - r0)
        for c0, ccnt in _blocks(c, dim):
            base = (len(tiles) % tiling.nbuf) * tiling.spad
            off = r0 * c + c0
            loads = [_load(Mem.SPAD, base, x_addr + off, c, t, ccnt)]
            computes = []
            if not tiles:
                loads.append(_load(Mem.SPAD, base + t, t_addr, dim, cfg.lut_rows, dim))
                computes.append(isa.lut_load(src=base + t, table=0))
            computes.append(isa.vlut(src=base, dst=base, rows=t, table=0))
            stores = [isa.dma_store(mem=Mem.SPAD, sram=base, dram=y_addr + off, stride=c,
                                    rows=t, cols=ccnt)]
            tiles.append((loads, computes, stores))
    b.emit_tiles(tiles, tiling.nbuf, first, last)
    return 0


def _lower_layers(b: _Builder, graph: Graph, plans: list[Tiling], addrs: dict[str, int],
                  layers: list[tuple[int, int, str]], macs: dict[str, int]) -> None:
    last = len(graph.nodes) - 1
    for k, (node, tiling) in enumerate(zip(graph.nodes, plans, strict=True)):
        first_pc = len(b.instrs)
        ins = [addrs.get(v.name, 0) if v is not None else 0 for v in node.inputs]
        out = addrs.get(node.outputs[0].name, 0)
        name = node.name or node.outputs[0].name
        if node.op.name in ("QConv", "QMatMul"):
            macs[name] = _lower_conv(b, node, graph, tiling, ins[0], out, k == 0, k == last)
        elif node.op.name == "QMaxPool":
            macs[name] = _lower_maxpool(b, node, tiling, ins[0], out, k == 0, k == last)
        elif node.op.name == "QLut":
            macs[name] = _lower_lut(b, node, tiling, ins[0], out, k == 0, k == last)
        else:
            macs[name] = _lower_add(b, node, tiling, ins[0], ins[1], out, k == 0, k == last)
        layers.append((first_pc, len(b.instrs), name))


def lower(graph: Graph, cfg: NpuConfig) -> Program:
    """The NPU program of ``graph`` (every node a supported integer op)."""
    plans = []
    for node in graph.nodes:
        tiling = plan_node(node, cfg)
        if isinstance(tiling, str):
            raise NpuCompileError(f"{node.op.qualname} node {node.name!r} cannot run on the "
                                  f"NPU: {tiling}.")
        plans.append(tiling)
    # A first lowering places the constants; the tensors follow them, and a
    # second lowering (constants land at the same addresses) uses their addresses.
    sizing = _Builder(cfg)
    _lower_layers(sizing, graph, plans, {}, [], {})
    values = [*graph.inputs, *(o for n in graph.nodes for o in n.outputs if o is not None)]
    tensors: dict[str, tuple[int, tuple[int, ...]]] = {}
    top = sizing.top
    for v in values:
        shape = _static(v.type)
        rows, c = matrix_shape(shape)
        tensors[v.name] = (top, shape)
        top += -(-max(rows * c, 1) // _ALIGN) * _ALIGN
    b = _Builder(cfg)
    layers: list[tuple[int, int, str]] = []
    macs: dict[str, int] = {}
    _lower_layers(b, graph, plans, {k: a for k, (a, _) in tensors.items()}, layers, macs)
    assert b.top == sizing.top
    b.instrs.append(isa.halt())
    image = np.zeros(b.top, np.uint8)
    for addr, raw in b.blobs:
        image[addr:addr + len(raw)] = np.frombuffer(raw, np.uint8)
    return Program(cfg, b.instrs, image, top, tensors, layers, macs)
