"""The generated instruction decoder in Amaranth simulation against isa.decode on
random words: valid instructions, random field bits (out-of-range and
contradicting fields), set reserved bits and unknown opcodes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from heli.targets.npu import isa
from heli.targets.npu.errors import DecodeError
from heli.targets.npu.rtl.decoder import (
    CROSS_FIELD_RULES,
    QUEUE_NONE,
    DecodeStatus,
    InstructionDecoder,
    check_translated,
)
from tests.targets.npu.rtl._sim import run

DEFS = isa.instructions()


def _expected(word: int):
    """(status, instruction or None) as isa.decode sees the word."""
    try:
        return DecodeStatus.OK, isa.decode(word)
    except DecodeError as err:
        msg = str(err)
        if "unknown opcode" in msg:
            return DecodeStatus.BAD_OPCODE, None
        if "reserved bits" in msg:
            return DecodeStatus.RESERVED, None
        return DecodeStatus.BAD_FIELD, None


def _words(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    words = [0, (1 << 128) - 1]
    for d in DEFS:                                    # every instruction, valid
        words.append(d(**{f.name: (f.default if f.default is not None else max(f.min, 1)
                                   if f.enum is None else 0)
                          for f in d.fields
                          if not (f.name in ("dst", "src") and f.enum is not None)},
                       **({"dst": 1} if d.name == "push" else {}),
                       **({"src": 1} if d.name == "wait" else {})).encode())
    for _ in range(n):
        d = rng.choice(DEFS)
        word = d.opcode
        for f in d.fields:
            word |= rng.getrandbits(f.width) << f.lsb
        k = rng.random()
        if k < 0.1 and d.used_bits < 128:
            word |= (1 << rng.randrange(d.used_bits, 128))
        elif k < 0.2:
            word = (word & ~0xFF) | rng.getrandbits(8)
        words.append(word)
    return words


def test_decoder_matches_isa_decode():
    dut = InstructionDecoder()
    words = _words(1500, seed=5)
    seen: Counter = Counter()

    async def tb(ctx):
        for word in words:
            ctx.set(dut.word, word)
            status, ins = _expected(word)
            seen[status] += 1
            assert ctx.get(dut.status) == status, hex(word)
            assert ctx.get(dut.valid) == (status == DecodeStatus.OK)
            assert ctx.get(dut.opcode) == word & 0xFF
            for d in DEFS:
                assert ctx.get(getattr(dut, f"is_{d.name}")) == (d.opcode == word & 0xFF)
            if ins is None:
                if status != DecodeStatus.OK:
                    assert ctx.get(dut.queue) == QUEUE_NONE
                continue
            q = ins.queue
            assert ctx.get(dut.queue) == (QUEUE_NONE if q is None else int(q)), ins
            for name, value in ins.fields.items():
                assert ctx.get(getattr(dut, f"f_{name}")) == int(value), (ins, name)
            for name in dut.fields:
                if name not in ins.fields:
                    assert ctx.get(getattr(dut, f"f_{name}")) == 0, (ins, name)

    run(dut, tb, clock=False)
    assert all(seen[s] > 20 for s in DecodeStatus), seen


def test_every_cross_field_rule_is_translated():
    checked = {d.name for d in DEFS if d.check is not None}
    assert checked == set(CROSS_FIELD_RULES)


def test_untranslated_rule_is_refused():
    from dataclasses import replace

    d = replace(isa.INSTRUCTIONS["halt"], name="mystery", check=lambda: None)
    with pytest.raises(NotImplementedError, match="mystery"):
        check_translated([d])
