"""The NPU cycle model against hand-computed schedules (docs/npu.md, "Cycle model")."""

from __future__ import annotations

import json

import pytest

from heli.targets.npu import NpuConfig, isa
from heli.targets.npu.cycles import UNTAGGED, TimingParams, estimate
from heli.targets.npu.errors import NpuExecutionError
from tests.targets.npu.test_sim import matmul_program

DMA = "dma_load mem=spad sram=0 dram=0 stride=16 rows=4 cols=16"   # 64 + 64/16 = 68 cycles


def _times(report):
    return [(s.start, s.end) for s in report.slices]


def test_one_dma():
    r = estimate(f"{DMA}\nhalt")
    assert r.cycles == 68 and _times(r) == [(0, 68)]
    assert r.busy["dma"] == r.busy["load"] == 68 and r.busy["array"] == 0
    assert (r.dram_read_bytes, r.dram_write_bytes, r.dram_bytes) == (64, 0, 64)
    # int32 accumulator rows are 4 bytes per element; bandwidth and latency are parameters
    r = estimate("dma_store mem=acc sram=0 dram=0 stride=64 rows=3 cols=16\nhalt",
                 NpuConfig(dram_bytes_per_cycle=32, dma_latency=10))
    assert r.cycles == 10 + 192 // 32 and r.dram_write_bytes == 192


def test_one_matmul_and_utilization():
    r = estimate("load_weights src=0 rows=16\nmatmul a=0 c=0 rows=20\nhalt")
    # weights: DIM = 16; matmul: 20 rows + 2*16 - 1 fill/drain
    assert _times(r) == [(0, 16), (16, 67)] and r.cycles == 67
    assert r.macs == 20 * 16 * 16
    assert r.mac_utilization == pytest.approx(20 * 16 * 16 / (16 * 16 * 67))
    assert r.busy["array"] == 67 and r.busy["compute"] == 67
    # only the loaded weight rows do useful work
    r = estimate("load_weights src=0 rows=5\nmatmul a=0 c=0 rows=4 outer=3 c_ostride=4\nhalt",
                 NpuConfig(dim=8))
    assert r.cycles == 8 + 12 + 15 and r.macs == 12 * 5 * 8


def test_back_to_back_matmuls_overlap_the_drain():
    r = estimate("load_weights src=0 rows=16\nmatmul a=0 c=0 rows=10\n"
                 "matmul a=0 c=10 rows=10\nrequant src=0 dst=100 rows=5 mult=1 shift=0 zp=0\n"
                 "load_weights src=0 rows=16\nmatmul a=0 c=0 rows=10\nhalt")
    # the second matmul streams in right behind the first; the requant (vector:
    # 4 + 5) and the next load_weights wait for the drain
    assert _times(r) == [(0, 16), (16, 57), (26, 67), (67, 76), (76, 92), (92, 133)]
    assert r.busy["array"] == 16 + 51 + 16 + 41 and r.busy["vector"] == 9


def test_shadow_weights_overlap_load_weights_with_the_matmul():
    # DIM = 16.  load_weights 1: 0..16.  matmul 1 (R = 40) starts when the weights
    # are in, 16, streams until 56 and drains until 16 + 40 + 31 = 87.  load_weights 2
    # may overwrite the shadow registers once matmul 1 has streamed 2*16 - 1 = 31
    # cycles (every PE has switched): 47..63.  matmul 2 starts when both the weights
    # are in (63) and matmul 1 has streamed all its rows (56): 63, ends 63 + 71 = 134.
    # The pair costs max(R, 3*DIM - 1) = 47 cycles instead of R + 3*DIM - 1 = 87.
    r = estimate("load_weights src=0 rows=16\nmatmul a=0 c=0 rows=40\n"
                 "load_weights src=100 rows=5\nmatmul a=0 c=40 rows=40\nhalt")
    assert _times(r) == [(0, 16), (16, 87), (47, 63), (63, 134)] and r.cycles == 134
    # each matmul counts the rows of the weights it activates
    assert r.macs == 40 * 16 * 16 + 40 * 5 * 16
    assert r.busy["array"] == 134 - 0 and r.busy["compute"] == 134
    # long matmuls: load_weights 2 at 47..63 hides under matmul 1's 100 rows
    # (16..116), so matmul 2 starts right behind it at 116 and ends 116 + 131
    r = estimate("load_weights src=0 rows=16\nmatmul a=0 c=0 rows=100\n"
                 "load_weights src=100 rows=16\nmatmul a=0 c=100 rows=100\nhalt")
    assert _times(r) == [(0, 16), (16, 147), (47, 63), (116, 247)]


