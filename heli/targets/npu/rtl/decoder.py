"""The instruction decoder, generated from the ISA definition
(:mod:`heli.targets.npu.isa`): nothing about opcodes, field positions, widths,
signedness or valid ranges is written here by hand.

From a 128-bit instruction word it derives, combinationally: the opcode, one
``is_<mnemonic>`` flag per instruction, the executing queue, every field
(one output port per field *name*, the union over the instructions, zero when
the instruction has no such field) and a status that mirrors
:func:`heli.targets.npu.isa.decode`'s checks in the same order: an unknown
opcode, then set reserved bits, then a field outside its valid values or
fields that contradict each other.

The ISA states cross-field rules as Python functions (``InstrDef.check``);
those are translated once, below, in :data:`CROSS_FIELD_RULES`.  Generating a
decoder for an ISA with a rule that has no translation fails, naming the
instruction, so the RTL cannot silently accept what the decoder rejects.
"""

# No `from __future__ import annotations`: wiring.Component reads the port
# annotations as values.
from collections.abc import Callable

from amaranth.hdl import Const, Module, Signal, Value, signed, unsigned
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from heli.targets.npu import isa
from heli.targets.npu.isa import OPCODE_BITS, WORD_BITS, Field, InstrDef, Mem, Queue


class DecodeStatus(enum.Enum, shape=2):
    """Why a word does not decode (the first failing check, as isa.decode)."""

    OK = 0
    BAD_OPCODE = 1      # no instruction has this opcode (0x00 included)
    RESERVED = 2        # bits above the instruction's last field are set
    BAD_FIELD = 3       # a field out of range, or a cross-field rule broken


#: Queue code of ``halt`` (executed by the fetch unit) and of undecodable words.
QUEUE_NONE = 3

_Fields = dict[str, Value]

#: RTL translations of the ISA's cross-field rules, by instruction: the
#: condition under which the fields are *invalid*.
CROSS_FIELD_RULES: dict[str, Callable[[_Fields], Value]] = {
    "push": lambda f: f["queue"] == f["dst"],
    "wait": lambda f: f["queue"] == f["src"],
    "requant": lambda f: f["lo"] > f["hi"],
    "requant_pc": lambda f: f["lo"] > f["hi"],
    "vclip": lambda f: f["lo"] > f["hi"],
    "vfill": lambda f: (f["mem"] == Mem.SPAD) & ((f["value"] < -128) | (f["value"] > 127)),
}


def _shape(f: Field):
    return signed(f.width) if f.signed else unsigned(f.width)


def check_translated(defs) -> list[InstrDef]:
    """``defs`` as a list if every cross-field rule among them has an RTL
    translation; NotImplementedError naming the instruction otherwise."""
    defs = list(defs)
    for d in defs:
        if d.check is not None and d.name not in CROSS_FIELD_RULES:
            raise NotImplementedError(
                f"instruction {d.name} has a cross-field rule with no RTL translation "
                f"in heli.targets.npu.rtl.decoder.CROSS_FIELD_RULES.")
    return defs


def field_ports(defs: list[InstrDef]) -> dict[str, tuple[int, bool]]:
    """Per field name over all instructions: (port width, signed).  A name used
    with both signednesses cannot share a port (an ISA definition error)."""
    ports: dict[str, tuple[int, bool]] = {}
    for d in defs:
        for f in d.fields:
            width, sign = ports.get(f.name, (0, f.signed))
            if sign != f.signed:
                raise ValueError(f"field {f.name!r} is signed in some instructions and "
                                 f"unsigned in others; the decoder cannot share its port.")
            ports[f.name] = (max(width, f.width), sign)
    return ports


class InstructionDecoder(wiring.Component):
    """Combinational decoder of one instruction word (ports generated from the ISA).

    Attributes
    ----------
    word : In(128)
        The instruction word (bit 0 = bit 0 of its first little-endian byte).
    opcode : Out(8)
        Bits 7..0 of the word.
    status : Out(DecodeStatus)
        ``OK``, or the first check that failed (see :class:`DecodeStatus`).
    valid : Out(1)
        ``status == OK``: the word is an instruction ``isa.decode`` accepts.
    queue : Out(2)
        The queue that executes the instruction: 0 load, 1 compute, 2 store
        (the ``queue`` field for ``push`` / ``wait``), 3 for ``halt`` and for
        words that do not decode.
    is_<mnemonic> : Out(1)
        One per instruction: the opcode is that instruction's (set even when
        ``status`` reports a bad field or reserved bits; qualify with ``valid``).
    f_<field> : Out(signed or unsigned(width))
        One per field name of the ISA, as wide as its widest use: the field of
        the decoded instruction, sign-extended if signed; 0 when the
        instruction has no field of that name.
    """

    def __init__(self, defs: list[InstrDef] | None = None) -> None:
        self.defs = check_translated(isa.instructions() if defs is None else defs)
        self.fields = field_ports(self.defs)
        members = {
            "word": In(WORD_BITS), "opcode": Out(OPCODE_BITS), "status": Out(DecodeStatus),
            "valid": Out(1), "queue": Out(2),
        }
        for d in self.defs:
            members[f"is_{d.name}"] = Out(1)
        for name, (width, sign) in self.fields.items():
            members[f"f_{name}"] = Out(signed(width) if sign else unsigned(width))
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        word = self.word
        m.d.comb += self.opcode.eq(word[:OPCODE_BITS])
        m.d.comb += self.valid.eq(self.status == DecodeStatus.OK)
        m.d.comb += [self.status.eq(DecodeStatus.BAD_OPCODE), self.queue.eq(QUEUE_NONE)]
        with m.Switch(self.opcode):
            for d in self.defs:
                with m.Case(d.opcode):
                    self._decode_one(m, d)
        return m

    def _decode_one(self, m: Module, d: InstrDef) -> None:
        word = self.word
        m.d.comb += getattr(self, f"is_{d.name}").eq(1)
        values: _Fields = {}
        bad = Const(0, 1)
        for f in d.fields:
            raw = word[f.lsb:f.lsb + f.width]
            value = Signal(_shape(f), name=f"{d.name}_{f.name}")
            m.d.comb += value.eq(raw)
            values[f.name] = value
            m.d.comb += getattr(self, f"f_{f.name}").eq(value)
            if f.enum is not None:
                ok = Const(0, 1)
                for member in f.enum:
                    ok = ok | (value == int(member))
                bad = bad | ~ok
            else:
                full_min = -(1 << (f.width - 1)) if f.signed else 0
                full_max = (1 << (f.width - 1)) - 1 if f.signed else (1 << f.width) - 1
                if f.min > full_min:
                    bad = bad | (value < f.min)
                if f.max < full_max:
                    bad = bad | (value > f.max)
        if d.check is not None:
            bad = bad | CROSS_FIELD_RULES[d.name](values)
        reserved = (word[d.used_bits:] != 0) if d.used_bits < WORD_BITS else Const(0, 1)

        with m.If(reserved):
            m.d.comb += self.status.eq(DecodeStatus.RESERVED)
        with m.Elif(bad):
            m.d.comb += self.status.eq(DecodeStatus.BAD_FIELD)
        with m.Else():
            m.d.comb += self.status.eq(DecodeStatus.OK)
            if d.queue is not None:
                m.d.comb += self.queue.eq(int(d.queue))
            elif not d.halts:
                m.d.comb += self.queue.eq(values["queue"])


__all__ = ["CROSS_FIELD_RULES", "QUEUE_NONE", "DecodeStatus", "InstructionDecoder", "Queue",
           "check_translated", "field_ports"]
