"""The NPU's ISA: encoding round trips, decoder and assembler errors, the exact
fixed-point arithmetic, and the generated encoding tables of docs/npu.md."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heli import HeliError
from heli.targets.npu import docgen, isa
from heli.targets.npu.arith import quantize_multiplier, rounding_shift
from heli.targets.npu.errors import AssemblyError, DecodeError, IsaError

DEFS = isa.instructions()


def _field_values(defn: isa.InstrDef) -> st.SearchStrategy[isa.Instr]:
    fields = {}
    for f in defn.fields:
        if f.enum is not None:
            fields[f.name] = st.sampled_from(list(f.enum))
        else:  # favour the edges of each range, where packing bugs live
            fields[f.name] = st.one_of(st.sampled_from([f.min, f.max]),
                                       st.integers(f.min, f.max))
    return st.fixed_dictionaries(fields).filter(
        lambda v: defn.check is None or defn.check(**v) is None).map(lambda v: defn(**v))


INSTRS = st.sampled_from(DEFS).flatmap(_field_values)


# --------------------------------------------------------------------------
# the definition itself
# --------------------------------------------------------------------------


def test_every_instruction_fits_the_word_and_fields_do_not_overlap():
    seen_opcodes = set()
    for d in DEFS:
        assert d.opcode not in seen_opcodes and 0 < d.opcode < 256
        seen_opcodes.add(d.opcode)
        lsb = isa.OPCODE_BITS
        for f in d.fields:
            assert f.lsb == lsb and f.width >= 1
            lsb += f.width
        assert lsb == d.used_bits <= isa.WORD_BITS
        assert d.doc and d.summary


def test_required_instruction_families_exist():
    names = set(isa.INSTRUCTIONS)
    assert {"dma_load", "dma_store", "load_weights", "matmul", "vbias", "requant",
            "requant_pc", "vclip", "vadd", "vmaxpool", "vsumpool", "lut_load", "vlut",
            "push", "wait", "halt"} <= names


def test_queues_follow_the_opcode_or_the_queue_field():
    assert isa.dma_load(mem="spad", sram=0, dram=0, stride=1, rows=1, cols=1).queue \
        == isa.Queue.LOAD
    assert isa.dma_store(mem="acc", sram=0, dram=0, stride=4, rows=1, cols=1).queue \
        == isa.Queue.STORE
    assert isa.matmul(a=0, c=0, rows=1).queue == isa.Queue.COMPUTE
    assert isa.push(queue="store", dst="load").queue == isa.Queue.STORE
    assert isa.wait(queue="compute", src="load").queue == isa.Queue.COMPUTE
    assert isa.halt().queue is None


# --------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(INSTRS)
def test_encode_decode_disassemble_assemble_round_trip(ins):
    word = ins.encode()
    assert 0 <= word < 1 << isa.WORD_BITS
    assert word & 0xFF == ins.defn.opcode
    back = isa.decode(word)
    assert back == ins and back.encode() == word
    assert isa.decode(ins.to_bytes()) == ins
    for full in (False, True):
        text = isa.disassemble(ins, full=full)
        again = isa.assemble(text)
        assert len(again) == 1 and again[0].encode() == word, text


@settings(max_examples=50, deadline=None)
@given(st.lists(INSTRS, max_size=12))
def test_programs_round_trip_as_bytes_and_text(prog):
    data = isa.encode_program(prog)
    assert len(data) == isa.WORD_BYTES * len(prog)
    assert isa.decode_program(data) == prog
    assert isa.assemble(isa.disassemble(prog)) == prog


@settings(max_examples=1500, deadline=None)
@given(st.one_of(
    st.integers(0, (1 << isa.WORD_BITS) - 1),
    # a known opcode with random field bits (reserved bits clear): mostly valid words
    st.sampled_from(DEFS).flatmap(
        lambda d: st.integers(0, (1 << (d.used_bits - isa.OPCODE_BITS)) - 1)
        .map(lambda v: d.opcode | v << isa.OPCODE_BITS))))
def test_any_word_decodes_exactly_or_raises_a_decode_error(word):
    try:
        ins = isa.decode(word)
    except DecodeError as err:
        assert "cannot decode instruction word" in str(err)
        return
    assert ins.encode() == word


# --------------------------------------------------------------------------
# malformed words
# --------------------------------------------------------------------------


def _word(ins: isa.Instr) -> int:
    return ins.encode()


def test_decoder_rejects_unknown_opcodes():
    with pytest.raises(DecodeError, match=r"unknown opcode 0x00"):
        isa.decode(0)
    with pytest.raises(DecodeError, match=r"unknown opcode 0xff"):
        isa.decode(0xFF)


def test_decoder_rejects_set_reserved_bits():
    good = _word(isa.matmul(a=3, c=4, rows=5))
    with pytest.raises(DecodeError, match=r"reserved bits \[127:105\] of matmul are set"):
        isa.decode(good | 1 << 127)
    with pytest.raises(DecodeError, match=r"reserved bits \[127:8\] of halt are set"):
        isa.decode(isa.halt().encode() | 1 << 8)


def test_decoder_rejects_fields_out_of_range():
    word = _word(isa.matmul(a=3, c=4, rows=5))
    rows = isa.matmul.field("rows")
    with pytest.raises(DecodeError, match=r"matmul field rows = 0 is out of range 1\.\.4095"):
        isa.decode(word & ~(rows.mask << rows.lsb))
    push = _word(isa.push(queue="load", dst="compute"))
    queue = isa.push.field("queue")
    with pytest.raises(DecodeError, match=r"field queue = 3 is not one of 0 \(load\)"):
        isa.decode(push | 3 << queue.lsb)
    shift = isa.requant.field("shift")
    assert shift.max == 63  # all 6-bit values are valid: the range check is the width


def test_decoder_rejects_contradictory_fields():
    push = _word(isa.push(queue="load", dst="compute"))
    dst = isa.push.field("dst")
    with pytest.raises(DecodeError, match="cannot push to itself"):
        isa.decode(push & ~(dst.mask << dst.lsb))   # dst = load = queue
    clip = _word(isa.vclip(src=0, dst=0, rows=1, lo=-5, hi=5))
    lo = isa.vclip.field("lo")
    with pytest.raises(DecodeError, match=r"lo = 100 and hi = 5 are reversed"):
        isa.decode(clip & ~(lo.mask << lo.lsb) | (100 << lo.lsb))
    fill = _word(isa.vfill(mem="acc", dst=0, rows=1, value=1000))
    with pytest.raises(DecodeError, match="outside the int8 range"):
        isa.decode(fill & ~(1 << isa.vfill.field("mem").lsb))  # acc -> spad, keep 1000


def test_decoder_names_the_bad_word_in_a_program():
    prog = isa.encode_program([isa.matmul(a=0, c=0, rows=1), isa.halt()])
    bad = prog + (0x7F).to_bytes(16, "little")
    with pytest.raises(DecodeError, match=r"\(instruction 2\): unknown opcode 0x7f"):
        isa.decode_program(bad)
    with pytest.raises(DecodeError, match="not a whole number of 16-byte"):
        isa.decode_program(prog[:-1])
    with pytest.raises(DecodeError, match="is 16 bytes, not 15"):
        isa.decode(prog[:15])
    with pytest.raises(DecodeError, match="does not fit in 128 bits"):
        isa.decode(1 << 128)


def test_decode_errors_are_heli_errors():
    assert issubclass(DecodeError, HeliError) and issubclass(AssemblyError, IsaError)


def test_building_an_instruction_checks_its_fields():
    with pytest.raises(IsaError, match="matmul: field rows = 4096 is out of range 1..4095"):
        isa.matmul(a=0, c=0, rows=4096)
    with pytest.raises(IsaError, match="matmul has no field 'bogus'"):
        isa.matmul(a=0, c=0, rows=1, bogus=1)
    with pytest.raises(IsaError, match="field 'c' is missing"):
        isa.matmul(a=0, rows=1)
    with pytest.raises(IsaError, match=r"mem = 'dram' is not one of spad, acc"):
        isa.vfill(mem="dram", dst=0, rows=1, value=0)
    with pytest.raises(IsaError, match="zp = 128 is out of range -128..127"):
        isa.requant(src=0, dst=0, rows=1, mult=1, shift=0, zp=128)


# --------------------------------------------------------------------------
# assembler
# --------------------------------------------------------------------------


def test_assembler_accepts_comments_commas_spacing_and_defaults():
    prog = isa.assemble("""
        ; a comment line
        dma_load mem=spad, sram=0, dram=0x40, stride=20, rows=3, cols=16   # trailing
        MATMUL a = 0 c=8 rows=3 acc=1
        requant src=8 dst=100 rows=3 mult=-0x40000000 shift=31 zp=-3 lo=-3
        halt
    """)
    assert [i.name for i in prog] == ["dma_load", "matmul", "requant", "halt"]
    assert prog[0].dram == 0x40 and prog[0].mem == isa.Mem.SPAD
    assert prog[1].a_stride == 1 and prog[1].outer == 1 and prog[1].acc == 1
    assert prog[2].mult == -(1 << 30) and prog[2].hi == 127
    assert str(prog[2]) == "requant src=8 dst=100 rows=3 mult=-1073741824 shift=31 zp=-3 lo=-3"


@pytest.mark.parametrize("text, message", [
    ("halt\nfrobnicate x=1", r"line 2: unknown instruction 'frobnicate'"),
    ("\n\nmatmul a=0 c=0", r"line 3: matmul: field 'rows' is missing"),
    ("matmul a=0 c=0 rows=2 color=1", r"line 1: matmul has no field 'color' \(its fields: a,"),
    ("matmul a=0 c=0 rows=x2", r"line 1: the value of rows: 'x2' is not an integer"),
    ("matmul a=0 c=0 rows=5000", r"line 1: matmul: field rows = 5000 is out of range"),
    ("matmul a=0 c=0 rows=1 rows=2", r"line 1: field 'rows' is given twice"),
    ("matmul a=0 c=0 rows", r"line 1: 'rows' is not of the form field=value"),
    ("push queue=load dst=load", r"line 1: push: a queue cannot push to itself"),
    ("wait queue=load src=dram", r"line 1: the value of src: 'dram' is not one of load"),
])
def test_assembler_errors_name_the_line(text, message):
    with pytest.raises(AssemblyError, match=message) as info:
        isa.assemble(text)
    assert info.value.line == int(message.split(":")[0].split()[1])


# --------------------------------------------------------------------------
# fixed-point arithmetic
# --------------------------------------------------------------------------


def _round_half_even(p: int, s: int) -> int:
    return round(Fraction(p, 1 << s))  # Fraction.__round__ rounds half to even


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(-(1 << 31), (1 << 31) - 1),
                          st.integers(-(1 << 31), (1 << 31) - 1)), min_size=1, max_size=20),
       st.integers(0, 63))
def test_rounding_shift_is_exact_round_half_even(pairs, shift):
    prods = [x * m for x, m in pairs]
    got = rounding_shift(np.array(prods, np.int64), shift)
    assert got.tolist() == [_round_half_even(p, shift) for p in prods]


def test_rounding_shift_ties_and_extremes():
    x = np.array([5, 7, -5, -7, 6, -6, 1, -1, 3, -3], np.int64)
    assert rounding_shift(x, 1).tolist() == [2, 4, -2, -4, 3, -3, 0, -0, 2, -2]
    big = np.array([1 << 62, -(1 << 62), (1 << 62) - 1, -(1 << 62) + 1], np.int64)
    for s in (0, 1, 61, 62, 63):
        assert rounding_shift(big, s).tolist() == [_round_half_even(int(v), s) for v in big]
    lanes = rounding_shift(np.array([[10, 10, 10]], np.int64), np.array([0, 2, 3]))
    assert lanes.tolist() == [[10, 2, 1]]


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0 ** -20, 0.0123, 3.7, 1e-12, 2.0 ** 30,
                                   -0.25, 0.999999999])
def test_quantize_multiplier(scale):
    mult, shift = quantize_multiplier(scale)
    assert -(1 << 31) <= mult < 1 << 31 and 0 <= shift <= 63
    assert abs(mult / 2.0 ** shift - scale) <= abs(scale) * 2.0 ** -30 + 2.0 ** -64
    if abs(scale) >= 2.0 ** -32:
        assert 1 << 30 <= abs(mult) < 1 << 31
    if scale in (1.0, 0.5, 2.0 ** -20, 2.0 ** 30, -0.25):
        assert Fraction(mult, 1 << shift) == Fraction(scale)  # powers of two are exact
    with pytest.raises(ValueError, match="too large"):
        quantize_multiplier(2.0 ** 31)


# --------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------


def test_docs_encoding_tables_are_generated_from_the_isa():
    text = docgen.DOC_PATH.read_text(encoding="utf-8")
    assert docgen.update(text) == text, \
        "docs/npu.md is stale: run python -m heli.targets.npu.docgen"
    for d in DEFS:
        assert f"`{d.name}` — opcode `{d.opcode:#04x}`" in text
        for f in d.fields:
            assert f"| `{f.name}` |" in text


def test_docgen_check_mode(tmp_path):
    stale = tmp_path / "npu.md"
    stale.write_text(f"intro\n{docgen.BEGIN}\nSTALE-TEXT\n{docgen.END}\nend\n", encoding="utf-8")
    assert docgen.main([str(stale), "--check"]) == 1
    assert docgen.main([str(stale)]) == 0
    assert docgen.main([str(stale), "--check"]) == 0
    text = stale.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("\nend\n") and "STALE-TEXT" not in text
