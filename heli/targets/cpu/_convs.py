"""Convolution-family steps of the cpu target (kernels in ``kernels/conv.c``).

* **Direct convolution** (groups of 1, any kernel, stride, dilation and
  padding): the input is copied once into a zero-padded, stride-phase-split
  buffer, and a register-tiled kernel reads it in place through a table of
  per-tap offsets (no im2col matrix, which for a 3x3 kernel is 9 times the
  input).  Weights are packed at compile time.
* **Depthwise convolution**: all taps of a row of outputs accumulated in
  vector registers, from a padded copy of one channel at a time.
* Both fold what they can of the fused group that follows: a constant
  per-channel (or scalar) ``Mul`` into the weights, ``Add``/``Sub`` into
  the bias, ``Relu``/``Clip`` into a clamp, and the remaining elementwise
  ops (HardSwish chains, a residual ``Add``...) into a generated C function
  applied to each output row while it is in cache.
* **ConvTranspose**: SGEMM into columns, then ``heli_col2im`` (bias included).
* **BatchNormalization** (inference, constant parameters): one per-channel
  affine pass.  **Resize** (nearest, constant scales/sizes): a gather
  through an index map computed at compile time by the op's own reference
  semantics on an image of indices.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heli._errors import ExecutionError
from heli.ir._graph import Graph, Node, Value
from heli.kernel import SCALAR_RULES, Const, Expr, Load, Op, Var, render_expr
from heli.ops._nn import conv_transpose_window, resolve_window, window_attrs
from heli.targets.cpu import _gemm
from heli.targets.cpu._binding import FLOAT as _FLOAT
from heli.targets.cpu._binding import INT as _INT
from heli.targets.cpu._binding import LONG as _LONG
from heli.targets.cpu._binding import VOID as _VOID
from heli.targets.cpu._binding import Env, Maker, Step, f32
from heli.targets.cpu._binding import bind as _bind
from heli.targets.cpu._binding import static_shape as _shape

MR = 6  # output channels per register tile (HCV_MR in conv.c)
MAX_TILE = 64  # the widest pixel tile of any ISA build (HCV_NT), for buffer slack
MAX_VL = 16
#: Depthwise convolutions with at most this many output pixels per channel
#: run with channels in vector lanes (``heli_dwconv2d_lanes``): below it, a
#: channel's rows are too short for the plane-at-a-time kernel; above it,
#: the lanes kernel's transposes cost more than they save (MobileNetV2, one
#: thread: 14x14 and 7x7 layers 1.7-2x faster, 28x28 ones 1.8x slower).
LANES_MAX_PIXELS = 256











# ------------------------------------------------------------------ geometry

@dataclass(frozen=True)
class Geometry:
    """A 2-D convolution's window over one (prepared) input."""

    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    oh: int
    ow: int

    @property
    def hq(self) -> int:
        rows = max((self.oh - 1) * self.sh + (self.kh - 1) * self.dh + 1, self.pt + self.h)
        return -(-rows // self.sh)

    @property
    def wq(self) -> int:
        cols = max((self.ow - 1) * self.sw + (self.kw - 1) * self.dw + 1, self.pl + self.w)
        return -(-cols // self.sw)

    @property
    def plane(self) -> int:
        return self.hq * self.wq

    def offsets(self, channels: int) -> np.ndarray:
        """Where tap (c, kh, kw) of output pixel 0 lies in the prepared buffer."""
        off = []
        for c in range(channels):
            for i in range(self.kh):
                for j in range(self.kw):
                    ry, rx = i * self.dh, j * self.dw
                    phase = (c * self.sh + ry % self.sh) * self.sw + rx % self.sw
                    off.append(phase * self.plane + (ry // self.sh) * self.wq + rx // self.sw)
        return np.asarray(off, np.int32)


def conv_geometry(node: Node) -> Geometry:
    n, c, h, w = _shape(node.inputs[0])
    _, _, kh, kw = _shape(node.inputs[1])
    _, _, oh, ow = _shape(node.outputs[0])
    kernel, strides, dilations, pads = window_attrs(
        2, node.attr("kernel_shape") or (kh, kw), node.attr("strides"), node.attr("dilations"),
        node.attr("pads"))
    begins, _, _ = resolve_window((h, w), kernel, strides, dilations, pads, node.attr("auto_pad"))
    return Geometry(c, h, w, kh, kw, strides[0], strides[1], dilations[0], dilations[1],
                    begins[0], begins[1], oh, ow)


# ------------------------------------------------------------------ epilogue

@dataclass
class ConvEpilogue:
    scale: np.ndarray | None  # per output channel, folded into the weights
    bias: np.ndarray | None
    act: int
    lo: float
    hi: float
    rest: Graph | None  # remaining elementwise ops; inputs[0] is the folded result
    result: Value  # what the step defines


def _per_channel(array: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``array`` as one value per channel (axis 1 of a rank-``rank`` result), if it is."""
    shape = array.shape
    if len(shape) > rank:
        return None
    full = (1,) * (rank - len(shape)) + tuple(shape)
    if any(d != 1 for i, d in enumerate(full) if i != 1) or full[1] not in (1, channels):
        return None
    return np.broadcast_to(np.asarray(array, np.float64).reshape(-1), (channels,)).copy()


def conv_epilogue(anchor: Node, body: Graph | None, consts: dict[str, np.ndarray],
                  channels: int, fold_scale: bool) -> ConvEpilogue:
    result = anchor.outputs[0]
    rank = len(_shape(result))
    rest = list(body.nodes[1:]) if body is not None else []
    bias = None
    if len(anchor.inputs) > 2 and anchor.inputs[2] is not None:
        bias = np.asarray(consts[anchor.inputs[2].name], np.float64).reshape(-1).copy()
    scale = None
    act, lo, hi = 0, -math.inf, math.inf

    while rest and sole_reader(rest, result, rest[0]):
        node = rest[0]
        if node.op.name not in ("Mul", "Add", "Sub"):
            break
        ours = 0 if node.inputs[0].name == result.name else 1
        other = node.inputs[1 - ours]
        c = consts.get(other.name)
        per = _per_channel(c, rank, channels) if c is not None else None
        if per is None or (node.op.name == "Sub" and ours == 1):
            break
        if node.op.name == "Mul":
            if not fold_scale:
                break
            scale = per if scale is None else scale * per
            bias = None if bias is None else bias * per
        else:
            per = -per if node.op.name == "Sub" else per
            bias = per if bias is None else bias + per
        result, rest = node.outputs[0], rest[1:]
    if rest and rest[0].op.name in ("Relu", "Clip") and sole_reader(rest, result, rest[0]):
        clamp = fold_clamp(rest[0], consts, lo, hi)
        if clamp is not None:
            (lo, hi), act, result, rest = clamp, 1, rest[0].outputs[0], rest[1:]
    rest_body = epilogue_body(rest, result, consts) if rest else None
    final = body.outputs[0] if body is not None else result
    return ConvEpilogue(_asf32(scale), _asf32(bias), act, lo, hi, rest_body, final)


def sole_reader(nodes: list[Node], value: Value, node: Node) -> bool:
    """Whether ``node`` is the only reader of ``value`` among ``nodes``, reading it
    once: folding ``node`` into a kernel then hides ``value`` from no one."""
    readers = [n for n in nodes if any(v is not None and v.name == value.name
                                       for v in n.inputs)]
    return readers == [node] and sum(v is not None and v.name == value.name
                                     for v in node.inputs) == 1


def fold_clamp(node: Node, consts: dict[str, np.ndarray], lo: float, hi: float
               ) -> tuple[float, float] | None:
    """The bounds ``(lo, hi)`` once the Relu or Clip ``node`` is folded into a
    kernel's clamp, or ``None`` for a Clip whose bounds are not constants."""
    if node.op.name == "Relu":
        return 0.0, hi
    bounds = [consts.get(v.name) if v is not None else None for v in node.inputs[1:3]]
    given = [v is not None for v in node.inputs[1:3]]
    if not all(b is not None or not g for b, g in zip(bounds, given, strict=False)):
        return None
    lo = float(bounds[0]) if len(bounds) > 0 and bounds[0] is not None else lo
    hi = float(bounds[1]) if len(bounds) > 1 and bounds[1] is not None else hi
    return lo, hi


def epilogue_body(rest: list[Node], result: Value, consts: dict[str, np.ndarray]) -> Graph:
    """The ops ``rest`` as an elementwise body whose first input is ``result``."""
    made = {o.name for n in rest for o in n.outputs}
    ext: list[Value] = [result]
    rest_consts = {}
    for n in rest:
        for v in n.inputs:
            if v is None or v.name in made:
                continue
            if v.name in consts:
                rest_consts[v.name] = consts[v.name]
            elif all(e.name != v.name for e in ext):
                ext.append(v)
    return Graph(tuple(ext), (rest[-1].outputs[0],), tuple(rest), rest_consts, name="epilogue")


def _asf32(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.ascontiguousarray(a, np.float32)


@dataclass(frozen=True)
class RowEpilogue:
    """A generated C function over one output row (see ``heli_row_epi``)."""

    name: str
    source: str
    params: np.ndarray  # per-channel constants, concatenated
    residual: str | None  # the graph value read alongside (same shape as the output)


def row_epilogue(rest: Graph, channels: int, out_shape: tuple[int, ...]) -> RowEpilogue | None:
    """``rest`` as one C function of (y, res, c, n, params), if every operand is
    the conv result, one tensor of the output's shape, or a constant that is
    a scalar or per channel; else ``None``."""
    if len(rest.outputs) != 1 or len(rest.inputs) > 2:
        return None
    residual = None
    if len(rest.inputs) == 2:
        if _shape(rest.inputs[1]) != tuple(out_shape):
            return None
        residual = rest.inputs[1].name
    rank = len(out_shape)
    exprs: dict[str, Expr] = {rest.inputs[0].name: Load("y", Var("i"))}
    if residual is not None:
        exprs[residual] = Load("res", Var("i"))
    params: list[np.ndarray] = []
    offset = 0
    for name, array in rest.constants.items():
        if array.size == 1:
            exprs[name] = Const(float(np.asarray(array, np.float64).reshape(())))
            continue
        per = _per_channel(array, rank, channels)
        if per is None:
            return None
        exprs[name] = Load("params", Op("add", (Var("c"), Const(offset, "i64"))))
        params.append(per.astype(np.float32))
        offset += channels
    lines = []
    for k, node in enumerate(rest.nodes):
        rule = SCALAR_RULES.get(node.op.name)
        if rule is None or node.op.domain or len(node.outputs) != 1:
            return None
        args = [exprs.get(v.name) if v is not None else None for v in node.inputs]
        if any(a is None for a, v in zip(args, node.inputs, strict=True) if v is not None):
            return None
        consts = [rest.constants.get(v.name) if v is not None else None for v in node.inputs]
        try:
            expr = rule(node, args, consts)
        except Exception:  # a rule that needs a constant operand it did not get
            return None
        lines.append(f"        const float t{k} = {render_expr(expr)};")
        exprs[node.outputs[0].name] = Var(f"t{k}", "f32")
    final = exprs[rest.outputs[0].name]
    body = "\n".join(lines)
    text = (f"(float *restrict y, const float *restrict res, long c, long n, "
            f"const float *restrict params) {{\n"
            f"    (void)res; (void)c; (void)params;\n"
            f"    #pragma omp simd\n"
            f"    for (long i = 0; i < n; ++i) {{\n{body}\n"
            f"        y[i] = {render_expr(final)};\n    }}\n}}\n")
    name = "heli_epi_" + hashlib.sha256(text.encode()).hexdigest()[:12]
    source = f'__attribute__((visibility("default"))) void {name}{text}'
    packed = np.concatenate(params) if params else np.zeros(1, np.float32)
    return RowEpilogue(name, source, np.ascontiguousarray(packed, np.float32), residual)


# ------------------------------------------------------------------ makers

def _pack_weights(weight: np.ndarray) -> np.ndarray:
    """(M, K) -> [ceil(M / MR)][K][MR], zero rows past M."""
    m, k = weight.shape
    nm = -(-m // MR)
    padded = np.zeros((nm * MR, k), np.float32)
    padded[:m] = weight
    return np.ascontiguousarray(padded.reshape(nm, MR, k).transpose(0, 2, 1))


def _addresses(*arrays: np.ndarray | None) -> list[int | None]:
    """The addresses of constant arrays, taken once when a step is bound:
    ``ndarray.ctypes.data`` costs 1-2 us a call, several per step and about
    a hundred steps per run of a small CNN.  The caller keeps the arrays alive."""
    return [None if a is None else a.ctypes.data for a in arrays]


def _epi_pointer(lib: ctypes.CDLL, epi: RowEpilogue | None) -> int | None:
    if epi is None:
        return None
    return ctypes.cast(getattr(lib, epi.name), ctypes.c_void_p).value


def conv_step(builder, node: Node, body: Graph | None) -> Maker | None:
    """A maker for a Conv (and its fused group) on the direct or depthwise
    kernels, or ``None`` for the im2col + SGEMM path."""
    x_shape, w_shape = _shape(node.inputs[0]), _shape(node.inputs[1])
    out_shape = _shape(node.outputs[0])
    n, c = x_shape[:2]
    m, cg, kh, kw = w_shape
    group = node.attr("group") or 1
    weight = builder.const(node.inputs[1])
    if weight is None or len(x_shape) != 4:
        return None
    depthwise = group == c and m == c and cg == 1
    geo = conv_geometry(node)
    pointwise = (kh, kw) == (1, 1) and (geo.sh, geo.sw) == (1, 1) and \
        (geo.pt, geo.pl, geo.oh, geo.ow) == (0, 0, geo.h, geo.w)
    if not depthwise and (group != 1 or pointwise):
        return None
    consts = dict(builder.constants)
    if body is not None:
        consts.update(body.constants)
    epi = conv_epilogue(node, body, consts, m, fold_scale=True)
    row = row_epilogue(epi.rest, m, out_shape) if epi.rest is not None else None
    if row is not None:
        builder.sources[row.name] = row.source
    w2 = np.asarray(weight, np.float32).reshape(m, -1)
    if epi.scale is not None:
        w2 = w2 * epi.scale[:, None]
    bias = epi.bias
    act, lo, hi, nt = epi.act, epi.lo, epi.hi, builder.nthreads
    x_name = node.inputs[0].name
    new_y = builder.anchor_out(epi.result, None if row is not None else epi.rest, out_shape)
    if depthwise and geo.oh * geo.ow <= LANES_MAX_PIXELS:
        bind = _depthwise_lanes(node, geo, np.ascontiguousarray(w2), bias, epi, row, new_y, nt)
    elif depthwise:
        off = geo.offsets(1)
        vec = -(-geo.ow // MAX_VL) * MAX_VL
        scratch = max(geo.sh * geo.sw * geo.plane, int(off.max()) + (geo.oh - 1) * geo.wq + vec)
        wd = np.ascontiguousarray(w2)

        def bind(lib: ctypes.CDLL) -> Callable[[Env, np.ndarray | None], np.ndarray]:
            fn = _bind(lib, "heli_dwconv2d_v2", [_VOID] * 5 + [_LONG] * 14 +
                       [_INT, _FLOAT, _FLOAT] + [_VOID] * 3 + [_INT])
            epi_ptr = _epi_pointer(lib, row)
            params = None if row is None else row.params
            w_p, off_p, b_p, par_p = _addresses(wd, off, bias, params)

            def core(env: Env, res: np.ndarray | None) -> np.ndarray:
                xa = f32(env[x_name])
                y = new_y()
                fn(xa.ctypes.data, w_p, off_p, b_p, y.ctypes.data, n, c, geo.h,
                   geo.w, kh * kw, geo.sh, geo.sw, geo.pt, geo.pl, geo.hq, geo.wq, geo.oh,
                   geo.ow, scratch, act, lo, hi, epi_ptr,
                   None if res is None else res.ctypes.data, par_p, nt)
                return y
            core.keep = (wd, off, bias)
            return core
    else:
        off = geo.offsets(c)
        planes = c * geo.sh * geo.sw * geo.plane
        tail = max(0, int(off.max()) + geo.oh * geo.wq + MAX_TILE - planes)
        packed = _pack_weights(w2)
        kdim = w2.shape[1]
        per_image = out_shape[1] * out_shape[2] * out_shape[3]
        new_xb = builder.scratch((planes + tail,))

        def bind(lib: ctypes.CDLL) -> Callable[[Env, np.ndarray | None], np.ndarray]:
            prep = _bind(lib, "heli_conv_prepare", [_VOID, _VOID] + [_LONG] * 10 + [_INT])
            fn = _bind(lib, "heli_dconv2d", [_VOID] * 5 + [_LONG] * 5 +
                       [_INT, _FLOAT, _FLOAT] + [_VOID] * 3 + [_INT])
            epi_ptr = _epi_pointer(lib, row)
            params = None if row is None else row.params
            w_p, off_p, b_p, par_p = _addresses(packed, off, bias, params)

            def core(env: Env, res: np.ndarray | None) -> np.ndarray:
                xa = f32(env[x_name])
                y = new_y()
                xb = new_xb()
                for b in range(n):
                    prep(xa[b].ctypes.data, xb.ctypes.data, c, geo.h, geo.w, geo.sh, geo.sw,
                         geo.pt, geo.pl, geo.hq, geo.wq, tail, nt)
                    fn(xb.ctypes.data, w_p, off_p, b_p,
                       y.ctypes.data + 4 * b * per_image, m, kdim, geo.oh, geo.ow, geo.wq,
                       act, lo, hi, epi_ptr,
                       None if res is None else res.ctypes.data + 4 * b * per_image,
                       par_p, nt)
                return y
            core.keep = (packed, off, bias)
            return core
    return _finish(builder, bind, epi, row)


def _depthwise_lanes(node: Node, geo: Geometry, wd: np.ndarray, bias: np.ndarray | None,
                     epi: ConvEpilogue, row: RowEpilogue | None,
                     new_y: Callable[[], np.ndarray], nt: int):
    """The binder of ``heli_dwconv2d_lanes`` (channels in vector lanes)."""
    n, c = _shape(node.inputs[0])[:2]
    hp = max((geo.oh - 1) * geo.sh + (geo.kh - 1) * geo.dh + 1, geo.pt + geo.h)
    wp = max((geo.ow - 1) * geo.sw + (geo.kw - 1) * geo.dw + 1, geo.pl + geo.w)
    x_name = node.inputs[0].name
    act, lo, hi = epi.act, epi.lo, epi.hi

    def bind(lib: ctypes.CDLL) -> Callable[[Env, np.ndarray | None], np.ndarray]:
        fn = _bind(lib, "heli_dwconv2d_lanes", [_VOID] * 4 + [_LONG] * 16 +
                   [_INT, _FLOAT, _FLOAT] + [_VOID] * 3 + [_INT])
        epi_ptr = _epi_pointer(lib, row)
        w_p, b_p, par_p = _addresses(wd, bias, None if row is None else row.params)

        def core(env: Env, res: np.ndarray | None) -> np.ndarray:
            xa = f32(env[x_name])
            y = new_y()
            fn(xa.ctypes.data, w_p, b_p, y.ctypes.data, n, c, geo.h, geo.w, geo.kh, geo.kw,
               geo.sh, geo.sw, geo.pt, geo.pl, geo.dh, geo.dw, geo.oh, geo.ow, hp, wp, act, lo,
               hi, epi_ptr, None if res is None else res.ctypes.data, par_p, nt)
            return y
        core.keep = (wd, bias)
        return core
    return bind


def _finish(builder, bind, epi: ConvEpilogue, row: RowEpilogue | None) -> Maker:
    """The step: the kernel (with its row epilogue), else a separate elementwise pass."""
    out_name = epi.result.name
    res_name = row.residual if row is not None else None
    if epi.rest is None or row is not None:
        def make(lib: ctypes.CDLL) -> Step:
            core = bind(lib)

            def step(env: Env) -> None:
                res = f32(env[res_name]) if res_name is not None else None
                env[out_name] = core(env, res)
            return step
        return make
    rest_maker = builder._elementwise(epi.rest)
    tmp = epi.rest.inputs[0].name

    def make_rest(lib: ctypes.CDLL) -> Step:
        core = bind(lib)
        rest_step = rest_maker(lib)

        def step(env: Env) -> None:
            env[tmp] = core(env, None)
            rest_step(env)
            env.pop(tmp, None)
        return step
    return make_rest


# ------------------------------------------------------------------ ConvTranspose

def conv_transpose_supported(node: Node) -> str | None:
    """Why the cpu target cannot run this ConvTranspose, or ``None``."""
    x_shape = _shape(node.inputs[0])
    if len(x_shape) != 4:
        return "only 2-D ConvTranspose runs on cpu"
    if (node.attr("group") or 1) != 1:
        return "grouped ConvTranspose runs on ref"
    return None


@dataclass(frozen=True)
class _Transposed:
    """The geometry of a 2-D ConvTranspose (group 1)."""

    n: int
    c: int
    h: int
    w: int
    m: int
    kh: int
    kw: int
    strides: tuple[int, int]
    dilations: tuple[int, int]
    begins: tuple[int, int]
    outs: tuple[int, int]

    @property
    def tiles(self) -> bool:
        """Whether the taps tile the output exactly (stride = kernel, no
        dilation, padding or extra output): each output pixel gets one tap."""
        return (self.strides == (self.kh, self.kw) and self.dilations == (1, 1)
                and self.begins == (0, 0) and self.outs == (self.h * self.kh, self.w * self.kw))


def _transposed(node: Node) -> _Transposed:
    n, c, h, w = _shape(node.inputs[0])
    _, m, kh, kw = _shape(node.inputs[1])
    kernel, strides, dilations, pads = window_attrs(
        2, node.attr("kernel_shape") or (kh, kw), node.attr("strides"), node.attr("dilations"),
        node.attr("pads"))
    begins, _, outs = conv_transpose_window(
        (h, w), kernel, strides, dilations, pads, node.attr("auto_pad"),
        node.attr("output_padding"), node.attr("output_shape"))
    return _Transposed(n, c, h, w, m, kh, kw, tuple(strides), tuple(dilations), tuple(begins),
                       tuple(outs))


def conv_transpose_step(builder, node: Node, body: Graph | None = None) -> Maker:
    """A ConvTranspose (and its fused group): SGEMM into columns, then the
    scatter.  With constant weights and bias, a per-channel Mul/Add after it
    folds into them (an exported BatchNormalization, see ``split_batch_norms``);
    where the taps tile the output, Relu/Clip folds into the SGEMM and the
    scatter is a plain interleave (``heli_depth_to_space``)."""
    g = _transposed(node)
    consts = dict(builder.constants)
    if body is not None:
        consts.update(body.constants)
    weight = consts.get(node.inputs[1].name)
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    if weight is None or (b_val is not None and b_val.name not in consts):
        return _plain_transpose(builder, node, body, g)
    epi = conv_epilogue(node, body, consts, g.m, fold_scale=True)
    w = np.asarray(weight, np.float64).reshape(g.c, g.m, g.kh * g.kw)
    if epi.scale is not None:
        w = w * epi.scale.astype(np.float64)[None, :, None]
    if not g.tiles and epi.act:  # a clamp must wait for the overlapping sums
        epi = _unfold_clamp(epi, node, body, consts)
    bias = epi.bias
    # Rows (m, kh, kw) of the columns: weights as an (M*KH*KW) x C matrix.
    wt = np.ascontiguousarray(w.reshape(g.c, -1).T, np.float32)
    rows = g.m * g.kh * g.kw
    raw = _gemm.library().raw
    nt = builder.nthreads
    x_name = node.inputs[0].name
    out_shape = (g.n, g.m, *g.outs)
    row_bias = None if bias is None else np.ascontiguousarray(
        np.repeat(bias, g.kh * g.kw), np.float32)
    act, lo, hi = epi.act, epi.lo, epi.hi
    geometry = (g.h, g.w, g.kh, g.kw, g.strides[0], g.strides[1], g.begins[0], g.begins[1],
                g.dilations[0], g.dilations[1], g.outs[0], g.outs[1])
    plane = g.h * g.w
    new_y = builder.anchor_out(epi.result, epi.rest, out_shape)
    new_col = builder.scratch((rows, plane))

    def bind(lib: ctypes.CDLL) -> Callable[[Env, np.ndarray | None], np.ndarray]:
        d2s = _bind(lib, "heli_depth_to_space", [_VOID, _VOID] + [_LONG] * 5 + [_INT])
        col2im = _bind(lib, "heli_col2im", [_VOID] * 3 + [_LONG] * 13 + [_INT])

        def core(env: Env, res: np.ndarray | None) -> np.ndarray:
            xa = f32(env[x_name])
            col, y = new_col(), new_y()
            for b in range(g.n):
                if g.tiles:
                    _sgemm(raw, rows, plane, g.c, wt, xa[b], col, row_bias, act, lo, hi, nt)
                    d2s(col.ctypes.data, y[b].ctypes.data, g.m, g.h, g.w, g.kh, g.kw, nt)
                else:
                    _sgemm(raw, rows, plane, g.c, wt, xa[b], col, None, 0, lo, hi, nt)
                    col2im(col.ctypes.data, None if bias is None else bias.ctypes.data,
                           y[b].ctypes.data, g.m, *geometry, nt)
            return y
        core.keep = (wt, row_bias, bias)
        return core
    return _finish(builder, bind, epi, None)


def _sgemm(raw, rows: int, cols: int, depth: int, a: np.ndarray, b: np.ndarray,
           out: np.ndarray, row_bias: np.ndarray | None, act: int, lo: float, hi: float,
           nt: int) -> None:
    """out = clamp(a @ b + row_bias) for row-major a (rows x depth), b (depth x cols)."""
    status = raw.heli_sgemm(
        0, 0, rows, cols, depth, 1.0, a.ctypes.data, depth, b.ctypes.data, cols, 0.0,
        out.ctypes.data, cols, None if row_bias is None else row_bias.ctypes.data,
        0 if row_bias is None else 2, act, lo, hi, nt)
    if status:
        raise ExecutionError("The cpu ConvTranspose ran out of memory.")


def _unfold_clamp(epi: ConvEpilogue, node: Node, body: Graph, consts) -> ConvEpilogue:
    """``epi`` without its clamp: the clamp's node and what follows it run as
    the remaining elementwise ops instead."""
    nodes = list(body.nodes[1:])
    clamp = next(i for i, n in enumerate(nodes) if n.op.name in ("Relu", "Clip"))
    rest = epilogue_body(nodes[clamp:], nodes[clamp].inputs[0], consts)
    return ConvEpilogue(epi.scale, epi.bias, 0, -math.inf, math.inf, rest, epi.result)


def _plain_transpose(builder, node: Node, body: Graph | None, g: _Transposed) -> Maker:
    """Non-constant weights or bias: SGEMM, col2im, then the group's
    elementwise ops (if any) as one kernel."""
    consts = dict(builder.constants)
    if body is not None:
        consts.update(body.constants)
    x_name, w_name = node.inputs[0].name, node.inputs[1].name
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    rows, plane = g.m * g.kh * g.kw, g.h * g.w
    out_shape = (g.n, g.m, *g.outs)
    raw, nt = _gemm.library().raw, builder.nthreads
    geometry = (g.h, g.w, g.kh, g.kw, g.strides[0], g.strides[1], g.begins[0], g.begins[1],
                g.dilations[0], g.dilations[1], g.outs[0], g.outs[1])
    rest = epilogue_body(list(body.nodes[1:]), node.outputs[0], consts) if body else None
    final = body.outputs[0] if body is not None else node.outputs[0]
    epi = ConvEpilogue(None, None, 0, -math.inf, math.inf, rest, final)
    new_y = builder.anchor_out(final, rest, out_shape)
    new_col = builder.scratch((rows, plane))

    def bind(lib: ctypes.CDLL) -> Callable[[Env, np.ndarray | None], np.ndarray]:
        col2im = _bind(lib, "heli_col2im", [_VOID] * 3 + [_LONG] * 13 + [_INT])

        def core(env: Env, res: np.ndarray | None) -> np.ndarray:
            xa = f32(env[x_name])
            wa = np.ascontiguousarray(f32(env[w_name]).reshape(g.c, rows).T)
            ba = None
            if b_val is not None:
                ba = f32(np.asarray(consts.get(b_val.name, env.get(b_val.name))).reshape(-1))
            col, y = new_col(), new_y()
            for b in range(g.n):
                _sgemm(raw, rows, plane, g.c, wa, xa[b], col, None, 0, -math.inf, math.inf,
                       nt)
                col2im(col.ctypes.data, None if ba is None else ba.ctypes.data,
                       y[b].ctypes.data, g.m, *geometry, nt)
            return y
        return core
    return _finish(builder, bind, epi, None)


# ------------------------------------------------------------------ BatchNormalization

def split_batch_norms(graph: Graph) -> Graph:
    """Each inference BatchNormalization with constant parameters as a
    per-channel ``Mul`` then ``Add``, so that fusion treats it like any
    elementwise op: folded into the weights and bias of the Conv or
    ConvTranspose before it (when another op stands between them, such as
    an exported bias ``Add``, the canonical BatchNorm fold does not apply),
    or fused into an elementwise group."""
    from heli.ir._ops import get_op
    from heli.ir._types import DType, TensorType

    mul, add = get_op("Mul", ""), get_op("Add", "")
    nodes: list[Node] = []
    constants = dict(graph.constants)
    for node in graph.nodes:
        factors = _batch_norm_affine(node, graph.constants)
        if factors is None:
            nodes.append(node)
            continue
        s, t = factors
        x, y = node.inputs[0], node.outputs[0]
        shape = (s.size,) + (1,) * (len(_shape(x)) - 2)
        label = node.name or y.name
        s_val = Value(f"{label}/bn_scale", TensorType(DType.FLOAT32, shape))
        t_val = Value(f"{label}/bn_shift", TensorType(DType.FLOAT32, shape))
        mid = Value(f"{label}/bn_scaled", y.type)
        constants[s_val.name] = s.reshape(shape)
        constants[t_val.name] = t.reshape(shape)
        nodes.append(Node(mul, (x, s_val), (mid,), {}, name=f"{label}/scale"))
        nodes.append(Node(add, (mid, t_val), (y,), {}, name=f"{label}/shift"))
    if len(nodes) == len(graph.nodes):
        return graph
    return graph.replace(nodes=tuple(nodes), constants=constants)


def _batch_norm_affine(node: Node, constants) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) with BatchNormalization(x) = x * s[c] + t[c], float32, if ``node``
    is an inference BatchNormalization of rank >= 2 with constant parameters."""
    if node.op.domain or node.op.name != "BatchNormalization" or node.attr("training_mode"):
        return None
    if any(o is not None for o in node.outputs[1:]) or len(_shape(node.inputs[0])) < 2:
        return None
    params = [constants.get(v.name) if v is not None else None for v in node.inputs[1:5]]
    if any(p is None for p in params):
        return None
    scale, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
    factor = scale / np.sqrt(var + float(node.attr("epsilon")))
    return factor.astype(np.float32), (beta - mean * factor).astype(np.float32)


def batch_norm_step(builder, node: Node) -> Maker | None:
    """Inference BatchNormalization with constant parameters, else ``None``."""
    params = [builder.const(v) for v in node.inputs[1:5]]
    if any(p is None for p in params) or node.attr("training_mode"):
        return None
    scale, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
    factor = scale / np.sqrt(var + float(node.attr("epsilon")))
    s = np.ascontiguousarray(factor, np.float32)
    t = np.ascontiguousarray(beta - mean * factor, np.float32)
    shape = _shape(node.inputs[0])
    channels = shape[1] if len(shape) > 1 else 1
    inner = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    planes = int(np.prod(shape[:2], dtype=np.int64))
    x_name, out_name, nt = node.inputs[0].name, node.outputs[0].name, builder.nthreads
    new_y = builder.output(node.outputs[0])

    def make(lib: ctypes.CDLL) -> Step:
        fn = _bind(lib, "heli_channel_affine", [_VOID] * 4 + [_LONG] * 3 + [_INT])

        def step(env: Env) -> None:
            xa = f32(env[x_name])
            y = new_y()
            fn(xa.ctypes.data, s.ctypes.data, t.ctypes.data, y.ctypes.data, planes, channels,
               inner, nt)
            env[out_name] = y
        step.keep = (s, t)
        return step
    return make


# ------------------------------------------------------------------ Resize

def resize_step(builder, node: Node) -> Maker | None:
    """Nearest Resize of the last two axes with constant roi/scales/sizes, else ``None``."""
    x_shape, out_shape = _shape(node.inputs[0]), _shape(node.outputs[0])
    if node.attr("mode") != "nearest" or len(x_shape) < 2:
        return None
    if tuple(x_shape[:-2]) != tuple(out_shape[:-2]):
        return None
    extra = []
    for v in node.inputs[1:]:
        if v is None:
            extra.append(None)
            continue
        value = builder.const(v)
        if value is None:
            return None
        extra.append(value)
    h, w = x_shape[-2:]
    lead = (1,) * (len(x_shape) - 2)
    # Indices below 2**24 are exact in float32 and in float64; the op's own
    # semantics on an image of indices give the source of every output pixel.
    if h * w >= 1 << 24:
        return None
    image = np.arange(h * w, dtype=np.float64).reshape(*lead, h, w)
    attrs = node.op.resolve_attrs(node.attrs)
    try:
        picked = node.op.reference(image, *extra, **attrs)
    except Exception:  # e.g. a float32-only path in the reference: leave it to numpy
        return None
    picked = np.asarray(picked)
    if picked.shape != (*lead, *out_shape[-2:]):
        return None
    index = np.ascontiguousarray(picked.reshape(-1), np.int32)
    if not np.array_equal(index, picked.reshape(-1)):
        return None
    planes = int(np.prod(x_shape[:-2], dtype=np.int64)) if len(x_shape) > 2 else 1
    out_plane = int(index.size)
    x_name, out_name, nt = node.inputs[0].name, node.outputs[0].name, builder.nthreads
    new_y = builder.output(node.outputs[0])

    def make(lib: ctypes.CDLL) -> Step:
        fn = _bind(lib, "heli_gather_planes", [_VOID] * 3 + [_LONG] * 3 + [_INT])

        def step(env: Env) -> None:
            xa = f32(env[x_name])
            y = new_y()
            fn(xa.ctypes.data, index.ctypes.data, y.ctypes.data, planes, h * w, out_plane, nt)
            env[out_name] = y
        step.keep = (index,)
        return step
    return make
