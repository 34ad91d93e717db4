"""The NPU simulator against independent numpy int64 oracles (written here, not
shared with heli.targets.npu.arith), and its errors: out-of-bounds accesses,
races, deadlocks, malformed programs."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from heli import ExecutionError
from heli.targets.npu import NpuConfig, isa
from heli.targets.npu.arith import quantize_multiplier
from heli.targets.npu.errors import NpuExecutionError
from heli.targets.npu.sim import Npu

# --------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------


def _rhe(num: int, shift: int) -> int:
    """num / 2**shift rounded half to even (Fraction.__round__), exactly."""
    return round(Fraction(int(num), 1 << int(shift)))


def requant_oracle(acc: np.ndarray, mult, shift, zp: int, lo: int = -128,
                   hi: int = 127) -> np.ndarray:
    acc = np.asarray(acc, np.int64)
    mult = np.broadcast_to(np.asarray(mult, np.int64), acc.shape)
    shift = np.broadcast_to(np.asarray(shift, np.int64), acc.shape)
    out = np.array([_rhe(int(a) * int(m), s) for a, m, s in
                    zip(acc.ravel(), mult.ravel(), shift.ravel(), strict=True)], np.int64)
    return np.clip(out.reshape(acc.shape) + zp, lo, hi).astype(np.int8)


def _int8(rng, *shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


class Alloc:
    """A bump allocator for DRAM addresses (16-byte aligned)."""

    def __init__(self) -> None:
        self.top = 0

    def __call__(self, nbytes: int) -> int:
        addr = self.top
        self.top += -(-nbytes // 16) * 16
        return addr


# --------------------------------------------------------------------------
# a tiled matmul, written as the compiler will: double-buffered, with tokens
# --------------------------------------------------------------------------


def matmul_program(cfg: NpuConfig, M: int, K: int, N: int, tm: int, addr: dict, *,
                   nbuf: int = 2, per_channel: bool = False, requant: tuple = (1, 0, 0)):
    """Y = requant(A @ W + bias), C = A @ W + bias (int32), both stored to DRAM."""
    D = cfg.dim
    kbs, nbs = range(0, K, D), range(0, N, D)
    # scratchpad and accumulator buffers per parity
    a_buf = [b * len(kbs) * tm for b in range(nbuf)]
    w_buf = [nbuf * len(kbs) * tm + b * len(kbs) * D for b in range(nbuf)]
    y_buf = [w_buf[-1] + len(kbs) * D + b * tm for b in range(nbuf)]
    c_buf = [b * (tm + 2) for b in range(nbuf)]        # tm rows + 2 parameter rows
    tiles = [(m0, n0) for m0 in range(0, M, tm) for n0 in nbs]
    prog = []
    for t, (m0, n0) in enumerate(tiles):
        b, rows, nc = t % nbuf, min(tm, M - m0), min(D, N - n0)
        if t >= nbuf:
            prog.append(isa.wait(queue="load", src="store"))
        for j, k0 in enumerate(kbs):
            kc = min(D, K - k0)
            prog.append(isa.dma_load(mem="spad", sram=a_buf[b] + j * tm,
                                     dram=addr["A"] + m0 * K + k0, stride=K, rows=rows,
                                     cols=kc))
            prog.append(isa.dma_load(mem="spad", sram=w_buf[b] + j * D,
                                     dram=addr["W"] + k0 * N + n0, stride=N, rows=kc,
                                     cols=nc))
        prog.append(isa.dma_load(mem="acc", sram=c_buf[b], dram=addr["bias"] + 4 * n0,
                                 stride=0, rows=rows, cols=nc))    # broadcast bias
        if per_channel:
            for p, name in enumerate(("mult", "shift")):
                prog.append(isa.dma_load(mem="acc", sram=c_buf[b] + tm + p,
                                         dram=addr[name] + 4 * n0, stride=0, rows=1, cols=nc))
        prog.append(isa.push(queue="load", dst="compute"))

        prog.append(isa.wait(queue="compute", src="load"))
        for j, k0 in enumerate(kbs):
            prog.append(isa.load_weights(src=w_buf[b] + j * D, rows=min(D, K - k0)))
            prog.append(isa.matmul(a=a_buf[b] + j * tm, c=c_buf[b], rows=rows, acc=1))
        if per_channel:
            prog.append(isa.requant_pc(src=c_buf[b], dst=y_buf[b], rows=rows,
                                       params=c_buf[b] + tm, zp=requant[2]))
        else:
            mult, shift, zp = requant
            prog.append(isa.requant(src=c_buf[b], dst=y_buf[b], rows=rows, mult=mult,
                                    shift=shift, zp=zp))
        prog.append(isa.push(queue="compute", dst="store"))

        prog.append(isa.wait(queue="store", src="compute"))
        prog.append(isa.dma_store(mem="acc", sram=c_buf[b], dram=addr["C"] + 4 * (m0 * N + n0),
                                  stride=4 * N, rows=rows, cols=nc))
        prog.append(isa.dma_store(mem="spad", sram=y_buf[b], dram=addr["Y"] + m0 * N + n0,
                                  stride=N, rows=rows, cols=nc))
        if t + nbuf < len(tiles):
            prog.append(isa.push(queue="store", dst="load"))
    return prog + [isa.halt()]


def _matmul_setup(cfg, M, K, N, seed=0):
    rng = np.random.default_rng(seed)
    A, W = _int8(rng, M, K), _int8(rng, K, N)
    bias = rng.integers(-50000, 50000, N).astype(np.int32)
    alloc = Alloc()
    addr = {"A": alloc(M * K), "W": alloc(K * N), "bias": alloc(4 * N), "mult": alloc(4 * N),
            "shift": alloc(4 * N), "C": alloc(4 * M * N), "Y": alloc(M * N)}
    npu = Npu(cfg, dram=alloc.top + 64)
    npu.write_dram(addr["A"], A)
    npu.write_dram(addr["W"], W)
    npu.write_dram(addr["bias"], bias)
    return npu, addr, A, W, bias, rng


@pytest.mark.parametrize("dim, M, K, N, tm", [
    (16, 37, 45, 29, 20),   # nothing is a multiple of DIM
    (8, 13, 19, 11, 7),
    (16, 5, 3, 2, 5),       # smaller than one block
])
def test_tiled_matmul_with_requant(dim, M, K, N, tm):
    cfg = NpuConfig(dim=dim)
    npu, addr, A, W, bias, _ = _matmul_setup(cfg, M, K, N)
    mult, shift = quantize_multiplier(0.0123)
    zp = -7
    stats = npu.run(matmul_program(cfg, M, K, N, tm, addr, requant=(mult, shift, zp)))

    acc = A.astype(np.int64) @ W.astype(np.int64) + bias
    np.testing.assert_array_equal(npu.read_dram(addr["C"], (M, N), np.int32), acc)
    np.testing.assert_array_equal(npu.read_dram(addr["Y"], (M, N), np.int8),
                                  requant_oracle(acc, mult, shift, zp))
    assert stats.instructions["matmul"] == -(-M // tm) * -(-N // dim) * -(-K // dim)
    assert stats.dram_write_bytes == 5 * M * N and stats.cycles > 0


def test_requant_of_a_power_of_two_scale_matches_numpy_rint():
    # M / 2**s = 2**-5 exactly, so the result is round-half-even(acc / 32) + zp,
    # which numpy's rint computes in float64 (exact for these magnitudes).
    cfg = NpuConfig()
    M, K, N = 20, 33, 18
    npu, addr, A, W, bias, _ = _matmul_setup(cfg, M, K, N, seed=1)
    mult, shift = quantize_multiplier(2.0 ** -11)
    assert (mult, shift) == (1 << 30, 41)
    npu.run(matmul_program(cfg, M, K, N, 16, addr, requant=(mult, shift, 3)))
    acc = A.astype(np.int64) @ W.astype(np.int64) + bias
    want = np.clip(np.rint(acc / 2.0 ** 11) + 3, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(npu.read_dram(addr["Y"], (M, N), np.int8), want)


def test_per_channel_requant():
    cfg = NpuConfig()
    M, K, N = 19, 40, 21
    npu, addr, A, W, bias, rng = _matmul_setup(cfg, M, K, N, seed=2)
    pairs = [quantize_multiplier(float(s)) for s in rng.uniform(1e-4, 1e-2, N)]
    mults = np.array([p[0] for p in pairs], np.int32)
    shifts = np.array([p[1] for p in pairs], np.int32)
    shifts[0], mults[0] = 0, 0            # lane edge cases: zero multiplier, no shift
    npu.write_dram(addr["mult"], mults)
    npu.write_dram(addr["shift"], shifts)
    npu.run(matmul_program(cfg, M, K, N, 19, addr, per_channel=True, requant=(0, 0, 4)))
    acc = A.astype(np.int64) @ W.astype(np.int64) + bias
    np.testing.assert_array_equal(npu.read_dram(addr["Y"], (M, N), np.int8),
                                  requant_oracle(acc, mults, shifts, 4))


def test_double_buffering_overlaps_transfers_with_compute():
    cfg = NpuConfig()
    M, K, N = 64, 48, 40
    results = {}
    for nbuf in (1, 2):
        npu, addr, A, W, bias, _ = _matmul_setup(cfg, M, K, N, seed=3)
        stats = npu.run(matmul_program(cfg, M, K, N, 16, addr, nbuf=nbuf, requant=(1, 8, 0)))
        results[nbuf] = (stats, npu.read_dram(addr["Y"], (M, N), np.int8))
    np.testing.assert_array_equal(results[1][1], results[2][1])
    single, double = results[1][0], results[2][0]
    # one buffer serializes the queues: the makespan is the sum of their busy time;
    # two let the DMA of one tile overlap the compute of another
    assert single.cycles == sum(single.busy.values())
    assert max(double.busy.values()) <= double.cycles < 0.7 * single.cycles
    assert double.busy["compute"] == single.busy["compute"]


def test_binary_and_text_programs_run_the_same():
    cfg = NpuConfig()
    M, K, N = 9, 20, 17
    prog = None
    outs = []
    for form in ("instrs", "bytes", "text"):
        npu, addr, A, W, bias, _ = _matmul_setup(cfg, M, K, N, seed=4)
        prog = matmul_program(cfg, M, K, N, 9, addr, requant=(1 << 30, 36, 0))
        program = {"instrs": prog, "bytes": isa.encode_program(prog),
                   "text": isa.disassemble(prog)}[form]
        npu.run(program)
        outs.append(npu.read_dram(addr["Y"], (M, N), np.int8))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


# --------------------------------------------------------------------------
# a quantized residual block tail: add, relu, max / average pooling, LUT
# --------------------------------------------------------------------------


def test_add_relu_pool_lut_sequence():
    cfg = NpuConfig()
    D = cfg.dim
    H, Wd, C = 5, 6, 20                  # two channel blocks, the second 4 wide
    rng = np.random.default_rng(5)
    x1, x2 = _int8(rng, H, Wd, C), _int8(rng, H, Wd, C)
    za, zb, zy = 3, -10, -4
    ma, mb, sh = 23000, -9000, 15         # ratios of the input scales to the output scale
    am, ash = quantize_multiplier(0.7 / 9)  # average of 9 taps, rescaled by 0.7
    zo = 5
    bias = rng.integers(-300, 300, C).astype(np.int32)
    table = np.round(100 * np.tanh((np.arange(256) - 128) / 40)).astype(np.int8)
    OH, OW = (H - 2) // 2 + 1, (Wd - 2) // 2 + 1     # max pool 2x2, stride 2
    AH, AW = H - 2, Wd - 2                            # average pool 3x3, stride 1

    alloc = Alloc()
    a_x1, a_x2 = alloc(x1.size), alloc(x2.size)
    a_bias, a_lut = alloc(4 * C), alloc(256)
    a_mp, a_ap, a_lo = alloc(OH * OW * C), alloc(AH * AW * C), alloc(OH * OW * C)
    npu = Npu(cfg, dram=alloc.top)
    for addr, data in ((a_x1, x1), (a_x2, x2), (a_bias, bias), (a_lut, table)):
        npu.write_dram(addr, data)

    npix = H * Wd
    X1, X2, S, P, L, T = 0, 100, 200, 300, 400, 500     # scratchpad rows (per block below)
    ACC, AP, BIAS = 0, 100, 200                          # accumulator rows
    src = [f"dma_load mem=spad sram={T} dram={a_lut} stride={D} rows={256 // D} cols={D}"]
    body, out = ["wait queue=compute src=load", f"lut_load src={T} table=2"], \
        ["wait queue=store src=compute"]
    for j, c0 in enumerate(range(0, C, D)):
        cc, o = min(D, C - c0), 1000 * j          # block j lives 1000 rows further
        src += [f"dma_load mem=spad sram={X1 + o} dram={a_x1 + c0} stride={C} rows={npix} "
                f"cols={cc}",
                f"dma_load mem=spad sram={X2 + o} dram={a_x2 + c0} stride={C} rows={npix} "
                f"cols={cc}",
                f"dma_load mem=acc sram={BIAS + j} dram={a_bias + 4 * c0} stride=0 rows=1 "
                f"cols={cc}"]
        body += [f"vadd a={X1 + o} b={X2 + o} dst={ACC + j * 50} rows={npix} za={za} ma={ma} "
                 f"zb={zb} mb={mb}",
                 f"requant src={ACC + j * 50} dst={S + o} rows={npix} mult=1 shift={sh} "
                 f"zp={zy}",
                 f"vclip src={S + o} dst={S + o} rows={npix} lo={zy}"]      # ReLU in place
        for k, (kh, kw) in enumerate((kh, kw) for kh in range(2) for kw in range(2)):
            body.append(f"vmaxpool src={S + o + kh * Wd + kw} src_stride=2 "
                        f"src_ostride={2 * Wd} dst={P + o} dst_ostride={OW} rows={OW} "
                        f"outer={OH} acc={int(k > 0)}")
        body.append(f"vfill mem=acc dst={AP + j * 20} rows={AH * AW} value=0")
        for kh in range(3):
            for kw in range(3):
                body.append(f"vsumpool src={S + o + kh * Wd + kw} src_ostride={Wd} "
                            f"dst={AP + j * 20} dst_ostride={AW} rows={AW} outer={AH} "
                            f"zp={zy} acc=1")
        body += [f"vbias dst={AP + j * 20} bias={BIAS + j} rows={AH * AW}",
                 f"requant src={AP + j * 20} dst={P + o + 50} rows={AH * AW} mult={am} "
                 f"shift={ash} zp={zo}",
                 f"vlut src={P + o} dst={L + o} rows={OH * OW} table=2"]
        out += [f"dma_store mem=spad sram={P + o} dram={a_mp + c0} stride={C} "
                f"rows={OH * OW} cols={cc}",
                f"dma_store mem=spad sram={P + o + 50} dram={a_ap + c0} stride={C} "
                f"rows={AH * AW} cols={cc}",
                f"dma_store mem=spad sram={L + o} dram={a_lo + c0} stride={C} "
                f"rows={OH * OW} cols={cc}"]
    program = "\n".join(src + ["push queue=load dst=compute"] + body
                        + ["push queue=compute dst=store"] + out + ["halt"])
    npu.run(program)

    # the oracle, in int64 on NHWC arrays
    s = (x1.astype(np.int64) - za) * ma + (x2.astype(np.int64) - zb) * mb
    r = np.maximum(requant_oracle(s, 1, sh, zy).astype(np.int64), zy)
    mp = np.full((OH, OW, C), -128, np.int64)
    for kh in range(2):
        for kw in range(2):
            mp = np.maximum(mp, r[kh:kh + 2 * OH:2, kw:kw + 2 * OW:2])
    ap = sum(r[kh:kh + AH, kw:kw + AW] - zy for kh in range(3) for kw in range(3)) + bias
    np.testing.assert_array_equal(npu.read_dram(a_mp, (OH, OW, C)), mp)
    np.testing.assert_array_equal(npu.read_dram(a_ap, (AH, AW, C)),
                                  requant_oracle(ap, am, ash, zo))
    np.testing.assert_array_equal(npu.read_dram(a_lo, (OH, OW, C)), table[mp + 128])


# --------------------------------------------------------------------------
# convolution as per-tap strided matmuls, with zero-point padding
# --------------------------------------------------------------------------


def test_strided_padded_conv_by_taps():
    cfg = NpuConfig()
    H = Wd = 7
    C, CO, KH, STRIDE, PAD = 5, 6, 3, 2, 1
    rng = np.random.default_rng(6)
    x, w = _int8(rng, H, Wd, C), _int8(rng, KH, KH, C, CO)
    zx = -9
    bias = rng.integers(-1000, 1000, CO).astype(np.int32)
    OH = (H + 2 * PAD - KH) // STRIDE + 1
    OW = (Wd + 2 * PAD - KH) // STRIDE + 1
    P = Wd + 2 * PAD                                   # row pitch of the padded input
    folded = (bias - zx * w.astype(np.int64).sum(axis=(0, 1, 2))).astype(np.int32)
    mult, shift = quantize_multiplier(0.004)

    alloc = Alloc()
    a_x, a_w, a_b, a_y = alloc(x.size), alloc(w.size), alloc(4 * CO), alloc(OH * OW * CO)
    npu = Npu(cfg, dram=alloc.top)
    npu.write_dram(a_x, x)
    npu.write_dram(a_w, w)
    npu.write_dram(a_b, folded)

    XB, WB, YB = 0, 200, 400                          # scratchpad rows
    prog = [isa.vfill(mem="spad", dst=XB, rows=P * P, value=zx),   # padding = zero point
            isa.push(queue="compute", dst="load"),
            isa.wait(queue="load", src="compute")]
    for h in range(H):
        prog.append(isa.dma_load(mem="spad", sram=XB + (h + PAD) * P + PAD,
                                 dram=a_x + h * Wd * C, stride=C, rows=Wd, cols=C))
    for t in range(KH * KH):
        prog.append(isa.dma_load(mem="spad", sram=WB + t * cfg.dim, dram=a_w + t * C * CO,
                                 stride=CO, rows=C, cols=CO))
    prog += [isa.dma_load(mem="acc", sram=0, dram=a_b, stride=0, rows=OH * OW, cols=CO),
             isa.push(queue="load", dst="compute"),
             isa.wait(queue="compute", src="load")]
    for t, (kh, kw) in enumerate((kh, kw) for kh in range(KH) for kw in range(KH)):
        prog += [isa.load_weights(src=WB + t * cfg.dim, rows=C),
                 isa.matmul(a=XB + kh * P + kw, a_stride=STRIDE, a_ostride=STRIDE * P,
                            c=0, c_ostride=OW, rows=OW, outer=OH, acc=1)]
    prog += [isa.requant(src=0, dst=YB, rows=OH * OW, mult=mult, shift=shift, zp=2, lo=2),
             isa.push(queue="compute", dst="store"),
             isa.wait(queue="store", src="compute"),
             isa.dma_store(mem="spad", sram=YB, dram=a_y, stride=CO, rows=OH * OW, cols=CO),
             isa.halt()]
    npu.run(prog)

    xp = np.zeros((H + 2 * PAD, Wd + 2 * PAD, C), np.int64)
    xp[PAD:PAD + H, PAD:PAD + Wd] = x.astype(np.int64) - zx
    acc = np.zeros((OH, OW, CO), np.int64) + bias
    for kh in range(KH):
        for kw in range(KH):
            patch = xp[kh:kh + STRIDE * OH:STRIDE, kw:kw + STRIDE * OW:STRIDE]
            acc += patch @ w[kh, kw].astype(np.int64)
    np.testing.assert_array_equal(npu.read_dram(a_y, (OH, OW, CO)),
                                  requant_oracle(acc, mult, shift, 2, lo=2))


def test_accumulator_wraps_modulo_2_32():
    npu = Npu(dram=64)
    npu.write_dram(0, np.array([2**31 - 1] * 16, np.int32))
    npu.run("""
        dma_load mem=acc sram=0 dram=0 stride=0 rows=2 cols=16
        push queue=load dst=compute
        wait queue=compute src=load
        vbias dst=1 bias=0 rows=1
        vfill mem=spad dst=0 rows=1 value=-1
        vsumpool src=0 dst=0 rows=1 zp=127 acc=1
        halt
    """)
    assert npu.acc[1, 0] == -2 and npu.acc[0, 0] == 2**31 - 1 - 128


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def _run(text: str, cfg: NpuConfig | None = None, dram: int = 4096):
    return Npu(cfg, dram=dram).run(text)


@pytest.mark.parametrize("program, message", [
    ("dma_load mem=spad sram=16380 dram=0 stride=16 rows=8 cols=16",
     r"instruction 0 \(dma_load mem=spad sram=16380 .*\) in the load queue: its destination "
     r"spans scratchpad rows 16380\.\.16387, but the scratchpad has only 16384 rows"),
    ("dma_load mem=acc sram=0 dram=0xff0 stride=64 rows=2 cols=16",
     r"instruction 0 .* its source spans DRAM bytes 0xff0\.\.0x106f, past the end of the "
     r"4096-byte DRAM"),
    ("dma_store mem=spad sram=0 dram=0x1000 stride=16 rows=1 cols=1",
     r"instruction 0 \(dma_store .*\) in the store queue: its destination spans DRAM bytes "
     r"0x1000\.\.0x1000"),
    ("matmul a=0 c=1020 rows=3 outer=2 c_ostride=3",
     r"instruction 0 \(matmul .*\) in the compute queue: its output spans accumulator rows "
     r"1020\.\.1025, but the accumulator has only 1024 rows"),
    ("vmaxpool src=16383 src_stride=2 dst=0 rows=2",
     r"its source spans scratchpad rows 16383\.\.16385"),
    ("dma_load mem=spad sram=0 dram=0 stride=16 rows=1 cols=17",
     r"cols = 17 exceeds the array dimension DIM = 16"),
    ("vlut src=0 dst=0 rows=1 table=4", r"table 4 does not exist \(lut_tables = 4\)"),
    ("vfill mem=acc dst=0 rows=2 value=64\nrequant_pc src=0 dst=0 rows=1 params=0 zp=0",
     r"instruction 1 .*the shift in lane 0 of accumulator row 1 is 64, outside 0\.\.63"),
    ("vclip src=0 dst=2 rows=4", r"its destination \(scratchpad rows 2\.\.5\) partly overlaps "
     r"one of its sources \(scratchpad rows 0\.\.3\) at row 2"),
    ("vbias dst=0 bias=3 rows=8", r"partly overlaps one of its sources"),
    ("matmul a=0 c=0 rows=4 outer=2 c_ostride=2",
     r"its output names accumulator row 2 more than once"),
    ("vfill mem=acc dst=0 rows=1 value=0\ndma_store mem=spad sram=0 dram=0 stride=8 rows=2 "
     "cols=16", r"its destination rows overlap: the stride of 8 bytes is less than the 16"),
])
def test_bad_accesses_name_the_instruction_and_address(program, message):
    with pytest.raises(NpuExecutionError, match=message):
        _run(program + "\nhalt")


def test_errors_are_execution_errors():
    with pytest.raises(ExecutionError):
        _run("matmul a=0 c=5000 rows=1\nhalt")


def test_sram_race_between_load_and_compute_is_reported():
    with pytest.raises(NpuExecutionError, match=(
            r"instruction 1 \(load_weights src=8 rows=4\) in the compute queue: data race on "
            r"scratchpad row 8: this instruction reads it, and instruction 0 \(dma_load .*\) "
            r"in the load queue wrote it, with no push/wait chain ordering the two")):
        _run("dma_load mem=spad sram=8 dram=0 stride=16 rows=4 cols=16\n"
             "load_weights src=8 rows=4\nhalt")


def test_write_after_read_race_is_reported():
    # the store queue reads row 0 while compute overwrites it, unordered
    with pytest.raises(NpuExecutionError, match=r"data race on scratchpad row 0: this "
                       r"instruction (reads|writes) it"):
        _run("dma_store mem=spad sram=0 dram=0 stride=16 rows=1 cols=16\n"
             "vfill mem=spad dst=0 rows=1 value=1\nhalt")


def test_dram_race_between_store_and_load_is_reported():
    program = """
        dma_store mem=spad sram=0 dram=0x100 stride=16 rows=4 cols=16
        dma_load mem=spad sram=10 dram=0x120 stride=16 rows=1 cols=16
        halt
    """
    with pytest.raises(NpuExecutionError, match=r"data race on DRAM byte 0x120"):
        _run(program)
    # ordered through the compute queue, it is fine
    _run("""
        dma_store mem=spad sram=0 dram=0x100 stride=16 rows=4 cols=16
        push queue=store dst=compute
        wait queue=compute src=store
        push queue=compute dst=load
        wait queue=load src=compute
        dma_load mem=spad sram=10 dram=0x120 stride=16 rows=1 cols=16
        halt
    """)
    # disjoint DRAM bytes never race
    _run("dma_store mem=spad sram=0 dram=0x100 stride=16 rows=2 cols=16\n"
         "dma_load mem=spad sram=10 dram=0x120 stride=16 rows=1 cols=16\nhalt")


def test_races_can_be_ignored():
    npu = Npu(dram=256)
    npu.run("dma_load mem=spad sram=8 dram=0 stride=16 rows=4 cols=16\n"
            "load_weights src=8 rows=4\nhalt", check_races=False)


def test_deadlock_is_reported():
    with pytest.raises(NpuExecutionError, match=(
            r"the program deadlocked: the compute queue waits at instruction 0 "
            r"\(wait queue=compute src=load\) for a token from the load queue")):
        _run("wait queue=compute src=load\nhalt")


def test_fetch_stall_behind_a_full_queue_deadlocks():
    # compute waits for a token that the load queue pushes only after many
    # compute instructions: fine with deep queues, a deadlock with shallow ones
    body = "\n".join(["wait queue=compute src=load"]
                     + ["vfill mem=acc dst=0 rows=1 value=0"] * 6
                     + ["push queue=load dst=compute", "halt"])
    _run(body)
    with pytest.raises(NpuExecutionError, match=r"fetch is stalled at instruction 4 because "
                       r"the compute queue is full \(4 instructions\)"):
        _run(body, NpuConfig(queue_depth=4))


def test_full_token_channel_stalls_push():
    pushes = "\n".join(["push queue=load dst=compute"] * 3)
    waits = "\n".join(["wait queue=compute src=load"] * 3)
    _run(f"{pushes}\n{waits}\nhalt", NpuConfig(token_depth=2))  # the waits drain the channel
    with pytest.raises(NpuExecutionError, match=r"the load queue waits at instruction 2 "
                       r"\(push queue=load dst=compute\) for room in the full channel"):
        _run(f"{pushes}\nhalt", NpuConfig(token_depth=2))


def test_unconsumed_tokens_are_reported():
    with pytest.raises(NpuExecutionError, match=r"unconsumed tokens: 1 from the load queue "
                       r"to the store queue"):
        _run("push queue=load dst=store\nhalt")


@pytest.mark.parametrize("program, message", [
    ("vfill mem=acc dst=0 rows=1 value=0", "does not end with a halt"),
    ("", "does not end with a halt"),
    ("halt\nhalt", "instruction 0 is a halt before the end"),
])
def test_program_must_end_with_its_only_halt(program, message):
    with pytest.raises(NpuExecutionError, match=message):
        _run(program)


def test_dram_buffer_is_shared_with_the_caller():
    buf = bytearray(64)
    buf[:4] = bytes([1, 2, 3, 4])
    Npu(dram=buf).run("""
        dma_load mem=spad sram=0 dram=0 stride=4 rows=1 cols=4
        push queue=load dst=store
        wait queue=store src=load
        dma_store mem=spad sram=0 dram=32 stride=4 rows=1 cols=4
        halt
    """)
    assert buf[32:36] == bytes([1, 2, 3, 4])