def test_shadow_weights_chain_and_completion_rules():
    # DIM = 8.  load_weights 1: 0..8; matmul 1 (R = 4): 8..8 + 4 + 15 = 27.
    # load_weights 2 waits for matmul 1 to have streamed 2*8 - 1 = 15 cycles: 23..31;
    # load_weights 3 waits for the weight chain: 31..39; matmul 2 starts at 39
    # (its rows: 39..43), ends 39 + 19 = 58.
    r = estimate("load_weights src=0 rows=8\nmatmul a=0 c=0 rows=4\n"
                 "load_weights src=8 rows=8\nload_weights src=16 rows=8\n"
                 "matmul a=0 c=4 rows=4\nhalt", NpuConfig(dim=8))
    assert _times(r) == [(0, 8), (8, 27), (23, 31), (31, 39), (39, 58)]
    # a push still waits for every earlier compute instruction to complete: after
    # load_weights 2 (47..63) it waits for matmul 1's drain (87): 87..88, then the
    # store queue's wait 88..89
    r = estimate("load_weights src=0 rows=16\nmatmul a=0 c=0 rows=40\n"
                 "load_weights src=100 rows=16\npush queue=compute dst=store\n"
                 "wait queue=store src=compute\nhalt")
    assert _times(r) == [(0, 16), (16, 87), (47, 63), (87, 88), (88, 89)]
    # a vector instruction between them still waits for the drain: requant
    # 87..87 + 4 + 8 = 99, then load_weights 2 99..115 and matmul 2 115..115 + 71
    r = estimate("load_weights src=0 rows=16\nmatmul a=0 c=0 rows=40\n"
                 "requant src=0 dst=200 rows=8 mult=1 shift=0 zp=0\n"
                 "load_weights src=100 rows=16\nmatmul a=0 c=40 rows=40\nhalt")
    assert _times(r) == [(0, 16), (16, 87), (87, 99), (99, 115), (115, 186)]


def test_vector_lanes():
    prog = "vfill mem=acc dst=0 rows=10 value=0\nhalt"
    assert estimate(prog).cycles == 4 + 10
    assert estimate(prog, timing=TimingParams(vector_lanes=6)).cycles == 4 + 10 * 3


def test_independent_queues_overlap_and_tokens_serialize():
    fill = "vfill mem=acc dst=0 rows=10 value=0"                     # 4 + 10 cycles
    r = estimate(f"{DMA}\n{fill}\nhalt")
    assert _times(r) == [(0, 68), (0, 14)] and r.cycles == 68
    r = estimate(f"{DMA}\npush queue=load dst=compute\nwait queue=compute src=load\n"
                 f"{fill}\nhalt")
    assert _times(r) == [(0, 68), (68, 69), (69, 70), (70, 84)] and r.cycles == 84


def test_token_wait_delays_a_queue_and_the_dma_engine_is_shared():
    r = estimate(f"""
        vfill mem=spad dst=0 rows=40 value=1
        push queue=compute dst=store
        wait queue=store src=compute
        dma_store mem=spad sram=0 dram=0 stride=16 rows=4 cols=16
        {DMA.replace("sram=0", "sram=200")}
        halt""")
    # the store waits for the fill (44) and its push (1); the load queue took the
    # DMA engine at 0, so the store also waits for it (68)
    by_text = {s.text.split()[0]: (s.start, s.end) for s in r.slices}
    assert by_text["wait"] == (45, 46)
    assert by_text["dma_store"] == (68, 136) and r.cycles == 136
    assert r.busy["dma"] == 136 and r.busy["store"] == 1 + 68


def test_full_token_channel_delays_push_until_a_wait():
    r = estimate("push queue=load dst=compute\npush queue=load dst=compute\n"
                 "vfill mem=acc dst=0 rows=20 value=0\nwait queue=compute src=load\n"
                 "wait queue=compute src=load\nhalt", NpuConfig(token_depth=1))
    # the second push needs the slot that the first wait (24..25) frees
    assert _times(r) == [(0, 1), (25, 26), (0, 24), (24, 25), (26, 27)]


