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
#: One tile of a layer: its loads, computes and stores.
Tile = tuple[list[Instr], list[Instr], list[Instr]]


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


@dataclass(frozen=True)
class Tiling:
    t: int          # output rows (conv / pool) or matrix rows (add) per tile
    nbuf: int
    spad: int       # rows per buffer
    acc: int
    pre: Tiling | None = None   # packed-tap convolution: the tiling of its DRAM pass


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


def packed_taps(spec: ConvSpec, dim: int) -> bool:
    """Whether a convolution with few input channels runs on packed taps.

    With ``C < DIM`` channels, one (tap, channel block) pair fills only C of
    the array's DIM weight rows.  Packing instead puts a whole receptive
    field, ``K = KH·KW·C`` values in (kw, kh, c) order, in K consecutive lanes
    of ``ceil(K / DIM)`` scratchpad rows per output pixel (im2col), so that
    every weight block but the last uses all DIM rows.  It pays when it at
    least saves a third of the array passes; it needs ``dw = 1`` (a kernel
    row's pixels contiguous) and no groups.
    """
    if spec.group != 1 or spec.dw != 1 or spec.c >= dim:
        return False
    return 3 * -(-spec.kh * spec.kw * spec.c // dim) <= 2 * spec.kh * spec.kw


def _packed_need(spec: ConvSpec, dim: int):
    k = spec.kh * spec.kw * spec.c

    def need(t: int) -> tuple[int, int]:
        out = t * spec.ow
        return -(-k // dim) * out + k + out, out + 2
    return need


def _stack_need(spec: ConvSpec):
    def need(t: int) -> tuple[int, int]:
        return -(-spec.in_rows(t) // spec.sh) * spec.sh * spec.pitch, 0
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
        if packed_taps(spec, cfg.dim):
            main = _choose(spec.oh, cfg, _packed_need(spec, cfg.dim), label, MAX_INNER)
            pre = _choose(spec.oh, cfg, _stack_need(spec), label, MAX_INNER)
            if isinstance(main, Tiling) and isinstance(pre, Tiling):
                return Tiling(main.t, main.nbuf, main.spad, main.acc, pre)
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
    """Collects a segment's instructions and constants; ``scratch`` allocates
    DRAM working space that lies after the tensors (at ``scratch_base``)."""

    def __init__(self, cfg: NpuConfig, scratch_base: int = 0) -> None:
        self.cfg, self.dim = cfg, cfg.dim
        self.instrs: list[Instr] = []
        self.blobs: list[tuple[int, bytes]] = []
        self.top = 0
        self.scratch_base, self.scratch_top = scratch_base, 0
        self.fills: dict[int, int] = {}

    def scratch(self, nbytes: int) -> int:
        addr = self.scratch_base + self.scratch_top
        self.scratch_top += -(-max(nbytes, 1) // _ALIGN) * _ALIGN
        return addr

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

    def emit_tiles(self, tiles: list[Tile],
                   nbuf: int, first_layer: bool, last_layer: bool) -> None:
        """Appends a layer's tiles (loads, computes, stores), synchronized by
        tokens.

        Fetch dispatches in program order and stalls on a full queue, so the
        order decides how far the queues run ahead of each other.  With two
        buffers the loads of tile t + 1 are merged into the computes of tile
        t by estimated start time (:func:`_merge`), so neither the DMA nor the
        array waits for fetch; the stores of tile t follow both (they wait
        for its computes).  With one buffer the loads of tile t + 1 wait for
        the store of tile t, so they come after it.
        """
        L, C, S = Queue.LOAD, Queue.COMPUTE, Queue.STORE
        out = self.instrs
        if not first_layer:
            out.append(isa.wait(queue=L, src=S))
        ahead = nbuf - 1

        def loads(t: int) -> list[Instr]:
            head = [isa.wait(queue=L, src=S)] if t >= nbuf else []
            return [*head, *tiles[t][0], isa.push(queue=L, dst=C)]

        for t in range(min(ahead, len(tiles))):
            out.extend(loads(t))
        for t, (_, computes, stores) in enumerate(tiles):
            work = [isa.wait(queue=C, src=L), *computes, isa.push(queue=C, dst=S)]
            if ahead == 0:
                out.extend(loads(t) + work)
            elif t + ahead < len(tiles):
                out.extend(_merge(self.cfg, loads(t + ahead), work))
            else:
                out.extend(work)
            out.append(isa.wait(queue=S, src=C))
            out.extend(stores)
            if t + nbuf < len(tiles):
                out.append(isa.push(queue=S, dst=L))
        if not last_layer:
            out.append(isa.push(queue=S, dst=L))


def _cost(cfg: NpuConfig, ins: Instr) -> int:
    """A rough duration of ``ins`` in cycles, only to order the program (the
    cycle model in ``cycles.py`` is the real estimate)."""
    if ins.name in ("dma_load", "dma_store"):
        size = 4 if ins.mem == Mem.ACC else 1
        return cfg.dma_latency + ins.rows * ins.cols * size // cfg.dram_bytes_per_cycle
    if ins.name == "load_weights":
        return cfg.dim
    if ins.name in ("push", "wait", "lut_load"):
        return 1
    return getattr(ins, "rows", 1) * getattr(ins, "outer", 1)


def _merge(cfg: NpuConfig, a: list[Instr], b: list[Instr]) -> list[Instr]:
    """Two instruction streams for different queues, interleaved by the
    estimated start of each instruction within its own stream."""
    out, i, j, ta, tb = [], 0, 0, 0, 0
    while i < len(a) or j < len(b):
        if j == len(b) or (i < len(a) and ta <= tb):
            out.append(a[i])
            ta += _cost(cfg, a[i])
            i += 1
        else:
            out.append(b[j])
            tb += _cost(cfg, b[j])
            j += 1
    return out


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


@dataclass(frozen=True)
class _ConvConsts:
    """What a QConv / QMatMul needs besides its input: dense weights
    ``(CO, C, KH, KW)``, the bias with the input zero point folded in, the
    per-channel requantization and the output clamp."""

    dense: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    x_zp: int
    zp: int
    lo: int
    hi: int


def _conv_consts(node: Node, graph: Graph, spec: ConvSpec) -> _ConvConsts:
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
    return _ConvConsts(dense, b_full, mult, shift, x_zp, node.attr("y_zero_point"),
                       node.attr("lo"), node.attr("hi"))


def _param_rows(b: _Builder, k: _ConvConsts, co0: int, ccnt: int) -> int:
    """DRAM address of the bias, multiplier and shift rows of one channel block."""
    rows3 = np.zeros((3, b.dim), np.int32)
    rows3[0, :ccnt], rows3[1, :ccnt] = k.bias[co0:co0 + ccnt], k.mult[co0:co0 + ccnt]
    rows3[2, :ccnt] = k.shift[co0:co0 + ccnt]
    return b.const(rows3.astype("<i4"))


def _conv_tile_io(b: _Builder, k: _ConvConsts, spec: ConvSpec, y_addr: int,
                  at: tuple[int, int, int], block: tuple[int, int, int, int, int],
                  bases: tuple[int, int, int]) -> tuple[list[Instr], list[Instr], list[Instr]]:
    """The loads of a tile's weights, bias and requantization rows, the
    requantization and the store of its outputs: the tile is output rows
    ``oh0 .. oh0+t-1`` of image n (``at``), output channels ``co0 ..
    co0+ccnt-1`` with ``wrows`` weight rows at ``w_addr`` and parameter rows
    at ``p_addr`` (``block``); weights, outputs and accumulators at ``bases``."""
    n, oh0, t = at
    co0, ccnt, w_addr, wrows, p_addr = block
    w_base, o_base, a_base = bases
    out_rows = t * spec.ow
    acc_par = a_base + out_rows
    loads = [_load(Mem.SPAD, w_base, w_addr, b.dim, wrows, b.dim),
             _load(Mem.ACC, a_base, p_addr, 0, out_rows, b.dim),
             _load(Mem.ACC, acc_par, p_addr + 4 * b.dim, 4 * b.dim, 2, b.dim)]
    computes = [isa.requant_pc(src=a_base, dst=o_base, rows=out_rows, params=acc_par,
                               zp=k.zp, lo=k.lo, hi=k.hi)]
    dst = y_addr + ((n * spec.oh + oh0) * spec.ow) * spec.co + co0
    stores = [isa.dma_store(mem=Mem.SPAD, sram=o_base, dram=dst, stride=spec.co,
                            rows=out_rows, cols=ccnt)]
    return loads, computes, stores


def _matmul_plane(a: int, c: int, spec: ConvSpec, t: int, a_stride: int,
                  a_ostride: int) -> Instr:
    """One weight block applied to t output rows of OW pixels."""
    contiguous = a_stride == 1 and a_ostride == spec.ow
    if contiguous and t * spec.ow <= MAX_INNER:
        return isa.matmul(a=a, c=c, rows=t * spec.ow, acc=1)
    return isa.matmul(a=a, a_stride=a_stride, a_ostride=a_ostride, c=c, c_ostride=spec.ow,
                      rows=spec.ow, outer=t, acc=1)


def _lower_conv(b: _Builder, node: Node, graph: Graph, tiling: Tiling, x_addr: int,
                y_addr: int, first: bool, last: bool) -> int:
    dim, spec = b.dim, conv_spec(node)
    k = _conv_consts(node, graph, spec)
    taps = spec.kh * spec.kw
    # the op's own MACs (the array does more: padded lanes, group-sparse blocks)
    macs = spec.n * spec.oh * spec.ow * spec.co * (spec.c // spec.group) * taps
    if tiling.pre is not None:
        _lower_packed_conv(b, spec, k, tiling, x_addr, y_addr, first, last)
        return macs
    dense = k.dense
    t_max, nbuf = tiling.t, tiling.nbuf
    p = spec.pitch
    need = _conv_need(spec, dim)
    nci_max = max(len(spec.ci_blocks_for(s, c, dim)) for s, c in _blocks(spec.co, dim))
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
        co_plans.append((co0, ccnt, ci_blocks, b.const(np.concatenate(wblk)),
                         _param_rows(b, k, co0, ccnt)))

    tiles, inputs = [], []
    # The input window of a spatial tile is loaded once into the input region
    # of buffer (spatial tile % nbuf) and read by every channel block (see
    # _with_inputs); weights, accumulators and outputs use buffer (tile % nbuf).
    all_ci = _blocks(spec.c, dim)
    for n in range(spec.n):
        for oh0 in range(0, spec.oh, t_max):
            t = min(t_max, spec.oh - oh0)
            in_base = (len(inputs) % nbuf) * tiling.spad
            inputs.append([])
            for kb, (ci0, kcnt) in enumerate(all_ci if spec.group == 1 else ()):
                _fill_and_load_window(b, spec, x_addr, n, oh0 * spec.sh, spec.in_rows(t), ci0,
                                      kcnt, in_base + kb * in_size, k.x_zp, inputs[-1])
            for co0, ccnt, ci_blocks, w_addr, p_addr in co_plans:
                buf = len(tiles) % nbuf
                s_base = buf * tiling.spad
                w_base = s_base + nci_max * in_size
                a_base = buf * tiling.acc
                loads: list[Instr] = []
                if spec.group != 1:   # grouped: each block loads its own channels
                    in_base = s_base
                    for kb, (ci0, kcnt) in enumerate(ci_blocks):
                        _fill_and_load_window(b, spec, x_addr, n, oh0 * spec.sh,
                                              spec.in_rows(t), ci0, kcnt,
                                              in_base + kb * in_size, k.x_zp, loads)
                wrows = taps * sum(c for _, c in ci_blocks)
                # the outputs follow the largest weight block, as need() counts
                io_loads, requant, stores = _conv_tile_io(
                    b, k, spec, y_addr, (n, oh0, t), (co0, ccnt, w_addr, wrows, p_addr),
                    (w_base, w_base + wrows_max, a_base))
                computes: list[Instr] = []
                wrow = w_base
                for i in range(spec.kh):
                    for j in range(spec.kw):
                        for kb, (_, kcnt) in enumerate(ci_blocks):
                            computes.append(isa.load_weights(src=wrow, rows=kcnt))
                            wrow += kcnt
                            a = in_base + kb * in_size + i * spec.dh * p + j * spec.dw
                            computes.append(_matmul_plane(a, a_base, spec, t, spec.sw,
                                                          spec.sh * p))
                tiles.append((loads + io_loads, computes + requant, stores))
    b.emit_tiles(_with_inputs(tiles, inputs, len(co_plans), nbuf), nbuf, first, last)
    return macs


def _with_inputs(tiles: list[Tile], inputs: list[list[Instr]], nco: int, nbuf: int) -> list[Tile]:
    """The tiles (``nco`` output-channel blocks per spatial tile) with the
    input loads of each spatial tile added.

    Spatial tile s's input goes to region s % nbuf.  With two buffers and at
    least two channel blocks, it is loaded in pieces by the tiles of spatial
    tile s - 1 but its first, so that it streams in under all their matmuls
    (a single load with the first channel block would have only one tile's
    matmuls to hide under).  That is safe: tile (s - 1, j >= 1) waits for the
    store of the tile two before it, which follows every compute of spatial
    tile s - 2, the last reader of the region.  Otherwise the first channel
    block of spatial tile s loads it.
    """
    out = [(list(ld), c, st) for ld, c, st in tiles]
    for s, loads in enumerate(inputs):
        if nbuf < 2 or nco < 2 or s == 0:
            out[s * nco] = (loads + out[s * nco][0], *out[s * nco][1:])
            continue
        for j in range(1, nco):
            lo, hi = len(loads) * (j - 1) // (nco - 1), len(loads) * j // (nco - 1)
            tile = out[(s - 1) * nco + j]
            out[(s - 1) * nco + j] = (tile[0] + loads[lo:hi], *tile[1:])
    return out


def _load_window_by_phase(b: _Builder, spec: ConvSpec, x_addr: int, n: int, ih0: int,
                          rows_p: int, base: int, phase: int, pad_value: int) -> list[Instr]:
    """Loads padded input rows ih0 .. ih0+rows_p-1 (all channels, pitch P) with
    row r at slot (r % sh)·phase + r // sh, the padding holding ``pad_value``."""
    pt, pl = spec.pads[0], spec.pads[1]
    p, sh = spec.pitch, spec.sh
    loads = [_load(Mem.SPAD, base, b.fill_row(pad_value), 0, (sh * phase) * p, spec.c)]
    for r in range(rows_p):
        h = ih0 + r - pt
        if 0 <= h < spec.h:
            slot = (r % sh) * phase + r // sh
            loads.append(_load(Mem.SPAD, base + slot * p + pl,
                               x_addr + ((n * spec.h + h) * spec.w) * spec.c, spec.c, spec.w,
                               spec.c))
    return loads


def _lower_packed_conv(b: _Builder, spec: ConvSpec, k: _ConvConsts, tiling: Tiling,
                       x_addr: int, y_addr: int, first: bool, last: bool) -> None:
    """A convolution on packed taps (see :func:`packed_taps`), in two passes.

    The first pass stacks the kernel rows into a DRAM scratch tensor ``S``:
    ``S[n, oh, w, (kh, c)] = Xpad[n, oh·sh + kh·dh, w, c]`` for every padded
    column ``w``, so that the receptive field of output pixel (oh, ow) is the
    ``K = KW·KH·C`` consecutive bytes of ``S[n, oh]`` from column ``ow·sw``.
    The second pass DMAs K-block ``kb`` of the OW pixels of an output row
    straight into lanes 0.. of consecutive scratchpad rows (DRAM stride
    ``sw·KH·C``), and runs one ``matmul`` per K block on the whole tile.
    """
    dim, p = b.dim, spec.pitch
    khc = spec.kh * spec.c
    kdim = spec.kw * khc
    kblocks = _blocks(kdim, dim)
    s_addr = b.scratch(spec.n * spec.oh * p * khc)

    pre, tiles = tiling.pre, []
    for n in range(spec.n):
        for oh0 in range(0, spec.oh, pre.t):
            t = min(pre.t, spec.oh - oh0)
            base = (len(tiles) % pre.nbuf) * pre.spad
            rows_p = spec.in_rows(t)
            # padded row r of the window goes to slot (r % sh)·ceil(rows_p / sh) + r // sh,
            # so the rows oh·sh + i·dh of kernel row i are consecutive slots
            phase = -(-rows_p // spec.sh)
            loads = _load_window_by_phase(b, spec, x_addr, n, oh0 * spec.sh, rows_p, base,
                                          phase, k.x_zp)
            stores = []
            for i in range(spec.kh):
                r = i * spec.dh
                src = base + ((r % spec.sh) * phase + r // spec.sh) * p
                dst = s_addr + (n * spec.oh + oh0) * p * khc + i * spec.c
                stores.append(isa.dma_store(mem=Mem.SPAD, sram=src, dram=dst, stride=khc,
                                            rows=t * p, cols=spec.c))
            tiles.append((loads, [], stores))
    b.emit_tiles(tiles, pre.nbuf, first, False)

    t_max, nbuf = tiling.t, tiling.nbuf
    in_size = t_max * spec.ow
    co_plans = []
    for co0, ccnt in _blocks(spec.co, dim):
        wk = np.zeros((kdim, dim), np.int8)    # row (kw, kh, c), lane co
        wk[:, :ccnt] = k.dense[co0:co0 + ccnt].transpose(0, 3, 2, 1).reshape(ccnt, kdim).T
        co_plans.append((co0, ccnt, b.const(wk), _param_rows(b, k, co0, ccnt)))
    tiles, inputs = [], []
    for n in range(spec.n):
        for oh0 in range(0, spec.oh, t_max):
            t = min(t_max, spec.oh - oh0)
            in_base = (len(inputs) % nbuf) * tiling.spad
            inputs.append([])
            for kb, (k0, kcnt) in enumerate(kblocks):
                for r in range(t):
                    src = s_addr + ((n * spec.oh + oh0 + r) * p) * khc + k0
                    inputs[-1].append(_load(Mem.SPAD, in_base + kb * in_size + r * spec.ow,
                                            src, spec.sw * khc, spec.ow, kcnt))
            for co0, ccnt, w_addr, p_addr in co_plans:
                buf = len(tiles) % nbuf
                w_base = buf * tiling.spad + len(kblocks) * in_size
                io_loads, requant, stores = _conv_tile_io(
                    b, k, spec, y_addr, (n, oh0, t), (co0, ccnt, w_addr, kdim, p_addr),
                    (w_base, w_base + kdim, buf * tiling.acc))
                computes: list[Instr] = []
                for kb, (k0, kcnt) in enumerate(kblocks):
                    computes.append(isa.load_weights(src=w_base + k0, rows=kcnt))
                    computes.append(_matmul_plane(in_base + kb * in_size, buf * tiling.acc,
                                                  spec, t, 1, spec.ow))
                tiles.append((io_loads, computes + requant, stores))
    b.emit_tiles(_with_inputs(tiles, inputs, len(co_plans), nbuf), nbuf, False, last)


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
    b = _Builder(cfg, scratch_base=top)
    layers: list[tuple[int, int, str]] = []
    macs: dict[str, int] = {}
    _lower_layers(b, graph, plans, {k: a for k, (a, _) in tensors.items()}, layers, macs)
    assert b.top == sizing.top and b.scratch_top == sizing.scratch_top
    top += b.scratch_top
    b.instrs.append(isa.halt())
    image = np.zeros(b.top, np.uint8)
    for addr, raw in b.blobs:
        image[addr:addr + len(raw)] = np.frombuffer(raw, np.uint8)
    return Program(cfg, b.instrs, image, top, tensors, layers, macs)