VADD = "za=0 ma=1 zb=0 mb=1 acc=0"
# 64 rows of 4 bytes: 16 beats of 4 rows, 256 bytes at 16 B/cycle: one beat per
# cycle, so every row the DMA is refused costs it a cycle
NARROW = "mem=spad sram=0 dram=0 stride=4 rows=64 cols=4"


def test_the_dma_loses_the_bank_ports_the_compute_units_take():
    # the fill writes a scratchpad row every cycle; each 4-row beat of the load
    # covers all 4 banks, so each loses one cycle: 16 beats, 16 cycles.  The
    # load was scheduled first (ties go to the load queue): it is lengthened,
    # the fill (compute has priority) is not
    r = estimate(f"dma_load {NARROW}\nvfill mem=spad dst=100 rows=200 value=0\nhalt")
    assert _times(r) == [(0, 64 + 16 + 16), (0, 204)] and r.bank_stall_cycles == 16
    assert r.slices[0].stall == 16 and r.slices[1].stall == 0
    # a store competes with reads only when both read ports of a bank are taken:
    # vadd's a and b in one bank on every cycle (100 + i, 200 + i), or never
    same = estimate(f"vadd a=100 b=200 dst=0 rows=200 {VADD}\ndma_store {NARROW}\nhalt")
    assert [s.stall for s in same.slices] == [0, 16]
    apart = estimate(f"dma_store {NARROW}\nvadd a=100 b=201 dst=0 rows=200 {VADD}\nhalt")
    assert apart.bank_stall_cycles == 0


def test_bank_conflicts_need_the_same_sram_and_a_dma_with_no_slack():
    # the accumulator is another SRAM
    r = estimate(f"dma_load {NARROW}\nvfill mem=acc dst=100 rows=200 value=0\nhalt")
    assert r.bank_stall_cycles == 0 and r.cycles == 204
    # 16-byte rows: a 64-byte beat every 4 cycles; a refused row waits one
    # cycle within that gap
    wide = "dma_load mem=spad sram=0 dram=0 stride=16 rows=16 cols=16"
    r = estimate(f"{wide}\nvfill mem=spad dst=100 rows=100 value=0\nhalt")
    assert _times(r) == [(0, 80), (0, 104)] and r.bank_stall_cycles == 0


def test_a_beat_of_one_row_meets_the_compute_in_one_bank_of_four():
    one_row = "dma_load mem=spad sram=0 dram=0 stride=4 rows=1 cols=4"
    prog = "\n".join([one_row] * 16)
    r = estimate(f"{prog}\nvfill mem=spad dst=100 rows=300 value=0\nhalt",
                 NpuConfig(dma_latency=0))
    # each transfer: 1 beat in 1 cycle, exposed 1/4 of it
    assert r.bank_stall_cycles == 4
    r = estimate(f"{prog}\nvfill mem=spad dst=100 rows=300 value=0\nhalt",
                 NpuConfig(dma_latency=0), timing=TimingParams(spad_banks=1))
    assert r.bank_stall_cycles == 16


def test_a_transfer_takes_at_least_a_cycle_per_beat():
    # 64 rows of 1 byte at 16 B/cycle would be 4 cycles; 16 beats take 16
    r = estimate("dma_load mem=spad sram=0 dram=0 stride=1 rows=64 cols=1\nhalt",
                 NpuConfig(dma_latency=10))
    assert r.cycles == 10 + 16
    r = estimate("dma_load mem=spad sram=0 dram=0 stride=1 rows=64 cols=1\nhalt",
                 NpuConfig(dma_latency=10), timing=TimingParams(dma_rows=8))
    assert r.cycles == 10 + 8


def test_high_water_marks():
    r = estimate("dma_load mem=spad sram=100 dram=0 stride=16 rows=5 cols=16\n"
                 "matmul a=3 a_stride=2 c=7 rows=3\nhalt")
    assert (r.spad_high_water, r.acc_high_water) == (105, 10)


def _tiled(nbuf: int):
    cfg = NpuConfig()
    M, K, N = 64, 48, 40
    addr = {"A": 0, "W": 4096, "bias": 8192, "mult": 8352, "shift": 8512, "C": 9000,
            "Y": 30000}
    return estimate(matmul_program(cfg, M, K, N, 16, addr, nbuf=nbuf), cfg)


def test_double_buffering_reduces_total_cycles():
    single, double = _tiled(1), _tiled(2)
    assert double.cycles < 0.85 * single.cycles
    assert double.cycles >= double.busy["dma"]            # one DMA engine: DMA-bound
    assert double.macs == single.macs == 64 * 48 * 48    # K blocks 16+16+16, N padded to 48
    assert double.dram_bytes == single.dram_bytes
    assert single.cycles >= single.busy["dma"] + single.busy["array"]


def test_program_forms_agree():
    prog = matmul_program(NpuConfig(), 9, 20, 17, 9, {"A": 0, "W": 512, "bias": 1024,
                                                        "mult": 1200, "shift": 1300,
                                                        "C": 2048, "Y": 4096})
    want = estimate(prog)
    for form in (isa.encode_program(prog), isa.disassemble(prog)):
        got = estimate(form)
        assert got.cycles == want.cycles and _times(got) == _times(want)


def test_trace_json(tmp_path):
    r = estimate(f"{DMA}\npush queue=load dst=compute\nwait queue=compute src=load\n"
                 "load_weights src=0 rows=4\nmatmul a=0 c=0 rows=4\nhalt",
                 layers=[(0, 2, "load"), (2, 5, "fc")])
    path = r.write_trace(tmp_path / "t.json")
    data = json.loads(path.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]      # no temporary left
    events = data["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert sorted(names.values()) == sorted(["load queue", "compute queue", "store queue",
                                             "DMA engine", "systolic array", "vector unit",
                                             "layers"])
    tracks = {}
    for e in events:
        if e["ph"] == "X":
            tracks.setdefault(names[e["tid"]], []).append(e["name"])
    assert tracks["load queue"] == [str(isa.assemble(DMA)[0]), "push queue=load dst=compute"]
    assert tracks["systolic array"] == ["load_weights src=0 rows=4", "matmul a=0 c=0 rows=4"]
    assert tracks["layers"] == ["load", "fc"]
    mm = next(e for e in events if e["name"] == "matmul a=0 c=0 rows=4")
    assert mm["ts"] == pytest.approx(86 * 1e-3) and mm["dur"] == pytest.approx(35 * 1e-3)


def test_layer_breakdown_sums_to_the_total():
    single = _tiled(2)
    prog = matmul_program(NpuConfig(), 64, 48, 40, 16, {"A": 0, "W": 4096, "bias": 8192,
                                                        "mult": 8352, "shift": 8512,
                                                        "C": 9000, "Y": 30000}, nbuf=2)
    third = len(prog) // 3
    r = estimate(prog, layers=[(third, 2 * third, "middle"), (0, 5, "head")])
    assert [layer.name for layer in r.layers] == ["head", UNTAGGED, "middle", UNTAGGED]
    assert sum(layer.cycles for layer in r.layers) == r.cycles == single.cycles
    assert sum(layer.macs for layer in r.layers) == r.macs
    assert sum(layer.dram_bytes for layer in r.layers) == r.dram_bytes
    assert sum(layer.instructions for layer in r.layers) == len(prog) - 1
    with pytest.raises(ValueError, match="overlaps the one before"):
        estimate(prog, layers=[(0, 5, "a"), (4, 6, "b")])
    with pytest.raises(ValueError, match="is not a non-empty range"):
        estimate(prog, layers=[(3, 3, "a")])


def test_errors():
    with pytest.raises(NpuExecutionError, match="the program deadlocked: the compute queue "
                       "waits at instruction 0"):
        estimate("wait queue=compute src=load\nhalt")
    with pytest.raises(NpuExecutionError, match="unconsumed tokens: 1 from the load queue"):
        estimate("push queue=load dst=store\nhalt")
    with pytest.raises(NpuExecutionError, match="cols = 17 exceeds the array dimension"):
        estimate("dma_load mem=spad sram=0 dram=0 stride=16 rows=1 cols=17\nhalt")
    with pytest.raises(NpuExecutionError, match="spans accumulator rows 1020..1025"):
        estimate("matmul a=0 c=1020 rows=3 outer=2 c_ostride=3\nhalt")
    with pytest.raises(NpuExecutionError, match="does not end with a halt"):
        estimate("")
